//! `meshql query`

use std::process::ExitCode;

use super::MeshArgs;
use crate::output::{Format, print_stream};

pub(super) async fn run(
    args: &MeshArgs,
    format: Format,
    user: Option<&str>,
    sql: &str,
) -> ExitCode {
    let engine = match args.open().await {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = match super::embedded_identity(&engine, user) {
        Ok(identity) => identity,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let broken = engine.registry().port_problems();
    if !broken.is_empty() {
        let names: Vec<String> = broken.iter().filter_map(|p| p.subject.clone()).collect();
        eprintln!(
            "warning: {} output port(s) unavailable ({}); `meshql check` explains why",
            broken.len(),
            names.join(", ")
        );
    }
    let result = async {
        let stream = engine.session(&identity).plan(sql).await?.execute().await?;
        print_stream(stream, format).await
    };
    // A typo in a domain or product hides its ports: say so before "table not found".
    let other = engine.registry().problems.len();
    if other > 0 {
        eprintln!("warning: {other} problem(s) in the mesh files; `meshql check` lists them");
    }
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
