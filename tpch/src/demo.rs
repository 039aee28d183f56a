//! The embedded demo mesh: an e-commerce mesh (sales, customer, supply) generated
//! deterministically from TPC-H at first use. The mesh files are embedded in the
//! binary; the data is generated, never committed.

use std::path::{Path, PathBuf};

use crate::generate::{Table, batches};
use crate::{Error, Result, write};

/// Scale factor of the demo data: about 60k order lines, generated in a second or two.
pub const DEMO_SCALE_FACTOR: f64 = 0.01;

/// Bumped whenever the demo mesh files change, so older demos are regenerated.
const DEMO_VERSION: &str = "2";

const FILES: &[(&str, &str)] = &[
    ("mesh.yaml", include_str!("demo/mesh.yaml")),
    (
        "domains/sales.yaml",
        include_str!("demo/domains/sales.yaml"),
    ),
    (
        "domains/customer.yaml",
        include_str!("demo/domains/customer.yaml"),
    ),
    (
        "domains/supply.yaml",
        include_str!("demo/domains/supply.yaml"),
    ),
];

/// The default demo directory: `$XDG_CACHE_HOME/meshql/demo`, else `~/.cache/meshql/demo`.
pub fn default_data_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("meshql").join("demo")
}

/// Make sure the demo mesh exists in `dir` (generating it if needed) and return the
/// path of its main mesh file.
pub async fn ensure_demo(dir: &Path) -> Result<PathBuf> {
    let dir = &std::path::absolute(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let marker = dir.join(".meshql-demo");
    let mesh = dir.join("mesh.yaml");
    match std::fs::read_to_string(&marker) {
        Ok(v) if v.trim() == DEMO_VERSION => return Ok(mesh),
        // An older demo: ours to replace.
        Ok(_) => {}
        // Never delete a directory we did not make: it may be the user's.
        Err(_) if dir.exists() && !is_empty_dir(dir) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(
                    "the directory exists and is not a meshql demo directory; choose an empty or new --data-dir",
                ),
            });
        }
        Err(_) => {}
    }
    // Generate into a fresh sibling directory, then swap it in: an interrupted run
    // never leaves a half-written demo behind.
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    let staging = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("demo"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    generate_demo(&staging).await?;
    // Another process may have finished the same demo meanwhile: keep theirs.
    if std::fs::read_to_string(&marker).is_ok_and(|v| v.trim() == DEMO_VERSION) {
        let _ = std::fs::remove_dir_all(&staging);
        return Ok(mesh);
    }
    if dir.exists() {
        // Only an empty directory or an older demo (checked above) gets here.
        std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::rename(&staging, dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(mesh)
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Write the demo mesh files and data into `dir`.
pub async fn generate_demo(dir: &Path) -> Result<()> {
    for (name, text) in FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
    }
    let data = dir.join("data");
    let sf = DEMO_SCALE_FACTOR;
    write::parquet(
        &data.join("customer/customer.parquet"),
        batches(Table::Customer, sf),
    )?;
    write::csv(
        &data.join("customer/nation.csv"),
        batches(Table::Nation, sf),
    )?;
    write::csv(
        &data.join("customer/region.csv"),
        batches(Table::Region, sf),
    )?;
    write::parquet(&data.join("supply/part.parquet"), batches(Table::Part, sf))?;
    write::parquet(
        &data.join("supply/supplier.parquet"),
        batches(Table::Supplier, sf),
    )?;
    write::parquet(
        &data.join("supply/partsupp.parquet"),
        batches(Table::PartSupp, sf),
    )?;
    for (table, path) in [
        (Table::Orders, "sales/orders"),
        (Table::LineItem, "sales/lineitem"),
    ] {
        write::delta_dir(&data.join(path), batches(table, sf).collect()).await?;
    }
    let marker = dir.join(".meshql-demo");
    std::fs::write(&marker, DEMO_VERSION).map_err(|source| Error::Io {
        path: marker,
        source,
    })
}
