//! A filter of join keys that stops where it does not pay.
//!
//! A join's keys are known only once it has read its build side, so whether they drop
//! many of a scan's rows is known only at run time. Looking a row's key up costs about
//! as much as the join's own lookup, so a filter that keeps most rows is pure cost
//! (TPC-H Q9: the orders join's keys are all 1.5M orders, and keep every lineitem).
//! Each partition filters a sample of rows and, if the filter keeps most of them,
//! passes the rest through unfiltered: the join still drops them, so results are the
//! same either way.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::common::internal_err;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// Rows each partition filters before judging whether the filter pays.
const SAMPLE_ROWS: usize = 65_536;
/// The share of rows kept above which the filter stops.
const KEEPS_TOO_MANY: f64 = 0.8;

/// Keeps its input's rows for which `predicate` (join filters) holds, while that drops
/// enough of them. Same partitioning and order as its input.
#[derive(Debug)]
pub(crate) struct JoinKeyFilterExec {
    predicate: Arc<dyn PhysicalExpr>,
    input: Arc<dyn ExecutionPlan>,
    metrics: ExecutionPlanMetricsSet,
}

impl JoinKeyFilterExec {
    pub(crate) fn new(predicate: Arc<dyn PhysicalExpr>, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            predicate,
            input,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for JoinKeyFilterExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "JoinKeyFilterExec: {}", self.predicate)
    }
}

impl ExecutionPlan for JoinKeyFilterExec {
    fn name(&self) -> &str {
        "JoinKeyFilterExec"
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
            Arc::clone(&self.predicate),
            children.swap_remove(0),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // Over the rows it looked up; `unfiltered_rows` passed after it stopped.
        let selectivity = MetricBuilder::new(&self.metrics).ratio_metrics("selectivity", partition);
        let unfiltered = MetricBuilder::new(&self.metrics).counter("unfiltered_rows", partition);
        let predicate = Arc::clone(&self.predicate);
        let (mut seen, mut kept) = (0usize, 0usize);
        let stream = input.filter_map(move |batch| {
            let out = (|| {
                let batch = batch?;
                if seen >= SAMPLE_ROWS && kept as f64 > KEEPS_TOO_MANY * seen as f64 {
                    unfiltered.add(batch.num_rows());
                    return Ok(batch);
                }
                let _timer = baseline.elapsed_compute().timer();
                let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                let Some(mask) = mask.as_boolean_opt() else {
                    return internal_err!("join filter {predicate} is not a boolean");
                };
                let out = filter_record_batch(&batch, mask)?;
                seen += batch.num_rows();
                kept += out.num_rows();
                selectivity.add_total(batch.num_rows());
                selectivity.add_part(out.num_rows());
                Ok(out)
            })();
            if let Ok(b) = &out {
                b.record_output(&baseline);
            }
            // Batches with no rows left are dropped, as FilterExec does.
            let keep = !matches!(&out, Ok(b) if b.num_rows() == 0);
            futures::future::ready(keep.then_some(out))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.predicate)
    }
}
