//! [`MeshSession`]: statements of one identity. Plans under that identity's catalogs,
//! refuses DDL, DML and settings off the allow-list, and audits every statement: a
//! failure to plan is recorded at once; an execution when it starts (before its first
//! row leaves) and again when its stream ends (rows, duration, error), is cancelled, or
//! fails.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{EmptyRecordBatchStream, RecordBatchStream, execute_stream};
use datafusion::sql::sqlparser::parser::ParserError;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};

use crate::admission::{Admission, Admitted, Deadline};
use crate::error::{Error, Result};
use crate::governance::audit::{AuditRecord, AuditStatus, Decision, Denial};
use crate::governance::catalog::Denials;
use crate::governance::expr::normalize_identity_calls;
use crate::governance::{Governance, Identity, settings};
use crate::limits::StatementLimits;
use crate::mesh::refresh::{refresh_call, refresh_table};
use crate::optimizer::{MeshqlOptions, plain_string_results};

/// How the audit log words a statement that named ports its user may not read.
const NOT_GRANTED: &str = "not granted:";

pub struct MeshSession {
    ctx: SessionContext,
    identity: Identity,
    governance: Arc<Governance>,
    denials: Denials,
    limits: StatementLimits,
    admission: Arc<Admission>,
}

impl std::fmt::Debug for MeshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshSession")
            .field("user", &self.identity.user)
            .finish_non_exhaustive()
    }
}

impl MeshSession {
    pub(crate) fn new(
        governance: &Arc<Governance>,
        identity: &Identity,
        limits: StatementLimits,
        admission: Arc<Admission>,
    ) -> Self {
        let denials: Denials = Arc::new(Mutex::new(BTreeSet::new()));
        let state = governance.session_state(identity, Arc::clone(&denials));
        MeshSession {
            ctx: SessionContext::new_with_state(state),
            identity: identity.clone(),
            governance: Arc::clone(governance),
            denials,
            limits,
            admission,
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// `SET meshql.statement_timeout_s` of this session, if any.
    fn session_timeout(&self) -> Option<std::time::Duration> {
        // Read in place: `ctx.state()` would clone the whole session state per statement.
        let state = self.ctx.state_ref();
        let seconds = MeshqlOptions::of(state.read().config().options()).statement_timeout_s;
        (seconds > 0).then(|| std::time::Duration::from_secs(seconds))
    }

    /// The catalogs as this identity sees them (listings, completion).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Record a metadata call that lists names (`what`, e.g. the Flight SQL command) and
    /// how many rows it returned. `Err` means it must not be answered.
    pub async fn audit_listing(&self, what: &str, rows: u64) -> Result<()> {
        let mut record = AuditRecord::new(&self.identity.user, what);
        record.rows = Some(rows);
        self.governance
            .audit()
            .write(record)
            .await
            .map_err(Error::Audit)
    }

    /// Plan one read-only statement. A statement that fails to plan is audited here;
    /// one that plans is audited when [`Planned::execute`] finishes.
    pub async fn plan(&self, sql: &str) -> Result<Planned> {
        let started = Instant::now();
        let deadline = self.admission.deadline(self.session_timeout());
        let mut record = AuditRecord::new(&self.identity.user, sql);
        if let Ok(mut d) = self.denials.lock() {
            d.clear();
        }
        let planned = match deadline {
            None => self.plan_inner(sql).await,
            Some(deadline) => tokio::time::timeout_at(deadline.at, self.plan_inner(sql))
                .await
                .unwrap_or_else(|_| Err(deadline.timed_out("planning"))),
        };
        match planned {
            Ok(df) => {
                record.ports = ports_read(df.logical_plan());
                Ok(Planned {
                    reads_tables: reads_tables(df.logical_plan()),
                    df,
                    record,
                    started,
                    deadline,
                    admission: Arc::clone(&self.admission),
                    audit: Arc::clone(&self.governance),
                })
            }
            Err(e) => {
                let denied: Vec<String> = self
                    .denials
                    .lock()
                    .map(|d| d.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                if let Error::Denied(reason) = &e {
                    record.decision = Decision::Denied;
                    record.denial = Some(Denial::Statement);
                    record.reason = Some(reason.clone());
                } else if !denied.is_empty() {
                    record.decision = Decision::Denied;
                    record.denial = Some(Denial::NotGranted);
                    record.reason = Some(format!("{NOT_GRANTED} {}", denied.join(", ")));
                    record.ports = denied;
                }
                record.error = Some(e.to_string());
                record.duration_ms = started.elapsed().as_secs_f64() * 1e3;
                self.governance
                    .audit()
                    .write(record)
                    .await
                    .map_err(Error::Audit)?;
                Err(e)
            }
        }
    }

    async fn plan_inner(&self, sql: &str) -> Result<DataFrame> {
        if let Some(reason) = self.governance.audit().problem() {
            return Err(Error::Audit(reason.to_string()));
        }
        // Before anything parses it, `CALL` included (which is parsed without the depth
        // check: `CALL mesh.refresh('source')` is short).
        self.limits.check_size(sql)?;
        let is_call = sql
            .trim_start()
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case("call"));
        if is_call && sql.len() > 4096 {
            return Err(Error::TooComplex(
                "a CALL statement is at most 4096 bytes".to_string(),
            ));
        }
        if let Some(call) = refresh_call(sql) {
            return self.refresh(call.map_err(Error::Setup)?).await;
        }
        let sql = normalize_identity_calls(sql);
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(&sql, &dialect).map_err(|e| {
            let limit = state.config().options().sql_parser.recursion_limit;
            let too_deep = matches!(
                &e,
                DataFusionError::SQL(p, _) if matches!(p.as_ref(), ParserError::RecursionLimitExceeded)
            );
            if too_deep {
                Error::TooComplex(format!(
                    "the statement nests parentheses, subqueries or prefix operators more \
                     than {} deep",
                    usize::from(limit)
                ))
            } else {
                Error::from(e)
            }
        })?;
        self.limits.check_depth(&statement)?;
        let references = state.resolve_table_references(&statement)?;
        let plan = match state.statement_to_plan(statement).await {
            Ok(plan) => plan,
            Err(e) => {
                return Err(self
                    .missing_table(&state, references)
                    .await
                    .unwrap_or(e.into()));
            }
        };
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .verify_plan(&plan)?;
        settings::check(&plan, self.admission.options().statement_timeout)
            .map_err(Error::Denied)?;
        Ok(self.ctx.execute_logical_plan(plan).await?)
    }
}

impl MeshSession {
    /// The first of `references` that names no table this session can see (nor a table
    /// function), as [`Error::NotFound`]: why a statement failed to plan, by type rather
    /// than by DataFusion's wording. A port the user may not read is looked up like any
    /// other (and so recorded as a denial) and reads as not found.
    async fn missing_table(
        &self,
        state: &datafusion::execution::SessionState,
        references: Vec<datafusion::common::TableReference>,
    ) -> Option<Error> {
        for reference in references {
            if let datafusion::common::TableReference::Bare { table } = &reference
                && state.table_functions().contains_key(table.as_ref())
            {
                continue;
            }
            let defaults = &state.config().options().catalog;
            let resolved = reference.resolve(&defaults.default_catalog, &defaults.default_schema);
            let schema = self
                .ctx
                .catalog(&resolved.catalog)
                .and_then(|c| c.schema(&resolved.schema));
            let found = match schema {
                Some(schema) => schema.table(&resolved.table).await,
                None => Ok(None),
            };
            match found {
                Ok(Some(_)) => {}
                Ok(None) => return Some(Error::NotFound(format!("table '{resolved}' not found"))),
                // It exists and cannot be read (an unavailable port): that is why.
                Err(e) => return Some(e.into()),
            }
        }
        None
    }

    /// `CALL mesh.refresh(...)`: admins only once access rules exist.
    async fn refresh(&self, only: Option<String>) -> Result<DataFrame> {
        if let Some(policies) = self.governance.policies()
            && !policies.is_admin(&self.identity)
        {
            return Err(Error::Denied(
                "only admins may refresh the mesh's metadata".to_string(),
            ));
        }
        if let Some(name) = &only {
            self.governance
                .registry()
                .check_source(name)
                .map_err(Error::Setup)?;
        }
        let table = refresh_table(self.governance.shared_registry(), only)?;
        Ok(self.ctx.read_table(Arc::new(table))?)
    }
}

/// Ports a plan reads: its table scans, in subqueries too. (For a restricted user a
/// derived port is one opaque scan; admins see the inputs of inlined derived ports.)
fn ports_read(plan: &LogicalPlan) -> Vec<String> {
    let mut ports = BTreeSet::new();
    let mut add = |name: String| {
        if name.split('.').count() == 3 && !name.starts_with("mesh.") {
            ports.insert(name);
        }
    };
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            add(scan.table_name.to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ports.into_iter().collect()
}

/// Whether a plan scans any table, in subqueries too.
fn reads_tables(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found = matches!(node, LogicalPlan::TableScan(_));
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// A planned statement, to execute once.
pub struct Planned {
    df: DataFrame,
    /// Whether it scans anything (ports, mesh.meta, table functions such as range()):
    /// only statements that scan nothing skip the server's queue.
    reads_tables: bool,
    record: AuditRecord,
    started: Instant,
    deadline: Option<Deadline>,
    admission: Arc<Admission>,
    audit: Arc<Governance>,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("statement", &self.record.statement)
            .finish_non_exhaustive()
    }
}

impl Planned {
    pub fn ports(&self) -> &[String] {
        &self.record.ports
    }

    /// The planned statement (for its schema, parameters, EXPLAIN). Run it with
    /// [`Planned::execute`], which audits it.
    pub fn df(&self) -> &DataFrame {
        &self.df
    }

    /// Bind parameters, or anything else that keeps the statement the same. A failure
    /// is audited like a planning failure.
    pub async fn map_df(
        mut self,
        f: impl FnOnce(DataFrame) -> std::result::Result<DataFrame, DataFusionError>,
    ) -> Result<Self> {
        match f(self.df.clone()) {
            Ok(df) => {
                self.df = df;
                Ok(self)
            }
            Err(e) => {
                let e = Error::from(e);
                self.record.error = Some(e.to_string());
                self.write_record().await?;
                Err(e)
            }
        }
    }

    /// Record that the statement was planned and its result's schema handed out, but
    /// not run (a prepared statement): the schema names columns of what it reads.
    pub async fn audit_without_running(mut self, what: &str) -> Result<()> {
        self.record.reason = Some(what.to_string());
        self.write_record().await
    }

    /// Its one record, with the time since planning began, for a statement that ends
    /// without running.
    async fn write_record(mut self) -> Result<()> {
        self.record.duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.audit
            .audit()
            .write(self.record)
            .await
            .map_err(Error::Audit)
    }

    /// Run it. The stream records the statement in the audit log when it ends, and
    /// reports the end only once the record is on disk.
    pub async fn execute(self) -> Result<SendableRecordBatchStream> {
        self.run(false).await
    }

    /// [`Planned::execute`] for a client that reads strings as plain Utf8 / Binary
    /// (Flight): string columns a plain read of Parquet files passes through arrive
    /// as those rather than as views (see [`plain_string_results`]). Other columns,
    /// and results that compute, keep DataFusion's types.
    pub async fn execute_plain_strings(self) -> Result<SendableRecordBatchStream> {
        self.run(true).await
    }

    async fn run(self, plain_strings: bool) -> Result<SendableRecordBatchStream> {
        let Planned {
            df,
            reads_tables,
            mut record,
            started,
            deadline,
            admission,
            audit,
        } = self;
        let admitted = admission.admit(&record.user, reads_tables, deadline).await;
        let stream = async {
            let admitted = admitted?;
            let task = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await?;
            let plan = if plain_strings {
                plain_string_results(plan)?
            } else {
                plan
            };
            Ok::<_, Error>((execute_stream(plan, task)?, admitted))
        };
        let stream = async {
            match deadline {
                None => stream.await,
                Some(deadline) => tokio::time::timeout_at(deadline.at, stream)
                    .await
                    .unwrap_or_else(|_| Err(deadline.timed_out("planning"))),
            }
        };
        let (inner, admitted) = match stream.await {
            Ok((inner, admitted)) => (inner, Arc::new(Mutex::new(Some(admitted)))),
            Err(e) => {
                record.error = Some(e.to_string());
                record.duration_ms = started.elapsed().as_secs_f64() * 1e3;
                audit.audit().write(record).await.map_err(Error::Audit)?;
                return Err(e);
            }
        };
        // On disk before the first row leaves: if the process dies while this streams,
        // the log still says who read what.
        let mut start = record.clone();
        start.status = AuditStatus::Started;
        audit.audit().write(start).await.map_err(Error::Audit)?;
        Ok(Box::pin(AuditedStream {
            schema: inner.schema(),
            inner,
            record: Some(record),
            started,
            rows: 0,
            audit,
            writing: None,
            then: None,
            deadline: deadline.map(|d| (Box::pin(tokio::time::sleep_until(d.at)), d)),
            watchdog: deadline.map(|d| watchdog(d.at, Arc::downgrade(&admitted))),
            admission,
            _admitted: admitted,
        }))
    }
}

/// What a stream yields after its audit record is written.
enum Then {
    End,
    Fail(DataFusionError),
}

struct AuditedStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    /// Present until written.
    record: Option<AuditRecord>,
    started: Instant,
    rows: u64,
    audit: Arc<Governance>,
    writing: Option<BoxFuture<'static, std::result::Result<(), String>>>,
    then: Option<Then>,
    /// The statement timeout, while the statement streams.
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, Deadline)>,
    admission: Arc<Admission>,
    /// Gives the slots back at the deadline even if the client stopped reading (then
    /// nothing polls this stream, and its own deadline never fires).
    watchdog: Option<tokio::task::JoinHandle<()>>,
    /// The statement's slots, given back when the stream ends or is dropped.
    _admitted: Arc<Mutex<Option<Admitted>>>,
}

/// At `deadline`, drop the statement's slots if it still holds them.
fn watchdog(
    deadline: tokio::time::Instant,
    admitted: std::sync::Weak<Mutex<Option<Admitted>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        if let Some(admitted) = admitted.upgrade()
            && let Ok(mut slot) = admitted.lock()
            && slot.take().is_some()
        {
            tracing::warn!(
                "a statement passed its timeout with a client not reading: its slots are given back"
            );
        }
    })
}

impl AuditedStream {
    fn finish(&mut self, error: Option<&DataFusionError>, then: Then) {
        if let Some(mut record) = self.record.take() {
            record.rows = Some(self.rows);
            record.duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
            record.error = error.map(|e| Error::from(e.clone_for_audit()).to_string());
            let audit = Arc::clone(&self.audit);
            self.writing = Some(async move { audit.audit().write(record).await }.boxed());
        }
        self.then = Some(then);
    }
}

trait CloneForAudit {
    fn clone_for_audit(&self) -> DataFusionError;
}

impl CloneForAudit for DataFusionError {
    /// DataFusionError is not Clone; the audit only needs its message.
    fn clone_for_audit(&self) -> DataFusionError {
        DataFusionError::Execution(self.strip_backtrace())
    }
}

impl Stream for AuditedStream {
    type Item = std::result::Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(writing) = self.writing.as_mut() {
                let written = futures::ready!(writing.as_mut().poll(cx));
                self.writing = None;
                if let Err(e) = written {
                    self.then = Some(Then::End);
                    return Poll::Ready(Some(Err(DataFusionError::Execution(e))));
                }
            }
            match self.then.take() {
                Some(Then::End) => return Poll::Ready(None),
                Some(Then::Fail(e)) => {
                    self.then = Some(Then::End);
                    return Poll::Ready(Some(Err(e)));
                }
                None => {}
            }
            if self.record.is_some()
                && let Some((sleep, deadline)) = self.deadline.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                let deadline = *deadline;
                self.deadline = None;
                let e =
                    DataFusionError::External(Box::new(deadline.timed_out("sending its results")));
                // Stop the work now, not when the client lets go.
                self.inner = Box::pin(EmptyRecordBatchStream::new(Arc::clone(&self.schema)));
                self.finish(Some(&e), Then::Fail(e.clone_for_audit()));
                self.then = Some(Then::Fail(e));
                continue;
            }
            match futures::ready!(self.inner.as_mut().poll_next(cx)) {
                Some(Ok(batch)) => {
                    self.rows += batch.num_rows() as u64;
                    return Poll::Ready(Some(Ok(batch)));
                }
                Some(Err(e)) => {
                    let e = match &self.record {
                        Some(record) => name_ports(e, &record.ports),
                        None => e,
                    };
                    self.finish(Some(&e), Then::Fail(e.clone_for_audit()));
                    // Keep the original error for the caller.
                    self.then = Some(Then::Fail(e));
                }
                None => self.finish(None, Then::End),
            }
        }
    }
}

/// An error raised while rows stream (a file cut short, a source gone) says which ports
/// were being read: the ones the statement named (for a restricted user a derived port
/// is one opaque scan, so no input hidden from them is named). The engine's own errors
/// (timeout, memory) keep their kind.
fn name_ports(e: DataFusionError, ports: &[String]) -> DataFusionError {
    let engine_error =
        |e: &DataFusionError| matches!(e, DataFusionError::External(inner) if inner.is::<Error>());
    if ports.is_empty() || engine_error(&e) || matches!(e, DataFusionError::Context(..)) {
        return e;
    }
    let which = match ports {
        [one] => format!("while reading output port `{one}`"),
        many => format!(
            "while reading one of the output ports {}",
            many.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    e.context(which)
}

impl RecordBatchStream for AuditedStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl Drop for AuditedStream {
    /// A stream dropped before its end (client gone, Ctrl-C) is recorded as cancelled.
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        if let Some(mut record) = self.record.take() {
            record.rows = Some(self.rows);
            record.duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
            record.error = Some(if self.admission.shutting_down() {
                "cut: the server shut down before the statement finished".into()
            } else {
                "cancelled".into()
            });
            // Written here, not in a spawned task: a drop during shutdown has no runtime
            // left to run one, and the record must be on disk before the process ends.
            if let Err(e) = self.audit.audit().write_now(record) {
                tracing::error!(error = %e, "cannot audit a cancelled statement");
            }
        }
    }
}
