//! Delta snapshots that are plain Parquet files, scanned the way DataFusion scans Parquet.
//!
//! deltalake's own scan always turns on Parquet row-level filtering (every pushed
//! predicate evaluated row by row, and twice) and adds a file-id column; on TPC-H that
//! makes scan-bound queries much slower than DataFusion reading the same files (figures:
//! docs/benchmarks/log.md#2026-11-21-delta-snapshots-read-as-parquet-tcp_nodelay-kept).
//! When a snapshot needs none of what that scan exists for (no deletion vectors in its
//! files, no column mapping, no partition values to inject, no unknown reader
//! features), its file list from the Delta log is all a scan needs: files are then read
//! with the session's Parquet options, statistics come from the footers as for any
//! Parquet port, and filters reach the reader through DataFusion's filter pushdown.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::{DFSchema, Result, Statistics, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};
use tokio::sync::OnceCell;

/// Reader features whose tables read the same as plain Parquet files. Deletion
/// vectors are allowed as a feature; files that carry one are not.
const PLAIN_READER_FEATURES: &[&str] = &[
    "deletionVectors",
    "timestampNtz",
    "v2Checkpoint",
    "vacuumProtocolCheck",
];

/// The snapshot's files, or why they cannot be read as plain Parquet.
pub(crate) fn plain_files(table: &DeltaTable) -> std::result::Result<Vec<ObjectMeta>, String> {
    let snapshot = table.snapshot().map_err(|e| e.to_string())?;
    let protocol = snapshot.protocol();
    match protocol.min_reader_version() {
        1 => {}
        3 => {
            let features = protocol.reader_features().unwrap_or_default();
            if let Some(f) = features
                .iter()
                .find(|f| !PLAIN_READER_FEATURES.contains(&f.as_ref()))
            {
                return Err(format!("reader feature `{}`", f.as_ref()));
            }
        }
        v => return Err(format!("reader version {v} (column mapping)")),
    }
    if !snapshot.metadata().partition_columns().is_empty() {
        return Err("partition columns".into());
    }
    let mut files = Vec::new();
    for file in snapshot.log_data().iter() {
        if file.deletion_vector_descriptor().is_some() {
            return Err(format!("deletion vector on `{}`", file.path()));
        }
        // Shallow clones name files by absolute URL, possibly in another store.
        if file.path().contains("://") {
            return Err(format!("file `{}` outside the table", file.path()));
        }
        files.push(ObjectMeta {
            location: file.object_store_path(),
            last_modified: file.modification_datetime().unwrap_or_default(),
            size: u64::try_from(file.size()).unwrap_or_default(),
            e_tag: None,
            version: None,
        });
    }
    Ok(files)
}

/// A Delta snapshot's files read as a Parquet table.
#[derive(Debug)]
pub(crate) struct DeltaFilesTable {
    /// The schema deltalake gives the table, so both scans expose the same columns.
    schema: SchemaRef,
    /// The table's root as a store, and the URL scans find it under (deltalake's).
    store: Arc<dyn ObjectStore>,
    store_url: ObjectStoreUrl,
    files: Vec<ObjectMeta>,
    /// Files with their footer statistics, and the table's; read on the first scan.
    statistics: OnceCell<(Vec<PartitionedFile>, Statistics)>,
}

impl DeltaFilesTable {
    pub(crate) fn new(schema: SchemaRef, table: &DeltaTable, files: Vec<ObjectMeta>) -> Self {
        let log_store = table.log_store();
        Self {
            schema,
            store: log_store.object_store(None),
            store_url: log_store.object_store_url(),
            files,
            statistics: OnceCell::new(),
        }
    }

    /// The files whose footer statistics may match `filters` (None: no filter prunes),
    /// so EXPLAIN lists only the files a scan opens, as deltalake's scan does.
    fn prune(
        &self,
        state: &dyn Session,
        files: &[PartitionedFile],
        filters: &[Expr],
    ) -> Result<Option<Vec<PartitionedFile>>> {
        let Some(filter) = conjunction(filters.iter().cloned()) else {
            return Ok(None);
        };
        if files.iter().any(|f| f.statistics.is_none()) {
            return Ok(None);
        }
        let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
        let predicate = state.create_physical_expr(filter, &df_schema)?;
        // None when statistics cannot decide the filter (a UDF, say): no file is skipped.
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(Arc::clone(&self.schema))
            .build(predicate)
        else {
            return Ok(None);
        };
        let statistics = files.iter().filter_map(|f| f.statistics.clone()).collect();
        let keep = pruning.prune(&PrunableStatistics::new(
            statistics,
            Arc::clone(&self.schema),
        ))?;
        Ok(Some(
            files
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|(f, _)| f.clone())
                .collect(),
        ))
    }

    async fn files_with_statistics(
        &self,
        state: &dyn Session,
        format: &ParquetFormat,
    ) -> Result<&(Vec<PartitionedFile>, Statistics)> {
        self.statistics
            .get_or_try_init(|| async {
                if !state.config().collect_statistics() {
                    let files = self
                        .files
                        .iter()
                        .cloned()
                        .map(PartitionedFile::from)
                        .collect();
                    return Ok((files, Statistics::new_unknown(&self.schema)));
                }
                let store = Arc::clone(&self.store);
                let concurrency = state
                    .config_options()
                    .execution
                    .meta_fetch_concurrency
                    .get();
                // Futures collected first: a stream mapping borrowed items is not `Send`
                // enough for `async_trait`.
                let reads: Vec<_> = self
                    .files
                    .iter()
                    .map(|meta| {
                        let store = Arc::clone(&store);
                        async move {
                            let stats = format
                                .infer_stats(state, &store, Arc::clone(&self.schema), meta)
                                .await?;
                            Ok::<_, datafusion::error::DataFusionError>(
                                PartitionedFile::from(meta.clone())
                                    .with_statistics(Arc::new(stats)),
                            )
                        }
                    })
                    .collect();
                let files: Vec<PartitionedFile> = futures::stream::iter(reads)
                    .buffered(concurrency)
                    .try_collect()
                    .await?;
                let table = Statistics::try_merge_iter(
                    files.iter().filter_map(|f| f.statistics.as_deref()),
                    &self.schema,
                )?;
                Ok((files, table))
            })
            .await
    }
}

#[async_trait]
impl TableProvider for DeltaFilesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning and, with `pushdown_filters`, row filtering; a filter above
        // the scan still decides.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        self.statistics.get().map(|(_, s)| s.clone())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Sessions do not share one runtime with the session that opened the port.
        let runtime = state.runtime_env();
        if runtime.object_store(&self.store_url).is_err() {
            runtime.register_object_store(self.store_url.as_ref(), Arc::clone(&self.store));
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let (files, statistics) = self.files_with_statistics(state, &format).await?;
        let (files, statistics) = match self.prune(state, files, filters)? {
            Some(kept) => {
                let statistics = Statistics::try_merge_iter(
                    kept.iter().filter_map(|f| f.statistics.as_deref()),
                    &self.schema,
                )?;
                (kept, statistics)
            }
            None => (files.clone(), statistics.clone()),
        };
        if files.is_empty() {
            let schema = project_schema(&self.schema, projection)?;
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let groups = FileGroup::new(files).split_files(state.config().target_partitions());
        let source = format.file_source(TableSchema::from(Arc::clone(&self.schema)));
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}
