//! The daemon's errors, and the one place they become gRPC statuses.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("no service named {0:?}; `streamctl list` shows every service")]
    UnknownService(String),
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("streamd is shutting down")]
    ShuttingDown,
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match error {
            Error::UnknownService(_) => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, error.to_string())
    }
}
