//! Command line: `meshql check`, `meshql query`. Every flag has a `MESHQL_*` variable.

mod check;
mod query;
mod repl;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use meshql_engine::{Error, Identity, MeshEngine};

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(name = "meshql", version, about = "Federated SQL over a data mesh", long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a mesh: every file, source and port, and that each port's data can be read.
    /// Prints one summary line and exits 0, or prints each problem as FILE:LINE:COL and exits 1.
    Check {
        #[command(flatten)]
        mesh: MeshArgs,
    },
    /// Run one SQL statement on the embedded engine and print the result.
    Query {
        #[command(flatten)]
        mesh: MeshArgs,
        /// Output format: an aligned table, CSV with a header line, or JSON lines (one object per row).
        #[arg(long, value_enum, default_value_t = Format::Table, env = "MESHQL_FORMAT")]
        format: Format,
        /// Act as this user of the mesh's `access.users` (required when the mesh has
        /// access rules), to try its grants, filters and masks locally.
        #[arg(long, env = "MESHQL_USER")]
        user: Option<String>,
        /// The statement, e.g. "SELECT * FROM sales.orders.orders LIMIT 5".
        sql: String,
    },
    /// An interactive SQL shell on the mesh (embedded) or on a server (--connect).
    Repl {
        #[command(flatten)]
        repl: repl::ReplArgs,
    },
    /// Serve the mesh over Arrow Flight SQL (ADBC, JDBC, pyarrow, the REPL).
    Serve {
        #[command(flatten)]
        mesh: MeshArgs,
        #[command(flatten)]
        serve: serve::ServeArgs,
    },
}

/// Which mesh to load.
#[derive(Debug, Args)]
pub(crate) struct MeshArgs {
    /// The main mesh file.
    #[arg(long, env = "MESHQL_CONFIG", required_unless_present = "demo")]
    config: Option<PathBuf>,
    /// Use the embedded demo mesh (generated into --data-dir on first use); wins over
    /// --config / MESHQL_CONFIG.
    #[arg(long)]
    demo: bool,
    /// Where the demo mesh is generated [default: ~/.cache/meshql/demo].
    #[arg(long, env = "MESHQL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Memory all running queries may use together, e.g. 4GiB or 512MB [default: unbounded].
    #[arg(long, env = "MESHQL_MEMORY_LIMIT", value_parser = parse_bytes)]
    memory_limit: Option<usize>,
    /// Send PostgreSQL and Flight SQL sources single-table statements only (joins,
    /// aggregates and sorts over their tables then run here). For comparisons.
    #[arg(long, env = "MESHQL_NO_SUBPLAN_PUSHDOWN")]
    no_subplan_pushdown: bool,
    /// Do not pass a join's build-side keys to the other side's scan (remote statements
    /// and lake scans then read every row their own filters allow). For comparisons.
    #[arg(long, env = "MESHQL_NO_DYNAMIC_FILTERS")]
    no_dynamic_filters: bool,
    /// Compute a subplan that occurs more than once in a query (a CTE read twice) at
    /// each occurrence instead of once. For comparisons.
    #[arg(long, env = "MESHQL_NO_SHARED_SUBPLANS")]
    no_shared_subplans: bool,
    /// The longest statement accepted, e.g. 1MiB.
    #[arg(long, env = "MESHQL_MAX_STATEMENT_BYTES", value_parser = parse_bytes, default_value = "1MiB")]
    max_statement_bytes: usize,
    /// End any statement that runs longer than this many seconds (planning, waiting for
    /// its turn and streaming), with an error and an audit record; 0 = no limit.
    #[arg(long, env = "MESHQL_STATEMENT_TIMEOUT_S", default_value_t = 900)]
    statement_timeout_s: u64,
    /// Statements reading output ports that run at once; more wait in line
    /// [default: twice the cores, at least 8].
    #[arg(long, env = "MESHQL_MAX_RUNNING_STATEMENTS")]
    max_running_statements: Option<usize>,
    /// Statements one user runs at once; more of theirs wait in line.
    #[arg(long, env = "MESHQL_MAX_STATEMENTS_PER_USER", default_value_t = 4)]
    max_statements_per_user: usize,
}

/// `123`, `64KB`, `512MiB`, `4GB`, `1.5GiB` (binary multiples either way). Not zero,
/// negative, NaN, exponents or sizes past what this machine can address.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let not_a_size = || format!("`{text}` is not a size like 512MiB or 4GB");
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(not_a_size());
    }
    let number: f64 = number.parse().map_err(|_| not_a_size())?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit `{other}` (use KiB, MiB, GiB)")),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes >= usize::MAX as f64 {
        return Err(format!("`{text}` is more than this machine can address"));
    }
    if bytes < 1.0 {
        return Err(format!(
            "`{text}` is zero: give a size of at least one byte"
        ));
    }
    Ok(bytes as usize)
}

impl MeshArgs {
    /// The main mesh file to load, generating the demo first if asked.
    async fn mesh_file(&self) -> Result<PathBuf, String> {
        match &self.config {
            Some(path) if !self.demo => Ok(path.clone()),
            _ => self.demo_mesh_file().await,
        }
    }

    #[cfg(feature = "demo")]
    async fn demo_mesh_file(&self) -> Result<PathBuf, String> {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(meshql_tpch::demo::default_data_dir);
        meshql_tpch::demo::ensure_demo(&dir)
            .await
            .map_err(|e| format!("cannot prepare the demo mesh in {}: {e}", dir.display()))
    }

    #[cfg(not(feature = "demo"))]
    async fn demo_mesh_file(&self) -> Result<PathBuf, String> {
        Err(
            "this meshql was built without the demo (cargo feature `demo`): give --config FILE"
                .to_string(),
        )
    }

    async fn open(&self) -> Result<MeshEngine, Error> {
        let path = self.mesh_file().await.map_err(Error::Setup)?;
        let options = meshql_engine::EngineOptions {
            memory_limit: self.memory_limit,
            no_subplan_pushdown: self.no_subplan_pushdown,
            no_dynamic_filters: self.no_dynamic_filters,
            no_shared_subplans: self.no_shared_subplans,
            statement_limits: meshql_engine::limits::StatementLimits {
                max_bytes: self.max_statement_bytes,
                ..Default::default()
            },
            admission: meshql_engine::admission::AdmissionOptions {
                statement_timeout: (self.statement_timeout_s > 0)
                    .then(|| std::time::Duration::from_secs(self.statement_timeout_s)),
                max_running: self
                    .max_running_statements
                    .unwrap_or(meshql_engine::admission::AdmissionOptions::default().max_running),
                max_per_user: self.max_statements_per_user,
            },
            settings: Vec::new(),
        };
        MeshEngine::open_with(&path, &meshql_connectors::default_connectors(), &options).await
    }
}

/// Who embedded statements run as. A governed mesh needs a declared user (no password:
/// whoever runs the embedded engine can read the mesh files anyway); an open mesh
/// lets everyone read everything.
pub(crate) fn embedded_identity(
    engine: &MeshEngine,
    user: Option<&str>,
) -> Result<Identity, String> {
    let Some(access) = engine.access().filter(|_| engine.is_governed()) else {
        return Ok(user.map_or_else(Identity::anonymous, |u| Identity::new(u, Vec::new())));
    };
    let declared: Vec<&str> = access.users.keys().map(String::as_str).collect();
    let Some(user) = user else {
        return Err(format!(
            "this mesh has access rules: pass --user NAME to run as one of its users ({})",
            declared.join(", ")
        ));
    };
    match access.users.get(user) {
        Some(u) => Ok(Identity::new(user, u.groups.clone())),
        None => Err(format!(
            "no user `{user}` in the mesh's `access.users` (declared: {})",
            declared.join(", ")
        )),
    }
}

pub(crate) async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { mesh } => check::run(&mesh).await,
        Command::Query {
            mesh,
            format,
            user,
            sql,
        } => query::run(&mesh, format, user.as_deref(), &sql).await,
        Command::Serve { mesh, serve } => serve::run(&mesh, &serve).await,
        Command::Repl { repl } => repl::run(&repl).await,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("123"), Ok(123));
        assert_eq!(parse_bytes("64KB"), Ok(64 << 10));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        for bad in [
            "lots",
            "4XB",
            "-1GiB",
            "-0",
            "0",
            "0.0MiB",
            "NaN",
            "inf",
            "1e3MB",
            "1.2.3GB",
            "",
            "99999999999TiB",
            ".MiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad} was accepted");
        }
        assert!(parse_bytes("-1GiB").unwrap_err().contains("not a size"));
    }
}
