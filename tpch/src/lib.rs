//! TPC-H data for meshql: generation with `tpchgen-arrow`, writers for every lake
//! format, and the embedded demo mesh built from them.

pub mod demo;
pub mod generate;
pub mod layout;
pub mod queries;
pub mod write;

/// Errors while generating or writing data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {path}: {source}")]
    Arrow {
        path: std::path::PathBuf,
        source: arrow::error::ArrowError,
    },
    #[error("cannot write Parquet {path}: {source}")]
    Parquet {
        path: std::path::PathBuf,
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("cannot write Delta table {location}: {source}")]
    Delta {
        location: String,
        source: deltalake::DeltaTableError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
