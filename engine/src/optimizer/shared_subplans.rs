//! Subplans that occur more than once in a plan are computed once.
//!
//! DataFusion inlines a common table expression at each reference, so a CTE read twice
//! is computed twice: TPC-H Q15 aggregates three months of lineitem once for the
//! maximum revenue and again for the suppliers that reach it. DuckDB computes it once.
//! This rule finds identical subplans that do work (an aggregate or a join over file
//! scans) and wraps each instance in a [`SharedSubplanExec`]: the first instance read
//! runs the subplan, all its partitions at once, and every instance replays its results.
//!
//! It runs before DataFusion's last filter pushdown, which attaches each join's dynamic
//! filter to the scans below it: identical subplans would then differ by the filter of
//! the join each sits under. [`SharedSubplanExec`] takes no filters from above, so the
//! instances stay identical.
//!
//! Two subplans are the same when they are the same tree as values (node types,
//! schemas, expressions by DataFusion's structural equality, properties) and every node
//! prints the same in verbose form (for what is not an expression: limits, modes, file
//! scans with their full file lists and object store). Anything whose output could differ between two runs is not shared:
//! volatile expressions (`random()`), scalar subqueries (which print alike whatever
//! they compute), and nodes this rule does not know (a remote statement, an in-memory
//! table, an extension), whose printed form need not say everything they read. Nor is
//! an unbounded subplan (a stream): its results are never complete, and the instances
//! wait for complete results.
//!
//! Upstream: DataFusion does not reuse subplans yet; drop this rule (and `shared_exec.rs`)
//! when [Subplan Materialization](https://github.com/apache/datafusion/issues/22676)
//! ships (see also apache/datafusion#8777, "Do not recompute CTEs").

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
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::MeshqlOptions::of(config).shared_subplans {
            return Ok(plan);
        }
        let mut nodes = Nodes::new();
        let mut counts = HashMap::<u64, usize>::new();
        self.describe(&plan, &mut nodes, &mut counts)?;
        // The outermost repeated subplans; one inside another is shared with it.
        let mut chosen = HashMap::<u64, Vec<Arc<dyn ExecutionPlan>>>::new();
        choose(&plan, &nodes, &counts, &mut chosen);
        let mut groups = HashMap::new();
        for (hash, instances) in chosen {
            let bounded = !instances[0].properties().boundedness.is_unbounded();
            if instances.len() > 1
                && bounded
                && same_text(&instances)
                && instances[1..]
                    .iter()
                    .all(|i| same_structure(&instances[0], i))
            {
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

/// Whether two subplans are the same tree as values: node types, schemas, expressions
/// (DataFusion's structural equality of physical expressions) and properties, node by
/// node. With [`same_text`], which covers what is not an expression (limits, modes,
/// file lists), neither a hash collision nor a change in how DataFusion prints a node
/// can merge two different subplans.
fn same_structure(a: &Arc<dyn ExecutionPlan>, b: &Arc<dyn ExecutionPlan>) -> bool {
    let expressions = |plan: &Arc<dyn ExecutionPlan>| {
        let mut all = Vec::new();
        let _ = plan.apply_expressions(&mut |e| {
            all.push(Arc::clone(e));
            Ok(TreeNodeRecursion::Continue)
        });
        all
    };
    let (ea, eb) = (expressions(a), expressions(b));
    let type_of = |p: &Arc<dyn ExecutionPlan>| (p.as_ref() as &dyn std::any::Any).type_id();
    type_of(a) == type_of(b)
        && a.schema() == b.schema()
        && ea.len() == eb.len()
        && ea.iter().zip(&eb).all(|(x, y)| x.as_ref() == y.as_ref())
        && super::same_properties(a.properties(), b.properties())
        && a.children().len() == b.children().len()
        && a.children()
            .iter()
            .zip(b.children())
            .all(|(x, y)| same_structure(x, y))
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::context::{SessionConfig, SessionContext};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::ParquetReadOptions;
    use tokio::time::timeout;

    /// Long enough for any of these statements; a wait past it is a hang.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// A CTE whose subplan joins two scans (hash joins, whose partitions wait for one
    /// another's build sides) and aggregates on the join key, so that its partitions
    /// are the join's. Two groups in four partitions: some partitions are empty.
    const CTE: &str = "WITH j AS (SELECT t.a AS a, count(*) AS n, sum(u.b) AS s \
                       FROM t JOIN u ON t.a = u.a GROUP BY t.a)";

    /// Ways of reading it twice or more.
    const SHAPES: [&str; 8] = [
        // One reference read in part: waited forever every time.
        "SELECT count(*) FROM (SELECT a FROM j LIMIT 1) x JOIN j y ON x.a = y.a",
        "SELECT x.a, y.s FROM (SELECT a FROM j ORDER BY a LIMIT 1) x JOIN j y ON x.a = y.a",
        // Both references read at once: waited forever now and then.
        "SELECT a, n, s FROM j UNION ALL SELECT a, n, s FROM j",
        "SELECT a FROM j UNION SELECT a FROM j",
        // Self-joins with conditions between the copies.
        "SELECT j1.a, j2.n FROM j j1, j j2 WHERE j1.a = j2.a AND j1.s >= j2.s",
        "SELECT count(*) FROM j j1 JOIN j j2 ON j1.a = j2.a JOIN j j3 ON j2.a = j3.a \
         JOIN j j4 ON j3.n = j4.n",
        // Semi and anti joins.
        "SELECT a FROM j WHERE a IN (SELECT a FROM j WHERE s > 0) \
         AND NOT EXISTS (SELECT 1 FROM j j2 WHERE j2.a = j.a + 100)",
        // One reference joined to an empty result, so the other may never be read.
        "SELECT count(*) FROM (SELECT a FROM j WHERE s < 0) x JOIN j y ON x.a = y.a",
    ];

    /// Tables t and u of four Parquet files each, so that every scan has partitions.
    async fn lake(dir: &Path) {
        let ctx = SessionContext::new();
        for (table, modulo, rows) in [("t", 2, 50), ("u", 3, 1000)] {
            std::fs::create_dir_all(dir.join(table)).unwrap();
            for file in 0..4 {
                let path = dir.join(table).join(format!("{file}.parquet"));
                let sql = format!(
                    "COPY (SELECT value % {modulo} AS a, value AS b \
                     FROM generate_series({}, {})) TO '{}' STORED AS PARQUET",
                    file * rows + 1,
                    file * rows + rows,
                    path.display()
                );
                ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            }
        }
    }

    /// A session over the lake, with sharing or not, and with joins that collect their
    /// build side whole or that split both sides by key.
    async fn session(dir: &Path, share: bool, partitioned: bool) -> SessionContext {
        let mut meshql = crate::optimizer::MeshqlOptions::default();
        meshql.shared_subplans = share;
        let mut config = SessionConfig::new()
            .with_target_partitions(4)
            .with_option_extension(meshql);
        if partitioned {
            let optimizer = &mut config.options_mut().optimizer;
            optimizer.hash_join_single_partition_threshold = 0;
            optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rules(crate::optimizer::physical_rules())
            .build();
        let ctx = SessionContext::new_with_state(state);
        for table in ["t", "u"] {
            let path = format!("{}/", dir.join(table).display());
            ctx.register_parquet(table, &path, ParquetReadOptions::default())
                .await
                .unwrap();
        }
        ctx
    }

    /// The statement's rows, sorted, and its plan.
    async fn rows(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let batches = timeout(PATIENCE, collect(plan, ctx.task_ctx()))
            .await
            .unwrap_or_else(|_| panic!("did not finish: {sql}\n{text}"))
            .unwrap();
        let mut rows: Vec<String> = pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(String::from)
            .collect();
        rows.sort();
        (rows, text)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_reading_a_cte_twice_finish_with_the_rows_of_computing_it_twice() {
        let dir = tempfile::tempdir().unwrap();
        lake(dir.path()).await;
        for partitioned in [false, true] {
            let shared = session(dir.path(), true, partitioned).await;
            let plain = session(dir.path(), false, partitioned).await;
            let mut sharing = 0;
            for shape in SHAPES {
                let sql = format!("{CTE} {shape}");
                let (expected, _) = rows(&plain, &sql).await;
                // Whether these waited depended on timing: run each a few times.
                for _ in 0..3 {
                    let (got, text) = rows(&shared, &sql).await;
                    assert_eq!(got, expected, "{sql}\n{text}");
                    sharing += usize::from(text.contains("SharedSubplanExec"));
                }
            }
            assert!(sharing > 0, "no statement shared its CTE");
        }
    }
}
