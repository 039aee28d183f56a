//! Errors to gRPC statuses, in one place. Clients see the engine's message; internal
//! details go to the log only.

use datafusion::error::DataFusionError;
use meshql_engine::Error;
use tonic::{Code, Status};

pub(crate) fn status(err: Error) -> Status {
    match err {
        Error::DataFusion(e) => match Error::find(&e) {
            // An engine error an operator or catalog raised inside DataFusion: its code,
            // with the message as a whole (it may name the port being read).
            Some(engine) => match engine_status(engine) {
                Ok(code) => Status::new(code, Error::DataFusion(e).to_string()),
                Err(status) => status,
            },
            None => {
                let code = code(&e);
                if code == Code::Internal {
                    tracing::error!(error = %e, "query engine internal error");
                    return Status::internal(
                        "internal error in the query engine (logged on the server)",
                    );
                }
                Status::new(code, Error::DataFusion(e).to_string())
            }
        },
        other => match engine_status(&other) {
            Ok(code) => Status::new(code, other.to_string()),
            Err(status) => status,
        },
    }
}

/// The code of each engine error; `Err` where the client gets another message than
/// the error's own (it is logged instead).
fn engine_status(err: &Error) -> Result<Code, Status> {
    Ok(match err {
        Error::Config(_) | Error::Setup(_) => Code::FailedPrecondition,
        Error::TooComplex(_) => Code::InvalidArgument,
        Error::Busy(_) => Code::ResourceExhausted,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::Denied(_) => Code::PermissionDenied,
        Error::NotFound(_) => Code::NotFound,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Audit(message) => {
            tracing::error!(%message, "audit log");
            return Err(Status::unavailable(format!(
                "{message}; statements are refused until it can be written"
            )));
        }
        Error::Internal(message) => {
            tracing::error!(%message, "internal error");
            return Err(Status::internal(
                "internal error in meshql (logged on the server)",
            ));
        }
        Error::DataFusion(e) => match Error::find(e) {
            Some(inner) => return engine_status(inner),
            None => code(e),
        },
    })
}

/// arrow-flight answers a request it cannot decode (a command that is not valid
/// protobuf, a string field that is not UTF-8) with INTERNAL and the parser's debug
/// text; it is the client's request that is wrong, so say so with INVALID_ARGUMENT.
/// Its `ParseError`s come only from decoding what the client sent.
pub(crate) fn undecodable_request(status: Status) -> Status {
    if status.code() == Code::Internal && status.message().starts_with("ParseError(") {
        let detail = status
            .message()
            .trim_start_matches("ParseError(\"")
            .trim_end_matches("\")");
        return Status::invalid_argument(format!("cannot decode the request: {detail}"));
    }
    status
}

pub(crate) fn df_status(e: DataFusionError) -> Status {
    status(Error::DataFusion(e))
}

fn code(e: &DataFusionError) -> Code {
    let root = e.find_root();
    // A backstop, not a decision: DataFusion's own broken invariants are `Internal`
    // (below), but some reach here re-wrapped as text; its message asks users to file a
    // report with DataFusion, which is ours to do.
    if root.to_string().contains("likely caused by a bug") {
        return Code::Internal;
    }
    match root {
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Code::Unavailable,
        // The same failures, raised while a result streams (a file or a source gone
        // mid-read) and wrapped in Arrow's or Parquet's errors: the same code as before
        // the stream, so clients retry alike.
        e if source_is_io(e) => Code::Unavailable,
        DataFusionError::Internal(_) => Code::Internal,
        // Bad SQL, unknown columns, unsupported features, arithmetic and cast errors:
        // all about the statement the user sent.
        _ => Code::InvalidArgument,
    }
}

/// An I/O or object store error somewhere in `e`'s chain of sources.
fn source_is_io(e: &DataFusionError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        // Bad bytes (invalid UTF-8, a truncated file) are the data's fault, not a
        // source that is down.
        let io = err.downcast_ref::<std::io::Error>().is_some_and(|io| {
            !matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::UnexpectedEof
            )
        });
        if io
            || err
                .downcast_ref::<datafusion::object_store::Error>()
                .is_some()
        {
            return true;
        }
        current = err.source();
    }
    false
}
