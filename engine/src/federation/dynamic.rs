//! Join keys learned at run time, sent to remote sources as SQL.
//!
//! A hash join reads its build side before its probe side, and DataFusion publishes
//! the build side's keys (a min/max range, and an IN list when there are few) as a
//! dynamic filter on the probe side. Lake scans use it to skip files and row groups.
//! For a remote probe side meshql waits for that filter, then adds it to the statement
//! as a WHERE clause, so only rows that can match cross the network.
//!
//! Every remote scan also counts what it received (`remote_rows`, `remote_bytes` in
//! `EXPLAIN ANALYZE`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Cast, InList};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr as PhysicalBinary, CaseExpr, CastExpr, Column as PhysicalColumn,
    DynamicFilterPhysicalExpr, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::execution_plan::ExecutionPlan;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterPushdownResult, ChildPushdownResult, FilterPushdownPhase,
};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::{SQLExecutor, VirtualExecutionPlan};
use futures::TryStreamExt;

/// How long a remote scan waits for the other side of its join. The build side
/// normally finishes long before; the bound only matters if a consumer drives the
/// join's partitions one after another, and then the scan starts without the filter.
const FILTER_WAIT: Duration = Duration::from_secs(10);

/// IN lists longer than this are left out of the SQL (the range is still sent).
const MAX_IN_LIST: usize = 10_000;

/// The name the remote statement is wrapped under when a runtime filter is added.
const RELATION: &str = "meshql_dyn";

/// Give every remote scan in `plan` a [`RemoteScanGate`]: the hash-join filters it may
/// wait for, and its transfer counters. Filters of other operators (TopK) are dropped:
/// they only settle after the scan has been read, so waiting for them would stall it.
pub(crate) fn gate_remote_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let mut join_filters = HashSet::new();
    plan.apply(|node| {
        if node.is::<HashJoinExec>() {
            join_filters.extend(
                node.dynamic_expressions_produced()
                    .iter()
                    .filter_map(|f| f.expression_id()),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    plan.transform_up(|node| {
        let Some(scan) = node.downcast_ref::<VirtualExecutionPlan>() else {
            return Ok(Transformed::no(node));
        };
        let mut filters = Vec::new();
        scan.apply_expressions(&mut |f| {
            if f.expression_id()
                .is_some_and(|id| join_filters.contains(&id))
            {
                filters.push(Arc::clone(f));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let gate = Arc::new(RemoteScanGate {
            inner: Arc::clone(scan.executor()),
            metrics: ExecutionPlanMetricsSet::new(),
        });
        let gated: Arc<dyn ExecutionPlan> = Arc::new(VirtualExecutionPlan::new(
            scan.plan().clone(),
            gate,
            scan.statistics().clone(),
        ));
        if filters.is_empty() {
            return Ok(Transformed::yes(gated));
        }
        let pushed = ChildPushdownResult {
            parent_filters: filters
                .into_iter()
                .map(|filter| ChildFilterPushdownResult {
                    filter,
                    child_results: vec![],
                })
                .collect(),
            self_filters: vec![],
        };
        let with_filters = gated
            .handle_child_pushdown_result(
                FilterPushdownPhase::Post,
                pushed,
                &ConfigOptions::default(),
            )?
            .updated_node
            .unwrap_or(gated);
        Ok(Transformed::yes(with_filters))
    })
    .map(|t| t.data)
}

/// Wraps a source's executor: waits for join filters, adds them to the statement,
/// and counts what comes back.
#[derive(Debug)]
struct RemoteScanGate {
    inner: Arc<dyn SQLExecutor>,
    metrics: ExecutionPlanMetricsSet,
}

#[async_trait]
impl SQLExecutor for RemoteScanGate {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn compute_context(&self) -> Option<String> {
        self.inner.compute_context()
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        self.inner.dialect()
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        let rows = MetricBuilder::new(&self.metrics).counter("remote_rows", 0);
        let bytes = MetricBuilder::new(&self.metrics).counter("remote_bytes", 0);
        let applied = MetricBuilder::new(&self.metrics).counter("runtime_filters", 0);
        let waited: Time = MetricBuilder::new(&self.metrics).subset_time("filter_wait", 0);
        let inner = Arc::clone(&self.inner);
        let dialect = self.inner.dialect();
        let query = query.to_string();
        let filters = filters.to_vec();
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let timer = waited.timer();
            settle(&filters).await;
            timer.done();
            let sql = match runtime_predicate(&filters, dialect.as_ref()) {
                Some(predicate) if !schema.fields().is_empty() => {
                    applied.add(1);
                    with_predicate(&query, &schema, &predicate, dialect.as_ref())
                }
                _ => query,
            };
            inner.execute(&sql, schema, &[])
        })
        .try_flatten()
        .inspect_ok(move |batch| count(&rows, &bytes, batch));
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }

    async fn statistics(&self, plan: &LogicalPlan) -> Result<Statistics> {
        self.inner.statistics(plan).await
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        self.inner.table_names().await
    }

    async fn get_table_schema(&self, table_name: &str) -> Result<SchemaRef> {
        self.inner.get_table_schema(table_name).await
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

fn count(rows: &Count, bytes: &Count, batch: &datafusion::arrow::array::RecordBatch) {
    rows.add(batch.num_rows());
    bytes.add(batch.get_array_memory_size());
}

/// Wait (bounded) until each join filter has its final keys.
async fn settle(filters: &[Arc<dyn PhysicalExpr>]) {
    for filter in filters {
        if let Some(dynamic) = filter.downcast_ref::<DynamicFilterPhysicalExpr>() {
            let _ = tokio::time::timeout(FILTER_WAIT, dynamic.wait_complete()).await;
        }
    }
}

/// `query` narrowed by `predicate`, its columns renamed by position (names a remote
/// statement returns need not be unique).
fn with_predicate(
    query: &str,
    schema: &SchemaRef,
    predicate: &str,
    dialect: &dyn Dialect,
) -> String {
    let quote = |name: &str| match dialect.identifier_quote_style(name) {
        Some(q) => format!("{q}{name}{q}"),
        None => name.to_string(),
    };
    let columns: Vec<String> = (0..schema.fields().len())
        .map(|i| quote(&format!("c{i}")))
        .collect();
    format!(
        "SELECT * FROM ({query}) AS {}({}) WHERE {predicate}",
        quote(RELATION),
        columns.join(", ")
    )
}

/// The SQL for what the filters currently say about the scan's rows, over
/// `meshql_dyn.c<i>`. It may be weaker than the filters (parts that cannot be written
/// as SQL are left out) but never stronger. None when nothing can be said.
pub fn runtime_predicate(
    filters: &[Arc<dyn PhysicalExpr>],
    dialect: &dyn Dialect,
) -> Option<String> {
    let parts: Vec<Expr> = filters
        .iter()
        .filter_map(|f| snapshot_physical_expr(Arc::clone(f)).ok())
        .filter_map(|f| implied(&f))
        .collect();
    let predicate = parts.into_iter().reduce(Expr::and)?;
    Unparser::new(dialect)
        .expr_to_sql(&predicate)
        .ok()
        .map(|sql| sql.to_string())
}

/// A logical expression implied by `e` (true whenever `e` is), or None for "true".
fn implied(e: &Arc<dyn PhysicalExpr>) -> Option<Expr> {
    if let Some(b) = e.downcast_ref::<PhysicalBinary>() {
        match b.op() {
            Operator::And => {
                return match (implied(b.left()), implied(b.right())) {
                    (Some(l), Some(r)) => Some(l.and(r)),
                    (one, other) => one.or(other),
                };
            }
            Operator::Or => return Some(implied(b.left())?.or(implied(b.right())?)),
            _ => {}
        }
    }
    // A partitioned join's filter routes each key to its partition's keys; any
    // partition's keys will do as a superset.
    if let Some(case) = e.downcast_ref::<CaseExpr>()
        && case.expr().is_some()
    {
        let mut branches = Vec::new();
        for then in case
            .when_then_expr()
            .iter()
            .map(|(_, then)| then)
            .chain(case.else_expr())
        {
            match literal_bool(then) {
                Some(false) => continue,
                Some(true) => return None,
                None => branches.push(implied(then)?),
            }
        }
        return Some(
            branches
                .into_iter()
                .reduce(Expr::or)
                .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(false)), None)),
        );
    }
    if literal_bool(e) == Some(true) {
        return None;
    }
    exact(e)
}

fn literal_bool(e: &Arc<dyn PhysicalExpr>) -> Option<bool> {
    match e.downcast_ref::<Literal>()?.value() {
        ScalarValue::Boolean(Some(b)) => Some(*b),
        _ => None,
    }
}

/// `e` as a logical expression with the same meaning, if every part can be written.
fn exact(e: &Arc<dyn PhysicalExpr>) -> Option<Expr> {
    if let Some(c) = e.downcast_ref::<PhysicalColumn>() {
        return Some(Expr::Column(Column::new(
            Some(RELATION),
            format!("c{}", c.index()),
        )));
    }
    if let Some(l) = e.downcast_ref::<Literal>() {
        return sendable(&l.value().data_type()).then(|| Expr::Literal(l.value().clone(), None));
    }
    if let Some(b) = e.downcast_ref::<PhysicalBinary>() {
        let op = *b.op();
        let ok = matches!(
            op,
            Operator::And
                | Operator::Or
                | Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
        );
        return ok.then(|| {
            Some(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(exact(b.left())?),
                op,
                Box::new(exact(b.right())?),
            )))
        })?;
    }
    if let Some(list) = e.downcast_ref::<InListExpr>() {
        if list.len() > MAX_IN_LIST {
            return None;
        }
        let values = list.list().iter().map(exact).collect::<Option<Vec<_>>>()?;
        return Some(Expr::InList(InList::new(
            Box::new(exact(list.expr())?),
            values,
            list.negated(),
        )));
    }
    if let Some(c) = e.downcast_ref::<CastExpr>() {
        return sendable(c.cast_type()).then(|| {
            Some(Expr::Cast(Cast::new(
                Box::new(exact(c.expr())?),
                c.cast_type().clone(),
            )))
        })?;
    }
    if let Some(n) = e.downcast_ref::<IsNullExpr>() {
        return Some(exact(n.arg())?.is_null());
    }
    if let Some(n) = e.downcast_ref::<IsNotNullExpr>() {
        return Some(exact(n.arg())?.is_not_null());
    }
    if let Some(n) = e.downcast_ref::<NotExpr>() {
        return Some(!exact(n.arg())?);
    }
    None
}

/// Types whose literals and casts read the same in every dialect meshql sends to.
fn sendable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
    )
}
