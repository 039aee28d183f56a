//! What a remote SQL source can run. A subplan is sent to a source only if every node and
//! expression in it means the same there as in DataFusion; anything else stays local.
//! The unparser would render many DataFusion-only functions without complaint, and the
//! source would then fail (or worse, answer differently), so this is an allow-list.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, Operator};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{DefaultDialect, Dialect, PostgreSqlDialect};
use std::sync::Arc;

/// The SQL a remote source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    /// PostgreSQL: only functions and casts with the same meaning are pushed.
    Postgres,
    /// DataFusion-based Flight SQL servers (meshql, ROAPI, ...): everything the unparser renders.
    DataFusion,
}

/// Scalar functions PostgreSQL has under the same name, arguments and result.
const POSTGRES_SCALARS: &[&str] = &[
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "sqrt",
    "exp",
    "ln",
    "power",
    "lower",
    "upper",
    "btrim",
    "ltrim",
    "rtrim",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "substr",
    "left",
    "right",
    "replace",
    "concat",
    "concat_ws",
    "coalesce",
    "nullif",
    "starts_with",
    "strpos",
    "lpad",
    "rpad",
    "reverse",
    "repeat",
    "md5",
    "date_trunc",
    "date_part",
];

/// Aggregates PostgreSQL computes the same way.
const POSTGRES_AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "bool_and",
    "bool_or",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "var_samp",
    "var_pop",
];

impl SqlDialect {
    pub fn unparser_dialect(self) -> Arc<dyn Dialect> {
        match self {
            SqlDialect::Postgres => Arc::new(PostgreSqlDialect {}),
            SqlDialect::DataFusion => Arc::new(DefaultDialect {}),
        }
    }

    /// True if `expr` can be evaluated by the source with DataFusion's meaning.
    pub fn can_run(self, expr: &Expr) -> bool {
        let mut ok = true;
        let _ = expr.apply(|e| {
            if !self.node_ok(e) {
                ok = false;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        ok && Unparser::new(self.unparser_dialect().as_ref())
            .expr_to_sql(expr)
            .is_ok()
    }

    fn node_ok(self, e: &Expr) -> bool {
        let postgres = self == SqlDialect::Postgres;
        match e {
            Expr::Column(_) | Expr::Alias(_) | Expr::Not(_) | Expr::Negative(_) => true,
            Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsNotUnknown(_)
            | Expr::Between(_)
            | Expr::Case(_)
            | Expr::InList(_)
            | Expr::Like(_) => true,
            Expr::Literal(value, _) => literal_ok(value),
            Expr::BinaryExpr(b) => !postgres || operator_ok(b.op),
            Expr::Cast(c) => !postgres || cast_target_ok(c.field.data_type()),
            // PostgreSQL has no TRY_CAST.
            Expr::TryCast(_) => !postgres,
            // The bounded `||` is meshql's own call; the physical planner gives sources
            // the operator back (`crate::bounded::unbound`) for whole subplans only.
            Expr::ScalarFunction(f) if crate::bounded::string_concat::is_string_concat(&f.func) => {
                false
            }
            Expr::ScalarFunction(f) => {
                !postgres || POSTGRES_SCALARS.contains(&f.func.name().to_ascii_lowercase().as_str())
            }
            Expr::AggregateFunction(a) => {
                a.params.order_by.is_empty()
                    && a.params.null_treatment.is_none()
                    && (!postgres
                        || POSTGRES_AGGREGATES
                            .contains(&a.func.name().to_ascii_lowercase().as_str()))
            }
            // Subqueries, windows, placeholders, outer references, lambdas, ...: local.
            _ => false,
        }
    }
}

fn literal_ok(value: &ScalarValue) -> bool {
    !matches!(
        value,
        ScalarValue::List(_)
            | ScalarValue::LargeList(_)
            | ScalarValue::FixedSizeList(_)
            | ScalarValue::ListView(_)
            | ScalarValue::LargeListView(_)
            | ScalarValue::Struct(_)
            | ScalarValue::Map(_)
            | ScalarValue::Union(..)
            | ScalarValue::Dictionary(..)
            | ScalarValue::Binary(_)
            | ScalarValue::BinaryView(_)
            | ScalarValue::LargeBinary(_)
            | ScalarValue::FixedSizeBinary(..)
    )
}

fn operator_ok(op: Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        Eq | NotEq
            | Lt
            | LtEq
            | Gt
            | GtEq
            | Plus
            | Minus
            | Multiply
            | Divide
            | Modulo
            | And
            | Or
            | IsDistinctFrom
            | IsNotDistinctFrom
            | StringConcat
            | RegexMatch
            | RegexIMatch
            | RegexNotMatch
            | RegexNotIMatch
            | LikeMatch
            | ILikeMatch
            | NotLikeMatch
            | NotILikeMatch
    )
}

fn cast_target_ok(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Timestamp(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::functions::expr_fn::{lower, to_hex};
    use datafusion::prelude::{col, lit};

    #[test]
    fn postgres_refuses_functions_it_does_not_share() {
        let d = SqlDialect::Postgres;
        assert!(d.can_run(&col("a").gt(lit(1)).and(lower(col("b")).eq(lit("x")))));
        assert!(!d.can_run(&to_hex(col("a")).eq(lit("ff"))));
        assert!(SqlDialect::DataFusion.can_run(&to_hex(col("a")).eq(lit("ff"))));
        let try_cast = Expr::TryCast(datafusion::logical_expr::TryCast::new(
            Box::new(col("a")),
            DataType::Int64,
        ));
        assert!(!d.can_run(&try_cast));
    }
}
