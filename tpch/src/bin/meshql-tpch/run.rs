//! `meshql-tpch run`: TPC-H on meshql's embedded engine, the third way users run meshql
//! (beside `meshql serve` and the REPL), with no client or network in the figures.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use futures::TryStreamExt;
use meshql_engine::MeshEngine;
use serde::Deserialize;
use serde_json::json;

/// One statement from benches/tpch.py.
#[derive(Deserialize)]
struct Request {
    sql: String,
}

/// Open the mesh at `config`; then run the 22 queries (one warm-up, then `runs` times
/// each, printing medians) or, as a worker, answer statements read from stdin.
pub(crate) async fn run(config: &Path, sf: f64, runs: usize, worker: bool) -> ExitCode {
    let engine = match MeshEngine::open(config, &meshql_connectors::default_connectors()).await {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if engine.is_governed() {
        eprintln!(
            "error: {} has access rules; `run` reads open meshes like the layouts `meshql-tpch layout` writes",
            config.display()
        );
        return ExitCode::FAILURE;
    }
    if !engine.problems().is_empty() {
        eprintln!(
            "warning: the mesh has problems; `meshql check --config {}` lists them",
            config.display()
        );
    }
    if worker {
        serve_stdin(&engine).await
    } else {
        run_queries(&engine, sf, runs.max(1)).await
    }
}

/// Run one statement to its last row: (seconds, rows).
async fn time_one(engine: &MeshEngine, sql: &str) -> Result<(f64, usize), String> {
    let started = Instant::now();
    let stream = engine
        .sql(sql)
        .await
        .map_err(|e| e.to_string())?
        .execute()
        .await
        .map_err(|e| e.to_string())?;
    let rows = stream
        .try_fold(0, |n, batch| async move { Ok(n + batch.num_rows()) })
        .await
        .map_err(|e| e.to_string())?;
    Ok((started.elapsed().as_secs_f64(), rows))
}

/// JSON lines in (`{"sql": ...}`), JSON lines out (`{"seconds", "rows"}` or `{"error"}`).
async fn serve_stdin(engine: &MeshEngine) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock, value: serde_json::Value| {
        writeln!(out, "{value}").and_then(|_| out.flush())
    };
    if say(&mut out, json!({ "ready": true })).is_err() {
        return ExitCode::FAILURE;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => match time_one(engine, &request.sql).await {
                Ok((seconds, rows)) => json!({ "seconds": seconds, "rows": rows }),
                Err(e) => json!({ "error": e }),
            },
            Err(e) => json!({ "error": format!("bad request line: {e}") }),
        };
        if say(&mut out, reply).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

async fn run_queries(engine: &MeshEngine, sf: f64, runs: usize) -> ExitCode {
    let mut total = 0.0;
    let mut failed = 0;
    for (number, sql) in meshql_tpch::queries::for_scale_factor(sf) {
        let sql = meshql_tpch::queries::qualify(&sql, |t| meshql_tpch::layout::port(t).to_string());
        let mut times = Vec::with_capacity(runs);
        let mut outcome = Ok(0);
        for run in 0..=runs {
            match time_one(engine, &sql).await {
                Ok((seconds, rows)) => {
                    if run > 0 {
                        times.push(seconds);
                    }
                    outcome = Ok(rows);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        match outcome {
            Ok(rows) => {
                times.sort_by(f64::total_cmp);
                let median = times[times.len() / 2];
                total += median;
                println!("Q{number:<2} {median:>8.3} s  {rows} rows");
            }
            Err(e) => {
                failed += 1;
                println!("Q{number:<2} error: {}", e.replace('\n', " "));
            }
        }
    }
    println!("total {total:.3} s (median of {runs} after one warm-up)");
    if failed > 0 {
        eprintln!("error: {failed} queries failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
