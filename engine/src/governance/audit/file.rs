//! The audit file on disk: one whole, synced JSON line per record, and rotation by
//! size. A rotated file is renamed beside the current one with the time it was closed
//! (`audit.20261207T221500.123456Z.jsonl`), so names sort in the order written and log
//! shippers can pick them up; the oldest beyond `audit_log_keep` are deleted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where and how a governed mesh writes its audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFile {
    pub path: PathBuf,
    /// Rotate once the file reaches this size; 0 never rotates.
    pub rotate_bytes: u64,
    /// Rotated files kept; `None` keeps them all.
    pub keep: Option<usize>,
}

impl AuditFile {
    /// A file that is never rotated (tests, tools).
    pub fn at(path: &Path) -> Self {
        AuditFile {
            path: path.to_path_buf(),
            rotate_bytes: 0,
            keep: None,
        }
    }
}

/// The open file, appended to under a lock.
#[derive(Debug)]
pub(super) struct Appender {
    config: AuditFile,
    file: Mutex<File>,
}

impl Appender {
    pub(super) fn open(config: AuditFile) -> std::io::Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_for_append(&config.path)?;
        Ok(Appender {
            config,
            file: Mutex::new(file),
        })
    }

    /// Append `line` (one record, ending in a newline) and sync it; rotate after it if
    /// the file has reached its size. `Err` means the record is not on disk.
    pub(super) fn append(&self, line: &[u8]) -> Result<(), String> {
        let path = &self.config.path;
        let mut f = self
            .file
            .lock()
            .map_err(|_| "audit log poisoned".to_string())?;
        let failed =
            |e: std::io::Error| format!("cannot write the audit log {}: {e}", path.display());
        if rotated_away(&f, path) {
            // Another process writing the same file rotated it: follow.
            *f = open_for_append(path).map_err(failed)?;
        }
        let before = f.metadata().map_err(failed)?.len();
        // One write per record: O_APPEND keeps concurrent lines whole.
        let written = f.write_all(line).and_then(|_| f.sync_data());
        if let Err(e) = written {
            // A record torn by a full disk would merge with the next one: cut it off, so
            // the file stays one whole record per line.
            if f.set_len(before).and_then(|_| f.sync_data()).is_err() {
                tracing::error!(path = %path.display(), "cannot cut a torn audit record");
            }
            return Err(failed(e));
        }
        let size = before + line.len() as u64;
        if self.config.rotate_bytes > 0 && size >= self.config.rotate_bytes {
            // The record is on disk; a rotation that fails is retried on the next one.
            if let Err(e) = self.rotate(&mut f) {
                tracing::error!(path = %path.display(), error = %e, "cannot rotate the audit log");
            }
        }
        Ok(())
    }

    /// Rename the current file to its rotated name and continue in a new one.
    fn rotate(&self, current: &mut File) -> std::io::Result<()> {
        let path = &self.config.path;
        // Two rotations within one microsecond would share a name, and the rename would
        // replace the older file: take the next free stamp (the clock moves on).
        let rotated = loop {
            let name = rotated_name(path, &super::now_compact());
            if !name.exists() {
                break name;
            }
            std::thread::yield_now();
        };
        std::fs::rename(path, &rotated)?;
        match open_for_append(path) {
            Ok(fresh) => *current = fresh,
            Err(e) => {
                // Keep writing where we were rather than into a file no one finds.
                std::fs::rename(&rotated, path)?;
                return Err(e);
            }
        }
        if let Some(dir) = path.parent()
            && let Ok(d) = File::open(dir)
        {
            // The rename and the new file survive a power loss.
            let _ = d.sync_all();
        }
        tracing::info!(path = %path.display(), rotated = %rotated.display(), "audit log rotated");
        if let Some(keep) = self.config.keep {
            let files = rotated_files(path);
            for old in files.iter().take(files.len().saturating_sub(keep)) {
                match std::fs::remove_file(old) {
                    Ok(()) => tracing::info!(file = %old.display(), "old audit file deleted"),
                    Err(e) => {
                        tracing::error!(file = %old.display(), error = %e, "cannot delete an old audit file")
                    }
                }
            }
        }
        Ok(())
    }
}

/// Open (create) `path` for appending. A torn last line (a crash mid-write) is ended,
/// so that it cannot swallow the next record.
fn open_for_append(path: &Path) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
            f.sync_data()?;
        }
    }
    Ok(f)
}

/// Whether `path` now names another file than `file` (it was rotated). Renamed and not
/// yet replaced (no file at `path`): not yet, keep following the old one.
pub(super) fn rotated_away(file: &File, path: &Path) -> bool {
    std::fs::metadata(path).is_ok() && !same_file(file, path)
}

/// Whether `file` is the file at `path`.
#[cfg(unix)]
pub(super) fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Without inodes, rotation by another process is not followed.
#[cfg(not(unix))]
pub(super) fn same_file(_file: &File, _path: &Path) -> bool {
    true
}

/// `dir/audit.jsonl` closed at `stamp` -> `dir/audit.STAMP.jsonl`.
fn rotated_name(path: &Path, stamp: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{stamp}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{stamp}"),
    };
    path.with_file_name(name)
}

/// The rotated files of `path`, oldest first.
pub(super) fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
        return Vec::new();
    };
    let stem = stem.to_string_lossy();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()));
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&*stem).and_then(|r| r.strip_prefix('.')) else {
                return false;
            };
            let stamp = match &ext {
                Some(ext) => rest.strip_suffix(ext.as_str()),
                None => Some(rest),
            };
            stamp.is_some_and(is_stamp)
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// `20261207T221500.123456Z`.
fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 23
        && b[8] == b'T'
        && b[15] == b'.'
        && b[22] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 8 | 15 | 22) || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_sort_in_the_order_written_and_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let a = rotated_name(&path, "20261207T221500.000001Z");
        let b = rotated_name(&path, "20261207T221500.000002Z");
        assert_eq!(
            a.file_name().unwrap(),
            "audit.20261207T221500.000001Z.jsonl"
        );
        for p in [&b, &a, &path] {
            std::fs::write(p, "").unwrap();
        }
        // Files that only look alike are not ours to delete.
        std::fs::write(dir.path().join("audit.backup.jsonl"), "").unwrap();
        std::fs::write(dir.path().join("audit-x.20261207T221500.000001Z.jsonl"), "").unwrap();
        assert_eq!(rotated_files(&path), [a, b]);
    }

    #[test]
    fn rotation_keeps_every_record_and_deletes_only_beyond_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let appender = Appender::open(AuditFile {
            path: path.clone(),
            rotate_bytes: 100,
            keep: Some(2),
        })
        .unwrap();
        let line = format!("{{\"n\":\"{}\"}}\n", "x".repeat(60));
        for _ in 0..7 {
            appender.append(line.as_bytes()).unwrap();
        }
        // Two records per file: three rotations of which two are kept, and one record open.
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        for file in &rotated {
            assert_eq!(std::fs::read_to_string(file).unwrap(), line.repeat(2));
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line);
    }
}
