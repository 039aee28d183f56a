//! One instance of a subplan that occurs more than once in a plan, whose results the
//! instances share.
//!
//! Per partition, the first instance to be read runs its subplan and keeps a copy of
//! the batches; the instances read after it has finished replay the copy. An instance
//! read while another is still running its subplan runs its own instead of waiting:
//! operators that read two inputs in step (a merge join, an interleave) would otherwise
//! wait on themselves. So sharing never costs more than computing twice, and needs no
//! knowledge of the order in which operators read their inputs. It pays where one
//! instance is read after the other: a scalar subquery runs before the main plan, and a
//! hash join reads its build side before its probe side.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use futures::{Stream, StreamExt, TryStreamExt};

/// Most bytes of one partition's results kept for the other instances. Larger results
/// are computed by each instance, as they would be without sharing.
const MAX_KEPT_BYTES: usize = 256 << 20;

/// The results the instances of one subplan share.
#[derive(Debug)]
pub(crate) struct SharedResults {
    /// Numbers the shared subplans of a plan, so EXPLAIN shows which nodes share.
    id: usize,
    instances: usize,
    partitions: Vec<Mutex<Slot>>,
}

impl SharedResults {
    pub(crate) fn new(id: usize, instances: usize, partitions: usize) -> Self {
        Self {
            id,
            instances,
            partitions: (0..partitions).map(|_| Mutex::new(Slot::Empty)).collect(),
        }
    }

    /// What the instance reading `partition` now does.
    fn claim(&self, partition: usize) -> Claim {
        let Some(slot) = self.partitions.get(partition) else {
            return Claim::Own;
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *slot {
            Slot::Empty => {
                *slot = Slot::Filling;
                Claim::Fill
            }
            Slot::Done {
                batches, readers, ..
            } => {
                let copy = batches.clone();
                *readers -= 1;
                if *readers == 0 {
                    // The last instance to read it: the memory is released.
                    *slot = Slot::Gone;
                }
                Claim::Replay(copy)
            }
            Slot::Filling | Slot::Gone => Claim::Own,
        }
    }

    fn settle(&self, partition: usize, kept: Option<(Vec<RecordBatch>, MemoryReservation)>) {
        let Some(slot) = self.partitions.get(partition) else {
            return;
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*slot, Slot::Filling) {
            return;
        }
        *slot = match kept {
            Some((batches, reservation)) if self.instances > 1 => Slot::Done {
                batches,
                readers: self.instances - 1,
                _reservation: reservation,
            },
            _ => Slot::Gone,
        };
    }
}

#[derive(Debug)]
enum Slot {
    Empty,
    Filling,
    Done {
        batches: Vec<RecordBatch>,
        /// Instances yet to read them.
        readers: usize,
        _reservation: MemoryReservation,
    },
    Gone,
}

enum Claim {
    Fill,
    Replay(Vec<RecordBatch>),
    Own,
}

/// An instance of a shared subplan (`input`).
#[derive(Debug)]
pub(crate) struct SharedSubplanExec {
    input: Arc<dyn ExecutionPlan>,
    results: Arc<SharedResults>,
    metrics: ExecutionPlanMetricsSet,
}

impl SharedSubplanExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, results: Arc<SharedResults>) -> Self {
        Self {
            input,
            results,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for SharedSubplanExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SharedSubplanExec: id={}, instances={}",
            self.results.id, self.results.instances
        )
    }
}

impl ExecutionPlan for SharedSubplanExec {
    fn name(&self) -> &str {
        "SharedSubplanExec"
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
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            Arc::clone(&self.results),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let input = Arc::clone(&self.input);
        let results = Arc::clone(&self.results);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // Rows this instance read from another's results rather than computing them.
        let replayed = MetricBuilder::new(&self.metrics).counter("replayed_rows", partition);
        // Decided when first read, not now: operators often open every input before
        // reading any, and the instance read first should be the one that computes.
        let opened =
            futures::stream::once(
                async move { open(input, partition, context, results, replayed) },
            )
            .try_flatten()
            .inspect_ok(move |batch| {
                batch.record_output(&baseline);
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, opened)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}

fn open(
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
    results: Arc<SharedResults>,
    replayed: Count,
) -> Result<SendableRecordBatchStream> {
    match results.claim(partition) {
        Claim::Own => input.execute(partition, context),
        Claim::Replay(batches) => {
            replayed.add(batches.iter().map(RecordBatch::num_rows).sum());
            let stream = futures::stream::iter(batches.into_iter().map(Ok));
            Ok(Box::pin(RecordBatchStreamAdapter::new(
                input.schema(),
                stream,
            )))
        }
        Claim::Fill => {
            let reservation = MemoryConsumer::new(format!("SharedSubplanExec[{partition}]"))
                .register(context.memory_pool());
            let inner = input.execute(partition, context)?;
            Ok(Box::pin(Keeping {
                inner,
                kept: Some((Vec::new(), reservation)),
                results,
                partition,
                settled: false,
            }))
        }
    }
}

/// The stream of the instance that computes: passes its batches on and keeps a copy,
/// which it hands over at the end. A failed, dropped or oversized run hands over none.
struct Keeping {
    inner: SendableRecordBatchStream,
    kept: Option<(Vec<RecordBatch>, MemoryReservation)>,
    results: Arc<SharedResults>,
    partition: usize,
    settled: bool,
}

impl Keeping {
    fn settle(&mut self, complete: bool) {
        if !self.settled {
            self.settled = true;
            let kept = if complete { self.kept.take() } else { None };
            self.results.settle(self.partition, kept);
        }
    }
}

impl Stream for Keeping {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                if let Some((batches, reservation)) = &mut self.kept {
                    let bytes = batch.get_array_memory_size();
                    if reservation.size() + bytes > MAX_KEPT_BYTES
                        || reservation.try_grow(bytes).is_err()
                    {
                        self.kept = None;
                    } else {
                        batches.push(batch.clone());
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => self.settle(false),
            Poll::Ready(None) => self.settle(true),
            Poll::Pending => {}
        }
        polled
    }
}

impl RecordBatchStream for Keeping {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

impl Drop for Keeping {
    fn drop(&mut self) {
        // Read only in part (a limit above): the copy is incomplete.
        self.settle(false);
    }
}
