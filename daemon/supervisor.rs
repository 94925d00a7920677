//! The supervisor: starts, stops and restarts services, and keeps their counters.
//!
//! Each running service is one task with its own cancellation token, a child of the
//! daemon's. The task runs the worker's steps, arming the next tick only after a step
//! has finished. A failed step is reported and the service carries on; a fatal error or
//! a panic restarts it with a fresh worker after an exponential backoff with jitter,
//! and a service that crashes more than `max_restarts` times within `restart_window`
//! (OTP's intensity and period) is marked failed. One service's fault touches nothing
//! else.

use std::{
    collections::{BTreeMap, VecDeque},
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures::FutureExt;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::{Bus, Refused, lock},
    error::Error,
    pb::{self, ServiceState, event::Payload, lifecycle},
    services::{
        Build, DaemonView, Environment, Kind, Outlet, Params, StepContext, StepError, Worker,
    },
    store::DesiredState,
};

/// When a crashing service is restarted, and when it is given up on.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; one more crash marks the service failed.
    pub max_restarts: u32,
    pub window: Duration,
    /// The wait before the first restart; each further restart within the window
    /// doubles it, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// The wait before restart number `attempt` (from 1): exponential, capped, and
    /// jittered down by up to half so that services that crashed together do not
    /// restart together.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .initial_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(20));
        exponential
            .min(self.max_backoff)
            .mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// A service as configured: what runs when it starts without overrides.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub kind: &'static Kind,
    pub interval: Duration,
    pub params: Params,
}

/// Changes to a service's configuration for one run.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub params: Params,
}

/// The supervisor's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub restart: RestartPolicy,
    /// How long a stopping service's current step may take before it is cancelled.
    pub stop_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::default(),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// Keeps what clients ask of services, so that it can be done again after a restart.
pub trait WishRecorder: Send + Sync {
    /// Notes the latest wish for one service. Starts and stops call it as they happen,
    /// so it must not wait for I/O.
    fn note(&self, wish: DesiredState);
}

/// A cheap-to-clone handle to the supervisor.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

struct Shared {
    bus: Bus,
    env: Environment,
    settings: Settings,
    services: BTreeMap<String, Arc<Slot>>,
    /// Parent of every service's token.
    root: CancellationToken,
    tracker: TaskTracker,
    shutting_down: AtomicBool,
    started: Instant,
    /// Remembers what clients ask, for resuming after a restart.
    recorder: Option<Box<dyn WishRecorder>>,
}

/// One service: its configuration, its current run and its status.
struct Slot {
    spec: ServiceSpec,
    /// Carries the service's events, on the topic of its name.
    bus: Bus,
    /// Serialises starts and stops of this service. A tokio mutex: a stop holds it
    /// while it waits for the service's task to end.
    run: tokio::sync::Mutex<Option<Run>>,
    /// A std mutex: held only to read or update fields, never across an await.
    status: Mutex<Status>,
}

struct Run {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct Status {
    state: ServiceState,
    interval: Duration,
    params: Params,
    started_at: Option<SystemTime>,
    events: u64,
    errors: u64,
    restarts: u64,
    last_error: String,
    last_event_at: Option<SystemTime>,
    /// What the service reports of itself; see [`StepContext::set_status`].
    reported: BTreeMap<String, String>,
}

/// The outcome of a start.
#[derive(Debug)]
pub struct Started {
    pub already_running: bool,
    pub service: pb::ServiceInfo,
}

/// The outcome of a stop.
#[derive(Debug)]
pub struct Stopped {
    pub was_running: bool,
    pub forced: bool,
    pub service: pb::ServiceInfo,
}

impl Supervisor {
    pub fn new(
        bus: Bus,
        env: Environment,
        settings: Settings,
        specs: Vec<ServiceSpec>,
        recorder: Option<Box<dyn WishRecorder>>,
    ) -> Self {
        let services = specs
            .into_iter()
            .map(|spec| {
                let status = Status {
                    state: ServiceState::Stopped,
                    interval: spec.interval,
                    params: spec.params.clone(),
                    started_at: None,
                    events: 0,
                    errors: 0,
                    restarts: 0,
                    last_error: String::new(),
                    last_event_at: None,
                    reported: BTreeMap::new(),
                };
                let slot = Slot {
                    spec,
                    bus: bus.clone(),
                    run: tokio::sync::Mutex::new(None),
                    status: Mutex::new(status),
                };
                (slot.spec.name.clone(), Arc::new(slot))
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                bus,
                env,
                settings,
                services,
                root: CancellationToken::new(),
                tracker: TaskTracker::new(),
                shutting_down: AtomicBool::new(false),
                started: Instant::now(),
                recorder,
            }),
        }
    }

    fn slot(&self, name: &str) -> Result<&Arc<Slot>, Error> {
        self.shared
            .services
            .get(name)
            .ok_or_else(|| Error::UnknownService(name.to_owned()))
    }

    /// Starts a service, or reports that it is already running.
    pub async fn start(&self, name: &str, overrides: Overrides) -> Result<Started, Error> {
        let slot = self.slot(name)?;
        let mut run = slot.run.lock().await;
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        // A finished task is a service that failed: it may start again.
        if run.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Ok(Started {
                already_running: true,
                service: slot.info(),
            });
        }
        let spec = &slot.spec;
        let interval = overrides.interval.unwrap_or(spec.interval);
        if interval.is_zero() {
            return Err(Error::invalid("interval", "must be greater than zero"));
        }
        let mut params = spec.params.clone();
        params.extend(overrides.params.clone());
        let worker = spec
            .kind
            .build(&params, &self.shared.env)
            .map_err(|e| match e {
                Build::Param(e) => Error::invalid(format!("params.{}", e.key), e.message),
                Build::Precondition(message) => Error::FailedPrecondition(message),
            })?;
        {
            let mut status = lock(&slot.status);
            status.state = ServiceState::Running;
            status.interval = interval;
            status.params = params.clone();
            status.started_at = Some(SystemTime::now());
            status.restarts = 0;
            status.reported.clear();
        }
        tracing::info!(service = %spec.name, ?interval, "started");
        // Before the task exists, so that "started" precedes the service's first event.
        slot.lifecycle(lifecycle::Kind::Started, String::new());
        let cancel = self.shared.root.child_token();
        let runner = Runner {
            supervisor: self.clone(),
            slot: slot.clone(),
            interval,
            params,
        };
        let task = self
            .shared
            .tracker
            .spawn(runner.supervise(worker, cancel.clone()));
        *run = Some(Run { cancel, task });
        self.record(DesiredState {
            name: spec.name.clone(),
            running: true,
            interval: overrides.interval,
            params: overrides.params,
        });
        Ok(Started {
            already_running: false,
            service: slot.info(),
        })
    }

    /// Stops a service: lets its current step finish, bounded by the stop timeout.
    pub async fn stop(&self, name: &str) -> Result<Stopped, Error> {
        let slot = self.slot(name)?;
        let mut run = slot.run.lock().await;
        if !self.shared.shutting_down.load(Ordering::Acquire) {
            self.record(DesiredState {
                name: name.to_owned(),
                running: false,
                interval: None,
                params: Params::new(),
            });
        }
        let Some(Run { cancel, mut task }) = run.take() else {
            return Ok(Stopped {
                was_running: false,
                forced: false,
                service: slot.info(),
            });
        };
        let was_running = !task.is_finished();
        cancel.cancel();
        let forced = tokio::time::timeout(self.shared.settings.stop_timeout, &mut task)
            .await
            .is_err();
        if forced {
            task.abort();
            let _ = task.await;
        }
        {
            let mut status = lock(&slot.status);
            status.state = ServiceState::Stopped;
            status.started_at = None;
            status.interval = slot.spec.interval;
            status.params = slot.spec.params.clone();
        }
        if was_running {
            let message = if forced {
                format!(
                    "its step did not finish within {:?} and was cancelled",
                    self.shared.settings.stop_timeout
                )
            } else {
                String::new()
            };
            tracing::info!(service = %name, forced, "stopped");
            slot.lifecycle(lifecycle::Kind::Stopped, message);
        }
        Ok(Stopped {
            was_running,
            forced,
            service: slot.info(),
        })
    }

    /// Refuses further starts, stops every service and waits for all their tasks.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        let stops = self.shared.services.keys().map(|name| self.stop(name));
        futures::future::join_all(stops).await;
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    fn record(&self, desired: DesiredState) {
        if let Some(recorder) = &self.shared.recorder {
            recorder.note(desired);
        }
    }

    /// Every service, in name order.
    pub fn services(&self) -> Vec<pb::ServiceInfo> {
        self.shared.services.values().map(|s| s.info()).collect()
    }

    pub fn has_service(&self, name: &str) -> bool {
        self.shared.services.contains_key(name)
    }

    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }
}

impl DaemonView for Supervisor {
    fn services(&self) -> Vec<pb::ServiceInfo> {
        Supervisor::services(self)
    }

    fn subscribers(&self) -> usize {
        self.shared.bus.subscribers()
    }

    fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }
}

/// One run of a service, from a client's start to its stop or failure.
struct Runner {
    supervisor: Supervisor,
    slot: Arc<Slot>,
    interval: Duration,
    params: Params,
}

/// How a worker's steps ended.
enum Ended {
    Stopped,
    Crashed(String),
}

impl Runner {
    async fn supervise(self, mut worker: Box<dyn Worker>, cancel: CancellationToken) {
        let ctx = StepContext::new(self.slot.clone(), cancel, Arc::new(self.supervisor.clone()));
        let policy = &self.supervisor.shared.settings.restart;
        let mut crashes = VecDeque::new();
        loop {
            let reason = match self.run_steps(worker.as_mut(), &ctx).await {
                Ended::Stopped => return,
                Ended::Crashed(reason) => reason,
            };
            let now = Instant::now();
            while crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > policy.window)
            {
                crashes.pop_front();
            }
            if crashes.len() >= policy.max_restarts as usize {
                let message = format!(
                    "crashed {} times within {:?}; last: {reason}",
                    crashes.len() + 1,
                    policy.window
                );
                self.fail(message);
                return;
            }
            crashes.push_back(now);
            let attempt = crashes.len() as u32;
            let backoff = policy.backoff(attempt);
            tracing::warn!(service = %self.slot.spec.name, %reason, ?backoff, "crashed; restarting");
            {
                let mut status = lock(&self.slot.status);
                status.state = ServiceState::BackingOff;
                status.restarts += 1;
                status.last_error = reason.clone();
            }
            self.slot.publish_lifecycle(pb::Lifecycle {
                kind: lifecycle::Kind::Restarting.into(),
                message: reason,
                backoff: prost_types::Duration::try_from(backoff).ok(),
                attempt,
            });
            tokio::select! {
                _ = ctx.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            worker = match self
                .slot
                .spec
                .kind
                .build(&self.params, &self.supervisor.shared.env)
            {
                Ok(worker) => worker,
                // The same parameters built the first worker, so this is not expected.
                Err(e) => {
                    self.fail(format!("cannot restart: {e}"));
                    return;
                }
            };
            lock(&self.slot.status).state = ServiceState::Running;
        }
    }

    /// Runs steps until the service is stopped or its worker crashes. Each failed step
    /// in a row lengthens the wait before the next, up to the restart policy's
    /// `max_backoff`; a step that succeeds, or publishes before failing (a connection
    /// that served a while), resets it.
    async fn run_steps(&self, worker: &mut dyn Worker, ctx: &StepContext) -> Ended {
        let mut failures = 0;
        loop {
            let published = self.slot.published();
            match AssertUnwindSafe(worker.step(ctx)).catch_unwind().await {
                Ok(Ok(())) => failures = 0,
                Ok(Err(StepError::Step(message))) => {
                    self.slot.report(message);
                    if self.slot.published() > published {
                        failures = 0;
                    }
                    failures += 1;
                }
                Ok(Err(StepError::Fatal(message))) => {
                    lock(&self.slot.status).errors += 1;
                    return Ended::Crashed(message);
                }
                Err(panic) => {
                    lock(&self.slot.status).errors += 1;
                    return Ended::Crashed(format!("panicked: {}", panic_message(&*panic)));
                }
            }
            let wait = self.wait_after(failures);
            tokio::select! {
                biased;
                _ = ctx.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        match AssertUnwindSafe(worker.finish(ctx)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(StepError::Step(message) | StepError::Fatal(message))) => {
                self.slot.report(message)
            }
            Err(panic) => self.slot.report(format!(
                "panicked while stopping: {}",
                panic_message(&*panic)
            )),
        }
        Ended::Stopped
    }

    /// The wait before the next step after `failures` failed steps in a row: the
    /// interval, doubled for each failure after the first, capped, with jitter.
    fn wait_after(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return self.interval;
        }
        let cap = self
            .supervisor
            .shared
            .settings
            .restart
            .max_backoff
            .max(self.interval);
        let full = self
            .interval
            .saturating_mul(1 << (failures - 1).min(20))
            .min(cap);
        full.mul_f64(rand::rng().random_range(0.5..=1.0))
            .max(self.interval)
    }

    fn fail(&self, message: String) {
        tracing::error!(service = %self.slot.spec.name, %message, "failed");
        {
            let mut status = lock(&self.slot.status);
            status.state = ServiceState::Failed;
            status.started_at = None;
            status.last_error = message.clone();
        }
        self.slot.lifecycle(lifecycle::Kind::Failed, message);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Slot {
    /// Data events published since the daemon started.
    fn published(&self) -> u64 {
        lock(&self.status).events
    }

    /// Publishes a lifecycle event of `kind` that carries only a message.
    fn lifecycle(&self, kind: lifecycle::Kind, message: String) {
        self.publish_lifecycle(pb::Lifecycle {
            kind: kind.into(),
            message,
            ..Default::default()
        });
    }

    fn publish_lifecycle(&self, event: pb::Lifecycle) {
        // Lifecycle events are far below the size limit, and after the bus closes there
        // is nobody left to tell.
        let _ = self.bus.publish(&self.spec.name, Payload::Lifecycle(event));
    }

    fn info(&self) -> pb::ServiceInfo {
        let status = lock(&self.status);
        pb::ServiceInfo {
            name: self.spec.name.clone(),
            kind: self.spec.kind.name.to_owned(),
            state: status.state.into(),
            interval: prost_types::Duration::try_from(status.interval).ok(),
            params: status
                .params
                .iter()
                .map(|(k, v)| (k.clone(), redacted(k, v)))
                .collect(),
            started_at: status.started_at.map(Into::into),
            events_published: status.events,
            errors: status.errors,
            restarts: status.restarts,
            last_error: status.last_error.clone(),
            last_event_at: status.last_event_at.map(Into::into),
            description: self.spec.kind.description.to_owned(),
            status: status.reported.clone().into_iter().collect(),
        }
    }
}

impl Outlet for Slot {
    fn publish(&self, payload: Payload) -> Result<(), Refused> {
        self.bus.publish(&self.spec.name, payload)?;
        let mut status = lock(&self.status);
        status.events += 1;
        status.last_event_at = Some(SystemTime::now());
        Ok(())
    }

    fn report(&self, message: String) {
        tracing::debug!(service = %self.spec.name, %message, "step failed");
        {
            let mut status = lock(&self.status);
            status.errors += 1;
            status.last_error = message.clone();
        }
        self.lifecycle(lifecycle::Kind::Error, message);
    }

    fn set_status(&self, key: &str, value: String) {
        lock(&self.status).reported.insert(key.to_owned(), value);
    }
}

/// Hides the values of parameters whose names say they are secret.
fn redacted(key: &str, value: &str) -> String {
    const SECRET_WORDS: [&str; 6] = ["key", "token", "secret", "password", "auth", "credential"];
    let key = key.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| key.contains(w)) {
        "<redacted>".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use futures::StreamExt;
    use prost::Message;

    use super::*;
    use crate::bus::TopicFilter;

    /// Panics on every step.
    struct Panics;
    #[async_trait]
    impl Worker for Panics {
        async fn step(&mut self, _: &StepContext) -> Result<(), StepError> {
            panic!("boom")
        }
    }

    /// Fails its first step fatally, once per process, then publishes.
    static FLAKY_CRASHED: AtomicBool = AtomicBool::new(false);
    struct Flaky;
    #[async_trait]
    impl Worker for Flaky {
        async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
            if !FLAKY_CRASHED.swap(true, Ordering::SeqCst) {
                return Err(StepError::Fatal("lost my marbles".into()));
            }
            ctx.publish(Payload::Text(pb::Text::default()))
        }
    }

    /// Fails every other step, and publishes on the others.
    struct Stumbles(usize);
    #[async_trait]
    impl Worker for Stumbles {
        async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
            self.0 += 1;
            if self.0 % 2 == 1 {
                return Err(StepError::Step(format!("stumble {}", self.0)));
            }
            ctx.publish(Payload::Text(pb::Text::default()))
        }
    }

    /// Takes 300 ms per step, ignoring stop requests, then publishes.
    static SLOW_STEPS: AtomicUsize = AtomicUsize::new(0);
    struct Slow;
    #[async_trait]
    impl Worker for Slow {
        async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
            SLOW_STEPS.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            ctx.publish(Payload::Text(pb::Text::default()))
        }
    }

    macro_rules! kind {
        ($name:ident, $worker:expr) => {
            static $name: Kind = Kind {
                name: stringify!($name),
                description: "test",
                default_interval: Duration::from_millis(10),
                params: &[],
                build: |_: &Params, _: &Environment| -> Result<Box<dyn Worker>, Build> {
                    Ok(Box::new($worker))
                },
            };
        };
    }
    kind!(PANICS, Panics);
    kind!(FLAKY, Flaky);
    kind!(STUMBLES, Stumbles(0));
    kind!(SLOW, Slow);

    fn supervisor(stop_timeout: Duration) -> Supervisor {
        let specs = [
            &PANICS,
            &FLAKY,
            &STUMBLES,
            &SLOW,
            crate::services::kind("streamer").unwrap(),
        ]
        .into_iter()
        .map(|kind| ServiceSpec {
            name: kind.name.to_ascii_lowercase(),
            kind,
            interval: kind.default_interval,
            params: Params::new(),
        })
        .collect();
        let settings = Settings {
            restart: RestartPolicy {
                max_restarts: 3,
                window: Duration::from_secs(60),
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(40),
            },
            stop_timeout,
        };
        let env = Environment::new("/nonexistent".into(), None).unwrap();
        Supervisor::new(Bus::default(), env, settings, specs, None)
    }

    fn info(supervisor: &Supervisor, name: &str) -> pb::ServiceInfo {
        supervisor
            .services()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    }

    /// The lifecycle events of one topic, decoded, until `until` matches one.
    async fn lifecycles_until(
        events: &mut (impl futures::Stream<Item = crate::wire::EncodedEvent> + Unpin),
        until: lifecycle::Kind,
    ) -> Vec<pb::Lifecycle> {
        let mut seen = Vec::new();
        while let Some(encoded) = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event in time")
        {
            let event = pb::Event::decode(encoded.bytes().clone()).unwrap();
            if let Some(Payload::Lifecycle(l)) = event.payload {
                let done = l.kind() == until;
                seen.push(l);
                if done {
                    break;
                }
            }
        }
        seen
    }

    #[tokio::test]
    async fn a_crashing_service_restarts_with_backoff_then_fails_alone() {
        let supervisor = supervisor(Duration::from_secs(1));
        let mut events = Box::pin(
            supervisor
                .bus()
                .subscribe(TopicFilter::new(&["panics"]).unwrap(), false),
        );
        let mut streamer = Box::pin(
            supervisor
                .bus()
                .subscribe(TopicFilter::new(&["streamer"]).unwrap(), false),
        );
        supervisor
            .start("streamer", Overrides::default())
            .await
            .unwrap();
        supervisor
            .start("panics", Overrides::default())
            .await
            .unwrap();

        let seen = lifecycles_until(&mut events, lifecycle::Kind::Failed).await;
        let kinds: Vec<_> = seen.iter().map(|l| l.kind()).collect();
        use lifecycle::Kind::*;
        assert_eq!(kinds, [Started, Restarting, Restarting, Restarting, Failed]);
        let attempts: Vec<_> = seen[1..4].iter().map(|l| l.attempt).collect();
        assert_eq!(attempts, [1, 2, 3]);
        for (l, cap) in seen[1..4].iter().zip([10, 20, 40]) {
            let backoff = Duration::try_from(l.backoff.unwrap()).unwrap();
            assert!(
                backoff <= Duration::from_millis(cap) && backoff >= Duration::from_millis(cap / 2)
            );
            assert!(l.message.contains("panicked: boom"), "{}", l.message);
        }
        assert!(
            seen[4].message.contains("crashed 4 times"),
            "{}",
            seen[4].message
        );

        let panics = info(&supervisor, "panics");
        assert_eq!(panics.state(), ServiceState::Failed);
        assert_eq!(panics.restarts, 3);
        assert!(panics.last_error.contains("boom"));
        // The neighbour never noticed.
        assert_eq!(info(&supervisor, "streamer").state(), ServiceState::Running);
        assert!(streamer.next().await.is_some());

        // A failed service can be started again, with a clean restart history.
        let started = supervisor
            .start("panics", Overrides::default())
            .await
            .unwrap();
        assert!(!started.already_running);
        assert_eq!(started.service.restarts, 0);
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn a_fatal_error_restarts_a_fresh_worker_that_then_runs() {
        let supervisor = supervisor(Duration::from_secs(1));
        let mut events = Box::pin(
            supervisor
                .bus()
                .subscribe(TopicFilter::new(&["flaky"]).unwrap(), false),
        );
        supervisor
            .start("flaky", Overrides::default())
            .await
            .unwrap();
        let seen = lifecycles_until(&mut events, lifecycle::Kind::Restarting).await;
        assert_eq!(seen[1].message, "lost my marbles");
        // Data flows after the restart.
        loop {
            let event = pb::Event::decode(events.next().await.unwrap().bytes().clone()).unwrap();
            if matches!(event.payload, Some(Payload::Text(_))) {
                break;
            }
        }
        let flaky = info(&supervisor, "flaky");
        assert_eq!(
            (flaky.state(), flaky.restarts, flaky.errors),
            (ServiceState::Running, 1, 1)
        );
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn a_failed_step_is_reported_and_the_service_carries_on() {
        let supervisor = supervisor(Duration::from_secs(1));
        let mut events = Box::pin(
            supervisor
                .bus()
                .subscribe(TopicFilter::new(&["stumbles"]).unwrap(), false),
        );
        supervisor
            .start("stumbles", Overrides::default())
            .await
            .unwrap();
        let (mut errors, mut data) = (0, 0);
        while errors < 3 || data < 3 {
            let event = pb::Event::decode(events.next().await.unwrap().bytes().clone()).unwrap();
            match event.payload {
                Some(Payload::Lifecycle(l)) if l.kind() == lifecycle::Kind::Error => {
                    assert!(l.message.starts_with("stumble "));
                    errors += 1;
                }
                Some(Payload::Lifecycle(l)) => assert_eq!(l.kind(), lifecycle::Kind::Started),
                _ => data += 1,
            }
        }
        let stumbles = info(&supervisor, "stumbles");
        assert_eq!(
            (stumbles.state(), stumbles.restarts),
            (ServiceState::Running, 0)
        );
        assert!(stumbles.errors >= 3 && stumbles.events_published >= 3);
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn stop_lets_the_current_step_finish_within_the_timeout() {
        let supervisor = supervisor(Duration::from_secs(5));
        let mut events = Box::pin(
            supervisor
                .bus()
                .subscribe(TopicFilter::new(&["slow"]).unwrap(), false),
        );
        let steps_before = SLOW_STEPS.load(Ordering::SeqCst);
        supervisor
            .start("slow", Overrides::default())
            .await
            .unwrap();
        while SLOW_STEPS.load(Ordering::SeqCst) == steps_before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stopped = supervisor.stop("slow").await.unwrap();
        assert!(stopped.was_running && !stopped.forced);
        let kinds: Vec<_> = (0..3)
            .map(|_| {
                pb::Event::decode(
                    futures::executor::block_on(events.next())
                        .unwrap()
                        .bytes()
                        .clone(),
                )
                .unwrap()
            })
            .map(|e| match e.payload {
                Some(Payload::Lifecycle(l)) => format!("{:?}", l.kind()),
                _ => "data".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            ["Started", "data", "Stopped"],
            "the step's event comes before the stop"
        );
    }

    #[tokio::test]
    async fn a_step_that_outlasts_the_stop_timeout_is_cancelled() {
        let supervisor = supervisor(Duration::from_millis(50));
        supervisor
            .start("slow", Overrides::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stopped = supervisor.stop("slow").await.unwrap();
        assert!(stopped.was_running && stopped.forced);
        assert_eq!(stopped.service.state(), ServiceState::Stopped);
        let again = supervisor.stop("slow").await.unwrap();
        assert!(!again.was_running);
    }

    #[test]
    fn backoff_doubles_within_its_cap_with_jitter() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RestartPolicy::default()
        };
        for _ in 0..100 {
            for (attempt, full) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (60, 1000),
            ] {
                let backoff = policy.backoff(attempt);
                let full = Duration::from_millis(full);
                assert!(
                    backoff <= full && backoff >= full / 2,
                    "{attempt}: {backoff:?}"
                );
            }
        }
    }

    #[test]
    fn secret_looking_params_are_redacted() {
        assert_eq!(redacted("api_key", "hunter2"), "<redacted>");
        assert_eq!(redacted("X-Auth-Token", "t"), "<redacted>");
        assert_eq!(redacted("dir", "/srv"), "/srv");
    }
}
