//! Printing query results: an aligned table, CSV with a header line, or JSON lines.
//! CSV and JSON stream batch by batch; the table needs every row to size its columns.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use meshql_engine::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("cannot write output: {e}"))
}

pub async fn print_stream(
    mut stream: SendableRecordBatchStream,
    format: Format,
) -> Result<(), Error> {
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
            writeln!(out, "{}", pretty_format_batches(&batches).map_err(io)?).map_err(io)?;
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" }).map_err(io)?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            let mut wrote = false;
            while let Some(batch) = stream.next().await {
                writer.write(&batch?).map_err(io)?;
                wrote = true;
            }
            if !wrote {
                // Still print the header line of an empty result.
                writer
                    .write(&RecordBatch::new_empty(stream.schema()))
                    .map_err(io)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
            while let Some(batch) = stream.next().await {
                writer.write(&batch?).map_err(io)?;
            }
            writer.finish().map_err(io)?;
        }
    }
    out.flush().map_err(io)
}
