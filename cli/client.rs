//! Connecting to streamd.

use std::time::Duration;

use streamhandler::pb::stream_handler_client::StreamHandlerClient;
use tonic::transport::{Channel, Endpoint};

use crate::{
    args::Addr,
    error::{Error, describe_error},
};

/// A connected client of the StreamHandler API.
pub type Client = StreamHandlerClient<Channel>;

/// How long to wait for the daemon to accept a connection: it is local, so a slow
/// answer almost always means nothing is listening.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects eagerly, so that a daemon that is not running is reported before any
/// request is sent.
pub async fn connect(addr: &Addr) -> Result<Client, Error> {
    Ok(StreamHandlerClient::new(channel(addr).await?))
}

/// A connection to the daemon, for clients of its own kind.
pub async fn channel(addr: &Addr) -> Result<Channel, Error> {
    endpoint(addr)?
        .connect()
        .await
        .map_err(|err| not_running(addr, &err))
}

/// The settings every connection to the daemon uses.
pub fn endpoint(addr: &Addr) -> Result<Endpoint, Error> {
    Ok(Endpoint::from_shared(addr.uri.clone())
        .map_err(|err| Error::Other(format!("invalid address `{addr}`: {err}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

/// The daemon could not be reached, and why.
pub fn not_running(addr: &Addr, err: &(dyn std::error::Error + 'static)) -> Error {
    Error::NotRunning {
        addr: addr.display.clone(),
        reason: describe_error(err),
    }
}
