//! Delta Lake ports (`format: delta`) through deltalake: file skipping from the Delta
//! log's statistics and partition values, projection and filter pushdown into the
//! Parquet scan, and time travel with `options: { version: N }` or `{ timestamp: ... }`.

use std::sync::{Arc, Once};

use datafusion::catalog::TableProvider;
use datafusion::execution::SessionState;
use deltalake::DeltaTableBuilder;
use deltalake::errors::DeltaTableError;
use meshql_engine::ConnectorError;
use meshql_engine::config::decode;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use url::Url;

use super::LakeSource;
use super::delta_files::{DeltaFilesTable, plain_files};

/// `options:` of a Delta port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeltaOptions {
    /// Read this table version (time travel).
    version: Option<u64>,
    /// Read the table as of this time (RFC 3339, e.g. `2026-01-31T00:00:00Z`).
    timestamp: Option<String>,
}

impl DeltaOptions {
    pub(crate) fn parse(options: &Mapping) -> Result<Self, ConnectorError> {
        let parsed: DeltaOptions = decode(Value::Mapping(options.clone())).map_err(|e| {
            let mut err = ConnectorError::from(e);
            err.path.insert(0, "options".into());
            err
        })?;
        if parsed.version.is_some() && parsed.timestamp.is_some() {
            return Err(
                ConnectorError::new("set `version` or `timestamp`, not both").at("options"),
            );
        }
        Ok(parsed)
    }
}

pub(crate) async fn open(
    source: &LakeSource,
    path: &str,
    url: Url,
    options: &Mapping,
    state: &SessionState,
) -> Result<Arc<dyn TableProvider>, ConnectorError> {
    static REGISTER_S3: Once = Once::new();
    REGISTER_S3.call_once(|| deltalake::aws::register_handlers(None));

    let options = DeltaOptions::parse(options)?;
    let url = super::as_dir(url);
    let mut builder = DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| ConnectorError::new(format!("invalid Delta table location: {e}")).at("path"))?
        .with_storage_backend(Arc::clone(&source.store), url);
    if let Some(version) = options.version {
        builder = builder.with_version(version);
    }
    if let Some(ts) = &options.timestamp {
        builder = builder.with_datestring(ts).map_err(|e| {
            ConnectorError::new(format!("invalid timestamp `{ts}`: {e}"))
                .at("timestamp")
                .at("options")
        })?;
    }
    let table = builder
        .load()
        .await
        .map_err(|e| load_error(e, source, path, &options))?;
    table
        .update_datafusion_session(state)
        .map_err(|e| ConnectorError::new(format!("cannot register the table's storage: {e}")))?;
    let provider = table.table_provider().await.map_err(|e| {
        ConnectorError::new(format!(
            "cannot read Delta table `{path}`: {}",
            e.strip_backtrace()
        ))
    })?;
    match plain_files(&table) {
        Ok(files) => Ok(Arc::new(DeltaFilesTable::new(
            provider.schema(),
            &table,
            files,
        ))),
        Err(why) => {
            tracing::debug!(path, %why, "Delta table scanned by deltalake");
            Ok(provider)
        }
    }
}

fn load_error(
    e: DeltaTableError,
    source: &LakeSource,
    path: &str,
    options: &DeltaOptions,
) -> ConnectorError {
    let message = e.to_string();
    let where_ = format!("in source `{}` ({})", source.name(), source.describe());
    if matches!(e, DeltaTableError::NotATable(_)) || message.contains("No files in log segment") {
        return ConnectorError::new(format!("`{path}` {where_} is not a Delta table (no `_delta_log` found)"))
            .at("path")
            .with_help("point `path:` at the table's root directory, or use `format: parquet` for plain Parquet files");
    }
    if let Some(version) = options.version
        && (matches!(e, DeltaTableError::InvalidVersion(_))
            || message.to_lowercase().contains("version"))
    {
        return ConnectorError::new(format!(
            "cannot load version {version} of Delta table `{path}`: {message}"
        ))
        .at("version")
        .at("options")
        .with_help("versions start at 0; `DESCRIBE HISTORY` in any Delta client lists them");
    }
    ConnectorError::new(format!(
        "cannot load Delta table `{path}` {where_}: {message}"
    ))
}
