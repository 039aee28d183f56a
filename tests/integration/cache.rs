//! `cache:` on ports: rows served from memory until the port is refreshed (lake and
//! PostgreSQL ports), a port too big for its cache or the memory pool read from its
//! source, governance unchanged on cached ports, and `cache` where it cannot apply.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use meshql_engine::{EngineOptions, MeshEngine};
use meshql_tpch::generate::{Table, batches};
use meshql_tpch::write;

use crate::support::cli::{meshql_plain, stderr, stdout};
use crate::support::federation::federation;
use crate::support::fixture::{TEST_SF, copy_dir, fixture};
use crate::support::slt::{EngineDb, SltError, TEST_PASSWORD, query, run_all};
use crate::support::sql::{collect, physical_plan};

/// Add `cache` to the ports of `file` (under the copied test mesh) whose names are in
/// `ports`, or to every source port when `ports` is empty.
fn with_cache(root: &Path, file: &str, ports: &[&str], cache: &str) {
    let path = root.join("domains").join(file);
    let text = std::fs::read_to_string(&path).expect("domain file");
    let mut out = String::new();
    let mut port = "";
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if indent.len() == 10 && trimmed.ends_with(':') {
            port = trimmed.trim_end_matches(':');
        }
        if trimmed.starts_with("source:") && (ports.is_empty() || ports.contains(&port)) {
            out.push_str(&format!("{indent}cache: {cache}\n"));
        }
    }
    std::fs::write(&path, out).expect("write domain file");
}

async fn engine_with_env(mesh: &Path, env: &[(String, String)]) -> MeshEngine {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let spec = meshql_engine::config::load_mesh_with_env(mesh, &lookup).expect("mesh loads");
    MeshEngine::from_spec(spec, &meshql_connectors::default_connectors()).await
}

async fn count(engine: &MeshEngine, table: &str) -> i64 {
    let batches = collect(engine, &format!("SELECT count(*) FROM {table}")).await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// `mesh.meta.output_ports.cache` of one port.
async fn cache_status(engine: &MeshEngine, port: &str) -> Option<String> {
    let sql = format!("SELECT cache FROM mesh.meta.output_ports WHERE name = '{port}'");
    let batches = collect(engine, &sql).await;
    let column = batches[0].column(0).as_string::<i32>();
    (!column.is_null(0)).then(|| column.value(0).to_string())
}

#[tokio::test]
async fn a_cached_port_answers_from_memory_until_refreshed() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&f.root, dir.path());
    with_cache(dir.path(), "supply.yaml", &["partsupp"], "{ max_mb: 64 }");
    let engine = engine_with_env(&dir.path().join("mesh.yaml"), &f.env()).await;
    assert!(engine.problems().is_empty(), "{:?}", engine.problems());

    let port = "supply.catalog.partsupp";
    assert_eq!(count(&engine, port).await, 8000);
    let status = cache_status(&engine, port).await.expect("a cache status");
    assert!(status.starts_with("in memory: 8000 rows, "), "{status}");
    assert_eq!(cache_status(&engine, "supply.catalog.part").await, None);
    let scan = physical_plan(
        &engine,
        &format!("SELECT ps_partkey FROM {port} WHERE ps_availqty > 10"),
    )
    .await;
    assert!(
        !scan.contains("file_type=parquet"),
        "read the files:\n{scan}"
    );
    let sum = "SELECT sum(ps_availqty) FROM supply.catalog.partsupp";
    let before = collect(&engine, sum).await;

    // The files change; the rows stay until the port is refreshed. The fixture wrote
    // the first half of partsupp's batches to part-0 and the rest to part-1.
    let generated: Vec<RecordBatch> = batches(Table::PartSupp, TEST_SF).collect();
    let first_half: usize = generated[..generated.len() / 2]
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    let files = dir.path().join("data/supply/partsupp");
    std::fs::remove_file(files.join("part-1.parquet")).expect("rm");
    write::parquet(&files.join("part-2.parquet"), [generated[0].slice(0, 10)]).expect("write");
    assert_eq!(count(&engine, port).await, 8000);
    assert_eq!(collect(&engine, sum).await, before);

    collect(&engine, "CALL mesh.refresh('lake')").await;
    let left = count(&engine, port).await;
    assert_eq!(left as usize, first_half + 10);
    let status = cache_status(&engine, port).await.expect("a cache status");
    assert!(
        status.starts_with(&format!("in memory: {left} rows, ")),
        "{status}"
    );

    // A refresh that fails leaves nothing held, and says nothing is.
    std::fs::remove_dir_all(&files).expect("rm");
    collect(&engine, "CALL mesh.refresh('lake')").await;
    assert_eq!(cache_status(&engine, port).await, None);
}

#[tokio::test]
async fn a_port_too_big_for_its_cache_reads_its_source() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&f.root, dir.path());
    with_cache(dir.path(), "sales.yaml", &["lineitem"], "{ max_mb: 1 }");
    let engine = engine_with_env(&dir.path().join("mesh.yaml"), &f.env()).await;
    assert!(engine.problems().is_empty(), "{:?}", engine.problems());

    let port = "sales.orders.lineitem";
    let status = cache_status(&engine, port).await.expect("a cache status");
    assert!(
        status.contains("not held") && status.contains("1 MB") && status.contains("cache.max_mb"),
        "{status}"
    );
    assert_eq!(count(&engine, port).await, 60175);
    let scan = physical_plan(&engine, &format!("SELECT l_orderkey FROM {port}")).await;
    assert!(scan.contains("file_type=parquet"), "{scan}");

    // Within max_mb but not within the memory pool: the pool counts what caches hold.
    with_cache(dir.path(), "supply.yaml", &["partsupp"], "{ max_mb: 64 }");
    let lookup = |name: &str| f.env().into_iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let spec = meshql_engine::config::load_mesh_with_env(&dir.path().join("mesh.yaml"), &lookup)
        .expect("mesh loads");
    let options = EngineOptions {
        memory_limit: Some(256 * 1024),
        ..EngineOptions::default()
    };
    let engine =
        MeshEngine::from_spec_with(spec, &meshql_connectors::default_connectors(), &options).await;
    let status = cache_status(&engine, "supply.catalog.partsupp")
        .await
        .expect("a cache status");
    assert!(
        status.starts_with("not held: the memory pool (`--memory-limit`) has no room"),
        "{status}"
    );
    assert_eq!(count(&engine, "supply.catalog.partsupp").await, 8000);
}

/// The policy suite gives the same answers, per user, when every source port is cached:
/// the cache sits below grants, row filters and masks, never beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_slt_with_every_port_cached() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&f.root, dir.path());
    for file in ["customer.yaml", "sales.yaml", "supply.yaml"] {
        with_cache(dir.path(), file, &[], "{}");
    }
    let mesh = dir.path().join("mesh.yaml");
    let access = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policy/access.yaml");
    let text = std::fs::read_to_string(&mesh).expect("mesh");
    let access = std::fs::read_to_string(access).expect("access");
    std::fs::write(&mesh, format!("{text}\n{access}")).expect("write");
    let mut env = f.env();
    env.push(("MESHQL_TEST_PASSWORD".into(), TEST_PASSWORD.into()));
    let engine = Arc::new(engine_with_env(&mesh, &env).await);
    assert!(engine.problems().is_empty(), "{:?}", engine.problems());
    let groups = engine.access().expect("access").users["root"]
        .groups
        .clone();
    let root = meshql_engine::Identity::new("root", groups);
    let sql = "SELECT name, cache FROM mesh.meta.output_ports WHERE kind = 'source' ORDER BY name";
    let ports = query(&engine, &root, sql)
        .await
        .expect("root reads metadata");
    assert_eq!(ports.len(), 9, "{ports:?}");
    for port in ports {
        assert!(port[1].starts_with("in memory: "), "{port:?}");
    }
    // A reader under a row filter learns that the port is cached, not its size.
    let groups = engine.access().expect("access").users["ana"].groups.clone();
    let ana = meshql_engine::Identity::new("ana", groups);
    let sql = "SELECT cache FROM mesh.meta.output_ports WHERE name = 'customer.profile.customer'";
    let seen = query(&engine, &ana, sql).await.expect("ana reads metadata");
    assert_eq!(seen, vec![vec!["in memory".to_string()]]);
    run_all("slt/policy", move || {
        let engine = Arc::clone(&engine);
        async move { Ok::<_, SltError>(EngineDb::new(engine)) }
    })
    .await;
}

#[test]
fn cache_where_it_cannot_apply_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let mesh = dir.path().join("mesh.yaml");
    let write = |port: &str| {
        let text = format!(
            "version: 1\nsources:\n  lake: {{ kind: local, root: . }}\ndomains:\n  d:\n    products:\n      p:\n        output_ports:\n{port}"
        );
        std::fs::write(&mesh, text).expect("write");
    };
    let mesh_arg = mesh.to_str().expect("utf-8 path");

    write("          v:\n            sql: SELECT 1 AS one\n            cache: {}\n");
    let out = meshql_plain(&["check", "--config", mesh_arg], None);
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success());
    assert!(err.contains("mesh.yaml:11"), "{err}");
    assert!(
        err.contains("`cache` applies to ports that read a source"),
        "{err}"
    );

    write(
        "          t:\n            source: lake\n            format: parquet\n            path: t.parquet\n            cache: { max_gb: 2 }\n",
    );
    let out = meshql_plain(&["check", "--config", mesh_arg], None);
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success());
    assert!(
        err.contains("unknown key `max_gb`; did you mean `max_mb`?"),
        "{err}"
    );

    write(
        "          t:\n            source: lake\n            format: parquet\n            path: t.parquet\n            cache: { max_mb: 0 }\n",
    );
    let out = meshql_plain(&["check", "--config", mesh_arg], None);
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success());
    assert!(err.contains("`max_mb` must be at least 1"), "{err}");
}

/// A cached PostgreSQL port answers from memory: rows added at the source appear after
/// `CALL mesh.refresh('crm')`, not before.
#[tokio::test]
async fn a_cached_postgres_port_answers_from_memory_until_refreshed() {
    let fed = federation();
    fed.pg.psql(
        "crm",
        "CREATE TABLE public.cache_probe AS SELECT g AS id FROM generate_series(1, 100) AS g",
    );
    let mesh = fed.root.join("cached-postgres.yaml");
    let crm = std::fs::read_to_string(&fed.mesh).expect("mesh");
    let sources = &crm[..crm.find("domains:").expect("domains")];
    std::fs::write(
        &mesh,
        format!(
            "{sources}domains:\n  probe:\n    products:\n      p:\n        output_ports:\n          \
             probe: {{ source: crm, table: public.cache_probe, cache: {{}} }}\n"
        ),
    )
    .expect("write mesh");
    let engine = engine_with_env(&mesh, &fed.env()).await;
    let port = "probe.p.probe";
    assert_eq!(count(&engine, port).await, 100);
    let status = cache_status(&engine, port).await.expect("a cache status");
    assert!(status.starts_with("in memory: 100 rows, "), "{status}");

    fed.pg
        .psql("crm", "INSERT INTO public.cache_probe VALUES (101), (102)");
    assert_eq!(count(&engine, port).await, 100);
    collect(&engine, "CALL mesh.refresh('crm')").await;
    assert_eq!(count(&engine, port).await, 102);
}
