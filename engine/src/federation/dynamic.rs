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
//!
//! Upstream: datafusion-federation passes runtime filters to `SQLExecutor`
//! (datafusion-contrib/datafusion-federation#160); waiting for a join's keys before the
//! remote statement starts is meshql's, built on DataFusion's `is_complete()`
//! (apache/datafusion#18799). Revisit when federation waits for filters itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::functions_nested::expr_fn::{array_has, make_array};
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
use datafusion::sql::sqlparser::ast;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::{
    AstAnalyzer, LogicalOptimizer, SQLExecutor, VirtualExecutionPlan,
};
use futures::TryStreamExt;

/// How long a remote scan waits for the other side of its join. The build side
/// normally finishes long before; the bound only matters if a consumer drives the
/// join's partitions one after another, and then the scan starts without the filter.
const FILTER_WAIT: Duration = Duration::from_secs(10);

/// IN lists longer than this are left out of the SQL (the range is still sent): as
/// many keys as a join probed by a remote scan publishes.
const MAX_IN_LIST: usize = super::key_lists::REMOTE_MAX_KEYS;

/// Key lists longer than this go as `key = ANY(ARRAY[...])` to sources whose dialect
/// writes array membership that way (PostgreSQL). Same meaning as IN, but PostgreSQL
/// parses and plans it faster (figures:
/// docs/benchmarks/log.md#2026-11-22-long-key-lists-to-postgresql-as-typed-arrays-kept).
const ARRAY_LIST_FROM: usize = 64;

/// The name the remote statement is wrapped under when a runtime filter is added.
const RELATION: &str = "meshql_dyn";

/// Give every remote scan in `plan` a [`RemoteScanGate`]: the hash-join filters it may
/// wait for, and its transfer counters. Filters of other operators (TopK) are dropped:
/// they only settle after the scan has been read, so waiting for them would stall it.
/// The joins whose filters a remote scan waits for publish longer key lists
/// ([`super::key_lists`]).
pub(crate) fn gate_remote_scans(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    let join_filters = hash_join_filters(&plan)?;
    let mut remote_filters = HashSet::new();
    let gated = plan.transform_up(|node| {
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
        remote_filters.extend(filters.iter().filter_map(|f| f.expression_id()));
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
    })?;
    super::key_lists::widen_for_remote_probes(gated.data, &remote_filters, config)
}

/// The ids of the dynamic filters the hash joins in `plan` publish (TopK filters are
/// not among them).
fn hash_join_filters(plan: &Arc<dyn ExecutionPlan>) -> Result<HashSet<u64>> {
    let mut ids = HashSet::new();
    plan.apply(|node| {
        if node.is::<HashJoinExec>() {
            ids.extend(
                node.dynamic_expressions_produced()
                    .iter()
                    .filter_map(|f| f.expression_id()),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(ids)
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

    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        self.inner.logical_optimizer()
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        self.inner.ast_analyzer()
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
            let sql = match runtime_predicate(&filters, &schema, dialect.as_ref()) {
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
        let mut set = self.metrics.clone_inner();
        for metric in self.inner.metrics().iter().flat_map(|m| m.iter()) {
            set.push(Arc::clone(metric));
        }
        Some(set)
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

/// The SQL for what the filters currently say about the rows of a scan with `schema`,
/// over `meshql_dyn.c<i>`. It may be weaker than the filters (parts that cannot be
/// written with the same meaning at the source are left out) but never stronger.
/// None when nothing can be said.
pub fn runtime_predicate(
    filters: &[Arc<dyn PhysicalExpr>],
    schema: &Schema,
    dialect: &dyn Dialect,
) -> Option<String> {
    let mut convert = Converter {
        schema,
        budget: MAX_IN_LIST,
        arrays: writes_any(dialect),
    };
    let parts: Vec<Expr> = filters
        .iter()
        .filter_map(|f| snapshot_physical_expr(Arc::clone(f)).ok())
        .filter_map(|f| convert.implied(&f))
        .collect();
    let predicate = parts.into_iter().reduce(Expr::and)?;
    Unparser::new(dialect)
        .expr_to_sql(&predicate)
        .ok()
        .map(|sql| sql.to_string())
}

/// Physical to logical, for the parts whose meaning is the same at every source.
///
/// The statement's WHERE sees the source's values, which for most types are exactly
/// the values the join sees. Not for decimals and floats (meshql casts and cuts them
/// after the statement, and float literals do not round-trip as SQL text) nor
/// timestamps (time zones), so those columns are left out. Strings are compared only
/// for equality: a range would follow the source's collation, not byte order.
struct Converter<'a> {
    schema: &'a Schema,
    /// IN-list values left for the whole predicate.
    budget: usize,
    /// Long key lists go as array membership ([`ARRAY_LIST_FROM`]).
    arrays: bool,
}

impl Converter<'_> {
    /// A logical expression implied by `e` (true whenever `e` is), or None for "true".
    fn implied(&mut self, e: &Arc<dyn PhysicalExpr>) -> Option<Expr> {
        if let Some(b) = e.downcast_ref::<PhysicalBinary>() {
            match b.op() {
                Operator::And => {
                    return match (self.implied(b.left()), self.implied(b.right())) {
                        (Some(l), Some(r)) => Some(l.and(r)),
                        (one, other) => one.or(other),
                    };
                }
                Operator::Or => return Some(self.implied(b.left())?.or(self.implied(b.right())?)),
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
                    None => branches.push(self.implied(then)?),
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
        self.exact(e)
    }

    /// The type of a column, literal or cast, if it is one meshql may send.
    fn sendable_type(&self, e: &Arc<dyn PhysicalExpr>) -> Option<DataType> {
        let t = if let Some(c) = e.downcast_ref::<PhysicalColumn>() {
            self.schema.fields().get(c.index())?.data_type().clone()
        } else if let Some(l) = e.downcast_ref::<Literal>() {
            l.value().data_type()
        } else if let Some(c) = e.downcast_ref::<CastExpr>() {
            c.cast_type().clone()
        } else {
            return None;
        };
        sendable(&t).then_some(t)
    }

    /// `e` as a logical expression with the same meaning, if every part can be written.
    fn exact(&mut self, e: &Arc<dyn PhysicalExpr>) -> Option<Expr> {
        if let Some(c) = e.downcast_ref::<PhysicalColumn>() {
            self.sendable_type(e)?;
            return Some(Expr::Column(Column::new(
                Some(RELATION),
                format!("c{}", c.index()),
            )));
        }
        if let Some(l) = e.downcast_ref::<Literal>() {
            self.sendable_type(e)?;
            return Some(Expr::Literal(l.value().clone(), None));
        }
        if let Some(b) = e.downcast_ref::<PhysicalBinary>() {
            let op = *b.op();
            let ok = match op {
                Operator::And | Operator::Or | Operator::Eq | Operator::NotEq => true,
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                    [b.left(), b.right()]
                        .iter()
                        .all(|side| self.sendable_type(side).is_some_and(|t| !is_string(&t)))
                }
                _ => false,
            };
            if !ok {
                return None;
            }
            let left = self.exact(b.left())?;
            let right = self.exact(b.right())?;
            return Some(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(left),
                op,
                Box::new(right),
            )));
        }
        if let Some(list) = e.downcast_ref::<InListExpr>() {
            if list.len() > self.budget {
                return None;
            }
            let target = self.exact(list.expr())?;
            let values = list
                .list()
                .iter()
                .map(|v| self.exact(v))
                .collect::<Option<Vec<_>>>()?;
            self.budget -= values.len();
            if self.arrays && !list.negated() && values.len() > ARRAY_LIST_FROM {
                // PostgreSQL hashes `= ANY(array)` only when the array's elements have
                // the column's type; otherwise it compares each row with every key. Bare
                // integers make an int4[], so a bigint column gets that slow comparison
                // (figures: the log entry at [`ARRAY_LIST_FROM`]). One typed element
                // types the whole array.
                let mut values = values;
                let typed = self.sendable_type(list.expr())?;
                values[0] = Expr::Cast(Cast::new(Box::new(values[0].clone()), typed));
                return Some(array_has(make_array(values), target));
            }
            return Some(Expr::InList(InList::new(
                Box::new(target),
                values,
                list.negated(),
            )));
        }
        if let Some(c) = e.downcast_ref::<CastExpr>() {
            // Only widening integer casts read the same everywhere (float to int rounds
            // in PostgreSQL and truncates in Arrow; formats of text casts differ).
            let from = self.sendable_type(c.expr())?;
            let to = c.cast_type();
            let widening = match (integer_width(&from), integer_width(to)) {
                (Some(f), Some(t)) => f <= t,
                _ => false,
            };
            if !widening {
                return None;
            }
            return Some(Expr::Cast(Cast::new(
                Box::new(self.exact(c.expr())?),
                to.clone(),
            )));
        }
        if let Some(n) = e.downcast_ref::<IsNullExpr>() {
            return Some(self.exact(n.arg())?.is_null());
        }
        if let Some(n) = e.downcast_ref::<IsNotNullExpr>() {
            return Some(self.exact(n.arg())?.is_not_null());
        }
        if let Some(n) = e.downcast_ref::<NotExpr>() {
            return Some(!self.exact(n.arg())?);
        }
        None
    }
}

/// Whether `dialect` writes `array_has(array, x)` as `x = ANY(array)`, which means
/// the same as `x IN (...)` for a list of values.
fn writes_any(dialect: &dyn Dialect) -> bool {
    let one = || Expr::Literal(ScalarValue::Int64(Some(1)), None);
    let probe = [make_array(vec![one()]), one()];
    matches!(
        dialect.scalar_function_to_sql_overrides(&Unparser::new(dialect), "array_has", &probe),
        Ok(Some(ast::Expr::AnyOp { .. }))
    )
}

fn literal_bool(e: &Arc<dyn PhysicalExpr>) -> Option<bool> {
    match e.downcast_ref::<Literal>()?.value() {
        ScalarValue::Boolean(Some(b)) => Some(*b),
        _ => None,
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Signed width in bits, counting unsigned types one bit wider.
fn integer_width(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::Int8 => 8,
        DataType::Int16 | DataType::UInt8 => 16,
        DataType::Int32 | DataType::UInt16 => 32,
        DataType::Int64 | DataType::UInt32 => 64,
        _ => return None,
    })
}

/// Types whose values are the same at the source and in the join, and whose literals
/// read the same in every dialect meshql sends to.
fn sendable(t: &DataType) -> bool {
    integer_width(t).is_some() || is_string(t) || matches!(t, DataType::Boolean | DataType::Date32)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{col, in_list, lit};
    use datafusion::sql::unparser::dialect::PostgreSqlDialect;

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("key", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(15, 2), true),
            Field::new("small", DataType::Int32, true),
        ])
    }

    fn sql(e: Arc<dyn PhysicalExpr>) -> Option<String> {
        runtime_predicate(&[e], &schema(), &PostgreSqlDialect {})
    }

    fn binary(
        l: Arc<dyn PhysicalExpr>,
        op: Operator,
        r: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(PhysicalBinary::new(l, op, r))
    }

    #[test]
    fn keys_and_ranges_of_plain_columns_are_sent() {
        let s = schema();
        let key = col("key", &s).expect("col");
        let range = binary(
            binary(Arc::clone(&key), Operator::GtEq, lit(7i64)),
            Operator::And,
            binary(Arc::clone(&key), Operator::LtEq, lit(10i64)),
        );
        let keys = in_list(Arc::clone(&key), vec![lit(7i64), lit(10i64)], &false, &s).expect("in");
        let both = binary(range, Operator::And, keys);
        assert_eq!(
            sql(both).as_deref(),
            Some(
                r#"((("meshql_dyn"."c0" >= 7) AND ("meshql_dyn"."c0" <= 10)) AND "meshql_dyn"."c0" IN (7, 10))"#
            )
        );
    }

    #[test]
    fn long_key_lists_go_as_arrays_where_the_dialect_writes_any() {
        let s = schema();
        let key = col("key", &s).expect("col");
        let list = |n: i64| {
            let keys = (1..=n).map(lit).collect();
            in_list(Arc::clone(&key), keys, &false, &s).expect("in")
        };
        let long = sql(list(ARRAY_LIST_FROM as i64 + 1)).expect("sent");
        assert!(
            long.starts_with(r#""meshql_dyn"."c0" = ANY(ARRAY[CAST(1 AS BIGINT), 2, 3,"#),
            "{long}"
        );
        let short = sql(list(ARRAY_LIST_FROM as i64)).expect("sent");
        assert!(
            short.starts_with(r#""meshql_dyn"."c0" IN (1, 2, 3,"#),
            "{short}"
        );
        // A dialect without `= ANY` (a meshql node's) keeps the IN list.
        let dialect = datafusion::sql::unparser::dialect::DefaultDialect {};
        let other = runtime_predicate(&[list(1000)], &s, &dialect).expect("sent");
        assert!(other.contains(" IN (1, 2, 3,"), "{other}");
        // NOT IN stays NOT IN.
        let keys = (1..=1000i64).map(lit).collect();
        let not_in = in_list(Arc::clone(&key), keys, &true, &s).expect("in");
        assert!(sql(not_in).expect("sent").contains("NOT IN (1, 2"));
    }

    #[test]
    fn parts_with_another_meaning_at_the_source_are_left_out() {
        let s = schema();
        let name = col("name", &s).expect("col");
        // A string range would follow PostgreSQL's collation: only the IN list goes.
        let range = binary(
            binary(Arc::clone(&name), Operator::GtEq, lit("B")),
            Operator::And,
            binary(Arc::clone(&name), Operator::LtEq, lit("a")),
        );
        let keys = in_list(Arc::clone(&name), vec![lit("a"), lit("B")], &false, &s).expect("in");
        assert_eq!(
            sql(binary(range, Operator::And, keys)).as_deref(),
            Some(r#""meshql_dyn"."c1" IN ('a', 'B')"#)
        );
        // Decimals are cut after the statement: nothing about them is sent.
        let amount = col("amount", &s).expect("col");
        let dec = lit(ScalarValue::Decimal128(Some(100), 15, 2));
        assert_eq!(sql(binary(amount, Operator::GtEq, dec)), None);
        // A narrowing cast is not sent; a widening one is.
        let small = col("small", &s).expect("col");
        let narrowed: Arc<dyn PhysicalExpr> = Arc::new(CastExpr::new(
            col("key", &s).expect("col"),
            DataType::Int32,
            None,
        ));
        assert_eq!(sql(binary(narrowed, Operator::Eq, lit(3i32))), None);
        let widened: Arc<dyn PhysicalExpr> = Arc::new(CastExpr::new(small, DataType::Int64, None));
        assert!(sql(binary(widened, Operator::Eq, lit(3i64))).is_some());
    }

    #[test]
    fn or_needs_both_sides_and_not_needs_all_of_its_argument() {
        let s = schema();
        let key = col("key", &s).expect("col");
        let amount = col("amount", &s).expect("col");
        let dec = lit(ScalarValue::Decimal128(Some(100), 15, 2));
        let unsendable = binary(amount, Operator::Eq, dec);
        let sendable = binary(Arc::clone(&key), Operator::Eq, lit(1i64));
        assert_eq!(
            sql(binary(
                Arc::clone(&sendable),
                Operator::Or,
                Arc::clone(&unsendable)
            )),
            None
        );
        let not: Arc<dyn PhysicalExpr> =
            Arc::new(NotExpr::new(binary(sendable, Operator::And, unsendable)));
        assert_eq!(sql(not), None);
        // A routed (partitioned) filter becomes the OR of its partitions' keys.
        let case: Arc<dyn PhysicalExpr> = Arc::new(
            CaseExpr::try_new(
                Some(Arc::clone(&key)),
                vec![
                    (lit(0i64), binary(Arc::clone(&key), Operator::Eq, lit(4i64))),
                    (lit(1i64), lit(false)),
                ],
                Some(binary(Arc::clone(&key), Operator::Eq, lit(9i64))),
            )
            .expect("case"),
        );
        assert_eq!(
            sql(case).as_deref(),
            Some(r#"(("meshql_dyn"."c0" = 4) OR ("meshql_dyn"."c0" = 9))"#)
        );
    }
}
