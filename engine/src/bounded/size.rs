//! Per-row sizes of arguments, without materialising scalars: a constant argument of
//! 60 MB in a batch of 8,192 rows is one value, and spreading it to an array to measure
//! it would build the 491 GB the bound is there to refuse.

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::Result;
use datafusion::logical_expr::ColumnarValue;

/// `f`'s per-row figures for `value` over `rows` rows; a scalar is measured once.
pub(super) fn per_row<T: Clone + Default>(
    value: &ColumnarValue,
    rows: usize,
    f: impl Fn(&ArrayRef) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    match value {
        ColumnarValue::Array(a) => f(a),
        ColumnarValue::Scalar(s) => {
            let one = f(&s.to_array_of_size(1)?)?;
            Ok(vec![one.first().cloned().unwrap_or_default(); rows])
        }
    }
}

/// The bytes `value` holds over `rows` rows: its values' byte lengths if it is a string
/// or binary, its memory otherwise.
pub(super) fn total_bytes(value: &ColumnarValue, rows: usize) -> Result<u128> {
    Ok(match value {
        ColumnarValue::Array(a) if is_stringy(a.data_type()) => byte_lengths(a)?.iter().sum(),
        ColumnarValue::Array(a) => a.get_array_memory_size() as u128,
        ColumnarValue::Scalar(_) => per_row(value, 1, |one| {
            Ok(vec![if is_stringy(one.data_type()) {
                byte_lengths(one)?.iter().sum()
            } else {
                one.get_array_memory_size() as u128
            }])
        })?[0]
            .saturating_mul(rows as u128),
    })
}

pub(super) fn is_stringy(t: &DataType) -> bool {
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

/// Byte length of each string or binary value (0 for nulls and other types).
pub(super) fn byte_lengths(array: &ArrayRef) -> Result<Vec<u128>> {
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
pub(super) fn counts(array: &ArrayRef) -> Result<Vec<u128>> {
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
