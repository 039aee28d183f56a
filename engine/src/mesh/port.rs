//! One output port at run time: its declaration, its table (or why it is unavailable),
//! and the table wrapper that names the port in scan errors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{Constraints, Statistics};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use serde_yaml::Mapping;

use crate::connector::{PortLocation, Source};
use crate::problem::Problem;
use meshql_config::PortName;
use meshql_config::load::Origin;
use meshql_config::model::{CacheConfig, ColumnConfig};

use super::cache::NotHeld;

/// How long a port that failed to open is left alone before a query tries it again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A port whose source does not answer within this time is marked unavailable.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the session state ports are (re)opened with. It holds no catalogs, so the
/// catalogs that keep it do not form a reference cycle with the session.
#[derive(Debug, Clone)]
pub struct Opener {
    pub runtime: Arc<RuntimeEnv>,
    pub config: SessionConfig,
}

impl Opener {
    pub fn state(&self) -> SessionState {
        SessionStateBuilder::new()
            .with_config(self.config.clone())
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .build()
    }
}

/// What kind of port this is, for metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Reads a source.
    Source,
    /// A view over other ports (`sql:`).
    Derived,
}

/// Static facts about a port, from its declaration.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: PortName,
    pub origin: Origin,
    pub kind: PortKind,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub columns: BTreeMap<String, ColumnConfig>,
    pub source: Option<String>,
    pub location: PortLocation,
    pub sql: Option<String>,
    pub cache: Option<CacheConfig>,
}

/// How to open the port again if it failed (source ports only).
#[derive(Debug, Clone)]
pub struct Reopen {
    pub source: Arc<dyn Source>,
    pub options: Mapping,
}

#[derive(Debug, Clone)]
pub enum PortState {
    Ready(Arc<dyn TableProvider>),
    Broken { problem: Problem, since: Instant },
}

impl PortState {
    pub fn broken(problem: Problem) -> Self {
        PortState::Broken {
            problem,
            since: Instant::now(),
        }
    }
}

/// A port in the mesh registry.
#[derive(Debug)]
pub struct PortEntry {
    pub info: PortInfo,
    reopen: Option<Reopen>,
    state: RwLock<PortState>,
    cache_status: RwLock<Option<String>>,
    /// One reopen at a time: concurrent queries wait for it instead of all retrying.
    reopening: tokio::sync::Mutex<()>,
}

impl PortEntry {
    pub fn new(info: PortInfo, reopen: Option<Reopen>, state: PortState) -> Self {
        PortEntry {
            info,
            reopen,
            state: RwLock::new(state),
            cache_status: RwLock::new(None),
            reopening: tokio::sync::Mutex::new(()),
        }
    }

    pub fn state(&self) -> PortState {
        match self.state.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_state(&self, state: PortState) {
        match self.state.write() {
            Ok(mut guard) => *guard = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }

    pub fn table(&self) -> Option<Arc<dyn TableProvider>> {
        match self.state() {
            PortState::Ready(table) => Some(table),
            PortState::Broken { .. } => None,
        }
    }

    /// The table, reopening a broken source port when its last failure is old enough
    /// (a source that was down at start comes back without a restart).
    pub async fn table_or_error(&self, opener: &Opener) -> DFResult<Arc<dyn TableProvider>> {
        let (problem, since) = match self.state() {
            PortState::Ready(table) => return Ok(table),
            PortState::Broken { problem, since } => (problem, since),
        };
        let Some(reopen) = &self.reopen else {
            return Err(unavailable(&self.info, &problem));
        };
        if since.elapsed() < RETRY_AFTER {
            return Err(unavailable(&self.info, &problem));
        }
        let _one_at_a_time = self.reopening.lock().await;
        // Another query may have retried while this one waited.
        match self.state() {
            PortState::Ready(table) => return Ok(table),
            PortState::Broken { problem, since } if since.elapsed() < RETRY_AFTER => {
                return Err(unavailable(&self.info, &problem));
            }
            PortState::Broken { .. } => {}
        }
        match self.open_now(reopen, &opener.state()).await {
            Ok(table) => {
                tracing::info!(port = %self.info.name, "output port is available again");
                Ok(table)
            }
            Err(problem) => Err(unavailable(&self.info, &problem)),
        }
    }

    /// Open the port through its source now (within [`OPEN_TIMEOUT`]) and keep the
    /// result as its state.
    pub(crate) async fn open_now(
        &self,
        reopen: &Reopen,
        state: &SessionState,
    ) -> Result<Arc<dyn TableProvider>, Problem> {
        let opened =
            match tokio::time::timeout(OPEN_TIMEOUT, open_port(&self.info, reopen, state)).await {
                Ok(opened) => opened,
                Err(_) => Err(timed_out(&self.info)),
            };
        // Reading the rows of a cached port is not bounded by OPEN_TIMEOUT: the source
        // answered, and a big port takes as long as it takes (OPEN_TIMEOUT bounds the
        // wait for each batch).
        let opened = match (opened, &self.info.cache) {
            (Ok(table), Some(cache)) => self.hold(table, cache, state).await,
            (opened, _) => opened,
        };
        if opened.is_err() {
            // Whatever was held went with the old table.
            self.set_cache_status(None);
        }
        self.set_state(match &opened {
            Ok(table) => PortState::Ready(Arc::clone(table)),
            Err(problem) => PortState::broken(problem.clone()),
        });
        opened
    }

    /// The port's table with its rows in memory; the source's table if they do not fit.
    async fn hold(
        &self,
        table: Arc<dyn TableProvider>,
        cache: &CacheConfig,
        state: &SessionState,
    ) -> Result<Arc<dyn TableProvider>, Problem> {
        let name = &self.info.name;
        let started = Instant::now();
        let (table, status) = match super::cache::hold(&table, cache, state, OPEN_TIMEOUT).await {
            Ok((memory, held)) => {
                tracing::info!(port = %name, rows = held.rows, bytes = held.bytes,
                    seconds = started.elapsed().as_secs_f64(), "output port held in memory");
                let memory: Arc<dyn TableProvider> = Arc::new(PortTable {
                    name: name.clone(),
                    inner: memory,
                });
                (memory, held.to_string())
            }
            Err(NotHeld::NoRoom(reason)) => {
                let why = format!("not held: {reason}; read from the source");
                tracing::warn!(port = %name, "{why}; raise the limit or remove `cache:`");
                (table, why)
            }
            Err(NotHeld::Read(e)) => {
                let problem = self
                    .info
                    .origin
                    .problem(format!("reading the rows to cache failed: {e}"))
                    .with_subject(format!("output port `{name}`"));
                return Err(problem);
            }
        };
        self.set_cache_status(Some(status));
        Ok(table)
    }

    /// What the port's cache holds (`None` without `cache:` or before the port opened).
    pub fn cache_status(&self) -> Option<String> {
        match self.cache_status.read() {
            Ok(status) => status.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_cache_status(&self, status: Option<String>) {
        match self.cache_status.write() {
            Ok(mut guard) => *guard = status,
            Err(poisoned) => *poisoned.into_inner() = status,
        }
    }

    /// Open a source port again, so what its source says now (schema, files, row
    /// counts) is used. None for derived ports.
    pub async fn refresh(&self, opener: &Opener) -> Option<Result<(), Problem>> {
        let reopen = self.reopen.as_ref()?;
        let _one_at_a_time = self.reopening.lock().await;
        Some(self.open_now(reopen, &opener.state()).await.map(|_| ()))
    }
}

/// The problem of a port whose source did not answer in time.
pub fn timed_out(info: &PortInfo) -> Problem {
    info.origin
        .problem(format!(
            "source `{}` did not answer within {}s",
            info.source.as_deref().unwrap_or_default(),
            OPEN_TIMEOUT.as_secs()
        ))
        .with_subject(format!("output port `{}`", info.name))
}

/// The query-time error for a port that cannot be read.
fn unavailable(info: &PortInfo, problem: &Problem) -> DataFusionError {
    let at = info.origin.position();
    crate::Error::Unavailable(format!(
        "output port `{}` is unavailable: {} (declared at {}:{}:{}; run `meshql check` for details)",
        info.name,
        problem.describe_without_subject(),
        info.origin.file.path.display(),
        at.line,
        at.column
    ))
    .into_datafusion()
}

/// Open a source port through its connector, as a [`PortTable`].
pub async fn open_port(
    info: &PortInfo,
    reopen: &Reopen,
    state: &SessionState,
) -> Result<Arc<dyn TableProvider>, Problem> {
    match reopen.source.open_port(&reopen.options, state).await {
        Ok(inner) => Ok(Arc::new(PortTable {
            name: info.name.clone(),
            inner,
        })),
        Err(e) => Err(e.into_problem(&info.origin, format!("output port `{}`", info.name))),
    }
}

/// A connector's table, with the port's name added to errors raised while planning its scan.
#[derive(Debug)]
pub struct PortTable {
    name: PortName,
    inner: Arc<dyn TableProvider>,
}

impl PortTable {
    /// The connector's table.
    pub fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }

    fn context(&self, e: DataFusionError) -> DataFusionError {
        e.context(format!("reading output port `{}`", self.name))
    }
}

#[async_trait]
impl TableProvider for PortTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        self.inner.get_logical_plan()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.inner
            .scan(state, projection, filters, limit)
            .await
            .map_err(|e| self.context(e))
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> DFResult<ScanResult> {
        self.inner
            .scan_with_args(state, args)
            .await
            .map_err(|e| self.context(e))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
}
