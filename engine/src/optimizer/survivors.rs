//! A filter's later conditions are evaluated on the rows that survived the earlier ones.
//!
//! DataFusion evaluates `a AND b AND c` as nested `BinaryExpr`s. Once few rows survive
//! `a` (20% or less), each level copies *every column of the batch* to the surviving
//! rows, evaluates its right side there, and scatters the result back to full length one
//! row at a time; the next level starts again from the full batch. In TPC-H Q6 (five
//! conditions, 2% of rows kept) that machinery costs more CPU than the comparisons
//! themselves (figures:
//! docs/benchmarks/log.md#2026-11-22-later-conditions-on-the-surviving-rows-only-kept).
//!
//! [`SurvivorsAnd`] keeps one bitmap of the rows still in play. Each condition is
//! evaluated on the whole batch while many rows survive (a vectorized comparison costs
//! less than selecting rows), and otherwise on the survivors only, copying just the
//! columns it reads; its result is written into the bitmap by position. Rows where a
//! condition is NULL are dropped, as a filter drops them, so the rule replaces filter
//! predicates only, after DataFusion's rules (which look for `BinaryExpr`), and only
//! where the filter's properties stay the same (see [`ConditionsOnSurvivors`]). A
//! condition is never evaluated on more rows than DataFusion evaluates it on.
//!
//! Upstream: [apache/datafusion#25035](https://github.com/apache/datafusion/issues/25035)
//! (AND-chain pre-selection loses the surviving rows at each level) is this problem;
//! drop the rule when it is fixed.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::buffer::{BooleanBuffer, MutableBuffer};
use datafusion::arrow::compute::{FilterBuilder, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::util::bit_util;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{ScalarValue, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr,
    Literal, NegativeExpr, NotExpr, TryCastExpr,
};
use datafusion::physical_expr::utils::{collect_columns, conjunction, split_conjunction};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

use super::decimal_arith::DecimalArithExpr;

/// At or below this share of surviving rows, a condition is evaluated on the survivors.
/// Above it, evaluating on every row and intersecting bitmaps is cheaper than copying
/// the rows out (DataFusion's own threshold).
const SURVIVORS_AT_MOST: f64 = 0.2;

/// The physical optimizer rule. Append it after DataFusion's and meshql's other
/// expression rules: it hides the conditions' conjunction from rules that look for one.
#[derive(Debug, Default)]
pub struct ConditionsOnSurvivors;

impl PhysicalOptimizerRule for ConditionsOnSurvivors {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::MeshqlOptions::of(config).conditions_on_survivors {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let conditions = split_conjunction(filter.predicate());
            if conditions.len() < 2 {
                return Ok(Transformed::no(node));
            }
            let conditions = conditions.into_iter().map(Arc::clone).collect();
            let predicate = SurvivorsAnd::try_new(conditions, filter.input().schema())?;
            let new = FilterExecBuilder::from(filter)
                .with_predicate(Arc::new(predicate))
                .build()?;
            // DataFusion reads facts off the conditions of an `AND` (a column equal to a
            // constant or to another column) and plans the operators above with them: a
            // window partitioned by a constant column is not sorted by it. Those facts
            // must not go, so such a filter keeps DataFusion's `AND`.
            if !super::same_properties(new.properties(), filter.properties()) {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(Arc::new(new) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "ConditionsOnSurvivors"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The conjunction of `conditions` as a filter predicate: true where every condition is
/// true, false elsewhere (NULL included). Prints as the `AND` it replaces.
#[derive(Debug, Clone)]
pub(super) struct SurvivorsAnd {
    conditions: Vec<Condition>,
    /// The input schema, to rebuild conditions in `with_new_children`.
    input: SchemaRef,
    /// The `AND` chain, for printing.
    display: Arc<dyn PhysicalExpr>,
}

/// One condition, and how to evaluate it on the survivors alone.
#[derive(Debug, Clone)]
struct Condition {
    expr: Arc<dyn PhysicalExpr>,
    /// The input columns it reads, and `expr` rewritten to read them as columns
    /// `0..n` of a batch with `schema`. When the expression may hold column indices
    /// outside its children (an operator this rule does not know), every column.
    columns: Vec<usize>,
    narrow: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
}

impl Condition {
    fn try_new(expr: Arc<dyn PhysicalExpr>, input: &SchemaRef) -> Result<Self> {
        if !known(&expr) {
            return Ok(Condition {
                columns: (0..input.fields().len()).collect(),
                narrow: Arc::clone(&expr),
                schema: Arc::clone(input),
                expr,
            });
        }
        let mut columns: Vec<usize> = collect_columns(&expr).iter().map(|c| c.index()).collect();
        // By index: two `Column`s may name one input column differently.
        columns.sort_unstable();
        columns.dedup();
        // Nullable, as DataFusion's own `AND` does not check the batch it filters.
        let fields: Vec<_> = columns
            .iter()
            .map(|&i| input.field(i).clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let narrow = Arc::clone(&expr)
            .transform_up(|e| {
                let Some(c) = e.downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                let Ok(at) = columns.binary_search(&c.index()) else {
                    return internal_err!("column {c} not collected");
                };
                Ok(Transformed::yes(Arc::new(Column::new(c.name(), at)) as _))
            })
            .data()?;
        Ok(Condition {
            expr,
            columns,
            narrow,
            schema,
        })
    }

    /// The rows of `batch` selected by `survivors` (`kept` of them) where this holds.
    fn on_survivors(
        &self,
        batch: &RecordBatch,
        survivors: &BooleanBuffer,
        kept: usize,
    ) -> Result<BooleanBuffer> {
        let mask = BooleanArray::new(survivors.clone(), None);
        let narrow = if self.columns.len() == batch.num_columns() {
            filter_record_batch(batch, &mask)?
        } else {
            let mut select = FilterBuilder::new(&mask);
            if self.columns.len() > 1 {
                select = select.optimize();
            }
            let select = select.build();
            let columns = self
                .columns
                .iter()
                .map(|&i| select.filter(batch.column(i)))
                .collect::<Result<Vec<_>, _>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(kept));
            RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?
        };
        let holds = truth(self.narrow.evaluate(&narrow)?, kept)?;
        Ok(scatter(survivors, &holds))
    }
}

/// Expressions whose only column references are `Column` children, so they can be
/// rewritten to read a narrower batch.
fn known(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let e = expr.as_ref();
    let this = e.downcast_ref::<Column>().is_some()
        || e.downcast_ref::<Literal>().is_some()
        || e.downcast_ref::<BinaryExpr>().is_some()
        || e.downcast_ref::<DecimalArithExpr>().is_some()
        || e.downcast_ref::<InListExpr>().is_some()
        || e.downcast_ref::<LikeExpr>().is_some()
        || e.downcast_ref::<IsNullExpr>().is_some()
        || e.downcast_ref::<IsNotNullExpr>().is_some()
        || e.downcast_ref::<NotExpr>().is_some()
        || e.downcast_ref::<NegativeExpr>().is_some()
        || e.downcast_ref::<CastExpr>().is_some()
        || e.downcast_ref::<TryCastExpr>().is_some()
        || e.downcast_ref::<CaseExpr>().is_some()
        || e.downcast_ref::<ScalarFunctionExpr>().is_some();
    this && expr.children().into_iter().all(known)
}

/// Where a condition's result is true (NULL counts as false), as `len` bits.
fn truth(value: ColumnarValue, len: usize) -> Result<BooleanBuffer> {
    match value {
        ColumnarValue::Array(array) => {
            let Some(array) = array.as_boolean_opt() else {
                return internal_err!("a filter condition returned {}", array.data_type());
            };
            Ok(match array.nulls() {
                Some(nulls) => array.values() & nulls.inner(),
                None => array.values().clone(),
            })
        }
        ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => Ok(BooleanBuffer::new_set(len)),
        ColumnarValue::Scalar(ScalarValue::Boolean(_) | ScalarValue::Null) => {
            Ok(BooleanBuffer::new_unset(len))
        }
        ColumnarValue::Scalar(other) => {
            internal_err!("a filter condition returned {}", other.data_type())
        }
    }
}

/// The rows of `survivors` whose entry in `holds` (one per survivor, in order) is set.
fn scatter(survivors: &BooleanBuffer, holds: &BooleanBuffer) -> BooleanBuffer {
    let len = survivors.len();
    let mut bits = MutableBuffer::from_len_zeroed(bit_util::ceil(len, 8));
    let out = bits.as_slice_mut();
    for (row, keep) in survivors.set_indices().zip(holds.iter()) {
        if keep {
            bit_util::set_bit(out, row);
        }
    }
    BooleanBuffer::new(bits.into(), 0, len)
}

impl SurvivorsAnd {
    pub(super) fn try_new(
        conditions: Vec<Arc<dyn PhysicalExpr>>,
        input: SchemaRef,
    ) -> Result<Self> {
        let display = conjunction(conditions.iter().cloned());
        let conditions = conditions
            .into_iter()
            .map(|c| Condition::try_new(c, &input))
            .collect::<Result<_>>()?;
        Ok(SurvivorsAnd {
            conditions,
            input,
            display,
        })
    }
}

impl PhysicalExpr for SurvivorsAnd {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let rows = batch.num_rows();
        let mut survivors: Option<BooleanBuffer> = None;
        for condition in &self.conditions {
            survivors = Some(match survivors {
                None => truth(condition.expr.evaluate(batch)?, rows)?,
                Some(survivors) => {
                    let kept = survivors.count_set_bits();
                    if kept == 0 {
                        return Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
                            survivors, None,
                        ))));
                    }
                    if kept as f64 <= SURVIVORS_AT_MOST * rows as f64 {
                        condition.on_survivors(batch, &survivors, kept)?
                    } else {
                        &survivors & &truth(condition.expr.evaluate(batch)?, rows)?
                    }
                }
            });
        }
        let survivors = survivors.unwrap_or_else(|| BooleanBuffer::new_set(rows));
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            survivors, None,
        ))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.conditions.iter().map(|c| &c.expr).collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(SurvivorsAnd::try_new(
            children,
            Arc::clone(&self.input),
        )?))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display.fmt_sql(f)
    }
}

impl fmt::Display for SurvivorsAnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display.fmt(f)
    }
}

impl PartialEq for SurvivorsAnd {
    fn eq(&self, other: &Self) -> bool {
        self.conditions.len() == other.conditions.len()
            && self
                .conditions
                .iter()
                .zip(&other.conditions)
                .all(|(a, b)| a.expr.eq(&b.expr))
    }
}

impl Eq for SurvivorsAnd {}

impl Hash for SurvivorsAnd {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for c in &self.conditions {
            c.expr.hash(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, Date32Array, Int64Array, StringViewArray};
    use datafusion::arrow::compute::prep_null_mask_filter;
    use datafusion::arrow::datatypes::Field;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{
        DynamicFilterPhysicalExpr, binary, col, is_not_null, like, lit,
    };
    use datafusion::physical_plan::ExecutionPlanProperties;
    use datafusion::physical_plan::empty::EmptyExec;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("mode", DataType::Utf8View, true),
            Field::new("day", DataType::Date32, false),
            Field::new("m", DataType::Int64, false),
        ]))
    }

    /// 10,000 rows: `n` 0..99 with every 7th NULL, `mode` one of five words with every
    /// 11th NULL, `day` 0..364, `m` 0..99; a fixed pseudo-random sequence.
    fn batch() -> RecordBatch {
        let mut seed = 42u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let words = ["MAIL", "SHIP", "AIR", "RAIL", "TRUCK"];
        let (mut n, mut mode, mut day, mut m) = (vec![], vec![], vec![], vec![]);
        for i in 0..10_000 {
            n.push((i % 7 != 0).then(|| (next() % 100) as i64));
            mode.push((i % 11 != 0).then(|| words[(next() % 5) as usize]));
            day.push((next() % 365) as i32);
            m.push((next() % 100) as i64);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(n)),
            Arc::new(StringViewArray::from(mode)),
            Arc::new(Date32Array::from(day)),
            Arc::new(Int64Array::from(m)),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    fn c(name: &str) -> Arc<dyn PhysicalExpr> {
        col(name, &schema()).unwrap()
    }

    fn word(w: &str) -> Arc<dyn PhysicalExpr> {
        lit(ScalarValue::Utf8View(Some(w.to_string())))
    }

    fn cmp(
        l: Arc<dyn PhysicalExpr>,
        op: Operator,
        r: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        binary(l, op, r, &schema()).unwrap()
    }

    /// What a filter keeps with DataFusion's `AND` chain, and with [`SurvivorsAnd`].
    fn both(conditions: Vec<Arc<dyn PhysicalExpr>>) -> (BooleanArray, BooleanArray) {
        let batch = batch();
        let chain = conjunction(conditions.iter().cloned());
        let expected = chain
            .evaluate(&batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        let expected = prep_null_mask_filter(expected.as_boolean());
        let ours = SurvivorsAnd::try_new(conditions, schema()).unwrap();
        let got = ours
            .evaluate(&batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        (expected, got.as_boolean().clone())
    }

    #[test]
    fn keeps_what_the_and_chain_keeps() {
        let cases: Vec<Vec<Arc<dyn PhysicalExpr>>> = vec![
            // Few survive the first condition: the rest run on the survivors.
            vec![
                cmp(c("day"), Operator::Lt, lit(ScalarValue::Date32(Some(30)))),
                cmp(c("n"), Operator::GtEq, lit(50i64)),
                like(false, false, c("mode"), word("%AI%"), &schema()).unwrap(),
            ],
            // Many survive: the rest run on every row, NULLs drop rows.
            vec![
                cmp(c("n"), Operator::Gt, lit(5i64)),
                cmp(c("mode"), Operator::NotEq, word("AIR")),
                cmp(
                    c("day"),
                    Operator::GtEq,
                    lit(ScalarValue::Date32(Some(100))),
                ),
                is_not_null(c("n")).unwrap(),
            ],
            // Nothing survives the second condition.
            vec![
                cmp(c("day"), Operator::Lt, lit(ScalarValue::Date32(Some(10)))),
                cmp(c("n"), Operator::Gt, lit(1000i64)),
                cmp(c("mode"), Operator::Eq, word("MAIL")),
            ],
            // A literal condition, two columns compared, a NULL test.
            vec![
                lit(true),
                cmp(c("n"), Operator::Lt, lit(3i64)),
                cmp(c("n"), Operator::Lt, c("m")),
                is_not_null(c("mode")).unwrap(),
            ],
        ];
        for conditions in cases {
            let shown = conjunction(conditions.iter().cloned()).to_string();
            let (expected, got) = both(conditions);
            assert_eq!(got.null_count(), 0, "{shown}");
            assert_eq!(expected, got, "{shown}");
        }
    }

    #[test]
    fn survivors_are_selected_where_few_are_left() {
        // `day < 30` keeps about 8% of rows, so `n >= 50` runs on the survivors.
        let batch = batch();
        let first = cmp(c("day"), Operator::Lt, lit(ScalarValue::Date32(Some(30))));
        let kept = truth(first.evaluate(&batch).unwrap(), batch.num_rows()).unwrap();
        assert!(kept.count_set_bits() * 5 < batch.num_rows());
        let second =
            Condition::try_new(cmp(c("n"), Operator::GtEq, lit(50i64)), &schema()).unwrap();
        assert_eq!(second.columns, vec![0]);
        assert_eq!(second.narrow.to_string(), "n@0 >= 50");
        let on_survivors = second
            .on_survivors(&batch, &kept, kept.count_set_bits())
            .unwrap();
        let everywhere =
            &kept & &truth(second.expr.evaluate(&batch).unwrap(), batch.num_rows()).unwrap();
        assert_eq!(on_survivors, everywhere);
        assert!(on_survivors.count_set_bits() > 0);
    }

    #[test]
    fn unknown_expressions_read_the_whole_batch() {
        // A join's dynamic filter may be updated while the query runs: it is evaluated as
        // it is, on every column of the survivors.
        let inner = cmp(c("n"), Operator::Lt, lit(10i64));
        let dynamic: Arc<dyn PhysicalExpr> =
            Arc::new(DynamicFilterPhysicalExpr::new(vec![c("n")], inner));
        let condition = Condition::try_new(Arc::clone(&dynamic), &schema()).unwrap();
        assert_eq!(condition.columns, vec![0, 1, 2, 3]);
        let (expected, got) = both(vec![
            cmp(c("day"), Operator::Lt, lit(ScalarValue::Date32(Some(30)))),
            dynamic,
        ]);
        assert_eq!(expected, got);
    }

    #[test]
    fn the_rule_replaces_filters_of_two_conditions_or_more_and_prints_the_same() {
        let conditions = [
            cmp(c("day"), Operator::Lt, lit(ScalarValue::Date32(Some(30)))),
            cmp(c("n"), Operator::GtEq, lit(50i64)),
        ];
        let predicate = conjunction(conditions.iter().cloned());
        let shown = predicate.to_string();
        let input = Arc::new(EmptyExec::new(schema()));
        let filter = Arc::new(FilterExec::try_new(predicate, Arc::clone(&input) as _).unwrap());
        let plan = ConditionsOnSurvivors
            .optimize(filter, &ConfigOptions::default())
            .unwrap();
        let predicate = plan.downcast_ref::<FilterExec>().unwrap().predicate();
        assert!(predicate.downcast_ref::<SurvivorsAnd>().is_some());
        assert_eq!(predicate.to_string(), shown);

        let single = Arc::new(FilterExec::try_new(Arc::clone(&conditions[0]), input).unwrap());
        let plan = ConditionsOnSurvivors
            .optimize(single, &ConfigOptions::default())
            .unwrap();
        let predicate = plan.downcast_ref::<FilterExec>().unwrap().predicate();
        assert!(predicate.downcast_ref::<BinaryExpr>().is_some());
    }

    #[test]
    fn filters_that_make_a_column_constant_keep_their_and() {
        // `n = 5` makes `n` constant below: DataFusion may leave a window partitioned by
        // `n` unsorted on it, so the filter must keep telling it so.
        let predicate = conjunction([
            cmp(c("n"), Operator::Eq, lit(5i64)),
            cmp(c("m"), Operator::Gt, lit(0i64)),
        ]);
        let input = Arc::new(EmptyExec::new(schema()));
        let filter: Arc<dyn ExecutionPlan> =
            Arc::new(FilterExec::try_new(predicate, input).unwrap());
        let constants = |p: &Arc<dyn ExecutionPlan>| p.equivalence_properties().constants().len();
        let before = constants(&filter);
        assert!(before >= 1);
        let plan = ConditionsOnSurvivors
            .optimize(Arc::clone(&filter), &ConfigOptions::default())
            .unwrap();
        assert_eq!(constants(&plan), before);
        let predicate = plan.downcast_ref::<FilterExec>().unwrap().predicate();
        assert!(predicate.downcast_ref::<BinaryExpr>().is_some());
    }
}
