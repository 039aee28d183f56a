//! Writers for the lake formats meshql reads: Parquet, CSV, newline-delimited JSON
//! and Delta. Each writes to a temporary name first, so a crash leaves no half file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use crate::{Error, Result};

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn arrow_err(path: &Path) -> impl FnOnce(arrow::error::ArrowError) -> Error + '_ {
    move |source| Error::Arrow {
        path: path.to_path_buf(),
        source,
    }
}

/// Write via `path.tmp`, then rename into place.
fn atomically(path: &Path, write: impl FnOnce(File) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    write(File::create(&tmp).map_err(io(&tmp))?)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

pub fn parquet(path: &Path, batches: impl IntoIterator<Item = RecordBatch>) -> Result<()> {
    let mut batches = batches.into_iter().peekable();
    let Some(first) = batches.peek() else {
        return Ok(());
    };
    let schema = first.schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let perr = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    atomically(path, |file| {
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(perr)?;
        for batch in batches {
            writer.write(&batch).map_err(perr)?;
        }
        writer.close().map_err(perr)?;
        Ok(())
    })
}

pub fn csv(path: &Path, batches: impl IntoIterator<Item = RecordBatch>) -> Result<()> {
    atomically(path, |file| {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(file);
        for batch in batches {
            writer.write(&batch).map_err(arrow_err(path))?;
        }
        Ok(())
    })
}

/// Newline-delimited JSON.
pub fn json(path: &Path, batches: impl IntoIterator<Item = RecordBatch>) -> Result<()> {
    atomically(path, |file| {
        let mut writer = arrow::json::LineDelimitedWriter::new(file);
        for batch in batches {
            writer.write(&batch).map_err(arrow_err(path))?;
        }
        writer.finish().map_err(arrow_err(path))
    })
}

/// Append `batches` as a new version of the Delta table at `url` (created if absent),
/// optionally partitioned by `partition_by`.
pub async fn delta(
    url: Url,
    batches: Vec<RecordBatch>,
    partition_by: &[&str],
    mode: SaveMode,
) -> Result<DeltaTable> {
    let location = url.to_string();
    let derr = |source| Error::Delta {
        location: location.clone(),
        source,
    };
    // Load an existing table to append to it; a new one needs no load (which would log
    // an error for the missing log).
    let exists = url
        .to_file_path()
        .is_ok_and(|dir| dir.join("_delta_log").is_dir());
    let table = if exists || url.scheme() != "file" {
        DeltaTable::try_from_url(url.clone()).await.map_err(derr)?
    } else {
        DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| b.build())
            .map_err(derr)?
    };
    let mut write = table.write(batches).with_save_mode(mode);
    if !partition_by.is_empty() {
        write = write.with_partition_columns(partition_by.iter().map(|c| c.to_string()));
    }
    write.await.map_err(derr)
}

/// Write `batches` as a new Delta table in the local directory `dir`, replacing whatever
/// is there. The directory is removed first: an overwrite would keep the old files on
/// disk, and engines that read the directory as Parquet (benches/tpch.py's peers) would
/// read both versions.
pub async fn delta_dir(dir: &Path, batches: Vec<RecordBatch>) -> Result<DeltaTable> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let absolute = std::path::absolute(dir).map_err(io(dir))?;
    let url = Url::from_directory_path(&absolute).map_err(|()| Error::Io {
        path: absolute.clone(),
        source: std::io::Error::other("not an absolute path"),
    })?;
    delta(url, batches, &[], SaveMode::Overwrite).await
}
