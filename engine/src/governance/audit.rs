//! The audit log: one JSON line per statement, appended and synced to disk before the
//! statement is reported complete, so a crash loses no completed record. Without a
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    pub query_id: String,
    pub user: String,
    pub statement: String,
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
            statement: statement.to_string(),
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
            None => {
                let mut memory = self.memory.lock().map_err(|_| "audit log poisoned")?;
                if memory.len() == MEMORY_RECORDS {
                    memory.pop_front();
                }
                memory.push_back(record);
                Ok(())
            }
            Some((_, Err(e))) => Err(e.clone()),
            Some((path, Ok(file))) => {
                let mut line = serde_json::to_string(&record).map_err(|e| e.to_string())?;
                line.push('\n');
                let file = Arc::clone(file);
                let path = path.clone();
                let written = tokio::task::spawn_blocking(move || {
                    let mut f = file.lock().map_err(|_| "audit log poisoned".to_string())?;
                    // One write per record: O_APPEND keeps concurrent lines whole.
                    f.write_all(line.as_bytes())
                        .and_then(|_| f.sync_data())
                        .map_err(|e| format!("cannot write the audit log {}: {e}", path.display()))
                })
                .await;
                written.map_err(|e| e.to_string())?
            }
        }
    }

    /// Every record, oldest first. Lines that do not parse (a torn last line after a
    /// power loss) are skipped.
    pub fn records(&self) -> Result<Vec<AuditRecord>, String> {
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
    async fn an_unwritable_log_fails_statements() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let log = AuditLog::open(Some(&file.join("audit.jsonl")));
        assert!(log.problem().is_some());
        assert!(log.write(AuditRecord::new("a", "SELECT 1")).await.is_err());
    }
}
