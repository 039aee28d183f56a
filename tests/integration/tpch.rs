//! TPC-H at SF 0.1: the 22 queries over the `lake` layout (every table a port of its
//! domain, orders and lineitem as Delta) give DataFusion's reference answers, through
//! the embedded engine and through Flight SQL.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use bigdecimal::BigDecimal;
use futures::TryStreamExt;
use meshql_engine::{Identity, MeshEngine};
use meshql_tpch::layout::{port, write_lake};
use meshql_tpch::queries::{AnswerFile, qualify, sf01_answers};

use crate::support::server::Server;
use crate::support::slt::{query as run, rows};

/// The `lake` layout at SF 0.1, generated once per test run.
fn lake() -> &'static PathBuf {
    static LAKE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &LAKE
        .get_or_init(|| {
            std::thread::spawn(|| {
                let dir = tempfile::tempdir().expect("temp dir");
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                let mesh = runtime
                    .block_on(write_lake(dir.path(), 0.1))
                    .expect("generate the lake layout");
                (dir, mesh)
            })
            .join()
            .expect("generation thread")
        })
        .1
}

/// A row as DataFusion's sqllogictest prints it: numbers (`R`) rounded to 12 decimals
/// without trailing zeros, values joined by one space, runs of spaces as one (as
/// sqllogictest compares them).
fn printed(types: &str, row: &[String]) -> String {
    let line = row
        .iter()
        .zip(types.chars())
        .map(|(value, t)| match BigDecimal::from_str(value) {
            Ok(n) if t == 'R' => n.round(12).normalized().to_plain_string(),
            _ => value.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    spaced(&line)
}

fn spaced(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The queries whose rows differ from the answer, with a diff of the first difference.
async fn check_all<F, Fut>(how: &str, mut run_query: F)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Vec<String>>, String>>,
{
    let mut failures = Vec::new();
    for q in sf01_answers() {
        let sql = qualify(&q.sql, |t| port(t).to_string());
        match run_query(sql).await {
            Ok(got) => {
                let got: Vec<String> = got.iter().map(|r| printed(&q.types, r)).collect();
                let expected: Vec<String> = q.expected.iter().map(|l| spaced(l)).collect();
                if got != expected {
                    failures.push(mismatch(&q, &got));
                }
            }
            Err(e) => failures.push(format!("q{}: {e}", q.number)),
        }
    }
    assert!(
        failures.is_empty(),
        "{how}: {} of 22 TPC-H queries differ from the SF0.1 answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn mismatch(q: &AnswerFile, got: &[String]) -> String {
    let at = got
        .iter()
        .zip(&q.expected)
        .position(|(g, e)| g != e)
        .unwrap_or(got.len().min(q.expected.len()));
    format!(
        "q{}: {} rows, expected {}; first difference at row {at}:\n  got      {:?}\n  expected {:?}",
        q.number,
        got.len(),
        q.expected.len(),
        got.get(at),
        q.expected.get(at)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_lake_embedded() {
    let engine = MeshEngine::open(lake(), &meshql_connectors::default_connectors())
        .await
        .expect("the lake layout loads");
    assert!(engine.problems().is_empty(), "{:?}", engine.problems());
    let who = Identity::anonymous();
    check_all("embedded", |sql| {
        let (engine, who) = (&engine, &who);
        async move { run(engine, who, &sql).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_lake_over_flight_sql() {
    let server = Server::start(lake(), &[], &[]);
    let client = server.client().await;
    check_all("Flight SQL", |sql| {
        let mut client = client.clone();
        async move {
            let info = client.execute(sql, None).await.map_err(|e| e.to_string())?;
            let mut batches: Vec<RecordBatch> = Vec::new();
            for endpoint in info.endpoint {
                let ticket = endpoint.ticket.ok_or("an endpoint without a ticket")?;
                let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
                batches.extend(
                    stream
                        .try_collect::<Vec<_>>()
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            rows(&batches)
        }
    })
    .await;
}
