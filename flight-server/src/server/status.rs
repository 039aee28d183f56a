//! Errors to gRPC statuses, in one place. Clients see the engine's message; internal
//! details go to the log only.

use datafusion::error::DataFusionError;
use meshql_engine::Error;
use tonic::{Code, Status};

pub fn status(err: Error) -> Status {
    match err {
        Error::Config(problems) => {
            Status::failed_precondition(meshql_engine::problem::display_all(&problems))
        }
        Error::Setup(message) => Status::failed_precondition(message),
        Error::Denied(message) => Status::permission_denied(Error::Denied(message).to_string()),
        Error::Audit(message) => {
            tracing::error!(%message, "audit log");
            Status::unavailable(format!(
                "{message}; statements are refused until it can be written"
            ))
        }
        Error::Internal(message) => {
            tracing::error!(%message, "internal error");
            Status::internal("internal error in meshql (logged on the server)")
        }
        Error::DataFusion(e) => {
            let code = code(&e);
            if code == Code::Internal {
                tracing::error!(error = %e, "query engine internal error");
                return Status::internal(
                    "internal error in the query engine (logged on the server)",
                );
            }
            Status::new(code, Error::DataFusion(e).to_string())
        }
    }
}

pub fn df_status(e: DataFusionError) -> Status {
    status(Error::DataFusion(e))
}

fn code(e: &DataFusionError) -> Code {
    match e.find_root() {
        DataFusionError::Plan(m) if m.contains("not found") => Code::NotFound,
        DataFusionError::Plan(m) if m.contains("is unavailable") => Code::Unavailable,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Code::Unavailable,
        DataFusionError::Internal(_) => Code::Internal,
        // Bad SQL, unknown columns, unsupported features, arithmetic and cast errors:
        // all about the statement the user sent.
        _ => Code::InvalidArgument,
    }
}
