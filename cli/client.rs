//! Connecting to streamd: over TCP, TLS or a Unix socket, with a bearer token when the
//! daemon asks for one.

use std::{path::Path, time::Duration};

use streamhandler::pb::stream_handler_client::StreamHandlerClient;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    args::{AccessArgs, Addr},
    error::{Error, describe_error},
};

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
    /// `message` as a request to this daemon, with the bearer token if any: for the
    /// bench's clients, which build their requests themselves.
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
