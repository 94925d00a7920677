//! Connecting to streamd: its address (TCP, TLS or a Unix socket), the flags that say
//! how to prove oneself to it (TLS files, a bearer token), and the errors that name it.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use clap::Args;
use streamhandler::pb::stream_handler_client::StreamHandlerClient;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::error::{Error, describe_error, transport_reason};

/// How streamctl proves itself to a daemon that asks: TLS and a bearer token.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// PEM certificate of the CA to trust for an `https://` address, e.g. a private
    /// one [default: the public web's CAs].
    #[arg(long, global = true, env = "STREAMD_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate, for a daemon that requires one (mutual TLS).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// File holding the daemon's bearer token [default: the STREAMD_TOKEN variable's
    /// value].
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Where streamd listens, and what to show it when connecting.
#[derive(Debug, Clone)]
pub struct Addr {
    /// The URI to connect to: `http://…`, `https://…` or `unix:/path`.
    pub uri: String,
    /// The address as the user wrote it, for messages.
    pub display: String,
    /// TLS settings and bearer token, from [`AccessArgs`].
    pub access: Access,
}

impl FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let display = s.trim().trim_end_matches('/').to_string();
        if display.is_empty() {
            return Err("the address is empty".into());
        }
        if let Some(path) = display.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs the socket's path, e.g. unix:/run/streamd.sock".into());
            }
            return Ok(Addr {
                uri: display.clone(),
                display,
                access: Default::default(),
            });
        }
        let uri = if display.starts_with("http://") || display.starts_with("https://") {
            display.clone()
        } else if display.contains("://") {
            return Err(format!(
                "unsupported address `{display}`: use host:port, an http:// or https:// URL, \
                 or unix:/path"
            ));
        } else {
            format!("http://{display}")
        };
        let parsed: tonic::transport::Uri = uri
            .parse()
            .map_err(|err| format!("invalid address `{display}`: {err}"))?;
        if parsed.host().is_none_or(str::is_empty) {
            return Err(format!("invalid address `{display}`: no host"));
        }
        Ok(Addr {
            uri,
            display,
            access: Default::default(),
        })
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// A connected client of the StreamHandler API.
pub type Client = StreamHandlerClient<InterceptedService<Channel, SendToken>>;

/// How long to wait for the daemon to accept a connection: it is local, so a slow
/// answer almost always means nothing is listening.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What streamctl shows the daemon: TLS settings for an `https://` address, and the
/// bearer token.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Boxed: it is large, and every address carries it.
    tls: Option<Box<ClientTlsConfig>>,
    token: Option<MetadataValue<Ascii>>,
    client_certificate: bool,
}

impl Access {
    /// Reads the files the flags name, and the token from `--token-file` or else
    /// `STREAMD_TOKEN`, checking they fit the address.
    pub fn read(args: &AccessArgs, addr: &Addr) -> Result<Self, Error> {
        let https = addr.uri.starts_with("https://");
        if !https && (args.tls_ca.is_some() || args.tls_cert.is_some()) {
            return Err(Error::Other(format!(
                "--tls-ca and --tls-cert need an https:// address, not `{addr}`"
            )));
        }
        let tls = https
            .then(|| -> Result<_, Error> {
                let mut tls = ClientTlsConfig::new().with_webpki_roots();
                if let Some(ca) = &args.tls_ca {
                    tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
                }
                if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                    tls = tls.identity(Identity::from_pem(
                        read(cert, "--tls-cert")?,
                        read(key, "--tls-key")?,
                    ));
                }
                Ok(Box::new(tls))
            })
            .transpose()?;
        let token = match &args.token_file {
            Some(path) => {
                let text = String::from_utf8(read(path, "--token-file")?).map_err(|_| {
                    Error::Other(format!("--token-file {}: not text", path.display()))
                })?;
                Some(bearer(&text, &format!("--token-file {}", path.display()))?)
            }
            None => match std::env::var("STREAMD_TOKEN") {
                Ok(text) if !text.trim().is_empty() => Some(bearer(&text, "STREAMD_TOKEN")?),
                _ => None,
            },
        };
        Ok(Self {
            tls,
            token,
            client_certificate: args.tls_cert.is_some(),
        })
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Other(format!("{flag} {}: {e}", path.display())))
}

/// The `authorization` value for a token, trimmed; `source` names where it came from.
fn bearer(token: &str, source: &str) -> Result<MetadataValue<Ascii>, Error> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Other(format!("{source}: the token is empty")));
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::Other(format!("{source}: the token must be printable ASCII")))
}

/// Adds the bearer token, if any, to every request.
#[derive(Clone)]
pub struct SendToken(Option<MetadataValue<Ascii>>);

impl Interceptor for SendToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        add_token(&self.0, &mut request);
        Ok(request)
    }
}

fn add_token<T>(token: &Option<MetadataValue<Ascii>>, request: &mut Request<T>) {
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
    }
}

impl Addr {
    /// `message` as a request to this daemon, with the bearer token if any: for
    /// clients that build their calls themselves (the bench's, subscribe's).
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        add_token(&self.access.token, &mut request);
        request
    }
}

/// Connects eagerly, so that a daemon that is not running is reported before any
/// request is sent.
pub async fn connect(addr: &Addr) -> Result<Client, Error> {
    Ok(StreamHandlerClient::with_interceptor(
        channel(addr).await?,
        SendToken(addr.access.token.clone()),
    ))
}

/// A connection to the daemon, for clients of its own kind (they add the token with
/// [`Addr::request`]).
pub async fn channel(addr: &Addr) -> Result<Channel, Error> {
    endpoint(addr)?
        .connect()
        .await
        .map_err(|err| not_running(addr, &err))
}

/// The settings every connection to the daemon uses. tonic connects to a `unix:`
/// URI through the socket.
pub fn endpoint(addr: &Addr) -> Result<Endpoint, Error> {
    let invalid =
        |err: &dyn std::fmt::Display| Error::Other(format!("invalid address `{addr}`: {err}"));
    let mut endpoint = Endpoint::from_shared(addr.uri.clone())
        .map_err(|err| invalid(&err))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(tls) = &addr.access.tls {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::clone(tls))
            .map_err(|err| invalid(&err))?;
    }
    Ok(endpoint)
}

// The errors that name the daemon's address.
impl Error {
    /// Classifies an RPC failure: a transport failure means the daemon went away (or
    /// was never there), anything else is the server's own answer.
    pub fn from_status(status: Status, addr: &Addr) -> Self {
        match transport_reason(&status) {
            Some(reason) => Error::not_running(addr, reason),
            None => Error::Server(status),
        }
    }

    /// The daemon at `addr` could not be reached, for `reason`.
    pub fn not_running(addr: &Addr, mut reason: String) -> Self {
        // Under TLS 1.3 a refused client certificate shows only as a connection
        // that fails, in any of several ways.
        if addr.access.tls_without_certificate() {
            reason.push_str(
                "; if the daemon requires a client certificate, give --tls-cert and --tls-key",
            );
        }
        Error::NotRunning {
            addr: addr.display.clone(),
            reason,
        }
    }
}

/// The daemon could not be reached, and why.
pub fn not_running(addr: &Addr, err: &(dyn std::error::Error + 'static)) -> Error {
    Error::not_running(addr, describe_error(err))
}

impl Access {
    /// Whether the connection is TLS and streamctl shows no certificate of its own.
    pub fn tls_without_certificate(&self) -> bool {
        self.tls.is_some() && !self.client_certificate
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::error::transport_reason;

    #[test]
    fn transport_failures_mean_the_daemon_is_gone() {
        let addr: Addr = "127.0.0.1:1".parse().unwrap();
        let io = io::Error::from(io::ErrorKind::ConnectionReset);
        let status = Status::from_error(Box::new(io));
        assert_eq!(
            transport_reason(&status).as_deref(),
            Some("connection reset")
        );
        assert!(matches!(
            Error::from_status(status, &addr),
            Error::NotRunning { reason, .. } if reason == "connection reset"
        ));
        assert_eq!(transport_reason(&Status::internal("bug")), None);
    }
}
