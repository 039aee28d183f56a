//! Physical optimizer rules meshql adds to DataFusion's, and the operators they use.

mod conjunct_order;
mod decimal_arith;
mod shared_exec;
mod shared_subplans;

pub use conjunct_order::CheapConditionsFirst;
pub use decimal_arith::DecimalArithmetic;
pub use shared_subplans::ShareIdenticalSubplans;

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};

/// DataFusion's rules with meshql's in their place.
pub fn physical_rules(share_subplans: bool) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    if share_subplans {
        // Before the pass that hands joins' dynamic filters to the scans below them.
        let at = rules
            .iter()
            .position(|r| r.name() == "FilterPushdown(Post)")
            .unwrap_or(rules.len());
        rules.insert(at, Arc::new(ShareIdenticalSubplans::default()));
    }
    // Last: DataFusion's rules have placed the filters these rewrite, and recognise
    // the expressions DecimalArithmetic replaces.
    rules.push(Arc::new(CheapConditionsFirst));
    rules.push(Arc::new(DecimalArithmetic));
    rules
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
