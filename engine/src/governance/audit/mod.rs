//! The audit log: JSON lines, appended and synced to disk. A statement that runs leaves
//! two records with one `query_id`: `started`, on disk before its first row leaves the
//! server, and `finished` (rows, duration, error) before its end is reported. A crash, a
//! kill or a shutdown mid-stream so still leaves the `started` record of what was being
//! read. A statement that fails to plan leaves one `finished` record. The file rotates by
//! size ([`file`]); `mesh.meta.query_log` reads recent records from memory, following
//! the file ([`recent`]). Without a configured file the records of this process are kept
//! in memory only (bounded), so `mesh.meta.query_log` works in a REPL too.

mod file;
mod recent;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use file::Appender;
pub use file::AuditFile;
pub use recent::{RECENT_BYTES, RECENT_RECORDS};
use recent::{Recent, Tail};

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

/// Whether the statement (or sign-in, or listing) was let through.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    #[default]
    Allowed,
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        }
    }
}

/// What a denial was about. Only `not_granted` concerns ports, and so only it is hidden
/// from the user it concerns (a port they may not read reads as one that does not exist).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    /// The statement named ports its user may not read.
    NotGranted,
    /// The statement is not allowed to this user (a setting, `CALL mesh.refresh`).
    Statement,
    /// A sign-in that failed.
    SignIn,
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
    pub decision: Decision,
    /// Why a statement was denied; absent when allowed (and in records of older
    /// versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<Denial>,
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
            decision: Decision::Allowed,
            denial: None,
            reason: None,
            rows: None,
            duration_ms: 0.0,
            error: None,
        }
    }
}

#[derive(Debug)]
pub struct AuditLog {
    /// The configured file, and the open file or why it could not be opened.
    file: Option<(AuditFile, Result<Arc<Appender>, String>)>,
    recent: Mutex<Recent>,
    tail: Mutex<Tail>,
}

impl AuditLog {
    /// Open (create) the configured file for appending. A file that cannot be opened is
    /// remembered: every statement then fails (nothing runs unaudited) and `check`
    /// reports it.
    pub fn open(file: Option<AuditFile>) -> Self {
        let file = file.map(|config| {
            let opened = Appender::open(config.clone())
                .map(Arc::new)
                .map_err(|e| format!("cannot open the audit log {}: {e}", config.path.display()));
            (config, opened)
        });
        AuditLog {
            file,
            recent: Mutex::new(Recent::default()),
            tail: Mutex::new(Tail::default()),
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
        self.file.as_ref().map(|(c, _)| c.path.as_path())
    }

    /// Append `record` and sync it to disk. `Err` means the statement must fail.
    pub async fn write(&self, record: AuditRecord) -> Result<(), String> {
        match &self.file {
            None => self.remember(record),
            Some((_, Err(e))) => Err(e.clone()),
            Some((_, Ok(appender))) => {
                let line = line(&record)?;
                let appender = Arc::clone(appender);
                // The append blocks on a sync: off the async workers.
                let written = tokio::task::spawn_blocking(move || appender.append(&line)).await;
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
            Some((_, Ok(_))) => self.append(&line(&record)?),
        }
    }

    fn append(&self, line: &[u8]) -> Result<(), String> {
        match &self.file {
            Some((_, Ok(appender))) => appender.append(line),
            Some((_, Err(e))) => Err(e.clone()),
            None => Err("no audit file".into()),
        }
    }

    /// Keep `record` in memory (no file configured).
    fn remember(&self, record: AuditRecord) -> Result<(), String> {
        self.recent
            .lock()
            .map_err(|_| "audit log poisoned")?
            .insert(record);
        Ok(())
    }

    /// The latest record of each recent statement that `keep` accepts, oldest statement
    /// first: at most [`RECENT_RECORDS`] statements and about [`RECENT_BYTES`] of records.
    /// Only what was appended to the file since the last call is read.
    pub fn recent(&self, keep: &dyn Fn(&AuditRecord) -> bool) -> Result<Vec<AuditRecord>, String> {
        let mut recent = self.recent.lock().map_err(|_| "audit log poisoned")?;
        if let Some((config, _)) = &self.file {
            let mut tail = self.tail.lock().map_err(|_| "audit log poisoned")?;
            tail.follow(&config.path, &mut recent)
                .map_err(|e| format!("cannot read {}: {e}", config.path.display()))?;
        }
        Ok(recent.matching(keep))
    }

    /// Every recent statement's latest record (see [`AuditLog::recent`]).
    pub fn records(&self) -> Result<Vec<AuditRecord>, String> {
        self.recent(&|_| true)
    }

    /// Where rotation puts old files, oldest first (empty without a file).
    pub fn rotated_files(&self) -> Vec<std::path::PathBuf> {
        self.file
            .as_ref()
            .map(|(c, _)| file::rotated_files(&c.path))
            .unwrap_or_default()
    }
}

/// `record` as one JSON line.
fn line(record: &AuditRecord) -> Result<Vec<u8>, String> {
    let mut line = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    line.push(b'\n');
    Ok(line)
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

fn now_rfc3339() -> String {
    now_formatted("%Y-%m-%dT%H:%M:%S%.6fZ")
}

/// For file names: `20261207T221500.123456Z`.
fn now_compact() -> String {
    now_formatted("%Y%m%dT%H%M%S%.6fZ")
}

fn now_formatted(format: &str) -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    datafusion::arrow::temporal_conversions::timestamp_us_to_datetime(micros)
        .map(|t| t.format(format).to_string())
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
    use std::io::Write;

    use super::*;

    #[tokio::test]
    async fn records_survive_in_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        let log = AuditLog::open(Some(AuditFile::at(&path)));
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
        let again = AuditLog::open(Some(AuditFile::at(&path)));
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
    async fn the_query_log_follows_rotation_and_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let config = AuditFile {
            path: path.clone(),
            rotate_bytes: 1000,
            keep: None,
        };
        let log = AuditLog::open(Some(config.clone()));
        // Another process (a `meshql query` beside the server) appends to the same file.
        let other = AuditLog::open(Some(config));
        let mut started = AuditRecord::new("a", "SELECT 'long running'");
        started.status = AuditStatus::Started;
        log.write(started.clone()).await.unwrap();
        assert_eq!(log.records().unwrap(), [started.clone()]);
        let mut written = vec![started.query_id.clone()];
        for n in 0..20 {
            let record = AuditRecord::new("b", &format!("SELECT {n}"));
            written.push(record.query_id.clone());
            let by = if n % 2 == 0 { &log } else { &other };
            by.write(record).await.unwrap();
            if n % 7 == 0 {
                // Looks between writes read only what is new.
                assert_eq!(log.records().unwrap().len(), n + 2);
            }
        }
        let mut finished = started.clone();
        finished.status = AuditStatus::Finished;
        finished.rows = Some(1);
        log.write(finished.clone()).await.unwrap();
        assert!(log.rotated_files().len() >= 2, "{:?}", log.rotated_files());
        let records = log.records().unwrap();
        let ids: Vec<_> = records.iter().map(|r| r.query_id.clone()).collect();
        assert_eq!(ids, written, "every statement once, in order, across files");
        assert_eq!(
            records[0], finished,
            "started and finished in different files"
        );
        // A server started later finds the recent past in the rotated files too.
        let restarted = AuditLog::open(Some(AuditFile::at(&path)));
        assert!(!restarted.records().unwrap().is_empty());
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
        let log = AuditLog::open(Some(AuditFile::at(&file.join("audit.jsonl"))));
        assert!(log.problem().is_some());
        assert!(log.write(AuditRecord::new("a", "SELECT 1")).await.is_err());
    }
}
