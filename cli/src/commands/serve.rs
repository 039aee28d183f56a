//! `meshql serve`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meshql_server::{ServeOptions, serve};

use super::MeshArgs;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on; port 0 lets the OS choose (the chosen one is printed).
    #[arg(long, env = "MESHQL_BIND", default_value = "127.0.0.1:50051")]
    bind: SocketAddr,
    /// PEM certificate chain for TLS (with --tls-key).
    #[arg(long, env = "MESHQL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "MESHQL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve a mesh without `access:` on a non-loopback address (anyone who can reach
    /// the port reads everything).
    #[arg(long, env = "MESHQL_INSECURE_OPEN")]
    insecure_open: bool,
    /// Key signing bearer tokens; give replicas the same one [default: random per process].
    #[arg(long, env = "MESHQL_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Lifetime of a bearer token, in seconds.
    #[arg(long, env = "MESHQL_TOKEN_TTL_S", default_value_t = 3600)]
    token_ttl_s: u64,
    /// Longest a session lasts after its password sign-in, in seconds: renewing a token
    /// does not extend it.
    #[arg(long, env = "MESHQL_SESSION_MAX_S", default_value_t = 43_200)]
    session_max_s: u64,
    /// Failed password sign-ins per user name a minute (three times as many per client
    /// address) before further sign-ins are refused for the rest of that minute.
    #[arg(long, env = "MESHQL_MAX_FAILED_SIGN_INS", default_value_t = 10)]
    max_failed_sign_ins: usize,
    /// On SIGTERM, seconds running statements get to finish before they are cut (each
    /// cut statement is audited, and the process then exits non-zero).
    #[arg(long, env = "MESHQL_DRAIN_TIMEOUT_S", default_value_t = 30)]
    drain_timeout_s: u64,
}

pub(super) async fn run(mesh: &MeshArgs, args: &ServeArgs) -> ExitCode {
    let engine = match mesh.open().await {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for problem in engine.problems() {
        eprintln!("warning: {problem}");
    }
    let options = ServeOptions {
        bind: args.bind,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        insecure_open: args.insecure_open,
        token_secret: args.token_secret.clone(),
        token_ttl: Duration::from_secs(args.token_ttl_s),
        session_max: Duration::from_secs(args.session_max_s),
        max_failed_sign_ins: args.max_failed_sign_ins,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
    };
    match serve(engine, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
