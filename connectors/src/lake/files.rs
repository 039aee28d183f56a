//! Parquet, CSV and JSON ports: DataFusion listing tables over a file, a directory
//! (with hive-style `key=value` partitions) or a glob inside a lake source.
//!
//! Listing tables do the pushdown: projection and limit into the scan, filters into
//! Parquet row-group/page pruning, and partition filters into file listing.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;
use futures::TryStreamExt;
use meshql_engine::ConnectorError;
use meshql_engine::config::decode;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use url::Url;

use super::LakeSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormatKind {
    Parquet,
    Csv,
    Json,
}

/// `options:` of a Parquet port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParquetPortOptions {
    file_extension: Option<String>,
    #[serde(default)]
    partition_columns: BTreeMap<String, PartitionType>,
}

/// `options:` of a CSV port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvPortOptions {
    /// Whether the first line holds column names (default true).
    header: Option<bool>,
    delimiter: Option<char>,
    quote: Option<char>,
    escape: Option<char>,
    comment: Option<char>,
    /// Values matching this regex read as NULL.
    null_regex: Option<String>,
    compression: Option<Compression>,
    schema_infer_max_records: Option<usize>,
    file_extension: Option<String>,
    #[serde(default)]
    partition_columns: BTreeMap<String, PartitionType>,
}

/// `options:` of a JSON (newline-delimited) port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPortOptions {
    compression: Option<Compression>,
    schema_infer_max_records: Option<usize>,
    file_extension: Option<String>,
    #[serde(default)]
    partition_columns: BTreeMap<String, PartitionType>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// Types a hive partition value (`year=2024`) can be read as; untyped partitions are strings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PartitionType {
    String,
    Int,
    Bigint,
    Date,
    Boolean,
}

impl PartitionType {
    fn data_type(self) -> DataType {
        match self {
            PartitionType::String => DataType::Utf8,
            PartitionType::Int => DataType::Int32,
            PartitionType::Bigint => DataType::Int64,
            PartitionType::Date => DataType::Date32,
            PartitionType::Boolean => DataType::Boolean,
        }
    }
}

/// The decoded `options:` of a file port.
#[derive(Debug)]
pub(crate) struct FileOptions {
    kind: FileFormatKind,
    csv: CsvPortOptions,
    json: JsonPortOptions,
    file_extension: Option<String>,
    partition_columns: BTreeMap<String, PartitionType>,
}

impl FileOptions {
    pub(crate) fn parse(kind: FileFormatKind, options: &Mapping) -> Result<Self, ConnectorError> {
        let value = Value::Mapping(options.clone());
        let at_options = |e: meshql_engine::config::DecodeError| {
            let mut err = ConnectorError::from(e);
            err.path.insert(0, "options".to_string());
            err
        };
        let mut parsed = FileOptions {
            kind,
            csv: CsvPortOptions::default(),
            json: JsonPortOptions::default(),
            file_extension: None,
            partition_columns: BTreeMap::new(),
        };
        match kind {
            FileFormatKind::Parquet => {
                let o: ParquetPortOptions = decode(value).map_err(at_options)?;
                parsed.file_extension = o.file_extension;
                parsed.partition_columns = o.partition_columns;
            }
            FileFormatKind::Csv => {
                let mut o: CsvPortOptions = decode(value).map_err(at_options)?;
                let chars = [
                    ("delimiter", o.delimiter),
                    ("quote", o.quote),
                    ("escape", o.escape),
                    ("comment", o.comment),
                ];
                for (key, c) in chars {
                    if let Some(c) = c
                        && !c.is_ascii()
                    {
                        return Err(ConnectorError::new(format!(
                            "`{key}` must be one ASCII character, not `{c}`"
                        ))
                        .at(key)
                        .at("options"));
                    }
                }
                parsed.file_extension = o.file_extension.take();
                parsed.partition_columns = std::mem::take(&mut o.partition_columns);
                parsed.csv = o;
            }
            FileFormatKind::Json => {
                let mut o: JsonPortOptions = decode(value).map_err(at_options)?;
                parsed.file_extension = o.file_extension.take();
                parsed.partition_columns = std::mem::take(&mut o.partition_columns);
                parsed.json = o;
            }
        }
        Ok(parsed)
    }

    fn format(&self, state: &SessionState) -> Arc<dyn FileFormat> {
        let table_options = state.default_table_options();
        match self.kind {
            FileFormatKind::Parquet => {
                Arc::new(ParquetFormat::default().with_options(table_options.parquet))
            }
            FileFormatKind::Csv => {
                let o = &self.csv;
                let mut format = CsvFormat::default()
                    .with_options(table_options.csv)
                    .with_has_header(o.header.unwrap_or(true));
                if let Some(c) = o.delimiter {
                    format = format.with_delimiter(c as u8);
                }
                if let Some(c) = o.quote {
                    format = format.with_quote(c as u8);
                }
                if o.escape.is_some() {
                    format = format.with_escape(o.escape.map(|c| c as u8));
                }
                if o.comment.is_some() {
                    format = format.with_comment(o.comment.map(|c| c as u8));
                }
                if let Some(r) = &o.null_regex {
                    format = format.with_null_regex(Some(r.clone()));
                }
                if let Some(c) = o.compression {
                    format = format.with_file_compression_type(compression(c).into());
                }
                if let Some(n) = o.schema_infer_max_records {
                    format = format.with_schema_infer_max_rec(n);
                }
                Arc::new(format)
            }
            FileFormatKind::Json => {
                let o = &self.json;
                let mut format = JsonFormat::default().with_options(table_options.json);
                if let Some(c) = o.compression {
                    format = format.with_file_compression_type(compression(c).into());
                }
                if let Some(n) = o.schema_infer_max_records {
                    format = format.with_schema_infer_max_rec(n);
                }
                Arc::new(format)
            }
        }
    }

    fn default_extension(&self) -> &'static str {
        match self.kind {
            FileFormatKind::Parquet => ".parquet",
            FileFormatKind::Csv => ".csv",
            FileFormatKind::Json => ".json",
        }
    }
}

fn compression(c: Compression) -> CompressionTypeVariant {
    match c {
        Compression::None => CompressionTypeVariant::UNCOMPRESSED,
        Compression::Gzip => CompressionTypeVariant::GZIP,
        Compression::Bzip2 => CompressionTypeVariant::BZIP2,
        Compression::Xz => CompressionTypeVariant::XZ,
        Compression::Zstd => CompressionTypeVariant::ZSTD,
    }
}

const GLOB_CHARS: &[char] = &['*', '?', '['];

/// Open a file port as a listing table.
pub(crate) async fn open(
    source: &LakeSource,
    path: &str,
    url: Url,
    options: FileOptions,
    state: &SessionState,
) -> Result<Arc<dyn TableProvider>, ConnectorError> {
    let not_found = || {
        ConnectorError::new(format!(
            "`{path}` does not exist in source `{}` ({})",
            source.name(),
            source.describe()
        ))
        .at("path")
        .with_help("check `path:` (relative to the source root) or write the data first")
    };
    let io = |e: object_store::Error| {
        ConnectorError::new(format!(
            "cannot reach source `{}` ({}): {e}",
            source.name(),
            source.describe()
        ))
        .with_help("is the storage server up, and are the source's endpoint and credentials right?")
    };

    // A file, a directory, or a glob? Files take any extension; directories only
    // the format's (so a README beside the data is not read as data).
    let (table_url, extension) = if let Some(first_glob) = path.find(GLOB_CHARS) {
        let split = path[..first_glob].rfind('/').map(|i| i + 1).unwrap_or(0);
        let dir_url = source
            .root_url
            .join(&path[..split])
            .map_err(|e| ConnectorError::new(format!("invalid path: {e}")).at("path"))?;
        let pattern = glob::Pattern::new(&path[split..])
            .map_err(|e| ConnectorError::new(format!("invalid glob `{path}`: {e}")).at("path"))?;
        let table_url = ListingTableUrl::try_new(dir_url, Some(pattern))
            .map_err(|e| ConnectorError::new(e.to_string()))?;
        (table_url, String::new())
    } else {
        let object = ObjectPath::from_url_path(url.path())
            .map_err(|e| ConnectorError::new(e.to_string()).at("path"))?;
        let is_dir = match source.store.head(&object).await {
            Ok(_) => false,
            Err(object_store::Error::NotFound { .. }) => {
                match source.store.list(Some(&object)).try_next().await {
                    Ok(Some(_)) => true,
                    Ok(None) => return Err(not_found()),
                    Err(e) => return Err(io(e)),
                }
            }
            // A local directory answers HEAD with an error other than NotFound.
            Err(_) if url.scheme() == "file" && std::path::Path::new(url.path()).is_dir() => true,
            Err(e) => return Err(io(e)),
        };
        if is_dir {
            let extension = options
                .file_extension
                .clone()
                .unwrap_or_else(|| options.default_extension().to_string());
            (listing_url(super::as_dir(url))?, extension)
        } else {
            (listing_url(url)?, String::new())
        }
    };

    let mut listing = ListingOptions::new(options.format(state)).with_file_extension(extension);
    let partition_cols: Vec<(String, DataType)> = if options.partition_columns.is_empty() {
        listing
            .infer_partitions(state, &table_url)
            .await
            .map_err(|e| ConnectorError::new(format!("cannot list partitions: {e}")))?
            .into_iter()
            .map(|name| (name, DataType::Utf8))
            .collect()
    } else {
        options
            .partition_columns
            .iter()
            .map(|(name, t)| (name.clone(), t.data_type()))
            .collect()
    };
    listing = listing.with_table_partition_cols(partition_cols);

    let schema = listing.infer_schema(state, &table_url).await.map_err(|e| {
        let message = meshql_engine::Error::from(e).to_string();
        if message.contains("No files found") || message.contains("not found") {
            not_found()
        } else {
            ConnectorError::new(format!("cannot read the schema of `{path}`: {message}"))
                .with_help("check that `format:` matches the files and that they are not damaged")
        }
    })?;
    if schema.fields().is_empty() {
        return Err(not_found().with_help(format!(
            "no file matching the format was found; a directory is read for `*{}` files (set `options.file_extension` otherwise)",
            options.default_extension()
        )));
    }
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(listing)
        .with_schema(schema);
    let table =
        ListingTable::try_new(config).map_err(|e| ConnectorError::new(e.strip_backtrace()))?;
    Ok(Arc::new(table))
}

fn listing_url(url: Url) -> Result<ListingTableUrl, ConnectorError> {
    ListingTableUrl::try_new(url, None)
        .map_err(|e| ConnectorError::new(e.strip_backtrace()).at("path"))
}
