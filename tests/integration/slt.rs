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
    run_all("slt", move || {
        let engine = Arc::clone(&engine);
        async move { Ok::<_, SltError>(EngineDb::new(engine)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_over_flight_sql() {
    let f = fixture();
    let server = crate::support::server::Server::start(&f.mesh, &f.env(), &[]);
    let endpoint = server.endpoint();
    run_all("slt", move || {
        let endpoint = endpoint.clone();
        async move { crate::support::slt::FlightDb::connect(endpoint, false).await }
    })
    .await;
    drop(server);
}
