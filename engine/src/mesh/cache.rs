//! `cache:` on a source port: its rows are read when the port opens (and again on
//! `CALL mesh.refresh()`) and queries read them from memory, with no decoding or round
//! trip to the source. This is for ports read often and whole: ROAPI holds every table
//! this way, Spice calls it acceleration. Rows that do not fit in `max_mb` (or in the
//! memory pool) are not held: the port reads its source as if it had no cache, and says
//! why.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use futures::{StreamExt, TryStreamExt};

use crate::optimizer::plain_strings::plain_type;
use meshql_config::model::CacheConfig;

/// Why the rows were not held.
#[derive(Debug)]
pub enum NotHeld {
    /// More than `max_mb`, or more than the memory pool (`--memory-limit`) has left: the
    /// port reads its source instead.
    NoRoom(String),
    /// The source failed, or stopped sending, while its rows were read.
    Read(DataFusionError),
}

/// The rows held, for `mesh.meta.output_ports`.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub rows: usize,
    pub bytes: usize,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = self.bytes as f64 / (1024.0 * 1024.0);
        write!(f, "in memory: {} rows, {mb:.1} MB", self.rows)
    }
}

/// Read every row of `table` into memory, keeping its partitions so scans of the copy
/// run as parallel as scans of the source. Strings are held as plain Utf8 / Binary, the
/// form Flight clients receive: held as views (how DataFusion reads Parquet), every
/// stream of the port would copy them into plain arrays, a large part of the server's
/// CPU (see [`CachedTable`]; figures:
/// docs/benchmarks/log.md#2026-12-05-ports-held-in-memory-kept). The rows are reserved
/// from the session's memory pool for as long as they are held, so `--memory-limit`
/// counts them. A source that sends nothing for `idle` fails the read: a stalled source
/// must not hold up start or a refresh.
pub async fn hold(
    table: &Arc<dyn TableProvider>,
    cache: &CacheConfig,
    state: &SessionState,
    idle: Duration,
) -> Result<(Arc<dyn TableProvider>, Held), NotHeld> {
    let max_bytes = usize::try_from(cache.max_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let plan = table
        .scan(state, None, &[], None)
        .await
        .map_err(NotHeld::Read)?;
    let partitions = plan.properties().partitioning.partition_count();
    let schema = plain_schema(&table.schema());
    let reservation =
        MemoryConsumer::new("output port cache").register(&state.runtime_env().memory_pool);
    let read = (0..partitions).map(|i| {
        let (plan, reservation, schema, ctx) = (&plan, &reservation, &schema, state.task_ctx());
        async move {
            let mut stream = plan.execute(i, ctx).map_err(NotHeld::Read)?;
            let mut batches = Vec::new();
            loop {
                let next = tokio::time::timeout(idle, stream.next())
                    .await
                    .map_err(|_| {
                        NotHeld::Read(DataFusionError::Execution(format!(
                            "the source sent nothing for {}s while its rows were read",
                            idle.as_secs()
                        )))
                    })?;
                let Some(batch) = next else { break };
                let batch =
                    plain_strings(&batch.map_err(NotHeld::Read)?, schema).map_err(NotHeld::Read)?;
                let size = batch.get_array_memory_size();
                // Stop as soon as the partitions together pass the limit.
                if reservation.size() + size > max_bytes {
                    return Err(NotHeld::NoRoom(format!(
                        "the rows take more than {} MB (`cache.max_mb`)",
                        cache.max_mb
                    )));
                }
                reservation.try_grow(size).map_err(|e| {
                    NotHeld::NoRoom(format!(
                        "the memory pool (`--memory-limit`) has no room: {e}"
                    ))
                })?;
                batches.push(batch);
            }
            Ok::<_, NotHeld>(batches)
        }
    });
    let mut batches: Vec<_> = futures::stream::iter(read)
        .buffered(partitions.max(1))
        .try_collect()
        .await?;
    if batches.is_empty() {
        batches.push(Vec::new());
    }
    let held = Held {
        rows: batches.iter().flatten().map(|b| b.num_rows()).sum(),
        bytes: reservation.size(),
    };
    let memory = MemTable::try_new(schema, batches)
        .map_err(NotHeld::Read)?
        .with_constraints(table.constraints().cloned().unwrap_or_default());
    let cached = CachedTable {
        schema: table.schema(),
        memory,
        _reservation: reservation,
    };
    Ok((Arc::new(cached), held))
}

/// The held rows under the port's own schema: scans hand out views where the port has
/// them (a cheap cast that copies no string bytes), so queries plan exactly as on the
/// source; results that only pass them through get the plain arrays as they are held
/// (`optimizer::plain_strings`).
#[derive(Debug)]
pub struct CachedTable {
    schema: SchemaRef,
    memory: MemTable,
    /// Given back to the pool when the table is dropped (a refresh replaced it).
    _reservation: MemoryReservation,
}

#[async_trait]
impl TableProvider for CachedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.memory.constraints()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let plan = self.memory.scan(state, projection, filters, limit).await?;
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let held = plan.schema();
        if held.fields().len() != wanted.len() {
            return Err(DataFusionError::Internal(format!(
                "cached scan returned {} columns for a projection of {}",
                held.fields().len(),
                wanted.len()
            )));
        }
        if wanted
            .iter()
            .zip(held.fields())
            .all(|(i, f)| self.schema.field(*i).data_type() == f.data_type())
        {
            return Ok(plan);
        }
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = wanted
            .iter()
            .zip(held.fields())
            .enumerate()
            .map(|(at, (i, f))| {
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(f.name(), at));
                let port = self.schema.field(*i).data_type();
                let expr = match port == f.data_type() {
                    true => column,
                    false => Arc::new(CastExpr::new(column, port.clone(), None)),
                };
                (expr, f.name().clone())
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        self.memory.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.memory.statistics()
    }
}

/// `schema` with view columns as plain strings and bytes.
fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match plain_type(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` in `schema` (see [`plain_schema`]).
fn plain_strings(batch: &RecordBatch, schema: &SchemaRef) -> DFResult<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(Arc::clone(c)),
            false => cast(c, f.data_type()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
