//! Governance on the policy test mesh (the test mesh plus tests/fixtures/policy):
//! the policy .slt suite per user on every path, the audit log, tickets presented by
//! another user, metadata RPCs, `check` on bad policies, and a differential test
//! against queries rewritten by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use meshql_engine::{Identity, MeshEngine};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::support::fixture::{copy_dir, fixture};
use crate::support::server::Server;
use crate::support::slt::{EngineDb, FlightDb, SltError, TEST_PASSWORD, query, rows, run_all};

/// A fresh copy of the test mesh with `access` appended (each test its own audit log).
pub(crate) fn governed_mesh(access: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&fixture().root, dir.path());
    let mesh = dir.path().join("mesh.yaml");
    let text = std::fs::read_to_string(&mesh).expect("mesh");
    std::fs::write(&mesh, format!("{text}\n{access}")).expect("write");
    (dir, mesh)
}

pub(crate) fn policy_access() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policy/access.yaml");
    std::fs::read_to_string(path).expect("policy access")
}

pub(crate) fn env() -> Vec<(String, String)> {
    let mut env = fixture().env();
    env.push(("MESHQL_TEST_PASSWORD".into(), TEST_PASSWORD.into()));
    env
}

pub(crate) async fn engine(mesh: &Path) -> MeshEngine {
    let env = env();
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let spec = meshql_engine::config::load_mesh_with_env(mesh, &lookup).expect("mesh loads");
    MeshEngine::from_spec(spec, &meshql_connectors::default_connectors()).await
}

pub(crate) fn user(engine: &MeshEngine, name: &str) -> Identity {
    let groups = engine.access().expect("access").users[name].groups.clone();
    Identity::new(name, groups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_slt_embedded() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let engine = Arc::new(engine(&mesh).await);
    let problems = engine.problems();
    assert!(
        problems.is_empty(),
        "policy mesh has problems:\n{}",
        meshql_engine::problem::display_all(&problems)
    );
    run_all("slt/policy", move || {
        let engine = Arc::clone(&engine);
        async move { Ok::<_, SltError>(EngineDb::new(engine)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_slt_over_flight_sql_statements_and_prepared_statements() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let server = Server::start(&mesh, &env(), &[]);
    for prepared in [false, true] {
        let endpoint = server.endpoint();
        run_all("slt/policy", move || {
            let endpoint = endpoint.clone();
            async move { FlightDb::connect(endpoint, prepared).await }
        })
        .await;
    }
}

/// Every line of the audit log, as written.
fn audit_file(mesh: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(mesh.with_file_name("audit.jsonl")).expect("audit log");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// The last record of each statement, in the order statements began.
fn audit_lines(mesh: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    for line in audit_file(mesh) {
        match out.iter_mut().find(|l| l["query_id"] == line["query_id"]) {
            Some(earlier) => *earlier = line,
            None => out.push(line),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_is_audited_and_query_log_is_per_user() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let engine = engine(&mesh).await;
    let ana = user(&engine, "ana");
    let count = query(
        &engine,
        &ana,
        "SELECT count(*) FROM customer.profile.customer",
    )
    .await
    .expect("allowed");
    let denied = query(&engine, &ana, "SELECT * FROM sales.orders.lineitem")
        .await
        .expect_err("denied");
    assert!(denied.contains("not found"), "{denied}");
    let failed = query(
        &engine,
        &ana,
        "SELECT CAST(c_name AS INT) FROM customer.profile.customer",
    )
    .await;
    assert!(failed.is_err());

    // A statement that runs is recorded as started before its first row, then finished;
    // one refused at planning once.
    let file = audit_file(&mesh);
    let statuses: Vec<&str> = file
        .iter()
        .map(|l| l["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        statuses,
        ["started", "finished", "finished", "started", "finished"],
        "{file:#?}"
    );
    assert_eq!(file[0]["query_id"], file[1]["query_id"]);
    assert_eq!(file[0]["rows"], serde_json::Value::Null);
    let lines = audit_lines(&mesh);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(lines[0]["user"], "ana");
    assert_eq!(lines[0]["decision"], "allowed");
    assert_eq!(lines[0]["rows"], 1);
    assert_eq!(
        lines[0]["ports"],
        serde_json::json!(["customer.profile.customer"])
    );
    assert_eq!(
        lines[0]["statement"],
        "SELECT count(*) FROM customer.profile.customer"
    );
    assert!(
        lines[0]["query_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36)
    );
    assert!(lines[0]["duration_ms"].as_f64().is_some());
    assert_eq!(lines[1]["decision"], "denied");
    assert_eq!(lines[1]["reason"], "not granted: sales.orders.lineitem");
    assert!(
        lines[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found"))
    );
    assert_eq!(lines[2]["decision"], "allowed");
    assert!(
        lines[2]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{:?}",
        lines[2]
    );
    assert_eq!(count, vec![vec![count[0][0].clone()]]);

    // Users see their own statements; admins see everyone's.
    let own = "SELECT count(*) FROM mesh.meta.query_log WHERE user = 'ana'";
    assert_eq!(query(&engine, &ana, own).await.unwrap(), [["3"]]);
    let sam = user(&engine, "sam");
    assert_eq!(query(&engine, &sam, own).await.unwrap(), [["0"]]);
    let root = user(&engine, "root");
    assert_eq!(query(&engine, &root, own).await.unwrap(), [["4"]]);
    // For ana, naming a hidden port reads like naming one that does not exist.
    let denial = "SELECT decision, reason, ports FROM mesh.meta.query_log WHERE statement = 'SELECT * FROM sales.orders.lineitem'";
    assert_eq!(
        query(&engine, &ana, denial).await.unwrap(),
        [["allowed", "NULL", "[]"]]
    );
    assert_eq!(
        query(&engine, &root, denial).await.unwrap(),
        [[
            "denied",
            "not granted: sales.orders.lineitem",
            "[sales.orders.lineitem]"
        ]]
    );
    // Grants: admins see expressions, users only their own rows without them.
    let filters = "SELECT principal, row_filter FROM mesh.meta.grants WHERE port = 'customer.profile.customer' ORDER BY principal";
    let admin_view = query(&engine, &root, filters).await.unwrap();
    assert!(
        admin_view.iter().any(|r| r[0] == "user:eve"
            && r[1].contains("BUILDING")
            && r[1].contains("n_regionkey = 3")),
        "{admin_view:?}"
    );
    assert_eq!(
        query(&engine, &ana, filters).await.unwrap(),
        [["user:ana", "(applied)"]]
    );

    // EXPLAIN shows the user's own predicates and a governed scan, never the policy.
    let explain = query(
        &engine,
        &ana,
        "EXPLAIN SELECT c_name FROM customer.profile.customer WHERE c_custkey < 100",
    )
    .await
    .unwrap()
    .concat()
    .join("\n");
    assert!(
        explain.contains("GovernedScanExec: port=customer.profile.customer"),
        "{explain}"
    );
    assert!(
        explain.contains("partial_filters=[customer.profile.customer.c_custkey < Int64(100)]"),
        "{explain}"
    );
    for secret in ["n_regionkey", "nation", "5000", "***", "c_nationkey"] {
        assert!(
            !explain.contains(secret),
            "EXPLAIN reveals {secret}: {explain}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_and_metadata_follow_the_caller_over_flight_sql() {
    use arrow_flight::sql::CommandGetTables;
    let (_dir, mesh) = governed_mesh(&policy_access());
    let server = Server::start(&mesh, &env(), &[]);
    let signed_in = |name: &'static str| {
        let server = &server;
        async move {
            let mut c = server.client().await;
            c.handshake(name, TEST_PASSWORD).await.expect("sign in");
            c
        }
    };
    let mut ana = signed_in("ana").await;
    let mut root = signed_in("root").await;
    let mut nobody = signed_in("nobody").await;

    let sql = "SELECT count(*) FROM customer.profile.customer";
    let info = ana.execute(sql.into(), None).await.expect("ana plans");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let count = |batches: Vec<RecordBatch>| rows(&batches).unwrap()[0][0].clone();
    let as_ana = count(
        ana.do_get(ticket.clone())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap(),
    );
    // The same ticket presented by another user runs with that user's rights.
    let as_root = count(
        root.do_get(ticket.clone())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap(),
    );
    assert_eq!(as_root, "1500");
    assert_ne!(as_ana, as_root);
    let refused = match nobody.do_get(ticket).await {
        Ok(stream) => stream
            .try_collect::<Vec<_>>()
            .await
            .err()
            .map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    assert!(refused.is_some_and(|e| e.contains("not found")));

    // GetTables lists only what the caller may read.
    let tables = |batches: Vec<RecordBatch>| -> Vec<String> {
        rows(&batches)
            .unwrap()
            .into_iter()
            .filter(|r| r[0] != "mesh")
            .map(|r| format!("{}.{}.{}", r[0], r[1], r[2]))
            .collect()
    };
    let get = CommandGetTables {
        include_schema: false,
        ..Default::default()
    };
    let mut listed = Vec::new();
    for client in [&mut ana, &mut nobody] {
        let info = client.get_tables(get.clone()).await.expect("get tables");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        listed.push(tables(
            client
                .do_get(ticket)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap(),
        ));
    }
    assert!(
        listed[0].contains(&"customer.profile.customer".to_string()),
        "{:?}",
        listed[0]
    );
    assert!(
        !listed[0]
            .iter()
            .any(|t| t.contains("lineitem") || t.starts_with("supply.")),
        "{:?}",
        listed[0]
    );
    assert_eq!(listed[1], Vec::<String>::new());

    // A prepared statement that never runs has handed out its schema: audited.
    let prepared = "SELECT c_name FROM customer.profile.customer";
    ana.prepare(prepared.to_string(), None)
        .await
        .expect("ana prepares");

    // Flight statements are audited too, and so are listings of names.
    let lines = audit_lines(&mesh);
    assert!(
        lines.iter().any(|l| l["user"] == "ana"
            && l["statement"] == prepared
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("prepared"))),
        "{lines:#?}"
    );
    for who in ["ana", "nobody"] {
        assert!(
            lines.iter().any(|l| l["user"] == who
                && l["statement"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("(GetTables"))
                && l["rows"].as_u64().is_some()),
            "{who}: {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "ana" && l["statement"] == sql)
    );
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "nobody" && l["decision"] == "denied")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_bad_policies_with_file_and_line() {
    let access = r#"access:
  users:
    u: { password: x }
  rules:
    - principals: [user:u, user:ghost]
      allow: ["customer.*.*", "nosuch.*.*"]
      row_filters:
        customer.profile.customer: "c_custkey + 1"
        customer.geo.nation: "n_nationkey IN (SELECT max(r_regionkey) FROM customer.geo.region)"
        customer.geo.region: "r_regionkey IN (SELECT r_regionkey FROM customer.geo.region)"
        sales.orders.nosuch: "true"
      column_masks:
        customer.profile.customer.c_nope: "NULL"
        customer.profile.customer.c_name: "1"
        customer.profile.customer.c_phone: "row_number() OVER ()"
        customer.profile.customer.c_address: "max(c_address)"
        customer.geo.nation.n_name: "(SELECT r_name FROM region LIMIT 1)"
  tag_policies:
    - { tag: piii, mask: "NULL" }
"#;
    let (_dir, mesh) = governed_mesh(access);
    let engine = engine(&mesh).await;
    let text = std::fs::read_to_string(&mesh).unwrap();
    let line_of = |needle: &str| {
        1 + text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}"))
    };
    let problems: Vec<String> = engine.problems().iter().map(ToString::to_string).collect();
    let expect = |needle: &str, message: &str| {
        let at = format!("mesh.yaml:{}:", line_of(needle));
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&at) && p.contains(message)),
            "no problem at {at} saying {message:?} in:\n{}",
            problems.join("\n")
        );
    };
    expect("user:ghost", "no user `ghost`");
    expect("nosuch.*.*", "matches no output port");
    expect("c_custkey + 1", "must be a condition (boolean)");
    expect(
        "customer.geo.region: \"r_regionkey",
        "reads `customer.geo.region` itself (recursive)",
    );
    expect(
        "sales.orders.nosuch",
        "there is no output port `sales.orders.nosuch`",
    );
    expect("c_nope", "does not have");
    expect("c_name: \"1\"", "returns Int64 but the column is Utf8");
    expect("row_number()", "window functions are not allowed");
    expect("max(c_address)", "aggregate functions are not allowed");
    expect("FROM region LIMIT", "is not a full port name");
    expect("tag: piii", "no column of any port is tagged `piii`");
    // Aggregates inside a subquery are fine.
    assert!(
        !problems.iter().any(|p| p.contains(&format!(
            "mesh.yaml:{}:",
            line_of("SELECT max(r_regionkey)")
        ))),
        "{problems:#?}"
    );

    // A derived port that cannot be planned with its owner's rights is unavailable; a
    // consumer is not told which input it failed on.
    let (_dir, mesh) = governed_mesh(
        "domains:\n  extra:\n    owner: team-extra\n    products:\n      p:\n        output_ports:\n          \
         v: { sql: \"SELECT n_name FROM customer.geo.nation\" }\n\
         access:\n  users:\n    u: { password: x }\n  admins: [user:u]\n  rules:\n    \
         - { principals: [\"*\"], allow: [\"extra.*.*\"] }\n",
    );
    let derived = crate::policy::engine(&mesh).await;
    let problem = derived
        .problems()
        .iter()
        .map(ToString::to_string)
        .find(|p| p.contains("extra.p.v"))
        .expect("a problem for extra.p.v");
    assert!(problem.contains("customer.geo.nation"), "{problem}");
    let status = "SELECT status, error FROM mesh.meta.output_ports WHERE name = 'extra.p.v'";
    let consumer = Identity::new("someone", Vec::new());
    let seen = query(&derived, &consumer, status).await.unwrap();
    assert_eq!(seen[0][0], "unavailable");
    assert!(!seen[0][1].contains("nation"), "{seen:?}");
    let admin = query(&derived, &user(&derived, "u"), status).await.unwrap();
    assert!(admin[0][1].contains("customer.geo.nation"), "{admin:?}");

    // A syntax error or a bad principal is fatal: the mesh does not load at all.
    for (bad, message) in [
        (
            "  rules:\n    - principals: [group:g]\n      row_filters: { customer.geo.nation: \"n_name = \" }\n",
            "invalid SQL expression",
        ),
        (
            "  rules:\n    - principals: [role:g]\n      allow: [\"*\"]\n",
            "unknown principal kind `role`",
        ),
        (
            "  rules:\n    - principals: [\"*\"]\n      allow: [\"a.b.c.d\"]\n",
            "is not a port pattern",
        ),
        ("  audit_log_keep: 0\n", "keeping 0 rotated files"),
        (
            "  audit_log_rotate_mb: 99999999\n",
            "more than the largest rotation size",
        ),
    ] {
        let (_dir, mesh) = governed_mesh(&format!(
            "access:\n  users:\n    u: {{ password: x }}\n{bad}"
        ));
        let env = env();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let err = meshql_engine::config::load_mesh_with_env(&mesh, &lookup)
            .expect_err("fatal")
            .to_string();
        assert!(err.contains(message) && err.contains("mesh.yaml:"), "{err}");
    }
}

/// Random queries over the governed customer port: what ana gets must equal what root
/// gets from the same query over a hand-written rewrite with ana's filter and masks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_results_equal_hand_rewritten_queries() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let engine = engine(&mesh).await;
    let (ana, root) = (user(&engine, "ana"), user(&engine, "root"));
    let rewritten = "(SELECT c_custkey, c_name, CAST(NULL AS VARCHAR) AS c_address, c_nationkey, \
        CAST(NULL AS VARCHAR) AS c_phone, CAST(CASE WHEN c_acctbal > 5000 THEN 5000 ELSE c_acctbal END AS DECIMAL(15, 2)) AS c_acctbal, \
        c_mktsegment, c_comment FROM customer.profile.customer \
        WHERE c_nationkey IN (SELECT n_nationkey FROM customer.geo.nation WHERE n_regionkey = 3)) AS c";
    let mut rng = StdRng::seed_from_u64(20261121);
    let columns = [
        "c_name",
        "c_phone",
        "c_address",
        "c_acctbal",
        "c_nationkey",
        "c_mktsegment",
    ];
    let segments = [
        "BUILDING",
        "MACHINERY",
        "AUTOMOBILE",
        "FURNITURE",
        "HOUSEHOLD",
    ];
    for i in 0..60 {
        let mut predicates = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            predicates.push(match rng.random_range(0..7) {
                0 => format!("c_custkey < {}", rng.random_range(1..1500)),
                1 => format!("c_acctbal > {}", rng.random_range(-1000..9000)),
                2 => format!("c_nationkey = {}", rng.random_range(0..25)),
                3 => "c_phone IS NULL".to_string(),
                4 => format!("c_mktsegment = '{}'", segments.choose(&mut rng).unwrap()),
                5 => format!(
                    "c_acctbal BETWEEN {} AND 5000",
                    rng.random_range(-1000..5000)
                ),
                _ => format!("c_name LIKE '%{}%'", rng.random_range(0..10)),
            });
        }
        let filter = if predicates.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", predicates.join(" AND "))
        };
        let shape = if i % 3 == 0 {
            "SELECT c_mktsegment, count(*), sum(c_acctbal), max(c_acctbal), count(c_phone) FROM {src}{filter} GROUP BY c_mktsegment".to_string()
        } else {
            let n = rng.random_range(1..columns.len());
            let picked: Vec<&str> = columns.choose_multiple(&mut rng, n).copied().collect();
            let limit = if i % 2 == 0 {
                format!(" LIMIT {}", rng.random_range(1..50))
            } else {
                String::new()
            };
            format!(
                "SELECT c_custkey, {} FROM {{src}}{{filter}} ORDER BY c_custkey{limit}",
                picked.join(", ")
            )
        };
        let sql = |src: &str| shape.replace("{src}", src).replace("{filter}", &filter);
        let mut got = query(&engine, &ana, &sql("customer.profile.customer c"))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sql("customer.profile.customer")));
        let mut want = query(&engine, &root, &sql(rewritten))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sql(rewritten)));
        got.sort();
        want.sort();
        assert_eq!(got, want, "query {i}: {}", sql("customer.profile.customer"));
    }
}

/// A read leaves its record before its first row leaves the server: killed mid-stream,
/// the server has already said who read what, and `mesh.meta.query_log` shows the
/// statement as started and never finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_audited_before_its_first_row_even_if_the_server_dies() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let server = Server::start(&mesh, &env(), &[]);
    let mut ana = server.client().await;
    ana.handshake("ana", TEST_PASSWORD).await.expect("sign in");
    let sql =
        "SELECT a.c_name, b.c_name FROM customer.profile.customer a, customer.profile.customer b";
    let info = ana.execute(sql.into(), None).await.expect("plans");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = ana.do_get(ticket).await.expect("streams");
    let first = stream.try_next().await.expect("a batch").expect("a batch");
    assert!(first.num_rows() > 0);
    // The server dies without a chance to finish anything.
    drop(server);

    let file = audit_file(&mesh);
    let started: Vec<_> = file
        .iter()
        .filter(|l| l["statement"] == sql && l["user"] == "ana")
        .collect();
    assert_eq!(started.len(), 1, "{file:#?}");
    assert_eq!(started[0]["status"], "started");
    assert_eq!(
        started[0]["ports"],
        serde_json::json!(["customer.profile.customer"])
    );

    let engine = engine(&mesh).await;
    let seen = query(
        &engine,
        &user(&engine, "root"),
        &format!(
            "SELECT status, rows FROM mesh.meta.query_log WHERE statement = '{}'",
            sql.replace('\'', "''")
        ),
    )
    .await
    .unwrap();
    assert_eq!(seen, [["started", "NULL"]]);
}
