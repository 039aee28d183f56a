//! Statements over Flight SQL: stateless handles, planning, parameters, and result
//! streams converted to types every client reads.
//!
//! Nothing about a statement lives in server memory between calls: the ticket and the
//! prepared-statement handle carry the SQL (and bound parameters), and are planned again
//! where they are executed, so any replica can answer any ticket.

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::error::FlightError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt};
use meshql_engine::{Identity, MeshEngine, Planned};
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::frames::{self, FrameStream};
use super::status::{df_status, status};

/// What a ticket or prepared-statement handle carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Handle {
    /// The statement, with `?` already rewritten to `$1..$n`.
    pub sql: String,
    /// Bound parameters: one row as an Arrow IPC stream, LZ4 (size first), base64. The
    /// schema of thousands of parameters repeats itself: compressed, 65,535 of them fit
    /// in a reply that clients accept by default (16 MiB).
    #[serde(
        default,
        rename = "params_lz4",
        skip_serializing_if = "Option::is_none"
    )]
    pub params: Option<String>,
}

/// The most bound parameters may take in a handle, encoded: the handle travels in
/// replies and tickets that clients cap at 16 MiB by default.
pub(crate) const MAX_ENCODED_PARAMS: usize = 8 << 20;
/// The most they may take decoded (no handle expands past this).
const MAX_DECODED_PARAMS: usize = 256 << 20;

impl Handle {
    pub(crate) fn new(sql: &str) -> Self {
        Handle {
            sql: rewrite_placeholders(sql),
            params: None,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(bytes).map_err(|_| {
            Status::invalid_argument(
                "unknown ticket or statement handle: prepare the statement again",
            )
        })
    }

    pub(crate) fn with_params(mut self, batch: &RecordBatch) -> Result<Self, Status> {
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())
            .map_err(|e| Status::invalid_argument(format!("invalid parameters: {e}")))?;
        writer
            .write(batch)
            .and_then(|()| writer.finish())
            .map_err(|e| Status::invalid_argument(format!("invalid parameters: {e}")))?;
        drop(writer);
        let encoded = STANDARD.encode(lz4_flex::block::compress_prepend_size(&bytes));
        if encoded.len() > MAX_ENCODED_PARAMS {
            return Err(Status::invalid_argument(format!(
                "the {} bound parameter values take {} MiB in the statement handle, more than \
                 its {} MiB: bind fewer or smaller values (or read them from a table)",
                batch.num_columns(),
                encoded.len() >> 20,
                MAX_ENCODED_PARAMS >> 20
            )));
        }
        self.params = Some(encoded);
        Ok(self)
    }

    fn param_values(&self) -> Result<Option<Vec<ScalarValue>>, Status> {
        let Some(encoded) = &self.params else {
            return Ok(None);
        };
        let bad = |e: String| Status::invalid_argument(format!("invalid bound parameters: {e}"));
        if encoded.len() > MAX_ENCODED_PARAMS * 4 / 3 + 4 {
            return Err(bad("too large".into()));
        }
        let compressed = STANDARD.decode(encoded).map_err(|e| bad(e.to_string()))?;
        let (size, _) =
            lz4_flex::block::uncompressed_size(&compressed).map_err(|e| bad(e.to_string()))?;
        if size > MAX_DECODED_PARAMS {
            return Err(bad(format!("{size} bytes when decoded")));
        }
        let bytes = lz4_flex::block::decompress_size_prepended(&compressed)
            .map_err(|e| bad(e.to_string()))?;
        let reader =
            StreamReader::try_new(bytes.as_slice(), None).map_err(|e| bad(e.to_string()))?;
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            if batch.num_rows() == 0 {
                continue;
            }
            for column in batch.columns() {
                values
                    .push(ScalarValue::try_from_array(column, 0).map_err(|e| bad(e.to_string()))?);
            }
            break;
        }
        Ok(Some(values))
    }
}

/// DataFusion reads every `?` as the same placeholder: number them `$1..$n`, outside
/// string literals, quoted identifiers and comments.
pub(crate) fn rewrite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            _ => out.push(c),
        }
    }
    out
}

/// Plan `handle` for `user`, under `user`'s policies, with parameters bound. Handles
/// carry no plan: each call plans again for whoever presents it, so a handle made by
/// one user never runs with another's rights.
pub(crate) async fn plan(
    engine: &MeshEngine,
    user: &Identity,
    handle: &Handle,
) -> Result<Planned, Status> {
    let planned = engine
        .session(user)
        .plan(&handle.sql)
        .await
        .map_err(status)?;
    match handle.param_values()? {
        Some(values) => planned
            .map_df(|df| {
                df.with_param_values(ParamValues::List(
                    values.into_iter().map(Into::into).collect(),
                ))
            })
            .await
            .map_err(status),
        None => Ok(planned),
    }
}

/// The parameter schema of a prepared statement: `$1..$n`, nullable, with a concrete
/// type (Utf8 when DataFusion cannot infer one).
pub(crate) fn parameter_schema(df: &DataFrame) -> Result<Schema, Status> {
    let types = df.logical_plan().get_parameter_types().map_err(df_status)?;
    let mut fields: Vec<(usize, Field)> = types
        .into_iter()
        .map(|(name, t)| {
            let index = name
                .trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX);
            let data_type = t.filter(|t| *t != DataType::Null).unwrap_or(DataType::Utf8);
            (index, Field::new(name, data_type, true))
        })
        .collect();
    fields.sort_by_key(|(i, _)| *i);
    Ok(Schema::new(
        fields.into_iter().map(|(_, f)| f).collect::<Vec<_>>(),
    ))
}

/// View types (on by default in DataFusion) are not readable by older clients (JDBC):
/// results go out as plain Utf8 / Binary.
pub fn client_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| Arc::new(client_field(f)))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn client_field(f: &Field) -> Field {
    match f.data_type() {
        DataType::Utf8View => f.clone().with_data_type(DataType::Utf8),
        DataType::BinaryView => f.clone().with_data_type(DataType::Binary),
        _ => f.clone(),
    }
}

fn to_client_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, FlightError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Execute `df` and stream it as Flight data, batch by batch. Dropping the stream (a
/// client that goes away) drops the DataFusion stream, which cancels the query. Logs
/// one line per query when the stream ends.
pub(crate) async fn execute(
    planned: Planned,
    user: &Identity,
    sql: &str,
) -> Result<FrameStream, Status> {
    let schema = client_schema(planned.df().schema().as_arrow());
    let started = Instant::now();
    let stream = planned.execute_plain_strings().await.map_err(status)?;
    let mut log = QueryLog {
        query_id: next_query_id(),
        user: user.user.clone(),
        sql: sql.chars().take(200).collect(),
        started,
        rows: 0,
        bytes: 0,
        outcome: "cancelled",
    };
    let batches = stream
        .map_err(|e| FlightError::Tonic(Box::new(df_status(e))))
        .inspect(move |b| log.observe(b));
    Ok(encode(schema, batches))
}

/// The Flight encoding of a result (benches/flight_encoding.rs measures it): batches
/// cast to the client schema of [`client_schema`], then IPC-encoded as Flight data.
pub fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> FrameStream {
    let batch_schema = Arc::clone(&schema);
    let batches =
        batches.and_then(move |b| futures::future::ready(to_client_batch(b, &batch_schema)));
    frames::encode(schema, batches)
}

/// The structured log line of one query, written when the result stream ends or is dropped.
struct QueryLog {
    query_id: u64,
    user: String,
    sql: String,
    started: Instant,
    rows: usize,
    bytes: usize,
    outcome: &'static str,
}

impl QueryLog {
    fn observe(&mut self, batch: &Result<RecordBatch, FlightError>) {
        match batch {
            Ok(b) => {
                self.rows += b.num_rows();
                self.bytes += b.get_array_memory_size();
                self.outcome = "ok";
            }
            Err(_) => self.outcome = "error",
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        tracing::info!(
            query_id = self.query_id,
            user = %self.user,
            duration_ms = self.started.elapsed().as_millis() as u64,
            rows = self.rows,
            bytes = self.bytes,
            outcome = self.outcome,
            sql = %self.sql,
            "query"
        );
    }
}

fn next_query_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: usize) -> RecordBatch {
        let fields: Vec<Field> = (1..=n)
            .map(|i| Field::new(format!("${i}"), DataType::Int64, true))
            .collect();
        let columns: Vec<ArrayRef> = (0..n)
            .map(|i| {
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![i as i64])) as ArrayRef
            })
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn the_most_parameters_a_statement_can_have_fit_in_a_reply() {
        let handle = Handle::new("SELECT 1")
            .with_params(&params(65_535))
            .unwrap();
        let encoded = handle.encode();
        // Clients take 16 MiB replies by default; the reply holds this handle once.
        assert!(encoded.len() < 4 << 20, "{} bytes", encoded.len());
        let values = Handle::decode(&encoded)
            .unwrap()
            .param_values()
            .unwrap()
            .unwrap();
        assert_eq!(values.len(), 65_535);
        assert_eq!(values[65_534], ScalarValue::Int64(Some(65_534)));
    }

    #[test]
    fn handles_that_would_expand_without_bound_are_refused() {
        // 4 bytes of size claiming 4 GiB, then garbage.
        let mut bomb = u32::MAX.to_le_bytes().to_vec();
        bomb.extend([0u8; 64]);
        let handle = Handle {
            sql: "SELECT $1".into(),
            params: Some(STANDARD.encode(bomb)),
        };
        let err = Handle::decode(&handle.encode())
            .unwrap()
            .param_values()
            .unwrap_err();
        assert!(err.message().contains("when decoded"), "{err}");
        let garbage = Handle {
            sql: "SELECT $1".into(),
            params: Some(STANDARD.encode([8u8, 0, 0, 0, 1, 2, 3])),
        };
        assert_eq!(
            garbage.param_values().unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn placeholders_are_numbered_outside_literals_and_comments() {
        assert_eq!(
            rewrite_placeholders("SELECT ? , '?', \"a?\" FROM t WHERE a = ? -- ?\nAND b = ?"),
            "SELECT $1 , '?', \"a?\" FROM t WHERE a = $2 -- ?\nAND b = $3"
        );
    }
}
