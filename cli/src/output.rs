//! Printing query results: an aligned table, CSV with a header line, or JSON lines.
//! CSV and JSON stream batch by batch; the table needs every row to size its columns.

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use meshql_engine::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

/// Why printing stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    #[error(transparent)]
    Query(#[from] Error),
    #[error("cannot write the result: {0}")]
    Write(String),
}

impl From<std::io::Error> for OutputError {
    fn from(e: std::io::Error) -> Self {
        OutputError::Write(e.to_string())
    }
}

impl From<ArrowError> for OutputError {
    fn from(e: ArrowError) -> Self {
        match e {
            ArrowError::IoError(_, io) => io.into(),
            other => OutputError::Write(other.to_string()),
        }
    }
}

impl From<datafusion::error::DataFusionError> for OutputError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        OutputError::Query(e.into())
    }
}

/// Print the stream. A reader that goes away (`| head`) ends printing quietly.
pub(crate) async fn print_stream(
    stream: SendableRecordBatchStream,
    format: Format,
) -> Result<(), OutputError> {
    match write_stream(stream, format).await {
        Err(OutputError::Write(message)) if message.contains("Broken pipe") => Ok(()),
        other => other,
    }
}

async fn write_stream(
    mut stream: SendableRecordBatchStream,
    format: Format,
) -> Result<(), OutputError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Table => {
            let schema = stream.schema();
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch?);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "{}", pretty_format_batches(&batches)?)?;
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            let mut wrote = false;
            while let Some(batch) = stream.next().await {
                writer.write(&flat(&batch?)?)?;
                wrote = true;
            }
            if !wrote {
                // Still print the header line of an empty result.
                writer.write(&flat(&RecordBatch::new_empty(stream.schema()))?)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            while let Some(batch) = stream.next().await {
                writer.write(&batch?)?;
            }
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// CSV has no nested values: lists, structs and maps are written as their text form.
fn flat(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let nested = |t: &DataType| t.is_nested();
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| nested(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if nested(field.data_type()) {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
