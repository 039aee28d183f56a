//! TPC-H at SF 0.1: the 22 queries over the `lake` layout (every table a port of its
//! domain, orders and lineitem as Delta) and the `mesh` layouts (PostgreSQL and a
//! second node) give DataFusion's reference answers, through the embedded engine and
//! through Flight SQL.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use bigdecimal::BigDecimal;
use futures::TryStreamExt;
use meshql_engine::{Identity, MeshEngine};
use meshql_tpch::layout::{MeshLayoutFiles, port, write_lake, write_mesh_layout};
use meshql_tpch::queries::{AnswerFile, qualify, sf01_answers};

use crate::support::pg::{PG_PASSWORD, PgCluster};
use crate::support::server::Server;
use crate::support::slt::{query as run, rows};

/// The `lake` layout at SF 0.1, generated once per test run.
pub(crate) fn lake() -> &'static PathBuf {
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

/// The `mesh` layouts at SF 0.1: customer (and, in `mesh-orders`, orders) in a real
/// PostgreSQL, nation and region on a second `meshql serve`, the rest in the lake.
pub(crate) struct MeshLayout {
    pub(crate) files: MeshLayoutFiles,
    pub(crate) env: Vec<(String, String)>,
    _node: Server,
    _pg: PgCluster,
}

pub(crate) fn mesh_layout() -> &'static MeshLayout {
    static MESH: OnceLock<MeshLayout> = OnceLock::new();
    MESH.get_or_init(|| {
        let lake_mesh = lake();
        let dir = lake_mesh.parent().expect("layout dir").to_path_buf();
        let files = write_mesh_layout(&dir, 0.1).expect("mesh layout files");
        let pg = PgCluster::start();
        pg.psql("postgres", "CREATE DATABASE tpch");
        // The file `meshql-tpch layout mesh` writes for users.
        pg.psql_file("tpch", &dir.join("postgres.sql"));

        let node = Server::start(&files.node, &[], &[]);
        let env = vec![
            ("TPCH_PG_PORT".to_string(), pg.port.to_string()),
            ("TPCH_PG_USER".to_string(), "meshql".to_string()),
            ("TPCH_PG_PASSWORD".to_string(), PG_PASSWORD.to_string()),
            ("TPCH_NODE_URL".to_string(), node.url.clone()),
        ];
        MeshLayout {
            files,
            env,
            _node: node,
            _pg: pg,
        }
    })
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
pub(crate) async fn check_all<F, Fut>(how: &str, mut run_query: F)
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

async fn embedded(how: &str, engine: MeshEngine) {
    assert!(
        engine.problems().is_empty(),
        "{how}: {:?}",
        engine.problems()
    );
    let who = Identity::anonymous();
    check_all(how, |sql| {
        let (engine, who) = (&engine, &who);
        async move { run(engine, who, &sql).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_lake_embedded() {
    let engine = lake_engine().await;
    embedded("lake, embedded", engine).await;
}

/// Q17 averages lineitem's quantity per part, then joins the few parts that qualify:
/// the join's keys filter the scanned rows before they are aggregated, not after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_q17_aggregates_only_rows_that_can_join() {
    let engine = lake_engine().await;
    let text = explain_analyze(&engine, 17).await;
    let lines: Vec<&str> = text.lines().collect();
    let aggregate = lines
        .iter()
        .position(|l| l.contains("AggregateExec: mode=Partial, gby=[l_partkey"))
        .unwrap_or_else(|| panic!("no partial aggregate by part:\n{text}"));
    let filter = lines
        .get(aggregate + 1)
        .filter(|l| l.contains("JoinKeyFilterExec: DynamicFilter"))
        .unwrap_or_else(|| panic!("the aggregate's input is not the join's filter:\n{text}"));
    // About 20 of 20K parts qualify: the filter keeps about 0.1% of lineitem.
    let selectivity: f64 = filter
        .split("selectivity=")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no selectivity in {filter}"));
    assert!(selectivity < 1.0, "{filter}");
}

/// Q2 joins its candidate rows to the minimum cost per part on the part and that
/// minimum. The minimum moves into the join's filter, so the join's part keys filter
/// partsupp below the aggregate: only the candidates' parts are aggregated (their answer
/// is checked with the other queries').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_q2_aggregates_only_the_candidate_parts() {
    let engine = lake_engine().await;
    let text = explain_analyze(&engine, 2).await;
    let join = text
        .lines()
        .find(|l| l.contains("HashJoinExec") && l.contains("join_type=LeftSemi"))
        .unwrap_or_else(|| panic!("no semi join:\n{text}"));
    assert!(
        join.contains("on=[(p_partkey@0, ps_partkey@1)]") && join.contains("filter="),
        "the minimum is a key of the join, not its filter: {join}"
    );
    let partial = text
        .lines()
        .find(|l| l.contains("AggregateExec: mode=Partial, gby=[ps_partkey"))
        .unwrap_or_else(|| panic!("no partial aggregate by part:\n{text}"));
    // About 75 of 20K parts are candidates, each with 4 suppliers, a fifth in the
    // region: the aggregate reads some 60 rows where it read 16K.
    let input: f64 = partial
        .split("reduction_factor=")
        .nth(1)
        .and_then(|s| s.split('/').nth(1))
        .and_then(|s| s.split(')').next())
        .and_then(|s| match s.trim().split_once(' ') {
            Some((n, "K")) => n.parse::<f64>().ok().map(|n| n * 1e3),
            Some((n, "M")) => n.parse::<f64>().ok().map(|n| n * 1e6),
            _ => s.trim().parse().ok(),
        })
        .unwrap_or_else(|| panic!("no input rows in {partial}"));
    assert!(input < 1000.0, "{partial}");
}

/// Q9 probes lineitem's rows through four hash joins in turn: each join drops what
/// its keys rule out as cheaply as a filter of those keys would, so none is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_q9_probes_lineitem_without_extra_key_filters() {
    let engine = lake_engine().await;
    let text = explain_analyze(&engine, 9).await;
    let probes = text
        .lines()
        .filter(|l| l.contains("HashJoinExec") && l.contains(", l_partkey@"))
        .count();
    assert!(
        probes > 0,
        "no join probed by lineitem's part keys:\n{text}"
    );
    let filtered: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("JoinKeyFilterExec") && l.contains("l_partkey@"))
        .collect();
    assert!(filtered.is_empty(), "{filtered:?} in\n{text}");
}

/// Q15 reads its view `revenue0` twice: once for the maximum revenue, once for the
/// suppliers that reach it. The aggregate over lineitem is computed once and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_q15_computes_its_view_once() {
    let engine = lake_engine().await;
    let text = explain_analyze(&engine, 15).await;
    let shared: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("SharedSubplanExec: id=1, instances=2"))
        .collect();
    assert_eq!(shared.len(), 2, "{text}");
    // The instance read second replays all 1K suppliers' revenue.
    let replayed: usize = shared
        .iter()
        .filter_map(|l| l.split("replayed_rows=").nth(1))
        .filter_map(|s| s.split([',', ']']).next())
        .map(|n| parse_count(n.trim()))
        .sum();
    assert_eq!(replayed, 1_000, "{shared:?}");
    // So lineitem is read once: the other instance's scan never runs (no metrics).
    let scans = text
        .lines()
        .filter(|l| l.contains("DataSourceExec") && l.contains("l_shipdate"))
        .filter(|l| l.contains("metrics=[output_rows="))
        .count();
    assert_eq!(scans, 1, "{text}");
}

/// Subplans alike but for a constant are different subplans: each is computed, and
/// each answer is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subplans_that_differ_in_a_constant_are_not_shared() {
    let engine = lake_engine().await;
    let busiest = |below: u32| {
        format!(
            "(SELECT max(n) FROM (SELECT l_suppkey, count(*) AS n FROM sales.orders.lineitem \
             WHERE l_quantity < {below} GROUP BY l_suppkey))"
        )
    };
    let both = format!("SELECT {} AS a, {} AS b", busiest(10), busiest(40));
    let who = Identity::anonymous();
    let together = run(&engine, &who, &both).await.expect("both");
    let first = run(&engine, &who, &format!("SELECT {}", busiest(10)))
        .await
        .expect("first");
    let second = run(&engine, &who, &format!("SELECT {}", busiest(40)))
        .await
        .expect("second");
    assert_ne!(first, second, "the two filters should keep different rows");
    assert_eq!(
        together,
        vec![vec![first[0][0].clone(), second[0][0].clone()]]
    );
    let text = explain(&engine, &format!("EXPLAIN {both}")).await;
    assert!(!text.contains("SharedSubplanExec"), "{text}");
}

/// A subplan read only in part (under a limit) is not replayed in part: it runs whole,
/// once, and the other instance replays all of its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subplan_read_in_part_is_computed_again_in_full() {
    let engine = lake_engine().await;
    // The subquery runs first and reads 3 of 150K orders; the main query reads all.
    let sql = "WITH t AS (SELECT l_orderkey, count(*) AS c FROM sales.orders.lineitem \
               GROUP BY l_orderkey) \
               SELECT count(*) FROM t WHERE c > (SELECT count(c) FROM (SELECT c FROM t LIMIT 3)) - 3";
    let who = Identity::anonymous();
    let text = explain(&engine, &format!("EXPLAIN {sql}")).await;
    assert_eq!(text.matches("SharedSubplanExec").count(), 2, "{text}");
    let orders = run(
        &engine,
        &who,
        "SELECT count(DISTINCT l_orderkey) FROM sales.orders.lineitem",
    )
    .await
    .expect("orders");
    assert_eq!(orders, vec![vec!["150000".to_string()]]);
    let counted = run(&engine, &who, sql).await.expect("query");
    assert_eq!(counted, orders);
}

/// Q12's filter tests the receipt dates (a 15% range) before the ship modes (string
/// comparisons), whatever order the query wrote them in (the answers suite checks
/// what it returns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_q12_filters_on_dates_before_strings() {
    let engine = lake_engine().await;
    let text = explain_analyze(&engine, 12).await;
    let filter = text
        .lines()
        .find(|l| l.contains("FilterExec:") && l.contains("l_shipmode"))
        .unwrap_or_else(|| panic!("no filter on l_shipmode: {text}"));
    let at = |what: &str| {
        filter
            .find(what)
            .unwrap_or_else(|| panic!("{what} not in {filter}"))
    };
    let modes = at(" = MAIL");
    assert!(at(" >= 1994-01-01") < modes, "{filter}");
    assert!(at(" < 1995-01-01") < modes, "{filter}");
}

/// `12`, `10.00 K`, `1.50 M` as EXPLAIN ANALYZE prints counts.
fn parse_count(text: &str) -> usize {
    let (number, factor) = match text.split_once(' ') {
        Some((n, "K")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        _ => (text, 1.0),
    };
    let n: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {text}"));
    (n * factor).round() as usize
}

/// The text of `EXPLAIN ANALYZE` of TPC-H query `q` on the lake layout.
async fn explain_analyze(engine: &MeshEngine, q: usize) -> String {
    let query = &sf01_answers()[q - 1];
    let sql = format!(
        "EXPLAIN ANALYZE {}",
        qualify(&query.sql, |t| port(t).to_string())
    );
    explain(engine, &sql).await
}

/// The plan `EXPLAIN [ANALYZE] ...` prints, as one text.
async fn explain(engine: &MeshEngine, sql: &str) -> String {
    let plan = run(engine, &Identity::anonymous(), sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    plan.iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The embedded engine over the `lake` layout.
async fn lake_engine() -> MeshEngine {
    MeshEngine::open(lake(), &meshql_connectors::default_connectors())
        .await
        .expect("the lake layout loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_lake_over_flight_sql() {
    over_flight_sql("lake, Flight SQL", Server::start(lake(), &[], &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_mesh_embedded() {
    let layout = mesh_layout();
    mesh_embedded("mesh, embedded", &layout.files.gateway, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_mesh_over_flight_sql() {
    let layout = mesh_layout();
    over_flight_sql(
        "mesh, Flight SQL",
        Server::start(&layout.files.gateway, &layout.env, &[]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_mesh_orders_embedded() {
    let layout = mesh_layout();
    mesh_embedded("mesh-orders, embedded", &layout.files.gateway_orders, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_sf01_mesh_orders_over_flight_sql() {
    let layout = mesh_layout();
    over_flight_sql(
        "mesh-orders, Flight SQL",
        Server::start(&layout.files.gateway_orders, &layout.env, &[]),
    )
    .await;
}

/// The 22 queries on the embedded engine over a `mesh` gateway file, after checking
/// that Q5 reads every domain where the layout puts it.
async fn mesh_embedded(how: &str, gateway: &std::path::Path, orders_on_lake: bool) {
    let env = mesh_layout().env.clone();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let spec =
        meshql_engine::config::load_mesh_with_env(gateway, &lookup).expect("the mesh layout loads");
    let engine = MeshEngine::from_spec(spec, &meshql_connectors::default_connectors()).await;
    let q5 = &sf01_answers()[4];
    let plan = run(
        &engine,
        &Identity::anonymous(),
        &format!("EXPLAIN {}", qualify(&q5.sql, |t| port(t).to_string())),
    )
    .await
    .expect("explain q5");
    let text = format!("{plan:?}");
    // PostgreSQL and the node get statements of their own; lineitem (and orders, if on
    // the lake) are plain Delta snapshots whose files are scanned as Parquet.
    let scans = |column: &str| {
        text.split("DataSourceExec")
            .skip(1)
            .any(|scan| scan.split("\\n").next().unwrap_or("").contains(column))
    };
    assert!(
        text.contains("name=crm")
            && text.contains("name=geo_node")
            && scans("projection=[l_orderkey")
            && scans("projection=[o_orderkey") == orders_on_lake,
        "{how}: {text}"
    );
    embedded(how, engine).await;
}

async fn over_flight_sql(how: &str, server: Server) {
    let client = server.client().await;
    check_all(how, |sql| {
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

/// Statements that read a CTE more than once (tests/sql/cte_shapes.sql) give the same
/// rows with shared subplans as without, and finish: some waited forever with sharing,
/// now and then (both references read at once) or always (one read in part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_reference_ctes_give_the_same_rows_with_and_without_sharing() {
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sql/cte_shapes.sql");
    let text = std::fs::read_to_string(corpus).expect("corpus");
    let statements: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
        .map(|l| qualify(l.trim().trim_end_matches(';'), |t| port(t).to_string()))
        .collect();
    assert!(statements.len() >= 40, "{}", statements.len());
    let open = |share: bool| async move {
        let options = meshql_engine::EngineOptions {
            no_shared_subplans: !share,
            ..Default::default()
        };
        let spec = meshql_engine::config::load_mesh(lake()).expect("lake loads");
        MeshEngine::from_spec_with(spec, &meshql_connectors::default_connectors(), &options).await
    };
    let (shared, plain) = (open(true).await, open(false).await);
    let who = Identity::anonymous();
    let patience = std::time::Duration::from_secs(120);
    let mut sharing = 0;
    for sql in &statements {
        let mut want = run(&plain, &who, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        want.sort();
        for _ in 0..2 {
            let mut got = tokio::time::timeout(patience, run(&shared, &who, sql))
                .await
                .unwrap_or_else(|_| panic!("did not finish with shared subplans: {sql}"))
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            got.sort();
            assert_eq!(got, want, "{sql}");
        }
        sharing += usize::from(
            explain(&shared, &format!("EXPLAIN {sql}"))
                .await
                .contains("SharedSubplanExec"),
        );
    }
    assert!(
        sharing * 2 > statements.len(),
        "only {sharing} statements shared a subplan"
    );
}
