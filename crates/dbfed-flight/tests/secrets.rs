//! Secrets through Flight: Basic-handshake passwords, the bearer tokens the server issues,
//! static bearer tokens, the server's own Databricks token and pass-through Databricks tokens
//! never appear in the process's logs at TRACE (every crate, `log` records included, every
//! thread: the server's, the executor's, the blocking client's and the emulator's) nor in any
//! gRPC error a client receives — successes and failures alike.
//!
//! The capture is a process-wide subscriber whose only layer is enabled while this test runs
//! (other tests of the binary that run meanwhile are captured and scanned too).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow_flight::sql::client::FlightSqlServiceClient;
use dbfed_emulator::{Emulator, Endpoint, FaultRule};
use dbfed_flight::{Auth, Credentials, FlightSqlServer, PassThroughSessions};
use tonic::Code;
use tonic::transport::Channel;

use crate::fixture::{client, code, i64_column, query, start};
use crate::passthrough::{template, warehouse};
use crate::soak::{Bounds, TOKEN, stack};

const PASSWORD: &str = "pw-alice-Zq81xVb0Lm4Kt7";
const WRONG_PASSWORD: &str = "pw-wrong-Hy62cNa9Rj3Ue5";
const STATIC_TOKEN: &str = "static-svc-token-Wd73pFs2Gk8Yb1";
const WRONG_TOKEN: &str = "static-wrong-token-Mx40qJt6Ce9Ao2";
const USER_A: &str = "dapi-secrets-user-a-9c1e7b3f5d2a";
const WRONG_DATABRICKS: &str = "dapi-secrets-wrong-4b8d0f2e6a1c";

/// Everything the process logged while [`ACTIVE`], verbatim.
static ACTIVE: AtomicBool = AtomicBool::new(false);

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per process) and returns its buffer.
fn capture() -> Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER
        .get_or_init(|| {
            use tracing_subscriber::Layer;
            use tracing_subscriber::filter::filter_fn;
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let writer = Capture(Arc::clone(&buffer));
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_thread_names(true)
                        .with_writer(move || writer.clone())
                        .with_filter(filter_fn(|_| ACTIVE.load(Ordering::Relaxed))),
                )
                .try_init()
                .expect("no other global subscriber in this test binary");
            buffer
        })
        .clone()
}

/// `Display` and `Debug` of every error a client received, with its gRPC code.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, what: &str, e: &(dyn std::error::Error + 'static)) {
        let mut text = format!("{what}: {e} {e:?}");
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(" | {s} {s:?}"));
            source = s.source();
        }
        self.0.push(text);
    }
}

async fn bearer(
    server: &dbfed_flight::FlightServerHandle,
    token: &str,
) -> FlightSqlServiceClient<Channel> {
    let mut c = client(server).await;
    c.set_token(token.to_owned());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_grpc_errors() {
    let buffer = capture();
    ACTIVE.store(true, Ordering::Relaxed);
    let mut errors = Errors::default();
    let mut issued = Vec::new();
    const COUNT: &str = "SELECT count(*) FROM samples.tpch.nation";

    // 1. Basic auth and static bearer tokens over the federated stack.
    let basic = stack(
        Emulator::builder(),
        "127.0.0.1:0",
        Bounds {
            threads: 2,
            queue_depth: 8,
        },
        Auth::Basic(
            Credentials::new()
                .user("alice", PASSWORD)
                .token(STATIC_TOKEN, "svc"),
        ),
        |b| b,
    )
    .await;
    let mut c = client(&basic.server).await;
    let e = c
        .handshake("alice", WRONG_PASSWORD)
        .await
        .expect_err("wrong password");
    errors.push("wrong password", &e);
    let e = c
        .handshake("mallory", PASSWORD)
        .await
        .expect_err("unknown user");
    errors.push("unknown user", &e);
    c.handshake("alice", PASSWORD).await.expect("handshake");
    let token = c.token().cloned().expect("issued token");
    issued.push(token.clone());
    let b = query(&mut c, COUNT).await.expect("as alice");
    assert_eq!(i64_column(&b, 0), vec![25]);
    // A query that fails in the warehouse, and one refused by it (a bare 503 on execute).
    let e = query(&mut c, "SELECT no_such_column FROM samples.tpch.nation")
        .await
        .expect_err("bad column");
    errors.push("bad column", &e);
    let rule = basic
        .emulator()
        .faults()
        .inject(FaultRule::status(Endpoint::ExecuteStatement, 503, None).times(1));
    let e = query(&mut c, "SELECT n_name FROM samples.tpch.nation")
        .await
        .expect_err("503 from the warehouse");
    errors.push("503 from the warehouse", &e);
    assert_eq!(basic.emulator().faults().fired(rule), 1);
    // Tampered issued token, wrong and right static tokens.
    let mut tampered = token.clone();
    tampered.push('x');
    for (what, t) in [
        ("tampered issued token", tampered.as_str()),
        ("wrong static token", WRONG_TOKEN),
    ] {
        let mut w = bearer(&basic.server, t).await;
        let e = query(&mut w, COUNT).await.expect_err(what);
        assert_eq!(code(&e), Code::Unauthenticated, "{e}");
        errors.push(what, &e);
    }
    let mut s = bearer(&basic.server, STATIC_TOKEN).await;
    let b = query(&mut s, COUNT).await.expect("static token");
    assert_eq!(i64_column(&b, 0), vec![25]);
    drop(basic);

    // 2. Pass-through: the caller's token is its Databricks token.
    let emulator = warehouse(
        Emulator::builder()
            .tpch_scale(0.01)
            .chunk_rows(500)
            .token(USER_A)
            .grant(USER_A, ["samples"]),
    );
    let sessions = Arc::new(PassThroughSessions::databricks(template(&emulator)).build());
    let server = start(FlightSqlServer::builder(sessions as _).auth(Auth::PassThrough)).await;
    let mut a = bearer(&server, USER_A).await;
    let b = query(&mut a, COUNT).await.expect("as user a");
    assert_eq!(i64_column(&b, 0), vec![25]);
    let mut wrong = bearer(&server, WRONG_DATABRICKS).await;
    let e = query(&mut wrong, COUNT)
        .await
        .expect_err("a token the warehouse refuses");
    errors.push("refused pass-through token", &e);
    let mut h = client(&server).await;
    match h.handshake("someone", WRONG_DATABRICKS).await {
        Ok(_) => {
            if let Some(t) = h.token().cloned() {
                issued.push(t);
            }
            let e = query(&mut h, COUNT)
                .await
                .expect_err("refused token via handshake");
            errors.push("refused token via handshake", &e);
        }
        Err(e) => errors.push("refused token via handshake", &e),
    }
    drop(server);
    drop(emulator);

    ACTIVE.store(false, Ordering::Relaxed);
    let logs = String::from_utf8_lossy(&buffer.lock().expect("capture lock")).into_owned();
    let mut secrets = vec![
        PASSWORD,
        WRONG_PASSWORD,
        STATIC_TOKEN,
        WRONG_TOKEN,
        TOKEN,
        USER_A,
        WRONG_DATABRICKS,
    ];
    secrets.extend(issued.iter().map(String::as_str));
    let lines = logs.lines().count();
    assert!(lines > 100, "the capture saw the logs: {lines} lines");
    for secret in &secrets {
        let hits: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(secret))
            .take(3)
            .collect();
        assert!(hits.is_empty(), "a secret in the logs: {hits:?}");
        for e in &errors.0 {
            assert!(!e.contains(secret), "a secret in a gRPC error: {e}");
        }
    }
    assert!(errors.0.len() >= 7, "{:?}", errors.0);
    eprintln!(
        "flight secrets: {} secrets ({} issued tokens), {} errors and {lines} log lines ({} KB at \
         TRACE) scanned: 0 occurrences",
        secrets.len(),
        issued.len(),
        errors.0.len(),
        logs.len() / 1024
    );
}
