//! TLS and mutual TLS with rcgen certificates.

use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use dbfed_flight::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::fixture::{self, i64_column, query, start};

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dbfed test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let server_params =
        CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    let server = server_params
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
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

async fn tls_client(
    port: u16,
    pki: &Pki,
    with_client_cert: bool,
) -> Result<FlightSqlServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?;
    Ok(FlightSqlServiceClient::new(channel))
}

#[tokio::test]
async fn tls_serves_queries() {
    let pki = pki();
    let server = start(fixture::builder().tls(TlsConfig {
        cert_pem: pki.server_cert.clone().into_bytes(),
        key_pem: pki.server_key.clone().into_bytes(),
        client_ca_pem: None,
    }))
    .await;
    assert!(
        server.url().starts_with("grpc+tls://127.0.0.1:"),
        "{}",
        server.url()
    );
    let mut c = tls_client(server.local_addr().port(), &pki, false)
        .await
        .expect("tls connect");
    let batches = query(&mut c, "SELECT count(*) FROM numbers WHERE grp = 1")
        .await
        .expect("query over tls");
    assert_eq!(i64_column(&batches, 0), vec![1429]);

    // A plaintext client cannot talk to it.
    let plain = Endpoint::from_shared(format!("http://{}", server.local_addr()))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut c = FlightSqlServiceClient::new(channel);
        assert!(c.execute("SELECT 1".into(), None).await.is_err());
    }
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let pki = pki();
    let server = start(fixture::builder().tls(TlsConfig {
        cert_pem: pki.server_cert.clone().into_bytes(),
        key_pem: pki.server_key.clone().into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
    }))
    .await;
    let port = server.local_addr().port();
    let mut c = tls_client(port, &pki, true).await.expect("mtls connect");
    let batches = query(&mut c, "SELECT count(*) FROM numbers")
        .await
        .expect("query");
    assert_eq!(i64_column(&batches, 0), vec![10_000]);

    match tls_client(port, &pki, false).await {
        Err(_) => {}
        Ok(mut c) => {
            let err = c.execute("SELECT 1".into(), None).await;
            assert!(err.is_err(), "a client without certificate was served");
        }
    }
}
