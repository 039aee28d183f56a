//! Resource bounds a user cannot get around: the statement timeout ends a statement
//! (with a clear error and an audit record) and other users are not held up meanwhile.

use futures::TryStreamExt;
use tonic::Code;

use crate::policy::{env, governed_mesh, policy_access};
use crate::support::server::Server;
use crate::support::slt::TEST_PASSWORD;

/// Billions of rows to compare: minutes, not seconds, in any build.
const ENDLESS: &str = "SELECT count(*) FROM customer.profile.customer a, customer.profile.customer b, \
     customer.profile.customer c, customer.profile.customer d \
     WHERE a.c_name || b.c_name < c.c_name || d.c_name";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_timeout_ends_a_statement_and_others_still_run() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let server = Server::start(
        &mesh,
        &env(),
        &[
            "--statement-timeout-s",
            "2",
            "--max-statements-per-user",
            "1",
        ],
    );
    let signed_in = |name: &'static str| {
        let server = &server;
        async move {
            let mut c = server.client().await;
            c.handshake(name, TEST_PASSWORD).await.expect("sign in");
            c
        }
    };
    let endless = ENDLESS;
    let run = |mut client: arrow_flight::sql::client::FlightSqlServiceClient<_>,
               sql: &'static str| async move {
        let info = client.execute(sql.into(), None).await?;
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let batches: Vec<_> = client.do_get(ticket).await?.try_collect().await?;
        Ok::<_, arrow_flight::error::FlightError>(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        )
    };
    let started = std::time::Instant::now();
    let first = tokio::spawn(run(signed_in("ana").await, endless));
    let second = tokio::spawn(run(signed_in("ana").await, endless));
    // Another user is not held up by ana's statements.
    assert_eq!(
        run(signed_in("root").await, "SELECT 1")
            .await
            .expect("root"),
        1
    );
    for task in [first, second] {
        let err = task.await.expect("task").expect_err("timed out");
        let status = match &err {
            arrow_flight::error::FlightError::Tonic(status) => status.as_ref().clone(),
            other => panic!("not a gRPC status: {other}"),
        };
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
        assert!(status.message().contains("statement timeout"), "{status}");
    }
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    // Each ended statement is audited with the reason.
    let audit = std::fs::read_to_string(mesh.with_file_name("audit.jsonl")).expect("audit");
    let ended = audit
        .lines()
        .filter(|l| l.contains("\"user\":\"ana\"") && l.contains("statement timeout"))
        .count();
    assert!(ended >= 2, "{audit}");
}

/// `SET meshql.statement_timeout_s` lowers the timeout for the session that sets it, and
/// is refused where it would lift or raise the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_may_lower_the_statement_timeout_but_not_raise_it() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let engine = crate::policy::engine(&mesh).await;
    let ana = crate::policy::user(&engine, "ana");
    let session = engine.session(&ana);
    let run = |sql: &'static str| {
        let session = &session;
        async move {
            let stream = session.plan(sql).await?.execute().await?;
            let batches: Vec<_> = stream.try_collect().await?;
            Ok::<_, meshql_engine::Error>(batches)
        }
    };
    // The server's default is 15 minutes.
    for (sql, needle) in [
        ("SET meshql.statement_timeout_s = 100000", "not raise it"),
        ("SET meshql.statement_timeout_s = 0", "0 would lift it"),
        ("SET meshql.statement_timeout_s = 'soon'", "whole seconds"),
    ] {
        let err = run(sql).await.expect_err(sql).to_string();
        assert!(err.contains(needle), "{sql}: {err}");
    }
    run("SET meshql.statement_timeout_s = 1")
        .await
        .expect("lower");
    let started = std::time::Instant::now();
    let err = run(ENDLESS).await.expect_err("timed out").to_string();
    assert!(
        err.contains("longer than 1 s (SET meshql.statement_timeout_s)"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    // Another session keeps the server's timeout.
    let other = engine.session(&ana);
    let shown = other
        .plan("SELECT value FROM information_schema.df_settings WHERE name = 'meshql.statement_timeout_s'")
        .await
        .expect("plan")
        .execute()
        .await
        .expect("run");
    let batches: Vec<arrow::array::RecordBatch> = shown.try_collect().await.expect("rows");
    let value = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(value.contains("| 0 "), "{value}");
}

/// SIGTERM waits the drain time, then cuts what still runs: each cut statement is
/// audited and the process says so with a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_statements_after_the_drain_time_and_audits_them() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let server = Server::start(&mesh, &env(), &["--drain-timeout-s", "1"]);
    let mut ana = server.client().await;
    ana.handshake("ana", TEST_PASSWORD).await.expect("sign in");
    let endless = ENDLESS;
    let info = ana.execute(endless.into(), None).await.expect("plans");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let running = tokio::spawn(async move {
        match ana.do_get(ticket).await {
            Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
            Err(e) => Err(e),
        }
    });
    // The statement has started once its record is on disk.
    let log = mesh.with_file_name("audit.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"status\":\"started\"")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the statement never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate");
    assert!(
        !status.success(),
        "a shutdown that cut a statement exits non-zero: {status}"
    );
    assert!(running.await.expect("task").is_err());
    let audit = std::fs::read_to_string(&log).expect("audit");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"user\":\"ana\"") && l.contains("cut: the server shut down")),
        "{audit}"
    );
}
