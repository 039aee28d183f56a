//! Operators that repeat or gather rows without copying their values (joins, `unnest`,
//! and those that gather small batches into larger ones: repartition, filter,
//! coalesce) never emit a batch whose values, once copied out, would take more than
//! [`MAX_BATCH_BYTES`] and more than [`MAX_INFLATION`] times the memory the batch holds.
//!
//! A join repeats a build-side row for every probe row it matches, so one 60 MB value
//! (within every expression bound) joined with 100,000 rows makes batches of 8,192
//! copies; a cross join emits one-row batches that the next repartition gathers into
//! the same. With string views such batches cost almost nothing to build, but the next
//! expression, cast or client conversion that copies the strings asks for 491 GB, and
//! a failed allocation aborts the process. The memory pool does not count operators'
//! output batches, so each batch these operators emit is measured as it would be once
//! copied (a view's length is in the view, so this is a walk over the views, far
//! cheaper than the operator that made them). Large data is not refused for being
//! large: a batch of distinct 200 KB documents holds as much memory as its values need.
//!
//! It wraps the operators once the plan is final (after every optimizer rule), so
//! rules see DataFusion's own nodes. Not a switch: it changes no result.
//!
//! What it does not cover: 64-bit offset types (`LargeUtf8`, `LargeBinary`,
//! `LargeList`) are copied by the join itself, before this check can see the batch
//! (so statements cannot cast to them), and dictionary-encoded columns count their
//! memory, not their repeated values.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayData, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// Batches of values up to this size pass whatever memory they hold.
pub const MAX_BATCH_BYTES: u64 = 1 << 30;

/// How many times the memory it holds a larger batch's values may take once copied.
pub const MAX_INFLATION: u64 = 4;

/// `plan` with every row-repeating operator wrapped in the check, and the input of
/// every window operator checked for values its functions could repeat.
pub fn bound_batches(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if repeats_rows(node.as_ref()) {
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(BoundedBatchesExec {
                input: node,
                check: Check::Output,
            });
            return Ok(Transformed::yes(wrapped));
        }
        if let Some(columns) = window_arguments(node.as_ref()) {
            let input = Arc::clone(node.children()[0]);
            let checked: Arc<dyn ExecutionPlan> = Arc::new(BoundedBatchesExec {
                input,
                check: Check::RepeatedBy(columns),
            });
            let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
            return Ok(Transformed::yes(
                node.replace_children(vec![checked], recompute)?,
            ));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// The input columns a window operator's functions read: `first_value(v)` repeats one
/// value for every row of its frame, building the copies itself (as `ScalarValue`s),
/// so the check goes before it.
fn window_arguments(plan: &dyn ExecutionPlan) -> Option<Vec<usize>> {
    let exprs = if let Some(w) = plan.downcast_ref::<BoundedWindowAggExec>() {
        w.window_expr()
    } else if let Some(w) = plan.downcast_ref::<WindowAggExec>() {
        w.window_expr()
    } else {
        return None;
    };
    let mut columns: Vec<usize> = exprs
        .iter()
        .flat_map(|w| w.expressions())
        .flat_map(|e| collect_columns(&e))
        .map(|c| c.index())
        .collect();
    columns.sort_unstable();
    columns.dedup();
    Some(columns)
}

fn repeats_rows(plan: &dyn ExecutionPlan) -> bool {
    let name = plan.name();
    name.ends_with("JoinExec")
        || matches!(
            name,
            "UnnestExec" | "RepartitionExec" | "FilterExec" | "CoalesceBatchesExec"
        )
}

/// The check above one operator.
#[derive(Debug)]
pub struct BoundedBatchesExec {
    input: Arc<dyn ExecutionPlan>,
    check: Check,
}

#[derive(Debug, Clone)]
enum Check {
    /// The operator's output, measured as copied (see the module docs).
    Output,
    /// A window operator's input: no value of these columns may, repeated for every row
    /// of a batch, exceed the bound.
    RepeatedBy(Vec<usize>),
}

impl DisplayAs for BoundedBatchesExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.check {
            Check::Output => write!(f, "BoundedBatchesExec: max_bytes={MAX_BATCH_BYTES}"),
            Check::RepeatedBy(c) => write!(
                f,
                "BoundedBatchesExec: max_bytes={MAX_BATCH_BYTES}, repeated_columns={c:?}"
            ),
        }
    }
}

impl ExecutionPlan for BoundedBatchesExec {
    fn name(&self) -> &str {
        "BoundedBatchesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            input: children.swap_remove(0),
            check: self.check.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let operator = self.input.name().to_string();
        let batch_size = context.session_config().batch_size();
        let check = self.check.clone();
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let checked = input.map(move |batch| {
            let batch = batch?;
            if let Check::RepeatedBy(columns) = &check {
                let largest = columns
                    .iter()
                    .filter_map(|i| batch.columns().get(*i))
                    .map(|c| largest_value(&c.to_data()))
                    .max()
                    .unwrap_or(0);
                let repeated = largest.saturating_mul(batch_size as u64);
                if repeated > MAX_BATCH_BYTES {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "a window function over a value of {} MiB could repeat it for each of \
                         {batch_size} rows, {} MiB; a batch may repeat values up to {} MiB \
                         (meshql bounds what operators build, since the memory limit cannot \
                         count it)",
                        largest >> 20,
                        repeated >> 20,
                        MAX_BATCH_BYTES >> 20
                    )));
                }
                return Ok(batch);
            }
            let (bytes, held) = batch_bytes(&batch);
            if bytes > MAX_BATCH_BYTES && bytes > held.saturating_mul(MAX_INFLATION) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{operator} would produce a batch whose {} rows repeat values totalling \
                     about {} MiB (from {} MiB held); a batch may repeat values up to {} MiB \
                     (meshql bounds what operators build, since the memory limit cannot \
                     count it)",
                    batch.num_rows(),
                    bytes >> 20,
                    held >> 20,
                    MAX_BATCH_BYTES >> 20
                )));
            }
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, checked)))
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}

/// The bytes `batch`'s values take once copied out, and the bytes its buffers hold
/// (each buffer once, however many arrays or views share it).
pub fn batch_bytes(batch: &RecordBatch) -> (u64, u64) {
    let mut seen = HashSet::new();
    let mut held = 0u64;
    let mut bytes = 0u64;
    for column in batch.columns() {
        let data = column.to_data();
        bytes = bytes.saturating_add(array_bytes(&data));
        held = held.saturating_add(buffer_bytes(&data, &mut seen));
    }
    (bytes, held)
}

fn buffer_bytes(data: &ArrayData, seen: &mut HashSet<usize>) -> u64 {
    let mut held = 0u64;
    let buffers = data
        .buffers()
        .iter()
        .chain(data.nulls().map(|n| n.buffer()));
    for buffer in buffers {
        if seen.insert(buffer.data_ptr().as_ptr() as usize) {
            held = held.saturating_add(buffer.len() as u64);
        }
    }
    data.child_data()
        .iter()
        .map(|c| buffer_bytes(c, seen))
        .fold(held, u64::saturating_add)
}

/// The longest string or binary value of `data` (0 for other types).
fn largest_value(data: &ArrayData) -> u64 {
    match data.data_type() {
        DataType::Utf8View | DataType::BinaryView => data.buffers()[0].typed_data::<u128>()
            [data.offset()..][..data.len()]
            .iter()
            .map(|v| u64::from(*v as u32))
            .max()
            .unwrap_or(0),
        DataType::Utf8 | DataType::Binary => {
            let offsets = &data.buffers()[0].typed_data::<i32>()[data.offset()..][..=data.len()];
            offsets
                .windows(2)
                .map(|w| (w[1] - w[0]).max(0) as u64)
                .max()
                .unwrap_or(0)
        }
        DataType::LargeUtf8 | DataType::LargeBinary => {
            let offsets = &data.buffers()[0].typed_data::<i64>()[data.offset()..][..=data.len()];
            offsets
                .windows(2)
                .map(|w| (w[1] - w[0]).max(0) as u64)
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

fn array_bytes(data: &ArrayData) -> u64 {
    match data.data_type() {
        DataType::Utf8View | DataType::BinaryView => {
            let views = &data.buffers()[0].typed_data::<u128>()[data.offset()..][..data.len()];
            // The length is a view's low 32 bits; nulls have zeroed views.
            views
                .iter()
                .map(|v| u64::from(*v as u32) + 16)
                .fold(0, u64::saturating_add)
        }
        _ if data.child_data().is_empty() => data
            .get_slice_memory_size()
            .map(|b| b as u64)
            .unwrap_or_else(|_| data.buffers().iter().map(|b| b.len() as u64).sum()),
        _ => {
            let own: u64 = data.buffers().iter().map(|b| b.len() as u64).sum();
            data.child_data()
                .iter()
                .map(array_bytes)
                .fold(own, u64::saturating_add)
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, ListArray, StringArray, StringViewArray};
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::Int32Type;

    use super::*;

    #[test]
    fn repeated_views_count_once_per_row() {
        let big = "x".repeat(1000);
        let one = StringViewArray::from(vec![Some(big.as_str())]);
        let repeated = take(
            &one,
            &datafusion::arrow::array::UInt32Array::from(vec![0; 500]),
            None,
        )
        .unwrap();
        // 500 copies of 1,000 bytes and a view each, though one buffer holds them all.
        assert_eq!(array_bytes(&repeated.to_data()), 500 * 1016);
        let batch = RecordBatch::try_from_iter([
            ("a", Arc::clone(&repeated)),
            ("b", Arc::clone(&repeated)),
        ])
        .unwrap();
        let (bytes, held) = batch_bytes(&batch);
        assert_eq!(bytes, 2 * 500 * 1016);
        // The shared data buffer counts once; each column's views count.
        assert!(held < 2 * 500 * 16 + 2000, "{held}");
        assert!(repeated.get_array_memory_size() < 500 * 1016 / 10);
        // Slices count their own rows only; plain strings their values.
        assert_eq!(array_bytes(&repeated.slice(10, 5).to_data()), 5 * 1016);
        let plain = StringArray::from(vec!["ab", "cde"]);
        assert!(array_bytes(&plain.to_data()) >= 5);
        let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        assert!(array_bytes(&lists.to_data()) >= 4);
        assert!(!lists.is_empty());
    }
}
