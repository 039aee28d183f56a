//! Running SQL on an embedded engine in tests: every batch, or the physical plan.

use arrow::array::{AsArray, RecordBatch};
use meshql_engine::MeshEngine;

/// Every batch of `sql`; panics naming the statement if it fails.
pub(crate) async fn collect(engine: &MeshEngine, sql: &str) -> Vec<RecordBatch> {
    let stream = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    futures::TryStreamExt::try_collect(stream)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The physical plan of `sql`, as text.
pub(crate) async fn physical_plan(engine: &MeshEngine, sql: &str) -> String {
    let batches = collect(engine, &format!("EXPLAIN {sql}")).await;
    let mut out = String::new();
    for batch in &batches {
        let kinds = batch.column(0).as_string::<i32>();
        let plans = batch.column(1).as_string::<i32>();
        for i in 0..batch.num_rows() {
            if kinds.value(i) == "physical_plan" {
                out.push_str(plans.value(i));
            }
        }
    }
    assert!(!out.is_empty(), "no physical plan for {sql}");
    out
}
