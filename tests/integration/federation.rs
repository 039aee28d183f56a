//! Federation over real components: a PostgreSQL cluster, a second `meshql serve`
//! node, Delta and Parquet files. Asserts the SQL each source receives for each
//! pushdown kind, compares results with local copies (subplan pushdown on and off),
//! checks that policies hold on federated paths, and stops sources mid-flight.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use meshql_engine::{Identity, MeshEngine};

use crate::support::federation::{Federation, NODE_PASSWORD, analyst, engines, federation, root};
use crate::support::slt::{TEST_PASSWORD, query as run, rows};

/// The statements sent to sources, as `source: SQL`, from the physical plan.
async fn remote_sql(engine: &MeshEngine, who: &Identity, sql: &str) -> Vec<String> {
    let plan = run(engine, who, &format!("EXPLAIN {sql}"))
        .await
        .expect("explain");
    let mut out = Vec::new();
    for row in plan.iter().filter(|r| r[0] == "physical_plan") {
        for line in row[1].lines() {
            if let (Some(name), Some(sql)) = (
                line.split(" name=")
                    .nth(1)
                    .and_then(|s| s.split(' ').next()),
                line.split(" base_sql=").nth(1),
            ) {
                out.push(format!("{name}: {sql}"));
            }
        }
    }
    out
}

fn only<'a>(statements: &'a [String], source: &str) -> &'a str {
    let matching: Vec<&String> = statements
        .iter()
        .filter(|s| s.starts_with(&format!("{source}: ")))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one statement for {source}, got {statements:#?}"
    );
    matching[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushdown_sends_each_kind_as_sql() {
    let (engine, _) = engines().await;
    let e = engine.as_ref();
    let who = root();

    // Filter and projection: only the needed column, the filter in WHERE.
    let s = remote_sql(
        e,
        &who,
        "SELECT c_name FROM customer.profile.customer WHERE c_nationkey = 3",
    )
    .await;
    let crm = only(&s, "crm");
    assert!(
        crm.contains("WHERE") && crm.contains("c_nationkey") && crm.contains("= 3"),
        "{crm}"
    );
    assert!(!crm.contains("c_comment") && !crm.contains('*'), "{crm}");

    // Aggregate.
    let s = remote_sql(
        e,
        &who,
        "SELECT c_mktsegment, count(*), sum(c_acctbal) FROM customer.profile.customer GROUP BY c_mktsegment",
    )
    .await;
    let crm = only(&s, "crm");
    assert!(crm.contains("GROUP BY") && crm.contains("sum("), "{crm}");

    // An aggregate over a shared subexpression (TPC-H Q1's shape: DataFusion computes
    // it once in a projection below the aggregate) is still one statement.
    let s = remote_sql(
        e,
        &who,
        "SELECT o_orderstatus, sum(o_totalprice * (1 - o_shippriority)) AS a, \
         sum(o_totalprice * (1 - o_shippriority) * 2) AS b FROM sales.orders.orders GROUP BY o_orderstatus",
    )
    .await;
    let crm = only(&s, "crm");
    assert!(
        crm.contains("GROUP BY") && crm.matches("sum(").count() == 2,
        "{crm}"
    );

    // Sort with limit.
    let s = remote_sql(
        e,
        &who,
        "SELECT c_name, c_acctbal FROM customer.profile.customer ORDER BY c_acctbal DESC LIMIT 5",
    )
    .await;
    let crm = only(&s, "crm");
    assert!(crm.contains("ORDER BY") && crm.contains("LIMIT 5"), "{crm}");

    // A join between two ports of the same source is one statement.
    let s = remote_sql(
        e,
        &who,
        "SELECT c_name, count(*) FROM customer.profile.customer JOIN sales.orders.orders ON c_custkey = o_custkey \
         WHERE o_orderstatus = 'F' GROUP BY c_name",
    )
    .await;
    let crm = only(&s, "crm");
    assert!(
        crm.contains("JOIN") && crm.contains("GROUP BY") && crm.contains("'F'"),
        "{crm}"
    );

    // A function PostgreSQL does not share stays here; the rest still goes.
    let s = remote_sql(
        e,
        &who,
        "SELECT c_name FROM customer.profile.customer WHERE to_hex(c_custkey) = 'ff' AND c_nationkey = 1",
    )
    .await;
    let crm = only(&s, "crm");
    assert!(
        !crm.contains("to_hex") && crm.contains("c_nationkey"),
        "{crm}"
    );

    // `||` (bounded here as a call) reaches the source as the operator.
    let s = remote_sql(
        e,
        &who,
        "SELECT c_name || '/' || c_mktsegment FROM customer.profile.customer WHERE c_name || 'x' = 'Customer#000000001x'",
    )
    .await;
    let crm = only(&s, "crm");
    assert!(
        crm.matches("||").count() == 3 && crm.contains("WHERE"),
        "{crm}"
    );
    let s = remote_sql(
        e,
        &who,
        "SELECT n_name || r_name FROM geo.reference.nation JOIN geo.reference.region ON n_regionkey = r_regionkey",
    )
    .await;
    let node = only(&s, "geo_node");
    assert!(node.contains("||") && node.contains("JOIN"), "{node}");

    // The remote node gets its part as SQL too.
    let s = remote_sql(
        e,
        &who,
        "SELECT n_name FROM geo.reference.nation WHERE n_regionkey = 1 ORDER BY n_name LIMIT 3",
    )
    .await;
    let node = only(&s, "geo_node");
    assert!(node.contains("WHERE") && node.contains("LIMIT 3"), "{node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_source_join_filters_and_prunes_each_side() {
    let (engine, _) = engines().await;
    let sql = "SELECT n_name, c_mktsegment, sum(l_extendedprice) AS revenue \
               FROM customer.profile.customer \
               JOIN sales.orders.orders ON c_custkey = o_custkey \
               JOIN sales.orders.lineitem ON l_orderkey = o_orderkey \
               JOIN geo.reference.nation ON n_nationkey = c_nationkey \
               WHERE o_orderdate < DATE '1995-01-01' AND c_acctbal > 1000 AND n_regionkey = 2 \
               GROUP BY n_name, c_mktsegment ORDER BY revenue DESC";
    let s = remote_sql(&engine, &root(), sql).await;
    let crm = only(&s, "crm");
    assert!(
        crm.contains("JOIN"),
        "customer and orders are one statement: {crm}"
    );
    assert!(crm.contains("1995-01-01") && crm.contains("1000"), "{crm}");
    assert!(
        !crm.contains("c_comment") && !crm.contains("o_comment"),
        "{crm}"
    );
    let node = only(&s, "geo_node");
    assert!(
        node.contains("n_regionkey") && node.contains("= 2"),
        "{node}"
    );
    assert!(!node.contains("n_comment"), "{node}");

    // The same answer as over local copies.
    let local = sql
        .replace("customer.profile.customer", "local.copy.customer")
        .replace("sales.orders.orders", "local.copy.orders")
        .replace("geo.reference.nation", "local.copy.nation");
    let expected = run(&engine, &root(), &local).await.expect("local");
    assert!(!expected.is_empty());
    assert_eq!(
        run(&engine, &root(), sql).await.expect("federated"),
        expected
    );
}

/// The keys of a join's small side reach the remote side's statement before it runs,
/// and EXPLAIN ANALYZE counts the rows that crossed the network.
/// `sql`'s rows with the PostgreSQL orders port replaced by its local copy.
async fn over_local_copies(engine: &MeshEngine, sql: &str) -> Vec<Vec<String>> {
    run(
        engine,
        &root(),
        &sql.replace("sales.orders.orders", "local.copy.orders"),
    )
    .await
    .expect("local")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_keys_reach_the_remote_statement() {
    let (engine, _) = engines().await;
    let sql = "SELECT c.c_name, count(*) AS n, sum(o.o_totalprice) AS total \
               FROM local.copy.customer c JOIN sales.orders.orders o ON o.o_custkey = c.c_custkey \
               WHERE c.c_name IN ('Customer#000000007', 'Customer#000000010') \
               GROUP BY c.c_name ORDER BY c.c_name";
    let expected = over_local_copies(&engine, sql).await;
    assert_eq!(expected.len(), 2, "{expected:?}");
    assert_eq!(
        run(&engine, &root(), sql).await.expect("federated"),
        expected
    );
    let log = federation().pg.statements();
    let sent = log
        .lines()
        .find(|l| {
            l.contains("meshql_dyn") && (l.contains("IN (7, 10)") || l.contains("IN (10, 7)"))
        })
        .unwrap_or_else(|| panic!("no statement with the join keys in:\n{log}"));
    // The keys are on the column of o_custkey: the first of the statement's columns.
    assert!(
        sent.contains(r#"AS "meshql_dyn"("c0", "c1") WHERE"#)
            && sent.contains(r#"SELECT "o"."o_custkey", "o"."o_totalprice""#),
        "{sent}"
    );

    // Only the two customers' orders were read.
    let orders: usize = expected
        .iter()
        .map(|r| r[1].parse::<usize>().expect("n"))
        .sum();
    let analyzed = run(&engine, &root(), &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .expect("explain analyze");
    let text = format!("{analyzed:?}");
    let scan = text
        .split("\\n")
        .flat_map(|l| l.split("\n"))
        .find(|l| l.contains("VirtualExecutionPlan"))
        .unwrap_or_else(|| panic!("no remote scan in {text}"));
    assert!(scan.contains("runtime_filters=1"), "{scan}");
    assert!(scan.contains(&format!("remote_rows={orders},")), "{scan}");
}

/// Past 64 keys the list reaches PostgreSQL as `= ANY(ARRAY[...])`, which it parses
/// and plans faster than the same IN list; the rows are the same. The array is typed
/// as the column (bigint): PostgreSQL hashes the keys only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_key_lists_reach_postgres_as_arrays() {
    let (engine, _) = engines().await;
    let sql = "SELECT count(*) AS n, count(DISTINCT o.o_custkey) AS customers, sum(o.o_totalprice) AS total \
               FROM local.copy.customer c JOIN sales.orders.orders o ON o.o_custkey = c.c_custkey \
               WHERE c.c_nationkey < 3";
    let expected = over_local_copies(&engine, sql).await;
    let customers: usize = expected[0][1].parse().expect("customers");
    assert!(
        customers > 64,
        "too few keys to test long lists: {expected:?}"
    );
    assert_eq!(
        run(&engine, &root(), sql).await.expect("federated"),
        expected
    );
    let log = federation().pg.statements();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""meshql_dyn"."c0" = ANY(ARRAY[CAST("#)
                && l.contains(" AS BIGINT), ")),
        "no statement with the keys as a bigint array in:\n{log}"
    );
}

/// A remote probe side gets the build side's keys as a list beyond the session's limit
/// for lake scans (4096): here several thousand order keys from the lake's lineitem,
/// so PostgreSQL sends only the orders that match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_join_keys_reach_a_remote_probe_side() {
    let (engine, _) = engines().await;
    let sql = "SELECT count(*) AS n, sum(o.o_totalprice) AS total \
               FROM sales.orders.lineitem l JOIN sales.orders.orders o ON o.o_orderkey = l.l_orderkey \
               WHERE l.l_quantity < 10";
    let count = |sql: String| {
        let engine = &engine;
        async move {
            run(engine, &root(), &sql).await.expect("count")[0][0]
                .parse::<usize>()
                .expect("a count")
        }
    };
    let keys = count(
        "SELECT count(DISTINCT l_orderkey) FROM sales.orders.lineitem WHERE l_quantity < 10".into(),
    )
    .await;
    let all = count("SELECT count(*) FROM local.copy.orders".into()).await;
    assert!(
        keys > 4096 && keys < all,
        "the fixture should give 4096..{all} keys, got {keys}"
    );
    let expected = over_local_copies(&engine, sql).await;
    assert_eq!(
        run(&engine, &root(), sql).await.expect("federated"),
        expected
    );

    let analyzed = run(&engine, &root(), &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .expect("explain analyze");
    let text = format!("{analyzed:?}");
    let lines: Vec<&str> = text.split("\\n").flat_map(|l| l.split('\n')).collect();
    let scan = lines
        .iter()
        .find(|l| l.contains("VirtualExecutionPlan"))
        .unwrap_or_else(|| panic!("no remote scan in {text}"));
    assert!(scan.contains("runtime_filters=1"), "{scan}");
    // EXPLAIN ANALYZE writes counts of thousands as `7.63 K`.
    let shown = format!("remote_rows={:.2} K,", keys as f64 / 1000.0);
    assert!(scan.contains(&shown), "{shown} in {scan}");
    // Only the join probed remotely lifts the limit; its inputs keep the session's.
    let limits: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split("KeyListLimits: join_keys=").nth(1))
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(limits, ["65536", "4096", "4096"], "{text}");
}

/// The subtree of the first hash join's build side (its first input) in an EXPLAIN.
fn build_side(physical: &str) -> String {
    let lines: Vec<&str> = physical.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let join = lines
        .iter()
        .position(|l| l.contains("HashJoinExec"))
        .unwrap_or_else(|| panic!("no hash join in {physical}"));
    let child = indent(lines[join]) + 2;
    lines[join + 1..]
        .iter()
        .skip(1)
        .position(|l| indent(l) <= child)
        .map(|end| lines[join + 1..join + 2 + end].join("\n"))
        .unwrap_or_else(|| lines[join + 1..].join("\n"))
}

/// Remote statements carry row estimates (PostgreSQL's counts for each table of a
/// joined statement, a count from the Flight SQL node), so the small side of a join
/// with the lake builds the hash table whichever side the query names first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_statements_are_sized_for_the_join_order() {
    let (engine, _) = engines().await;
    let physical = |sql: &'static str| {
        let engine = &engine;
        async move {
            let plan = run(engine, &root(), &format!("EXPLAIN {sql}"))
                .await
                .expect("explain");
            plan.into_iter()
                .find(|r| r[0] == "physical_plan")
                .map(|r| r[1].clone())
                .expect("physical plan")
        }
    };
    // 25 nations on the node, filtered to one, against the lake's lineitem.
    let plan = physical(
        "SELECT count(*) FROM sales.orders.lineitem l \
         JOIN geo.reference.nation n ON l.l_suppkey % 25 = n.n_nationkey \
         WHERE n.n_name = 'FRANCE'",
    )
    .await;
    let build = build_side(&plan);
    assert!(
        build.contains("name=geo_node"),
        "the node's one nation should build:\n{plan}"
    );

    // customer JOIN orders is one PostgreSQL statement, estimated as large as orders.
    let orders = run(&engine, &root(), "SELECT count(*) FROM local.copy.orders")
        .await
        .expect("count")[0][0]
        .clone();
    let planned = engine
        .session(&root())
        .plan(
            "SELECT count(*) FROM customer.profile.customer c, sales.orders.orders o, \
             sales.orders.lineitem l WHERE o.o_custkey = c.c_custkey AND l.l_orderkey = o.o_orderkey",
        )
        .await
        .expect("plan");
    let physical = planned
        .df()
        .clone()
        .create_physical_plan()
        .await
        .expect("physical");
    let shown = datafusion::physical_plan::displayable(physical.as_ref())
        .set_show_statistics(true)
        .indent(true)
        .to_string();
    let statement = shown
        .lines()
        .find(|l| l.contains("name=crm") && l.contains("INNER JOIN"))
        .unwrap_or_else(|| panic!("no joined PostgreSQL statement in\n{shown}"));
    assert!(
        statement.contains(&format!("Rows=Inexact({orders})")),
        "the statement should be estimated at {orders} rows: {statement}"
    );
}

/// Queries over federated ports and over local copies agree, with subplan pushdown on
/// and off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_against_local_copies() {
    let (on, off) = engines().await;
    let queries = [
        "SELECT count(*) FROM {customer}",
        "SELECT c_mktsegment, count(*), sum(c_acctbal), min(c_acctbal), max(c_name) FROM {customer} GROUP BY c_mktsegment ORDER BY 1",
        "SELECT avg(c_acctbal) FROM {customer} WHERE c_nationkey IN (1, 2, 3)",
        "SELECT c_custkey, c_name FROM {customer} WHERE c_name LIKE '%99%' ORDER BY c_custkey",
        "SELECT c_custkey, c_acctbal FROM {customer} ORDER BY c_acctbal DESC, c_custkey LIMIT 7",
        "SELECT upper(c_mktsegment), round(c_acctbal / 3, 2) FROM {customer} WHERE c_custkey BETWEEN 10 AND 20 ORDER BY c_custkey",
        "SELECT o_orderpriority, count(*) FROM {orders} WHERE o_orderdate >= DATE '1996-01-01' AND o_orderdate < DATE '1996-04-01' GROUP BY o_orderpriority ORDER BY 1",
        "SELECT c_name, sum(o_totalprice) AS t FROM {customer} JOIN {orders} ON c_custkey = o_custkey GROUP BY c_name ORDER BY t DESC, c_name LIMIT 10",
        "SELECT c_custkey FROM {customer} LEFT JOIN {orders} ON c_custkey = o_custkey WHERE o_orderkey IS NULL ORDER BY 1 LIMIT 20",
        "SELECT n_name, count(*) FROM {customer} JOIN {nation} ON c_nationkey = n_nationkey JOIN {region} ON n_regionkey = r_regionkey WHERE r_name = 'ASIA' GROUP BY n_name ORDER BY 1",
        "SELECT o_orderstatus, count(DISTINCT o_custkey) FROM {orders} GROUP BY o_orderstatus ORDER BY 1",
        "SELECT o_orderstatus, sum(o_totalprice * (1 - o_shippriority)) AS a, avg(o_totalprice * (1 - o_shippriority) * 2) AS b, count(*) FROM {orders} WHERE o_orderdate <= DATE '1998-09-02' GROUP BY o_orderstatus ORDER BY o_orderstatus",
        "SELECT c_custkey FROM {customer} WHERE c_custkey IN (SELECT o_custkey FROM {orders} WHERE o_totalprice > 400000) ORDER BY 1",
        "SELECT extract(year FROM o_orderdate) AS y, count(*) FROM {orders} GROUP BY y ORDER BY y",
        "SELECT r_name, n_name FROM {nation} JOIN {region} ON n_regionkey = r_regionkey ORDER BY 1, 2",
        "SELECT c_name || ':' || c_mktsegment, c_phone || NULL FROM {customer} WHERE c_mktsegment || 'x' = 'BUILDINGx' ORDER BY 1 LIMIT 9",
        "SELECT c_acctbal * 2, c_custkey FROM {customer} ORDER BY 1 DESC, 2 LIMIT 6",
        "SELECT c_mktsegment, sum(c_acctbal) * 2 FROM {customer} GROUP BY c_mktsegment ORDER BY sum(c_acctbal) * 2",
        "SELECT n_name || '/' || r_name AS p, count(*) FROM {customer} JOIN {nation} ON c_nationkey = n_nationkey JOIN {region} ON n_regionkey = r_regionkey GROUP BY n_name || '/' || r_name ORDER BY p",
    ];
    let federated = |q: &str| {
        q.replace("{customer}", "customer.profile.customer")
            .replace("{orders}", "sales.orders.orders")
            .replace("{nation}", "geo.reference.nation")
            .replace("{region}", "geo.reference.region")
    };
    let local = |q: &str| {
        q.replace("{customer}", "local.copy.customer")
            .replace("{orders}", "local.copy.orders")
            .replace("{nation}", "local.copy.nation")
            .replace("{region}", "local.copy.region")
    };
    for q in queries {
        let expected = run(&on, &root(), &local(q)).await.expect(q);
        for (mode, engine) in [("pushdown on", &on), ("pushdown off", &off)] {
            let got = run(engine, &root(), &federated(q))
                .await
                .unwrap_or_else(|e| panic!("{mode}: {q}: {e}"));
            assert_eq!(got, expected, "{mode}: {q}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_types_map_to_arrow() {
    let (engine, _) = engines().await;
    let schema = run(
        &engine,
        &root(),
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_catalog = 'customer' AND table_name = 'types' ORDER BY ordinal_position",
    )
    .await
    .expect("columns");
    let types: Vec<String> = schema
        .iter()
        .map(|r| format!("{} {}", r[0], r[1]))
        .collect();
    assert_eq!(
        types,
        [
            "id Int32",
            "amount Decimal128(12, 3)",
            "happened Timestamp(ns, \"UTC\")",
            "local_time Timestamp(ns)",
            "tags List(Utf8)",
            "doc Utf8",
            "flag Boolean",
            "ratio Float64",
            "small Int16"
        ]
        .map(String::from)
    );
    let row = run(
        &engine,
        &root(),
        "SELECT amount, happened, local_time, tags, doc, flag, ratio, small FROM customer.profile.types WHERE id = 1",
    )
    .await
    .expect("row");
    assert_eq!(
        row,
        [[
            "12345.678",
            "2024-03-01T10:00:00Z",
            "2024-03-01T12:00:00",
            "[a, b]",
            "{\"k\": 1}",
            "true",
            "0.5",
            "7"
        ]
        .map(String::from)]
    );
    // Without the array column every type is read through binary COPY: NULLs, negative
    // and sub-unit decimals, times before PostgreSQL's 2000 epoch and Arrow's 1970 one.
    let rows = run(
        &engine,
        &root(),
        "SELECT id, amount, happened, local_time, doc, flag, ratio, small \
         FROM customer.profile.types ORDER BY id",
    )
    .await
    .expect("rows");
    assert_eq!(
        rows,
        [
            [
                "1",
                "12345.678",
                "2024-03-01T10:00:00Z",
                "2024-03-01T12:00:00",
                "{\"k\": 1}",
                "true",
                "0.5",
                "7"
            ],
            ["2", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"],
            [
                "3",
                "-0.005",
                "1969-07-20T20:17:40.000001Z",
                "1899-12-31T23:59:59.999999",
                "\"é\"",
                "false",
                "-1.5e300",
                "-32768"
            ]
        ]
        .map(|row| row.map(String::from))
    );
}

/// Gateway policies hold on federated ports: the row filter reaches PostgreSQL inside
/// the policy's statement, the mask applies, and the user's own filters cannot see
/// under it. The node's own mask applies to what the gateway reads from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_hold_on_federated_paths() {
    let (engine, _) = engines().await;
    let ana = analyst();
    let rows_ = run(
        &engine,
        &ana,
        "SELECT DISTINCT c_nationkey, c_phone FROM customer.profile.customer",
    )
    .await
    .expect("analyst reads");
    assert!(!rows_.is_empty());
    assert!(
        rows_
            .iter()
            .all(|r| r == &["3".to_string(), "***".to_string()]),
        "{rows_:?}"
    );
    // What PostgreSQL received: the policy's filter and the user's leakproof one, in one
    // statement (the user's plan shows only the opaque governed scan).
    run(
        &engine,
        &ana,
        "SELECT c_name FROM customer.profile.customer WHERE c_acctbal > -12345.67",
    )
    .await
    .expect("analyst filter");
    let log = federation().pg.statements();
    let sent = log
        .lines()
        .find(|l| l.contains("-12345.67"))
        .unwrap_or_else(|| panic!("no statement with the user's filter in:\n{log}"));
    assert!(
        sent.contains("c_nationkey") && sent.contains("= 3"),
        "{sent}"
    );
    let plan = run(
        &engine,
        &ana,
        "EXPLAIN SELECT c_name FROM customer.profile.customer",
    )
    .await
    .expect("explain");
    let text = format!("{plan:?}");
    assert!(
        text.contains("GovernedScanExec") && !text.contains("base_sql"),
        "{text}"
    );
    // Guessing phones through a predicate on the masked column reads masked values.
    let guessed = run(
        &engine,
        &ana,
        "SELECT count(*) FROM customer.profile.customer WHERE c_phone LIKE '13-%'",
    )
    .await
    .expect("count");
    assert_eq!(guessed, [["0".to_string()]]);
    // Local copies are not granted to analysts.
    let denied = run(&engine, &ana, "SELECT * FROM local.copy.customer").await;
    assert!(denied.is_err());

    // The node masks n_comment for the gateway's user; admins of the gateway see that too.
    let comments = run(
        &engine,
        &root(),
        "SELECT DISTINCT n_comment FROM geo.reference.nation",
    )
    .await
    .expect("nation");
    assert_eq!(comments, [["(internal)".to_string()]]);
}

/// A remote table that changed is seen after `CALL mesh.refresh('source')`, which only
/// admins may run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_picks_up_a_changed_remote_table() {
    let (engine, _) = engines().await;
    let sql = "SELECT * FROM customer.profile.evolving ORDER BY id";
    let before = run(&engine, &root(), sql).await.expect("before");
    assert_eq!(before, [["1"], ["2"]]);
    federation().pg.psql(
        "crm",
        "ALTER TABLE evolving ADD COLUMN IF NOT EXISTS note text DEFAULT 'new'",
    );
    // The port keeps the schema it was opened with until it is refreshed.
    assert_eq!(run(&engine, &root(), sql).await.expect("still"), before);

    let denied = run(&engine, &analyst(), "CALL mesh.refresh('crm')")
        .await
        .expect_err("analysts may not refresh");
    assert!(denied.contains("only admins"), "{denied}");
    let unknown = run(&engine, &root(), "CALL mesh.refresh('nope')")
        .await
        .expect_err("no such source");
    assert!(
        unknown.contains("no source `nope`") && unknown.contains("crm"),
        "{unknown}"
    );

    let refreshed = run(&engine, &root(), "CALL mesh.refresh('crm')")
        .await
        .expect("refresh");
    assert!(
        refreshed.contains(&vec![
            "customer.profile.evolving".to_string(),
            "crm".to_string(),
            "ready".to_string()
        ]),
        "{refreshed:?}"
    );
    // Only crm's ports.
    assert!(refreshed.iter().all(|r| r[1] == "crm"), "{refreshed:?}");
    assert_eq!(
        run(&engine, &root(), sql).await.expect("after"),
        [["1", "new"], ["2", "new"]]
    );
}

/// Any Flight SQL server is a source: ROAPI (not meshql) serves nation and region, and a
/// join between them reaches it as one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_sql_server_that_is_not_meshql_is_a_source() {
    let roapi = std::env::var("MESHQL_TEST_ROAPI")
        .expect("MESHQL_TEST_ROAPI names the roapi binary (scripts/test.sh sets it)");
    let f = federation();
    let data = f.root.join("data");
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("roapi.log");
    let (port, mut child, mut reaper) = start_roapi(&roapi, &data, &log_path).await;
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "version: 1\nsources:\n  ro: {{ kind: flight_sql, endpoint: \"grpc://127.0.0.1:{port}\" }}\n\
             domains:\n  geo:\n    products:\n      ref:\n        output_ports:\n\
             \x20         nation: {{ source: ro, table: nation }}\n\
             \x20         region: {{ source: ro, table: region }}\n"
        ),
    )
    .expect("mesh");
    let engine = MeshEngine::open(&mesh, &meshql_connectors::default_connectors())
        .await
        .expect("mesh loads");
    assert!(engine.problems().is_empty(), "{:?}", engine.problems());
    let sql = "SELECT r_name, count(*) AS nations FROM {nation} JOIN {region} \
               ON n_regionkey = r_regionkey WHERE n_nationkey > 2 GROUP BY r_name ORDER BY r_name";
    let open = Identity::anonymous();
    let got = run(
        &engine,
        &open,
        &sql.replace("{nation}", "geo.ref.nation")
            .replace("{region}", "geo.ref.region"),
    )
    .await
    .expect("through ROAPI");
    let (local_engine, _) = engines().await;
    let expected = run(
        &local_engine,
        &root(),
        &sql.replace("{nation}", "local.copy.nation")
            .replace("{region}", "local.copy.region"),
    )
    .await
    .expect("local");
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got, expected);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reaper.kill();
    let _ = reaper.wait();
    let served = std::fs::read_to_string(&log_path).expect("roapi log");
    assert!(
        served
            .lines()
            .any(|l| l.contains("JOIN") && l.contains("GROUP BY") && l.contains("n_nationkey")),
        "ROAPI did not get the join as one statement:\n{served}"
    );
}

/// ROAPI serving nation and region, listening on all its ports; returns its Flight SQL
/// port, the process and its reaper. Ports are picked free then released, so another
/// test may take one before ROAPI binds it: ROAPI then exits, and it is started again on
/// new ports. Fails with ROAPI's log.
async fn start_roapi(
    roapi: &str,
    data: &std::path::Path,
    log_path: &std::path::Path,
) -> (u16, std::process::Child, std::process::Child) {
    let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
    for _attempt in 0..3 {
        let ports = [(); 3].map(|()| crate::support::pg::free_port());
        let log = std::fs::File::create(log_path).expect("log");
        let mut child = std::process::Command::new(roapi)
            .arg("-t")
            .arg(format!("nation={}", data.join("nation.parquet").display()))
            .arg("-t")
            .arg(format!("region={}", data.join("region.parquet").display()))
            .args(["--addr-flight-sql", &format!("127.0.0.1:{}", ports[0])])
            .args(["-a", &format!("127.0.0.1:{}", ports[1])])
            .args(["-p", &format!("127.0.0.1:{}", ports[2])])
            // Its `Listening on` lines are what readiness waits for.
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {roapi}: {e}"));
        // Kills ROAPI if this test process dies first.
        let mut reaper =
            crate::support::reaper::at_exit(&format!("kill -9 {} 2>/dev/null", child.id()));
        let Some(exited) = exit_before_listening(&mut child, &ports, log_path).await else {
            return (ports[0], child, reaper);
        };
        // Gone already: its reaper has nothing left to kill.
        let _ = reaper.kill();
        let _ = reaper.wait();
        eprintln!(
            "ROAPI exited ({exited}) while starting on {ports:?}, trying new ports; its log:\n{}",
            read_log()
        );
    }
    panic!(
        "ROAPI did not start in 3 attempts; its last log:\n{}",
        read_log()
    );
}

/// None once ROAPI (`child`) serves every port in `ports`; its exit status if it exits
/// first. ROAPI binds all its listeners before it logs `Listening on ADDR`, so those
/// lines in its log (`log_path`) prove the ports are its own, not another test's.
/// Panics after 30 s with the log.
async fn exit_before_listening(
    child: &mut std::process::Child,
    ports: &[u16],
    log_path: &std::path::Path,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        if ports.iter().all(|p| {
            log.contains(&format!("Listening on 127.0.0.1:{p} "))
                && std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()
        }) {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not listen on {ports:?} within 30 s; its log:\n{log}",
            child.id()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows of `sql` run on the geo node directly, signed in as `user`.
async fn on_node(user: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let channel = tonic::transport::Channel::from_shared(
        federation().node_url().replace("grpc://", "http://"),
    )
    .expect("url")
    .connect()
    .await
    .expect("connect");
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    client
        .handshake(user, NODE_PASSWORD)
        .await
        .map_err(|e| e.to_string())?;
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    rows(&batches)
}

/// With a `delegation_secret` the node sees the end user, not the gateway: a user sees
/// through the gateway exactly what the node shows them directly, and a user the node
/// does not know sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sees_the_end_user_through_a_delegating_gateway() {
    let (engine, _) = engines().await;
    // Each statement is marked, to find it in the node's audit log.
    let sql = "SELECT n_nationkey, n_name, n_regionkey, n_comment FROM {nation} \
               WHERE n_name <> {marker} ORDER BY 1";
    let through = run(
        &engine,
        &analyst(),
        &sql.replace("{nation}", "geo.delegated.nation")
            .replace("{marker}", "'ana via the gateway'"),
    )
    .await
    .expect("ana through the gateway");
    let direct = on_node(
        "ana",
        &sql.replace("{nation}", "geo.reference.nation")
            .replace("{marker}", "'ana directly'"),
    )
    .await
    .expect("ana on the node");
    assert_eq!(through, direct);
    // The node's own rule for ana (region 3) and its mask, not the gateway's view.
    assert_eq!(through.len(), 5, "{through:?}");
    assert!(
        through.iter().all(|r| r[2] == "3" && r[3] == "(internal)"),
        "{through:?}"
    );
    // Through the non-delegating source the node sees the gateway's user (all nations).
    let as_gateway = run(
        &engine,
        &analyst(),
        &sql.replace("{nation}", "geo.reference.nation")
            .replace("{marker}", "'as the gateway'"),
    )
    .await
    .expect("as the gateway");
    assert_eq!(as_gateway.len(), 25);

    // root is an admin of the gateway, but unknown to the node: nothing is granted there
    // (and the node does not say whether the table exists).
    let err = run(
        &engine,
        &root(),
        "SELECT count(*) FROM geo.delegated.nation WHERE n_name <> 'root via the gateway'",
    )
    .await
    .expect_err("root is unknown to the node");
    assert!(
        err.contains("geo_delegated") && err.contains("not found"),
        "{err}"
    );
    // The node audited the statements under the end users' names.
    let audit = std::fs::read_to_string(federation().root.join("node/node-audit.jsonl"))
        .expect("node audit log");
    let user_of = |marker: &str| {
        let line = audit
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no audited statement with {marker} in {audit}"));
        serde_json::from_str::<serde_json::Value>(line).expect("audit record")["user"].clone()
    };
    assert_eq!(user_of("ana via the gateway"), "ana");
    assert_eq!(user_of("root via the gateway"), "root");
    assert_eq!(user_of("as the gateway"), "gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_a_three_source_join_over_flight_sql() {
    let f = federation();
    let gateway = crate::support::server::Server::start(&f.mesh, &f.env(), &[]);
    let mut client = gateway.client().await;
    client
        .handshake("root", TEST_PASSWORD)
        .await
        .expect("sign in");
    let sql = "SELECT r_name, count(DISTINCT c_custkey) AS customers, sum(l_quantity) AS qty \
               FROM customer.profile.customer JOIN sales.orders.orders ON c_custkey = o_custkey \
               JOIN sales.orders.lineitem ON l_orderkey = o_orderkey \
               JOIN geo.reference.nation ON c_nationkey = n_nationkey \
               JOIN geo.reference.region ON n_regionkey = r_regionkey \
               GROUP BY r_name ORDER BY r_name";
    let fetch = |sql: String| {
        let mut client = client.clone();
        async move {
            let info = client.execute(sql, None).await.expect("execute");
            let ticket = info.endpoint[0].ticket.clone().expect("ticket");
            let batches: Vec<RecordBatch> = client
                .do_get(ticket)
                .await
                .expect("do_get")
                .try_collect()
                .await
                .expect("batches");
            rows(&batches).expect("rows")
        }
    };
    let got = fetch(sql.to_string()).await;
    assert_eq!(got.len(), 5, "{got:?}");
    let local = sql
        .replace("customer.profile.customer", "local.copy.customer")
        .replace("sales.orders.orders", "local.copy.orders")
        .replace("geo.reference.nation", "local.copy.nation")
        .replace("geo.reference.region", "local.copy.region");
    assert_eq!(got, fetch(local).await);
    let explain = fetch(format!("EXPLAIN {sql}")).await;
    let physical = explain
        .iter()
        .find(|r| r[0] == "physical_plan")
        .map(|r| r[1].clone())
        .expect("physical plan");
    assert!(
        physical.contains("name=crm") && physical.contains("base_sql=SELECT"),
        "{physical}"
    );
    assert!(physical.contains("name=geo_node"), "{physical}");
    assert!(
        physical.contains("DeltaScan") || physical.contains("lineitem"),
        "{physical}"
    );
}

/// PostgreSQL stopped mid-query: that query fails naming the source and host, the lake
/// and the node keep answering, and the source recovers when PostgreSQL is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_fails_only_its_queries_and_recovers() {
    let f = Federation::build().await;
    let engine = f.engine(true).await;
    let who = root();
    let slow = "SELECT count(*) FROM customer.profile.customer a JOIN sales.orders.orders b ON a.c_custkey <> b.o_custkey";
    let stream = engine
        .session(&who)
        .plan(slow)
        .await
        .expect("plan")
        .execute()
        .await
        .expect("start");
    // Read it in the background; stop PostgreSQL once it is running the statement (its
    // statement log shows it).
    let reading = tokio::spawn(async move {
        let result: Result<Vec<RecordBatch>, _> = stream.try_collect().await;
        result
    });
    let waiting = Instant::now();
    while !f.pg.statements().contains("<>") {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "the statement never reached PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.pg.stop_server();
    let started = Instant::now();
    let err = reading
        .await
        .expect("reader task")
        .expect_err("the query must fail when PostgreSQL stops")
        .to_string();
    assert!(err.contains("crm") && err.contains("127.0.0.1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    let down = run(
        &engine,
        &who,
        "SELECT count(*) FROM customer.profile.customer",
    )
    .await
    .expect_err("down");
    assert!(
        down.contains("source `crm`") && down.contains("127.0.0.1"),
        "{down}"
    );
    let lake = run(&engine, &who, "SELECT count(*) FROM local.copy.customer").await;
    assert_eq!(lake.expect("lake answers"), [["1500".to_string()]]);
    let node = run(&engine, &who, "SELECT count(*) FROM geo.reference.region").await;
    assert_eq!(node.expect("node answers"), [["5".to_string()]]);

    f.pg.start_server();
    let back = run(
        &engine,
        &who,
        "SELECT count(*) FROM customer.profile.customer",
    )
    .await;
    assert_eq!(back.expect("recovered"), [["1500".to_string()]]);
}

/// The node killed mid-stream: the query fails naming the source; PostgreSQL keeps
/// answering; a restarted node (same mesh) answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_node_down_fails_only_its_queries() {
    let mut f = Federation::build().await;
    let engine = f.engine(true).await;
    let who = root();
    let mut stream = engine
        .session(&who)
        .plan("SELECT * FROM geo.reference.nation CROSS JOIN geo.reference.nation n2 CROSS JOIN geo.reference.nation n3")
        .await
        .expect("plan")
        .execute()
        .await
        .expect("start");
    let first = stream.next().await;
    assert!(matches!(first, Some(Ok(_))), "rows before the node stops");
    drop(f.node.take());
    let mut failed = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            failed = Some(e.to_string());
            break;
        }
    }
    // The node may have sent everything before it died; a new query must fail.
    let err = match failed {
        Some(e) => e,
        None => run(&engine, &who, "SELECT count(*) FROM geo.reference.region")
            .await
            .expect_err("node is down"),
    };
    assert!(err.contains("geo_node"), "{err}");
    let pg = run(
        &engine,
        &who,
        "SELECT count(*) FROM customer.profile.customer",
    )
    .await;
    assert_eq!(pg.expect("PostgreSQL answers"), [["1500".to_string()]]);
}

/// Wrong credentials, a missing table and an unmappable type: `check` names each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_bad_remote_ports() {
    let f = federation();
    let dir = tempfile::tempdir().expect("tmp");
    let mesh = dir.path().join("mesh.yaml");
    let port = f.pg.port;
    std::fs::write(
        &mesh,
        format!(
            "version: 1
sources:
  good: {{ kind: postgres, host: 127.0.0.1, port: {port}, user: meshql, password: \"{pw}\", dbname: crm, sslmode: disable }}
  badpw: {{ kind: postgres, host: 127.0.0.1, port: {port}, user: meshql, password: wrong, dbname: crm, sslmode: disable }}
domains:
  d:
    products:
      p:
        output_ports:
          missing: {{ source: good, table: public.no_such_table }}
          odd: {{ source: good, table: public.odd_types }}
          denied: {{ source: badpw, table: public.customer }}
",
            pw = crate::support::pg::PG_PASSWORD
        ),
    )
    .expect("mesh");
    let out = crate::support::cli::meshql_plain(
        &["check", "--config", mesh.to_str().expect("utf8")],
        None,
    );
    let text = format!(
        "{}{}",
        crate::support::cli::stdout(&out),
        crate::support::cli::stderr(&out)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("mesh.yaml:10") && text.contains("no_such_table"),
        "{text}"
    );
    assert!(
        text.contains("mesh.yaml:11") && text.contains("span"),
        "unsupported type named: {text}"
    );
    assert!(
        text.contains("mesh.yaml:12") && text.contains("password"),
        "{text}"
    );
}
