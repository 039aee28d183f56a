//! Subplans that occur more than once in a plan are computed once.
//!
//! DataFusion inlines a common table expression at each reference, so a CTE read twice
//! is computed twice: TPC-H Q15 aggregates three months of lineitem once for the
//! maximum revenue and again for the suppliers that reach it. DuckDB computes it once.
//! This rule finds identical subplans that do work (an aggregate or a join over file
//! scans) and wraps each instance in a [`SharedSubplanExec`], which computes the
//! results once per partition where one instance is read after the other.
//!
//! It runs before DataFusion's last filter pushdown, which attaches each join's dynamic
//! filter to the scans below it: identical subplans would then differ by the filter of
//! the join each sits under. [`SharedSubplanExec`] takes no filters from above, so the
//! instances stay identical.
//!
//! Two subplans are the same when every node prints the same in verbose form (file
//! scans with their full file lists), with the same expressions, output types and
//! object store. Anything whose output could differ between two runs is not shared:
//! volatile expressions (`random()`), scalar subqueries (which print alike whatever
//! they compute), and nodes this rule does not know (a remote statement, an in-memory
//! table, an extension), whose printed form need not say everything they read.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::buffer::BufferExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::partial_sort::PartialSortExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};

use super::shared_exec::{SharedResults, SharedSubplanExec};

/// The physical optimizer rule. Insert it before `FilterPushdown(Post)`.
#[derive(Debug, Default)]
pub struct ShareIdenticalSubplans {
    /// Keyed with a secret per process, so that no statement can be written to make
    /// two different subplans collide.
    hasher: RandomState,
}

/// What the rule knows about one node of the plan.
struct Node {
    /// Identity of the subplan rooted here; None if it must not be shared.
    hash: Option<u64>,
    /// Whether the subplan contains an aggregate or a join.
    works: bool,
}

/// Nodes keyed by address: the plan is not modified while they are in use.
type Nodes = HashMap<usize, Node>;

fn address(plan: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(plan) as *const () as usize
}

impl PhysicalOptimizerRule for ShareIdenticalSubplans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut nodes = Nodes::new();
        let mut counts = HashMap::<u64, usize>::new();
        self.describe(&plan, &mut nodes, &mut counts)?;
        // The outermost repeated subplans; one inside another is shared with it.
        let mut chosen = HashMap::<u64, Vec<Arc<dyn ExecutionPlan>>>::new();
        choose(&plan, &nodes, &counts, &mut chosen);
        let mut groups = HashMap::new();
        for (hash, instances) in chosen {
            if instances.len() > 1 && same_text(&instances) {
                let partitions = instances[0].properties().partitioning.partition_count();
                let id = groups.len() + 1;
                let results = SharedResults::new(id, instances.len(), partitions);
                groups.insert(hash, Arc::new(results));
            }
        }
        if groups.is_empty() {
            return Ok(plan);
        }
        Ok(share(&plan, &nodes, &groups)?.unwrap_or(plan))
    }

    fn name(&self) -> &str {
        "ShareIdenticalSubplans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl ShareIdenticalSubplans {
    /// Fill `nodes` for `plan` and below; count the repeated subplans that do work.
    fn describe(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        nodes: &mut Nodes,
        counts: &mut HashMap<u64, usize>,
    ) -> Result<()> {
        let mut hash = node_text(plan)?.map(|text| {
            let mut h = self.hasher.build_hasher();
            text.hash(&mut h);
            h
        });
        let mut works = plan.is::<AggregateExec>() || is_join(plan);
        for child in plan.children() {
            self.describe(child, nodes, counts)?;
            let described = &nodes[&address(child)];
            works |= described.works;
            hash = match (hash, described.hash) {
                (Some(mut h), Some(c)) => {
                    c.hash(&mut h);
                    Some(h)
                }
                _ => None,
            };
        }
        let hash = hash.map(|h| h.finish());
        if let (Some(h), true) = (hash, works) {
            *counts.entry(h).or_default() += 1;
        }
        nodes.insert(address(plan), Node { hash, works });
        Ok(())
    }
}

fn choose(
    plan: &Arc<dyn ExecutionPlan>,
    nodes: &Nodes,
    counts: &HashMap<u64, usize>,
    chosen: &mut HashMap<u64, Vec<Arc<dyn ExecutionPlan>>>,
) {
    let node = &nodes[&address(plan)];
    if let Some(hash) = node.hash
        && node.works
        && counts.get(&hash).is_some_and(|n| *n > 1)
    {
        chosen.entry(hash).or_default().push(Arc::clone(plan));
        return;
    }
    for child in plan.children() {
        choose(child, nodes, counts, chosen);
    }
}

/// `plan` with the instances of each group wrapped, or None if unchanged.
fn share(
    plan: &Arc<dyn ExecutionPlan>,
    nodes: &Nodes,
    groups: &HashMap<u64, Arc<SharedResults>>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(results) = nodes[&address(plan)].hash.and_then(|h| groups.get(&h)) {
        let shared = SharedSubplanExec::new(Arc::clone(plan), Arc::clone(results));
        return Ok(Some(Arc::new(shared)));
    }
    super::rewrite_children(plan, |_, child| share(child, nodes, groups))
}

/// Whether the instances print alike in full: a hash collision must not merge two
/// different subplans.
fn same_text(instances: &[Arc<dyn ExecutionPlan>]) -> bool {
    let full = |plan: &Arc<dyn ExecutionPlan>| {
        let mut text = String::new();
        full_text(plan, &mut text).then_some(text)
    };
    let first = full(&instances[0]);
    first.is_some() && instances[1..].iter().all(|i| full(i) == first)
}

fn full_text(plan: &Arc<dyn ExecutionPlan>, out: &mut String) -> bool {
    let Ok(Some(text)) = node_text(plan) else {
        return false;
    };
    out.push_str(&text);
    out.push('(');
    for child in plan.children() {
        if !full_text(child, out) {
            return false;
        }
        out.push(',');
    }
    out.push(')');
    true
}

/// Everything that decides what one node outputs, or None if it is not known to.
fn node_text(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<String>> {
    let mut text = String::new();
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        let Some(files) = scan.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(None);
        };
        // The store tells two buckets' files of the same path apart.
        let _ = write!(text, "{} {files:?} ", files.object_store_url);
    } else if !known(plan) {
        return Ok(None);
    }
    let _ = write!(text, "{}", Verbose(plan.as_ref()));
    let mut shareable = true;
    plan.apply_expressions(&mut |expr| {
        shareable &= !is_volatile(expr);
        let _ = write!(text, " | {expr}");
        Ok(TreeNodeRecursion::Continue)
    })?;
    // A join filter's columns are named as in its inputs, which may repeat a name.
    let join_filter = (plan.downcast_ref::<HashJoinExec>().and_then(|j| j.filter()))
        .or_else(|| plan.downcast_ref::<NestedLoopJoinExec>()?.filter())
        .or_else(|| plan.downcast_ref::<SortMergeJoinExec>()?.filter().as_ref());
    if let Some(filter) = join_filter {
        let _ = write!(text, " {:?}", filter.column_indices());
    }
    let _ = write!(text, " -> {:?}", plan.schema().fields());
    if !shareable || text.contains("scalar_subquery(") {
        return Ok(None);
    }
    Ok(Some(text))
}

/// DataFusion's operators whose verbose form and expressions say all they do.
fn known(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<AggregateExec>()
        || plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<CooperativeExec>()
        || plan.is::<BufferExec>()
        || plan.is::<SortExec>()
        || plan.is::<PartialSortExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<GlobalLimitExec>()
        || plan.is::<LocalLimitExec>()
        || plan.is::<UnionExec>()
        || plan.is::<InterleaveExec>()
        || plan.is::<BoundedWindowAggExec>()
        || plan.is::<WindowAggExec>()
        || is_join(plan)
}

fn is_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<HashJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<CrossJoinExec>()
}

/// A node's one-line verbose form.
struct Verbose<'a>(&'a dyn ExecutionPlan);

impl fmt::Display for Verbose<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt_as(DisplayFormatType::Verbose, f)
    }
}
