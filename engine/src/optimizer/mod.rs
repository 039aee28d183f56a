//! Physical optimizer rules meshql adds to DataFusion's, and the operators they use.

mod conjunct_order;
mod decimal_arith;
mod keys_past_aggregates;
mod like_segments;
mod options;
pub(crate) mod plain_strings;
mod shared_exec;
mod shared_subplans;
mod survivors;

pub use conjunct_order::CheapConditionsFirst;
pub use decimal_arith::DecimalArithmetic;
pub use keys_past_aggregates::KeysPastAggregates;
pub use like_segments::LikeBySegments;
pub use options::{MeshqlOptions, rule_settings};
pub use plain_strings::plain_string_results;
pub use shared_subplans::ShareIdenticalSubplans;
pub use survivors::ConditionsOnSurvivors;

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};

/// DataFusion's rules with meshql's in their place. Each of meshql's rules does nothing
/// where its [`MeshqlOptions`] switch is off.
pub fn physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    // Before the pass that hands joins' dynamic filters to the scans below them: the
    // join sides are chosen by then, and the filters are made from the keys these leave.
    let at = rules
        .iter()
        .position(|r| r.name() == "FilterPushdown(Post)")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(KeysPastAggregates));
    rules.insert(at, Arc::new(ShareIdenticalSubplans::default()));
    // Last: DataFusion's rules have placed the filters these rewrite, and recognise
    // the expressions DecimalArithmetic replaces.
    rules.push(Arc::new(CheapConditionsFirst));
    rules.push(Arc::new(DecimalArithmetic));
    rules.push(Arc::new(LikeBySegments));
    // After the rules above: it hides the filters' conjunctions from rules that look for one.
    rules.push(Arc::new(ConditionsOnSurvivors));
    rules
}

/// Whether two nodes promise the same to the operators above them (partitioning,
/// ordering, equivalences, constants, constraints, schema), compared as values rather
/// than as printed text, so that a DataFusion upgrade that prints them otherwise cannot
/// change the answer.
pub(crate) fn same_properties(a: &PlanProperties, b: &PlanProperties) -> bool {
    let (ea, eb) = (&a.eq_properties, &b.eq_properties);
    // DataFusion's `==` never holds between two unknown partitionings.
    let same_partitioning = match (&a.partitioning, &b.partitioning) {
        (Partitioning::UnknownPartitioning(x), Partitioning::UnknownPartitioning(y)) => x == y,
        (x, y) => x == y,
    };
    same_partitioning
        && a.emission_type == b.emission_type
        && a.boundedness == b.boundedness
        && a.evaluation_type == b.evaluation_type
        && a.scheduling_type == b.scheduling_type
        && a.output_ordering() == b.output_ordering()
        && ea.constants() == eb.constants()
        && **ea.eq_group() == **eb.eq_group()
        && ea.oeq_class() == eb.oeq_class()
        && ea.constraints() == eb.constraints()
        && ea.schema() == eb.schema()
}

/// `plan` with each child `i` replaced by `rewrite(i, child)` where that returns a new
/// one, or None if no child changed. Properties are recomputed: a node added below
/// changes the statistics its parents derive.
pub(crate) fn rewrite_children(
    plan: &Arc<dyn ExecutionPlan>,
    mut rewrite: impl FnMut(usize, &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let children = plan.children();
    let mut changed = false;
    let mut new_children = Vec::with_capacity(children.len());
    for (index, child) in children.into_iter().enumerate() {
        match rewrite(index, child)? {
            Some(c) => {
                changed = true;
                new_children.push(c);
            }
            None => new_children.push(Arc::clone(child)),
        }
    }
    if !changed {
        return Ok(None);
    }
    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    Ok(Some(
        Arc::clone(plan).replace_children(new_children, recompute)?,
    ))
}

/// The body of the expression rewrite rules: `plan` with the expressions of each
/// projection, filter and aggregate's arguments rewritten by `rewrite_expr`.
pub(crate) fn rewrite_plan_expressions(
    plan: Arc<dyn ExecutionPlan>,
    rewrite_expr: impl Fn(&Arc<dyn PhysicalExpr>, &Schema) -> Result<Transformed<Arc<dyn PhysicalExpr>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        rewrite_expressions(&node, &rewrite_expr)
            .map(|n| n.map_or(Transformed::no(node), Transformed::yes))
    })
    .data()
}

/// `node` with the expressions of its projection, filter or aggregate arguments
/// rewritten by `rewrite_expr`, or None where none changed. Scans keep their predicates (for
/// pruning, which looks for DataFusion's own expressions).
fn rewrite_expressions(
    node: &Arc<dyn ExecutionPlan>,
    rewrite_expr: impl Fn(&Arc<dyn PhysicalExpr>, &Schema) -> Result<Transformed<Arc<dyn PhysicalExpr>>>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        let schema = projection.input().schema();
        let mut changed = false;
        let mut exprs = Vec::with_capacity(projection.expr().len());
        for e in projection.expr() {
            let expr = rewrite_expr(&e.expr, &schema)?;
            changed |= expr.transformed;
            exprs.push(ProjectionExpr::new(expr.data, e.alias.clone()));
        }
        if !changed {
            return Ok(None);
        }
        let new = ProjectionExec::try_new_with_schema_metadata(
            exprs,
            Arc::clone(projection.input()),
            &projection.schema(),
        )?;
        return Ok(Some(Arc::new(new)));
    }
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        let predicate = rewrite_expr(filter.predicate(), &filter.input().schema())?;
        if !predicate.transformed {
            return Ok(None);
        }
        let new = FilterExecBuilder::from(filter)
            .with_predicate(predicate.data)
            .build()?;
        return Ok(Some(Arc::new(new)));
    }
    if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
        let schema = aggregate.input_schema();
        let mut changed = false;
        let mut aggr_exprs = Vec::with_capacity(aggregate.aggr_expr().len());
        for aggr in aggregate.aggr_expr() {
            let mut args_changed = false;
            let mut args = Vec::new();
            for arg in aggr.expressions() {
                let arg = rewrite_expr(&arg, &schema)?;
                args_changed |= arg.transformed;
                args.push(arg.data);
            }
            let order_by = aggr
                .order_bys()
                .iter()
                .map(|s| Arc::clone(&s.expr))
                .collect();
            match args_changed
                .then(|| aggr.with_new_expressions(args, order_by))
                .flatten()
            {
                Some(new) => {
                    changed = true;
                    aggr_exprs.push(Arc::new(new));
                }
                None => aggr_exprs.push(Arc::clone(aggr)),
            }
        }
        if !changed {
            return Ok(None);
        }
        return Ok(Some(Arc::new(aggregate.with_new_aggr_exprs(aggr_exprs))));
    }
    Ok(None)
}
