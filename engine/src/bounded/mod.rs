//! Expressions whose result size their arguments set, checked before they run.
//!
//! The memory pool (`--memory-limit`) counts what operators hold, not the values scalar
//! expressions build: one `repeat` took a server from 0.4 GB to 3.9 GB, and a chain of
//! CTEs each doubling a value with `v || v` grows it past any limit in a few steps. Each
//! expression here estimates, from its arguments, the most bytes one call (one batch)
//! can produce and refuses calls over [`MAX_CALL_BYTES`] with an error naming the bound,
//! before anything is allocated:
//!
//! - [`functions`]: DataFusion's functions that grow (`repeat`, `lpad`, `concat`, ...),
//!   registered in place of DataFusion's under the same names;
//! - [`string_concat`]: the `||` operator, which DataFusion evaluates as an operator
//!   rather than a function, so [`rewrite`] turns every `||` of every plan into a call.
//!
//! Constant expressions are folded at planning through the same checks: [`rewrite`] runs
//! as the last analyzer rule, before the optimizer folds anything. A call whose
//! arguments are all constants counts as many rows as a batch holds, since its value is
//! copied to every row of the batches it meets.
//!
//! [`batches`] bounds what operators that repeat rows (joins, `unnest`) emit: values
//! within these bounds can still be repeated 8,192 times in one batch.
//!
//! None of this is a switch: it changes no result, only refuses work that would build
//! too much.

pub mod batches;
pub mod functions;
mod rewrite;
mod size;
pub mod string_concat;

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::SessionState;

pub use batches::bound_batches;
pub use rewrite::{bound, unbound};

/// The most bytes one call of a bounded expression may produce for one batch.
pub const MAX_CALL_BYTES: usize = 64 << 20;

/// Bound `state`'s growing functions and its `||`: register the bounded functions in
/// place of DataFusion's and rewrite every plan to call them.
pub fn install(state: &mut SessionState) -> Result<()> {
    let functions = functions::register(state)?;
    state.add_analyzer_rule(Arc::new(rewrite::BoundExpressions::new(functions)));
    Ok(())
}

/// The rows a call's size is estimated for: its batch's, or a whole batch's when every
/// argument is a constant (folded at planning over one row, its value is then copied
/// to every row of a batch: `SELECT repeat('x', 60000000) FROM t`).
fn rows_counted(args: &datafusion::logical_expr::ScalarFunctionArgs) -> usize {
    let constant = args
        .args
        .iter()
        .all(|a| matches!(a, datafusion::logical_expr::ColumnarValue::Scalar(_)));
    if constant {
        args.number_rows
            .max(usize::from(args.config_options.execution.batch_size))
    } else {
        args.number_rows.max(1)
    }
}

/// The error of a call refused by its bound.
fn too_big(what: &str, bytes: u128, rows: usize) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Execution(format!(
        "{what} would build about {} MiB of values for {} rows; a function call or `||` may \
         build at most {} MiB per batch (meshql bounds what expressions allocate, since \
         the memory limit cannot count it)",
        bytes >> 20,
        rows.max(1),
        MAX_CALL_BYTES >> 20
    ))
}
