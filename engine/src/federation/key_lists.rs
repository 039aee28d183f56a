//! Longer key lists for hash joins whose probe side is a remote statement.
//!
//! DataFusion hands a join's build-side keys to the probe side as an IN list only up
//! to `hash_join_inlist_pushdown_max_distinct_values` keys and `_max_size` bytes;
//! beyond that it shares a reference to its hash table, which a remote source cannot
//! use (it then gets the keys' range only). The session's limits suit lake scans,
//! where a long list costs more to evaluate than it skips (engine.rs). For a remote
//! probe side every key left out means rows sent over the network for nothing: TPC-H
//! Q12 reads 31K orders of 1.5M from PostgreSQL. So such a join runs with the limits
//! below, and its inputs with the session's again.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

/// Keys a remote probe side may receive as an IN list. A statement with 64K integer
/// keys is about 500 KB of SQL, which PostgreSQL plans as a hashed `= ANY` in
/// milliseconds.
pub(crate) const REMOTE_MAX_KEYS: usize = 65_536;
/// The build-side key arrays' size up to which the list is made (per partition).
const REMOTE_MAX_KEY_BYTES: usize = 8 << 20;

/// Give each hash join that publishes a filter in `remote_filters` (filters remote
/// scans wait for) the remote key-list limits; its children keep the session's.
pub(crate) fn widen_for_remote_probes(
    plan: Arc<dyn ExecutionPlan>,
    remote_filters: &HashSet<u64>,
    session: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    if remote_filters.is_empty() {
        return Ok(plan);
    }
    let own = Limits {
        keys: session
            .optimizer
            .hash_join_inlist_pushdown_max_distinct_values,
        bytes: session.optimizer.hash_join_inlist_pushdown_max_size,
    };
    let remote = Limits {
        keys: own.keys.max(REMOTE_MAX_KEYS),
        bytes: own.bytes.max(REMOTE_MAX_KEY_BYTES),
    };
    plan.transform_up(|node| {
        let probed_remotely = node.is::<HashJoinExec>()
            && node
                .dynamic_expressions_produced()
                .iter()
                .filter_map(|f| f.expression_id())
                .any(|id| remote_filters.contains(&id));
        if !probed_remotely {
            return Ok(Transformed::no(node));
        }
        let children = node
            .children()
            .into_iter()
            .map(|c| KeyListLimits::wrap(Arc::clone(c), own))
            .collect();
        // The wrappers keep their inputs' properties, so the join's stay valid.
        let join = node.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?;
        Ok(Transformed::yes(KeyListLimits::wrap(join, remote)))
    })
    .map(|t| t.data)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    keys: usize,
    bytes: usize,
}

/// Runs its input with other IN-list limits for the hash joins in it. Changes nothing
/// else: same partitioning, order and statistics.
#[derive(Debug)]
struct KeyListLimits {
    input: Arc<dyn ExecutionPlan>,
    limits: Limits,
}

impl KeyListLimits {
    fn wrap(input: Arc<dyn ExecutionPlan>, limits: Limits) -> Arc<dyn ExecutionPlan> {
        Arc::new(Self { input, limits })
    }
}

impl DisplayAs for KeyListLimits {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "KeyListLimits: join_keys={}", self.limits.keys)
    }
}

impl ExecutionPlan for KeyListLimits {
    fn name(&self) -> &str {
        "KeyListLimits"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Self::wrap(children.swap_remove(0), self.limits))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut config = context.session_config().clone();
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.hash_join_inlist_pushdown_max_distinct_values = self.limits.keys;
        optimizer.hash_join_inlist_pushdown_max_size = self.limits.bytes;
        let scoped = TaskContext::new(
            context.task_id(),
            context.session_id(),
            config,
            context.scalar_functions().clone(),
            context.higher_order_functions().clone(),
            context.aggregate_functions().clone(),
            context.window_functions().clone(),
            context.runtime_env(),
        );
        self.input.execute(partition, Arc::new(scoped))
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}
