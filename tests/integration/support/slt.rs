//! sqllogictest over the embedded engine. The Flight SQL path (server issue) runs the
//! same files with its own `AsyncDB`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use meshql_engine::MeshEngine;
use sqllogictest::{DBOutput, DefaultColumnType};

/// One embedded connection to the test mesh.
/// The password of every user of the policy test mesh (tests/fixtures/policy).
pub(crate) const TEST_PASSWORD: &str = "policy test:pw";

/// A `\user NAME` line switches the connection to that user (embedded: a session of
/// that identity; Flight SQL: a sign-in). Policy files start every block with one.
fn user_switch(sql: &str) -> Option<&str> {
    sql.trim().strip_prefix("\\user ").map(str::trim)
}

pub(crate) struct EngineDb {
    pub engine: Arc<MeshEngine>,
    pub session: meshql_engine::MeshSession,
}

impl EngineDb {
    pub(crate) fn new(engine: Arc<MeshEngine>) -> Self {
        let session = engine.session(&meshql_engine::Identity::anonymous());
        EngineDb { engine, session }
    }
}

#[derive(Debug)]
pub(crate) struct SltError(pub String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

#[async_trait]
impl sqllogictest::AsyncDB for EngineDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if let Some(user) = user_switch(sql) {
            let groups = self
                .engine
                .access()
                .and_then(|a| a.users.get(user))
                .map(|u| u.groups.clone())
                .ok_or_else(|| SltError(format!("no user {user} in the test mesh")))?;
            self.session = self
                .engine
                .session(&meshql_engine::Identity::new(user, groups));
            return Ok(DBOutput::StatementComplete(0));
        }
        let result = async {
            let planned = self.session.plan(sql).await?;
            let schema = Arc::clone(planned.df().schema().inner());
            let stream = planned.execute().await?;
            let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream)
                .await
                .map_err(meshql_engine::Error::from)?;
            Ok::<_, meshql_engine::Error>((schema, batches))
        };
        let (schema, batches) = result.await.map_err(|e| SltError(e.to_string()))?;
        output(&schema, &batches)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meshql-embedded"
    }
}

/// Rows and column types of a result, or "statement complete" when it has no columns.
fn output(
    schema: &Schema,
    batches: &[RecordBatch],
) -> Result<DBOutput<DefaultColumnType>, SltError> {
    if schema.fields().is_empty() {
        return Ok(DBOutput::StatementComplete(0));
    }
    let types = schema
        .fields()
        .iter()
        .map(|f| column_type(f.data_type()))
        .collect();
    Ok(DBOutput::Rows {
        types,
        rows: rows(batches).map_err(SltError)?,
    })
}

pub(crate) fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// All rows of `sql` run as `who`, as text (see [`rows`]); errors as their message.
pub(crate) async fn query(
    engine: &meshql_engine::MeshEngine,
    who: &meshql_engine::Identity,
    sql: &str,
) -> Result<Vec<Vec<String>>, String> {
    use futures::TryStreamExt;
    let run = async {
        let stream = engine.session(who).plan(sql).await?.execute().await?;
        let batches: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(meshql_engine::Error::from)?;
        Ok::<_, meshql_engine::Error>(batches)
    };
    rows(&run.await.map_err(|e| e.to_string())?)
}

/// Values as text: NULL for nulls, `(empty)` for empty strings (slt cannot show them).
pub(crate) fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(row).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Every `.slt` file under tests/slt, optionally filtered by `MESHQL_SLT` (substring).
/// The .slt files of `tests/<subdir>`.
pub(crate) fn slt_files(subdir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests")
        .join(subdir);
    let filter = std::env::var("MESHQL_SLT").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| p.to_string_lossy().contains(&filter))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .slt files in {} (filter {filter:?})",
        dir.display()
    );
    files
}

/// Run (or with `MESHQL_SLT_COMPLETE=1`, rewrite the expected output of) every file
/// against connections made by `connect`. Panics listing every failing file.
pub(crate) async fn run_all<D, F, Fut>(subdir: &str, connect: F)
where
    D: sqllogictest::AsyncDB<ColumnType = DefaultColumnType> + 'static,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<D, D::Error>> + Send,
{
    let complete = std::env::var("MESHQL_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for file in slt_files(subdir) {
        let mut runner = sqllogictest::Runner::new(connect.clone());
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if complete {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::strict_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("completing {}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}:\n{}", file.display(), e.display(true)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} .slt file(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// One Flight SQL connection to a running `meshql serve`: the same .slt files, through
/// the protocol clients use.
pub(crate) struct FlightDb {
    pub client: arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    /// Run every query as a prepared statement (the JDBC driver's way).
    pub prepared: bool,
}

impl FlightDb {
    pub(crate) async fn connect(endpoint: String, prepared: bool) -> Result<Self, SltError> {
        let channel = tonic::transport::Channel::from_shared(endpoint)
            .map_err(|e| SltError(e.to_string()))?
            .connect()
            .await
            .map_err(|e| SltError(e.to_string()))?;
        Ok(FlightDb {
            client: arrow_flight::sql::client::FlightSqlServiceClient::new(channel),
            prepared,
        })
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for FlightDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        use futures::TryStreamExt;
        fn err(e: impl std::fmt::Display) -> SltError {
            SltError(e.to_string())
        }
        if let Some(user) = user_switch(sql) {
            // An old token would be sent along and win over the new Basic credentials.
            self.client.clear_token();
            self.client
                .handshake(user, TEST_PASSWORD)
                .await
                .map_err(err)?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let info = if self.prepared {
            let mut statement = self
                .client
                .prepare(sql.to_string(), None)
                .await
                .map_err(err)?;
            statement.execute().await.map_err(err)?
        } else {
            self.client
                .execute(sql.to_string(), None)
                .await
                .map_err(err)?
        };
        let schema = info.clone().try_decode_schema().map_err(err)?;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| SltError("no ticket".into()))?;
            let stream = self.client.do_get(ticket).await.map_err(err)?;
            batches.extend(stream.try_collect::<Vec<_>>().await.map_err(err)?);
        }
        output(&schema, &batches)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meshql-flight-sql"
    }
}
