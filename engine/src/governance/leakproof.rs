//! Which user predicates may run below a row filter: the *leakproof* ones.
//!
//! A predicate that runs below a policy meets rows the user may not see. If it can fail
//! (raise an error, run out of memory, take data-dependent time in a way the user can
//! observe), whether the statement fails is one bit about those hidden rows, and a binary
//! search over comparisons reads hidden values in a few hundred statements (the
//! CockroachDB #146952 class). So a predicate goes below a policy only if it cannot fail
//! on any input. From first principles, that is:
//!
//! - column references (of a *plain* type: booleans, numbers, decimals, strings, binary,
//!   dates, times, timestamps, and dictionaries of those) and non-null-typed literals;
//! - `=`, `<>`, `<`, `<=`, `>`, `>=`, `IS [NOT] DISTINCT FROM` between two such values of
//!   the *same* type (Arrow's comparison kernels cannot fail on equal plain types; any
//!   type mismatch would fail, and only on a non-empty batch);
//! - lossless casts of a column (widening integers, integers to Float64, between string
//!   encodings), which DataFusion adds when it coerces a comparison; casts that can fail
//!   (`utf8_col = 5` casts the string) are not leakproof;
//! - `AND`, `OR`, `NOT`, `IS [NOT] NULL/TRUE/FALSE/UNKNOWN` over leakproof predicates;
//! - `BETWEEN` and `IN (...)` with literals of the value's type;
//! - `[NOT] LIKE` / `[NOT] ILIKE` of a string column with a literal pattern of at most
//!   [`MAX_LIKE_PATTERN`] bytes, without an escape character or a backslash, that Arrow's
//!   own kernel accepts: a pattern that Arrow turns into a regular expression can exceed
//!   the regex size limit (20,000 `_`), and it fails only when evaluated on rows. The
//!   pattern is tried once here, on the kernel that evaluates it, for both paths ILIKE
//!   takes (ASCII and not); a regular expression that compiles matches in linear time.
//!   Backslashes are left out because remote sources (PostgreSQL) treat them as escapes
//!   and reject some patterns Arrow accepts.
//!
//! Everything else (arithmetic, functions, casts that can fail, subqueries, CASE) stays
//! above the policy, where it only meets rows and values the user may see.

use datafusion::arrow::array::{Scalar, StringArray};
use datafusion::arrow::compute::kernels::comparison::{ilike, like, nilike, nlike};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator};

/// The longest LIKE pattern let below a policy. Longer ones are evaluated above it.
pub const MAX_LIKE_PATTERN: usize = 256;

/// True when `e` cannot fail or reveal anything but its boolean result, on any row.
pub fn leakproof(e: &Expr, schema: &Schema) -> bool {
    let leakproof = |e: &Expr| leakproof(e, schema);
    match e {
        Expr::Column(_) => value_type(e, schema) == Some(DataType::Boolean),
        Expr::Literal(v, _) => matches!(v, ScalarValue::Boolean(_)),
        Expr::BinaryExpr(b) => match b.op {
            Operator::And | Operator::Or => leakproof(&b.left) && leakproof(&b.right),
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom => {
                same_plain_type(&[b.left.as_ref(), b.right.as_ref()], schema)
            }
            _ => false,
        },
        Expr::Not(e) | Expr::IsTrue(e) | Expr::IsFalse(e) => leakproof(e),
        Expr::IsNotTrue(e) | Expr::IsNotFalse(e) | Expr::IsUnknown(e) | Expr::IsNotUnknown(e) => {
            leakproof(e)
        }
        Expr::IsNull(e) | Expr::IsNotNull(e) => value_type(e, schema).is_some() || leakproof(e),
        Expr::Between(b) => {
            is_literal(&b.low)
                && is_literal(&b.high)
                && same_plain_type(&[b.expr.as_ref(), b.low.as_ref(), b.high.as_ref()], schema)
        }
        Expr::InList(l) => {
            l.list.iter().all(is_literal)
                && same_plain_type(
                    &std::iter::once(l.expr.as_ref())
                        .chain(l.list.iter())
                        .collect::<Vec<_>>(),
                    schema,
                )
        }
        Expr::Like(l) => {
            let string_value = value_type(&l.expr, schema).is_some_and(|t| is_string(&t));
            let pattern = match l.pattern.as_ref() {
                Expr::Literal(
                    ScalarValue::Utf8(Some(p))
                    | ScalarValue::Utf8View(Some(p))
                    | ScalarValue::LargeUtf8(Some(p)),
                    _,
                ) => Some(p.as_str()),
                _ => None,
            };
            string_value
                && l.escape_char.is_none()
                && pattern.is_some_and(|p| like_cannot_fail(p, l.case_insensitive, l.negated))
        }
        _ => false,
    }
}

/// Arrow's kernel accepts `pattern` for any input (see the module doc).
fn like_cannot_fail(pattern: &str, case_insensitive: bool, negated: bool) -> bool {
    if pattern.len() > MAX_LIKE_PATTERN || pattern.contains('\\') {
        return false;
    }
    let right = Scalar::new(StringArray::from(vec![pattern]));
    // ILIKE compiles a regex for non-ASCII input and matches ASCII input without one.
    ["a", "é"].iter().all(|probe| {
        let left = StringArray::from(vec![*probe]);
        match (case_insensitive, negated) {
            (false, false) => like(&left, &right).is_ok(),
            (false, true) => nlike(&left, &right).is_ok(),
            (true, false) => ilike(&left, &right).is_ok(),
            (true, true) => nilike(&left, &right).is_ok(),
        }
    })
}

/// All of `values` are leaves (columns, literals, lossless casts of columns) of one plain
/// type. Arrow compares only equal types; anything else would fail at run time.
fn same_plain_type(values: &[&Expr], schema: &Schema) -> bool {
    let mut types = values.iter().map(|v| value_type(v, schema));
    let Some(Some(first)) = types.next() else {
        return false;
    };
    plain(&first) && types.all(|t| t.as_ref() == Some(&first))
}

/// The type of a leaf value: a column of `schema`, a literal, or a lossless cast of a
/// column. `None` for anything else (including casts that can fail).
fn value_type(e: &Expr, schema: &Schema) -> Option<DataType> {
    match e {
        Expr::Column(c) => schema
            .field_with_name(c.name())
            .ok()
            .map(|f| f.data_type().clone()),
        Expr::Literal(v, _) => Some(v.data_type()),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Column(_) => {
                let from = value_type(&c.expr, schema)?;
                lossless_cast(&from, c.field.data_type()).then(|| c.field.data_type().clone())
            }
            _ => None,
        },
        _ => None,
    }
}

fn is_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(..))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Types whose comparison kernels cannot fail on two values of the same type.
fn plain(t: &DataType) -> bool {
    use DataType::*;
    match t {
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16
        | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..)
        | Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView | FixedSizeBinary(_)
        | Date32 | Date64 | Time32(_) | Time64(_) | Timestamp(..) => true,
        Dictionary(_, value) => plain(value),
        _ => false,
    }
}

/// Casts that succeed for every value of `from`.
fn lossless_cast(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let rank = |t: &DataType| match t {
        Int8 => Some((true, 1)),
        Int16 => Some((true, 2)),
        Int32 => Some((true, 4)),
        Int64 => Some((true, 8)),
        UInt8 => Some((false, 1)),
        UInt16 => Some((false, 2)),
        UInt32 => Some((false, 4)),
        UInt64 => Some((false, 8)),
        _ => None,
    };
    match (rank(from), rank(to)) {
        // Wider of the same signedness, or unsigned into a strictly wider signed type.
        (Some((fs, fw)), Some((ts, tw))) => (fs == ts && tw >= fw) || (!fs && ts && tw > fw),
        _ => {
            from == to
                || (is_string(from) && is_string(to))
                || (matches!(
                    from,
                    Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32 | Float32
                ) && matches!(to, Float64))
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;
    use datafusion::logical_expr::{cast, col, lit};

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int32, true),
            Field::new("name", DataType::Utf8View, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
        ])
    }

    fn like_of(pattern: &str, case_insensitive: bool, negated: bool) -> Expr {
        Expr::Like(datafusion::logical_expr::expr::Like::new(
            negated,
            Box::new(col("name")),
            Box::new(lit(ScalarValue::Utf8View(Some(pattern.to_string())))),
            None,
            case_insensitive,
        ))
    }

    #[test]
    fn comparisons_of_equal_plain_types_are_leakproof() {
        let s = schema();
        assert!(leakproof(&col("id").eq(lit(5i64)), &s));
        assert!(leakproof(
            &cast(col("small"), DataType::Int64).lt(lit(5i64)),
            &s
        ));
        assert!(leakproof(&col("flag"), &s));
        assert!(leakproof(&col("tags").is_null(), &s));
        assert!(leakproof(
            &col("id").in_list(vec![lit(1i64), lit(2i64)], false),
            &s
        ));
        // Different types would fail in Arrow's kernel, and only on rows.
        assert!(!leakproof(&col("id").eq(lit(5i32)), &s));
        // A cast that can fail.
        assert!(!leakproof(
            &cast(col("name"), DataType::Int64).eq(lit(5i64)),
            &s
        ));
        // Nested types are compared by kernels that can fail.
        assert!(!leakproof(&col("tags").eq(col("tags")), &s));
        // Arithmetic can overflow or divide by zero.
        assert!(!leakproof(&(col("id") / lit(0i64)).eq(lit(1i64)), &s));
    }

    #[test]
    fn like_patterns_arrow_cannot_compile_are_not_leakproof() {
        let s = schema();
        for (ci, neg) in [(false, false), (false, true), (true, false), (true, true)] {
            assert!(leakproof(&like_of("%ab_c%", ci, neg), &s));
            // Over the bound, or a regex over Arrow's size limit.
            assert!(!leakproof(&like_of(&"_".repeat(20_000), ci, neg), &s));
            assert!(!leakproof(&like_of(&"_".repeat(257), ci, neg), &s));
            assert!(!leakproof(&like_of("a\\", ci, neg), &s));
        }
        // What the kernel would do with the huge pattern: fail, on rows only.
        let big = Scalar::new(StringArray::from(vec!["_".repeat(20_000)]));
        assert!(like(&StringArray::from(vec!["x"]), &big).is_err());
    }
}
