//! The daemon's errors, and the one place they become gRPC statuses.

use tonic::{Code, Status};

use crate::{
    bus::{BufferFull, Refused},
    topic::quoted,
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("no service named {}; `streamctl list` shows every service", quoted(.0))]
    UnknownService(String),
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(
        "{0}: events came faster than this client read them; everything before this \
         point was delivered. Read faster, or ask for a larger buffer_bytes"
    )]
    BufferFull(BufferFull),
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

    /// The same error, its field named as that of one of many messages in a stream:
    /// `events[3].topic`.
    pub fn in_message(self, index: u64) -> Self {
        match self {
            Self::InvalidArgument { field, message } => Self::InvalidArgument {
                field: format!("events[{index}].{field}"),
                message,
            },
            other => other,
        }
    }
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::TooLarge(_) => Self::invalid("data", refused.to_string()),
            Refused::Buffer { .. } => Self::invalid("buffer_bytes", refused.to_string()),
            Refused::Closed => Self::ShuttingDown,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match error {
            Error::UnknownService(_) => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::BufferFull(_) => Code::ResourceExhausted,
            Error::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, error.to_string())
    }
}
