//! What both workloads share: the state their subscriber tasks report into, and the
//! timed phase, from starting the clock to the report.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use tokio::{
    sync::{Notify, mpsc, watch},
    time::Instant,
};

use super::{
    Plan,
    report::{self, Measured, Report, Tally},
};
use crate::error::Error;

/// Latency histograms shared by the subscribers, each subscriber using one, so that
/// many subscribers need not each hold a histogram.
const HISTOGRAMS: usize = 16;

/// What the subscriber tasks share with the run.
pub struct Shared {
    /// Subscribers that have seen the warm-up.
    pub ready: AtomicUsize,
    pub ready_changed: Notify,
    histograms: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            ready: AtomicUsize::new(0),
            ready_changed: Notify::new(),
            histograms: (0..HISTOGRAMS)
                .map(|_| Mutex::new(report::histogram()))
                .collect(),
        }
    }

    /// Records a latency, in nanoseconds, in subscriber `index`'s histogram.
    pub fn record(&self, index: usize, nanos: u64) {
        self.histograms[index % HISTOGRAMS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .saturating_record(nanos.max(1));
    }

    fn latency(&self) -> Histogram<u64> {
        let mut latency = report::histogram();
        for h in &self.histograms {
            latency
                .add(&*h.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                .expect("same bounds");
        }
        latency
    }
}

/// Sends warm-up events with `send` until `subscribers` subscribers have each seen
/// one, so that the clock starts with every stream live.
pub async fn warm_up<F, P>(
    name: &str,
    plan: &Plan,
    shared: &Shared,
    subscribers: usize,
    mut send: F,
) -> Result<(), Error>
where
    F: FnMut() -> P,
    P: Future<Output = Result<(), Error>>,
{
    let give_up = Instant::now() + plan.ready_timeout();
    loop {
        let ready = shared.ready_changed.notified();
        if shared.ready.load(Ordering::Acquire) == subscribers {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(Error::Other(format!(
                "only {} of {subscribers} {name} subscribers were ready within {}",
                shared.ready.load(Ordering::Acquire),
                humantime::format_duration(plan.ready_timeout())
            )));
        }
        send().await?;
        let _ = tokio::time::timeout(Duration::from_millis(100), ready).await;
    }
}

/// The channels between a run and its subscriber tasks.
pub struct Signals {
    /// When the clock started; the subscribers measure from it.
    pub start: watch::Sender<Option<Instant>>,
    /// Set when publishing has ended, so subscribers stop waiting by the deadline.
    pub published: watch::Sender<bool>,
    /// Each (non-stalled) subscriber's count, once it is done.
    pub tallies: mpsc::UnboundedReceiver<Tally>,
}

/// Starts the clock, runs `publish` (given the start and a counter of messages
/// published) until it ends or the deadline passes, then gathers the subscribers'
/// tallies into the report.
pub async fn timed<F, P, T>(
    name: &'static str,
    plan: &Plan,
    shared: &Shared,
    signals: &mut Signals,
    publish: F,
) -> Result<Report, Error>
where
    F: FnOnce(Instant, Arc<AtomicUsize>) -> P,
    P: Future<Output = Result<T, Error>>,
{
    let start = Instant::now();
    let deadline = start + plan.timeout;
    let _ = signals.start.send(Some(start));
    let published = Arc::new(AtomicUsize::new(0));
    let timed_out_publishing = tokio::select! {
        result = publish(start, published.clone()) => { result?; false }
        () = tokio::time::sleep_until(deadline) => true,
    };
    let publish_time = start.elapsed();
    let _ = signals.published.send(true);

    let mut tallies = Vec::with_capacity(plan.subs);
    while let Some(tally) = signals.tallies.recv().await {
        tallies.push(tally);
        if tallies.len() == plan.subs {
            break;
        }
    }
    let timed_out = timed_out_publishing || Instant::now() >= deadline;
    let last = tallies.iter().filter_map(|t: &Tally| t.last_at).max();
    let measured = Measured {
        published: published.load(Ordering::Relaxed) as u64,
        publish_time,
        elapsed: last.map_or(publish_time, |l| l.duration_since(start.into_std())),
        timed_out,
    };
    let report = Report::new(name, plan, measured, &tallies, &shared.latency());
    if let Some(hold) = plan.hold {
        eprintln!(
            "streamctl: holding {} {name} subscribers open for {}",
            plan.subs + plan.stalled,
            humantime::format_duration(hold)
        );
        tokio::time::sleep(hold).await;
    }
    Ok(report)
}
