//! A join's keys that are an aggregate's results become a condition of the join, so
//! that its keys on the group columns reach below the aggregate.
//!
//! A hash join filters its probe side by its build side's keys (DataFusion's dynamic
//! filter), and that filter passes an aggregate only if every column it names is a
//! group column. TPC-H Q2 joins its 642 candidate suppliers' rows to the minimum cost
//! per part, on the part *and* that minimum: the filter names the minimum, stops at the
//! aggregate, and the minimum is computed for all 117K parts of the region (159K rows
//! of partsupp, each probing the supplier join first) where 747 parts can match.
//!
//! When the probe side's keys are all group columns of one aggregate, covering its
//! groups, or that aggregate's results, the results' equalities move from the keys into
//! the join's filter. The probe rows stay unique per key (one row per group), so the hash
//! table does no more work per row; the join's result is the same, because a join
//! filter's equality rejects NULLs as a key does. Only where the build side is collected
//! whole (`CollectLeft`): a partitioned join's inputs are split by all of its keys.
//!
//! Upstream: DataFusion passes dynamic filters through an aggregate only on group
//! columns (apache/datafusion#18399); no upstream issue asks for join keys on aggregate
//! results to become the join's filter, so there is nothing to drop this for yet.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::{PhysicalExpr, conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::utils::{ColumnIndex, JoinFilter};
use datafusion::physical_plan::joins::{HashJoinExec, HashJoinExecBuilder, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;

#[derive(Debug, Default)]
pub struct KeysPastAggregates;

impl PhysicalOptimizerRule for KeysPastAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::MeshqlOptions::of(config).keys_past_aggregates {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            Ok(match node.downcast_ref::<HashJoinExec>().map(rewrite) {
                Some(Ok(Some(new))) => Transformed::yes(new),
                Some(Err(e)) => return Err(e),
                _ => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "KeysPastAggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Where a probe-side key column comes from.
enum Origin<'a> {
    /// Group column `index` of this aggregate.
    Group(&'a AggregateExec, usize),
    /// One of this aggregate's results.
    Result(&'a AggregateExec),
    Other,
}

/// `join` with its keys on aggregate results moved into its filter, or None.
fn rewrite(join: &HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if join.on().len() < 2
        || join.filter().is_some()
        || *join.partition_mode() != PartitionMode::CollectLeft
        || join.null_equality() != NullEquality::NullEqualsNothing
        || !matches!(
            join.join_type(),
            JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi
        )
    {
        return Ok(None);
    }
    let mut aggregate: Option<&AggregateExec> = None;
    let mut groups = Vec::new();
    let (mut kept, mut moved) = (Vec::new(), Vec::new());
    for (left, right) in join.on() {
        let Some(column) = right.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let (at, group) = match origin(join.right(), column.index()) {
            Origin::Group(at, index) => (at, Some(index)),
            Origin::Result(at) => (at, None),
            Origin::Other => return Ok(None),
        };
        if aggregate.is_some_and(|a| !std::ptr::eq(a, at)) {
            return Ok(None);
        }
        aggregate = Some(at);
        match group {
            Some(index) => {
                groups.push(index);
                kept.push((Arc::clone(left), Arc::clone(right)));
            }
            None => moved.push((Arc::clone(left), column.clone())),
        }
    }
    let Some(aggregate) = aggregate else {
        return Ok(None);
    };
    groups.sort_unstable();
    groups.dedup();
    let group_by = aggregate.group_expr();
    let grouped_once = matches!(
        aggregate.mode(),
        AggregateMode::Final
            | AggregateMode::FinalPartitioned
            | AggregateMode::Single
            | AggregateMode::SinglePartitioned
    );
    if moved.is_empty()
        || kept.is_empty()
        || !grouped_once
        || group_by.groups().len() != 1
        || groups.len() != group_by.expr().len()
    {
        return Ok(None);
    }
    let Some(filter) = equalities(&moved, join) else {
        return Ok(None);
    };
    let new = HashJoinExecBuilder::new(
        Arc::clone(join.left()),
        Arc::clone(join.right()),
        kept,
        *join.join_type(),
    )
    .with_filter(Some(filter))
    .with_projection_ref(join.projection.clone())
    .with_partition_mode(PartitionMode::CollectLeft)
    .with_null_equality(NullEquality::NullEqualsNothing)
    .with_fetch(join.fetch())
    .build()?;
    Ok(Some(Arc::new(new)))
}

/// The join filter `left_1 = right_1 AND ...` of the moved keys; None unless each
/// build-side key is a column.
fn equalities(
    moved: &[(Arc<dyn PhysicalExpr>, Column)],
    join: &HashJoinExec,
) -> Option<JoinFilter> {
    let (left_schema, right_schema) = (join.left().schema(), join.right().schema());
    let mut fields = Vec::new();
    let mut indices = Vec::new();
    let mut conditions = Vec::new();
    for (left, right) in moved {
        let left = left.downcast_ref::<Column>()?;
        let (l, r) = (
            left_schema.field(left.index()),
            right_schema.field(right.index()),
        );
        // Keys of two types compare as the join's hashing does, which `=` may not.
        if l.data_type() != r.data_type() {
            return None;
        }
        let at = fields.len();
        fields.push(Field::clone(l));
        fields.push(Field::clone(r));
        indices.push(ColumnIndex {
            index: left.index(),
            side: JoinSide::Left,
        });
        indices.push(ColumnIndex {
            index: right.index(),
            side: JoinSide::Right,
        });
        conditions.push(Arc::new(BinaryExpr::new(
            Arc::new(Column::new(left.name(), at)),
            Operator::Eq,
            Arc::new(Column::new(right.name(), at + 1)),
        )) as Arc<dyn PhysicalExpr>);
    }
    Some(JoinFilter::new(
        conjunction(conditions),
        indices,
        Arc::new(Schema::new(fields)),
    ))
}

/// Where output column `index` of `plan` comes from, through operators that pass
/// columns on unchanged, down to an aggregate.
fn origin(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Origin<'_> {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        return if index < aggregate.group_expr().expr().len() {
            Origin::Group(aggregate, index)
        } else {
            Origin::Result(aggregate)
        };
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return match projection
            .expr()
            .get(index)
            .and_then(|e| e.expr.downcast_ref::<Column>())
        {
            Some(column) => origin(projection.input(), column.index()),
            None => Origin::Other,
        };
    }
    if plan.is::<RepartitionExec>() || plan.is::<CoalescePartitionsExec>() {
        return origin(plan.children()[0], index);
    }
    Origin::Other
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, SchemaRef};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::TaskContext;
    use datafusion::functions_aggregate::min_max::min_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::{collect, displayable};

    use super::*;

    fn table(names: [&str; 2], rows: &[(Option<i64>, Option<i64>)]) -> Arc<dyn ExecutionPlan> {
        let schema: SchemaRef = Arc::new(Schema::new(
            names.map(|n| Field::new(n, DataType::Int64, true)).to_vec(),
        ));
        let a: Int64Array = rows.iter().map(|r| r.0).collect();
        let b: Int64Array = rows.iter().map(|r| r.1).collect();
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(a), Arc::new(b)]).unwrap();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap()
    }

    /// `min(cost)` per group of `keys` columns of partsupp (part, cost), as (min, keys...).
    fn min_cost(mode: AggregateMode, keys: &[&str]) -> Arc<dyn ExecutionPlan> {
        let input = table(
            ["part", "cost"],
            &[
                (Some(1), Some(10)),
                (Some(1), Some(7)),
                (Some(2), Some(5)),
                (Some(2), None),
                (Some(3), None),
                (None, Some(1)),
            ],
        );
        let schema = input.schema();
        let min = AggregateExprBuilder::new(min_udaf(), vec![col("cost", &schema).unwrap()])
            .schema(Arc::clone(&schema))
            .alias("min")
            .build()
            .unwrap();
        let group_by = keys
            .iter()
            .map(|k| (col(k, &schema).unwrap(), k.to_string()))
            .collect();
        let aggregate: Arc<dyn ExecutionPlan> = Arc::new(
            AggregateExec::try_new(
                mode,
                PhysicalGroupBy::new_single(group_by),
                vec![Arc::new(min)],
                vec![None],
                input,
                schema,
            )
            .unwrap(),
        );
        // (min, part, ...): the result first, as Q2's decorrelated subquery has it.
        let out = aggregate.schema();
        let n = keys.len();
        let exprs = std::iter::once(n)
            .chain(0..n)
            .map(|i| {
                (
                    Arc::new(Column::new(out.field(i).name(), i)) as _,
                    out.field(i).name().clone(),
                )
            })
            .collect::<Vec<(Arc<dyn PhysicalExpr>, String)>>();
        Arc::new(ProjectionExec::try_new(exprs, aggregate).unwrap())
    }

    /// Candidates (p_partkey, ps_supplycost) LEFT SEMI JOIN the minimum per part on both.
    fn q2_join(right: Arc<dyn ExecutionPlan>, mode: PartitionMode) -> Arc<dyn ExecutionPlan> {
        let left = table(
            ["p_partkey", "ps_supplycost"],
            &[
                (Some(1), Some(7)),
                (Some(1), Some(10)),
                (Some(2), Some(5)),
                (Some(2), None),
                (Some(3), None),
                (None, Some(1)),
                (Some(4), Some(4)),
            ],
        );
        let (ls, rs) = (left.schema(), right.schema());
        let on = vec![
            (col("p_partkey", &ls).unwrap(), col("part", &rs).unwrap()),
            (col("ps_supplycost", &ls).unwrap(), col("min", &rs).unwrap()),
        ];
        Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                on,
                None,
                &JoinType::LeftSemi,
                None,
                mode,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        )
    }

    fn optimized(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        KeysPastAggregates
            .optimize(Arc::clone(plan), &ConfigOptions::default())
            .unwrap()
    }

    fn join_line(plan: &Arc<dyn ExecutionPlan>) -> String {
        displayable(plan.as_ref())
            .indent(false)
            .to_string()
            .lines()
            .next()
            .unwrap()
            .to_string()
    }

    async fn rows(plan: Arc<dyn ExecutionPlan>) -> Vec<String> {
        let batches = collect(plan, Arc::new(TaskContext::default()))
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap();
        let mut rows: Vec<String> = text.to_string().lines().map(String::from).collect();
        rows.sort();
        rows
    }

    #[tokio::test]
    async fn the_minimum_moves_into_the_filter_with_the_same_rows() {
        let plan = q2_join(
            min_cost(AggregateMode::Single, &["part"]),
            PartitionMode::CollectLeft,
        );
        let new = optimized(&plan);
        let line = join_line(&new);
        assert!(line.contains("on=[(p_partkey@0, part@1)]"), "{line}");
        assert!(line.contains("filter=ps_supplycost@0 = min@1"), "{line}");
        // Part 1 at its minimum, part 2 at 5; NULL costs and keys match nothing.
        let expected = rows(plan).await;
        assert_eq!(
            expected.iter().filter(|r| r.starts_with("| ")).count(),
            3,
            "{expected:?}"
        );
        assert_eq!(rows(new).await, expected);
    }

    #[test]
    fn joins_that_split_their_inputs_by_key_keep_their_keys() {
        let plan = q2_join(
            min_cost(AggregateMode::Single, &["part"]),
            PartitionMode::Partitioned,
        );
        assert_eq!(join_line(&optimized(&plan)), join_line(&plan));
    }

    #[test]
    fn keys_that_leave_a_group_column_out_stay_keys() {
        // Grouped by part and cost, joined on part and the minimum: a part has many
        // groups, so the part alone would not find one row per key.
        let right = min_cost(AggregateMode::Single, &["part", "cost"]);
        let plan = q2_join(right, PartitionMode::CollectLeft);
        assert_eq!(join_line(&optimized(&plan)), join_line(&plan));
    }
}
