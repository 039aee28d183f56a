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

    /// What meshql needs around it is not usable (a directory, a file), with the fix.
    #[error("{0}")]
    Setup(String),

    /// The statement is not allowed (a setting off the allow-list). Never used for
    /// ports a user cannot see: those read as "not found".
    #[error("permission denied: {0}")]
    Denied(String),

    /// The statement is larger or nests deeper than the server accepts
    /// ([`crate::limits::StatementLimits`]); the message says which bound and the fix.
    #[error("statement too complex: {0}")]
    TooComplex(String),

    /// A resource bound of the server refused or ended the statement (concurrent
    /// statements, the statement timeout); trying again later may succeed.
    #[error("{0}")]
    Busy(String),

    /// The statement ran past the statement timeout and was ended.
    #[error("{0}")]
    Timeout(String),

    /// The audit log cannot be written, so nothing runs.
    #[error("{0}")]
    Audit(String),

    /// A broken invariant inside meshql: a bug, never the user's fault.
    #[error("internal error: {0}. This is a bug in meshql, please report it")]
    Internal(String),
}

/// DataFusion wraps errors in layers; users need the context we added (which port was
/// being read) and the innermost message, without the layers in between.
fn strip_datafusion_context(e: &DataFusionError) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = e;
    loop {
        match current {
            DataFusionError::Context(context, inner) => {
                parts.push(context.clone());
                current = inner;
            }
            DataFusionError::Shared(inner) => current = inner,
            _ => break,
        }
    }
    parts.push(match current.find_root() {
        DataFusionError::External(inner) => inner.to_string(),
        root => root.to_string(),
    });
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_our_context_and_the_root() {
        let e = DataFusionError::Plan("no such file".into()).context("reading output port `a.b.c`");
        assert_eq!(
            Error::from(e).to_string(),
            "reading output port `a.b.c`: Error during planning: no such file"
        );
    }
}
