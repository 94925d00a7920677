//! What one client connection may spend: connections are counted against a cap, each
//! must start speaking within a deadline, and each has a request-rate budget of its
//! own, checked on every RPC; and the HTTP/2 settings (windows, streams, keepalives)
//! every connection of both listeners is served with.

use std::{
    io,
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::{
    Request, Status,
    service::Interceptor,
    transport::server::{Connected, TlsConnectInfo},
};

/// The operator's limits on connections, from streamd's flags.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; past it, new ones are closed as they arrive.
    pub max_connections: usize,
    /// RPCs one connection may start per second, in bursts of as many.
    pub request_rate: NonZeroU32,
    /// How long a new connection may take to send its first bytes (the HTTP/2
    /// preface, or a TLS hello) and to finish a TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            request_rate: NonZeroU32::new(5_000).expect("not zero"),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Admits the connections `incoming` yields while fewer than the cap are open, each
/// with its deadline and request budget; those past the cap are closed at once.
pub fn admit<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>>,
    limits: Limits,
) -> impl Stream<Item = Result<Admitted<IO>, E>> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut refusals = Refusals::default();
    incoming.filter_map(move |accepted| {
        let admitted = match accepted {
            Err(e) => Some(Err(e)),
            Ok(io) => match open.clone().try_acquire_owned() {
                Ok(slot) => Some(Ok(Admitted::new(io, slot, &limits))),
                Err(_) => {
                    refusals.note(limits.max_connections);
                    None
                }
            },
        };
        std::future::ready(admitted)
    })
}

/// TLS handshakes with the connections `incoming` yields, side by side, each within
/// the handshake deadline; those that fail are dropped (and logged at debug).
pub fn handshakes<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>>,
    acceptor: TlsAcceptor,
    limits: Limits,
) -> impl Stream<Item = Result<TlsStream<IO>, E>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    incoming
        .map(move |accepted| {
            let acceptor = acceptor.clone();
            async move {
                let io = match accepted {
                    Ok(io) => io,
                    Err(e) => return Some(Err(e)),
                };
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => Some(Ok(tls)),
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        None
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake not done within --handshake-timeout");
                        None
                    }
                }
            }
        })
        .buffer_unordered(MAX_HANDSHAKES)
        .filter_map(std::future::ready)
}

/// Handshakes in progress at once; more connections wait their turn, and a stalled
/// one holds its place no longer than the handshake deadline.
const MAX_HANDSHAKES: usize = 128;

/// Logs connections refused at the cap: the first at once, then a count at most every
/// ten seconds, so that a flood of them cannot flood the log.
#[derive(Default)]
struct Refusals {
    unreported: u64,
    last_report: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, cap: usize) {
        self.unreported += 1;
        if self
            .last_report
            .is_some_and(|at| at.elapsed() < Self::EVERY)
        {
            return;
        }
        tracing::warn!(
            "closed {} new connection(s): {cap} are open, the most --max-connections allows",
            self.unreported
        );
        self.unreported = 0;
        self.last_report = Some(Instant::now());
    }
}

/// A connection admitted under the cap: holds its place until it closes, and fails
/// reads if the client has not sent its greeting in time.
pub struct Admitted<IO> {
    io: IO,
    budget: RequestBudget,
    greeting: Option<Greeting>,
    _slot: OwnedSemaphorePermit,
}

/// The first bytes a client owes, and until when.
struct Greeting {
    missing: usize,
    deadline: Pin<Box<Sleep>>,
}

/// The HTTP/2 connection preface's length; a TLS hello is longer.
const GREETING_BYTES: usize = 24;

impl<IO> Admitted<IO> {
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn new(io: IO, slot: OwnedSemaphorePermit, limits: &Limits) -> Self {
        let quota = Quota::per_second(limits.request_rate);
        Self {
            io,
            budget: RequestBudget(Arc::new(RateLimiter::direct(quota))),
            greeting: Some(Greeting {
                missing: GREETING_BYTES,
                deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            }),
            _slot: slot,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(greeting) = &mut this.greeting else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len() - before;
                greeting.missing = greeting.missing.saturating_sub(got);
                if greeting.missing == 0 || got == 0 {
                    this.greeting = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match greeting.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no greeting within --handshake-timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            failed => failed,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO> Connected for Admitted<IO> {
    type ConnectInfo = RequestBudget;

    fn connect_info(&self) -> RequestBudget {
        self.budget.clone()
    }
}

/// One connection's request rate, shared by its requests: tonic hands each request
/// the connection's info.
#[derive(Clone)]
pub struct RequestBudget(Arc<DefaultDirectRateLimiter>);

/// Refuses an RPC when its connection has spent its request budget.
#[derive(Clone)]
pub struct LimitRequestRate(pub NonZeroU32);

impl Interceptor for LimitRequestRate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let extensions = request.extensions();
        let budget = extensions.get::<RequestBudget>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<RequestBudget>>()
                .map(TlsConnectInfo::get_ref)
        });
        match budget {
            Some(RequestBudget(limiter)) if limiter.check().is_err() => {
                Err(Status::resource_exhausted(format!(
                    "this connection started more than {} RPCs in a second \
                     (--max-request-rate); wait, or send many events in one PublishStream",
                    self.0
                )))
            }
            _ => Ok(request),
        }
    }
}

/// HTTP/2 as the gRPC listener serves it, with `executor` running each connection's
/// streams: the settings of [`builder`].
pub(crate) fn http2<E>(executor: E) -> hyper::server::conn::http2::Builder<E> {
    let mut http2 = hyper::server::conn::http2::Builder::new(executor);
    http2
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(KEEPALIVE))
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    http2
}

/// A tonic server with the HTTP/2 settings of [`http2`], for the dashboard's listener.
pub(crate) fn builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
}

pub(crate) const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one stream may send before the daemon reads it. Large enough that a fast
/// publisher is rarely stopped for a window update (64 KiB, HTTP/2's default, costs
/// a fifth more CPU per event at 400,000 events/s); small enough, beside the
/// connection window below, that flow control paces a publisher of tiny events before
/// h2's guard against small DATA frames trips. h2 charges each buffered frame under
/// 256 bytes its shortfall from 256 as overhead, and allows half the connection window
/// of it: a window's worth of the smallest messages a gRPC client frames (a few bytes
/// of request each) stays within it. (An adaptive window would grow each stream's
/// window to the connection's and lose that margin.)
const STREAM_WINDOW: u32 = 1024 * 1024;
/// What a connection may send before the daemon reads it, all streams together; it
/// also sizes h2's allowance for small frames.
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
/// Concurrent RPCs per connection: room for the bench's 100 subscribers per
/// connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn limits(handshake_timeout: Duration) -> Limits {
        Limits {
            max_connections: 2,
            request_rate: NonZeroU32::new(3).unwrap(),
            handshake_timeout,
        }
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_until_one_goes() {
        let (accept, accepted) = tokio::sync::mpsc::unbounded_channel::<Result<_, ()>>();
        let admitted = admit(
            tokio_stream::wrappers::UnboundedReceiverStream::new(accepted),
            limits(Duration::from_secs(10)),
        );
        tokio::pin!(admitted);
        let connect = || accept.send(Ok(tokio::io::duplex(64).0)).unwrap();
        connect();
        connect();
        connect();
        let first = admitted.next().await.unwrap().unwrap();
        let _second = admitted.next().await.unwrap().unwrap();
        assert!(
            admitted.next().now_or_never().is_none(),
            "the third is closed, not admitted"
        );
        drop(first);
        connect();
        assert!(admitted.next().await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off_at_the_deadline() {
        let slots = Arc::new(Semaphore::new(1));
        let (client, server) = tokio::io::duplex(64);
        let mut silent = Admitted::new(
            server,
            slots.try_acquire_owned().unwrap(),
            &limits(Duration::from_secs(10)),
        );
        let mut buf = [0; 64];
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_greets_in_time_may_then_stay_quiet() {
        let slots = Arc::new(Semaphore::new(1));
        let (mut client, server) = tokio::io::duplex(64);
        let mut greeted = Admitted::new(
            server,
            slots.try_acquire_owned().unwrap(),
            &limits(Duration::from_secs(10)),
        );
        client.write_all(&[0; GREETING_BYTES]).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(greeted.read(&mut buf).await.unwrap(), GREETING_BYTES);
        let quiet = tokio::time::timeout(Duration::from_secs(60), greeted.read(&mut buf)).await;
        assert!(quiet.is_err(), "still waiting after a minute of silence");
    }

    #[test]
    fn each_connection_has_a_budget_of_its_own() {
        let slots = Arc::new(Semaphore::new(2));
        let limits = limits(Duration::from_secs(10));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let connection = |slots: &Arc<Semaphore>| {
            let io = Admitted::new((), slots.clone().try_acquire_owned().unwrap(), &limits);
            io.connect_info()
        };
        let (busy, other) = (connection(&slots), connection(&slots));
        let mut check = LimitRequestRate(limits.request_rate);
        let rpc = |budget: &RequestBudget| {
            let mut request = Request::new(());
            request.extensions_mut().insert(budget.clone());
            request
        };
        for _ in 0..3 {
            assert!(check.call(rpc(&busy)).is_ok());
        }
        let refused = check.call(rpc(&busy)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("--max-request-rate"),
            "{refused:?}"
        );
        assert!(check.call(rpc(&other)).is_ok());
    }
}
