//! `dbfed serve` as a process, queried by a Flight SQL client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Endpoint;

use crate::support::{dbfed, write_config};

/// A running `dbfed serve`, killed on drop.
struct ServeProcess {
    child: Child,
    url: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn query(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let info = client.execute(sql.to_owned(), None).await?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let part: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
        batches.extend(part);
    }
    Ok(batches)
}

#[test]
fn serve_prints_its_address_and_answers_a_federated_flight_query() {
    let home = tempfile::tempdir().expect("temp home");
    std::fs::write(
        home.path().join("targets.csv"),
        "nation,target\nCHINA,100\nJAPAN,250\nATLANTIS,1\n",
    )
    .expect("csv");
    let config = write_config(
        home.path(),
        "emulator = true\n[server]\nlisten = \"127.0.0.1:0\"\n[server.auth]\ntokens = [\"${SERVE_TEST_TOKEN}\"]\n[tables]\ntargets = \"targets.csv\"\n",
    );
    let mut child = dbfed(home.path())
        .env("SERVE_TEST_TOKEN", "flight-secret")
        .args(["serve", "--config", &config])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dbfed serve starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("the first line");
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("`listening on grpc://...`, got {first:?}"))
        .to_owned();
    let server = ServeProcess { child, url };
    assert!(
        server.url.starts_with("grpc://127.0.0.1:"),
        "{}",
        server.url
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let address = server.url.replacen("grpc://", "http://", 1);
        let channel = Endpoint::from_shared(address)
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .expect("connect");
        let mut anonymous = FlightSqlServiceClient::new(channel.clone());
        let refused = query(&mut anonymous, "SELECT 1")
            .await
            .expect_err("no token");
        match refused {
            arrow_flight::error::FlightError::Tonic(status) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
            }
            other => panic!("expected a gRPC status, got {other:?}"),
        }

        let mut client = FlightSqlServiceClient::new(channel);
        client.set_header("authorization", "Bearer flight-secret");
        let batches = query(
            &mut client,
            "SELECT n.n_nationkey, t.target FROM samples.tpch.nation n \
             JOIN targets t ON t.nation = n.n_name ORDER BY n.n_nationkey",
        )
        .await
        .expect("the federated query runs");
        let mut rows = Vec::new();
        for batch in &batches {
            let keys = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64)
                .expect("int64");
            let targets = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Int64)
                .expect("int64");
            let keys = keys.as_primitive::<Int64Type>();
            let targets = targets.as_primitive::<Int64Type>();
            for i in 0..keys.len() {
                rows.push((keys.value(i), targets.value(i)));
            }
        }
        assert_eq!(rows, vec![(12, 250), (18, 100)]);
    });
}
