//! A port whose data lives in a SQL-speaking source (PostgreSQL, another Flight SQL
//! node). Its scan is a SQL statement; the planner may widen that statement to a whole
//! subplan (see `planner.rs`).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_federation::sql::{
    RemoteTableRef, SQLExecutor, SQLFederationPlanner, SQLFederationProvider, SQLTableSource,
};
use datafusion_federation::{FederatedPlanNode, FederatedTableProviderAdaptor, FederationPlanner};

use super::capability::SqlDialect;

/// A source that runs SQL: what the planner needs to push work to it.
pub trait RemoteSource: Debug + Send + Sync {
    /// The source's name in the mesh file (shown in EXPLAIN and errors).
    fn name(&self) -> &str;

    /// Subplans over tables with equal contexts can be sent as one statement
    /// (same server, database and credentials).
    fn context(&self) -> String;

    fn dialect(&self) -> SqlDialect;

    /// The executor that runs statements for the session's user (a source may pass the
    /// end user's identity on, so this can differ per session).
    fn executor(&self, session: &dyn Session) -> Result<Arc<dyn SQLExecutor>>;
}

/// A scan's filters with their columns qualified by the table's remote name. The SQL
/// generator renames the scan itself but not the filters inside it.
pub(crate) fn requalify(filters: Vec<Expr>, to: &TableReference) -> Result<Vec<Expr>> {
    filters
        .into_iter()
        .map(|f| {
            f.transform(|e| match e {
                Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new(
                    Some(to.clone()),
                    c.name,
                )))),
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.data)
        })
        .collect()
}

/// A table of a [`RemoteSource`].
#[derive(Debug)]
pub struct RemoteTable {
    source: Arc<dyn RemoteSource>,
    /// The table's name at the source (`public.customer`, `shipping.shipments.events`).
    remote_name: TableReference,
    schema: SchemaRef,
    /// What the SQL generator reads the remote name from.
    table_source: Arc<SQLTableSource>,
}

impl RemoteTable {
    /// `executor` is any executor of the source: it is used for naming only.
    pub fn new(
        source: Arc<dyn RemoteSource>,
        executor: Arc<dyn SQLExecutor>,
        remote_name: TableReference,
        schema: SchemaRef,
    ) -> Self {
        let provider = Arc::new(SQLFederationProvider::new(executor));
        let table_source = Arc::new(SQLTableSource::new_with_schema(
            provider,
            RemoteTableRef::from(remote_name.clone()),
            Arc::clone(&schema),
        ));
        RemoteTable {
            source,
            remote_name,
            schema,
            table_source,
        }
    }

    pub fn source(&self) -> &Arc<dyn RemoteSource> {
        &self.source
    }

    pub fn remote_name(&self) -> &TableReference {
        &self.remote_name
    }

    /// A table source the SQL generator recognises (it rewrites scans of it to the
    /// remote name). Only federated subplans hold it.
    pub(crate) fn federated_source(&self) -> Arc<dyn datafusion::logical_expr::TableSource> {
        provider_as_source(Arc::new(FederatedTableProviderAdaptor::new(Arc::clone(
            &self.table_source,
        ) as _)))
    }

    /// Plan `plan` (whose scans are all of this table's source) as one remote statement.
    pub(crate) async fn plan_remote(
        source: &Arc<dyn RemoteSource>,
        plan: LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner = Arc::new(SQLFederationPlanner::new(source.executor(session)?));
        let node = FederatedPlanNode::new(plan, Arc::clone(&planner) as _);
        planner.plan_federation(&node, session).await
    }
}

#[async_trait]
impl TableProvider for RemoteTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters the source can evaluate with DataFusion's meaning are sent with the scan
    /// and not re-checked here.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let dialect = self.source.dialect();
        Ok(filters
            .iter()
            .map(|f| {
                if dialect.can_run(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    /// One table's statement: its columns, filters and limit. Used when the planner did
    /// not widen the statement (pushdown off, or a scan inside a subquery).
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = LogicalPlanBuilder::scan_with_filters_fetch(
            self.remote_name.clone(),
            self.federated_source(),
            projection.cloned(),
            requalify(filters.to_vec(), &self.remote_name)?,
            limit,
        )?
        .build()?;
        Self::plan_remote(&self.source, plan, state).await
    }
}

/// A remote batch as the plan expects it: columns by position, cast where types differ.
pub fn conform(batch: &RecordBatch, expected: &SchemaRef) -> Result<RecordBatch, String> {
    if batch.num_columns() != expected.fields().len() {
        return Err(format!(
            "the server returned {} columns where {} were expected",
            batch.num_columns(),
            expected.fields().len()
        ));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(expected.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type()).map_err(|e| {
                    format!(
                        "column `{}`: cannot read {} as {}: {e}",
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    )
                })
            }
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(expected), columns, &options)
        .map_err(|e| e.to_string())
}
