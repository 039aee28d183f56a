//! Lake ports: pushdown visible in EXPLAIN, partition pruning, Delta file skipping and
//! time travel, S3, and a broken port that does not take the others down.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use meshql_engine::MeshEngine;

use crate::support::fixture::{copy_dir, fixture};
use crate::support::sql::{collect, physical_plan};

async fn count(engine: &MeshEngine, sql: &str) -> i64 {
    let batches = collect(engine, sql).await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// The `DataSourceExec` lines of a plan.
fn scans(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter(|l| l.contains("DataSourceExec"))
        .collect()
}

#[tokio::test]
async fn parquet_scan_receives_projection_filter_and_limit() {
    let engine = fixture().engine().await;
    let plan = physical_plan(
        &engine,
        "SELECT l_orderkey FROM sales.orders.lineitem WHERE l_quantity > 45 LIMIT 7",
    )
    .await;
    let scan = scans(&plan).join("\n");
    assert!(
        scan.contains("projection=[l_orderkey"),
        "projection not pushed:\n{plan}"
    );
    assert!(
        !scan.contains("l_comment"),
        "unneeded columns read:\n{plan}"
    );
    assert!(
        scan.contains("predicate=l_quantity@"),
        "filter not pushed into the Parquet scan:\n{plan}"
    );
    assert!(scan.contains("file_type=parquet"), "{plan}");

    let plan = physical_plan(
        &engine,
        "SELECT c_name FROM customer.profile.customer LIMIT 3",
    )
    .await;
    assert!(
        scans(&plan).join("\n").contains("limit=3"),
        "limit not pushed into the scan:\n{plan}"
    );
}

#[tokio::test]
async fn hive_partitions_are_pruned_before_reading_files() {
    let engine = fixture().engine().await;
    // (count(*) alone is answered from file statistics without a scan.)
    let plan = physical_plan(
        &engine,
        "SELECT sum(l_quantity) FROM sales.orders.lineitem WHERE l_returnflag = 'R'",
    )
    .await;
    let scan = scans(&plan).join("\n");
    assert!(scan.contains("l_returnflag=R"), "{plan}");
    assert!(
        !scan.contains("l_returnflag=A") && !scan.contains("l_returnflag=N"),
        "partitions not pruned:\n{plan}"
    );
    let r = count(
        &engine,
        "SELECT count(*) FROM sales.orders.lineitem WHERE l_returnflag = 'R'",
    )
    .await;
    let all = count(&engine, "SELECT count(*) FROM sales.orders.lineitem").await;
    assert!(r > 0 && r < all, "R={r} all={all}");
}

#[tokio::test]
async fn delta_time_travel_and_file_skipping() {
    let engine = fixture().engine().await;
    // Version 0 holds the first generated batch, version 1 appends the rest.
    assert_eq!(
        count(&engine, "SELECT count(*) FROM sales.orders.orders_v0").await,
        8192
    );
    assert_eq!(
        count(&engine, "SELECT count(*) FROM sales.orders.orders").await,
        15000
    );

    // Order keys below 100 only exist in the file of version 0: the Delta log's
    // statistics let the scan skip the other file.
    let plan = physical_plan(
        &engine,
        "SELECT o_orderkey, o_totalprice FROM sales.orders.orders WHERE o_orderkey < 100",
    )
    .await;
    let all_files = physical_plan(
        &engine,
        "SELECT o_orderkey, o_totalprice FROM sales.orders.orders",
    )
    .await;
    let files = |p: &str| p.matches(".parquet").count();
    assert!(
        files(&all_files) >= 2,
        "expected two data files:\n{all_files}"
    );
    assert!(files(&plan) < files(&all_files), "no file skipped:\n{plan}");
    assert!(
        !plan.contains("o_comment"),
        "projection not pushed:\n{plan}"
    );
}

#[tokio::test]
async fn s3_ports_answer_a_cross_domain_join() {
    let engine = fixture().engine().await;
    // customer (Parquet on S3) x nation (CSV, local) x orders (Delta, local).
    let batches = collect(
        &engine,
        "SELECT n.n_name, count(*) AS orders
         FROM sales.orders.orders o
         JOIN customer.profile.customer c ON o.o_custkey = c.c_custkey
         JOIN customer.geo.nation n ON c.c_nationkey = n.n_nationkey
         GROUP BY n.n_name ORDER BY orders DESC, n.n_name LIMIT 3",
    )
    .await;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 3);
    let total = count(
        &engine,
        "SELECT count(*) FROM sales.orders.orders o JOIN customer.profile.customer c ON o.o_custkey = c.c_custkey",
    )
    .await;
    assert_eq!(total, 15000, "every order has its customer");
    // part is Delta on S3, supplier two CSV files on S3 matched by a glob.
    assert_eq!(
        count(&engine, "SELECT count(*) FROM supply.catalog.part").await,
        2000
    );
    assert_eq!(
        count(&engine, "SELECT count(*) FROM supply.catalog.supplier").await,
        100
    );
}

#[tokio::test]
async fn a_broken_port_fails_alone_and_names_itself() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&f.root, dir.path());
    // Break one port: remove its data.
    std::fs::remove_dir_all(dir.path().join("data/supply/partsupp")).expect("rm");
    let spec =
        meshql_engine::config::load_mesh_with_env(&dir.path().join("mesh.yaml"), &f.lookup())
            .expect("loads");
    let engine = MeshEngine::from_spec(spec, &meshql_connectors::default_connectors()).await;

    let problems = engine.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = problems[0].to_string();
    assert!(p.contains("domains/supply.yaml:"), "{p}");
    assert!(p.contains("supply.catalog.partsupp"), "{p}");
    assert!(p.contains("does not exist"), "{p}");

    let err = engine
        .sql("SELECT * FROM supply.catalog.partsupp")
        .await
        .expect_err("broken port must fail")
        .to_string();
    assert!(
        err.contains("output port `supply.catalog.partsupp` is unavailable"),
        "{err}"
    );
    assert!(err.contains("supply/partsupp/*.parquet"), "{err}");

    // Every other port keeps answering, and so do the listings.
    assert_eq!(
        count(&engine, "SELECT count(*) FROM supply.catalog.part").await,
        2000
    );
    let listed = count(&engine, "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'supply' AND table_schema = 'catalog'").await;
    assert_eq!(listed, 2, "information_schema lists the readable ports");
    let batches = collect(
        &engine,
        "SELECT status, error FROM mesh.meta.output_ports WHERE name = 'supply.catalog.partsupp'",
    )
    .await;
    assert_eq!(
        batches[0].column(0).as_string::<i32>().value(0),
        "unavailable"
    );
    assert!(!batches[0].column(1).is_null(0));
}

/// A file that goes bad after the port opened fails the statement while its rows stream,
/// with an error that names the port (the reader's own message alone does not).
#[tokio::test]
async fn an_error_while_rows_stream_names_the_port() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&f.root, dir.path());
    let spec =
        meshql_engine::config::load_mesh_with_env(&dir.path().join("mesh.yaml"), &f.lookup())
            .expect("loads");
    let engine = MeshEngine::from_spec(spec, &meshql_connectors::default_connectors()).await;
    assert!(engine.problems().is_empty(), "{:?}", engine.problems());
    // Garble the data pages, keep the size and the footer.
    let mut garbled = 0;
    for entry in std::fs::read_dir(dir.path().join("data/supply/partsupp")).expect("ls") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let mut bytes = std::fs::read(&path).expect("read");
            let end = bytes.len() / 2;
            for (i, b) in bytes[8..end].iter_mut().enumerate() {
                *b = (i * 7919 % 251) as u8;
            }
            std::fs::write(&path, bytes).expect("write");
            garbled += 1;
        }
    }
    assert!(garbled > 0, "no Parquet files under data/supply/partsupp");
    let sql = "SELECT ps_partkey, ps_comment FROM supply.catalog.partsupp";
    let failed = async {
        let stream = engine.sql(sql).await?.execute().await?;
        futures::TryStreamExt::try_collect::<Vec<_>>(stream)
            .await
            .map_err(meshql_engine::Error::from)
    }
    .await
    .expect_err("garbled pages must fail")
    .to_string();
    assert!(
        failed.contains("output port `supply.catalog.partsupp`"),
        "{failed}"
    );
    assert!(!failed.contains("likely caused by a bug"), "{failed}");
}

/// A Delta snapshot of plain files is scanned as Parquet (no deltalake scan node, no
/// file-id column); a partitioned one still goes through deltalake, which injects the
/// partition values. Both answer the same, and both skip files.
#[tokio::test]
async fn delta_plain_and_partitioned_tables_answer_alike() {
    use deltalake::protocol::SaveMode;
    use meshql_tpch::generate::{Table, batches};

    let dir = tempfile::tempdir().expect("temp dir");
    let part: Vec<RecordBatch> = batches(Table::Part, 0.01).collect();
    let url = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).expect("dir");
        url::Url::from_directory_path(&path).expect("url")
    };
    meshql_tpch::write::delta(url("plain"), part.clone(), &[], SaveMode::Overwrite)
        .await
        .expect("plain");
    meshql_tpch::write::delta(url("by_mfgr"), part, &["p_mfgr"], SaveMode::Overwrite)
        .await
        .expect("partitioned");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        "version: 1
sources:
  lake: { kind: local, root: . }
domains:
  supply:
    products:
      parts:
        output_ports:
          plain: { source: lake, format: delta, path: plain }
          by_mfgr: { source: lake, format: delta, path: by_mfgr }
",
    )
    .expect("mesh");
    let engine = MeshEngine::open(&mesh, &meshql_connectors::default_connectors())
        .await
        .expect("engine");

    let query = |port: &str| {
        format!(
            "SELECT p_mfgr, count(*) AS parts, sum(p_retailprice) AS price FROM supply.parts.{port}
             WHERE p_size < 10 GROUP BY p_mfgr ORDER BY p_mfgr"
        )
    };
    let rows = |batches: Vec<RecordBatch>| {
        arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string()
    };
    let plain = rows(collect(&engine, &query("plain")).await);
    let partitioned = rows(collect(&engine, &query("by_mfgr")).await);
    assert_eq!(plain, partitioned);
    assert_eq!(plain.matches("Manufacturer#").count(), 5, "{plain}");

    let plan = physical_plan(&engine, &query("plain")).await;
    assert!(
        plan.contains("DataSourceExec") && !plan.contains("DeltaScan"),
        "a plain snapshot should be scanned as Parquet:\n{plan}"
    );
    assert!(!plan.contains("__delta_rs_file_id__"), "{plan}");
    let plan = physical_plan(&engine, &query("by_mfgr")).await;
    assert!(
        plan.contains("DeltaScan"),
        "a partitioned table needs deltalake's scan:\n{plan}"
    );
    // Partition values skip files (plain tables skip them by footer statistics:
    // delta_time_travel_and_file_skipping).
    let one_mfgr = physical_plan(
        &engine,
        "SELECT p_name FROM supply.parts.by_mfgr WHERE p_mfgr = 'Manufacturer#1'",
    )
    .await;
    assert_eq!(one_mfgr.matches(".parquet").count(), 1, "{one_mfgr}");
}
