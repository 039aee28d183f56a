//! `meshql repl`: an interactive SQL shell on the embedded engine or a Flight SQL server.
//!
//! Line editing and history (rustyline), completion of keywords and mesh names,
//! statements over several lines until `;`, backslash commands that list ports from
//! `mesh.meta`, readable tables (long and wide results truncated with a note), a
//! spinner for slow queries, and Ctrl-C that cancels the running query, not the shell.

mod backend;
mod complete;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

pub(crate) use backend::Backend;
use complete::ReplHelper;

use crate::output::{Format, print_stream};

/// Rows a table shows before it says how many more there are.
const MAX_TABLE_ROWS: usize = 40;
/// Characters a table cell shows before it is cut with `…`.
const MAX_CELL_CHARS: usize = 48;
/// Queries slower than this get a spinner with elapsed time and rows.
const SPINNER_AFTER: Duration = Duration::from_millis(500);

const HELP: &str = "\
Statements end with `;` and may span lines. Tab completes keywords and names.
  \\d              list output ports (domain.product.port) with descriptions
  \\d NAME         columns of a port: type, description, tags
  \\dt PATTERN     ports whose name matches (SQL LIKE, e.g. sales.%)
  \\timing         show how long each statement takes (toggle)
  \\format F       table | csv | json
  \\help           this text
  \\q              quit (also Ctrl-D)
Ctrl-C cancels the running statement, or clears the line being typed.";

pub(crate) struct Repl {
    backend: Backend,
    format: Format,
    timing: bool,
    names: Arc<RwLock<Vec<String>>>,
}

impl Repl {
    pub(crate) fn new(backend: Backend) -> Self {
        Repl {
            backend,
            format: Format::Table,
            timing: false,
            names: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// Read, evaluate, print until `\q` or Ctrl-D.
    pub(crate) async fn run(mut self, banner: &str) -> Result<(), String> {
        let config = Config::builder()
            .auto_add_history(true)
            .max_history_size(10_000)
            .map_err(|e| e.to_string())?
            .build();
        let mut editor: Editor<ReplHelper, DefaultHistory> =
            Editor::with_config(config).map_err(|e| e.to_string())?;
        editor.set_helper(Some(ReplHelper {
            names: Arc::clone(&self.names),
        }));
        let history = history_file();
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        self.refresh_names().await;
        println!("{banner}\nType \\help for help, \\d to list output ports, \\q to quit.");

        loop {
            let line = tokio::task::block_in_place(|| editor.readline("meshql> "));
            match line {
                Ok(line) => {
                    let input = line.trim();
                    if input.is_empty() {
                        continue;
                    }
                    if matches!(input, "\\q" | "exit" | "quit") {
                        break;
                    }
                    if let Some(command) = input.strip_prefix('\\') {
                        self.command(command).await;
                    } else {
                        self.statement(input).await;
                    }
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if let Some(path) = &history {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.save_history(path);
        }
        Ok(())
    }

    /// Names for completion: every domain, product, port, full port name and column.
    async fn refresh_names(&mut self) {
        let sql = "SELECT domain, product, port, column_name FROM mesh.meta.columns";
        let Ok(batches) = self.backend.rows(sql).await else {
            return;
        };
        let mut names = Vec::new();
        for batch in &batches {
            let col = |i: usize| batch.column(i).as_string::<i32>().clone();
            let (d, p, t, c) = (col(0), col(1), col(2), col(3));
            for i in 0..batch.num_rows() {
                let (d, p, t, c) = (d.value(i), p.value(i), t.value(i), c.value(i));
                names.extend([
                    d.to_string(),
                    format!("{d}.{p}"),
                    format!("{d}.{p}.{t}"),
                    p.to_string(),
                    t.to_string(),
                    c.to_string(),
                ]);
            }
        }
        names.sort();
        names.dedup();
        if let Ok(mut shared) = self.names.write() {
            *shared = names;
        }
    }

    async fn command(&mut self, command: &str) {
        let (name, arg) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        let arg = arg.trim().trim_end_matches(';');
        match name {
            "d" if arg.is_empty() => {
                self.statement("SELECT name, kind, owner, description FROM mesh.meta.output_ports ORDER BY name").await
            }
            "d" => {
                let parts: Vec<&str> = arg.split('.').collect();
                let [domain, product, port] = parts.as_slice() else {
                    println!("\\d takes a port as domain.product.port (\\d lists them)");
                    return;
                };
                let sql = format!(
                    "SELECT column_name, data_type, is_nullable, description, tags FROM mesh.meta.columns \
                     WHERE domain = '{}' AND product = '{}' AND port = '{}' ORDER BY ordinal_position",
                    quote(domain),
                    quote(product),
                    quote(port)
                );
                self.statement(&sql).await;
            }
            "dt" => {
                let pattern = if arg.is_empty() { "%" } else { arg };
                let sql = format!(
                    "SELECT name, kind, owner, description FROM mesh.meta.output_ports WHERE name LIKE '{}' ORDER BY name",
                    quote(pattern)
                );
                self.statement(&sql).await;
            }
            "timing" => {
                self.timing = !self.timing;
                println!("timing is {}", if self.timing { "on" } else { "off" });
            }
            "format" => match arg {
                "table" => self.format = Format::Table,
                "csv" => self.format = Format::Csv,
                "json" => self.format = Format::Json,
                _ => println!("\\format takes table, csv or json"),
            },
            "help" | "?" => println!("{HELP}"),
            other => println!("unknown command \\{other}; \\help lists the commands"),
        }
    }

    /// Run one statement; Ctrl-C cancels it (dropping the query stops it everywhere).
    async fn statement(&mut self, sql: &str) {
        let started = Instant::now();
        let sql = sql.trim_end_matches(';');
        let format = self.format;
        let backend = &mut self.backend;
        let work = async {
            let (schema, batches) = backend.run(sql).await?;
            match format {
                Format::Table => show_table(schema, batches, started).await,
                Format::Csv | Format::Json => {
                    let stream =
                        batches.map(|b| b.map_err(datafusion::error::DataFusionError::Execution));
                    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, stream));
                    print_stream(stream, format)
                        .await
                        .map_err(|e| e.to_string())
                }
            }
        };
        tokio::select! {
            result = work => {
                if let Err(message) = result {
                    clear_spinner();
                    // One readable line.
                    println!("error: {}", message.replace('\n', " "));
                }
            }
            _ = tokio::signal::ctrl_c() => {
                clear_spinner();
                println!("cancelled");
            }
        }
        if self.timing {
            println!("time: {:.3} s", started.elapsed().as_secs_f64());
        }
    }
}

/// Collect the result (with a spinner once it is slow) and print it as a table: at most
/// MAX_TABLE_ROWS rows and MAX_CELL_CHARS per cell, with a note saying what was cut.
async fn show_table(
    schema: Arc<Schema>,
    mut batches: backend::Batches,
    started: Instant,
) -> Result<(), String> {
    let mut shown: Vec<RecordBatch> = Vec::new();
    let (mut kept, mut total) = (0usize, 0usize);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut frame = 0;
    let mut spinning = false;
    loop {
        tokio::select! {
            next = batches.next() => match next {
                Some(batch) => {
                    let batch = batch?;
                    total += batch.num_rows();
                    if kept < MAX_TABLE_ROWS {
                        let take = (MAX_TABLE_ROWS - kept).min(batch.num_rows());
                        shown.push(batch.slice(0, take));
                        kept += take;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if started.elapsed() >= SPINNER_AFTER {
                    spinning = true;
                    eprint!("\r{} {:.1} s, {} rows\x1b[K", frames[frame % frames.len()], started.elapsed().as_secs_f64(), total);
                    let _ = std::io::stderr().flush();
                    frame += 1;
                }
            }
        }
    }
    if spinning {
        clear_spinner();
    }
    if schema.fields().is_empty() {
        println!("ok");
        return Ok(());
    }
    let shown: Vec<RecordBatch> = shown.iter().map(truncate_cells).collect::<Result<_, _>>()?;
    let text = if shown.is_empty() {
        pretty_format_batches(&[RecordBatch::new_empty(Arc::clone(&schema))])
    } else {
        pretty_format_batches(&shown)
    }
    .map_err(|e| e.to_string())?;
    println!("{text}");
    if total > kept {
        println!("{total} rows (showing the first {kept}; \\format csv prints all)");
    } else {
        println!("{total} row{}", if total == 1 { "" } else { "s" });
    }
    Ok(())
}

/// Every column as text, long values cut with `…` so wide results stay readable.
fn truncate_cells(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut fields = Vec::new();
    let mut columns: Vec<Arc<dyn Array>> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let formatter =
            ArrayFormatter::try_new(column.as_ref(), &options).map_err(|e| e.to_string())?;
        let text: StringArray = (0..column.len())
            .map(|i| {
                let value = formatter.value(i).to_string();
                Some(if value.chars().count() > MAX_CELL_CHARS {
                    let cut: String = value.chars().take(MAX_CELL_CHARS - 1).collect();
                    format!("{cut}…")
                } else {
                    value
                })
            })
            .collect();
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(Arc::new(text));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

fn clear_spinner() {
    eprint!("\r\x1b[K");
    let _ = std::io::stderr().flush();
}

/// Single quotes doubled, for names put into the REPL's own SQL.
fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// `$XDG_STATE_HOME/meshql/history`, else `~/.local/state/meshql/history`.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|dir| dir.join("meshql").join("history"))
}
