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
    services::{Build, Environment, Kind, Params, StepContext, StepError, Worker},
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
}

/// One service: its configuration, its current run and its status.
struct Slot {
    spec: ServiceSpec,
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
    pub fn new(bus: Bus, env: Environment, settings: Settings, specs: Vec<ServiceSpec>) -> Self {
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
                };
                let slot = Slot {
                    spec,
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
        params.extend(overrides.params);
        let worker = spec
            .kind
            .build(&params, &self.shared.env)
            .map_err(|e| match e {
                Build::Unavailable => Error::Unavailable {
                    name: spec.name.clone(),
                    kind: spec.kind.name.to_owned(),
                },
                Build::Param(e) => Error::invalid(format!("params.{}", e.key), e.message),
            })?;
        {
            let mut status = lock(&slot.status);
            status.state = ServiceState::Running;
            status.interval = interval;
            status.params = params.clone();
            status.started_at = Some(SystemTime::now());
            status.restarts = 0;
        }
        tracing::info!(service = %spec.name, ?interval, "started");
        // Before the task exists, so that "started" precedes the service's first event.
        self.lifecycle(slot, lifecycle::Kind::Started, String::new());
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
        Ok(Started {
            already_running: false,
            service: slot.info(),
        })
    }

    /// Stops a service: lets its current step finish, bounded by the stop timeout.
    pub async fn stop(&self, name: &str) -> Result<Stopped, Error> {
        let slot = self.slot(name)?;
        let mut run = slot.run.lock().await;
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
            self.lifecycle(slot, lifecycle::Kind::Stopped, message);
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

    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    fn lifecycle(&self, slot: &Slot, kind: lifecycle::Kind, message: String) {
        publish_lifecycle(
            &self.shared.bus,
            slot,
            pb::Lifecycle {
                kind: kind.into(),
                message,
                ..Default::default()
            },
        );
    }
}

/// Publishes a service's data events and counts them.
pub struct Publisher {
    bus: Bus,
    slot: Arc<Slot>,
}

impl Publisher {
    pub fn publish(&self, payload: Payload) -> Result<u64, Refused> {
        let seq = self.bus.publish(&self.slot.spec.name, payload)?;
        let mut status = lock(&self.slot.status);
        status.events += 1;
        status.last_event_at = Some(SystemTime::now());
        Ok(seq)
    }

    /// Counts and reports a failed step, or a problem a step carries on through.
    pub fn error(&self, message: String) {
        tracing::debug!(service = %self.slot.spec.name, %message, "step failed");
        {
            let mut status = lock(&self.slot.status);
            status.errors += 1;
            status.last_error = message.clone();
        }
        publish_lifecycle(
            &self.bus,
            &self.slot,
            pb::Lifecycle {
                kind: lifecycle::Kind::Error.into(),
                message,
                ..Default::default()
            },
        );
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
        let ctx = StepContext {
            publisher: Publisher {
                bus: self.supervisor.shared.bus.clone(),
                slot: self.slot.clone(),
            },
            cancel,
            supervisor: self.supervisor.clone(),
        };
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
            publish_lifecycle(
                &self.supervisor.shared.bus,
                &self.slot,
                pb::Lifecycle {
                    kind: lifecycle::Kind::Restarting.into(),
                    message: reason,
                    backoff: prost_types::Duration::try_from(backoff).ok(),
                    attempt,
                },
            );
            tokio::select! {
                _ = ctx.cancel.cancelled() => return,
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

    /// Runs steps until the service is stopped or its worker crashes.
    async fn run_steps(&self, worker: &mut dyn Worker, ctx: &StepContext) -> Ended {
        loop {
            match AssertUnwindSafe(worker.step(ctx)).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(StepError::Step(message))) => ctx.publisher.error(message),
                Ok(Err(StepError::Fatal(message))) => {
                    lock(&self.slot.status).errors += 1;
                    return Ended::Crashed(message);
                }
                Err(panic) => {
                    lock(&self.slot.status).errors += 1;
                    return Ended::Crashed(format!("panicked: {}", panic_message(&*panic)));
                }
            }
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return Ended::Stopped,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    fn fail(&self, message: String) {
        tracing::error!(service = %self.slot.spec.name, %message, "failed");
        {
            let mut status = lock(&self.slot.status);
            status.state = ServiceState::Failed;
            status.started_at = None;
            status.last_error = message.clone();
        }
        self.supervisor
            .lifecycle(&self.slot, lifecycle::Kind::Failed, message);
    }
}

fn publish_lifecycle(bus: &Bus, slot: &Slot, event: pb::Lifecycle) {
    // Lifecycle events are far below the size limit, and after the bus closes there is
    // nobody left to tell.
    let _ = bus.publish(&slot.spec.name, Payload::Lifecycle(event));
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Slot {
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
            available: self.spec.kind.build.is_some(),
        }
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
