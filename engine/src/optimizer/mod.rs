//! Physical optimizer rules meshql adds to DataFusion's, and the operators they use.

mod shared_exec;
mod shared_subplans;

pub use shared_subplans::ShareIdenticalSubplans;

use std::sync::Arc;

use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;

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
    rules
}
