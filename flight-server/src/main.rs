//! The `meshql` binary.

use std::process::ExitCode;

use clap::Parser;

mod cli;

// Large batch buffers come and go per batch; glibc's allocator returns them to the
// kernel and faults fresh zeroed pages back in each time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    meshql_engine::allocator::retain_freed_memory();
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHQL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    cli::run(args).await
}
