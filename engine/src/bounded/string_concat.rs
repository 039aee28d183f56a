//! `||` as a function that refuses to build more than [`MAX_CALL_BYTES`] per call.
//!
//! It evaluates DataFusion's own `||` (the physical `BinaryExpr`), so its results, its
//! NULL handling (NULL if either side is) and its types are the operator's; only the
//! size check before it is added. Its column name is the operator's (`a || b`), so plans
//! keep their schemas when [`super::rewrite`] turns operators into calls.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::physical_expr::expressions::{self, Column};

use super::size::total_bytes;
use super::{MAX_CALL_BYTES, too_big};

/// The name the call shows in plans: `||(a, b)`.
pub const NAME: &str = "||";

static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::new_from_impl(StringConcat {
        signature: Signature::any(2, Volatility::Immutable),
    }))
});

/// The bounded `||`.
pub fn udf() -> Arc<ScalarUDF> {
    Arc::clone(&UDF)
}

/// True when `udf` is the bounded `||`.
pub fn is_string_concat(udf: &ScalarUDF) -> bool {
    udf.inner().downcast_ref::<StringConcat>().is_some()
}

/// Its arguments are already of the types type coercion gave the operator's sides: the
/// rewrite runs after it, so the signature accepts them as they are.
#[derive(Debug, PartialEq, Eq, Hash)]
struct StringConcat {
    signature: Signature,
}

impl ScalarUDFImpl for StringConcat {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let [left, right] = args else {
            return exec_err!("|| takes two values, got {}", args.len());
        };
        // As DataFusion names `left || right` (without building that expression: the
        // arguments can be chains thousands deep).
        Ok(format!("{} || {}", left.schema_name(), right.schema_name()))
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [left, right] = arg_types else {
            return exec_err!("|| takes two values, got {}", arg_types.len());
        };
        BinaryTypeCoercer::new(left, &Operator::StringConcat, right).get_result_type()
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&types)?,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return exec_err!("|| takes two values, got {}", args.args.len());
        };
        let counted = super::rows_counted(&args);
        let bytes = total_bytes(left, counted)? + total_bytes(right, counted)?;
        if bytes > MAX_CALL_BYTES as u128 {
            return Err(too_big("||", bytes, counted));
        }
        let rows = args.number_rows;
        let scalars = matches!(
            (left, right),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let rows = if scalars { 1 } else { rows };
        let columns: Vec<ArrayRef> = vec![left.to_array(rows)?, right.to_array(rows)?];
        let schema = Arc::new(Schema::new(vec![
            Field::new("l", columns[0].data_type().clone(), true),
            Field::new("r", columns[1].data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let operator = expressions::binary(
            Arc::new(Column::new("l", 0)),
            Operator::StringConcat,
            Arc::new(Column::new("r", 1)),
            &schema,
        )?;
        let result = operator.evaluate(&batch)?;
        match result {
            ColumnarValue::Array(a) if scalars => {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&a, 0)?))
            }
            result => Ok(result),
        }
    }
}
