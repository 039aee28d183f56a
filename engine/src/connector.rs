//! The contract between the engine and connectors.
//!
//! A [`Connector`] turns a `sources:` declaration of its `kind` into a [`Source`]; a
//! source turns the connector-specific keys of an output port (`format`, `path`, ...)
//! into a DataFusion [`TableProvider`]. The engine never depends on a concrete
//! connector: the binary builds a [`ConnectorRegistry`] and hands it to the engine.
//!
//! To support pushdown, the provider a source returns must implement DataFusion's
//! `supports_filters_pushdown` and honour `projection`, `filters` and `limit` in `scan`;
//! that is how a port does "what it can" and only needed rows leave the source.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use serde_yaml::Mapping;

use crate::problem::Problem;
use meshql_config::DecodeError;
use meshql_config::load::Origin;
use meshql_config::spans::KeyPath;

/// What went wrong opening a source or a port, pointing at the offending key.
#[derive(Debug, Clone)]
pub struct ConnectorError {
    /// Key path relative to the source or port declaration (empty = the whole entry).
    pub path: KeyPath,
    pub message: String,
    pub help: Option<String>,
}

impl ConnectorError {
    pub fn new(message: impl Into<String>) -> Self {
        ConnectorError {
            path: Vec::new(),
            message: message.into(),
            help: None,
        }
    }

    pub fn at(mut self, key: &str) -> Self {
        self.path.insert(0, key.to_string());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl ConnectorError {
    /// The problem this error is, located inside the entity declared at `origin`.
    pub fn into_problem(self, origin: &Origin, subject: impl Into<String>) -> Problem {
        let problem = origin
            .problem_at(&self.path, self.message)
            .with_subject(subject);
        match self.help {
            Some(help) => problem.with_help(help),
            None => problem,
        }
    }
}

impl From<DecodeError> for ConnectorError {
    fn from(e: DecodeError) -> Self {
        ConnectorError {
            path: e.path,
            message: e.message,
            help: None,
        }
    }
}

impl std::fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// Where a source is opened.
pub struct SourceContext<'a> {
    pub name: &'a str,
    /// Directory of the mesh file that declares the source: relative roots resolve here.
    pub base_dir: &'a Path,
    /// Object stores the source needs are registered here.
    pub runtime: &'a Arc<RuntimeEnv>,
}

/// Creates sources of one or more `kind`s.
pub trait Connector: Debug + Send + Sync {
    /// The `kind:` values this connector serves.
    fn kinds(&self) -> &'static [&'static str];

    /// Validate a source declaration (everything but `kind`) and prepare it. No network
    /// I/O here: a source that is down must not stop the mesh from loading.
    fn open_source(
        &self,
        kind: &str,
        options: &Mapping,
        ctx: &SourceContext<'_>,
    ) -> Result<Arc<dyn Source>, ConnectorError>;
}

/// What a port's location looks like, for `mesh.meta.output_ports`.
#[derive(Debug, Clone, Default)]
pub struct PortLocation {
    /// `parquet`, `delta`, `table`, ...
    pub format: String,
    /// A URL or name a person can follow, never containing secrets.
    pub location: String,
}

/// A declared source, ready to open ports.
#[async_trait]
pub trait Source: Debug + Send + Sync {
    /// Where the source is (for metadata and error messages), never containing secrets.
    fn location(&self) -> String;

    /// Validate a port's connector-specific keys without I/O.
    /// Forget cached metadata (schemas, row counts): `CALL mesh.refresh()`.
    fn refresh(&self) {}

    fn describe_port(&self, options: &Mapping) -> Result<PortLocation, ConnectorError>;

    /// Open a port: resolve its data and schema. Errors name what is missing and how to fix it.
    async fn open_port(
        &self,
        options: &Mapping,
        state: &SessionState,
    ) -> Result<Arc<dyn TableProvider>, ConnectorError>;
}

/// The connectors a mesh may use, by kind. Built by the binary and passed to the engine
/// as a value (no global registry).
#[derive(Debug, Default, Clone)]
pub struct ConnectorRegistry {
    by_kind: BTreeMap<&'static str, Arc<dyn Connector>>,
}

impl ConnectorRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, connector: Arc<dyn Connector>) -> &mut Self {
        for kind in connector.kinds() {
            self.by_kind.insert(kind, Arc::clone(&connector));
        }
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Connector>> {
        self.by_kind.get(kind)
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.by_kind.keys().copied().collect()
    }
}
