//! Functions whose result size an argument sets (`repeat('x', 200000000)`), checked
//! before they run.
//!
//! The memory pool (`--memory-limit`) counts what operators hold, not the values scalar
//! functions build: one `repeat` took a server from 0.4 GB to 3.9 GB. These functions are
//! registered in place of DataFusion's under the same names; each estimates, from its
//! arguments, the most bytes a call (one batch) can produce and refuses calls over
//! [`MAX_CALL_BYTES`] with an error naming the bound, before anything is allocated.
//! Constant calls are folded at planning through the same check. `concat`, `concat_ws`,
//! `array_concat` and `regexp_replace` are wrapped too: each grows with its inputs, and
//! a chain of calls over a value near the bound multiplies it. `||` chains are not
//! bounded yet (each step copies its inputs, so a chain over a value near the bound can
//! still build gigabytes); a bound on the values operators produce would close that.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{
    DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
};
use datafusion::common::{Result, exec_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// The most bytes one call of a wrapped function may produce for one batch.
pub const MAX_CALL_BYTES: usize = 64 << 20;

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
    /// `concat(a, b, ...)`, `concat_ws(sep, a, ...)`, `array_concat`: the inputs together
    /// (a chain of calls over a large value multiplies it).
    Inputs,
    /// `regexp_replace(s, pattern, to [, flags])`: at worst `to` between every character.
    RegexpReplace,
}

const WRAPPED: [(&str, Growth); 11] = [
    ("concat", Growth::Inputs),
    ("concat_ws", Growth::Inputs),
    ("array_concat", Growth::Inputs),
    ("regexp_replace", Growth::RegexpReplace),
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("replace", Growth::Replace),
    ("range", Growth::Range),
];

/// Replace DataFusion's functions of [`WRAPPED`] (and `generate_series`) in `registry`
/// with bounded ones.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    let names = WRAPPED
        .iter()
        .copied()
        .chain([("generate_series", Growth::Range)]);
    for (name, growth) in names {
        let Ok(inner) = registry.udf(name) else {
            continue;
        };
        let bounded = Bounded {
            inner: Arc::clone(inner.inner()).into(),
            growth,
        };
        registry.register_udf(Arc::new(ScalarUDF::new_from_impl(bounded)))?;
    }
    Ok(())
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
        let bytes = estimate(self.growth, &args.args, args.number_rows)?;
        if bytes > MAX_CALL_BYTES as u128 {
            return exec_err!(
                "{}(...) would build about {} MiB of values for {} rows; a function call may \
                 build at most {} MiB (meshql bounds what functions allocate, since the \
                 memory limit cannot count it)",
                self.inner.name(),
                bytes >> 20,
                args.number_rows.max(1),
                MAX_CALL_BYTES >> 20
            );
        }
        self.inner.invoke_with_args(args)
    }
}

/// The most bytes a call can produce, summed over its rows.
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u128> {
    let rows = rows.max(1);
    let arg = |i: usize| args.get(i).map(|a| a.to_array(rows)).transpose();
    Ok(match growth {
        Growth::Repeat => {
            let (Some(s), Some(n)) = (arg(0)?, arg(1)?) else {
                return Ok(0);
            };
            zip_sum(&byte_lengths(&s)?, &counts(&n)?, |len, n| len * n)
        }
        Growth::Pad => {
            let Some(n) = arg(1)? else { return Ok(0) };
            counts(&n)?.iter().map(|n| n * 4).sum()
        }
        Growth::ArrayRepeat | Growth::ArrayResize => {
            let (Some(v), Some(n)) = (arg(0)?, arg(1)?) else {
                return Ok(0);
            };
            // A value's share of its array's memory, and at least a pointer's worth.
            let per_value = (v.get_array_memory_size() / v.len().max(1)).max(8) as u128;
            counts(&n)?.iter().map(|n| n * per_value).sum()
        }
        Growth::Replace => {
            let (Some(s), Some(from), Some(to)) = (arg(0)?, arg(1)?, arg(2)?) else {
                return Ok(0);
            };
            let (s, from, to) = (byte_lengths(&s)?, byte_lengths(&from)?, byte_lengths(&to)?);
            s.iter()
                .zip(from.iter().zip(&to))
                .map(|(s, (from, to))| s + (s / (*from).max(1) + 1) * to)
                .sum()
        }
        Growth::Inputs => {
            let mut total = 0u128;
            for i in 0..args.len() {
                if let Some(a) = arg(i)? {
                    total += match byte_lengths(&a) {
                        Ok(lengths) if is_stringy(a.data_type()) => lengths.iter().sum(),
                        _ => a.get_array_memory_size() as u128,
                    };
                }
            }
            // concat_ws repeats its separator between the values.
            total * 2
        }
        Growth::RegexpReplace => {
            let (Some(s), Some(to)) = (arg(0)?, arg(2)?) else {
                return Ok(0);
            };
            zip_sum(&byte_lengths(&s)?, &byte_lengths(&to)?, |s, to| {
                s + (s + 1) * to
            })
        }
        Growth::Range
            if args.len() == 3 && matches!(args[2].data_type(), DataType::Interval(_)) =>
        {
            temporal_range(&arg(0)?, &arg(1)?, &arg(2)?)?
        }
        Growth::Range => {
            let integers = args
                .iter()
                .all(|a| a.data_type().is_integer() || a.data_type() == DataType::Null);
            if !integers || args.is_empty() {
                return Ok(0);
            }
            let ints = |i: usize| -> Result<Option<Vec<Option<i64>>>> {
                Ok(match arg(i)? {
                    None => None,
                    Some(a) => Some(
                        cast(&a, &DataType::Int64)?
                            .as_primitive::<Int64Type>()
                            .iter()
                            .collect(),
                    ),
                })
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
    start: &Option<ArrayRef>,
    stop: &Option<ArrayRef>,
    step: &Option<ArrayRef>,
) -> Result<u128> {
    let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
        return Ok(0);
    };
    let nanos = |a: &ArrayRef| -> Result<Vec<Option<i64>>> {
        let t = cast(a, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
        Ok(cast(&t, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .iter()
            .collect())
    };
    let (start, stop) = (nanos(start)?, nanos(stop)?);
    let step = cast(step, &DataType::Interval(IntervalUnit::MonthDayNano))?;
    const DAY: i128 = 86_400_000_000_000;
    Ok(start
        .iter()
        .zip(&stop)
        .zip(step.as_primitive::<IntervalMonthDayNanoType>().iter())
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

fn is_stringy(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

fn zip_sum(a: &[u128], b: &[u128], f: impl Fn(u128, u128) -> u128) -> u128 {
    a.iter().zip(b).map(|(a, b)| f(*a, *b)).sum()
}

/// Byte length of each string or binary value (0 for nulls and other types).
fn byte_lengths(array: &ArrayRef) -> Result<Vec<u128>> {
    if !is_stringy(array.data_type()) {
        return Ok(vec![0; array.len()]);
    }
    let lengths = cast(&length(array)?, &DataType::Int64)?;
    Ok(lengths
        .as_primitive::<Int64Type>()
        .iter()
        .map(|l| l.unwrap_or(0).max(0) as u128)
        .collect())
}

/// Each value as a non-negative count (0 for nulls, negatives and non-integers).
fn counts(array: &ArrayRef) -> Result<Vec<u128>> {
    if !array.data_type().is_integer() {
        return Ok(vec![0; array.len()]);
    }
    let values = cast(array, &DataType::Int64)?;
    Ok(values
        .as_primitive::<Int64Type>()
        .iter()
        .map(|n| n.unwrap_or(0).max(0) as u128)
        .collect())
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
        register(&mut state).unwrap();
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
        ] {
            let e = run(&ctx, sql).await.expect_err(sql).to_string();
            assert!(
                e.contains("a function call may build at most 64 MiB"),
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
        ] {
            assert!(run(&ctx, sql).await.is_ok_and(|rows| rows > 0), "{sql}");
        }
    }
}
