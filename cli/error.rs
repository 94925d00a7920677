//! The ways a streamctl command can fail, each worded as the one line the user sees.

use std::{error::Error as _, fmt, io};

use streamhandler::topic;
use tonic::Status;

/// A failed command. `Display` gives the line printed after `streamctl: `.
#[derive(Debug)]
pub enum Error {
    /// The daemon could not be reached at all.
    NotRunning {
        /// The address as the user gave it.
        addr: String,
        /// Why, in a few words, e.g. `connection refused`.
        reason: String,
    },
    /// The daemon answered with an error; its message is shown as is, with a hint
    /// of which streamctl command helps where there is one.
    Server(Status),
    /// Services the user named that the daemon does not know.
    UnknownServices(Vec<String>),
    /// A problem on our side: bad input, or output that cannot be written.
    Other(String),
    /// Stdout was closed by its reader; the command ends quietly and successfully.
    BrokenPipe,
    /// Errors were already printed one by one; only the exit status remains.
    Reported,
}

impl Error {
    /// Maps a failed write to stdout: a closed pipe is a quiet end, not an error.
    pub fn from_stdout(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Error::BrokenPipe
        } else {
            Error::Other(format!("cannot write to stdout: {err}"))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Something accepted the connection, then closed it unanswered (before
            // HTTP/2 was set up on it, hyper says "not ready").
            Error::NotRunning { addr, reason }
                if reason.starts_with("connection closed")
                    || reason.starts_with("connection reset")
                    || reason.starts_with("connection was not ready") =>
            {
                write!(
                    f,
                    "streamd at {addr} closed the connection ({reason}); it may have stopped, \
                     be at its --max-connections limit, or serve TLS only (an https:// \
                     address)"
                )
            }
            Error::NotRunning { addr, reason } => write!(
                f,
                "streamd is not running at {addr} ({reason}); start it with `streamd` \
                 or point --addr/STREAMD_ADDR at a running daemon"
            ),
            Error::Server(status) if status.code() == tonic::Code::Unauthenticated => write!(
                f,
                "{}; streamctl sends the token from STREAMD_TOKEN or --token-file",
                status_message(status)
            ),
            Error::Server(status) if status.code() == tonic::Code::NotFound => {
                write!(f, "{} {LIST_HINT}", status_message(status))
            }
            Error::Server(status) => f.write_str(&status_message(status)),
            Error::UnknownServices(names) => {
                // Whatever was typed is quoted, but not echoed whole.
                let quoted: Vec<_> = names.iter().map(|n| topic::quoted(n)).collect();
                let noun = if names.len() == 1 {
                    "service"
                } else {
                    "services"
                };
                write!(f, "no {noun} named {} {LIST_HINT}", quoted.join(", "))
            }
            Error::Other(message) => f.write_str(message),
            Error::BrokenPipe => f.write_str("stdout was closed"),
            Error::Reported => f.write_str("some operations failed"),
        }
    }
}

/// Where the names of the daemon's services are found.
const LIST_HINT: &str = "(`streamctl list` shows them)";

/// The server's message, or a description of the code when the server sent none.
pub fn status_message(status: &Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_lowercase()
    } else {
        status.message().to_string()
    }
}

/// If the status stands for a broken or refused connection rather than an answer
/// from the daemon, says why in a few words.
pub fn transport_reason(status: &Status) -> Option<String> {
    // Statuses decoded from the daemon's reply carry no source; tonic attaches one to
    // those it makes up itself from a transport or HTTP/2 failure.
    status.source().map(describe_error)
}

/// Describes the root cause of an error chain in a few lowercase words, preferring the
/// underlying I/O error (`connection refused`) over the layers wrapped around it.
pub fn describe_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return describe_io(io);
        }
        innermost = e;
        current = e.source();
    }
    innermost.to_string()
}

/// Words for the I/O errors a client meets when connecting, without the
/// `(os error N)` suffix.
fn describe_io(err: &io::Error) -> String {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut => "timed out".into(),
        BrokenPipe => "connection closed".into(),
        UnexpectedEof => "connection closed".into(),
        AddrNotAvailable => "address not available".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        _ => {
            let text = err.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_string(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_described_briefly() {
        let err = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_error(&err), "connection refused");
        let err = io::Error::from_raw_os_error(2);
        assert!(!describe_error(&err).contains("os error"));
    }

    #[test]
    fn server_statuses_keep_their_message() {
        let err = Error::Server(Status::invalid_argument("interval: too long"));
        assert_eq!(err.to_string(), "interval: too long");
        let err = Error::Server(Status::unavailable(""));
        assert_eq!(err.to_string(), "the service is currently unavailable");
    }

    #[test]
    fn unknown_services_point_at_list() {
        let message = "no service named \"x\"; ListServices shows every service";
        let err = Error::Server(Status::not_found(message));
        assert_eq!(
            err.to_string(),
            format!("{message} (`streamctl list` shows them)")
        );
        let err = Error::UnknownServices(vec!["a".into(), "b".into()]);
        assert_eq!(
            err.to_string(),
            "no services named \"a\", \"b\" (`streamctl list` shows them)"
        );
    }

    #[test]
    fn not_running_names_the_address_and_the_fix() {
        let err = Error::NotRunning {
            addr: "127.0.0.1:50051".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            err.to_string(),
            "streamd is not running at 127.0.0.1:50051 (connection refused); start it \
             with `streamd` or point --addr/STREAMD_ADDR at a running daemon"
        );
    }
}
