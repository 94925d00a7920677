//! The daemon's errors, and the one place they become gRPC statuses.

use tonic::{Code, Status};

use crate::{
    bus::{BufferFull, Refused},
    topic::{self, quoted},
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("no service named {}; ListServices shows every service", quoted(.0))]
    UnknownService(String),
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// A client asked for what only the operator may decide.
    #[error("{field}: {message}")]
    PermissionDenied { field: String, message: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(
        "{0}: events came faster than this client read them; everything before this \
         point was delivered. Read faster{advice}",
        advice = if .0.shared { "" } else { ", or ask for a larger buffer_bytes" }
    )]
    BufferFull(BufferFull),
    #[error("streamd is shutting down")]
    ShuttingDown,
    /// Something the daemon depends on (the cluster's NATS) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The client sends faster than the daemon can pass on.
    #[error("{0}")]
    ResourceExhausted(String),
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
            Refused::TooManyTopics => Self::invalid("topics", refused.to_string()),
            Refused::Closed => Self::ShuttingDown,
            Refused::Unavailable(_) => Self::Unavailable(refused.to_string()),
            Refused::Busy(_) => Self::ResourceExhausted(refused.to_string()),
        }
    }
}

/// The longest status message sent: well within any client's metadata limit.
const MAX_MESSAGE_LEN: usize = 1024;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match error {
            Error::UnknownService(_) => Code::NotFound,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::BufferFull(_) | Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::ShuttingDown | Error::Unavailable(_) => Code::Unavailable,
        };
        // A message quoting a client's value must not outgrow the reply's metadata,
        // or the client sees a broken connection instead of the error.
        let message = error.to_string();
        let message = match message.len() {
            len if len <= MAX_MESSAGE_LEN => message,
            len => format!("{}… ({len} bytes)", topic::head(&message, MAX_MESSAGE_LEN)),
        };
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_the_statuses_clients_expect() {
        let status = |refused| Status::from(Error::from(refused));
        assert_eq!(status(Refused::Closed).code(), Code::Unavailable);
        let too_large = status(Refused::TooLarge(70_000));
        assert_eq!(too_large.code(), Code::InvalidArgument);
        assert!(
            too_large.message().starts_with("data: "),
            "{}",
            too_large.message()
        );
        let buffer = status(Refused::Buffer {
            asked: 1,
            min: 2,
            max: 3,
        });
        assert!(
            buffer.message().starts_with("buffer_bytes: "),
            "{}",
            buffer.message()
        );
        let full = Status::from(Error::BufferFull(BufferFull {
            buffer: 65_600,
            shared: false,
        }));
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert!(full.message().contains("65600 bytes"), "{}", full.message());
    }

    #[test]
    fn a_long_message_is_cut_to_fit_a_reply() {
        let status = Status::from(Error::invalid("params.x", "é".repeat(100_000)));
        assert!(
            status.message().len() < MAX_MESSAGE_LEN + 32,
            "{}",
            status.message().len()
        );
        assert!(status.message().starts_with("params.x: é"));
        assert!(
            status.message().ends_with("(200010 bytes)"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_field_in_a_stream_is_named_by_its_position() {
        let error = Error::invalid("topic", "bad").in_message(3);
        assert_eq!(error.to_string(), "events[3].topic: bad");
        assert_eq!(Error::ShuttingDown.in_message(3), Error::ShuttingDown);
    }
}
