//! The mesh file format, as serde types. These keys are a public contract: mesh files
//! must stay portable between meshql versions and tools, so keys are added, never renamed.
//!
//! Nested entities (sources, domains, products, ports) are kept as raw YAML here and
//! decoded one by one by the loader, so one bad port is reported (and skipped) without
//! hiding the problems, or the data, of the others.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// The only mesh file format version so far.
pub const MESH_FILE_VERSION: u32 = 1;

/// The main mesh file: the one passed to `--config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFileConfig {
    pub version: u32,
    /// Globs relative to this file; each matched file is a [`DomainFileConfig`].
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub sources: BTreeMap<String, Value>,
    #[serde(default)]
    pub domains: BTreeMap<String, Value>,
    /// Sign-in (and later access rules); decoded by the loader.
    pub access: Option<Value>,
}

/// A file pulled in by `include:`. It may only add sources and domains.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainFileConfig {
    #[serde(default)]
    pub sources: BTreeMap<String, Value>,
    #[serde(default)]
    pub domains: BTreeMap<String, Value>,
}

/// `sources.NAME`: where data lives. `kind` picks the connector, which validates the rest.
#[derive(Deserialize)]
pub struct SourceConfig {
    pub kind: String,
    /// Connector keys, secrets already interpolated: never printed.
    #[serde(flatten)]
    pub options: Mapping,
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .options
            .keys()
            .map(super::interpolate::key_string)
            .collect();
        f.debug_struct("SourceConfig")
            .field("kind", &self.kind)
            .field("keys", &keys)
            .finish()
    }
}

/// `domains.NAME`: a business domain; becomes a SQL catalog.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The team (group) that owns the domain.
    pub owner: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub products: BTreeMap<String, Value>,
}

/// `domains.D.products.NAME`: a data product; becomes a SQL schema.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub output_ports: BTreeMap<String, Value>,
}

/// `domains.D.products.P.output_ports.NAME`: an output port; becomes a SQL table.
///
/// A port either reads a `source` (the source's connector validates the remaining keys,
/// e.g. `format`, `path`, `options` for lake sources) or is derived from other ports by
/// `sql` (a view).
#[derive(Debug, Default, Deserialize)]
pub struct PortConfig {
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnConfig>,
    pub source: Option<String>,
    pub sql: Option<String>,
    /// Hold the port's rows in memory (source ports only).
    pub cache: Option<CacheConfig>,
    /// Connector-specific keys (`format`, `path`, `options`, `table`, ...).
    #[serde(flatten)]
    pub location: Mapping,
}

/// `output_ports.NAME.cache`: the port's rows are read when it opens (and on
/// `CALL mesh.refresh()`) and queries read them from memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The most the rows may take in memory, in MB; a port that needs more is read from
    /// its source as if it had no cache.
    #[serde(
        default = "CacheConfig::default_max_mb",
        deserialize_with = "super::decode::number_or_string"
    )]
    pub max_mb: u64,
}

impl CacheConfig {
    pub const DEFAULT_MAX_MB: u64 = 4096;

    fn default_max_mb() -> u64 {
        Self::DEFAULT_MAX_MB
    }
}

/// `columns.NAME`: documentation and tags of one column of a port.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}
