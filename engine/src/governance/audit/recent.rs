//! What `mesh.meta.query_log` reads: the latest record of each recent statement, kept in
//! memory within a bound and brought up to date by reading only what was appended to the
//! audit file since the last look (by this process or any other writing the same file).
//! Rotation is followed: the old file is read to its end before the new one.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::{AuditRecord, AuditStatus};

/// Records kept for `mesh.meta.query_log`, oldest dropped first.
pub const RECENT_RECORDS: usize = 100_000;
/// Their approximate size in memory.
pub const RECENT_BYTES: usize = 64 << 20;

/// The latest record per statement, in the order statements began, within the bounds.
#[derive(Debug, Default)]
pub(super) struct Recent {
    entries: VecDeque<AuditRecord>,
    /// Sequence number of `entries[0]`.
    first: u64,
    /// query id -> sequence number of its entry.
    at: HashMap<String, u64>,
    bytes: usize,
}

impl Recent {
    pub(super) fn insert(&mut self, record: AuditRecord) {
        match self.at.get(&record.query_id) {
            Some(&seq) if seq >= self.first => {
                let old = &mut self.entries[(seq - self.first) as usize];
                // A `started` line read again never hides how the statement ended.
                if old.status == AuditStatus::Finished && record.status == AuditStatus::Started {
                    return;
                }
                self.bytes = self.bytes - size(old) + size(&record);
                *old = record;
            }
            _ => {
                self.bytes += size(&record);
                self.at.insert(
                    record.query_id.clone(),
                    self.first + self.entries.len() as u64,
                );
                self.entries.push_back(record);
            }
        }
        while self.entries.len() > RECENT_RECORDS || self.bytes > RECENT_BYTES {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            if self.at.get(&old.query_id) == Some(&self.first) {
                self.at.remove(&old.query_id);
            }
            self.first += 1;
            self.bytes -= size(&old);
        }
    }

    pub(super) fn matching(&self, keep: &dyn Fn(&AuditRecord) -> bool) -> Vec<AuditRecord> {
        self.entries.iter().filter(|r| keep(r)).cloned().collect()
    }
}

/// A record's share of [`RECENT_BYTES`].
fn size(r: &AuditRecord) -> usize {
    256 + r.statement.len()
        + r.error.as_ref().map_or(0, String::len)
        + r.reason.as_ref().map_or(0, String::len)
        + r.ports.iter().map(|p| p.len() + 24).sum::<usize>()
}

/// How far the audit file has been read.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// The file being followed and the offset of its first unread line.
    open: Option<(File, u64)>,
}

impl Tail {
    /// Read what was appended to `path` since the last call into `recent`. The first
    /// call starts within [`RECENT_BYTES`] of the end (taking the newest rotated file's
    /// end first if the current file is shorter), so no call reads a whole large file.
    pub(super) fn follow(&mut self, path: &Path, recent: &mut Recent) -> std::io::Result<()> {
        if self.open.is_none() {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            if len < RECENT_BYTES as u64
                && let Some(previous) = super::file::rotated_files(path).pop()
                && let Ok(mut old) = File::open(previous)
            {
                let old_len = old.metadata()?.len();
                let start = old_len.saturating_sub(RECENT_BYTES as u64 - len);
                read_lines(&mut old, start, start > 0, recent)?;
            }
            let start = len.saturating_sub(RECENT_BYTES as u64);
            self.open = Some((file, start));
            // Starting mid-file: the first line is partial.
            if start > 0 {
                let (file, offset) = self.open.as_mut().expect("just set");
                *offset = read_lines(file, start, true, recent)?;
            }
        }
        let (file, offset) = self.open.as_mut().expect("opened above");
        if file.metadata()?.len() < *offset {
            // Cut or replaced in place: read it again (records already seen merge).
            *offset = 0;
        }
        *offset = read_lines(file, *offset, false, recent)?;
        if super::file::rotated_away(file, path) {
            // The old file is read to its end above. Files rotated after it (several
            // rotations since the last look) come next, then the current one.
            let rotated = super::file::rotated_files(path);
            if let Some(i) = rotated.iter().position(|p| super::file::same_file(file, p)) {
                for later in &rotated[i + 1..] {
                    if let Ok(mut f) = File::open(later) {
                        read_lines(&mut f, 0, false, recent)?;
                    }
                }
            }
            self.open = None;
            if let Ok(mut fresh) = File::open(path) {
                let end = read_lines(&mut fresh, 0, false, recent)?;
                self.open = Some((fresh, end));
            }
        }
        Ok(())
    }
}

/// Parse the whole lines of `file` from `start` into `recent`; returns the offset after
/// the last whole line. Lines that do not parse (torn by a crash) are skipped.
fn read_lines(
    file: &mut File,
    start: u64,
    skip_first: bool,
    recent: &mut Recent,
) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    // Never more than the bound in one go: what is older would be dropped anyway.
    let from = start.max(len.saturating_sub(RECENT_BYTES as u64));
    let skip_first = skip_first || from > start;
    if from >= len {
        return Ok(start.max(len));
    }
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity((len - from) as usize);
    file.take(len - from).read_to_end(&mut bytes)?;
    let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') else {
        return Ok(from);
    };
    let mut lines = bytes[..last_newline].split(|&b| b == b'\n');
    if skip_first {
        lines.next();
    }
    for line in lines {
        if let Ok(record) = serde_json::from_slice::<AuditRecord>(line) {
            recent.insert(record);
        }
    }
    Ok(from + last_newline as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> AuditRecord {
        AuditRecord::new("u", &format!("SELECT {n}"))
    }

    #[test]
    fn the_bound_drops_the_oldest_statements() {
        let mut recent = Recent::default();
        let first = record(0);
        recent.insert(first.clone());
        for n in 1..=RECENT_RECORDS {
            recent.insert(record(n));
        }
        assert_eq!(recent.entries.len(), RECENT_RECORDS);
        assert!(!recent.at.contains_key(&first.query_id));
        // A late `finished` record of a dropped statement comes back as the newest.
        recent.insert(first.clone());
        assert_eq!(recent.entries.back(), Some(&first));
        let big = AuditRecord::new("u", &"x".repeat(super::super::MAX_STATEMENT_TEXT));
        for _ in 0..(RECENT_BYTES / big.statement.len() + 10) {
            let mut r = big.clone();
            r.query_id = record(0).query_id;
            recent.insert(r);
        }
        assert!(recent.bytes <= RECENT_BYTES);
        assert_eq!(recent.bytes, recent.entries.iter().map(size).sum::<usize>());
    }

    #[test]
    fn a_started_line_read_again_does_not_undo_finished() {
        let mut recent = Recent::default();
        let mut started = record(1);
        started.status = AuditStatus::Started;
        let mut finished = started.clone();
        finished.status = AuditStatus::Finished;
        recent.insert(started.clone());
        recent.insert(finished.clone());
        recent.insert(started);
        assert_eq!(recent.matching(&|_| true), [finished]);
    }
}
