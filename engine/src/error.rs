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

    /// A table the statement names does not exist for its user (a port the user may not
    /// read reads exactly like one that does not exist).
    #[error("{0}")]
    NotFound(String),

    /// A port the statement reads cannot be read now (its source is down or its files
    /// are broken); the message names the port and where it is declared.
    #[error("{0}")]
    Unavailable(String),

    /// A broken invariant inside meshql: a bug, never the user's fault.
    #[error("internal error: {0}. This is a bug in meshql, please report it")]
    Internal(String),
}

impl Error {
    /// This error inside DataFusion's error type, where an operator or a catalog can
    /// only return that: it is found again by [`Error::find`].
    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }

    /// The engine error `e` carries, under any of DataFusion's layers (context, shared,
    /// external, Arrow's external errors).
    pub fn find(e: &DataFusionError) -> Option<&Error> {
        let mut current: &(dyn std::error::Error + 'static) = e;
        loop {
            if let Some(engine) = current.downcast_ref::<Error>() {
                return Some(engine);
            }
            // DataFusion's own layers, then whatever the error says it was caused by.
            let next = match current.downcast_ref::<DataFusionError>() {
                Some(DataFusionError::Context(_, inner)) => Some(inner.as_ref() as _),
                Some(DataFusionError::Shared(inner)) => Some(inner.as_ref() as _),
                Some(DataFusionError::External(inner)) => Some(inner.as_ref() as _),
                _ => current.source(),
            };
            current = next?;
        }
    }
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
    fn engine_errors_are_found_under_datafusions_layers() {
        let e = Error::Unavailable("output port `a.b.c` is unavailable".into())
            .into_datafusion()
            .context("reading output port `a.b.c`");
        let shared = DataFusionError::Shared(std::sync::Arc::new(e));
        let arrow = DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::ExternalError(
                Box::new(shared),
            )),
            None,
        );
        assert!(matches!(Error::find(&arrow), Some(Error::Unavailable(_))));
        assert!(Error::find(&DataFusionError::Plan("table 'x' not found".into())).is_none());
    }

    #[test]
    fn keeps_our_context_and_the_root() {
        let e = DataFusionError::Plan("no such file".into()).context("reading output port `a.b.c`");
        assert_eq!(
            Error::from(e).to_string(),
            "reading output port `a.b.c`: Error during planning: no such file"
        );
    }
}
