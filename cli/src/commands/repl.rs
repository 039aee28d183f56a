//! `meshql repl`

use std::path::PathBuf;
use std::process::ExitCode;

use crate::repl::{Backend, Repl};
use clap::Args;

use super::MeshArgs;

#[derive(Debug, Args)]
pub(super) struct ReplArgs {
    /// The main mesh file (embedded engine).
    #[arg(long, env = "MESHQL_CONFIG", conflicts_with = "connect")]
    config: Option<PathBuf>,
    /// The embedded demo mesh.
    #[arg(long, conflicts_with = "connect")]
    demo: bool,
    /// Where the demo mesh is generated [default: ~/.cache/meshql/demo].
    #[arg(long, env = "MESHQL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A Flight SQL server instead of the embedded engine, e.g. grpc://127.0.0.1:50051.
    #[arg(long, env = "MESHQL_CONNECT")]
    connect: Option<String>,
    /// With --connect: sign in as this user (password from MESHQL_PASSWORD or a prompt).
    /// Embedded: act as this user of the mesh's `access.users`, to try its policies.
    #[arg(long, env = "MESHQL_USER")]
    user: Option<String>,
    /// PEM of the CA that signed the server's certificate (grpc+tls://).
    #[arg(long, env = "MESHQL_TLS_CA", requires = "connect")]
    tls_ca: Option<PathBuf>,
}

pub(super) async fn run(args: &ReplArgs) -> ExitCode {
    let (backend, banner) = match &args.connect {
        Some(url) => {
            let password = match &args.user {
                None => None,
                Some(user) => match std::env::var("MESHQL_PASSWORD") {
                    Ok(p) => Some(p),
                    Err(_) => match rpassword::prompt_password(format!("password for {user}: ")) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            eprintln!("error: cannot read the password: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                },
            };
            let ca = match &args.tls_ca {
                Some(path) => match std::fs::read(path) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        eprintln!("error: cannot read {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => None,
            };
            let user = args.user.as_deref().zip(password.as_deref());
            match Backend::connect(url, user, ca).await {
                Ok(backend) => (
                    backend,
                    format!("meshql {} connected to {url}", env!("CARGO_PKG_VERSION")),
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => {
            if args.config.is_none() && !args.demo {
                eprintln!("error: give --config FILE, --demo or --connect grpc://HOST:PORT");
                return ExitCode::FAILURE;
            }
            let mesh = MeshArgs {
                config: args.config.clone(),
                demo: args.demo,
                data_dir: args.data_dir.clone(),
                memory_limit: None,
                no_subplan_pushdown: false,
                no_dynamic_filters: false,
                no_shared_subplans: false,
                max_statement_bytes: meshql_engine::limits::StatementLimits::default().max_bytes,
                // Interactive: Ctrl-C ends a statement.
                statement_timeout_s: 0,
                max_running_statements: None,
                max_statements_per_user: 4,
            };
            match mesh.open().await {
                Ok(engine) => {
                    for problem in engine.problems() {
                        eprintln!("warning: {problem}");
                    }
                    let identity = match super::embedded_identity(&engine, args.user.as_deref()) {
                        Ok(identity) => identity,
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::FAILURE;
                        }
                    };
                    let what = if args.demo {
                        "the demo mesh".to_string()
                    } else {
                        "the mesh".to_string()
                    };
                    (
                        Backend::Embedded(Box::new(engine.session(&identity))),
                        format!(
                            "meshql {} on {what} (embedded, as {})",
                            env!("CARGO_PKG_VERSION"),
                            identity.user
                        ),
                    )
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match Repl::new(backend).run(&banner).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
