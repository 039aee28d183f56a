//! One instance of a subplan that occurs more than once in a plan, whose results the
//! instances share.
//!
//! The first instance to be read runs the subplan for all of them: every partition of
//! its input at once, each partition on a task of its own that reads it to the end
//! whether or not anything reads the instances yet, and keeps its batches (in memory,
//! counted against the memory pool; past that, or past [`MAX_KEPT_BYTES`] a partition,
//! on disk). Every partition of every instance, the first one's included, replays the
//! kept batches of its partition once that partition is complete. The other instances'
//! inputs never run.
//!
//! All partitions at once, on tasks of their own, because DataFusion's operators assume
//! that every partition of a plan is read, and some wait for one another: a hash join's
//! partitions each wait until every partition has reported its build side (for the
//! dynamic filter it hands its probe side). Sharing per partition (an instance replays
//! the partitions another had finished and runs the others itself) ran an instance's
//! input for only some of its partitions whenever two instances were read at once (a
//! UNION ALL, an interleave, a join whose other side is repartitioned) or one was read
//! in part (under a LIMIT), and the partitions that ran waited forever for those that
//! never would. Here no input runs for only some of its partitions, no instance waits
//! for another instance's reader, and the run waits only for its own input.
//!
//! What it costs: an instance's first batch waits until its partition of the subplan is
//! complete (no pipelining through a shared subplan); an instance read in part no longer
//! stops the subplan early; and the results are kept until every instance has read them.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, internal_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SpillFile, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput,
    SpillMetrics,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
    SpillManager,
};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::watch;

/// Most bytes of one partition's results kept in memory; the rest goes to disk.
const MAX_KEPT_BYTES: usize = 256 << 20;

/// One partition's results, or why there are none.
type Outcome = std::result::Result<Arc<Kept>, Arc<DataFusionError>>;

/// The results the instances of one subplan share.
pub(crate) struct SharedResults {
    /// Numbers the shared subplans of a plan, so EXPLAIN shows which nodes share.
    id: usize,
    instances: usize,
    partitions: usize,
    state: Mutex<State>,
}

struct State {
    run: Run,
    /// Per partition, the instances that have not finished reading it (or not opened
    /// it yet). At zero its results are dropped.
    unread: Vec<usize>,
}

enum Run {
    NotStarted,
    Started {
        /// Address of the input that runs, to tell its instance from those that replay.
        source: usize,
        /// Per partition, its results once complete; None once every instance has read
        /// them.
        parts: Vec<Option<watch::Receiver<Option<Outcome>>>>,
        /// The tasks reading the input's partitions. Stopped (all at once: stopping some
        /// would leave the others waiting for them) only when the results are dropped.
        _tasks: Vec<SpawnedTask<()>>,
    },
    /// The input could not be opened.
    Failed(Arc<DataFusionError>),
}

impl fmt::Debug for SharedResults {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("SharedResults")
            .field("id", &self.id)
            .field("instances", &self.instances)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl SharedResults {
    pub(crate) fn new(id: usize, instances: usize, partitions: usize) -> Self {
        Self {
            id,
            instances,
            partitions,
            state: Mutex::new(State {
                run: Run::NotStarted,
                unread: vec![instances; partitions],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the results of `partition` will be, running `input` (all its partitions)
    /// if no instance has yet; and whether `input` is the one that runs.
    fn part(
        &self,
        partition: usize,
        input: &Arc<dyn ExecutionPlan>,
        context: &Arc<TaskContext>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<(watch::Receiver<Option<Outcome>>, bool)> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if matches!(state.run, Run::NotStarted) {
            state.run = start(self.id, input, context, metrics);
            if let Run::Started { parts, .. } = &mut state.run {
                // Partitions every instance has already given up on are computed (the
                // input runs whole) but not kept.
                for (part, unread) in parts.iter_mut().zip(&state.unread) {
                    if *unread == 0 {
                        *part = None;
                    }
                }
            }
        }
        match &state.run {
            Run::Started { source, parts, .. } => match parts.get(partition) {
                Some(Some(part)) => Ok((part.clone(), *source == address(input))),
                _ => internal_err!(
                    "shared subplan {} has no results left for partition {partition}",
                    self.id
                ),
            },
            Run::Failed(e) => Err(DataFusionError::from(e)),
            Run::NotStarted => internal_err!("shared subplan {} did not start", self.id),
        }
    }

    /// An instance is done with `partition` (read it, or dropped it read or not).
    fn release(&self, partition: usize) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(unread) = state.unread.get_mut(partition) else {
            return;
        };
        *unread = unread.saturating_sub(1);
        if *unread == 0
            && let Run::Started { parts, .. } = &mut state.run
            && let Some(part) = parts.get_mut(partition)
        {
            // The last instance to read it: the memory is released when its reader
            // drops the batches.
            *part = None;
        }
    }
}

fn address(plan: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(plan) as *const () as usize
}

/// Runs every partition of `input`, each on a task of its own that keeps its batches.
/// All are opened before any runs, so that a failure to open one leaves none running.
fn start(
    id: usize,
    input: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
    metrics: &ExecutionPlanMetricsSet,
) -> Run {
    let count = input.properties().partitioning.partition_count();
    let mut streams = Vec::with_capacity(count);
    for partition in 0..count {
        match input.execute(partition, Arc::clone(context)) {
            Ok(stream) => streams.push(stream),
            Err(e) => return Run::Failed(Arc::new(e)),
        }
    }
    let mut parts = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for (partition, stream) in streams.into_iter().enumerate() {
        let reservation = MemoryConsumer::new(format!("SharedSubplanExec[{id}.{partition}]"))
            .with_can_spill(true)
            .register(context.memory_pool());
        let spill = SpillManager::new(
            context.runtime_env(),
            SpillMetrics::new(metrics, partition),
            input.schema(),
        );
        let (done, part) = watch::channel(None);
        tasks.push(SpawnedTask::spawn(async move {
            let kept = keep(stream, reservation, spill).await;
            done.send_replace(Some(kept.map(Arc::new).map_err(Arc::new)));
        }));
        parts.push(Some(part));
    }
    Run::Started {
        source: address(input),
        parts,
        _tasks: tasks,
    }
}

/// Reads `input` to the end and keeps its batches, in order: in memory while
/// `reservation` grows and stays under [`MAX_KEPT_BYTES`], on disk past that.
async fn keep(
    mut input: SendableRecordBatchStream,
    reservation: MemoryReservation,
    spill: SpillManager,
) -> Result<Kept> {
    let mut chunks = Vec::new();
    let mut in_memory = Vec::new();
    let mut rows = 0;
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        rows += batch.num_rows();
        let bytes = batch.get_array_memory_size();
        let fits =
            reservation.size() + bytes <= MAX_KEPT_BYTES && reservation.try_grow(bytes).is_ok();
        in_memory.push(batch);
        if !fits {
            // What the partition holds in memory goes to disk, and it starts over.
            if let Some(file) =
                spill.spill_record_batch_and_finish(&in_memory, "SharedSubplanExec")?
            {
                chunks.push(Chunk::Spilled(file));
            }
            in_memory.clear();
            reservation.free();
        }
    }
    if !in_memory.is_empty() {
        chunks.push(Chunk::Memory(in_memory));
    }
    Ok(Kept {
        chunks,
        rows,
        spill,
        _reservation: reservation,
    })
}

/// One partition's results.
struct Kept {
    /// In the order the input produced them.
    chunks: Vec<Chunk>,
    rows: usize,
    spill: SpillManager,
    /// The memory of the batches kept in memory; released with them.
    _reservation: MemoryReservation,
}

enum Chunk {
    Memory(Vec<RecordBatch>),
    Spilled(Arc<dyn SpillFile>),
}

impl Kept {
    fn chunk(&self, index: usize) -> BoxStream<'static, Result<RecordBatch>> {
        match &self.chunks[index] {
            Chunk::Memory(batches) => {
                futures::stream::iter(batches.clone().into_iter().map(Ok)).boxed()
            }
            Chunk::Spilled(file) => match self.spill.read_spill_as_stream(Arc::clone(file), None) {
                Ok(stream) => stream.boxed(),
                Err(e) => futures::stream::iter(std::iter::once(Err(e))).boxed(),
            },
        }
    }
}

/// An instance's stream of one partition, from the moment it is opened: it counts as
/// unread until dropped.
struct Reader {
    results: Arc<SharedResults>,
    partition: usize,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.results.release(self.partition);
    }
}

/// Replays one partition's results.
struct Replay {
    kept: Arc<Kept>,
    next: usize,
    current: Option<BoxStream<'static, Result<RecordBatch>>>,
    _reader: Reader,
}

impl Stream for Replay {
    type Item = Result<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(current) = &mut this.current {
                match current.poll_next_unpin(cx) {
                    Poll::Ready(None) => this.current = None,
                    polled => return polled,
                }
            }
            if this.next == this.kept.chunks.len() {
                return Poll::Ready(None);
            }
            this.current = Some(this.kept.chunk(this.next));
            this.next += 1;
        }
    }
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

    /// To run again (a recursive query's next round). Nodes are reset one at a time,
    /// so the instances cannot find each other again: each computes its own results.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        let results = SharedResults::new(self.results.id, 1, self.results.partitions);
        Ok(Arc::new(Self::new(
            Arc::clone(&self.input),
            Arc::new(results),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let input = Arc::clone(&self.input);
        let metrics = self.metrics.clone();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // Rows this instance read from another's run rather than its own.
        let replayed = MetricBuilder::new(&self.metrics).counter("replayed_rows", partition);
        let reader = Reader {
            results: Arc::clone(&self.results),
            partition,
        };
        // Started when first read, not now: operators often open every input before
        // reading any, and one whose input is never read (a join whose build side is
        // empty) should not start the subplan.
        let opened = futures::stream::once(open(reader, input, context, metrics, replayed))
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

/// Waits for the results of the reader's partition, starting the run if no instance
/// has yet. It waits for the run's task only, never for another instance's reader.
async fn open(
    reader: Reader,
    input: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    metrics: ExecutionPlanMetricsSet,
    replayed: Count,
) -> Result<Replay> {
    let results = Arc::clone(&reader.results);
    let (mut part, source) = results.part(reader.partition, &input, &context, &metrics)?;
    let done = part
        .wait_for(Option::is_some)
        .await
        .map(|done| (*done).clone());
    let kept = match done {
        Ok(Some(Ok(kept))) => kept,
        Ok(Some(Err(e))) => return Err(DataFusionError::from(&e)),
        Ok(None) | Err(_) => {
            return exec_err!(
                "shared subplan {} stopped before it finished partition {}",
                results.id,
                reader.partition
            );
        }
    };
    if !source {
        replayed.add(kept.rows);
    }
    Ok(Replay {
        kept,
        next: 0,
        current: None,
        _reader: reader,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_expr::EquivalenceProperties;
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::common::collect;
    use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
    use tokio::sync::Barrier;
    use tokio::time::timeout;

    use super::*;

    /// Long enough for anything that finishes; a wait past it is a hang.
    const PATIENCE: Duration = Duration::from_secs(20);

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    fn batch(v: i64) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    /// A subplan whose partitions each wait until all of them have started, as a hash
    /// join's partitions wait for every partition's build side (its dynamic filter).
    /// Partition `p` yields `10p + 1`, then `10p + 2`.
    #[derive(Debug)]
    struct Meeting {
        meeting: Arc<Barrier>,
        executed: Arc<AtomicUsize>,
        fail: bool,
        properties: Arc<PlanProperties>,
    }

    impl Meeting {
        fn new(partitions: usize) -> Arc<Self> {
            Self::with(partitions, false)
        }

        fn failing(partitions: usize) -> Arc<Self> {
            Self::with(partitions, true)
        }

        fn with(partitions: usize, fail: bool) -> Arc<Self> {
            Arc::new(Self {
                meeting: Arc::new(Barrier::new(partitions)),
                executed: Arc::new(AtomicUsize::new(0)),
                fail,
                properties: Arc::new(PlanProperties::new(
                    EquivalenceProperties::new(schema()),
                    Partitioning::UnknownPartitioning(partitions),
                    EmissionType::Incremental,
                    Boundedness::Bounded,
                )),
            })
        }

        /// Partitions opened so far.
        fn executed(&self) -> usize {
            self.executed.load(Ordering::SeqCst)
        }
    }

    impl DisplayAs for Meeting {
        fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "Meeting")
        }
    }

    impl ExecutionPlan for Meeting {
        fn name(&self) -> &str {
            "Meeting"
        }

        fn properties(&self) -> &Arc<PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            vec![]
        }

        fn with_new_children(
            self: Arc<Self>,
            _: Vec<Arc<dyn ExecutionPlan>>,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            Ok(self)
        }

        fn execute(
            &self,
            partition: usize,
            _: Arc<TaskContext>,
        ) -> Result<SendableRecordBatchStream> {
            self.executed.fetch_add(1, Ordering::SeqCst);
            let meeting = Arc::clone(&self.meeting);
            let fail = self.fail;
            let first = 10 * partition as i64 + 1;
            let head = futures::stream::once(async move {
                meeting.wait().await;
                if fail {
                    return exec_err!("the subplan failed");
                }
                Ok(batch(first))
            });
            let tail = futures::stream::once(async move { Ok(batch(first + 1)) });
            Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema(),
                head.chain(tail),
            )))
        }

        fn apply_expressions(
            &self,
            _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
        ) -> Result<TreeNodeRecursion> {
            Ok(TreeNodeRecursion::Continue)
        }
    }

    fn instance(input: &Arc<Meeting>, results: &Arc<SharedResults>) -> SharedSubplanExec {
        SharedSubplanExec::new(
            Arc::clone(input) as Arc<dyn ExecutionPlan>,
            Arc::clone(results),
        )
    }

    fn context_with(pool: Arc<dyn MemoryPool>) -> Arc<TaskContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .unwrap();
        Arc::new(TaskContext::default().with_runtime(runtime))
    }

    /// Every partition of `plan`, read at once, each to the end.
    async fn read_all(plan: &SharedSubplanExec, context: &Arc<TaskContext>) -> Vec<Vec<i64>> {
        let streams = (0..2)
            .map(|p| plan.execute(p, Arc::clone(context)).unwrap())
            .collect::<Vec<_>>();
        let read = futures::future::join_all(streams.into_iter().map(collect));
        timeout(PATIENCE, read)
            .await
            .expect("reading an instance hung")
            .into_iter()
            .map(|batches| values(&batches.unwrap()))
            .collect()
    }

    /// Opens both partitions of `plan`, reads the first batch of each and then all of
    /// partition 0; returns partition 1 open, and the values read.
    async fn partition_1_left_open(
        plan: &SharedSubplanExec,
        context: &Arc<TaskContext>,
    ) -> (SendableRecordBatchStream, Vec<i64>) {
        let mut p0 = plan.execute(0, Arc::clone(context)).unwrap();
        let mut p1 = plan.execute(1, Arc::clone(context)).unwrap();
        let (first0, first1) = timeout(PATIENCE, async { futures::join!(p0.next(), p1.next()) })
            .await
            .expect("the partitions did not start");
        let rest0 = timeout(PATIENCE, collect(p0))
            .await
            .expect("partition 0 did not end")
            .unwrap();
        let mut read = values(&[first0.unwrap().unwrap(), first1.unwrap().unwrap()]);
        read.extend(values(&rest0));
        (p1, read)
    }

    /// A reads partition 0 to the end while its partition 1 is still open; then B reads
    /// both. Per-partition sharing replayed B's partition 0 and ran B's own subplan for
    /// partition 1 alone, which waited forever for partition 0.
    #[tokio::test]
    async fn an_instance_never_runs_its_subplan_for_some_partitions_only() {
        let results = Arc::new(SharedResults::new(1, 2, 2));
        let (leaf_a, leaf_b) = (Meeting::new(2), Meeting::new(2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        let context = Arc::new(TaskContext::default());
        let (a1, read) = partition_1_left_open(&a, &context).await;
        assert_eq!(read, [1, 11, 2]);
        // A's partition 1 is open, half read.
        assert_eq!(read_all(&b, &context).await, [vec![1, 2], vec![11, 12]]);
        assert_eq!(leaf_b.executed(), 0, "B's own subplan ran");
        let rest1 = timeout(PATIENCE, collect(a1))
            .await
            .expect("A's partition 1 did not end")
            .unwrap();
        assert_eq!(values(&rest1), [12]);
    }

    /// As under a LIMIT: A stops reading partition 1 after its first batch and drops it.
    /// B must still get every row, and not wait.
    #[tokio::test]
    async fn an_instance_read_in_part_leaves_the_others_whole_results() {
        let results = Arc::new(SharedResults::new(1, 2, 2));
        let (leaf_a, leaf_b) = (Meeting::new(2), Meeting::new(2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        let context = Arc::new(TaskContext::default());
        let (a1, _) = partition_1_left_open(&a, &context).await;
        drop(a1);
        assert_eq!(read_all(&b, &context).await, [vec![1, 2], vec![11, 12]]);
    }

    /// As a merge join or an interleave reads them: the same partition of both
    /// instances at once. Neither waits on the other, and one subplan runs, whole.
    #[tokio::test]
    async fn instances_read_at_once_run_one_subplan() {
        let results = Arc::new(SharedResults::new(1, 2, 2));
        let (leaf_a, leaf_b) = (Meeting::new(2), Meeting::new(2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        let context = Arc::new(TaskContext::default());
        let streams = [
            a.execute(0, Arc::clone(&context)).unwrap(),
            b.execute(0, Arc::clone(&context)).unwrap(),
            b.execute(1, Arc::clone(&context)).unwrap(),
            a.execute(1, Arc::clone(&context)).unwrap(),
        ];
        let read = futures::future::join_all(streams.into_iter().map(collect));
        let read: Vec<Vec<i64>> = timeout(PATIENCE, read)
            .await
            .expect("instances read at once hung")
            .into_iter()
            .map(|batches| values(&batches.unwrap()))
            .collect();
        assert_eq!(read, [vec![1, 2], vec![1, 2], vec![11, 12], vec![11, 12]]);
        assert_eq!(leaf_a.executed() + leaf_b.executed(), 2);
    }

    /// The kept results count against the memory pool until the last instance has read
    /// them, or until the plan is dropped if one never does.
    #[tokio::test]
    async fn kept_results_are_counted_until_no_instance_needs_them() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 20));
        let context = context_with(Arc::clone(&pool));
        let results = Arc::new(SharedResults::new(1, 2, 2));
        let (leaf_a, leaf_b) = (Meeting::new(2), Meeting::new(2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        assert_eq!(read_all(&a, &context).await, [vec![1, 2], vec![11, 12]]);
        assert!(pool.reserved() > 0, "B's results are not kept");
        assert_eq!(read_all(&b, &context).await, [vec![1, 2], vec![11, 12]]);
        assert_eq!(pool.reserved(), 0);

        // B is never read (a join whose build side is empty): the results go with the plan.
        let results = Arc::new(SharedResults::new(2, 2, 2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        read_all(&a, &context).await;
        assert!(pool.reserved() > 0);
        drop((a, b, results));
        assert_eq!(pool.reserved(), 0);
    }

    /// Past the memory it may use, a partition's results go to disk and come back in
    /// order.
    #[tokio::test]
    async fn results_past_the_memory_limit_are_spilled_and_replayed_in_order() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1));
        let context = context_with(Arc::clone(&pool));
        let results = Arc::new(SharedResults::new(1, 2, 2));
        let (leaf_a, leaf_b) = (Meeting::new(2), Meeting::new(2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        assert_eq!(read_all(&a, &context).await, [vec![1, 2], vec![11, 12]]);
        assert_eq!(read_all(&b, &context).await, [vec![1, 2], vec![11, 12]]);
        assert_eq!(pool.reserved(), 0);
    }

    /// A subplan that fails fails every instance that reads it, and none waits.
    #[tokio::test]
    async fn a_failure_reaches_every_instance() {
        let results = Arc::new(SharedResults::new(1, 2, 2));
        let (leaf_a, leaf_b) = (Meeting::failing(2), Meeting::failing(2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        let context = Arc::new(TaskContext::default());
        for plan in [&a, &b] {
            for partition in 0..2 {
                let stream = plan.execute(partition, Arc::clone(&context)).unwrap();
                let read = timeout(PATIENCE, collect(stream))
                    .await
                    .expect("a failed subplan hung");
                let error = read.unwrap_err().to_string();
                assert!(error.contains("the subplan failed"), "{error}");
            }
        }
    }

    /// A recursive query runs its plan again after resetting it: each instance then
    /// computes its own results.
    #[tokio::test]
    async fn a_reset_instance_runs_again() {
        let results = Arc::new(SharedResults::new(1, 2, 2));
        let (leaf_a, leaf_b) = (Meeting::new(2), Meeting::new(2));
        let (a, b) = (instance(&leaf_a, &results), instance(&leaf_b, &results));
        let context = Arc::new(TaskContext::default());
        read_all(&a, &context).await;
        read_all(&b, &context).await;
        let again = Arc::new(a).reset_state().unwrap();
        let streams = (0..2)
            .map(|p| again.execute(p, Arc::clone(&context)).unwrap())
            .collect::<Vec<_>>();
        let read = futures::future::join_all(streams.into_iter().map(collect));
        let read: Vec<Vec<i64>> = timeout(PATIENCE, read)
            .await
            .expect("a reset instance hung")
            .into_iter()
            .map(|batches| values(&batches.unwrap()))
            .collect();
        assert_eq!(read, [vec![1, 2], vec![11, 12]]);
    }
}
