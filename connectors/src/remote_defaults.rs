//! Defaults shared by the keys of remote SQL sources (`postgres`, `flight_sql`), so
//! the one table of defaults (docs/guide/mesh-files.md#sources) stays true for both.

/// `connect_timeout_s`: connecting, or waiting for a pooled connection.
pub(crate) fn connect_timeout() -> u64 {
    5
}

/// `query_timeout_s`: the longest wait for a statement's next rows.
pub(crate) fn query_timeout() -> u64 {
    300
}

/// `metadata_ttl_s`: how long table schemas and row counts are kept.
pub(crate) fn metadata_ttl() -> u64 {
    300
}
