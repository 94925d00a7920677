//! What both workloads share, so that streamd and NATS are measured by the same code:
//! the publishers' schedule, the subscribers' reading loop, the readiness warm-up, and
//! the timed phase from starting the clock to the report, with the server's CPU read
//! around its measured part.

use std::{
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use hdrhistogram::Histogram;
use streamhandler::lanes::{Scheduling, schedule_current_thread};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::task::AbortOnDropHandle;

use super::{
    IDLE, Plan,
    payload::{self, Kind},
    report::{self, Measured, Report, System, Tally},
    server::Processes,
};
use crate::error::Error;

/// Latency histograms shared by a group's subscribers, each subscriber using one, so
/// that many subscribers need not each hold a histogram.
const HISTOGRAMS: usize = 16;

/// When publishing started, in both clocks, and when its measured part starts.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    /// `start` in nanoseconds since the epoch, the time payloads carry.
    pub start_ns: u64,
    pub warmup: Duration,
}

impl Clock {
    fn now(warmup: Duration) -> Self {
        Self {
            start: Instant::now(),
            start_ns: payload::now_ns(),
            warmup,
        }
    }

    /// When the measured part starts.
    pub fn measured(&self) -> Instant {
        self.start + self.warmup
    }

    /// The epoch time of `due` after the start.
    pub fn intended_ns(&self, due: Duration) -> u64 {
        self.start_ns + due.as_nanos() as u64
    }
}

/// What one publisher sends, in order, and when. With a rate, message `n` of the run is
/// due at `n / rate` and carries that time, whenever it really goes out, so that a
/// publisher that falls behind shows in the latency (no coordinated omission); the
/// warm-up's messages come first. Without a rate, warm-up messages go out flat out
/// until the measured part starts, and each message carries its real send time.
pub struct Schedule {
    clock: Clock,
    rate: u64,
    padding: usize,
    step: u64,
    /// The next warm-up number, and (with a rate) where the warm-up ends.
    next_warmup: u64,
    warmup_msgs: Option<u64>,
    /// The next measured index, and the end of the measured indices.
    next: u64,
    msgs: u64,
    /// Measured messages handed to the client so far, over all publishers.
    published: Arc<AtomicU64>,
    /// How this publisher waits for a message's time.
    timer: Timer,
}

/// tokio's timer wakes on whole milliseconds, up to about 2 ms after the time asked: for
/// messages that far apart, that error would be counted as the server's latency. So
/// where this publisher's messages are at least `FINE_INTERVAL` apart it waits on a
/// timerfd, good to some microseconds; closer ones go out in batches as tokio's timer
/// ticks, each carrying the time it was due.
enum Timer {
    Coarse,
    /// Made on first use, in the runtime the publisher runs on, whose reactor then
    /// watches it.
    Fine(Option<tokio_timerfd::Delay>),
}

const FINE_INTERVAL: Duration = Duration::from_millis(1);

impl Timer {
    fn for_interval(rate: u64, step: u64) -> Self {
        let fine = rate > 0
            && Duration::from_nanos(step.saturating_mul(1_000_000_000) / rate) >= FINE_INTERVAL;
        if fine { Self::Fine(None) } else { Self::Coarse }
    }

    async fn sleep_until(&mut self, at: Instant) {
        if let Self::Fine(delay) = self {
            let delay = match delay {
                Some(delay) => {
                    delay.reset(at.into_std());
                    Some(delay)
                }
                None => tokio_timerfd::Delay::new(at.into_std())
                    .ok()
                    .map(|made| delay.insert(made)),
            };
            // Without a timerfd (out of descriptors), tokio's timer does.
            if let Some(delay) = delay
                && delay.await.is_ok()
            {
                return;
            }
        }
        tokio::time::sleep_until(at).await;
    }
}

impl Schedule {
    /// Publisher `p`'s share of the main topic.
    pub fn main(plan: &Plan, p: usize, clock: Clock, published: Arc<AtomicU64>) -> Self {
        Self {
            clock,
            rate: plan.rate,
            padding: plan.padding,
            step: plan.pubs as u64,
            next_warmup: p as u64,
            warmup_msgs: (plan.rate > 0).then(|| plan.warmup_msgs()),
            next: p as u64,
            msgs: plan.msgs,
            published,
            timer: Timer::for_interval(plan.rate, plan.pubs as u64),
        }
    }

    /// The quiet topic's publisher: `rate` a second from the measured start, until
    /// stopped.
    pub fn quiet(plan: &Plan, clock: Clock, published: Arc<AtomicU64>) -> Self {
        Self {
            clock,
            rate: plan.quiet_rate,
            padding: plan.padding,
            step: 1,
            next_warmup: 0,
            warmup_msgs: Some(0),
            next: 0,
            msgs: u64::MAX,
            published,
            timer: Timer::for_interval(plan.quiet_rate, 1),
        }
    }

    /// Waits on tokio's timer whatever the rate, for tests on tokio's paused clock,
    /// which drives no timer but its own.
    #[cfg(test)]
    pub fn on_tokio_timer(mut self) -> Self {
        self.timer = Timer::Coarse;
        self
    }

    /// The next payload, once it is due; `None` when this publisher is done.
    pub async fn next(&mut self) -> Option<Bytes> {
        let number = self.next_warmup;
        match self.warmup_msgs {
            Some(warmup_msgs) if number < warmup_msgs => {
                self.next_warmup += self.step;
                let due = self.due(number);
                self.wait(due).await;
                let sent_ns = self.clock.intended_ns(due);
                return Some(payload::encode(Kind::Warmup, number, sent_ns, self.padding));
            }
            None if Instant::now() < self.clock.measured() => {
                self.next_warmup += self.step;
                let sent_ns = payload::now_ns();
                return Some(payload::encode(Kind::Warmup, number, sent_ns, self.padding));
            }
            _ => {}
        }
        if self.next >= self.msgs {
            return None;
        }
        let index = self.next;
        self.next += self.step;
        let sent_ns = if self.rate > 0 {
            let due = self.clock.warmup + self.due(index);
            self.wait(due).await;
            self.clock.intended_ns(due)
        } else {
            payload::now_ns()
        };
        self.published.fetch_add(1, Ordering::Relaxed);
        Some(payload::encode(
            Kind::Measured,
            index,
            sent_ns,
            self.padding,
        ))
    }

    fn due(&self, number: u64) -> Duration {
        Duration::from_secs_f64(number as f64 / self.rate as f64)
    }

    async fn wait(&mut self, due: Duration) {
        let at = self.clock.start + due;
        if at > Instant::now() {
            self.timer.sleep_until(at).await;
        }
    }
}

/// The schedule's payloads as a stream, ending early once `done` says so.
pub fn payloads(
    schedule: Schedule,
    done: Option<watch::Receiver<bool>>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold((schedule, done), |(mut schedule, mut done)| async move {
        let next = match &mut done {
            Some(done) => tokio::select! {
                next = schedule.next() => next,
                _ = done.wait_for(|done| *done) => None,
            },
            None => schedule.next().await,
        };
        next.map(|payload| (payload, (schedule, done)))
    })
}

/// Runs `publishers` to the end, each in its own task; dropping the future (when the
/// deadline passes) stops them.
pub async fn join_publishers(publishers: Vec<JoinHandle<Result<(), Error>>>) -> Result<(), Error> {
    let publishers = publishers.into_iter().map(AbortOnDropHandle::new);
    for publisher in futures::future::join_all(publishers).await {
        publisher.map_err(|err| Error::Other(format!("a publisher failed: {err}")))??;
    }
    Ok(())
}

/// The quiet topic, when the plan has one, with the runtime its clients run on.
pub fn quiet_apart(plan: &Plan) -> Result<Option<(String, Apart)>, Error> {
    plan.quiet_topic()
        .map(|topic| Ok((topic, Apart::start()?)))
        .transpose()
}

/// A runtime on a thread of its own, for the quiet topic's publisher and subscriber:
/// apart from the flood's tasks, as separate clients would be, so that this client's
/// busy tasks do not delay their timers and reads and the figure is the server's. The
/// thread asks for real-time scheduling, for the same reason: the flood's client keeps
/// every core it may use busy, and a thread of normal priority waits its turn for one
/// (milliseconds). It stops when dropped.
pub struct Apart {
    handle: tokio::runtime::Handle,
    /// Why the thread runs at normal priority, if it does.
    not_realtime: Option<String>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The quiet thread's real-time priority (SCHED_FIFO, 1 to 99): above every thread of
/// normal priority, below the kernel's own real-time threads.
const QUIET_PRIORITY: u8 = 50;

impl Apart {
    pub fn start() -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| {
                Error::Other(format!("cannot start the quiet topic's runtime: {err}"))
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (scheduled, scheduling) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("bench-quiet".into())
            .spawn(move || {
                let _ = scheduled.send(schedule_current_thread(Scheduling::Fifo(QUIET_PRIORITY)));
                runtime.block_on(async { stopped.await.ok() })
            })
            .map_err(|err| Error::Other(format!("cannot start the quiet topic's thread: {err}")))?;
        let not_realtime = match scheduling.recv() {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some("the thread ended before it was scheduled".into()),
        };
        Ok(Self {
            handle,
            not_realtime,
            _stop: stop,
        })
    }

    /// Says in the report how the quiet thread was scheduled.
    pub fn mark(&self, report: &mut Report) {
        if let Some(quiet) = &mut report.quiet {
            quiet.probe_realtime = self.not_realtime.is_none();
        }
        if let Some(why) = &self.not_realtime {
            report.notes.push(format!(
                "the quiet topic's clients ran at normal priority (real-time scheduling was \
                 refused: {why}): their figures include this client's own wait for a core"
            ));
        }
    }

    /// Runs `future` there; its handle can be awaited from any runtime.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `future` there and waits for its result.
    pub async fn run<T, F>(&self, future: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(future)
            .await
            .map_err(|err| Error::Other(format!("the quiet topic's setup failed: {err}")))?
    }
}

/// Runs the main publishers and, beside them, the quiet topic's until they end.
pub async fn with_quiet<M, Q>(main: M, quiet: Option<Q>) -> Result<(), Error>
where
    M: Future<Output = Result<(), Error>>,
    Q: FnOnce(watch::Receiver<bool>) -> JoinHandle<Result<(), Error>>,
{
    let Some(quiet) = quiet else {
        return main.await;
    };
    let (done_tx, done_rx) = watch::channel(false);
    let quiet = join_publishers(vec![quiet(done_rx)]);
    let main = async {
        let main = main.await;
        let _ = done_tx.send(true);
        main
    };
    let (main, quiet) = tokio::join!(main, quiet);
    main.and(quiet)
}

/// One message as a subscriber takes it, whichever system delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A readiness ping, or a message of the warm-up phase.
    Warmup,
    /// The transport says the subscription is live.
    Subscribed,
    /// Measured message `index`, meant to be sent at `sent_ns`, at `position` in the
    /// independently ordered stream `stream`.
    Data {
        index: u64,
        sent_ns: u64,
        stream: usize,
        position: u64,
    },
    /// The transport says this subscriber skipped this many events.
    Lagged(u64),
    /// Not a bench payload.
    Foreign,
}

/// Counts the subscribers that have seen the warm-up.
pub struct Readiness {
    ready: AtomicUsize,
    changed: Notify,
}

impl Readiness {
    fn new() -> Self {
        Self {
            ready: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn mark(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
    }
}

/// One group's latency histograms.
pub struct Latencies(Vec<Mutex<Histogram<u64>>>);

impl Latencies {
    fn new() -> Self {
        Self(
            (0..HISTOGRAMS)
                .map(|_| Mutex::new(report::histogram()))
                .collect(),
        )
    }

    /// Records a latency, in nanoseconds, in subscriber `slot`'s histogram.
    fn record(&self, slot: usize, nanos: u64) {
        // No lock is held across an await; a poisoned one still holds good counts.
        self.0[slot % HISTOGRAMS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(nanos.max(1));
    }

    fn merged(&self) -> Histogram<u64> {
        let mut latency = report::histogram();
        for h in &self.0 {
            latency
                .add(&*h.lock().unwrap_or_else(PoisonError::into_inner))
                .expect("same bounds");
        }
        latency
    }
}

/// A group of subscribers: the main topic's, or the quiet topic's.
struct Group {
    latencies: Arc<Latencies>,
    /// How many measured messages were published, once publishing has ended.
    published: watch::Sender<Option<u64>>,
    tallies_tx: mpsc::UnboundedSender<Tally>,
    tallies: mpsc::UnboundedReceiver<Tally>,
    /// Messages each subscriber expects, when known before the run.
    expected: Option<u64>,
    /// Indices beyond this are not the bench's.
    limit: u64,
    /// Independently ordered streams the messages arrive in.
    streams: usize,
}

impl Group {
    fn new(expected: Option<u64>, limit: u64, streams: usize) -> Self {
        let (tallies_tx, tallies) = mpsc::unbounded_channel();
        Self {
            latencies: Arc::new(Latencies::new()),
            published: watch::channel(None).0,
            tallies_tx,
            tallies,
            expected,
            limit,
            streams,
        }
    }

    /// Waits for `count` subscribers' tallies (fewer if some task ended without one).
    async fn tallies(&mut self, count: usize) -> Vec<Tally> {
        let mut tallies = Vec::with_capacity(count);
        while tallies.len() < count {
            match self.tallies.recv().await {
                Some(tally) => tallies.push(tally),
                None => break,
            }
        }
        tallies
    }
}

/// Whose messages a subscriber reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Main,
    Quiet,
}

/// The state of one run that its subscriber tasks share.
pub struct Run {
    readiness: Arc<Readiness>,
    start: watch::Sender<Option<Clock>>,
    release: watch::Sender<bool>,
    main: Group,
    quiet: Group,
    timeout: Duration,
}

impl Run {
    /// `streams`: the independently ordered streams the main topic's messages arrive
    /// in (1 for streamd, whose `seq` orders a topic; a publisher each for NATS).
    pub fn new(plan: &Plan, streams: usize) -> Self {
        let quiet_limit = (plan.quiet_rate as f64 * plan.timeout().as_secs_f64()) as u64 + 1;
        Self {
            readiness: Arc::new(Readiness::new()),
            start: watch::channel(None).0,
            release: watch::channel(false).0,
            main: Group::new(Some(plan.msgs), plan.msgs, streams),
            quiet: Group::new(None, quiet_limit, 1),
            timeout: plan.timeout(),
        }
    }

    /// The reader for subscriber `slot` of `topic`.
    pub fn reader(&self, topic: Topic, slot: usize) -> Reader {
        let group = match topic {
            Topic::Main => &self.main,
            Topic::Quiet => &self.quiet,
        };
        Reader {
            slot,
            tally: Tally::new(group.limit, group.streams),
            expected: group.expected,
            readiness: self.readiness.clone(),
            latencies: group.latencies.clone(),
            start: self.start.subscribe(),
            published: group.published.subscribe(),
            release: self.release.subscribe(),
            tallies: group.tallies_tx.clone(),
            timeout: self.timeout,
        }
    }

    /// Sends warm-up messages with `send` until `subscribers` subscribers have each seen
    /// one, so that the clock starts with every stream live.
    pub async fn warm_up<F, P>(
        &self,
        system: System,
        plan: &Plan,
        subscribers: usize,
        mut send: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> P,
        P: Future<Output = Result<(), Error>>,
    {
        let give_up = Instant::now() + plan.ready_timeout();
        loop {
            let ready = self.readiness.changed.notified();
            let count = self.readiness.ready.load(Ordering::Acquire);
            if count == subscribers {
                return Ok(());
            }
            if Instant::now() >= give_up {
                return Err(Error::Other(format!(
                    "only {count} of {subscribers} {system} subscribers were ready within {}",
                    humantime::format_duration(plan.ready_timeout())
                )));
            }
            send().await?;
            let _ = tokio::time::timeout(Duration::from_millis(100), ready).await;
        }
    }

    /// Starts the clock and runs `publish` (given the clock, and the counters of
    /// measured messages published on the main and quiet topics) until it ends or the
    /// deadline passes, then gathers the subscribers' tallies into the report. The
    /// server's CPU time is read when the measured part starts and once every
    /// subscriber is done.
    pub async fn timed<F, P>(
        mut self,
        system: System,
        plan: &Plan,
        server: &Processes,
        publish: F,
    ) -> Result<Finished, Error>
    where
        F: FnOnce(Clock, Arc<AtomicU64>, Arc<AtomicU64>) -> P,
        P: Future<Output = Result<(), Error>>,
    {
        let clock = Clock::now(plan.warmup);
        let deadline = clock.start + plan.timeout();
        let _ = self.start.send(Some(clock));
        let (published, quiet_published) = (Arc::new(AtomicU64::new(0)), Arc::default());
        let cpu_at_start = async {
            tokio::time::sleep_until(clock.measured()).await;
            server.cpu_time()
        };
        let publishing = async {
            tokio::select! {
                result = publish(clock, published.clone(), Arc::clone(&quiet_published)) => {
                    result.map(|()| false)
                }
                () = tokio::time::sleep_until(deadline) => Ok(true),
            }
        };
        let (timed_out_publishing, cpu_before) = tokio::join!(publishing, cpu_at_start);
        let timed_out_publishing = timed_out_publishing?;
        let publish_time = Instant::now().saturating_duration_since(clock.measured());
        let published = published.load(Ordering::Relaxed);
        let quiet_published = quiet_published.load(Ordering::Relaxed);
        let _ = self.main.published.send(Some(published));
        let _ = self.quiet.published.send(Some(quiet_published));

        let tallies = self.main.tallies(plan.subs).await;
        let quiet_tallies = self.quiet.tallies(usize::from(plan.quiet_rate > 0)).await;
        let cpu = cpu_before.zip(server.cpu_time());
        let last = tallies.iter().filter_map(|t| t.last_at).max();
        let measured = Measured {
            published,
            publish_time,
            elapsed: last.map_or(publish_time, |l| {
                l.saturating_duration_since(clock.measured())
            }),
            timed_out: timed_out_publishing || Instant::now() >= deadline,
            server_cpu: cpu.map(|(before, after)| after.saturating_sub(before)),
        };
        let mut report = Report::new(
            system,
            plan,
            measured,
            &tallies,
            &self.main.latencies.merged(),
        );
        if plan.quiet_rate > 0 {
            report.quiet = Some(report::Quiet::new(
                plan.quiet_rate,
                quiet_published,
                quiet_tallies.first(),
                &self.quiet.latencies.merged(),
            ));
        }
        Ok(Finished {
            report,
            release: self.release,
        })
    }
}

/// A run whose figures are in, with its streams still open.
pub struct Finished {
    pub report: Report,
    release: watch::Sender<bool>,
}

impl Finished {
    /// Holds the streams open for `--hold`, then lets every subscriber task end.
    pub async fn release(self, plan: &Plan) -> Report {
        if let Some(hold) = plan.hold {
            eprintln!(
                "streamctl: holding {} {} subscribers open for {}",
                plan.subs + plan.stalled,
                self.report.system,
                humantime::format_duration(hold)
            );
            tokio::time::sleep(hold).await;
        }
        let _ = self.release.send(true);
        self.report
    }
}

/// One subscriber's reading: first until it has seen the warm-up, then through the run.
pub struct Reader {
    slot: usize,
    tally: Tally,
    expected: Option<u64>,
    readiness: Arc<Readiness>,
    latencies: Arc<Latencies>,
    start: watch::Receiver<Option<Clock>>,
    published: watch::Receiver<Option<u64>>,
    release: watch::Receiver<bool>,
    tallies: mpsc::UnboundedSender<Tally>,
    timeout: Duration,
}

impl Reader {
    /// Reads until the first warm-up message, or the transport's word that the stream
    /// is live, and counts this subscriber ready; false if the stream ended first.
    pub async fn until_ready<S>(&mut self, stream: &mut S) -> bool
    where
        S: Stream<Item = Received> + Unpin,
    {
        while let Some(received) = stream.next().await {
            self.tally.taken += 1;
            if matches!(received, Received::Warmup | Received::Subscribed) {
                self.readiness.mark();
                return true;
            }
        }
        false
    }

    /// Reads until every expected message has arrived, the deadline, or a second of
    /// silence after publishing ends, and reports its tally.
    pub async fn read<S>(mut self, stream: &mut S) -> Self
    where
        S: Stream<Item = Received> + Unpin,
    {
        let Ok(clock) = self
            .start
            .wait_for(Option::is_some)
            .await
            .map(|clock| clock.expect("waited for"))
        else {
            return self;
        };
        let deadline = clock.start + self.timeout;
        let mut published = self.published.borrow_and_update().is_some();
        let mut last = Instant::now();
        while self.expected.is_none_or(|n| self.tally.distinct() < n) {
            // What has arrived already is taken without setting up timers: per event
            // they would cost this client, which shares the CPU with the server, more
            // than reading the event does.
            if let Some(received) = stream.next().now_or_never() {
                let Some(received) = received else { break };
                self.take(received, last);
                continue;
            }
            last = Instant::now();
            let idle = last + IDLE;
            let received = tokio::select! {
                received = stream.next() => received,
                () = tokio::time::sleep_until(deadline) => break,
                Ok(()) = self.published.changed(), if !published => {
                    published = true;
                    self.expected = self.expected.or(*self.published.borrow());
                    continue;
                }
                () = tokio::time::sleep_until(idle), if published => break,
            };
            let Some(received) = received else { break };
            last = Instant::now();
            self.take(received, last);
        }
        let _ = self.tallies.send(self.tally.clone());
        self
    }

    fn take(&mut self, received: Received, at: Instant) {
        self.tally.taken += 1;
        match received {
            Received::Data {
                index,
                sent_ns,
                stream,
                position,
            } => {
                let latency = payload::now_ns().saturating_sub(sent_ns);
                self.latencies.record(self.slot, latency);
                self.tally.record(index, stream, position, at);
            }
            Received::Lagged(missed) => self.tally.lagged += missed,
            Received::Foreign => self.tally.foreign += 1,
            Received::Warmup | Received::Subscribed => {}
        }
    }

    /// Messages taken from the stream so far, of any kind.
    pub fn taken(&self) -> u64 {
        self.tally.taken
    }

    /// Counts what the stream holds already, without waiting (NATS's client buffer).
    pub fn drain<S>(&mut self, stream: &mut S)
    where
        S: Stream<Item = Received> + Unpin,
    {
        while let Some(Some(_)) = stream.next().now_or_never() {
            self.tally.taken += 1;
        }
    }

    /// Waits until the run lets its streams go.
    pub async fn released(mut self) {
        let _ = self.release.wait_for(|released| *released).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_whose_messages_are_a_millisecond_apart_wait_on_the_fine_timer() {
        assert!(matches!(Timer::for_interval(500, 1), Timer::Fine(None)));
        assert!(matches!(Timer::for_interval(1000, 1), Timer::Fine(None)));
        // Four publishers sharing 4,000/s: each sends one a millisecond.
        assert!(matches!(Timer::for_interval(4000, 4), Timer::Fine(None)));
        assert!(matches!(Timer::for_interval(1001, 1), Timer::Coarse));
        // Flat out: nothing to wait for.
        assert!(matches!(Timer::for_interval(0, 1), Timer::Coarse));
    }

    #[tokio::test]
    async fn the_fine_timer_never_wakes_early_and_keeps_its_timerfd() {
        let mut timer = Timer::for_interval(500, 1);
        for n in 1..=20 {
            let at = Instant::now() + Duration::from_micros(300 * n);
            timer.sleep_until(at).await;
            assert!(Instant::now() >= at, "woke before the time asked");
        }
        assert!(matches!(timer, Timer::Fine(Some(_))));
    }

    #[tokio::test]
    async fn the_quiet_thread_runs_real_time_where_allowed_and_the_report_says_which() {
        use thread_priority::{RealtimeThreadSchedulePolicy, ThreadSchedulePolicy};
        let apart = Apart::start().unwrap();
        let policy = apart
            .run(async { Ok(thread_priority::thread_schedule_policy()) })
            .await
            .unwrap()
            .unwrap();
        let plan = crate::bench::tests::plan(&["--msgs", "10", "--quiet-rate", "5"]).unwrap();
        let mut report = Report::failed(System::Streamd, &plan, "not run".into());
        report.quiet = Some(report::Quiet::new(5, 0, None, &Histogram::new(3).unwrap()));
        apart.mark(&mut report);
        let realtime = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
        let quiet = report.quiet.unwrap();
        match &apart.not_realtime {
            None => {
                assert_eq!(policy, realtime);
                assert!(quiet.probe_realtime && report.notes.is_empty());
            }
            Some(why) => {
                println!("real-time scheduling refused here ({why}): the note is checked");
                assert_ne!(policy, realtime);
                assert!(!quiet.probe_realtime);
                assert!(
                    report.notes[0].contains("normal priority"),
                    "{:?}",
                    report.notes
                );
            }
        }
    }
}
