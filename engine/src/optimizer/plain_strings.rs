//! A result that is a plain read of Parquet files decodes the string columns it only
//! passes through as Utf8 / Binary rather than as views.
//!
//! DataFusion reads strings as views (`schema_force_view_types`), which makes
//! comparisons, grouping and joins cheaper. Flight clients get plain Utf8 (older ones
//! cannot read views), so a view column that only passes through to the client is
//! decoded into views and then copied into a plain array. Decoding it as Utf8 in the
//! first place skips that copy, a large part of the server's CPU when a client streams a
//! whole table (figures:
//! docs/benchmarks/log.md#2026-11-22-pass-through-strings-read-plain-for-flight-results-kept).
//! Columns the plan computes with (filters, expressions) stay views, so their
//! expressions keep the types they were planned with; a plan with any operator other
//! than the pass-through ones below is left as it is.
//!
//! This changes the plan's output schema, so it is not a DataFusion optimizer rule
//! (those must keep it): the Flight server applies it to the plans it streams.
//!
//! Upstream: DataFusion's `expand_views_at_output` (apache/datafusion#12271) casts
//! views at the output, after decoding into them; no issue asks scans to decode
//! pass-through columns as `Utf8`, so this stays until one does.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;

/// `plan` with the view columns it passes through from Parquet scans read as plain
/// Utf8 / Binary; `plan` itself where there are none or an operator is not one this
/// knows to pass columns through unchanged.
pub fn plain_string_results(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(rewrite(&plan, &HashSet::new())?.unwrap_or(plan))
}

/// `plan` rewritten, where `computed` holds the indices of its output columns that
/// something above computes with (and that must keep their type); None if unchanged.
fn rewrite(
    plan: &Arc<dyn ExecutionPlan>,
    computed: &HashSet<usize>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan
            .downcast_ref::<crate::bounded::batches::BoundedBatchesExec>()
            .is_some()
        || plan.downcast_ref::<GlobalLimitExec>().is_some()
        || plan.downcast_ref::<LocalLimitExec>().is_some()
        || plan
            .downcast_ref::<RepartitionExec>()
            .is_some_and(|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)))
    {
        let child = &plan.children()[0];
        return match rewrite(child, computed)? {
            Some(new) => {
                let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
                Ok(Some(
                    Arc::clone(plan).replace_children(vec![new], recompute)?,
                ))
            }
            None => Ok(None),
        };
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let mut below = HashSet::new();
        for (i, e) in projection.expr().iter().enumerate() {
            match e.expr.downcast_ref::<Column>() {
                Some(_) if !computed.contains(&i) => {}
                _ => below.extend(columns(&e.expr)),
            }
        }
        // A plain column cast to a view only to be passed through (a cached port's
        // scan, `mesh/cache.rs`) is passed through as it is.
        let mut exprs = projection.expr().to_vec();
        let mut uncast = false;
        for (i, e) in exprs.iter_mut().enumerate() {
            if let Some(cast) = e.expr.downcast_ref::<CastExpr>()
                && !computed.contains(&i)
                && cast.expr().downcast_ref::<Column>().is_some()
                && plain_type(cast.cast_type()).is_some()
                && Some(cast.cast_type().clone())
                    == cast
                        .expr()
                        .data_type(&projection.input().schema())
                        .ok()
                        .and_then(|t| view_type(&t))
            {
                e.expr = Arc::clone(cast.expr());
                uncast = true;
            }
        }
        let input = match rewrite(projection.input(), &below)? {
            Some(input) => input,
            None if uncast => Arc::clone(projection.input()),
            None => return Ok(None),
        };
        // Rebuilt rather than given a new child: the projection's output types follow
        // its input's.
        return Ok(Some(Arc::new(ProjectionExec::try_new(exprs, input)?)));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let mut below = columns(filter.predicate());
        match filter.projection() {
            Some(p) => below.extend(computed.iter().filter_map(|i| p.get(*i).copied())),
            None => below.extend(computed.iter().copied()),
        }
        let Some(input) = rewrite(filter.input(), &below)? else {
            return Ok(None);
        };
        let new = FilterExecBuilder::from(filter).with_input(input).build()?;
        return Ok(Some(Arc::new(new)));
    }
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        return plain_scan(scan, computed);
    }
    Ok(None)
}

/// The Parquet scan `scan` reading the view columns not in `computed` (indices of its
/// output) as plain ones.
fn plain_scan(
    scan: &DataSourceExec,
    computed: &HashSet<usize>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some((config, source)) = scan.downcast_to_file_source::<ParquetSource>() else {
        return Ok(None);
    };
    let options = source.table_parquet_options();
    let table = source.table_schema();
    // Settings this cannot carry over to a new source: leave such scans alone. (An
    // output ordering may come with sort pushdown's private settings.)
    if !table.virtual_columns().is_empty()
        || !config.output_ordering.is_empty()
        || options.crypto.file_decryption.is_some()
        || options.crypto.factory_id.is_some()
    {
        return Ok(None);
    }
    let Some(projection) = source.projection() else {
        return Ok(None);
    };
    // Table columns the scan computes with: its predicate's, and those under the
    // projection's expressions or the output columns computed above.
    let mut kept: HashSet<usize> = source.filter().map(|p| columns(&p)).unwrap_or_default();
    let mut read = HashSet::new();
    for (i, e) in projection.iter().enumerate() {
        match e.expr.downcast_ref::<Column>() {
            Some(c) if !computed.contains(&i) => {
                read.insert(c.index());
            }
            _ => kept.extend(columns(&e.expr)),
        }
    }
    let file_schema = table.file_schema();
    let mut changed = false;
    let fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match plain_type(f.data_type()) {
            Some(t) if read.contains(&i) && !kept.contains(&i) => {
                changed = true;
                f.as_ref().clone().with_data_type(t)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    if !changed {
        return Ok(None);
    }
    let plain = Arc::new(Schema::new_with_metadata(
        fields,
        file_schema.metadata().clone(),
    ));
    let table = TableSchema::builder(plain)
        .with_table_partition_cols(
            table
                .table_partition_cols()
                .iter()
                .cloned()
                .collect::<Vec<_>>(),
        )
        .build();
    let mut new = ParquetSource::new(table).with_table_parquet_options(options.clone());
    if let Some(factory) = source.parquet_file_reader_factory() {
        new = new.with_parquet_file_reader_factory(Arc::clone(factory));
    }
    if let Some(hint) = options.global.metadata_size_hint {
        new = new.with_metadata_size_hint(hint);
    }
    if let Some(predicate) = source.filter() {
        new = new.with_predicate(predicate);
    }
    let Some(new) = FileSource::try_pushdown_projection(&new, projection)? else {
        return Ok(None);
    };
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(new)
        .build();
    Ok(Some(DataSourceExec::from_data_source(config)))
}

/// The plain type a view type is passed through as.
pub(crate) fn plain_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

fn view_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8 => Some(DataType::Utf8View),
        DataType::Binary => Some(DataType::BinaryView),
        _ => None,
    }
}

fn columns(expr: &Arc<dyn PhysicalExpr>) -> HashSet<usize> {
    collect_columns(expr).iter().map(Column::index).collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};

    use super::*;

    /// A context with `t(s, n, c)` in a Parquet file, strings read as views.
    async fn context(dir: &std::path::Path) -> SessionContext {
        let ctx = SessionContext::new();
        let path = dir.join("t.parquet");
        ctx.sql(&format!(
            "COPY (SELECT * FROM (VALUES ('a', 1, 'x'), ('bb', 2, NULL), \
             ('a string longer than twelve bytes', 3, 'z')) AS v(s, n, c)) \
             TO '{}' STORED AS PARQUET",
            path.display()
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx
    }

    /// The types of the rewritten plan's output columns; fails unless it returns the
    /// same rows as the plan DataFusion made.
    async fn output_types(ctx: &SessionContext, sql: &str) -> Vec<DataType> {
        // Planned twice: a plan runs once (TopK hands its dynamic filter on).
        let plan = || async {
            ctx.sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap()
        };
        // As the session plans it: with the batch bounds over filters and repartitions.
        let bounded = crate::bounded::bound_batches(plan().await).unwrap();
        let rewritten = plain_string_results(bounded).unwrap();
        let expected = collect(plan().await, ctx.task_ctx()).await.unwrap();
        let got = collect(Arc::clone(&rewritten), ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(
            pretty_format_batches(&got).unwrap().to_string(),
            pretty_format_batches(&expected).unwrap().to_string(),
            "{sql}"
        );
        for batch in &got {
            assert_eq!(batch.schema(), rewritten.schema(), "{sql}");
        }
        let schema = rewritten.schema();
        schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    }

    /// A cached port's scan: plain strings in memory, cast to views for the plan.
    #[tokio::test]
    async fn plain_strings_cast_to_views_are_passed_through_plain() {
        use DataType::{Int64, Utf8, Utf8View};
        use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
        use datafusion::datasource::MemTable;
        let schema = Arc::new(Schema::new(vec![
            Field::new("p", Utf8, true),
            Field::new("n", Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("a longer string"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("m", Arc::new(table)).unwrap();
        let view = "SELECT CAST(p AS VARCHAR) AS v, n FROM m";
        ctx.sql(&format!("CREATE VIEW mv AS {view}")).await.unwrap();
        for (sql, types) in [
            ("SELECT * FROM mv", vec![Utf8, Int64]),
            ("SELECT v FROM mv WHERE n > 1", vec![Utf8]),
            // DataFusion filters below the cast, on a cast of its own.
            ("SELECT v FROM mv WHERE v <> 'a'", vec![Utf8]),
            ("SELECT upper(v) AS u, n FROM mv", vec![Utf8View, Int64]),
        ] {
            assert_eq!(output_types(&ctx, sql).await, types, "{sql}");
        }
    }

    #[tokio::test]
    async fn passed_through_strings_are_read_plain() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        use DataType::{Int64, Utf8, Utf8View};
        for (sql, types) in [
            ("SELECT * FROM t", vec![Utf8, Int64, Utf8]),
            (
                "SELECT c, s FROM t ORDER BY n LIMIT 2",
                vec![Utf8View, Utf8View],
            ),
            ("SELECT c, s FROM t LIMIT 2", vec![Utf8, Utf8]),
            // Filtered on: compared as a view, as planned.
            ("SELECT s, c FROM t WHERE s <> 'bb'", vec![Utf8View, Utf8]),
            ("SELECT s, c FROM t WHERE n > 1", vec![Utf8, Utf8]),
            // Computed with: its expression keeps its input type.
            (
                "SELECT upper(s) AS u, s, c FROM t",
                vec![Utf8View, Utf8View, Utf8],
            ),
            (
                "SELECT s, count(*) FROM t GROUP BY s",
                vec![Utf8View, Int64],
            ),
        ] {
            assert_eq!(output_types(&ctx, sql).await, types, "{sql}");
        }
    }
}
