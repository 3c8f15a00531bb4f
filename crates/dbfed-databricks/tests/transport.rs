//! Failures below HTTP: connections that break in the middle of an answer (a raw socket
//! server, since a well-behaved HTTP framework never sends a short body on purpose).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dbfed_databricks::Client;

use crate::support;

/// Answers each connection with the next canned response (the last one repeats), then closes
/// it. Stops and joins its thread on drop.
struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    fn start(responses: Vec<Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let served = AtomicUsize::new(0);
        let thread = {
            let stop = stop.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let n = served.fetch_add(1, Ordering::SeqCst);
                            let response = &responses[n.min(responses.len() - 1)];
                            serve(conn, response, &requests);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    fn request_lines(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

/// Reads the request head, logs its request line, writes `response`, closes.
fn serve(mut conn: TcpStream, response: &[u8], requests: &Mutex<Vec<String>>) -> Option<()> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        if conn.read(&mut byte).ok()? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    // Logged before answering: the client may return as soon as it has the answer.
    let head = String::from_utf8_lossy(&head).into_owned();
    if let Some(line) = head.lines().next() {
        requests.lock().expect("lock").push(line.to_owned());
    }
    conn.write_all(response).ok()?;
    conn.flush().ok()
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn client(server: &RawServer) -> Client {
    let config = dbfed_databricks::config::ClientConfig::builder()
        .host(format!("http://{}", server.addr))
        .warehouse_id("wh-1")
        .token(support::TOKEN)
        .build()
        .expect("config");
    Client::builder(config)
        .retry_policy(support::fast_retries())
        .request_timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

const RUNNING: &str = r#"{"statement_id":"01f0-raw","status":{"state":"RUNNING"}}"#;

fn full(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A 200 whose body stops halfway through what `Content-Length` announced.
fn cut_short(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    )
    .into_bytes()
}

#[test]
fn a_poll_answer_cut_short_is_retried() {
    let server = RawServer::start(vec![cut_short(RUNNING), full(RUNNING)]);
    let polled = client(&server)
        .poll("01f0-raw")
        .expect("retried after the cut");
    assert_eq!(polled.state(), &dbfed_databricks::StatementState::Running);
    let lines = server.request_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("GET /api/2.0/sql/statements/01f0-raw"))
    );
}

#[test]
fn an_execute_answer_cut_short_is_not_repeated() {
    // Execute is not idempotent: the statement may be running; never submit it twice.
    let server = RawServer::start(vec![cut_short(RUNNING), full(RUNNING)]);
    let err = client(&server)
        .submit(&dbfed_databricks::StatementRequest::new("SELECT 1"))
        .expect_err("cut short");
    assert!(
        matches!(err, dbfed_databricks::Error::Transport { .. }),
        "{err:?}"
    );
    assert_eq!(server.request_lines().len(), 1);
}
