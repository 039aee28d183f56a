//! A port read under row filters and masks.
//!
//! The policy is a plan of its own (`SELECT masks FROM port WHERE filters`, planned with
//! the platform's rights), and the table the user's statement sees is a leaf around it:
//! the user's optimizer cannot move the user's predicates, limits or TopK below the
//! policy, and EXPLAIN and statistics show nothing of it. Only *leakproof* predicates
//! (that cannot fail on any row, on unmasked columns; see [`super::leakproof`]) are let
//! in, so sources can still prune.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DataFusionError, Statistics};
use datafusion::error::Result as DFResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType, cast, col,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::Governance;
use super::identity::Identity;
use super::leakproof::leakproof;
use super::view::PortPolicy;
use meshql_config::PortName;

#[derive(Debug)]
pub struct GovernedTable {
    port: PortName,
    schema: SchemaRef,
    /// Masks and filters over the raw port; output columns in the port's order.
    plan: LogicalPlan,
    masked: BTreeSet<String>,
    /// Columns a predicate may name to go below the policy: all of a source port's; of
    /// a derived port only those its definition passes through unchanged (a computed
    /// column, `amount / qty`, would be inlined below the port's own WHERE and fail on
    /// rows it hides).
    pushable: Option<BTreeSet<String>>,
    table_type: TableType,
}

impl GovernedTable {
    /// Plan `policy` for `identity` over `raw`. A policy that cannot be planned fails
    /// the statement without saying why (the reason may reveal the policy); the server
    /// log and `meshql check` have the details.
    pub async fn plan(
        governance: &Governance,
        port: &PortName,
        raw: Arc<dyn TableProvider>,
        policy: &PortPolicy,
        identity: &Identity,
    ) -> DFResult<Self> {
        let filters: Vec<String> = policy.filters.iter().map(|f| f.sql_for(identity)).collect();
        let masks: Vec<(String, String)> = policy
            .masks
            .iter()
            .map(|(c, m)| (c.clone(), m.sql_for(identity)))
            .collect();
        match policy_plan(governance, port, &raw, &filters, &masks).await {
            Ok(plan) => Ok(GovernedTable {
                port: port.clone(),
                schema: nullable(plan.schema().inner()),
                plan,
                masked: policy.masks.keys().cloned().collect(),
                pushable: raw.get_logical_plan().map(|view| pass_through(&view)),
                table_type: raw.table_type(),
            }),
            Err(reason) => {
                // Never the reason: it may quote the policy.
                tracing::warn!(port = %port, user = %identity.user, %reason, "access policy cannot be applied");
                Err(DataFusionError::Plan(format!(
                    "the access policy of `{port}` cannot be applied; an administrator can see why with `meshql check`"
                )))
            }
        }
    }
}

/// `SELECT <column or mask>... FROM port WHERE <filters>`, planned with the platform's
/// rights, masked columns cast back to the column's type. `Err` is a message for
/// administrators.
pub async fn policy_plan(
    governance: &Governance,
    port: &PortName,
    raw: &Arc<dyn TableProvider>,
    filters: &[String],
    masks: &[(String, String)],
) -> Result<LogicalPlan, String> {
    let schema = raw.schema();
    let mut items = Vec::new();
    for field in schema.fields() {
        let name = quote(field.name());
        match masks.iter().find(|(c, _)| c == field.name()) {
            Some((_, mask)) => items.push(format!("({mask}) AS {name}")),
            None => items.push(name),
        }
    }
    if let Some((column, _)) = masks
        .iter()
        .find(|(c, _)| schema.field_with_name(c).is_err())
    {
        return Err(format!(
            "masks column `{column}`, which `{port}` does not have"
        ));
    }
    let mut sql = format!("SELECT {} FROM {}", items.join(", "), quoted_port(port));
    if !filters.is_empty() {
        let conditions: Vec<String> = filters.iter().map(|f| format!("({f})")).collect();
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    let plan = governance
        .planner()
        .create_logical_plan(&sql)
        .await
        .map_err(|e| {
            let message = e.strip_backtrace();
            // What DataFusion says about an aggregate beside plain columns.
            if message.contains("GROUP BY") || message.to_lowercase().contains("aggregate") {
                AGGREGATES.replace("{what}", "aggregate functions")
            } else {
                message
            }
        })?;
    reject_aggregates(&plan)?;
    // Masks keep the column's type, so every user sees the same schema.
    let mut exprs = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let (qualifier, out) = plan.schema().qualified_field(i);
        let column = Expr::Column(Column::from((qualifier, out)));
        if out.data_type() == field.data_type() {
            exprs.push(column);
        } else if compatible(out.data_type(), field.data_type()) {
            exprs.push(cast(column, field.data_type().clone()).alias(field.name()));
        } else {
            return Err(format!(
                "the mask of `{port}.{}` returns {} but the column is {}",
                field.name(),
                out.data_type(),
                field.data_type()
            ));
        }
    }
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(|e| e.strip_backtrace())
}

const AGGREGATES: &str =
    "{what} are not allowed in row filters and masks (use them inside a subquery)";

/// Aggregates and window functions outside subqueries change what a row is. Only the
/// nodes the policy's SELECT made are looked at: a derived port's own plan (inlined
/// below them) may aggregate.
fn reject_aggregates(plan: &LogicalPlan) -> Result<(), String> {
    let mut node = plan;
    loop {
        node = match node {
            LogicalPlan::Aggregate(_) => {
                return Err(AGGREGATES.replace("{what}", "aggregate functions"));
            }
            LogicalPlan::Window(_) => return Err(AGGREGATES.replace("{what}", "window functions")),
            LogicalPlan::Projection(p) => &p.input,
            LogicalPlan::Filter(f) => &f.input,
            _ => return Ok(()),
        };
    }
}

/// A mask may return a value of a neighbouring type (an integer literal for an Int32
/// column, a string for a view string, NULL for anything); it is cast back.
fn compatible(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let stringy = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    from == &Null
        || (from.is_numeric() && to.is_numeric())
        || (stringy(from) && stringy(to))
        || (from.is_temporal() && to.is_temporal())
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

pub fn quoted_port(port: &PortName) -> String {
    format!(
        "{}.{}.{}",
        quote(&port.domain),
        quote(&port.product),
        quote(&port.port)
    )
}

#[async_trait]
impl TableProvider for GovernedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.table_type
    }

    /// Leakproof predicates on unmasked columns go below the policy (Inexact: they are
    /// checked again above); anything that could fail or sees a masked column stays
    /// above it, where it only meets rows and values the user may see.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                let safe = leakproof(f, &self.schema)
                    && f.column_refs().iter().all(|c| {
                        !self.masked.contains(c.name())
                            && self.pushable.as_ref().is_none_or(|p| p.contains(c.name()))
                    });
                if safe {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    /// Nothing about the rows behind a policy: no row counts, no min/max.
    fn statistics(&self) -> Option<Statistics> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let mut builder = LogicalPlanBuilder::from(self.plan.clone());
        if let Some(predicate) = conjunction(filters.iter().map(unqualify)) {
            builder = builder.filter(predicate)?;
        }
        if let Some(indices) = projection {
            let columns: Vec<Expr> = indices
                .iter()
                .map(|&i| col(Column::new_unqualified(self.schema.field(i).name())))
                .collect();
            builder = builder.project(columns)?;
        }
        if limit.is_some() {
            builder = builder.limit(0, limit)?;
        }
        let inner = state.create_physical_plan(&builder.build()?).await?;
        let partitions = state.config().target_partitions();
        Ok(Arc::new(GovernedScanExec::new(
            self.port.clone(),
            inner,
            partitions,
        )))
    }
}

/// The output columns of a view's plan that are its input's columns unchanged: the
/// top projection's plain (possibly renamed) column references. None for any other
/// top node: then nothing is pushed.
fn pass_through(view: &LogicalPlan) -> BTreeSet<String> {
    let mut node = view;
    // Aliases of the whole plan change no column.
    while let LogicalPlan::SubqueryAlias(a) = node {
        node = &a.input;
    }
    let LogicalPlan::Projection(projection) = node else {
        return BTreeSet::new();
    };
    projection
        .expr
        .iter()
        .zip(view.schema().fields())
        .filter(|(e, _)| matches!((*e).clone().unalias(), Expr::Column(_)))
        .map(|(_, field)| field.name().clone())
        .collect()
}

/// Filters handed to a scan are qualified with the user's table reference.
fn unqualify(e: &Expr) -> Expr {
    e.clone()
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => datafusion::common::tree_node::Transformed::yes(Expr::Column(
                    Column::new_unqualified(c.name),
                )),
                other => datafusion::common::tree_node::Transformed::no(other),
            })
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| e.clone())
}

/// Every column nullable: whether a column may be null must not tell a user that a
/// mask applies to it (a `NULL` mask makes a non-null column nullable), so every column
/// of a governed port is nullable for every governed reader.
fn nullable(schema: &Schema) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The policy subplan as a leaf: it hides its plan from EXPLAIN, reports no statistics,
/// accepts no limit, and takes no filter pushed from above. Its partition count is the
/// session's, not the policy plan's (which would tell how many files or ranges survive
/// the policy's pruning).
pub struct GovernedScanExec {
    port: PortName,
    inner: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl GovernedScanExec {
    fn new(port: PortName, inner: Arc<dyn ExecutionPlan>, partitions: usize) -> Self {
        let schema = nullable(&inner.schema());
        // Fresh equivalence properties: constants and orderings the policy implies
        // (`region = 3`) must not show in the user's plan.
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        GovernedScanExec {
            port,
            inner,
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for GovernedScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GovernedScanExec({})", self.port)
    }
}

impl DisplayAs for GovernedScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "GovernedScanExec: port={}", self.port)
            }
            DisplayFormatType::TreeRender => write!(f, "port={}", self.port),
        }
    }
}

impl ExecutionPlan for GovernedScanExec {
    fn name(&self) -> &'static str {
        "GovernedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> DFResult<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &datafusion::config::ConfigOptions,
    ) -> DFResult<FilterDescription> {
        Ok(FilterDescription::all_unsupported(&parent_filters, &[]))
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &datafusion::config::ConfigOptions,
    ) -> DFResult<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::all_unsupported(
            child_pushdown_result,
        ))
    }

    /// Errors from inside the policy may quote hidden values (a failed cast of a
    /// filtered row): the user gets a generic error, the log gets the real one.
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let port = self.port.clone();
        let hide = move |e: DataFusionError| {
            tracing::warn!(port = %port, error = %e, "reading a governed port failed");
            DataFusionError::Execution(format!(
                "reading `{port}` failed; an administrator can find the cause in the server log"
            ))
        };
        // Partition `i` of this leaf reads the policy plan's partitions i, i + n, ...
        let own = self.properties.partitioning.partition_count();
        let inner_count = self.inner.output_partitioning().partition_count();
        let mut streams = Vec::new();
        for p in (partition..inner_count).step_by(own.max(1)) {
            streams.push(
                self.inner
                    .execute(p, Arc::clone(&context))
                    .map_err(hide.clone())?,
            );
        }
        let schema = Arc::clone(&self.schema);
        let batches = futures::stream::iter(streams)
            .flatten()
            .map_err(hide)
            .and_then(move |batch| {
                let schema = Arc::clone(&schema);
                async move { Ok(batch.with_schema(schema)?) }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }
}
