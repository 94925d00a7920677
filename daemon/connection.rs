//! What one client connection may spend: connections are counted against a cap, each
//! must finish its handshake (its first bytes, its TLS handshake and, where the daemon
//! has a token, its first request that carries it) within a deadline of its own, no
//! peer may hold more than a few connections in their handshake, and each connection
//! has a request-rate budget of its own, checked on every RPC; and the HTTP/2 settings
//! (windows, streams, keepalives) every connection of both listeners is served with.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
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
    /// How long a new connection may take to finish its handshake: to send its first
    /// bytes (the HTTP/2 preface, or a TLS hello), to finish a TLS handshake and, where
    /// the daemon has a token, to make a request that carries it.
    pub handshake_timeout: Duration,
    /// Connections from one peer (an IPv4 address, an IPv6 /64) that may be in their
    /// handshake at once; past it, that peer's new connections are closed as they
    /// arrive.
    pub handshakes_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            request_rate: NonZeroU32::new(5_000).expect("not zero"),
            handshake_timeout: Duration::from_secs(10),
            handshakes_per_peer: 64,
        }
    }
}

/// Where a connection's handshake ends, and with it its deadline and its hold on its
/// peer's count of connections in their handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeEnd {
    /// Once the client's first bytes (the HTTP/2 preface, an HTTP/1.1 request line)
    /// are in.
    Greeting,
    /// Once [`handshakes`] has finished its TLS handshake.
    Tls,
    /// Once a request has carried the daemon's token: until then the connection is a
    /// stranger's, as NATS holds a client that has not authenticated.
    Token,
}

/// Admits the connections `incoming` yields while fewer than the cap are open and
/// their peer has fewer than its share in their handshake, each with its deadline and
/// request budget; others are closed at once.
pub fn admit<IO: Peer, E>(
    incoming: impl Stream<Item = Result<IO, E>>,
    limits: Limits,
    end: HandshakeEnd,
) -> impl Stream<Item = Result<Admitted<IO>, E>> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let handshaking = Handshaking::default();
    let (mut at_cap, mut at_peer_cap) = (Refusals::default(), Refusals::default());
    incoming.filter_map(move |accepted| {
        let admitted = match accepted {
            Err(e) => Some(Err(e)),
            Ok(io) => match open.clone().try_acquire_owned() {
                Err(_) => {
                    at_cap.note(|count| {
                        format!(
                            "closed {count} new connection(s): {} are open, the most \
                             --max-connections allows",
                            limits.max_connections
                        )
                    });
                    None
                }
                Ok(slot) => match handshaking.begin(io.peer(), limits.handshakes_per_peer) {
                    Ok(peer_slot) => Some(Ok(Admitted::new(io, slot, peer_slot, end, &limits))),
                    Err(peer) => {
                        at_peer_cap.note(|count| {
                            format!(
                                "closed {count} new connection(s) from {peer}: {} of its \
                                 connections are in their handshake, the most \
                                 --max-handshakes-per-peer allows",
                                limits.handshakes_per_peer
                            )
                        });
                        None
                    }
                },
            },
        };
        std::future::ready(admitted)
    })
}

/// A peer a connection comes from, as its connections are counted together: an IPv4
/// address, or an IPv6 address's /64 (what one host is given); None for a Unix socket,
/// which only its owner may reach.
pub trait Peer {
    fn peer(&self) -> Option<IpAddr>;
}

impl Peer for tokio::net::TcpStream {
    fn peer(&self) -> Option<IpAddr> {
        let ip = self.peer_addr().ok()?.ip().to_canonical();
        Some(match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        })
    }
}

impl Peer for tokio::net::UnixStream {
    fn peer(&self) -> Option<IpAddr> {
        None
    }
}

/// How many connections of each peer are in their handshake.
#[derive(Clone, Default)]
struct Handshaking(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl Handshaking {
    /// Counts one more connection of `peer` in its handshake, if it has fewer than
    /// `cap`; otherwise gives the peer back, refused.
    fn begin(&self, peer: Option<IpAddr>, cap: usize) -> Result<Option<HandshakeSlot>, IpAddr> {
        let Some(peer) = peer else {
            return Ok(None);
        };
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(peer).or_default();
        if *count >= cap {
            return Err(peer);
        }
        *count += 1;
        Ok(Some(HandshakeSlot {
            peer,
            handshaking: self.clone(),
        }))
    }
}

/// One connection counted in its peer's handshakes until dropped.
struct HandshakeSlot {
    peer: IpAddr,
    handshaking: Handshaking,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self
            .handshaking
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// TLS handshakes with the connections `incoming` yields, each in a task of its own
/// within its own deadline, so that none waits for another; those that fail are
/// dropped (and logged at debug). Dropping the stream ends the handshakes under way.
pub fn handshakes<IO, E>(
    incoming: impl Stream<Item = Result<Admitted<IO>, E>> + Send + 'static,
    acceptor: TlsAcceptor,
    limits: Limits,
) -> impl Stream<Item = Result<TlsStream<Admitted<IO>>, E>> + Send
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Send + 'static,
{
    let mut incoming = Box::pin(incoming.fuse());
    let mut under_way = tokio::task::JoinSet::new();
    futures::stream::poll_fn(move |cx| {
        while let Poll::Ready(accepted) = incoming.poll_next_unpin(cx) {
            match accepted {
                Some(Ok(io)) => {
                    let accept = acceptor.accept(io);
                    under_way.spawn(async move {
                        match tokio::time::timeout(limits.handshake_timeout, accept).await {
                            Ok(Ok(tls)) => {
                                tls.get_ref().0.admission.handshake_over(HandshakeEnd::Tls);
                                Some(tls)
                            }
                            Ok(Err(e)) => {
                                tracing::debug!("TLS handshake failed: {e}");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(
                                    "TLS handshake not done within --handshake-timeout"
                                );
                                None
                            }
                        }
                    });
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => break,
            }
        }
        loop {
            match under_way.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(tls)))) => return Poll::Ready(Some(Ok(tls))),
                // Failed, or (its panic logged) ended: the connection is closed.
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) if incoming.is_done() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    })
}

/// Logs refused connections: the first at once, then a count at most every ten
/// seconds, so that a flood of them cannot flood the log.
#[derive(Default)]
struct Refusals {
    unreported: u64,
    last_report: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, message: impl FnOnce(u64) -> String) {
        self.unreported += 1;
        if self
            .last_report
            .is_some_and(|at| at.elapsed() < Self::EVERY)
        {
            return;
        }
        tracing::warn!("{}", message(self.unreported));
        self.unreported = 0;
        self.last_report = Some(Instant::now());
    }
}

/// A connection admitted under the cap: holds its place until it closes, and fails
/// reads if it has not finished its handshake in time.
pub struct Admitted<IO> {
    io: IO,
    admission: Admission,
    /// How many of the first bytes are still to come, until they have.
    greeting: Option<usize>,
    /// When the handshake must be over by, until it is.
    deadline: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

/// The HTTP/2 connection preface's length; a TLS hello is longer.
const GREETING_BYTES: usize = 24;

impl<IO> Admitted<IO> {
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn new(
        io: IO,
        slot: OwnedSemaphorePermit,
        handshake: Option<HandshakeSlot>,
        end: HandshakeEnd,
        limits: &Limits,
    ) -> Self {
        let quota = Quota::per_second(limits.request_rate);
        Self {
            io,
            admission: Admission(Arc::new(AdmissionState {
                budget: RateLimiter::direct(quota),
                handshake: Mutex::new(handshake),
                over: AtomicBool::new(false),
                end,
            })),
            greeting: Some(GREETING_BYTES),
            deadline: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
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
        if let (Some(missing), Poll::Ready(Ok(()))) = (&mut this.greeting, &read) {
            let got = buf.filled().len() - before;
            *missing = missing.saturating_sub(got);
            if *missing == 0 || got == 0 {
                this.greeting = None;
                this.admission.handshake_over(HandshakeEnd::Greeting);
            }
        }
        let Some(deadline) = &mut this.deadline else {
            return read;
        };
        if this.admission.0.over.load(Ordering::Acquire) {
            this.deadline = None;
            return read;
        }
        match read {
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                let what = if this.greeting.is_some() {
                    "sent no greeting"
                } else {
                    "did not finish its handshake (or, where the daemon has a token, make a \
                     request with it)"
                };
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client {what} within --handshake-timeout"),
                )))
            }
            read => read,
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
    type ConnectInfo = Admission;

    fn connect_info(&self) -> Admission {
        self.admission.clone()
    }
}

/// What a connection's requests share: its request budget, and its place among its
/// peer's connections in their handshake until that is over. tonic hands each request
/// its connection's.
#[derive(Clone)]
pub struct Admission(Arc<AdmissionState>);

struct AdmissionState {
    budget: DefaultDirectRateLimiter,
    /// Held while the connection is in its handshake.
    handshake: Mutex<Option<HandshakeSlot>>,
    /// Whether the handshake is over, for reads to stop watching its deadline.
    over: AtomicBool,
    end: HandshakeEnd,
}

impl Admission {
    /// The admission of the connection a request came on, as the server put it in the
    /// request's extensions.
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Self>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<Self>>()
                .map(TlsConnectInfo::get_ref)
        })
    }

    /// Spends one request of the connection's budget, if it has one left.
    pub fn spend(&self) -> bool {
        self.0.budget.check().is_ok()
    }

    /// The connection has come to `point`: if its handshake ends there, it is over, and
    /// the connection no longer counts in its peer's.
    pub fn handshake_over(&self, point: HandshakeEnd) {
        // Read first: every request with the token comes here, and only the first of
        // a connection's has anything to change.
        if self.0.end == point
            && !self.0.over.load(Ordering::Acquire)
            && !self.0.over.swap(true, Ordering::AcqRel)
        {
            let slot = self
                .0
                .handshake
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            drop(slot);
        }
    }
}

/// Refuses a request when its connection has spent its request budget.
#[derive(Clone)]
pub struct LimitRequestRate(pub NonZeroU32);

impl LimitRequestRate {
    /// Spends a request of its connection's budget; when none is left, says so.
    pub fn check(&self, extensions: &http::Extensions) -> Result<(), String> {
        match Admission::of(extensions) {
            Some(admission) if !admission.spend() => Err(format!(
                "this connection started more than {} requests in a second \
                 (--max-request-rate); wait, or send many events in one PublishStream",
                self.0
            )),
            _ => Ok(()),
        }
    }
}

impl Interceptor for LimitRequestRate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.extensions())
            .map_err(Status::resource_exhausted)?;
        Ok(request)
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
            handshakes_per_peer: 2,
        }
    }

    impl Peer for tokio::io::DuplexStream {
        fn peer(&self) -> Option<IpAddr> {
            None
        }
    }

    /// A connection from a peer, as far as admission sees it.
    struct From(Option<IpAddr>);

    impl Peer for From {
        fn peer(&self) -> Option<IpAddr> {
            self.0
        }
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_until_one_goes() {
        let (accept, accepted) = tokio::sync::mpsc::unbounded_channel::<Result<_, ()>>();
        let admitted = admit(
            tokio_stream::wrappers::UnboundedReceiverStream::new(accepted),
            limits(Duration::from_secs(10)),
            HandshakeEnd::Greeting,
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

    #[tokio::test]
    async fn a_peer_holds_at_most_its_share_of_connections_in_their_handshake() {
        let (accept, accepted) = tokio::sync::mpsc::unbounded_channel::<Result<_, ()>>();
        let admitted = admit(
            tokio_stream::wrappers::UnboundedReceiverStream::new(accepted),
            Limits {
                max_connections: 100,
                ..limits(Duration::from_secs(10))
            },
            HandshakeEnd::Tls,
        );
        tokio::pin!(admitted);
        let (one, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for peer in [one, one, one, other] {
            accept.send(Ok(From(Some(peer)))).unwrap();
        }
        let first = admitted.next().await.unwrap().unwrap();
        let _second = admitted.next().await.unwrap().unwrap();
        let third = admitted.next().await.unwrap().unwrap();
        assert_eq!(
            third.get_ref().0,
            Some(other),
            "the third of one peer's is closed"
        );
        // Once one of its handshakes is done, the peer may start another.
        first.admission.handshake_over(HandshakeEnd::Tls);
        accept.send(Ok(From(Some(one)))).unwrap();
        let fourth = admitted.next().await.unwrap().unwrap();
        assert_eq!(fourth.get_ref().0, Some(one));
        accept.send(Ok(From(Some(one)))).unwrap();
        accept.send(Ok(From(None))).unwrap();
        assert_eq!(
            admitted.next().await.unwrap().unwrap().get_ref().0,
            None,
            "closed again at two; a Unix socket's connections are not counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off_at_the_deadline() {
        let slots = Arc::new(Semaphore::new(1));
        let (client, server) = tokio::io::duplex(64);
        let mut silent = Admitted::new(
            server,
            slots.try_acquire_owned().unwrap(),
            None,
            HandshakeEnd::Greeting,
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
            None,
            HandshakeEnd::Greeting,
            &limits(Duration::from_secs(10)),
        );
        client.write_all(&[0; GREETING_BYTES]).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(greeted.read(&mut buf).await.unwrap(), GREETING_BYTES);
        let quiet = tokio::time::timeout(Duration::from_secs(60), greeted.read(&mut buf)).await;
        assert!(quiet.is_err(), "still waiting after a minute of silence");
    }

    /// Where the daemon has a token, a connection's handshake lasts until a request
    /// carries it: one that greets and then sends nothing with it is cut off.
    #[tokio::test(start_paused = true)]
    async fn a_stranger_is_cut_off_at_the_deadline_and_a_client_with_the_token_is_not() {
        let slots = Arc::new(Semaphore::new(2));
        let limits = limits(Duration::from_secs(10));
        let connection = || {
            let (mut client, server) = tokio::io::duplex(64);
            let slot = slots.clone().try_acquire_owned().unwrap();
            let admitted = Admitted::new(server, slot, None, HandshakeEnd::Token, &limits);
            async move {
                client.write_all(&[0; GREETING_BYTES]).await.unwrap();
                (client, admitted)
            }
        };
        let mut buf = [0; 64];
        let (_stranger, mut strangers) = connection().await;
        assert_eq!(strangers.read(&mut buf).await.unwrap(), GREETING_BYTES);
        let cut = strangers.read(&mut buf).await.unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::TimedOut);
        assert!(cut.to_string().contains("token"), "{cut}");

        let (_client, mut clients) = connection().await;
        assert_eq!(clients.read(&mut buf).await.unwrap(), GREETING_BYTES);
        clients.connect_info().handshake_over(HandshakeEnd::Token);
        let quiet = tokio::time::timeout(Duration::from_secs(60), clients.read(&mut buf)).await;
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
            let slot = slots.clone().try_acquire_owned().unwrap();
            let io = Admitted::new((), slot, None, HandshakeEnd::Greeting, &limits);
            io.connect_info()
        };
        let (busy, other) = (connection(&slots), connection(&slots));
        let mut check = LimitRequestRate(limits.request_rate);
        let rpc = |admission: &Admission| {
            let mut request = Request::new(());
            request.extensions_mut().insert(admission.clone());
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
