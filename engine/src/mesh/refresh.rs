//! `CALL mesh.refresh()` / `CALL mesh.refresh('source')`: forget what sources said
//! about their tables (schemas, row counts) and open their ports again, so a changed
//! remote table, a new Delta version or a source that came back is used without a
//! restart. Ports already being read keep the table they started with. Lake ports list
//! their files again, and cached ports (`cache:`) read their rows again.
//!
//! The statement plans to a one-partition stream and refreshes when it is read: Flight
//! SQL clients plan a statement more than once (GetFlightInfo, DoGet, prepare).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;

use super::MeshRegistry;

/// Ports refreshed at the same time.
const REFRESH_CONCURRENCY: usize = 8;

/// What happened to one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub port: String,
    pub source: String,
    /// `ready`, or `unavailable: <problem>`.
    pub status: String,
}

impl MeshRegistry {
    /// An error naming the mesh's sources if `name` is not one of them.
    pub fn check_source(&self, name: &str) -> Result<(), String> {
        if self.sources.contains_key(name) {
            return Ok(());
        }
        let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
        Err(format!(
            "there is no source `{name}` in the mesh (sources: {})",
            known.join(", ")
        ))
    }

    /// Refresh the ports of `only` (a source name), or of every source.
    pub async fn refresh(&self, only: Option<&str>) -> Result<Vec<Refreshed>, String> {
        if let Some(name) = only {
            self.check_source(name)?;
        }
        let chosen = |source: &str| only.is_none_or(|name| name == source);
        for info in self.sources.values().filter(|s| chosen(&s.name)) {
            if let Some(source) = &info.source {
                source.refresh();
            }
        }
        // DataFusion keeps directory listings for ever: forget them, so lake ports see
        // files added or removed since they were listed (the ports re-list once).
        if let Some(listings) = self.opener.runtime.cache_manager.get_list_files_cache() {
            listings.clear();
        }
        let ports: Vec<_> = self
            .ports()
            .filter(|(_, p)| p.info.source.as_deref().is_some_and(chosen))
            .map(|(_, p)| Arc::clone(p))
            .collect();
        let opener = &self.opener;
        let mut done: Vec<Refreshed> = futures::stream::iter(ports)
            .map(|port| async move {
                let status = match port.refresh(opener).await? {
                    Ok(()) => "ready".to_string(),
                    Err(problem) => format!("unavailable: {}", problem.describe_without_subject()),
                };
                Some(Refreshed {
                    port: port.info.name.to_string(),
                    source: port.info.source.clone().unwrap_or_default(),
                    status,
                })
            })
            .buffer_unordered(REFRESH_CONCURRENCY)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        done.sort_by(|a, b| a.port.cmp(&b.port));
        Ok(done)
    }
}

/// The statement's result: refreshes when read, one row per port.
pub fn refresh_table(
    registry: Arc<MeshRegistry>,
    only: Option<String>,
) -> datafusion::error::Result<StreamingTable> {
    let schema = Arc::new(Schema::new(
        ["port", "source", "status"]
            .map(|name| Field::new(name, DataType::Utf8, false))
            .to_vec(),
    ));
    let partition = RefreshOnRead {
        registry,
        only,
        schema: Arc::clone(&schema),
    };
    StreamingTable::try_new(schema, vec![Arc::new(partition)])
}

struct RefreshOnRead {
    registry: Arc<MeshRegistry>,
    only: Option<String>,
    schema: SchemaRef,
}

impl std::fmt::Debug for RefreshOnRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshOnRead")
            .field("only", &self.only)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for RefreshOnRead {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let registry = Arc::clone(&self.registry);
        let only = self.only.clone();
        let schema = Arc::clone(&self.schema);
        let batch = futures::stream::once(async move {
            let done = registry
                .refresh(only.as_deref())
                .await
                .map_err(DataFusionError::Plan)?;
            let column = |f: fn(&Refreshed) -> &str| {
                Arc::new(StringArray::from_iter_values(done.iter().map(f))) as ArrayRef
            };
            RecordBatch::try_new(
                schema,
                vec![
                    column(|r| &r.port),
                    column(|r| &r.source),
                    column(|r| &r.status),
                ],
            )
            .map_err(DataFusionError::from)
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batch,
        ))
    }
}

/// `CALL mesh.refresh()` → `Some(Ok(None))`, `CALL mesh.refresh('crm')` →
/// `Some(Ok(Some("crm")))`, other statements → None.
pub fn refresh_call(sql: &str) -> Option<Result<Option<String>, String>> {
    use datafusion::sql::parser::{DFParser, Statement};
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement as SqlStatement, Value,
    };
    // Every statement passes here: only a CALL is parsed a second time.
    let head = sql.trim_start().get(..4)?;
    if !head.eq_ignore_ascii_case("call") {
        return None;
    }
    let statements = Vec::from(DFParser::parse_sql(sql).ok()?);
    let [Statement::Statement(statement)] = statements.as_slice() else {
        return None;
    };
    let SqlStatement::Call(call) = statement.as_ref() else {
        return None;
    };
    if !call.name.to_string().eq_ignore_ascii_case("mesh.refresh") {
        return None;
    }
    let usage = "usage: CALL mesh.refresh() or CALL mesh.refresh('source')";
    let args = match &call.args {
        FunctionArguments::None => return Some(Ok(None)),
        FunctionArguments::List(list) => &list.args,
        FunctionArguments::Subquery(_) => return Some(Err(usage.to_string())),
    };
    Some(match args.as_slice() {
        [] => Ok(None),
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] => match &v.value {
            Value::SingleQuotedString(name) => Ok(Some(name.clone())),
            _ => Err(usage.to_string()),
        },
        _ => Err(usage.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::refresh_call;

    #[test]
    fn recognises_only_the_refresh_call() {
        assert_eq!(refresh_call("CALL mesh.refresh()"), Some(Ok(None)));
        assert_eq!(
            refresh_call("call MESH.REFRESH('crm');"),
            Some(Ok(Some("crm".to_string())))
        );
        assert!(matches!(refresh_call("CALL mesh.refresh(1)"), Some(Err(_))));
        assert_eq!(refresh_call("CALL other.proc()"), None);
        assert_eq!(refresh_call("SELECT 1"), None);
    }
}
