//! `meshql query`

use std::process::ExitCode;

use meshql_engine::Error;

use super::MeshArgs;
use meshql_flight_server::output::{Format, print_stream};

pub async fn run(args: &MeshArgs, format: Format, sql: &str) -> ExitCode {
    let engine = match args.open().await {
        Ok(engine) => engine,
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
        let df = engine.sql(sql).await?;
        let stream = df.execute_stream().await.map_err(Error::from)?;
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
