//! DataFusion's functions whose result size an argument sets (`repeat('x', 200000000)`),
//! or that grow with their inputs (`concat`: a chain of calls over a large value
//! multiplies it), registered in place of DataFusion's under the same names.

use std::sync::Arc;

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
};
use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

use super::size::{byte_lengths, counts, per_row, total_bytes};
use super::{MAX_CALL_BYTES, too_big};

/// How a function's result size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: len(s) * n.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: n characters, at most 4 bytes each.
    Pad,
    /// `array_repeat(v, n)`: n values.
    ArrayRepeat,
    /// `array_resize(a, n [, v])`: n values.
    ArrayResize,
    /// `replace(s, from, to)`: every `from` in `s` becomes `to`.
    Replace,
    /// `range(start, stop [, step])` and `generate_series`: the values between (integers,
    /// or dates and timestamps by an interval).
    Range,
    /// The inputs together, times a factor: `concat`, `array_concat`, `make_array`,
    /// `struct`, `overlay` (2: a chain of calls over a large value multiplies it),
    /// `encode` (hex doubles), `translate` (a one-byte character can become four),
    /// `to_char` (a format's fields print longer than they are written).
    Inputs(u8),
    /// `concat_ws(sep, a, ...)`: the inputs and the separator between each two.
    ConcatWs,
    /// `array_to_string(list, sep [, null])`: the values and the separator (and null
    /// text) once per element.
    Join,
    /// `array_replace(list, from, to [, n])` and its `_n` / `_all` forms: `to` once per
    /// element at most.
    ArrayReplace,
    /// `regexp_replace(s, pattern, to [, flags])`: at worst `to` between every character.
    RegexpReplace,
    /// `string_to_array(s, delimiter [, null])`: an element (its bytes and the offsets
    /// of a list of strings) per delimiter found, or per character when the delimiter
    /// is NULL.
    Split,
}

const WRAPPED: [(&str, Growth); 27] = [
    ("concat", Growth::Inputs(2)),
    ("concat_ws", Growth::ConcatWs),
    ("array_concat", Growth::Inputs(2)),
    ("array_append", Growth::Inputs(2)),
    ("array_prepend", Growth::Inputs(2)),
    ("array_union", Growth::Inputs(2)),
    ("make_array", Growth::Inputs(2)),
    ("struct", Growth::Inputs(2)),
    ("named_struct", Growth::Inputs(2)),
    ("overlay", Growth::Inputs(2)),
    ("encode", Growth::Inputs(2)),
    ("translate", Growth::Inputs(4)),
    ("to_char", Growth::Inputs(5)),
    ("array_to_string", Growth::Join),
    ("array_replace", Growth::ArrayReplace),
    ("array_replace_n", Growth::ArrayReplace),
    ("array_replace_all", Growth::ArrayReplace),
    ("string_to_array", Growth::Split),
    ("regexp_replace", Growth::RegexpReplace),
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("replace", Growth::Replace),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
];

/// Replace DataFusion's functions of [`WRAPPED`] in `registry`
/// with bounded ones; returns them by name.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<HashMap<String, Arc<ScalarUDF>>> {
    let mut registered = HashMap::new();
    for (name, growth) in WRAPPED {
        let Ok(inner) = registry.udf(name) else {
            continue;
        };
        let bounded = Bounded {
            inner: Arc::clone(inner.inner()).into(),
            growth,
        };
        let udf = Arc::new(ScalarUDF::new_from_impl(bounded));
        registry.register_udf(Arc::clone(&udf))?;
        registered.insert(name.to_string(), udf);
    }
    Ok(registered)
}

/// True when `udf` is one of the bounded functions (not DataFusion's own of that name).
pub fn is_bounded(udf: &ScalarUDF) -> bool {
    udf.inner().downcast_ref::<Bounded>().is_some()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    growth: Growth,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = super::rows_counted(&args);
        let bytes = estimate(self.growth, &args.args, rows)?;
        if bytes > MAX_CALL_BYTES as u128 {
            let what = format!("{}(...)", self.inner.name());
            return Err(too_big(&what, bytes, rows));
        }
        self.inner.invoke_with_args(args)
    }
}

/// The most bytes a call can produce, summed over its rows.
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u128> {
    let rows = rows.max(1);
    let lengths = |i: usize| {
        args.get(i)
            .map(|a| per_row(a, rows, byte_lengths))
            .transpose()
    };
    let numbers = |i: usize| args.get(i).map(|a| per_row(a, rows, counts)).transpose();
    Ok(match growth {
        Growth::Repeat => {
            let (Some(s), Some(n)) = (lengths(0)?, numbers(1)?) else {
                return Ok(0);
            };
            zip_sum(&s, &n, |len, n| len * n)
        }
        Growth::Pad => {
            let Some(n) = numbers(1)? else { return Ok(0) };
            n.iter().map(|n| n * 4).sum()
        }
        Growth::ArrayRepeat | Growth::ArrayResize => {
            // array_resize(a, n, v) fills with v; array_repeat(v, n) repeats v.
            let fill = match growth {
                Growth::ArrayResize => args.get(2).or(args.first()),
                _ => args.first(),
            };
            let (Some(v), Some(n)) = (fill, numbers(1)?) else {
                return Ok(0);
            };
            // A value's share of its array's memory, and at least a pointer's worth.
            let per_value = match v {
                ColumnarValue::Array(v) => v.get_array_memory_size() / v.len().max(1),
                ColumnarValue::Scalar(v) => v.to_array_of_size(1)?.get_array_memory_size(),
            };
            let per_value = per_value.max(8) as u128;
            n.iter().map(|n| n * per_value).sum()
        }
        Growth::Replace => {
            let (Some(s), Some(from), Some(to)) = (lengths(0)?, lengths(1)?, lengths(2)?) else {
                return Ok(0);
            };
            s.iter()
                .zip(from.iter().zip(&to))
                .map(|(s, (from, to))| s + (s / (*from).max(1) + 1) * to)
                .sum()
        }
        Growth::Inputs(factor) => {
            let mut total = 0u128;
            for a in args {
                total = total.saturating_add(total_bytes(a, rows)?);
            }
            total.saturating_mul(u128::from(factor))
        }
        Growth::ConcatWs => {
            let Some((sep, values)) = args.split_first() else {
                return Ok(0);
            };
            let mut total = total_bytes(sep, rows)?.saturating_mul(values.len() as u128);
            for a in values {
                total = total.saturating_add(total_bytes(a, rows)?);
            }
            total
        }
        Growth::Join => {
            let Some(list) = args.first() else {
                return Ok(0);
            };
            let mut per_element = 0u128;
            for a in &args[1..] {
                per_element += per_row(a, rows, byte_lengths)?
                    .into_iter()
                    .max()
                    .unwrap_or(0);
            }
            total_bytes(list, rows)?
                .saturating_add(elements(list, rows)?.saturating_mul(per_element))
        }
        Growth::ArrayReplace => {
            let (Some(list), Some(to)) = (args.first(), args.get(2)) else {
                return Ok(0);
            };
            let to = total_bytes(to, 1)?.max(8);
            total_bytes(list, rows)?.saturating_add(elements(list, rows)?.saturating_mul(to))
        }
        Growth::Split => {
            let (Some(s), Some(delimiter), Some(null)) = (
                lengths(0)?,
                lengths(1)?,
                args.get(1)
                    .map(|a| {
                        per_row(a, rows, |a| {
                            Ok((0..a.len()).map(|i| a.is_null(i)).collect())
                        })
                    })
                    .transpose()?,
            ) else {
                return Ok(0);
            };
            // An element costs its bytes, a list offset and a string offset (4 each).
            s.iter()
                .zip(delimiter.iter().zip(&null))
                .map(|(s, (d, null))| match (null, d) {
                    (true, _) => s * 9,
                    (false, 0) => s + 8,
                    (false, d) => s + (s / d + 1) * 8,
                })
                .sum()
        }
        Growth::RegexpReplace => {
            let (Some(s), Some(to)) = (lengths(0)?, lengths(2)?) else {
                return Ok(0);
            };
            zip_sum(&s, &to, |s, to| s + (s + 1) * to)
        }
        Growth::Range
            if args.len() == 3 && matches!(args[2].data_type(), DataType::Interval(_)) =>
        {
            temporal_range(&args[0], &args[1], &args[2], rows)?
        }
        Growth::Range => {
            let integers = args
                .iter()
                .all(|a| a.data_type().is_integer() || a.data_type() == DataType::Null);
            if !integers || args.is_empty() {
                return Ok(0);
            }
            let ints = |i: usize| -> Result<Option<Vec<Option<i64>>>> {
                args.get(i)
                    .map(|a| {
                        per_row(a, rows, |a| {
                            Ok(cast(a, &DataType::Int64)?
                                .as_primitive::<Int64Type>()
                                .iter()
                                .collect())
                        })
                    })
                    .transpose()
            };
            let (first, second, step) = (ints(0)?, ints(1)?, ints(2)?);
            let (start, stop) = match (first, second) {
                (Some(stop), None) => (vec![Some(0); stop.len()], stop),
                (Some(start), Some(stop)) => (start, stop),
                _ => return Ok(0),
            };
            let step = step.unwrap_or_else(|| vec![Some(1); start.len()]);
            start
                .iter()
                .zip(stop.iter().zip(&step))
                .map(|(a, (b, s))| match (a, b, s) {
                    (Some(a), Some(b), Some(s)) if *s != 0 => {
                        ((*b as i128 - *a as i128).unsigned_abs() / s.unsigned_abs() as u128 + 1)
                            * 8
                    }
                    _ => 0,
                })
                .sum()
        }
    })
}

/// Bytes of a range of dates or timestamps stepping by an interval: months count as 28
/// days (the most steps they can make).
fn temporal_range(
    start: &ColumnarValue,
    stop: &ColumnarValue,
    step: &ColumnarValue,
    rows: usize,
) -> Result<u128> {
    let nanos = |a: &ArrayRef| -> Result<Vec<Option<i64>>> {
        let t = cast(a, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
        Ok(cast(&t, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .iter()
            .collect())
    };
    let (start, stop) = (per_row(start, rows, nanos)?, per_row(stop, rows, nanos)?);
    let step = per_row(step, rows, |a| {
        Ok(cast(a, &DataType::Interval(IntervalUnit::MonthDayNano))?
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .collect())
    })?;
    // A step whose parts have opposite signs (`1 month -29 days`) can stand still on
    // some dates, and DataFusion's loop then never ends.
    for step in step.iter().flatten() {
        let signs = [
            i64::from(step.months).signum(),
            i64::from(step.days).signum(),
            step.nanoseconds.signum(),
        ];
        if signs.contains(&1) && signs.contains(&-1) {
            return Ok(u128::MAX);
        }
    }
    const DAY: i128 = 86_400_000_000_000;
    Ok(start
        .iter()
        .zip(&stop)
        .zip(step)
        .map(|((a, b), step)| match (a, b, step) {
            (Some(a), Some(b), Some(step)) => {
                let step_ns = (step.months as i128 * 28 * DAY
                    + step.days as i128 * DAY
                    + step.nanoseconds as i128)
                    .unsigned_abs();
                let span = (*b as i128 - *a as i128).unsigned_abs();
                (span / step_ns.max(1) + 1) * 8
            }
            _ => 0,
        })
        .sum())
}

/// The values of a list argument over `rows` rows (a constant list counts per row).
fn elements(list: &ColumnarValue, rows: usize) -> Result<u128> {
    let count = |a: &ArrayRef| -> u128 {
        let data = a.to_data();
        data.child_data().first().map_or(0, |c| c.len() as u128)
    };
    Ok(match list {
        ColumnarValue::Array(a) => count(a),
        ColumnarValue::Scalar(s) => count(&s.to_array_of_size(1)?).saturating_mul(rows as u128),
    })
}

fn zip_sum(a: &[u128], b: &[u128], f: impl Fn(u128, u128) -> u128) -> u128 {
    a.iter().zip(b).map(|(a, b)| f(*a, *b)).sum()
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<usize> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn calls_that_would_build_too_much_are_refused_before_they_run() {
        let mut state = SessionContext::new().state();
        super::super::install(&mut state).unwrap();
        let ctx = SessionContext::new_with_state(state);
        for sql in [
            "SELECT repeat('x', 200000000)",
            "SELECT lpad('x', 100000000)",
            "SELECT rpad('x', 100000000, 'y')",
            "SELECT array_repeat(1, 100000000)",
            "SELECT replace(repeat('a', 1000000), 'a', repeat('b', 1000))",
            "SELECT range(0, 10000000000)",
            "SELECT generate_series(1, 10000000000)",
            "SELECT range(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 second')",
            "SELECT concat(v, v) FROM (VALUES (repeat('x', 40000000))) t(v)",
            "SELECT regexp_replace(repeat('a', 1000000), '', repeat('b', 100), 'g')",
            "SELECT length(repeat(v, 100000)) FROM (VALUES (repeat('x', 1000))) t(v)",
            // A constant argument counts once per row (and is measured without being
            // copied to every row).
            "SELECT length(concat(repeat('x', 60000000), v)) FROM generate_series(1, 100) t(v)",
            // DataFusion plans `array || array` as its own array_concat.
            "SELECT cardinality(range(0, 5000000) || range(0, 5000000))",
            // Each grows past its inputs (found by an attacker's review).
            "SELECT length(array_to_string(range(i, 100000 + i), repeat('x', 100000 + i))) \
             FROM generate_series(0, 0) g(i)",
            &format!(
                "SELECT length(concat_ws(repeat('x', 30000000 + i), {})) FROM generate_series(0, 0) g(i)",
                vec!["'a'"; 1000].join(", ")
            ),
            "SELECT cardinality(range(DATE '2001-01-30', DATE '2001-01-01', INTERVAL '1 month -29 days'))",
            "SELECT length(overlay(v placing v from 1 for 0)) FROM \
             (SELECT repeat('x', 40000000 + i) AS v FROM generate_series(0, 0) g(i))",
            "SELECT length(encode(v, 'hex')) FROM \
             (SELECT repeat('x', 40000000 + i) AS v FROM generate_series(0, 0) g(i))",
            "SELECT cardinality(array_resize(make_array('a' || i), 33 + i, repeat('x', 60000000 + i))) \
             FROM generate_series(0, 0) g(i)",
            "SELECT cardinality(string_to_array(repeat('a', 10000000 + i), NULL)) \
             FROM generate_series(0, 0) g(i)",
            "SELECT cardinality(array_replace_all(string_to_array(repeat('a', 30 + i), NULL), 'a', \
             repeat('x', 60000000 + i))) FROM generate_series(0, 0) g(i)",
            // A constant is copied to every row of a batch: 8,192 copies of 60 MB.
            "SELECT repeat('x', 60000000) FROM generate_series(1, 100000)",
            "SELECT concat(repeat('x', 60000000)) FROM generate_series(1, 10)",
        ] {
            let e = run(&ctx, sql).await.expect_err(sql).to_string();
            assert!(
                e.contains("may build at most 64 MiB per batch"),
                "{sql}: {e}"
            );
        }
        // Ordinary calls are untouched.
        for sql in [
            "SELECT repeat('ab', 3)",
            "SELECT lpad(v, 10) FROM (VALUES ('x'), ('y')) t(v)",
            "SELECT replace('abc', 'b', 'xyz')",
            "SELECT range(1, 10)",
            "SELECT * FROM range(1, 10)",
            "SELECT array_repeat('a', 3)",
            "SELECT concat('a', 'b', NULL, 'c')",
            "SELECT range(DATE '2024-01-01', DATE '2024-12-31', INTERVAL '1 day')",
            "SELECT regexp_replace('abc', 'b', 'x')",
            "SELECT cardinality(range(0, 10) || range(0, 3))",
            "SELECT array_to_string(make_array('a', NULL, 'b'), ',', '-')",
            "SELECT concat_ws(',', 'a', 'b', v) FROM (VALUES ('c')) t(v)",
            "SELECT encode('abc', 'hex'), overlay('abc' placing 'x' from 2), translate('abc', 'a', 'é')",
            "SELECT to_char(DATE '2024-01-01', '%Y-%m-%d'), named_struct('a', 1), struct(1, 'b')",
            "SELECT array_replace_all(make_array(1, 1, 2), 1, 3), array_resize(make_array(1), 3, 0)",
            "SELECT range(DATE '2024-01-31', DATE '2024-06-01', INTERVAL '1 month')",
            "SELECT string_to_array('a,b,,c', ','), string_to_array('abc', NULL), \
             string_to_array(v, '') FROM (VALUES ('x y')) t(v)",
            "SELECT concat('ab', v) FROM generate_series(1, 10000) t(v)",
        ] {
            assert!(run(&ctx, sql).await.is_ok_and(|rows| rows > 0), "{sql}");
        }
    }
}
