//! One statement must never take the server down: deep and wide statements from a user
//! with no grants at all, through statements, prepared statements and tickets, against
//! the real server. Deep but reasonable statements (2,000-term chains, 200 chained
//! CTEs) answer; deeper ones get a clear error; the process never aborts.

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::policy::{env, governed_mesh, policy_access};
use crate::support::server::Server;
use crate::support::slt::TEST_PASSWORD;

/// A statement of `n` nested or chained parts of one shape.
fn deep(shape: &str, n: usize) -> String {
    let chain = |item: &str, sep: &str| vec![item; n].join(sep);
    match shape {
        "plus" => format!("SELECT {}", chain("1", " + ")),
        "or" => format!("SELECT 1 WHERE {}", chain("1 = 2", " OR ")),
        "and" => format!("SELECT 1 WHERE {}", chain("1 = 1", " AND ")),
        "concat" => format!("SELECT {}", chain("'a'", " || ")),
        "parens" => format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        "calls" => format!("SELECT {}1{}", "abs(".repeat(n), ")".repeat(n)),
        "not" => format!("SELECT {}true", "NOT ".repeat(n)),
        "minus" => format!("SELECT {}1", "- ".repeat(n)),
        "case" => format!(
            "SELECT {}1{}",
            "CASE WHEN true THEN ".repeat(n),
            " END".repeat(n)
        ),
        "ctes" => {
            let mut ctes = vec!["c0 AS (SELECT 1 AS x)".to_string()];
            ctes.extend((1..n).map(|i| format!("c{i} AS (SELECT x + 1 AS x FROM c{})", i - 1)));
            format!("WITH {} SELECT x FROM c{}", ctes.join(", "), n - 1)
        }
        "subqueries" => format!(
            "SELECT * FROM {}(SELECT 1 AS x){}",
            "(SELECT * FROM ".repeat(n),
            ") t".repeat(n)
        ),
        "union" => chain("SELECT 1 AS x", " UNION ALL "),
        "in_list" => format!(
            "SELECT 1 WHERE 3 IN ({})",
            (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ),
        "columns" => format!(
            "SELECT {}",
            (0..n)
                .map(|i| format!("{i} AS c{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => panic!("no shape {other}"),
    }
}

const SHAPES: [&str; 14] = [
    "plus",
    "or",
    "and",
    "concat",
    "parens",
    "calls",
    "not",
    "minus",
    "case",
    "ctes",
    "subqueries",
    "union",
    "in_list",
    "columns",
];

/// Run `sql` as a statement (plan + DoGet) or a prepared statement (prepare, execute,
/// DoGet). `Ok(rows)` or the error text.
async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
    prepared: bool,
) -> Result<usize, String> {
    let info = if prepared {
        let mut statement = client
            .prepare(sql.to_string(), None)
            .await
            .map_err(|e| e.to_string())?;
        statement.execute().await.map_err(|e| e.to_string())?
    } else {
        client
            .execute(sql.to_string(), None)
            .await
            .map_err(|e| e.to_string())?
    };
    let ticket = info.endpoint[0].ticket.clone().ok_or("no ticket")?;
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_wide_statements_never_abort_the_server() {
    let (_dir, mesh) = governed_mesh(&policy_access());
    let mut server = Server::start(&mesh, &env(), &[]);
    let mut client = server.client().await;
    client
        .handshake("nobody", TEST_PASSWORD)
        .await
        .expect("sign in");

    // What must answer: chains and nesting of the sizes real generators produce.
    for (shape, n) in [
        ("plus", 2000),
        ("or", 2000),
        ("and", 2000),
        ("concat", 2000),
        ("case", 40),
        ("ctes", 200),
        ("subqueries", 40),
        ("union", 1000),
        ("in_list", 50_000),
        ("columns", 5000),
    ] {
        for prepared in [false, true] {
            let sql = deep(shape, n);
            let got = run(&mut client, &sql, prepared).await;
            assert!(
                got.is_ok(),
                "{shape} x {n} (prepared: {prepared}) should answer: {got:?}"
            );
        }
    }

    // Random shapes and sizes up to the 1 MiB statement bound: an answer or a clear
    // error, never a dead server or an internal error.
    let mut rng = StdRng::seed_from_u64(0xdee9);
    for round in 0..60 {
        let shape = *SHAPES.choose(&mut rng).expect("shape");
        let mut n = *[10, 100, 1000, 3000, 8000, 30_000, 100_000]
            .choose(&mut rng)
            .expect("n");
        if shape == "columns" {
            // Wide, not deep, and slow to plan in a debug build past a few thousand.
            n = n.min(3000);
        }
        let prepared = rng.random_bool(0.5);
        let sql = deep(shape, n);
        let got = run(&mut client, &sql, prepared).await;
        if let Some(status) = server.exited() {
            panic!(
                "round {round}: {shape} x {n} (prepared: {prepared}) took the server down: {status}"
            );
        }
        if let Err(e) = &got {
            assert!(
                !e.contains("Internal") && !e.contains("likely a bug"),
                "{shape} x {n}: {e}"
            );
            // A statement error (a bound, or a parse error), not a server failure.
            assert!(
                e.contains("invalid argument") || e.contains("message length too large"),
                "{shape} x {n}: not a statement error: {e}"
            );
        }
    }
    // Values a function would build past its bound are refused before they exist.
    for sql in [
        "SELECT repeat('x', 200000000)",
        "SELECT length(lpad('x', 1000000000))",
        "SELECT array_repeat('x', 500000000)",
        "SELECT length(v || v || v) FROM (SELECT repeat('x', 40000000) AS v)",
        &doubling_chain(40),
    ] {
        let e = run(&mut client, sql, false).await.expect_err(sql);
        assert!(
            e.contains("may build at most 64 MiB per batch"),
            "{sql}: {e}"
        );
    }
    // A value within those bounds, repeated by a join or unnest 8,192 times a batch:
    // before the batch bound, copying it out asked for 491 GB and aborted the server.
    let big =
        "(SELECT 0 AS z, k, repeat(CAST(k AS VARCHAR), 60000000) AS v FROM (VALUES (1)) t(k))";
    for sql in [
        // A hash join repeating the build side's value for each probe row.
        format!(
            "SELECT max(length(upper(s.v))) FROM (SELECT i % 1 AS z FROM generate_series(1, 100000) g(i)) g \
             JOIN {big} s ON g.z = s.z"
        ),
        // A cross join emits one-row batches, which the next operator gathers.
        format!("SELECT max(length(upper(s.v))) FROM generate_series(1, 100000) g(i), {big} s"),
        format!("SELECT max(length(v)) FROM (SELECT v, unnest(range(0, 99999 + k)) FROM {big})"),
        // A window function repeating one value for each row of its frame.
        "SELECT max(length(f)) FROM (SELECT first_value(v) OVER (ORDER BY i ROWS BETWEEN \
         UNBOUNDED PRECEDING AND CURRENT ROW) f FROM (SELECT i, repeat('x', CASE WHEN i = 1 \
         THEN 60000000 ELSE 0 END) v FROM generate_series(1, 100000) g(i)))"
            .to_string(),
    ] {
        let e = run(&mut client, &sql, false).await.expect_err(&sql);
        assert!(
            e.contains("a batch may repeat values up to 1024 MiB"),
            "{sql}: {e}"
        );
        assert!(server.exited().is_none(), "{sql}");
    }
    // Collecting window functions hold their whole frame in every row.
    let e = run(
        &mut client,
        "SELECT max(cardinality(a)) FROM (SELECT array_agg(v) OVER (ORDER BY i) a FROM \
         (SELECT i, repeat('x', 1000) || i AS v FROM generate_series(1, 20000) g(i)))",
        false,
    )
    .await
    .unwrap_err();
    assert!(e.contains("needs a frame of a fixed number of rows"), "{e}");
    // 64-bit offsets skip Arrow's 2 GiB check, so nothing casts to them.
    let e = run(&mut client, "SELECT arrow_cast('a', 'LargeUtf8')", false)
        .await
        .unwrap_err();
    assert!(e.contains("meshql keeps 64-bit-offset types out"), "{e}");
    // And it still answers.
    assert_eq!(run(&mut client, "SELECT 1", false).await, Ok(1));
    assert!(server.exited().is_none());
}

/// CTEs each doubling the one before with `||`: 8 bytes times 2^n.
fn doubling_chain(n: usize) -> String {
    let mut sql = String::from("WITH c0 AS (SELECT 'xxxxxxxx' AS v)");
    for i in 1..=n {
        sql.push_str(&format!(", c{i} AS (SELECT v || v AS v FROM c{})", i - 1));
    }
    sql + &format!(" SELECT length(v) FROM c{n}")
}
