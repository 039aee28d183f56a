//! Join keys applied to the rows of a lake scan whose rows meet other work before
//! they reach the join.
//!
//! DataFusion pushes a hash join's dynamic filter (its build side's keys) down its
//! probe side to the scans. A Parquet scan uses it only to skip row groups and pages
//! unless `pushdown_filters` is on, and turning that on for every predicate makes the
//! TPC-H run slower (figures:
//! docs/benchmarks/log.md#2026-11-21-parquet-pushdown_filters-for-every-predicate-not-kept).
//! Where the join consumes the scan's rows directly that costs nothing: the join drops
//! them as cheaply as a filter would, and so does any hash join they probe on the way.
//! But when the rows first build another join's hash table, or go through an aggregate
//! or a sort, that work is done for rows the filter would have dropped:
//! - TPC-H Q17 aggregated all 6M lineitem rows by part, and the join above then kept
//!   the 204 parts that qualify;
//! - TPC-H Q7 built a hash table of all 1.5M orders, while the customer join above
//!   keeps the orders of two nations' customers.
//!
//! So at such scans the filter is also evaluated, by a [`JoinKeyFilterExec`] (which
//! stops where the keys drop few rows). That is what a pushed-down filter means, so
//! results are unchanged: until the join has read its build side the filter is `true`.
//!
//! Upstream: Parquet's `pushdown_filters` is still off by default
//! (apache/datafusion#3463, #20324) and adaptive placement of join filters is part of
//! [apache/datafusion#22883](https://github.com/apache/datafusion/issues/22883); drop
//! this when join filters are applied at scans where they pay, upstream.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::conjunction;
use datafusion::physical_expr::utils::reassign_expr_columns;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};

use super::join_key_filter::JoinKeyFilterExec;

/// Per hash-join filter in scope: whether its rows meet other work on the way up.
type Scope = HashMap<u64, bool>;

/// Put a [`JoinKeyFilterExec`] of the hash-join filters a lake scan holds above the scan, for
/// the filters whose join is above another join's build side, an aggregate or a sort.
pub(crate) fn filter_scans_by_distant_joins(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    if config.execution.parquet.pushdown_filters {
        // The scans filter rows themselves.
        return Ok(plan);
    }
    Ok(rewrite(&plan, &Scope::new())?.unwrap_or(plan))
}

/// `plan` with its distant-join filters applied at its scans, or None if unchanged.
fn rewrite(plan: &Arc<dyn ExecutionPlan>, scope: &Scope) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if plan.is::<DataSourceExec>() {
        return filtered_scan(plan, scope, plan);
    }
    // Above the scan's own filter, the join keys are looked up for fewer rows.
    if let Some(own) = plan.downcast_ref::<FilterExec>()
        && own.input().is::<DataSourceExec>()
        && let Some(done) = filtered_scan(own.input(), scope, plan)?
    {
        return Ok(Some(done));
    }
    let mut produced = Scope::new();
    if plan.is::<HashJoinExec>() {
        for id in plan
            .dynamic_expressions_produced()
            .iter()
            .filter_map(|f| f.expression_id())
        {
            produced.insert(id, false);
        }
    }
    crate::optimizer::rewrite_children(plan, |index, child| {
        let mut scope = scope.clone();
        if does_work(plan, index) {
            scope.values_mut().for_each(|far| *far = true);
        }
        scope.extend(&produced);
        rewrite(child, &scope)
    })
}

/// Whether `plan` does work for the rows of its child `index` that grows with their
/// number, before the join above can drop any: aggregates, sorts, and joins, except
/// a hash join's probe side. Probing costs each row about what looking its keys up
/// in a filter would (TPC-H Q9: filtering lineitem for the four joins it probes in
/// turn makes the query slower; figures:
/// docs/benchmarks/log.md#2026-11-22-join-keys-at-scans-below-other-joins-joinkeyfilterexec-kept),
/// while a build side keeps every row it is given.
fn does_work(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    if plan.is::<HashJoinExec>() {
        // CollectLeft and Partitioned both build from the left.
        return index == 0;
    }
    let joins =
        plan.children().len() > 1 && !plan.is::<UnionExec>() && !plan.is::<InterleaveExec>();
    joins || plan.is::<AggregateExec>() || plan.is::<SortExec>()
}

/// `input` (`scan`, or a filter of its rows) below a [`JoinKeyFilterExec`] of the
/// join filters `scan` holds, if a distant join's is among them. The nearest join's
/// go first: they are often the most selective, and the distant ones are then looked
/// up only for the rows they keep (TPC-H Q8: 4.4K of 6M lineitem rows have a qualifying
/// part; their orders are looked up after). None if `input` lacks their columns.
fn filtered_scan(
    scan: &Arc<dyn ExecutionPlan>,
    scope: &Scope,
    input: &Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let (mut near, mut far) = (Vec::new(), Vec::new());
    scan.apply_expressions(&mut |root| {
        root.apply(|e| {
            match e.expression_id().and_then(|id| scope.get(&id)) {
                Some(true) => far.push(Arc::clone(e)),
                Some(false) => near.push(Arc::clone(e)),
                None => return Ok(TreeNodeRecursion::Continue),
            }
            Ok(TreeNodeRecursion::Jump)
        })
    })?;
    if far.is_empty() {
        return Ok(None);
    }
    // The scan holds them over the file's columns; the filter reads `input`'s output.
    let schema = input.schema();
    let Ok(predicate) = near
        .into_iter()
        .chain(far)
        .map(|f| reassign_expr_columns(f, &schema))
        .collect::<Result<Vec<Arc<dyn PhysicalExpr>>>>()
    else {
        return Ok(None);
    };
    let filter = JoinKeyFilterExec::new(conjunction(predicate), Arc::clone(input));
    Ok(Some(Arc::new(filter)))
}
