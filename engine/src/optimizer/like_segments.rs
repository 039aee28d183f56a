//! `LIKE '%a%b%'` as substring searches instead of a regular expression.
//!
//! Arrow matches `LIKE` patterns of one `%`-delimited word (`'a%'`, `'%a'`, `'%a%'`)
//! with string comparisons, and every other pattern with a regular expression that it
//! compiles again for each batch. TPC-H Q13's `o_comment NOT LIKE '%special%requests%'`
//! spends a large share of the query's CPU in the regex engine, much of it building its
//! automaton batch after batch (figures:
//! docs/benchmarks/log.md#2026-11-22-like-ab-by-substring-search-kept). A pattern of
//! literal words between `%`s matches where the string starts with the first word, ends
//! with the last and holds the ones between in order: [`LikeSegmentsExpr`] checks that
//! with substring finders built once, per plan. Patterns with `_` or an escape (`\`), and
//! `ILIKE`, stay as they are.
//!
//! Upstream: arrow-rs's `like` handles only `x`, `x%`, `%x` and `%x%` without a regex
//! (apache/arrow-rs#2519); no issue asks for several `%`s. Worth filing in arrow-rs;
//! drop this rule when arrow's kernel matches such patterns without a regex.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ScalarValue, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{LikeExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use memchr::memmem::Finder;

use super::rewrite_plan_expressions;

/// The physical optimizer rule. Append it after DataFusion's.
#[derive(Debug, Default)]
pub struct LikeBySegments;

impl PhysicalOptimizerRule for LikeBySegments {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::MeshqlOptions::of(config).like_by_segments {
            return Ok(plan);
        }
        rewrite_plan_expressions(plan, rewrite_expr)
    }

    fn name(&self) -> &str {
        "LikeBySegments"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expr` with each `LIKE` Arrow would match by regular expression a [`LikeSegmentsExpr`].
fn rewrite_expr(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_up(|e| {
        let Some(like) = e.downcast_ref::<LikeExpr>() else {
            return Ok(Transformed::no(e));
        };
        if like.case_insensitive() {
            return Ok(Transformed::no(e));
        }
        let string = matches!(
            like.expr().data_type(schema)?,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        );
        let pattern = like
            .pattern()
            .downcast_ref::<Literal>()
            .and_then(|l| match l.value() {
                ScalarValue::Utf8(Some(p))
                | ScalarValue::Utf8View(Some(p))
                | ScalarValue::LargeUtf8(Some(p)) => Segments::parse(p),
                _ => None,
            });
        match pattern {
            Some(segments) if string => Ok(Transformed::yes(Arc::new(LikeSegmentsExpr {
                like: LikeExpr::new(
                    like.negated(),
                    false,
                    Arc::clone(like.expr()),
                    Arc::clone(like.pattern()),
                ),
                segments,
            }) as _)),
            _ => Ok(Transformed::no(e)),
        }
    })
}

/// A pattern `first%middle..%last` of literal words.
#[derive(Debug, Clone)]
struct Segments {
    first: Vec<u8>,
    middle: Vec<Finder<'static>>,
    last: Vec<u8>,
}

impl Segments {
    /// The words of `pattern`, if it is one Arrow would match with a regular expression
    /// and holds no `_` or escape.
    fn parse(pattern: &str) -> Option<Segments> {
        if pattern.contains(['_', '\\']) {
            return None;
        }
        let words: Vec<&str> = pattern.split('%').collect();
        // Arrow's own fast paths: no `%`, or one word with `%` on either side.
        let inner: Vec<&&str> = words.iter().filter(|w| !w.is_empty()).collect();
        if words.len() < 2 || inner.len() < 2 {
            return None;
        }
        let (first, rest) = words.split_first()?;
        let (last, middle) = rest.split_last()?;
        Some(Segments {
            first: first.as_bytes().to_vec(),
            middle: middle
                .iter()
                .filter(|w| !w.is_empty())
                .map(|w| Finder::new(w.as_bytes()).into_owned())
                .collect(),
            last: last.as_bytes().to_vec(),
        })
    }

    fn matches(&self, s: &[u8]) -> bool {
        // The emptiness tests skip a call to `bcmp` per row for a leading or trailing `%`.
        if !self.first.is_empty() && !s.starts_with(&self.first) {
            return false;
        }
        let mut at = self.first.len();
        for word in &self.middle {
            match word.find(&s[at..]) {
                Some(found) => at += found + word.needle().len(),
                None => return false,
            }
        }
        self.last.is_empty() || (s.len() - at >= self.last.len() && s.ends_with(&self.last))
    }
}

/// A `LIKE` whose pattern is literal words between `%`s. Prints and types as the
/// `LikeExpr` it replaces.
#[derive(Debug)]
pub(super) struct LikeSegmentsExpr {
    like: LikeExpr,
    segments: Segments,
}

impl LikeSegmentsExpr {
    fn evaluate_array(&self, array: &dyn Array) -> Result<BooleanArray> {
        let negated = self.like.negated();
        let test = |s: &str| self.segments.matches(s.as_bytes()) != negated;
        let values = match array.data_type() {
            DataType::Utf8View => {
                let a = array.as_string_view();
                BooleanBuffer::collect_bool(a.len(), |i| test(a.value(i)))
            }
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                BooleanBuffer::collect_bool(a.len(), |i| test(a.value(i)))
            }
            DataType::LargeUtf8 => {
                let a = array.as_string::<i64>();
                BooleanBuffer::collect_bool(a.len(), |i| test(a.value(i)))
            }
            other => return internal_err!("LIKE on {other}"),
        };
        Ok(BooleanArray::new(values, array.nulls().cloned()))
    }
}

impl PhysicalExpr for LikeSegmentsExpr {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.like.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.like.nullable(input_schema)
    }

    fn evaluate(&self, batch: &datafusion::arrow::array::RecordBatch) -> Result<ColumnarValue> {
        match self.like.expr().evaluate(batch)? {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(Arc::new(
                self.evaluate_array(array.as_ref())?,
            ))),
            ColumnarValue::Scalar(scalar) => {
                let result = self.evaluate_array(scalar.to_array()?.as_ref())?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &result, 0,
                )?))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![self.like.expr(), self.like.pattern()]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [expr, pattern]: [Arc<dyn PhysicalExpr>; 2] = children
            .try_into()
            .map_err(|_| datafusion::error::DataFusionError::Internal("two children".into()))?;
        let like = LikeExpr::new(
            self.like.negated(),
            self.like.case_insensitive(),
            expr,
            Arc::clone(&pattern),
        );
        if !pattern.eq(self.like.pattern()) {
            // Another pattern: let Arrow match it.
            return Ok(Arc::new(like));
        }
        Ok(Arc::new(LikeSegmentsExpr {
            like,
            segments: self.segments.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.like.fmt_sql(f)
    }
}

impl fmt::Display for LikeSegmentsExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.like.fmt(f)
    }
}

impl PartialEq for LikeSegmentsExpr {
    fn eq(&self, other: &Self) -> bool {
        self.like == other.like
    }
}

impl Eq for LikeSegmentsExpr {}

impl Hash for LikeSegmentsExpr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.like.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        ArrayRef, LargeStringArray, RecordBatch, StringArray, StringViewArray,
    };
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{col, like, lit};

    use super::*;

    const TEXTS: &[Option<&str>] = &[
        Some("carefully special requests haggle"),
        Some("special requests"),
        Some("specialrequests"),
        Some("requests are special"),
        Some("special request"),
        Some("spec ial requests"),
        Some("special special requests requests"),
        Some(""),
        None,
        Some("a"),
        Some("ab"),
        Some("aab"),
        Some("aXbXa"),
        Some("ba"),
        Some("Customer Complaints about the Customer"),
        Some("Complaints Customer"),
        Some("façade — über ✓ naïve"),
    ];

    const PATTERNS: &[&str] = &[
        "%special%requests%",
        "special%requests",
        "%special%requests",
        "special%requests%",
        "a%b",
        "a%a",
        "ab%b",
        "a%%b",
        "%a%b%a%",
        "%Customer%Complaints%",
        "fa%über%ve",
        "%ç%✓%",
    ];

    fn batch(data_type: &DataType) -> RecordBatch {
        let array: ArrayRef = match data_type {
            DataType::Utf8View => Arc::new(StringViewArray::from(TEXTS.to_vec())),
            DataType::LargeUtf8 => Arc::new(LargeStringArray::from(TEXTS.to_vec())),
            _ => Arc::new(StringArray::from(TEXTS.to_vec())),
        };
        let schema = Schema::new(vec![Field::new("s", data_type.clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    }

    fn pattern(p: &str, data_type: &DataType) -> Arc<dyn PhysicalExpr> {
        lit(match data_type {
            DataType::Utf8View => ScalarValue::Utf8View(Some(p.into())),
            DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(p.into())),
            _ => ScalarValue::Utf8(Some(p.into())),
        })
    }

    #[test]
    fn matches_what_arrow_matches() {
        for data_type in [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8] {
            let batch = batch(&data_type);
            let schema = batch.schema();
            for p in PATTERNS {
                for negated in [false, true] {
                    let arrow = like(
                        negated,
                        false,
                        col("s", &schema).unwrap(),
                        pattern(p, &data_type),
                        &schema,
                    )
                    .unwrap();
                    let ours = rewrite_expr(&arrow, &schema).unwrap();
                    assert!(ours.transformed, "{p} is not rewritten");
                    assert_eq!(ours.data.to_string(), arrow.to_string());
                    let expected = arrow
                        .evaluate(&batch)
                        .unwrap()
                        .into_array(batch.num_rows())
                        .unwrap();
                    let got = ours
                        .data
                        .evaluate(&batch)
                        .unwrap()
                        .into_array(batch.num_rows())
                        .unwrap();
                    assert_eq!(
                        got.as_boolean(),
                        expected.as_boolean(),
                        "{data_type} {negated} {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn patterns_arrow_matches_without_a_regex_stay() {
        let batch = batch(&DataType::Utf8);
        let schema = batch.schema();
        for p in [
            "special",
            "special%",
            "%special",
            "%special%",
            "%%",
            "%",
            "a_b%c",
            "a\\%b%c",
            "",
        ] {
            let e = like(
                false,
                false,
                col("s", &schema).unwrap(),
                pattern(p, &DataType::Utf8),
                &schema,
            )
            .unwrap();
            assert!(!rewrite_expr(&e, &schema).unwrap().transformed, "{p}");
        }
        let ilike = like(
            false,
            true,
            col("s", &schema).unwrap(),
            pattern("a%b", &DataType::Utf8),
            &schema,
        )
        .unwrap();
        assert!(!rewrite_expr(&ilike, &schema).unwrap().transformed);
    }
}
