//! What a remote source says about its tables (schemas, row counts), kept for a while:
//! asking costs a round trip, and planning asks for row counts on every query.

use std::future::Future;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use moka::future::Cache;

/// Per source. A TTL of zero turns caching off.
#[derive(Clone)]
pub struct MetadataCache {
    ttl: Duration,
    schemas: Cache<String, SchemaRef>,
    rows: Cache<String, Option<u64>>,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Tables a source is asked about stay well below this; it only bounds memory.
const MAX_TABLES: u64 = 10_000;

impl MetadataCache {
    pub fn new(ttl: Duration) -> Self {
        let ttl_or_1ms = ttl.max(Duration::from_millis(1));
        MetadataCache {
            ttl,
            schemas: Cache::builder()
                .max_capacity(MAX_TABLES)
                .time_to_live(ttl_or_1ms)
                .build(),
            rows: Cache::builder()
                .max_capacity(MAX_TABLES)
                .time_to_live(ttl_or_1ms)
                .build(),
        }
    }

    /// The table's schema, fetched with `fetch` unless a fresh one is kept. Failures
    /// are not kept.
    pub async fn schema(
        &self,
        table: &TableReference,
        fetch: impl Future<Output = Result<SchemaRef, String>>,
    ) -> Result<SchemaRef, String> {
        if self.ttl.is_zero() {
            return fetch.await;
        }
        self.schemas
            .try_get_with(table.to_string(), fetch)
            .await
            .map_err(|e| e.as_ref().clone())
    }

    /// The table's row count, fetched with `fetch` unless a fresh one is kept ("unknown"
    /// is kept too, so a source without statistics is not asked on every query).
    pub async fn rows(
        &self,
        table: &TableReference,
        fetch: impl Future<Output = Option<u64>>,
    ) -> Option<u64> {
        if self.ttl.is_zero() {
            return fetch.await;
        }
        self.rows.get_with(table.to_string(), fetch).await
    }

    /// Forget everything: the next question goes to the source.
    pub fn invalidate(&self) {
        self.schemas.invalidate_all();
        self.rows.invalidate_all();
    }
}
