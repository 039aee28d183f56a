//! `meshql check`

use std::process::ExitCode;

use meshql_engine::Error;
use meshql_engine::mesh::port::{PortKind, PortState};

use super::MeshArgs;

pub(super) async fn run(args: &MeshArgs) -> ExitCode {
    let engine = match args.open().await {
        Ok(engine) => engine,
        Err(Error::Config(problems)) => {
            for p in &problems {
                println!("{p}");
            }
            eprintln!("check failed: {} problem(s)", problems.len());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let problems = engine.check().await;
    if !problems.is_empty() {
        for p in &problems {
            println!("{p}");
        }
        eprintln!("check failed: {} problem(s)", problems.len());
        return ExitCode::FAILURE;
    }
    let registry = engine.registry();
    let products: usize = registry.domains.values().map(|d| d.products.len()).sum();
    let (mut source_ports, mut derived_ports) = (0, 0);
    for (_, port) in registry.ports() {
        debug_assert!(matches!(port.state(), PortState::Ready(_)));
        match port.info.kind {
            PortKind::Source => source_ports += 1,
            PortKind::Derived => derived_ports += 1,
        }
    }
    println!(
        "mesh ok: {} domains, {} data products, {} output ports ({} source, {} derived), {} sources",
        registry.domains.len(),
        products,
        source_ports + derived_ports,
        source_ports,
        derived_ports,
        registry.sources.len()
    );
    ExitCode::SUCCESS
}
