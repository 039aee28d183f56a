//! Join keys applied to the rows of a lake scan before they are aggregated.
//!
//! DataFusion pushes a hash join's dynamic filter through an aggregate on the join keys
//! down to the scan (TPC-H Q17: `avg(l_quantity)` by part, joined with the 204 parts
//! that qualify). A Parquet scan uses the filter only to skip row groups and pages
//! unless `pushdown_filters` is on, and turning that on for every predicate made the
//! TPC-H run 20% slower. So all 6M rows were aggregated and the join then kept 0.1% of
//! the groups. Here the filter is also evaluated as a `FilterExec` right above such a
//! scan, so the aggregate only sees rows that can match. A `FilterExec` is what a
//! pushed-down filter means, so results are unchanged: until the join has read its
//! build side the filter is `true`.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::conjunction;
use datafusion::physical_expr::utils::reassign_expr_columns;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;

/// A new filter below changes the statistics the parents derive.
const RECOMPUTE: ReplaceChildrenOptions =
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);

/// Put a `FilterExec` of the hash-join filters a scan received between every lake
/// scan and the aggregate it feeds (through projections and repartitions).
pub(crate) fn filter_aggregate_inputs(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    if config.execution.parquet.pushdown_filters {
        // The scans filter rows themselves.
        return Ok(plan);
    }
    let join_filters = super::dynamic::hash_join_filters(&plan)?;
    if join_filters.is_empty() {
        return Ok(plan);
    }
    plan.transform_down(|node| {
        if !node.is::<AggregateExec>() {
            return Ok(Transformed::no(node));
        }
        let input = Arc::clone(node.children()[0]);
        match filtered(input, &join_filters)? {
            Some(input) => Ok(Transformed::yes(
                node.replace_children(vec![input], RECOMPUTE)?,
            )),
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

/// `plan` with its scan filtered, if it is a lake scan (below operators that keep
/// every row) holding join filters.
fn filtered(
    plan: Arc<dyn ExecutionPlan>,
    join_filters: &HashSet<u64>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if plan.is::<DataSourceExec>() {
        let mut found = Vec::new();
        plan.apply_expressions(&mut |root| {
            root.apply(|e| {
                if e.expression_id()
                    .is_some_and(|id| join_filters.contains(&id))
                {
                    found.push(Arc::clone(e));
                    return Ok(TreeNodeRecursion::Jump);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        if found.is_empty() {
            return Ok(None);
        }
        // The scan holds them over the file's columns; the filter reads its output.
        let schema = plan.schema();
        let Ok(predicate) = found
            .into_iter()
            .map(|f| reassign_expr_columns(f, &schema))
            .collect::<Result<Vec<Arc<dyn PhysicalExpr>>>>()
        else {
            return Ok(None);
        };
        let filter = FilterExec::try_new(conjunction(predicate), plan)?;
        return Ok(Some(Arc::new(filter)));
    }
    let passes_rows =
        plan.is::<ProjectionExec>() || plan.is::<RepartitionExec>() || plan.is::<CooperativeExec>();
    if !passes_rows || plan.children().len() != 1 {
        return Ok(None);
    }
    let child = Arc::clone(plan.children()[0]);
    match filtered(child, join_filters)? {
        Some(child) => Ok(Some(plan.replace_children(vec![child], RECOMPUTE)?)),
        None => Ok(None),
    }
}
