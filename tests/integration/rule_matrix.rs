//! The differential matrix of meshql's optimizer rules: every suite runs with all rules
//! on, with each rule off (`meshql.*` settings) and with all off, and must give the same
//! results. A rule that changes a row, or an error into rows, fails here.
//!
//! - the 22 TPC-H queries over the lake layout against the SF 0.1 answers, and over the
//!   mesh layout (PostgreSQL and a second node) for the federation planner's switches;
//! - the `.slt` files under tests/slt;
//! - the corpora tests/sql/cte_shapes.sql and tests/sql/rule_edges.sql, each statement's
//!   outcome compared with its outcome with every rule on.

use std::sync::Arc;

use meshql_engine::optimizer::rule_settings;
use meshql_engine::{EngineOptions, Identity, MeshEngine};
use meshql_tpch::layout::port;
use meshql_tpch::queries::qualify;

use crate::support::fixture::fixture;
use crate::support::slt::{EngineDb, SltError, query as run, run_all};
use crate::tpch::{check_all, lake, mesh_layout};

/// All on, each rule off, all off: (name, settings).
fn configurations(rules: &[&str]) -> Vec<(String, Vec<(String, String)>)> {
    let off = |rule: &str| (format!("meshql.{rule}"), "false".to_string());
    let mut configs = vec![("all rules on".to_string(), Vec::new())];
    for rule in rules {
        configs.push((format!("{rule} off"), vec![off(rule)]));
    }
    configs.push((
        "all rules off".to_string(),
        rules.iter().map(|r| off(r)).collect(),
    ));
    configs
}

fn options(settings: &[(String, String)]) -> EngineOptions {
    EngineOptions {
        settings: settings.to_vec(),
        ..Default::default()
    }
}

async fn lake_engine(settings: &[(String, String)]) -> MeshEngine {
    let spec = meshql_engine::config::load_mesh(lake()).expect("lake loads");
    MeshEngine::from_spec_with(
        spec,
        &meshql_connectors::default_connectors(),
        &options(settings),
    )
    .await
}

/// The settings really reach sessions: a rule switched off is not in the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_switched_off_leaves_the_plan_alone() {
    let sql = qualify(
        "WITH t AS (SELECT l_orderkey, count(*) AS c FROM lineitem GROUP BY l_orderkey) \
         SELECT count(*) FROM t a JOIN t b ON a.l_orderkey = b.l_orderkey",
        |t| port(t).to_string(),
    );
    let explain = format!("EXPLAIN {sql}");
    let who = Identity::anonymous();
    let on = lake_engine(&[]).await;
    let plan = format!("{:?}", run(&on, &who, &explain).await.expect("explain"));
    assert!(plan.contains("SharedSubplanExec"), "{plan}");
    let off = lake_engine(&[("meshql.shared_subplans".into(), "false".into())]).await;
    let plan = format!("{:?}", run(&off, &who, &explain).await.expect("explain"));
    assert!(!plan.contains("SharedSubplanExec"), "{plan}");
    // And per session, with SET.
    let session = on.session(&who);
    let set = session
        .plan("SET meshql.shared_subplans = false")
        .await
        .expect("set");
    drop(set.execute().await.expect("set runs"));
    let stream = session
        .plan(&explain)
        .await
        .expect("plan")
        .execute()
        .await
        .expect("explain");
    let batches: Vec<_> = futures::TryStreamExt::try_collect(stream)
        .await
        .expect("rows");
    let plan = format!("{batches:?}");
    assert!(!plan.contains("SharedSubplanExec"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_lake_gives_the_answers_with_each_rule_off() {
    let who = Identity::anonymous();
    for (name, settings) in configurations(&rule_settings()) {
        let engine = lake_engine(&settings).await;
        check_all(&format!("lake, {name}"), |sql| {
            let (engine, who) = (&engine, &who);
            async move { run(engine, who, &sql).await }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_mesh_gives_the_answers_with_each_federation_switch_off() {
    let layout = mesh_layout();
    let env = layout.env.clone();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let who = Identity::anonymous();
    let federation = [
        "subplan_pushdown",
        "remote_scans_wait_for_join_keys",
        "join_keys_at_distant_scans",
    ];
    // All on is tpch.rs's own test; here each switch off and all of meshql's rules off.
    for (name, settings) in configurations(&federation)
        .into_iter()
        .skip(1)
        .take(federation.len())
        .chain(configurations(&rule_settings()).into_iter().last())
    {
        let spec = meshql_engine::config::load_mesh_with_env(&layout.files.gateway, &lookup)
            .expect("the mesh layout loads");
        let engine = MeshEngine::from_spec_with(
            spec,
            &meshql_connectors::default_connectors(),
            &options(&settings),
        )
        .await;
        assert!(engine.problems().is_empty(), "{:?}", engine.problems());
        check_all(&format!("mesh, {name}"), |sql| {
            let (engine, who) = (&engine, &who);
            async move { run(engine, who, &sql).await }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass_with_each_rule_off() {
    for (_, settings) in configurations(&rule_settings()).into_iter().skip(1) {
        let engine = Arc::new(fixture().engine_with(&options(&settings)).await);
        run_all("slt", move || {
            let engine = Arc::clone(&engine);
            async move { Ok::<_, SltError>(EngineDb::new(engine)) }
        })
        .await;
    }
}

/// A value as compared: floating-point results (more than 6 fraction digits) to 10
/// significant digits, since a plan may sum in another order.
fn comparable(value: &str) -> String {
    let fraction = value.split_once('.').map_or(0, |(_, f)| f.len());
    match value.parse::<f64>() {
        Ok(v) if fraction > 6 || value.contains('e') => format!("{v:.9e}"),
        _ => value.to_string(),
    }
}

/// Rows sorted (order is only asserted by the queries' own ORDER BY ... LIMIT, which
/// picks the same rows), or that the statement failed.
async fn outcome(engine: &MeshEngine, sql: &str) -> Result<Vec<Vec<String>>, ()> {
    let patience = std::time::Duration::from_secs(120);
    let mut rows = tokio::time::timeout(patience, run(engine, &Identity::anonymous(), sql))
        .await
        .unwrap_or_else(|_| panic!("did not finish in {patience:?}: {sql}"))
        .map_err(|_| ())?;
    for row in &mut rows {
        for value in row.iter_mut() {
            *value = comparable(value);
        }
    }
    rows.sort();
    Ok(rows)
}

fn corpus(file: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/sql")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("corpus");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
        .map(|l| qualify(l.trim().trim_end_matches(';'), |t| port(t).to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpora_give_the_same_outcome_with_each_rule_off() {
    let statements: Vec<String> = corpus("rule_edges.sql")
        .into_iter()
        .chain(corpus("cte_shapes.sql"))
        .collect();
    assert!(statements.len() >= 80, "{}", statements.len());
    let baseline = lake_engine(&[]).await;
    let mut expected = Vec::new();
    let mut failing = 0;
    for sql in &statements {
        let got = outcome(&baseline, sql).await;
        failing += usize::from(got.is_err());
        expected.push(got);
    }
    // Some edges fail on purpose (overflow, division by zero, a bad cast); most answer.
    assert!(
        (1..statements.len() / 4).contains(&failing),
        "{failing} of {} statements failed with every rule on",
        statements.len()
    );
    let mut differences = Vec::new();
    for (name, settings) in configurations(&rule_settings()).into_iter().skip(1) {
        let engine = lake_engine(&settings).await;
        for (sql, want) in statements.iter().zip(&expected) {
            let got = outcome(&engine, sql).await;
            if &got != want {
                differences.push(format!(
                    "{name}: {sql}\n  rules on: {}\n  this:     {}",
                    brief(want),
                    brief(&got)
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} outcomes differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

fn brief(outcome: &Result<Vec<Vec<String>>, ()>) -> String {
    match outcome {
        Err(()) => "an error".to_string(),
        Ok(rows) => format!(
            "{} rows, first {:?}",
            rows.len(),
            rows.iter().take(3).collect::<Vec<_>>()
        ),
    }
}
