//! `dbfed serve` security flags: TLS (and mutual TLS) from the command line, and pass-through
//! of each client's token to the warehouse.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::support::{
    Listening, dbfed, flight_channel, flight_query, spawn_listening, start_emulator, write_config,
};

fn serve(home: &std::path::Path, args: &[&str]) -> Listening {
    spawn_listening(dbfed(home).arg("serve").args(args))
}

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files in `dir`.
struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
}

fn pki(dir: &std::path::Path) -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dbfed cli test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "client");
    let client = client_params
        .signed_by(&client_key, &issuer)
        .expect("client cert");
    let write = |name: &str, pem: &str| {
        std::fs::write(dir.join(name), pem).expect("pem written");
    };
    write("ca.pem", &ca.pem());
    write("server.pem", &server.pem());
    write("server.key", &server_key.serialize_pem());
    Pki {
        ca: ca.pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// The single BIGINT value of a one-row, one-column result.
fn single_i64(batches: &[RecordBatch]) -> i64 {
    let values: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let column = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)
                .expect("int64");
            column.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect();
    assert_eq!(values.len(), 1, "one value: {values:?}");
    values[0]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn tls_flags_serve_grpc_over_tls_with_client_certificates() {
    let home = tempfile::tempdir().expect("temp home");
    let pki = pki(home.path());
    let server = serve(
        home.path(),
        &[
            "--emulator",
            "--listen",
            "127.0.0.1:0",
            // Relative paths: to the current directory.
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--tls-client-ca",
            "ca.pem",
        ],
    );
    assert!(
        server.url.starts_with("grpc+tls://127.0.0.1:"),
        "{}",
        server.url
    );
    let address = server.url.replacen("grpc+tls://", "https://", 1);
    runtime().block_on(async {
        let connect = |identity: bool| {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca))
                .domain_name("localhost");
            if identity {
                tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
            }
            let endpoint = Endpoint::from_shared(address.clone())
                .expect("endpoint")
                .tls_config(tls)
                .expect("tls config")
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(120));
            async move { endpoint.connect().await }
        };
        let channel = connect(true).await.expect("mutual TLS connects");
        let mut client = FlightSqlServiceClient::new(channel);
        let batches = flight_query(&mut client, "SELECT count(*) FROM samples.tpch.region")
            .await
            .expect("a query over TLS");
        assert_eq!(single_i64(&batches), 5);

        // Without a client certificate, nothing is answered.
        if let Ok(channel) = connect(false).await {
            let mut client = FlightSqlServiceClient::new(channel);
            assert!(
                flight_query(&mut client, "SELECT 1").await.is_err(),
                "a client without a certificate is refused"
            );
        }
        // Nor over plaintext.
        let plain = Endpoint::from_shared(address.replacen("https://", "http://", 1))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .connect()
            .await;
        if let Ok(channel) = plain {
            let mut client = FlightSqlServiceClient::new(channel);
            assert!(flight_query(&mut client, "SELECT 1").await.is_err());
        }
    });
}

#[test]
fn a_client_ca_without_tls_is_refused() {
    let home = tempfile::tempdir().expect("temp home");
    let output = crate::support::run(dbfed(home.path()).args([
        "serve",
        "--emulator",
        "--listen",
        "127.0.0.1:0",
        "--tls-client-ca",
        "ca.pem",
    ]));
    assert_eq!(output.status.code(), Some(1));
    let err = crate::support::stderr(&output);
    assert!(err.contains("--tls-client-ca needs TLS"), "{err}");
}

#[test]
fn pass_through_lets_the_warehouse_grants_decide_per_token() {
    let home = tempfile::tempdir().expect("temp home");
    let data = home.path().join("data");
    std::fs::create_dir_all(data.join("hr/people")).expect("data dir");
    std::fs::write(
        data.join("hr/people/salaries.csv"),
        "name,salary\nada,100\ngrace,200\nalan,300\n",
    )
    .expect("csv");
    let data_dir = data.to_str().expect("utf-8").to_owned();
    let emulator = start_emulator(
        home.path(),
        &[
            "--data-dir",
            &data_dir,
            "--token",
            "dapi-alice",
            "--token",
            "dapi-bob",
            "--grant",
            "dapi-alice=samples",
            "--grant",
            "dapi-bob=hr",
        ],
    );
    // The file's token is never used in pass-through mode: each client brings its own.
    let config = write_config(
        home.path(),
        &format!(
            "[databricks]\nhost = \"{}\"\nwarehouse_id = \"w\"\ntoken = \"dapi-service-unused\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
            emulator.url
        ),
    );
    let server = serve(home.path(), &["--config", &config, "--pass-through"]);
    assert!(server.url.starts_with("grpc://"), "{}", server.url);
    runtime().block_on(async {
        let channel = flight_channel(&server.url).await;
        let as_user = |token: &str| {
            let mut client = FlightSqlServiceClient::new(channel.clone());
            client.set_header("authorization", format!("Bearer {token}"));
            client
        };
        let mut alice = as_user("dapi-alice");
        let mut bob = as_user("dapi-bob");
        let regions = flight_query(&mut alice, "SELECT count(*) FROM samples.tpch.region")
            .await
            .expect("alice reads samples");
        assert_eq!(single_i64(&regions), 5);
        let salaries = flight_query(&mut bob, "SELECT sum(salary) FROM hr.people.salaries")
            .await
            .expect("bob reads hr");
        assert_eq!(single_i64(&salaries), 600);
        assert!(
            flight_query(&mut alice, "SELECT sum(salary) FROM hr.people.salaries")
                .await
                .is_err(),
            "alice has no grant on hr"
        );
        assert!(
            flight_query(&mut bob, "SELECT count(*) FROM samples.tpch.region")
                .await
                .is_err(),
            "bob has no grant on samples"
        );
        let mut anonymous = FlightSqlServiceClient::new(channel.clone());
        assert!(
            flight_query(&mut anonymous, "SELECT 1").await.is_err(),
            "no token, no session"
        );
    });
    // What reached the warehouse ran under each caller's own identity.
    let records: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/_emulator/statements", emulator.url))
        .timeout(Duration::from_secs(30))
        .send()
        .expect("statements")
        .json()
        .expect("json");
    let identities: std::collections::BTreeSet<&str> = records
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["identity"].as_str())
        .collect();
    let alice = dbfed_emulator::token_identity("dapi-alice");
    let bob = dbfed_emulator::token_identity("dapi-bob");
    assert!(
        identities.contains(alice.as_str()) && identities.contains(bob.as_str()),
        "{identities:?}"
    );
    assert!(
        !identities.contains(dbfed_emulator::token_identity("dapi-service-unused").as_str()),
        "{identities:?}"
    );
}
