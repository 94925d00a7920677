//! The supervisor: starts, stops and restarts services, and keeps their counters.
//!
//! Each running service is one task with its own cancellation token, a child of the
//! daemon's. The task runs the worker's steps, arming the next tick only after a step
//! has finished. A failed step is reported and the service carries on; a fatal error or
//! a panic restarts it with a fresh worker after an exponential backoff with jitter,
//! and a service that crashes more than `max_restarts` times within `restart_window`
//! (OTP's intensity and period) is marked failed. One service's fault touches nothing
//! else.
//!
//! This module is the handle clients hold; `runner` is one run of a service,
//! `restart` the policy for crashes, and `slot` what is kept per service.

#[cfg(test)]
mod fixtures;
mod restart;
mod runner;
mod slot;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use self::restart::RestartPolicy;
use self::{
    runner::Runner,
    slot::{Run, Slot},
};
use crate::{
    bus::Bus,
    error::Error,
    pb::{self, lifecycle},
    secret::{Secret, expand_env},
    services::{
        Authority, Build, DaemonView, Environment, Kind, ParamError, Params, Worker, family_accepts,
    },
    store::{DesiredState, Fence},
    topic,
};

/// A service as configured: what runs when it starts without overrides.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub kind: &'static Kind,
    pub interval: Duration,
    pub params: Params,
    /// The operator's parameters that clients may nevertheless set (names, or
    /// families such as `header.*`).
    pub allow_override: Vec<String>,
}

impl ServiceSpec {
    /// Whether a reloaded configuration leaves this service as it is.
    fn same_as(&self, other: &ServiceSpec) -> bool {
        self.kind.name == other.kind.name
            && self.interval == other.interval
            && self.params == other.params
            && self.allow_override == other.allow_override
    }

    /// The parameters of one run: the configured ones, `${VAR}` in their credentials
    /// read from the environment, and a client's overrides where it may make them,
    /// taken as written. Returns them as clients see them and as the worker gets them.
    fn params_for_run(&self, overrides: &Params) -> Result<(Params, Secret<Params>), Error> {
        for key in overrides.keys() {
            self.check_override(key)?;
        }
        let mut shown = self.params.clone();
        shown.extend(overrides.clone());
        let mut effective = Params::new();
        for (key, value) in &self.params {
            let value = if self.is_credential(key) {
                let expanded = expand_env(value, |var| std::env::var(var).ok())
                    .map_err(|e| Error::FailedPrecondition(format!("params.{key} {e}")))?;
                expanded.expose().clone()
            } else {
                value.clone()
            };
            effective.insert(key.clone(), value);
        }
        effective.extend(overrides.clone());
        Ok((shown, Secret::new(effective)))
    }

    /// Refuses a client's value for `key` when the parameter is the operator's.
    fn check_override(&self, key: &str) -> Result<(), Error> {
        // A parameter the kind does not take is refused when it builds, naming it.
        let Some(param) = self.kind.param(key) else {
            return Ok(());
        };
        if self.allow_override.iter().any(|a| family_accepts(a, key)) {
            return Ok(());
        }
        let why = match param.authority {
            Authority::Client => return Ok(()),
            Authority::Endpoint => match self.params.keys().find(|k| self.is_credential(k)) {
                None => return Ok(()),
                Some(credential) => format!(
                    "an operator setting of {}, since the service sends its configured \
                     {credential} there",
                    self.name
                ),
            },
            Authority::Operator | Authority::Credential => {
                format!("an operator setting of {}", self.name)
            }
        };
        Err(Error::PermissionDenied {
            field: format!("params.{key}"),
            message: format!(
                "{why}; clients may change it only where the config file lists it, e.g. \
                 [services.{}] allow_override = [{key:?}]",
                self.name
            ),
        })
    }

    fn is_credential(&self, key: &str) -> bool {
        self.kind
            .param(key)
            .is_some_and(|p| p.authority == Authority::Credential)
    }
}

/// Changes to a service's configuration for one run.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub params: Params,
}

/// The most parameters one start request may carry.
pub const MAX_PARAMS: usize = 64;
/// The longest parameter value, from a client or a config file: every value is held,
/// stored and shown by `list`, so none may be large.
pub const MAX_PARAM_VALUE_LEN: usize = 64 * 1024;

/// Checks one parameter against the size limits; a key too long to name is quoted.
pub fn check_param(key: &str, value: &str) -> Result<(), ParamError> {
    if key.is_empty() || key.len() > topic::MAX_NAME_LEN {
        return Err(ParamError::new(
            &topic::quoted(key),
            format!("keys are 1 to {} bytes long", topic::MAX_NAME_LEN),
        ));
    }
    if value.len() > MAX_PARAM_VALUE_LEN {
        return Err(ParamError::new(
            key,
            format!(
                "{} bytes; values are at most {MAX_PARAM_VALUE_LEN} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The supervisor's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub restart: RestartPolicy,
    /// How long a stopping service's current step may take before it is cancelled.
    pub stop_timeout: Duration,
    /// The shortest interval a client may ask a service to run at: a step every few
    /// nanoseconds would keep a core busy for nothing. The config file's intervals are
    /// the operator's and not held to it.
    pub min_client_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::default(),
            stop_timeout: Duration::from_secs(5),
            min_client_interval: Duration::from_millis(10),
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
    /// Swapped whole when the configuration is reloaded; read on every client publish,
    /// so reading takes no lock.
    services: ArcSwap<BTreeMap<String, Arc<Slot>>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Parent of every service's token.
    root: CancellationToken,
    tracker: TaskTracker,
    /// Where services run: the runtime the supervisor was made on, whichever one the
    /// RPC that starts a service is served on (daemon/lanes.rs).
    runtime: tokio::runtime::Handle,
    shutting_down: AtomicBool,
    started: Instant,
    /// Remembers what clients ask, for resuming after a restart.
    recorder: Option<Box<dyn WishRecorder>>,
}

/// What a reload changed, by service name.
#[derive(Debug, Default, PartialEq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Replaced with their new configuration (and restarted if they were running).
    pub changed: Vec<String>,
    pub started: Vec<String>,
    /// Those that should have started and did not, with why.
    pub failed: Vec<String>,
}

/// How a cluster node came to run a service.
#[derive(Debug)]
pub struct Placed {
    /// Guards the service's writes to the store against an owner it replaced.
    pub fence: Fence,
    /// For its Started event, e.g. that it took the service over from another node.
    pub note: String,
}

/// What one run of a service is made of.
struct Prepared {
    interval: Duration,
    /// The parameters as clients see them.
    shown: Params,
    params: Secret<Params>,
    worker: Box<dyn Worker>,
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
    /// A supervisor whose services run on the runtime this is called on.
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
                let slot = Slot::new(spec, bus.clone(), env.node_id.clone());
                (slot.spec.name.clone(), Arc::new(slot))
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                bus,
                env,
                settings,
                services: ArcSwap::from_pointee(services),
                reloading: tokio::sync::Mutex::new(()),
                root: CancellationToken::new(),
                tracker: TaskTracker::new(),
                runtime: tokio::runtime::Handle::current(),
                shutting_down: AtomicBool::new(false),
                started: Instant::now(),
                recorder,
            }),
        }
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, Error> {
        // Every service's name follows the topic rules, so no other name can be one.
        topic::check_name(name).map_err(|message| Error::invalid("name", message))?;
        self.shared
            .services
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownService(name.to_owned()))
    }

    /// Starts a service, or reports that it is already running.
    pub async fn start(&self, name: &str, overrides: Overrides) -> Result<Started, Error> {
        self.start_run(name, overrides, None).await
    }

    /// Starts a service on this node of a cluster, which holds its lease: `placed`
    /// fences its writes to the store and says in its Started event how it came here.
    pub async fn start_placed(
        &self,
        name: &str,
        overrides: Overrides,
        placed: Placed,
    ) -> Result<Started, Error> {
        self.start_run(name, overrides, Some(placed)).await
    }

    /// Checks that the service would start with `overrides` here, without starting it:
    /// a cluster node does so before it asks the cluster to place the service.
    pub fn check_start(&self, name: &str, overrides: &Overrides) -> Result<(), Error> {
        let slot = self.slot(name)?;
        self.prepare(&slot, overrides).map(drop)
    }

    /// The interval, parameters (as shown and as the worker gets them) and worker of
    /// one run of `slot`.
    fn prepare(&self, slot: &Slot, overrides: &Overrides) -> Result<Prepared, Error> {
        check_overrides(&overrides.params)?;
        let spec = &slot.spec;
        let interval = overrides.interval.unwrap_or(spec.interval);
        if interval.is_zero() {
            return Err(Error::invalid("interval", "must be greater than zero"));
        }
        let min = self.shared.settings.min_client_interval;
        if overrides.interval.is_some_and(|asked| asked < min) {
            return Err(Error::invalid(
                "interval",
                format!(
                    "{} is shorter than the {} a client may ask for (the operator sets \
                     supervisor.min_client_interval)",
                    humantime::format_duration(interval),
                    humantime::format_duration(min)
                ),
            ));
        }
        let (shown, params) = spec.params_for_run(&overrides.params)?;
        let worker = spec
            .kind
            .build(params.expose(), &self.shared.env)
            .map_err(|e| match e {
                Build::Param(e) => Error::invalid(format!("params.{}", e.key), e.message),
                Build::Precondition(message) => Error::FailedPrecondition(message),
            })?;
        Ok(Prepared {
            interval,
            shown,
            params,
            worker,
        })
    }

    async fn start_run(
        &self,
        name: &str,
        overrides: Overrides,
        placed: Option<Placed>,
    ) -> Result<Started, Error> {
        let slot = self.slot(name)?;
        check_overrides(&overrides.params)?;
        let mut run = slot.run.lock().await;
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if slot.retired.load(Ordering::Acquire) {
            return Err(Error::FailedPrecondition(format!(
                "{name} was reconfigured while it started; start it again"
            )));
        }
        // A finished task is a service that failed: it may start again.
        if run.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Ok(Started {
                already_running: true,
                service: slot.info(),
            });
        }
        let Prepared {
            interval,
            shown,
            params,
            worker,
        } = self.prepare(&slot, &overrides)?;
        let spec = &slot.spec;
        slot.mark_started(interval, shown, &overrides);
        tracing::info!(service = %spec.name, ?interval, "started");
        let (note, fence) = match placed {
            Some(Placed { fence, note }) => (note, Some(fence)),
            None => (String::new(), None),
        };
        // Before the task exists, so that "started" precedes the service's first event.
        slot.lifecycle(lifecycle::Kind::Started, note);
        let cancel = self.shared.root.child_token();
        let runner = Runner {
            supervisor: self.clone(),
            slot: slot.clone(),
            interval,
            params,
            fence: fence.clone(),
        };
        // Every line the service's steps log says which service it is.
        let span = tracing::info_span!("service", service = %spec.name);
        let task = self.shared.tracker.spawn_on(
            runner.supervise(worker, cancel.clone()).instrument(span),
            &self.shared.runtime,
        );
        *run = Some(Run {
            cancel,
            task,
            fence,
        });
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
        self.stop_because(name, String::new()).await
    }

    /// Stops a service, saying `why` in its Stopped event.
    pub async fn stop_because(&self, name: &str, why: String) -> Result<Stopped, Error> {
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
        let Some(Run {
            cancel, mut task, ..
        }) = run.take()
        else {
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
        slot.mark_stopped();
        if was_running {
            let message = if forced {
                let cancelled = format!(
                    "its step did not finish within {:?} and was cancelled",
                    self.shared.settings.stop_timeout
                );
                if why.is_empty() {
                    cancelled
                } else {
                    format!("{why}; {cancelled}")
                }
            } else {
                why
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
        let names: Vec<String> = self.shared.services.load().keys().cloned().collect();
        futures::future::join_all(names.iter().map(|name| self.stop(name))).await;
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
        self.shared
            .services
            .load()
            .values()
            .map(|s| s.info())
            .collect()
    }

    /// What the services are built with: the data directory, the database.
    pub fn environment(&self) -> &Environment {
        &self.shared.env
    }

    /// The service called `name`, if there is one.
    pub fn service(&self, name: &str) -> Option<pb::ServiceInfo> {
        self.shared.services.load().get(name).map(|s| s.info())
    }

    pub fn has_service(&self, name: &str) -> bool {
        self.shared.services.load().contains_key(name)
    }

    /// The services' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.shared.services.load().keys().cloned().collect()
    }

    /// Whether the service runs here: running, or waiting to restart after a crash.
    pub fn runs(&self, name: &str) -> bool {
        self.service(name).is_some_and(|s| {
            matches!(
                s.state(),
                pb::ServiceState::Running | pb::ServiceState::BackingOff
            )
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }

    /// How long a stop lets a service's current step take.
    pub fn stop_timeout(&self) -> Duration {
        self.shared.settings.stop_timeout
    }

    /// Takes a reloaded configuration's services: those removed are stopped and
    /// forgotten, those changed are replaced (and restarted if they ran), new ones
    /// added; then every service in `start` that is not running starts. Services left
    /// as they were keep running untouched.
    pub async fn reload(&self, specs: Vec<ServiceSpec>, start: &[String]) -> Reloaded {
        let _one_at_a_time = self.shared.reloading.lock().await;
        let current = self.shared.services.load_full();
        let mut reloaded = Reloaded::default();
        let mut next = BTreeMap::new();
        let mut restart = Vec::new();
        for spec in specs {
            match current.get(&spec.name) {
                Some(slot) if slot.spec.same_as(&spec) => {
                    next.insert(spec.name.clone(), slot.clone());
                }
                existing => {
                    if let Some(slot) = existing {
                        if let Some(fence) = self.retire(slot).await {
                            restart.push((spec.name.clone(), fence));
                        }
                        reloaded.changed.push(spec.name.clone());
                    } else {
                        reloaded.added.push(spec.name.clone());
                    }
                    let slot = Slot::new(
                        spec,
                        self.shared.bus.clone(),
                        self.shared.env.node_id.clone(),
                    );
                    let slot = Arc::new(slot);
                    next.insert(slot.spec.name.clone(), slot);
                }
            }
        }
        for (name, slot) in current.iter() {
            if !next.contains_key(name) {
                self.retire(slot).await;
                reloaded.removed.push(name.clone());
            }
        }
        self.shared.services.store(Arc::new(next));
        let restarts = restart.into_iter().map(|(name, fence)| {
            let placed = fence.map(|fence| Placed {
                fence,
                note: "restarted with its new configuration".into(),
            });
            (name, placed)
        });
        let starts = start.iter().map(|name| (name.clone(), None));
        for (name, placed) in restarts.chain(starts) {
            match self.start_run(&name, Overrides::default(), placed).await {
                Ok(started) if !started.already_running => reloaded.started.push(name.clone()),
                Ok(_) => {}
                Err(e) => reloaded.failed.push(format!("{name}: {e}")),
            }
        }
        reloaded
    }

    /// Stops a slot a reload replaces or removes, so that it never runs again; if it
    /// was running, gives its fence.
    async fn retire(&self, slot: &Arc<Slot>) -> Option<Option<Fence>> {
        let fence = {
            // Under its run lock, so that a start waiting for it sees the flag.
            let run = slot.run.lock().await;
            slot.retired.store(true, Ordering::Release);
            run.as_ref().and_then(|run| run.fence.clone())
        };
        let stopped = self.stop(&slot.spec.name).await;
        stopped.is_ok_and(|s| s.was_running).then_some(fence)
    }

    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    /// What the daemon process uses and holds now.
    pub fn stats(&self) -> pb::DaemonStats {
        let usage = crate::process::usage().ok();
        let bus = &self.shared.bus;
        pb::DaemonStats {
            rss_bytes: usage.as_ref().map_or(0, |u| u.rss_bytes),
            cpu_time: usage.and_then(|u| prost_types::Duration::try_from(u.cpu).ok()),
            subscribers: u32::try_from(bus.subscribers()).unwrap_or(u32::MAX),
            topics: bus.topics() as u64,
            uptime: prost_types::Duration::try_from(self.shared.started.elapsed()).ok(),
        }
    }
}

/// Checks a client's parameters against the limits before anything else reads them.
fn check_overrides(params: &Params) -> Result<(), Error> {
    if params.len() > MAX_PARAMS {
        return Err(Error::invalid(
            "params",
            format!(
                "{} parameters; at most {MAX_PARAMS} are allowed",
                params.len()
            ),
        ));
    }
    params
        .iter()
        .try_for_each(|(key, value)| check_param(key, value))
        .map_err(|e| Error::invalid(format!("params.{}", e.key), e.message))?;
    // `list` shows every service's parameters in one reply, which must stay small.
    let total: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_PARAM_VALUE_LEN {
        return Err(Error::invalid(
            "params",
            format!("{total} bytes in all; at most {MAX_PARAM_VALUE_LEN} are allowed"),
        ));
    }
    Ok(())
}

impl DaemonView for Supervisor {
    fn services(&self) -> Vec<pb::ServiceInfo> {
        Supervisor::services(self)
    }

    fn subscribers(&self) -> usize {
        self.shared.bus.subscribers()
    }

    fn topics(&self) -> usize {
        self.shared.bus.topics()
    }

    fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use futures::StreamExt;
    use prost::Message;

    use super::{fixtures::test_kind, *};
    use crate::{
        pb::{ServiceState, event::Payload},
        services::{StepContext, StepError, Worker},
    };

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
    test_kind!(SLOW, Slow);

    fn supervisor(stop_timeout: Duration) -> Supervisor {
        fixtures::supervisor(stop_timeout, &[&SLOW])
    }

    #[tokio::test]
    async fn stop_lets_the_current_step_finish_within_the_timeout() {
        let supervisor = supervisor(Duration::from_secs(5));
        let mut events = Box::pin(supervisor.bus().follow(&["slow"]));
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

    /// A service of the built-in `kind` as the config file could give it.
    fn configured(kind: &str, params: &[(&str, &str)], allow_override: &[&str]) -> ServiceSpec {
        let kind = crate::services::kind(kind).unwrap();
        ServiceSpec {
            name: kind.name.to_owned(),
            kind,
            interval: kind.default_interval,
            params: pairs(params),
            allow_override: allow_override.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn pairs(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The field a client's override of `key` is refused for, if it is.
    fn refused(spec: &ServiceSpec, key: &str, value: &str) -> Option<String> {
        match spec.params_for_run(&pairs(&[(key, value)])) {
            Ok(_) => None,
            Err(Error::PermissionDenied { field, message }) => {
                assert!(message.contains("allow_override"), "{message}");
                Some(field)
            }
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn clients_set_only_their_own_parameters_unless_the_config_allows_more() {
        let url = "http://127.0.0.1:9/";
        let slugs = configured("slugs", &[], &[]);
        assert_eq!(refused(&slugs, "url", url), None);
        assert_eq!(refused(&slugs, "timeout", "1s"), None);
        assert_eq!(
            refused(&configured("streamer", &[], &[]), "series", "3"),
            None
        );
        // aq sends its key to its url.
        let aq = configured("aq", &[], &[]);
        assert_eq!(refused(&aq, "url", url).as_deref(), Some("params.url"));
        assert_eq!(refused(&configured("aq", &[], &["url"]), "url", url), None);
        let reader = configured("reader", &[], &[]);
        assert_eq!(
            refused(&reader, "dir", "/etc").as_deref(),
            Some("params.dir")
        );
        assert_eq!(
            refused(&reader, "follow", "/x").as_deref(),
            Some("params.follow")
        );

        // A configured header makes the url the operator's too.
        let headed = [("url", url), ("header.Authorization", "Bearer t0k")];
        let http = configured("http", &headed, &[]);
        for key in ["url", "header.X", "method", "body"] {
            assert_eq!(refused(&http, key, "1"), Some(format!("params.{key}")));
        }
        assert_eq!(refused(&http, "field.price", "/p"), None);
        assert_eq!(
            refused(&configured("http", &[("url", url)], &[]), "url", url),
            None
        );
        // A family in allow_override opens each of its members, and nothing else.
        let open = configured("http", &headed, &["header.*"]);
        assert_eq!(refused(&open, "header.X", "1"), None);
        assert_eq!(refused(&open, "url", url).as_deref(), Some("params.url"));
        let feed = configured("websocket", &[("url", "ws://h/"), ("send.1", "{}")], &[]);
        assert_eq!(
            refused(&feed, "url", "ws://elsewhere/").as_deref(),
            Some("params.url")
        );
        assert_eq!(
            refused(&feed, "send.2", "{}").as_deref(),
            Some("params.send.2")
        );
    }

    #[test]
    fn only_the_config_file_reads_the_environment() {
        let path = std::env::var("PATH").expect("PATH is set");
        let spec = configured(
            "http",
            &[("url", "http://h/"), ("header.Authorization", "${PATH}")],
            &["header.*"],
        );
        let (shown, effective) = spec
            .params_for_run(&pairs(&[("header.X-Echo", "${PATH}")]))
            .unwrap();
        assert_eq!(effective.expose()["header.Authorization"], path);
        assert_eq!(
            effective.expose()["header.X-Echo"],
            "${PATH}",
            "taken as written"
        );
        assert_eq!(shown["header.Authorization"], "${PATH}");
        assert_eq!(format!("{effective:?}"), "<redacted>");

        let unset = configured(
            "http",
            &[
                ("url", "http://h/"),
                ("header.X", "${STREAMD_NEVER_SET_IN_TESTS}"),
            ],
            &[],
        );
        let Err(Error::FailedPrecondition(message)) = unset.params_for_run(&Params::new()) else {
            panic!()
        };
        assert!(message.contains("STREAMD_NEVER_SET_IN_TESTS"), "{message}");
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
}
