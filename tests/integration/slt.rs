//! The .slt files under tests/slt, through the embedded engine.

use std::sync::Arc;

use crate::support::fixture::fixture;
use crate::support::slt::{EngineDb, SltError, run_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_embedded() {
    let engine = Arc::new(fixture().engine().await);
    let problems = engine.problems();
    assert!(
        problems.is_empty(),
        "test mesh has problems:\n{}",
        meshql_engine::problem::display_all(&problems)
    );
    run_all(move || {
        let engine = Arc::clone(&engine);
        async move { Ok::<_, SltError>(EngineDb { engine }) }
    })
    .await;
}
