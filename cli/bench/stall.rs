//! A connection to streamd whose client stops reading its socket on demand: a tonic
//! channel over a connector whose stream, once stalled, never yields another byte, so
//! the daemon's writes back up in the kernel's buffers as with a frozen client. Until
//! then it is an ordinary TCP connection.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::{Channel, Uri};

use crate::{
    client::Addr,
    client::{endpoint, not_running},
    error::Error,
};

/// Stops its connection's reads when told.
#[derive(Clone, Default)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn stall(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn stalled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Connects to the daemon over a socket that `switch` can stop reading.
pub async fn channel(addr: &Addr, switch: Switch) -> Result<Channel, Error> {
    endpoint(addr)?
        .connect_with_connector(Connector(switch))
        .await
        .map_err(|err| not_running(addr, &err))
}

/// Makes connections for tonic, each a TCP stream behind the switch.
#[derive(Clone)]
struct Connector(Switch);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<StallingStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let switch = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
            let port = uri.port_u16().unwrap_or(80);
            let inner = TcpStream::connect((host, port)).await?;
            inner.set_nodelay(true)?;
            Ok(TokioIo::new(StallingStream { inner, switch }))
        })
    }
}

/// A TCP stream that, once its switch is thrown, reports no more data to read and
/// never wakes its reader again; writes go on as before.
pub struct StallingStream {
    inner: TcpStream,
    switch: Switch,
}

impl AsyncRead for StallingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.switch.stalled() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
