//! meshql connectors: what turns a `sources:` entry and a port's keys into a table.
//!
//! | file | kinds / formats |
//! |---|---|
//! | `lake/mod.rs` | sources `local` and `s3` (object stores); dispatches on the port's `format:` to the formats below it |
//! | `lake/files.rs` | formats `parquet`, `csv`, `json` (DataFusion listing tables) |
//! | `lake/delta.rs` | format `delta` (deltalake) |
//! | `lake/delta_files.rs` | a Delta snapshot of plain Parquet files, scanned as Parquet |
//! | `postgres/` | source `postgres`: tables pushed down to as SQL |
//! | `flight_sql.rs` | source `flight_sql`: another meshql node, or any Flight SQL server |
//!
//! Adding a connector touches four places: its file (or folder) here, one `register` line in
//! [`default_connectors`], one cargo feature in `Cargo.toml`, and one `.slt` file under
//! `tests/slt/` that queries a port through it.

use std::sync::Arc;

use meshql_engine::ConnectorRegistry;

#[cfg(feature = "flight-sql")]
mod flight_sql;
mod lake;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "flight-sql"))]
mod remote_defaults;

pub use lake::LakeConnector;

/// Every connector compiled into this build.
pub fn default_connectors() -> ConnectorRegistry {
    let mut registry = ConnectorRegistry::new();
    registry.register(Arc::new(LakeConnector));
    #[cfg(feature = "postgres")]
    registry.register(Arc::new(postgres::PostgresConnector));
    #[cfg(feature = "flight-sql")]
    registry.register(Arc::new(flight_sql::FlightSqlConnector));
    registry
}
