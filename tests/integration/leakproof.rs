//! Error oracles (leak class 8 of docs/guide/governance.md#leak-classes): a restricted
//! user's statement must either return exactly what the same statement returns over data
//! that holds only the rows the user may see, or fail in the same way, whatever the user's
//! predicates are, including predicates that fail (division by zero, casts, LIKE patterns
//! Arrow cannot compile). Four policy shapes hide the same rows: a plain comparison, a
//! subquery (semi join), a function, and a derived port whose definition uses a function
//! and computes a column that fails on hidden rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use meshql_engine::{Identity, MeshEngine};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::support::slt::query;

const ROWS: i64 = 3000;
const VISIBLE_REGION: i32 = 3;

fn region_of(id: i64) -> i32 {
    (id % 5) as i32
}

fn batch(visible_only: bool) -> RecordBatch {
    let ids: Vec<i64> = (0..ROWS)
        .filter(|id| !visible_only || region_of(*id) == VISIBLE_REGION)
        .collect();
    let notes = ["plain", "épée", "x", "42abc", "naïve"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Int32, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
        Field::new("secret", DataType::Int64, false),
        // 12 here; the derived port computes it as 12 / (4 - region), which fails on
        // hidden rows of region 4 only.
        Field::new("ratio", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int32Array::from_iter_values(
                ids.iter().map(|id| region_of(*id)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|id| format!("name {id}")),
            )),
            Arc::new(StringArray::from_iter(ids.iter().map(|id| {
                (id % 7 != 0).then(|| notes[(*id as usize) % notes.len()])
            }))),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|id| id * 7919 % 1000),
            )),
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|_| 12))),
        ],
    )
    .expect("batch")
}

/// Users: `truth` reads the visible rows only (no policy hides anything from it); the
/// others read all rows through a policy that hides what `truth` does not have.
const MESH: &str = r#"version: 1
sources:
  lake: { kind: local, root: ./data }
domains:
  bank:
    owner: team-bank
    products:
      p:
        output_ports:
          acct: { source: lake, format: parquet, path: full.parquet }
          acct_visible: { source: lake, format: parquet, path: visible.parquet }
          regions: { source: lake, format: csv, path: regions.csv, options: { header: true } }
          acct_v: { sql: "SELECT id, region, name, note, secret, 12 / (4 - region) AS ratio FROM bank.p.acct WHERE abs(region * 2) = 6" }
access:
  users:
    truth: { password: x }
    plain: { password: x }
    semi: { password: x }
    func: { password: x }
    view: { password: x }
  rules:
    - principals: [user:truth]
      allow: ["bank.p.acct_visible"]
      column_masks: { "bank.p.acct_visible.secret": "NULL" }
    - principals: [user:plain]
      allow: ["bank.p.acct"]
      row_filters: { "bank.p.acct": "region = 3" }
    - principals: [user:semi]
      allow: ["bank.p.acct"]
      row_filters: { "bank.p.acct": "region IN (SELECT r FROM bank.p.regions WHERE shown)" }
    - principals: [user:func]
      allow: ["bank.p.acct"]
      row_filters: { "bank.p.acct": "abs(region - 6) + length(name) - length(name) = 3" }
    - principals: [user:plain, user:semi, user:func]
      column_masks: { "bank.p.acct.secret": "NULL" }
    - principals: [user:view]
      allow: ["bank.p.acct_v"]
      column_masks: { "bank.p.acct_v.secret": "NULL" }
"#;

async fn mesh() -> (tempfile::TempDir, MeshEngine) {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    meshql_tpch::write::parquet(&data.join("full.parquet"), [batch(false)]).expect("full");
    meshql_tpch::write::parquet(&data.join("visible.parquet"), [batch(true)]).expect("visible");
    let regions: String = (0..5)
        .map(|r| format!("{r},{}\n", r == VISIBLE_REGION))
        .collect();
    std::fs::write(data.join("regions.csv"), format!("r,shown\n{regions}")).expect("regions");
    let path: PathBuf = dir.path().join("mesh.yaml");
    std::fs::write(&path, MESH).expect("mesh");
    let engine = open(&path).await;
    (dir, engine)
}

async fn open(path: &Path) -> MeshEngine {
    let spec = meshql_engine::config::load_mesh(path).expect("mesh loads");
    let engine = MeshEngine::from_spec(spec, &meshql_connectors::default_connectors()).await;
    let problems = engine.problems();
    assert!(
        problems.is_empty(),
        "{}",
        meshql_engine::problem::display_all(&problems)
    );
    engine
}

/// Conjuncts that hold for row `k` (so a failing conjunct beside them meets row `k`
/// wherever row `k` is visible) and conjuncts that fail: on row `k` only, or on any row
/// they are evaluated on.
fn predicate(rng: &mut StdRng, k: i64) -> String {
    let holds = [
        format!("id = {k}"),
        format!("id >= {k}"),
        format!("id <= {k}"),
        format!("id BETWEEN {} AND {}", k - 3, k + 3),
        format!("id IN ({k}, {})", k + 100_000),
        format!("name = 'name {k}'"),
        format!("name LIKE 'name {k}%'"),
        format!("name LIKE '%me {k}'"),
        format!("name LIKE 'n_me {k}'"),
        format!("name ILIKE 'NAME {k}'"),
        format!("region = {}", region_of(k)),
        format!("NOT (id <> {k})"),
        format!("upper(name) = 'NAME {k}'"),
        format!("CAST(id AS VARCHAR) = '{k}'"),
        // A computed column of the derived port: must not be evaluated below its WHERE.
        "ratio > 0".to_string(),
        "ratio = 12".to_string(),
    ];
    let long = "_".repeat(20_000);
    let fails = [
        format!("CASE WHEN id = {k} THEN 1 / (id - {k}) ELSE 0 END = 0"),
        format!("id / (id - {k}) > 0"),
        format!("name LIKE '{long}'"),
        format!("name NOT LIKE '%{long}'"),
        format!("name ILIKE '{long}'"),
        format!("note NOT ILIKE '{long}%'"),
        "CAST(note AS INT) = 1".to_string(),
        "name = 5".to_string(),
        "arrow_cast(name, 'Int32') = 1".to_string(),
    ];
    let harmless = [
        "secret IS NULL".to_string(),
        "length(name) > 3".to_string(),
        "note IS NULL OR note <> 'z'".to_string(),
    ];
    let mut conjuncts = Vec::new();
    for _ in 0..rng.random_range(1..3) {
        conjuncts.push(holds.choose(rng).expect("holds").clone());
    }
    if rng.random_bool(0.8) {
        conjuncts.push(fails.choose(rng).expect("fails").clone());
    }
    if rng.random_bool(0.3) {
        conjuncts.push(harmless.choose(rng).expect("harmless").clone());
    }
    conjuncts.shuffle(rng);
    conjuncts.join(" AND ")
}

fn statement(rng: &mut StdRng, predicate: &str) -> String {
    let shapes = [
        "SELECT count(*) FROM {t} WHERE {p}",
        "SELECT id, name, secret, note FROM {t} WHERE {p} ORDER BY id LIMIT 20",
        "SELECT region, count(*), max(name) FROM {t} WHERE {p} GROUP BY region",
        "SELECT x.id FROM (SELECT * FROM {t} WHERE {p}) x ORDER BY x.id DESC LIMIT 3",
        "SELECT id FROM {t} WHERE {p} AND id IN (SELECT id FROM {t} WHERE id >= 0)",
        "SELECT count(*) FROM {t} a JOIN {t} b ON a.id = b.id WHERE a.id IN (SELECT id FROM {t} WHERE {p})",
    ];
    shapes.choose(rng).expect("shape").replace("{p}", predicate)
}

fn outcome(result: Result<Vec<Vec<String>>, String>) -> Result<Vec<Vec<String>>, ()> {
    result
        .map(|mut rows| {
            rows.sort();
            rows
        })
        .map_err(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_outcomes_do_not_depend_on_hidden_rows() {
    let (_dir, engine) = mesh().await;
    let who = |name: &str| Identity::new(name, Vec::new());
    let truth = who("truth");
    let restricted = [
        (who("plain"), "bank.p.acct"),
        (who("semi"), "bank.p.acct"),
        (who("func"), "bank.p.acct"),
        (who("view"), "bank.p.acct_v"),
    ];
    let mut errors = 0;
    let mut checked = 0;
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(0x1ea4_0000 + seed);
        for _ in 0..12 {
            // Half the time a hidden row, half a visible one.
            let k = loop {
                let k = rng.random_range(0..ROWS);
                if (region_of(k) == VISIBLE_REGION) == rng.random_bool(0.5) {
                    break k;
                }
            };
            let p = predicate(&mut rng, k);
            let shape = statement(&mut rng, &p);
            let want = outcome(
                query(
                    &engine,
                    &truth,
                    &shape.replace("{t}", "bank.p.acct_visible"),
                )
                .await,
            );
            errors += usize::from(want.is_err());
            for (user, port) in &restricted {
                let sql = shape.replace("{t}", port);
                let got = outcome(query(&engine, user, &sql).await);
                assert_eq!(
                    got,
                    want,
                    "seed {seed}, user {}: `{}` does not behave as over the visible rows only \
                     (row {k} is {})",
                    user.user,
                    sql.replace(&"_".repeat(20_000), "<20000 underscores>"),
                    if region_of(k) == VISIBLE_REGION {
                        "visible"
                    } else {
                        "hidden"
                    }
                );
                checked += 1;
            }
        }
    }
    // The generator must exercise both outcomes, or the test proves nothing.
    assert!(
        errors > 10 && errors < checked / 4,
        "{errors} errors in {checked} statements"
    );
}
