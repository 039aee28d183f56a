//! Decimal `+`, `-` and `*` without a per-row overflow check where none can overflow.
//!
//! Arrow checks each decimal result for i128 overflow one value at a time: a branch
//! and a `Result` per row keep the loop from vectorizing, and the operands are full
//! 128-bit multiplications. In TPC-H Q1, `l_extendedprice * (1 - l_discount) *
//! (1 + l_tax)` takes a large share of the CPU (figures: docs/benchmarks/log.md, entry
//! #2026-11-22-decimal-arithmetic-without-per-row-overflow-checks-kept). When every
//! operand of a batch fits in an i64 (decimals of precision 18 or less, which is how
//! Parquet stores most, and the results of one operation on those), no result can
//! overflow an i128, so the check never fires: [`DecimalArithExpr`] computes with one
//! widening 64x64 multiplication and wrapping adds instead, and uses Arrow's checked
//! kernel (same results, same errors) for any batch that does not fit.
//!
//! The rule runs after DataFusion's: its rules look for `BinaryExpr`, which this
//! replaces in projections, filters and aggregate arguments only, and scans keep their
//! predicates for pruning.
//!
//! Upstream: no DataFusion or arrow-rs issue proposes skipping the check; Decimal64
//! support (apache/datafusion#17759) would make much of it moot. Worth filing upstream
//! before adding to this rule.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Decimal128Array, PrimitiveArray};
use datafusion::arrow::compute::kernels::numeric::{add, mul, sub};
use datafusion::arrow::compute::{binary, unary};
use datafusion::arrow::datatypes::{DECIMAL128_MAX_PRECISION, DataType, Decimal128Type, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr_common::datum::apply;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use super::rewrite_plan_expressions;

/// The physical optimizer rule. Append it after DataFusion's.
#[derive(Debug, Default)]
pub struct DecimalArithmetic;

impl PhysicalOptimizerRule for DecimalArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::MeshqlOptions::of(config).decimal_arithmetic {
            return Ok(plan);
        }
        rewrite_plan_expressions(plan, rewrite_expr)
    }

    fn name(&self) -> &str {
        "DecimalArithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expr` with each decimal `+`, `-` and `*` a [`DecimalArithExpr`].
fn rewrite_expr(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        if !matches!(b.op(), Operator::Plus | Operator::Minus | Operator::Multiply) {
            return Ok(Transformed::no(e));
        }
        let decimal = |side: &Arc<dyn PhysicalExpr>| {
            matches!(side.data_type(schema), Ok(DataType::Decimal128(_, s)) if s >= 0)
        };
        if !(decimal(b.left()) && decimal(b.right())) {
            return Ok(Transformed::no(e));
        }
        let wrapped: Arc<dyn PhysicalExpr> = Arc::new(DecimalArithExpr { binary: b.clone() });
        Ok(Transformed::yes(wrapped))
    })
}

/// A decimal `BinaryExpr` (`+`, `-`, `*`) that skips the overflow check where the
/// operands cannot overflow. It prints, types and analyses as the expression it wraps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct DecimalArithExpr {
    binary: BinaryExpr,
}

impl fmt::Display for DecimalArithExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.binary.fmt(f)
    }
}

impl PhysicalExpr for DecimalArithExpr {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.binary.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.binary.nullable(input_schema)
    }

    fn evaluate(&self, batch: &datafusion::arrow::array::RecordBatch) -> Result<ColumnarValue> {
        let lhs = self.binary.left().evaluate(batch)?;
        let rhs = self.binary.right().evaluate(batch)?;
        let op = *self.binary.op();
        if let Some(array) = unchecked(op, &lhs, &rhs)? {
            return Ok(ColumnarValue::Array(array));
        }
        // Arrow's kernels check decimals whether or not they wrap integers.
        match op {
            Operator::Plus => apply(&lhs, &rhs, add),
            Operator::Minus => apply(&lhs, &rhs, sub),
            _ => apply(&lhs, &rhs, mul),
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![self.binary.left(), self.binary.right()]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [left, right]: [Arc<dyn PhysicalExpr>; 2] = children
            .try_into()
            .map_err(|_| datafusion::error::DataFusionError::Internal("two children".into()))?;
        Ok(Arc::new(DecimalArithExpr {
            binary: BinaryExpr::new(left, *self.binary.op(), right),
        }))
    }

    fn evaluate_bounds(
        &self,
        children: &[&datafusion::logical_expr::interval_arithmetic::Interval],
    ) -> Result<datafusion::logical_expr::interval_arithmetic::Interval> {
        self.binary.evaluate_bounds(children)
    }

    fn get_properties(
        &self,
        children: &[datafusion::logical_expr::sort_properties::ExprProperties],
    ) -> Result<datafusion::logical_expr::sort_properties::ExprProperties> {
        self.binary.get_properties(children)
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.binary.fmt_sql(f)
    }
}

/// One side of the operation: a decimal array, or one value for every row.
enum Operand<'a> {
    Array(&'a Decimal128Array),
    Value(i128),
}

impl<'a> Operand<'a> {
    /// None for what the fast path leaves to Arrow: a null scalar, another type.
    fn of(value: &'a ColumnarValue) -> Option<Self> {
        match value {
            ColumnarValue::Array(a) => a.as_primitive_opt::<Decimal128Type>().map(Operand::Array),
            ColumnarValue::Scalar(ScalarValue::Decimal128(Some(v), _, _)) => {
                Some(Operand::Value(*v))
            }
            ColumnarValue::Scalar(_) => None,
        }
    }

    /// Every value (null slots too) fits in an i64. One branch-free pass.
    fn fits_i64(&self) -> bool {
        match self {
            Operand::Array(a) => a
                .values()
                .iter()
                .fold(true, |fits, v| fits & (*v as i64 as i128 == *v)),
            Operand::Value(v) => *v as i64 as i128 == *v,
        }
    }
}

/// `a * b` for values known to fit in an i64: one widening multiplication, exact.
#[inline(always)]
fn mul64(a: i128, b: i128) -> i128 {
    (a as i64 as i128) * (b as i64 as i128)
}

/// The result of `lhs op rhs` computed without overflow checks, or None where it may
/// overflow (or is a case left to Arrow). Precision and scale follow Arrow's rules
/// (`arrow_arith::numeric::decimal_op`), so the result is the one Arrow would return.
fn unchecked(op: Operator, lhs: &ColumnarValue, rhs: &ColumnarValue) -> Result<Option<ArrayRef>> {
    let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) =
        (lhs.data_type(), rhs.data_type())
    else {
        return Ok(None);
    };
    if s1 < 0 || s2 < 0 {
        return Ok(None);
    }
    let (Some(l), Some(r)) = (Operand::of(lhs), Operand::of(rhs)) else {
        return Ok(None);
    };
    if matches!((&l, &r), (Operand::Value(_), Operand::Value(_))) {
        return Ok(None);
    }
    // With both sides within an i64, `l * r` is below 2^126, and `l * 10^a + r * 10^b`
    // (a, b <= 18) below 2^124: neither can leave an i128.
    if !(l.fits_i64() && r.fits_i64()) {
        return Ok(None);
    }
    let (array, precision, scale): (Decimal128Array, u8, i8) = match op {
        Operator::Plus | Operator::Minus => {
            let scale = s1.max(s2);
            let precision = (scale.saturating_add((p1 as i8 - s1).max(p2 as i8 - s2)) as u8)
                .saturating_add(1)
                .min(DECIMAL128_MAX_PRECISION);
            let (Some(lm), Some(rm)) = (pow10(scale - s1), pow10(scale - s2)) else {
                return Ok(None);
            };
            // Subtracting is adding the negated right side (never i128::MIN here).
            let neg = op == Operator::Minus;
            let array = match (l, r) {
                (Operand::Array(l), Operand::Array(r)) if lm == 1 && rm == 1 && neg => {
                    binary(l, r, |a, b| a.wrapping_sub(b))?
                }
                (Operand::Array(l), Operand::Array(r)) if lm == 1 && rm == 1 => {
                    binary(l, r, |a, b| a.wrapping_add(b))?
                }
                (Operand::Array(l), Operand::Array(r)) => {
                    let rm = if neg { -rm } else { rm };
                    binary(l, r, |a, b| mul64(a, lm).wrapping_add(mul64(b, rm)))?
                }
                (Operand::Value(a), Operand::Array(r)) => {
                    let a = mul64(a, lm);
                    let rm = if neg { -rm } else { rm };
                    unary(r, |b| a.wrapping_add(mul64(b, rm)))
                }
                (Operand::Array(l), Operand::Value(b)) => {
                    let b = if neg { -mul64(b, rm) } else { mul64(b, rm) };
                    unary(l, |a| mul64(a, lm).wrapping_add(b))
                }
                (Operand::Value(_), Operand::Value(_)) => return Ok(None),
            };
            (array, precision, scale)
        }
        Operator::Multiply => {
            let scale = s1.saturating_add(s2);
            if scale > datafusion::arrow::datatypes::DECIMAL128_MAX_SCALE {
                return Ok(None); // Arrow's error
            }
            let precision = p1.saturating_add(p2 + 1).min(DECIMAL128_MAX_PRECISION);
            let array: PrimitiveArray<Decimal128Type> = match (l, r) {
                (Operand::Array(l), Operand::Array(r)) => binary(l, r, mul64)?,
                (Operand::Value(a), Operand::Array(r)) => unary(r, |b| mul64(a, b)),
                (Operand::Array(l), Operand::Value(b)) => unary(l, |a| mul64(a, b)),
                (Operand::Value(_), Operand::Value(_)) => return Ok(None),
            };
            (array, precision, scale)
        }
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(
        array.with_precision_and_scale(precision, scale)?,
    )))
}

/// 10^exp where it fits in an i64, for rescaling an i64 operand within an i128.
fn pow10(exp: i8) -> Option<i128> {
    (0..=18).contains(&exp).then(|| 10i128.pow(exp as u32))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{Column, Literal};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn decimals(values: Vec<Option<i128>>, p: u8, s: i8) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values)
                .with_precision_and_scale(p, s)
                .unwrap(),
        )
    }

    fn random(rng: &mut StdRng, n: usize, bound: i128, nulls: bool) -> Vec<Option<i128>> {
        (0..n)
            .map(|_| (!nulls || rng.random_bool(0.8)).then(|| rng.random_range(-bound..bound)))
            .collect()
    }

    /// The fast expression over `l` and `r` (literals or columns), and its batch. Its
    /// `binary` is the `BinaryExpr` DataFusion would evaluate instead.
    fn expr(op: Operator, l: &ColumnarValue, r: &ColumnarValue) -> (DecimalArithExpr, RecordBatch) {
        let side = |v: &ColumnarValue, name: &str, i: usize| -> Arc<dyn PhysicalExpr> {
            match v {
                ColumnarValue::Scalar(s) => Arc::new(Literal::new(s.clone())),
                ColumnarValue::Array(_) => Arc::new(Column::new(name, i)),
            }
        };
        let len = [l, r]
            .iter()
            .find_map(|v| match v {
                ColumnarValue::Array(a) => Some(a.len()),
                ColumnarValue::Scalar(_) => None,
            })
            .unwrap_or(1);
        let schema = Arc::new(Schema::new(vec![
            Field::new("l", l.data_type(), true),
            Field::new("r", r.data_type(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![l.to_array(len).unwrap(), r.to_array(len).unwrap()],
        )
        .unwrap();
        let e = DecimalArithExpr {
            binary: BinaryExpr::new(side(l, "l", 0), op, side(r, "r", 1)),
        };
        (e, batch)
    }

    fn same(got: Result<ColumnarValue>, want: Result<ColumnarValue>, what: &str) {
        match (got, want) {
            (Ok(g), Ok(w)) => {
                let (g, w) = (g.to_array(1).unwrap(), w.to_array(1).unwrap());
                assert_eq!(g.data_type(), w.data_type(), "{what}");
                assert_eq!(&g, &w, "{what}");
            }
            (Err(_), Err(_)) => {}
            (g, w) => panic!("{what}: got {g:?}, Arrow gives {w:?}"),
        }
    }

    const OPS: [Operator; 3] = [Operator::Plus, Operator::Minus, Operator::Multiply];

    #[test]
    fn results_and_types_are_arrows_for_every_operator_and_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        // (precision, scale) pairs as TPC-H Q1 makes them, and mixed scales.
        let types = [
            ((15, 2), (15, 2)),
            ((23, 2), (15, 2)),
            ((20, 0), (15, 2)),
            ((38, 4), (23, 2)),
            ((10, 5), (18, 0)),
        ];
        for ((p1, s1), (p2, s2)) in types {
            for nulls in [false, true] {
                let bound = 10i128.pow(u32::from(p1.min(18)));
                let l = decimals(random(&mut rng, 1000, bound, nulls), p1, s1);
                let r = decimals(
                    random(&mut rng, 1000, 10i128.pow(u32::from(p2.min(18))), nulls),
                    p2,
                    s2,
                );
                let scalar = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(100), p1, s1));
                let shapes = [
                    (
                        ColumnarValue::Array(Arc::clone(&l)),
                        ColumnarValue::Array(Arc::clone(&r)),
                    ),
                    (scalar.clone(), ColumnarValue::Array(Arc::clone(&r))),
                    (
                        ColumnarValue::Array(Arc::clone(&r)),
                        ColumnarValue::Scalar(ScalarValue::Decimal128(Some(-3), p1, s1)),
                    ),
                ];
                for op in OPS {
                    for (a, b) in &shapes {
                        let what = format!("{a:?} {op} {b:?}");
                        assert!(unchecked(op, a, b).unwrap().is_some(), "fast path: {what}");
                        let (e, batch) = expr(op, a, b);
                        same(e.evaluate(&batch), e.binary.evaluate(&batch), &what);
                    }
                }
            }
        }
    }

    #[test]
    fn operands_beyond_an_i64_take_arrows_checked_path() {
        // 10^30 does not fit in an i64: Arrow computes, and reports the overflow of
        // 10^30 * 10^30 as it always has.
        let big = decimals(vec![Some(10i128.pow(30)), Some(1), None], 38, 0);
        let small = decimals(vec![Some(2), Some(3), Some(4)], 38, 0);
        for (l, r) in [(&big, &small), (&small, &big), (&big, &big)] {
            let (l, r) = (
                ColumnarValue::Array(Arc::clone(l)),
                ColumnarValue::Array(Arc::clone(r)),
            );
            for op in OPS {
                assert!(unchecked(op, &l, &r).unwrap().is_none());
                let (e, batch) = expr(op, &l, &r);
                same(
                    e.evaluate(&batch),
                    e.binary.evaluate(&batch),
                    &format!("{op}"),
                );
            }
        }
        let (e, batch) = expr(
            Operator::Multiply,
            &ColumnarValue::Array(Arc::clone(&big)),
            &ColumnarValue::Array(big),
        );
        assert!(
            e.evaluate(&batch).is_err(),
            "10^30 * 10^30 overflows an i128"
        );
    }

    #[test]
    fn edges_of_an_i64_stay_exact() {
        let edge = decimals(
            vec![
                Some(i128::from(i64::MAX)),
                Some(i128::from(i64::MIN)),
                Some(0),
            ],
            38,
            0,
        );
        let scaled = decimals(
            vec![
                Some(i128::from(i64::MIN)),
                Some(i128::from(i64::MAX)),
                Some(-1),
            ],
            38,
            18,
        );
        let (l, r) = (ColumnarValue::Array(edge), ColumnarValue::Array(scaled));
        for op in OPS {
            for (a, b) in [(&l, &r), (&r, &l)] {
                let (e, batch) = expr(op, a, b);
                same(
                    e.evaluate(&batch),
                    e.binary.evaluate(&batch),
                    &format!("{a:?} {op} {b:?}"),
                );
            }
        }
    }
}
