//! The `meshql` binary.

use std::process::ExitCode;

use clap::Parser;

mod commands;
mod output;
mod repl;

// Large batch buffers come and go per batch; glibc's allocator returns them to the
// kernel and faults fresh zeroed pages back in each time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    meshql_engine::allocator::retain_freed_memory();
    let args = commands::Cli::parse();
    // Every statement is planned and run on the runtime's threads, never on the main
    // thread (whose stack the OS sizes): a stack the depth limits are measured against
    // (meshql_engine::limits).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(meshql_engine::limits::STACK_BYTES)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The main future (not Send: it holds stdout) runs on a thread of the same stack size.
    let spawned = std::thread::Builder::new()
        .name("meshql-main".into())
        .stack_size(meshql_engine::limits::STACK_BYTES)
        .spawn(move || {
            let code = runtime.block_on(start(args));
            (code, runtime)
        });
    let (code, runtime) = match spawned.map(|t| t.join()) {
        Ok(Ok(done)) => done,
        Ok(Err(_)) => return ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: cannot start the main thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropping the tasks still running (statements cut by a shutdown) writes their
    // audit records; blocking work gets a bounded time to end.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    code
}

async fn start(args: commands::Cli) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHQL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    commands::run(args).await
}
