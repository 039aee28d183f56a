//! `meshql-tpch`: TPC-H data, queries and mesh layouts for meshql benchmarks (`generate`,
//! `queries`, `layout`), and the queries on the embedded engine (`run`).

use std::path::PathBuf;
use std::process::ExitCode;

mod run;

// The allocator of the `meshql` binary, so embedded runs measure what the server does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use meshql_tpch::generate::{Table, batches};
use meshql_tpch::write;

#[derive(Parser)]
#[command(name = "meshql-tpch", about = "TPC-H data for meshql benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write TPC-H tables to OUT: `<table>.parquet`, `<table>.csv` (with a header line)
    /// or a Delta table directory `<table>/` (written in one commit, so the table is
    /// held in memory: about 1.5 GB for lineitem at SF1).
    Generate {
        /// Scale factor (1 = about 1 GB of raw data, 6M lineitem rows).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        #[arg(long, value_enum, default_value_t = Format::Parquet)]
        format: Format,
        #[arg(long)]
        out: PathBuf,
        /// Tables to write [default: all eight].
        tables: Vec<String>,
    },
    /// Write the 22 queries for scale factor SF: OUT/plain/qN.sql over bare table names
    /// (for other engines) and OUT/mesh/qN.sql over the layouts' port names.
    Queries {
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the 22 queries on meshql's embedded engine over a layout's mesh file (one
    /// warm-up, then the median of RUNS per query). `--worker` instead answers statements
    /// read from stdin as JSON lines (for benches/tpch.py).
    Run {
        /// The mesh file, e.g. OUT/mesh.yaml of `layout lake`.
        #[arg(long)]
        config: PathBuf,
        /// Scale factor of the data (sets Q11's fraction).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, hide = true)]
        worker: bool,
    },
    /// Write a whole mesh layout into OUT: the data and its mesh files. `lake`: every
    /// table a port of its domain (sales: orders, lineitem as Delta; supply: part,
    /// partsupp, supplier; customer: customer, nation, region); serve OUT/mesh.yaml.
    /// `mesh`: the same with nation and region on a second node (OUT/node/mesh.yaml)
    /// and customer in PostgreSQL (load OUT/postgres.sql); serve OUT/mesh-layout.yaml,
    /// or OUT/mesh-orders-layout.yaml for orders in PostgreSQL too.
    Layout {
        /// `lake` or `mesh`.
        #[arg(default_value = "lake")]
        name: String,
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Parquet,
    Csv,
    Delta,
}

#[tokio::main]
async fn main() -> ExitCode {
    meshql_engine::allocator::retain_freed_memory();
    let (sf, format, out, tables) = match Cli::parse().command {
        Command::Generate {
            sf,
            format,
            out,
            tables,
        } => (sf, format, out, tables),
        Command::Queries { sf, out } => {
            for (number, sql) in meshql_tpch::queries::for_scale_factor(sf) {
                let mesh = meshql_tpch::queries::qualify(&sql, |t| {
                    meshql_tpch::layout::port(t).to_string()
                });
                for (kind, text) in [("plain", sql), ("mesh", mesh)] {
                    let dir = out.join(kind);
                    let written = std::fs::create_dir_all(&dir)
                        .and_then(|_| std::fs::write(dir.join(format!("q{number}.sql")), text));
                    if let Err(e) = written {
                        eprintln!("error: {}: {e}", dir.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            return ExitCode::SUCCESS;
        }
        Command::Run {
            config,
            sf,
            runs,
            worker,
        } => return run::run(&config, sf, runs, worker).await,
        Command::Layout { name, sf, out } => {
            if name != "lake" && name != "mesh" {
                eprintln!("error: unknown layout `{name}` (layouts: lake, mesh)");
                return ExitCode::FAILURE;
            }
            let written = match meshql_tpch::layout::write_lake(&out, sf).await {
                Ok(lake) if name == "lake" => Ok(vec![lake]),
                Ok(_) => meshql_tpch::layout::write_mesh_layout(&out, sf)
                    .map(|files| vec![files.gateway, files.gateway_orders, files.node]),
                Err(e) => Err(e),
            };
            return match written {
                Ok(files) => {
                    for file in files {
                        println!("{}", file.display());
                    }
                    if name == "mesh" {
                        eprintln!(
                            "next: `createdb tpch && psql -d tpch -f {0}/postgres.sql`, `meshql serve --config {0}/node/mesh.yaml --bind 127.0.0.1:50052`, then set TPCH_PG_PORT, TPCH_PG_USER, TPCH_PG_PASSWORD and TPCH_NODE_URL=grpc://127.0.0.1:50052 and serve {0}/mesh-layout.yaml (orders on the lake) or {0}/mesh-orders-layout.yaml (orders in PostgreSQL)",
                            out.display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let chosen: Result<Vec<Table>, String> = if tables.is_empty() {
        Ok(Table::ALL.to_vec())
    } else {
        tables
            .iter()
            .map(|name| {
                Table::ALL
                    .into_iter()
                    .find(|t| t.name() == name.as_str())
                    .ok_or_else(|| {
                        let all: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                        format!("unknown table `{name}` (tables: {})", all.join(", "))
                    })
            })
            .collect()
    };
    let chosen = match chosen {
        Ok(chosen) => chosen,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    for table in chosen {
        let name = table.name();
        let result = match format {
            Format::Parquet => {
                write::parquet(&out.join(format!("{name}.parquet")), batches(table, sf))
            }
            Format::Csv => write::csv(&out.join(format!("{name}.csv")), batches(table, sf)),
            Format::Delta => write::delta_dir(&out.join(name), batches(table, sf).collect())
                .await
                .map(|_| ()),
        };
        if let Err(e) = result {
            eprintln!("error: {name}: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("{name}: written");
    }
    ExitCode::SUCCESS
}
