//! Two lanes for the gRPC listener's connections. Each connection starts on the quiet
//! lane, a runtime of its own on one thread that the kernel is asked to run ahead of
//! the daemon's others, and moves for good to the busy lane, the daemon's main runtime,
//! once its traffic makes it loud: more than [`LOUD_BYTES`] within a second, or its
//! share of the quiet lane's traffic once that passes [`LANE_BYTES`] within a second.
//! A subscriber of a quiet topic then waits neither for its turn among a flood's tasks
//! nor, where the host allows a raised priority, for a core the flood keeps busy.
//!
//! What a quiet connection's RPC spawns with `tokio::spawn` runs on the quiet lane
//! too: work that outlives the RPC (a service) is spawned on the main runtime's handle.

use std::{
    cell::Cell,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    runtime::Handle,
    sync::oneshot,
};

/// How the quiet lane's thread is scheduled, or no quiet lane at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QuietLane {
    /// No quiet lane: every connection is served on the main runtime.
    #[default]
    Off,
    /// A thread of its own, at the daemon's priority.
    Normal,
    /// A thread of its own at nice -15, which needs CAP_SYS_NICE or an RLIMIT_NICE of
    /// 35: the daemon does not start where the host refuses it.
    Raised,
    /// A thread of its own under SCHED_FIFO, so that it takes a core the moment it has
    /// work, not at the end of another thread's time slice. Needs CAP_SYS_NICE or an
    /// RLIMIT_RTPRIO of 10: the daemon does not start where the host refuses it.
    Realtime,
}

/// How a thread asks to be scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduling {
    /// The usual time-sharing policy at this nice value (-20 to 19).
    Nice(i8),
    /// SCHED_FIFO at this priority (1 to 99): ahead of every time-shared thread.
    Fifo(u8),
}

/// The quiet lane's nice value under [`QuietLane::Raised`]: a thread at -15 weighs
/// about 28 times one at 0 when they share a core.
const RAISED_NICE: i8 = -15;
/// The quiet lane's priority under [`QuietLane::Realtime`]: low among real-time
/// threads, which the host's own (watchdogs, interrupts) are above.
const REALTIME_PRIORITY: u8 = 10;

/// Asks the kernel to schedule the calling thread so; the error is the system's
/// reason ("Operation not permitted") when refused.
pub fn schedule_current_thread(scheduling: Scheduling) -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, RealtimeThreadSchedulePolicy, ThreadPriority,
        ThreadPriorityValue, ThreadSchedulePolicy,
    };
    let (priority, policy) = match scheduling {
        Scheduling::Fifo(priority) => (
            priority,
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        ),
        // thread-priority maps 0..=99 onto nice 19..=-20 as 39 * (1 - p / 99) - 20,
        // rounded towards zero: this is the highest p that gives `nice`.
        Scheduling::Nice(nice) => (
            u8::try_from(99 * (39 - (i32::from(nice) + 20)) / 39).unwrap_or(0),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        ),
    };
    let priority = ThreadPriorityValue::try_from(priority).map_err(|e| e.to_owned())?;
    thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Crossplatform(priority),
        policy,
    )
    .map_err(|e| match e {
        // errno, as the system words it.
        thread_priority::Error::OS(code) => io::Error::from_raw_os_error(code).to_string(),
        other => other.to_string(),
    })
}

/// A connection that moves more than this within a second is loud.
pub const LOUD_BYTES: u64 = 1024 * 1024;
/// Past this within a second on the quiet lane as a whole, each connection that adds
/// to it is loud: however many connections a client opens, the quiet lane's thread
/// serves no more than this.
pub const LANE_BYTES: u64 = 8 * 1024 * 1024;
/// A connection's bytes are added to the lane's count in steps of this, so that the
/// count shared by all is touched rarely.
const LANE_STEP: u64 = 64 * 1024;
const WINDOW: Duration = Duration::from_secs(1);

thread_local! {
    /// Whether this thread is the quiet lane's: where a socket polled here must be
    /// registered.
    static ON_QUIET_LANE: Cell<bool> = const { Cell::new(false) };
}

/// A lane: which runtime serves a task, and keeps its sockets and timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Quiet,
    Busy,
}

/// The lane of the calling thread: a socket registered or a timer made now belongs to
/// its runtime, whose thread then hears of it. A task that keeps one across moves
/// makes it again when the lane has changed.
pub fn current() -> Lane {
    if ON_QUIET_LANE.get() {
        Lane::Quiet
    } else {
        Lane::Busy
    }
}

/// The quiet lane's thread; dropping this stops it, and with it the connections still
/// on it.
pub struct QuietThread {
    _stop: oneshot::Sender<()>,
}

/// The lanes connections are served on. Cheap to clone.
#[derive(Clone)]
pub struct Lanes(Arc<Shared>);

struct Shared {
    quiet: Option<Handle>,
    busy: Handle,
    lane_bytes: LaneMeter,
    quiet_connections: Gauge,
    busy_connections: Gauge,
}

impl Lanes {
    /// Starts the quiet lane as `mode` asks, beside the main runtime (the caller's),
    /// counting the connections on each in the gauges given. A scheduling the host
    /// refuses is an error, never a quiet fallback: the operator asked for it.
    pub fn start(
        mode: QuietLane,
        quiet_connections: Gauge,
        busy_connections: Gauge,
    ) -> io::Result<(Self, Option<QuietThread>)> {
        let (quiet, thread) = match mode {
            QuietLane::Off => (None, None),
            _ => {
                let (handle, thread) = start_quiet_thread(mode)?;
                (Some(handle), Some(thread))
            }
        };
        let shared = Shared {
            quiet,
            busy: Handle::current(),
            lane_bytes: LaneMeter::new(),
            quiet_connections,
            busy_connections,
        };
        Ok((Self(Arc::new(shared)), thread))
    }

    /// A new connection's place: on the quiet lane while there is one.
    pub fn connection(&self) -> Arc<ConnectionLane> {
        let loud = self.0.quiet.is_none();
        self.gauge(loud).inc();
        Arc::new(ConnectionLane {
            loud: AtomicBool::new(loud),
            lanes: self.clone(),
        })
    }

    fn gauge(&self, loud: bool) -> &Gauge {
        if loud {
            &self.0.busy_connections
        } else {
            &self.0.quiet_connections
        }
    }
}

fn start_quiet_thread(mode: QuietLane) -> io::Result<(Handle, QuietThread)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("streamd-quiet".into())
        .spawn(move || {
            ON_QUIET_LANE.set(true);
            let _ = started_tx.send(schedule_quiet_thread(mode));
            // Returns when the lane is stopped; the runtime's tasks are dropped with it.
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    let scheduled = started
        .recv()
        .map_err(|_| io::Error::other("the quiet lane's thread ended as it started"))?;
    // Dropping the runtime's stop ends the thread when the host refused its scheduling.
    let thread = QuietThread { _stop: stop };
    scheduled.map_err(io::Error::other)?;
    Ok((handle, thread))
}

/// Schedules the calling thread as `mode` asks; the error says what the host refused
/// and what would allow it.
fn schedule_quiet_thread(mode: QuietLane) -> Result<(), String> {
    match mode {
        QuietLane::Off | QuietLane::Normal => Ok(()),
        QuietLane::Raised => {
            schedule_current_thread(Scheduling::Nice(RAISED_NICE)).map_err(|why| {
                format!(
                    "--quiet-lane raised: nice {RAISED_NICE} was refused ({why}); it needs \
                     CAP_SYS_NICE or an RLIMIT_NICE of 35 (systemd: LimitNICE=-15), or \
                     use --quiet-lane normal"
                )
            })
        }
        QuietLane::Realtime => schedule_current_thread(Scheduling::Fifo(REALTIME_PRIORITY))
            .map_err(|why| {
                format!(
                    "--quiet-lane realtime: SCHED_FIFO was refused ({why}); it needs \
                     CAP_SYS_NICE or an RLIMIT_RTPRIO of {REALTIME_PRIORITY} (systemd: \
                     LimitRTPRIO={REALTIME_PRIORITY}), or use --quiet-lane normal"
                )
            }),
    }
}

/// One connection's lane: quiet until its traffic makes it loud, then loud for good.
pub struct ConnectionLane {
    loud: AtomicBool,
    lanes: Lanes,
}

impl ConnectionLane {
    pub fn is_loud(&self) -> bool {
        self.loud.load(Ordering::Relaxed)
    }

    fn make_loud(&self) {
        if !self.loud.swap(true, Ordering::Relaxed) {
            self.lanes.0.quiet_connections.dec();
            self.lanes.0.busy_connections.inc();
            tracing::debug!("a connection moved to the busy lane");
        }
    }

    /// Runs one of the connection's tasks on its lane; a task started on the quiet
    /// lane goes on on the busy one once the connection is loud.
    pub fn spawn<F>(self: &Arc<Self>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.lanes.0.quiet {
            Some(quiet) if !self.is_loud() => {
                quiet.spawn(WhileQuiet {
                    task: Some(Box::pin(task)),
                    connection: self.clone(),
                });
            }
            _ => {
                self.lanes.0.busy.spawn(task);
            }
        }
    }
}

impl Drop for ConnectionLane {
    fn drop(&mut self) {
        self.lanes.gauge(self.is_loud()).dec();
    }
}

/// Serves a connection's tasks, which hyper hands it, on the connection's lane.
#[derive(Clone)]
pub struct LaneExecutor(pub Arc<ConnectionLane>);

impl<F> hyper::rt::Executor<F> for LaneExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        self.0.spawn(task);
    }
}

/// A task on the quiet lane, handed to the busy lane when its connection is loud.
struct WhileQuiet<F> {
    task: Option<Pin<Box<F>>>,
    connection: Arc<ConnectionLane>,
}

impl<F> Future for WhileQuiet<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(task) = this.task.as_mut() else {
            return Poll::Ready(());
        };
        if !this.connection.is_loud() {
            if task.as_mut().poll(cx).is_ready() {
                this.task = None;
                return Poll::Ready(());
            }
            if !this.connection.is_loud() {
                return Poll::Pending;
            }
        }
        // Polled afresh there, the task's wakers are the busy lane's from now on.
        if let Some(task) = this.task.take() {
            this.connection.lanes.0.busy.spawn(task);
        }
        Poll::Ready(())
    }
}

/// A socket that can be registered again with the runtime polling it.
pub trait Rehome: Sized {
    fn rehome(self) -> io::Result<Self>;
}

impl Rehome for tokio::net::TcpStream {
    fn rehome(self) -> io::Result<Self> {
        Self::from_std(self.into_std()?)
    }
}

impl Rehome for tokio::net::UnixStream {
    fn rehome(self) -> io::Result<Self> {
        Self::from_std(self.into_std()?)
    }
}

/// A connection's socket: registered with the lane's runtime that polls it, so that
/// its readiness is the news of that lane's thread and not of a thread kept busy by
/// the other lane, and metered while the connection is quiet.
pub struct LaneIo<S> {
    socket: Option<S>,
    registered_on: Lane,
    lane: Arc<ConnectionLane>,
    meter: ConnectionMeter,
}

impl<S: Rehome> LaneIo<S> {
    /// `socket`, registered with the runtime of the thread calling this, served on
    /// `lane`.
    pub fn new(socket: S, lane: Arc<ConnectionLane>) -> Self {
        Self {
            socket: Some(socket),
            registered_on: current(),
            lane,
            meter: ConnectionMeter::new(),
        }
    }

    pub fn lane(&self) -> &Arc<ConnectionLane> {
        &self.lane
    }

    /// The socket, registered with the runtime polling it now.
    fn socket(&mut self) -> io::Result<&mut S> {
        let here = current();
        if here != self.registered_on {
            let socket = self.socket.take().ok_or_else(lost)?;
            self.socket = Some(socket.rehome()?);
            self.registered_on = here;
        }
        self.socket.as_mut().ok_or_else(lost)
    }

    fn count(&mut self, bytes: usize) {
        if self.lane.is_loud() {
            return;
        }
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        if self.meter.add(bytes, &self.lane.lanes.0.lane_bytes) {
            self.lane.make_loud();
        }
    }
}

fn lost() -> io::Error {
    io::Error::other("the connection's socket was lost as it moved between lanes")
}

impl<S: crate::connection::Peer> crate::connection::Peer for LaneIo<S> {
    fn peer(&self) -> Option<std::net::IpAddr> {
        self.socket.as_ref().and_then(|socket| socket.peer())
    }
}

impl<S: Rehome + AsyncRead + Unpin> AsyncRead for LaneIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(self.socket()?).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            self.count(buf.filled().len() - before);
        }
        read
    }
}

impl<S: Rehome + AsyncWrite + Unpin> AsyncWrite for LaneIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(self.socket()?).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.count(n);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(self.socket()?).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            self.count(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.socket()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.socket()?).poll_shutdown(cx)
    }
}

/// One connection's bytes in its current second, and those not yet added to the
/// lane's count.
struct ConnectionMeter {
    since: Instant,
    bytes: u64,
    unshared: u64,
}

impl ConnectionMeter {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            bytes: 0,
            unshared: 0,
        }
    }

    /// Counts `bytes` more; whether the connection is loud now.
    fn add(&mut self, bytes: u64, lane: &LaneMeter) -> bool {
        self.bytes += bytes;
        self.unshared += bytes;
        let mut loud = false;
        if self.unshared >= LANE_STEP {
            loud = lane.add(std::mem::take(&mut self.unshared));
        }
        if self.bytes >= LOUD_BYTES {
            if self.since.elapsed() < WINDOW {
                return true;
            }
            self.since = Instant::now();
            self.bytes = 0;
        }
        loud
    }
}

/// The quiet lane's bytes in its current second, shared by its connections.
struct LaneMeter {
    epoch: Instant,
    /// When the current second began, in milliseconds since `epoch`.
    since_ms: AtomicU64,
    bytes: AtomicU64,
}

impl LaneMeter {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            since_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` more; whether the lane is past [`LANE_BYTES`] this second.
    fn add(&self, bytes: u64) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let since = self.since_ms.load(Ordering::Relaxed);
        let window = u64::try_from(WINDOW.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(since) >= window
            && self
                .since_ms
                .compare_exchange(since, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.bytes.store(0, Ordering::Relaxed);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > LANE_BYTES
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        sync::mpsc,
    };

    use super::*;

    fn start(mode: QuietLane) -> (Lanes, Option<QuietThread>) {
        Lanes::start(mode, Gauge::default(), Gauge::default()).unwrap()
    }

    fn counts(lanes: &Lanes) -> (i64, i64) {
        (
            lanes.0.quiet_connections.get(),
            lanes.0.busy_connections.get(),
        )
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    /// The name of the test runtime's threads: the busy lane's.
    async fn busy() -> String {
        tokio::spawn(async { thread_name() }).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_moves_to_the_busy_lane_when_its_connection_is_loud_and_is_not_lost() {
        let (lanes, _thread) = start(QuietLane::Normal);
        let connection = lanes.connection();
        assert_eq!(counts(&lanes), (1, 0));
        let (wake, mut woken) = mpsc::unbounded_channel::<()>();
        let (report, mut reports) = mpsc::unbounded_channel();
        connection.spawn(async move {
            while woken.recv().await.is_some() {
                report.send(thread_name()).unwrap();
            }
        });
        wake.send(()).unwrap();
        assert_eq!(reports.recv().await.unwrap(), "streamd-quiet");
        connection.make_loud();
        assert_eq!(counts(&lanes), (0, 1));
        // A poll in progress on the quiet lane may take a wake or two more there.
        let (busy, mut on_busy) = (busy().await, 0);
        for _ in 0..100 {
            wake.send(()).unwrap();
            if reports.recv().await.unwrap() == busy {
                on_busy += 1;
            } else {
                assert_eq!(on_busy, 0, "back on the quiet lane");
            }
        }
        assert!(on_busy > 90, "{on_busy} of 100 wakes on the busy lane");
        // And a task spawned for a loud connection starts on the busy lane.
        let (report, mut reports) = mpsc::unbounded_channel();
        connection.spawn(async move { report.send(thread_name()).unwrap() });
        assert_eq!(reports.recv().await.unwrap(), busy);
        drop(connection);
        assert_eq!(counts(&lanes), (0, 0));
    }

    /// A socket accepted on the busy lane, served on the quiet one until its connection
    /// is loud, then on the busy one, registered there: it is served on once the quiet
    /// lane has stopped, and every byte the client sent comes back, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_socket_moves_between_lanes_without_losing_a_byte() {
        let (lanes, thread) = start(QuietLane::Normal);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let connection = lanes.connection();
        let mut io = LaneIo::new(socket, connection.clone());
        let (report, mut lanes_served_on) = mpsc::unbounded_channel();
        connection.spawn(async move {
            let mut buf = vec![0; 64 * 1024];
            let mut last = String::new();
            loop {
                let read = io.read(&mut buf).await.unwrap();
                if read == 0 {
                    break;
                }
                if thread_name() != last {
                    last = thread_name();
                    report.send(last.clone()).unwrap();
                }
                io.write_all(&buf[..read]).await.unwrap();
            }
        });
        let mut echo = async |bytes: u64| {
            let sent: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
            let (mut reading, mut writing) = client.split();
            let (echoed, ()) = tokio::join!(
                async {
                    let mut echoed = vec![0; sent.len()];
                    reading.read_exact(&mut echoed).await.unwrap();
                    echoed
                },
                async { writing.write_all(&sent).await.unwrap() },
            );
            assert!(echoed == sent, "the echo differs from what was sent");
        };
        echo(LOUD_BYTES / 2).await;
        assert_eq!(lanes_served_on.recv().await.unwrap(), "streamd-quiet");
        // As its traffic would; that it does is the meter's tests'.
        connection.make_loud();
        echo(LOUD_BYTES / 2).await;
        assert_eq!(lanes_served_on.recv().await.unwrap(), busy().await);
        drop(thread);
        tokio::time::timeout(Duration::from_secs(10), echo(LANE_STEP))
            .await
            .expect("served on after the quiet lane stopped");
    }

    /// The quiet lane's sockets are its own thread's news: one is served while every
    /// thread of the busy lane, which accepted it, is kept busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_quiet_socket_is_served_while_the_busy_lane_is_blocked() {
        let (lanes, _thread) = start(QuietLane::Normal);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let connection = lanes.connection();
        let mut io = LaneIo::new(socket, connection.clone());
        connection.spawn(async move {
            let mut buf = [0; 64];
            while let Ok(read @ 1..) = io.read(&mut buf).await {
                io.write_all(&buf[..read]).await.unwrap();
            }
        });
        let (blocked, blocking) = std::sync::mpsc::channel();
        let _blocker = tokio::spawn(async move {
            blocked.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
        });
        blocking.recv().unwrap();
        let echoed = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut client = client;
            client
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            client.write_all(b"ping").unwrap();
            let mut echoed = [0; 4];
            client.read_exact(&mut echoed).map(|()| echoed)
        })
        .join()
        .unwrap();
        assert_eq!(&echoed.expect("echoed within a second"), b"ping");
    }

    #[test]
    fn a_connection_is_loud_past_a_mebibyte_within_a_second_and_not_over_longer() {
        let lane = LaneMeter::new();
        let mut meter = ConnectionMeter::new();
        assert!(!meter.add(LOUD_BYTES - 1, &lane));
        assert!(meter.add(1, &lane));

        let lane = LaneMeter::new();
        let mut slow = ConnectionMeter::new();
        assert!(!slow.add(LOUD_BYTES - 1, &lane));
        slow.since -= WINDOW;
        assert!(!slow.add(1, &lane), "a second's window begins again");
        assert!(!slow.add(LOUD_BYTES - 1, &lane));
        assert!(slow.add(1, &lane));
    }

    #[test]
    fn connections_each_under_the_mark_are_loud_once_the_lane_carries_too_much() {
        let lane = LaneMeter::new();
        let per_connection = LOUD_BYTES / 2;
        let loud = (0..2 * LANE_BYTES / per_connection)
            .map(|_| ConnectionMeter::new().add(per_connection, &lane))
            .position(|loud| loud)
            .expect("some connection is loud");
        assert_eq!(
            u64::try_from(loud).unwrap(),
            LANE_BYTES / per_connection,
            "the first past the lane's bytes"
        );
    }

    fn nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Past the command's closing parenthesis, nice is the 17th field.
        let fields: Vec<_> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[16].parse().unwrap()
    }

    /// Where the host allows the scheduling asked for, the lane's thread has it;
    /// where not, the lane does not start and says what it needs.
    #[tokio::test]
    async fn the_raised_quiet_lane_runs_at_nice_minus_15_or_does_not_start() {
        match Lanes::start(QuietLane::Raised, Gauge::default(), Gauge::default()) {
            Ok((lanes, _thread)) => {
                let (report, reported) = oneshot::channel();
                lanes
                    .connection()
                    .spawn(async move { report.send(nice()).unwrap() });
                assert_eq!(reported.await.unwrap(), i64::from(RAISED_NICE));
            }
            Err(refused) => {
                let why = refused.to_string();
                assert!(
                    why.contains("CAP_SYS_NICE") && why.contains("normal"),
                    "{why}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_realtime_quiet_lane_runs_under_sched_fifo_or_does_not_start() {
        use thread_priority::{RealtimeThreadSchedulePolicy, ThreadSchedulePolicy};
        match Lanes::start(QuietLane::Realtime, Gauge::default(), Gauge::default()) {
            Ok((lanes, _thread)) => {
                let (report, reported) = oneshot::channel();
                lanes.connection().spawn(async move {
                    report
                        .send(thread_priority::thread_schedule_policy().unwrap())
                        .unwrap()
                });
                assert_eq!(
                    reported.await.unwrap(),
                    ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo)
                );
            }
            Err(refused) => {
                let why = refused.to_string();
                assert!(why.contains("SCHED_FIFO was refused"), "{why}");
                assert!(why.contains("RLIMIT_RTPRIO"), "{why}");
            }
        }
    }

    #[test]
    fn each_nice_value_is_asked_for_as_itself() {
        // A thread of its own for each, so that the test's threads keep theirs.
        for nice in [19, 10, 5, 1, 0, -1, -15, -20] {
            let got = std::thread::spawn(move || {
                schedule_current_thread(Scheduling::Nice(nice)).map(|()| super::tests::nice())
            })
            .join()
            .unwrap();
            match got {
                Ok(got) => assert_eq!(got, i64::from(nice)),
                // Only a privileged thread may go below nice 0.
                Err(why) if nice < 0 => eprintln!("nice {nice} refused: {why}"),
                Err(why) => panic!("nice {nice} refused: {why}"),
            }
        }
    }
}
