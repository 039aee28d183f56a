//! The engine's error type.

use datafusion::error::DataFusionError;

use crate::problem::{Problem, display_all};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mesh cannot be used at all (main file unreadable or invalid).
    #[error("{}", display_all(.0))]
    Config(Vec<Problem>),

    /// Planning or execution failed; the message is DataFusion's, which names the port.
    #[error("{}", strip_datafusion_context(.0))]
    DataFusion(#[from] DataFusionError),

    /// A broken invariant inside meshql: a bug, never the user's fault.
    #[error("internal error: {0}. This is a bug in meshql, please report it")]
    Internal(String),
}

/// DataFusion wraps errors in layers of context; users need the innermost message plus
/// the kind ("Error during planning").
fn strip_datafusion_context(e: &DataFusionError) -> String {
    match e.find_root() {
        DataFusionError::External(inner) => inner.to_string(),
        root => root.to_string(),
    }
}
