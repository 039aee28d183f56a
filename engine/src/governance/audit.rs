//! The audit log: JSON lines, appended and synced to disk. A statement that runs leaves
//! two records with one `query_id`: `started`, on disk before its first row leaves the
//! server, and `finished` (rows, duration, error) before its end is reported. A crash, a
//! kill or a shutdown mid-stream so still leaves the `started` record of what was being
//! read. A statement that fails to plan leaves one `finished` record. Without a
//! configured file the records of this process are kept in memory (bounded), so
//! `mesh.meta.query_log` works in a REPL too.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Records kept in memory when no file is configured.
const MEMORY_RECORDS: usize = 10_000;

/// The longest statement text a record keeps; longer ones are cut there (at a character
/// boundary) and marked, and `statement_sha256` identifies the whole text.
pub const MAX_STATEMENT_TEXT: usize = 16 << 10;

/// Where a statement's record stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatus {
    /// Execution began; no row has left yet. Alone in the log, the statement never
    /// finished (the server stopped or died while it ran).
    Started,
    /// The statement ended: its rows, duration and error are final.
    #[default]
    Finished,
}

impl AuditStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Started => "started",
            AuditStatus::Finished => "finished",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    pub query_id: String,
    pub user: String,
    /// The statement's text, at most [`MAX_STATEMENT_TEXT`] bytes of it.
    pub statement: String,
    /// SHA-256 of the whole statement text, hex.
    #[serde(default)]
    pub statement_sha256: String,
    #[serde(default)]
    pub status: AuditStatus,
    /// Output ports the statement read (derived ports and what they read).
    pub ports: Vec<String>,
    /// `allowed` or `denied`.
    pub decision: String,
    pub reason: Option<String>,
    pub rows: Option<u64>,
    pub duration_ms: f64,
    pub error: Option<String>,
}

impl AuditRecord {
    pub fn new(user: &str, statement: &str) -> Self {
        AuditRecord {
            time: now_rfc3339(),
            query_id: new_query_id(),
            user: user.to_string(),
            statement: bounded_text(statement),
            statement_sha256: sha256_hex(statement),
            status: AuditStatus::Finished,
            ports: Vec::new(),
            decision: "allowed".into(),
            reason: None,
            rows: None,
            duration_ms: 0.0,
            error: None,
        }
    }
}

/// The open file, or why it could not be opened.
type Opened = Result<Arc<Mutex<File>>, String>;

#[derive(Debug)]
pub struct AuditLog {
    file: Option<(PathBuf, Opened)>,
    memory: Mutex<VecDeque<AuditRecord>>,
}

impl AuditLog {
    /// Open (create) `path` for appending. A file that cannot be opened is remembered:
    /// every statement then fails (nothing runs unaudited) and `check` reports it.
    pub fn open(path: Option<&Path>) -> Self {
        let file = path.map(|p| {
            let opened = (|| {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(p)?;
                // A torn last line (a crash mid-write) must not swallow the next record.
                let len = f.metadata()?.len();
                if len > 0 {
                    use std::io::{Read, Seek, SeekFrom};
                    let mut last = [0u8; 1];
                    f.seek(SeekFrom::Start(len - 1))?;
                    f.read_exact(&mut last)?;
                    if last[0] != b'\n' {
                        f.write_all(b"\n")?;
                        f.sync_data()?;
                    }
                }
                Ok::<_, std::io::Error>(f)
            })()
            .map(|f| Arc::new(Mutex::new(f)))
            .map_err(|e| format!("cannot open the audit log {}: {e}", p.display()));
            (p.to_path_buf(), opened)
        });
        AuditLog {
            file,
            memory: Mutex::new(VecDeque::new()),
        }
    }

    /// Why statements cannot be audited, if they cannot.
    pub fn problem(&self) -> Option<&str> {
        match &self.file {
            Some((_, Err(e))) => Some(e),
            _ => None,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Append `record` and sync it to disk. `Err` means the statement must fail.
    pub async fn write(&self, record: AuditRecord) -> Result<(), String> {
        match &self.file {
            None => self.remember(record),
            Some((_, Err(e))) => Err(e.clone()),
            Some((path, Ok(file))) => {
                let file = Arc::clone(file);
                let path = path.clone();
                let written =
                    tokio::task::spawn_blocking(move || append(&file, &path, &record)).await;
                written.map_err(|e| e.to_string())?
            }
        }
    }

    /// [`AuditLog::write`] on this thread, for where nothing can be awaited (a stream
    /// dropped mid-way, a runtime shutting down): the record is on disk when it returns.
    pub fn write_now(&self, record: AuditRecord) -> Result<(), String> {
        match &self.file {
            None => self.remember(record),
            Some((_, Err(e))) => Err(e.clone()),
            Some((path, Ok(file))) => append(file, path, &record),
        }
    }

    /// Keep `record` in memory (no file configured), the oldest dropped past the bound.
    fn remember(&self, record: AuditRecord) -> Result<(), String> {
        let mut memory = self.memory.lock().map_err(|_| "audit log poisoned")?;
        if memory.len() == MEMORY_RECORDS {
            memory.pop_front();
        }
        memory.push_back(record);
        Ok(())
    }

    /// Every statement's latest record, oldest statement first. Lines that do not parse
    /// (a torn last line after a power loss) are skipped.
    pub fn records(&self) -> Result<Vec<AuditRecord>, String> {
        self.lines().map(latest_per_query)
    }

    /// Every record as written, oldest first.
    pub fn lines(&self) -> Result<Vec<AuditRecord>, String> {
        match &self.file {
            None => Ok(self
                .memory
                .lock()
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default()),
            Some((path, _)) => {
                let file = match File::open(path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
                };
                Ok(BufReader::new(file)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|l| serde_json::from_str(&l).ok())
                    .collect())
            }
        }
    }
}

/// `text` cut to [`MAX_STATEMENT_TEXT`] bytes at a character boundary, marked when cut.
fn bounded_text(text: &str) -> String {
    if text.len() <= MAX_STATEMENT_TEXT {
        return text.to_string();
    }
    let mut end = MAX_STATEMENT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [{} bytes in all]", &text[..end], text.len())
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One entry per statement, in the order statements began: the last record written for
/// each `query_id` (its `finished` record, or `started` if it never finished).
fn latest_per_query(records: impl IntoIterator<Item = AuditRecord>) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for record in records {
        match at.get(&record.query_id) {
            Some(&i) => out[i] = record,
            None => {
                at.insert(record.query_id.clone(), out.len());
                out.push(record);
            }
        }
    }
    out
}

/// Append one record as one line and sync it.
fn append(file: &Mutex<File>, path: &Path, record: &AuditRecord) -> Result<(), String> {
    let mut line = serde_json::to_string(record).map_err(|e| e.to_string())?;
    line.push('\n');
    let mut f = file.lock().map_err(|_| "audit log poisoned".to_string())?;
    let failed = |e: std::io::Error| format!("cannot write the audit log {}: {e}", path.display());
    let before = f.metadata().map_err(failed)?.len();
    // One write per record: O_APPEND keeps concurrent lines whole.
    let written = f.write_all(line.as_bytes()).and_then(|_| f.sync_data());
    if let Err(e) = written {
        // A record torn by a full disk would merge with the next one: cut it off, so
        // the file stays one whole record per line.
        if f.set_len(before).and_then(|_| f.sync_data()).is_err() {
            tracing::error!(path = %path.display(), "cannot cut a torn audit record");
        }
        return Err(failed(e));
    }
    Ok(())
}

fn now_rfc3339() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    datafusion::arrow::temporal_conversions::timestamp_us_to_datetime(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

/// A random (version 4) UUID.
fn new_query_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_in_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        let log = AuditLog::open(Some(&path));
        assert!(log.problem().is_none());
        for user in ["alice", "bob"] {
            log.write(AuditRecord::new(user, "SELECT 1")).await.unwrap();
        }
        // A torn line is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"time\":")
            .unwrap();
        let again = AuditLog::open(Some(&path));
        again
            .write(AuditRecord::new("carol", "SELECT 2"))
            .await
            .unwrap();
        let users: Vec<String> = again
            .records()
            .unwrap()
            .into_iter()
            .map(|r| r.user)
            .collect();
        assert_eq!(users, ["alice", "bob", "carol"]);
    }

    #[tokio::test]
    async fn a_started_statement_shows_until_it_finishes() {
        let log = AuditLog::open(None);
        let mut first = AuditRecord::new("a", "SELECT 1");
        first.status = AuditStatus::Started;
        let second = AuditRecord::new("b", "SELECT 2");
        log.write(first.clone()).await.unwrap();
        log.write(second.clone()).await.unwrap();
        assert_eq!(log.records().unwrap(), [first.clone(), second.clone()]);
        let mut done = first.clone();
        done.status = AuditStatus::Finished;
        done.rows = Some(1);
        log.write(done.clone()).await.unwrap();
        assert_eq!(log.records().unwrap(), [done, second]);
        assert_eq!(log.lines().unwrap().len(), 3);
    }

    #[test]
    fn long_statements_are_cut_and_hashed() {
        let sql = format!("SELECT '{}'", "é".repeat(MAX_STATEMENT_TEXT));
        let record = AuditRecord::new("a", &sql);
        assert!(record.statement.len() < MAX_STATEMENT_TEXT + 64);
        assert!(
            record
                .statement
                .ends_with(&format!("[{} bytes in all]", sql.len()))
        );
        assert_eq!(record.statement_sha256, sha256_hex(&sql));
        assert_eq!(record.statement_sha256.len(), 64);
    }

    #[tokio::test]
    async fn an_unwritable_log_fails_statements() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let log = AuditLog::open(Some(&file.join("audit.jsonl")));
        assert!(log.problem().is_some());
        assert!(log.write(AuditRecord::new("a", "SELECT 1")).await.is_err());
    }
}
