//! A filter's cheap conditions are evaluated first.
//!
//! DataFusion evaluates `a AND b AND c` left to right, and once the rows still in play
//! are few (20% or less) it evaluates the rest on those rows only. So the order of the
//! conditions decides how much work the filter does, and DataFusion keeps the order
//! they were written in. TPC-H Q12 writes `l_shipmode IN ('MAIL', 'SHIP')`, two string
//! comparisons per row over all 6M rows, before the date ranges that keep 15%: with the
//! dates first the filter takes much less CPU (figures:
//! docs/benchmarks/log.md#2026-11-22-a-filters-cheap-conditions-first-kept). DuckDB
//! reorders too.
//!
//! Only conditions that cannot fail move: comparisons, `IN` lists, `LIKE`, `IS NULL`,
//! `NOT`, `AND` and `OR` over columns and literals. They go first, cheapest first (a
//! number or date against a literal, then two columns, then strings, then `LIKE`),
//! and every other condition keeps its place relative to the others, after them. A
//! condition that a former one guarded (`x <> 0 AND 10 / x > 1`) is still evaluated
//! on at most the rows it was before.
//!
//! Upstream: DataFusion 55 moves LIKE and regex conditions last
//! (apache/datafusion#22343) but keeps the rest in written order; adaptive ordering is
//! [apache/datafusion#22883](https://github.com/apache/datafusion/issues/22883). Drop
//! this rule when that orders by measured cost.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal, NotExpr,
};
use datafusion::physical_expr::utils::{conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

/// The physical optimizer rule.
#[derive(Debug, Default)]
pub struct CheapConditionsFirst;

impl PhysicalOptimizerRule for CheapConditionsFirst {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::MeshqlOptions::of(config).cheap_conditions_first {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(predicate) = reorder(filter.predicate(), &filter.input().schema()) else {
                return Ok(Transformed::no(node));
            };
            let filter = FilterExecBuilder::from(filter)
                .with_predicate(predicate)
                .build()?;
            Ok(Transformed::yes(Arc::new(filter) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "CheapConditionsFirst"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `predicate` with its cheap conditions first, or None if its order stays.
fn reorder(predicate: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<Arc<dyn PhysicalExpr>> {
    let conditions = split_conjunction(predicate);
    if conditions.len() < 2 {
        return None;
    }
    let mut keyed: Vec<(u32, usize, &Arc<dyn PhysicalExpr>)> = conditions
        .iter()
        .enumerate()
        // Conditions that may fail keep their order, after all the others.
        .map(|(i, c)| (cost(c, schema).unwrap_or(u32::MAX), i, *c))
        .collect();
    keyed.sort_by_key(|(cost, i, _)| (*cost, *i));
    if keyed.iter().enumerate().all(|(at, (_, i, _))| at == *i) {
        return None;
    }
    Some(conjunction(
        keyed.into_iter().map(|(_, _, c)| Arc::clone(c)),
    ))
}

/// What evaluating `e` costs per row, in units of comparing two numbers; None where
/// it may fail or is not known (arithmetic, casts, functions, subqueries).
fn cost(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<u32> {
    if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        let (l, r) = (b.left(), b.right());
        return match b.op() {
            Operator::And | Operator::Or => Some(cost(l, schema)?.saturating_add(cost(r, schema)?)),
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom => {
                let weight = operand(l, schema)?.max(operand(r, schema)?);
                // Two columns: twice the reads, and (unlike a literal) rarely selective.
                let columns = if is_column(l) && is_column(r) { 2 } else { 1 };
                Some(weight * columns)
            }
            _ => None,
        };
    }
    if let Some(like) = e.downcast_ref::<LikeExpr>() {
        operand(like.expr(), schema)?;
        operand(like.pattern(), schema)?;
        return Some(LIKE);
    }
    if let Some(in_list) = e.downcast_ref::<InListExpr>() {
        let weight = operand(in_list.expr(), schema)?;
        for item in in_list.list() {
            item.downcast_ref::<Literal>()?;
        }
        // A hash lookup per row, whatever the length of the list.
        return Some(weight * 2);
    }
    if let Some(not) = e.downcast_ref::<NotExpr>() {
        return cost(not.arg(), schema);
    }
    if let Some(is_null) = e.downcast_ref::<IsNullExpr>() {
        return is_column(is_null.arg()).then_some(1);
    }
    if let Some(is_not_null) = e.downcast_ref::<IsNotNullExpr>() {
        return is_column(is_not_null.arg()).then_some(1);
    }
    None
}

/// Comparing strings (`LIKE` scans them).
const STRING: u32 = 4;
const LIKE: u32 = 10;

fn is_column(e: &Arc<dyn PhysicalExpr>) -> bool {
    e.downcast_ref::<Column>().is_some()
}

/// The cost of comparing a column or literal of this type, or None for other operands.
fn operand(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Option<u32> {
    if !(is_column(e) || e.downcast_ref::<Literal>().is_some()) {
        return None;
    }
    match e.data_type(schema).ok()? {
        t if t.is_primitive() || t == DataType::Boolean => Some(1),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Some(STRING),
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => Some(STRING),
        DataType::FixedSizeBinary(_) => Some(STRING),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::ScalarValue;
    use datafusion::physical_expr::expressions::{binary, col, in_list, like, lit};
    use datafusion::physical_plan::empty::EmptyExec;

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("mode", DataType::Utf8View, false),
            Field::new("receipt", DataType::Date32, false),
            Field::new("commit", DataType::Date32, false),
            Field::new("n", DataType::Int64, false),
            Field::new("comment", DataType::Utf8, false),
        ])
    }

    fn cmp(
        l: Arc<dyn PhysicalExpr>,
        op: Operator,
        r: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        binary(l, op, r, &schema()).unwrap()
    }

    fn c(name: &str) -> Arc<dyn PhysicalExpr> {
        col(name, &schema()).unwrap()
    }

    fn optimized(predicate: Arc<dyn PhysicalExpr>) -> String {
        let input = Arc::new(EmptyExec::new(Arc::new(schema())));
        let filter = Arc::new(FilterExec::try_new(predicate, input).unwrap());
        let plan = CheapConditionsFirst
            .optimize(filter, &ConfigOptions::default())
            .unwrap();
        plan.downcast_ref::<FilterExec>()
            .unwrap()
            .predicate()
            .to_string()
    }

    fn date(days: i32) -> Arc<dyn PhysicalExpr> {
        lit(ScalarValue::Date32(Some(days)))
    }

    #[test]
    fn date_ranges_go_before_string_comparisons_as_in_tpch_q12() {
        let s = schema();
        let modes = in_list(c("mode"), vec![lit("MAIL"), lit("SHIP")], &false, &s).unwrap();
        let predicate = conjunction([
            modes,
            cmp(c("commit"), Operator::Lt, c("receipt")),
            cmp(c("receipt"), Operator::GtEq, date(8766)),
            cmp(c("receipt"), Operator::Lt, date(9131)),
        ]);
        assert_eq!(
            optimized(predicate),
            "receipt@1 >= 1994-01-01 AND receipt@1 < 1995-01-01 AND commit@2 < receipt@1 \
             AND mode@0 IN (SET) ([MAIL, SHIP])"
        );
    }

    #[test]
    fn conditions_that_may_fail_keep_their_order_after_the_others() {
        let s = schema();
        // `10 / n` fails where n = 0: it stays behind `n <> 0`, and the two
        // arithmetic conditions keep their relative order.
        let guard = cmp(c("n"), Operator::NotEq, lit(0i64));
        let divides = cmp(
            cmp(lit(10i64), Operator::Divide, c("n")),
            Operator::Gt,
            lit(1i64),
        );
        let adds = cmp(
            cmp(c("n"), Operator::Plus, lit(1i64)),
            Operator::Gt,
            lit(3i64),
        );
        let matches = like(false, false, c("comment"), lit("%x%"), &s).unwrap();
        let predicate = conjunction([matches, guard, divides, adds]);
        assert_eq!(
            optimized(predicate),
            "n@3 != 0 AND comment@4 LIKE %x% AND 10 / n@3 > 1 AND n@3 + 1 > 3"
        );
    }

    #[test]
    fn a_predicate_already_in_order_is_left_alone() {
        let predicate = conjunction([
            cmp(c("receipt"), Operator::GtEq, date(1)),
            cmp(c("mode"), Operator::Eq, lit("MAIL")),
        ]);
        assert!(reorder(&predicate, &schema()).is_none());
    }
}
