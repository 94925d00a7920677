//! One service's slot: its configuration, its current run, the status and counters
//! kept for it, and the ServiceInfo that shows them. The slot is also the service's
//! outlet: its steps publish and report through it.

use std::{
    collections::BTreeMap,
    sync::{Mutex, atomic::AtomicBool},
    time::{Duration, Instant, SystemTime},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Overrides, ServiceSpec};
use crate::{
    bus::{Bus, Refused, lock},
    pb::{self, Health, ServiceState, event::Payload, lifecycle},
    secret::{redact, redact_param},
    services::{Kind, Outlet, Params, family_accepts},
    store::Fence,
};

/// One service: its configuration, its current run and its status.
pub(super) struct Slot {
    pub(super) spec: ServiceSpec,
    /// Carries the service's events, on the topic of its name.
    bus: Bus,
    /// The node it runs on, in a cluster: named in its lifecycle events and info.
    node: Option<String>,
    /// Serialises starts and stops of this service. A tokio mutex: a stop holds it
    /// while it waits for the service's task to end.
    pub(super) run: tokio::sync::Mutex<Option<Run>>,
    /// Set, under `run`, when a reloaded configuration replaced or removed this slot:
    /// it must not start again.
    pub(super) retired: AtomicBool,
    /// A std mutex: held only to read or update fields, never across an await.
    status: Mutex<Status>,
}

/// The service's task while it runs.
pub(super) struct Run {
    pub(super) cancel: CancellationToken,
    pub(super) task: JoinHandle<()>,
    /// In a cluster, what fences its writes: a restart by a reload keeps it.
    pub(super) fence: Option<Fence>,
}

struct Status {
    state: ServiceState,
    interval: Duration,
    params: Params,
    /// What the client that started the current run chose; empty while stopped.
    overrides: Overrides,
    started_at: Option<SystemTime>,
    events: u64,
    event_bytes: u64,
    errors: u64,
    restarts: u64,
    last_error: String,
    last_event_at: Option<SystemTime>,
    /// What the service reports of itself; see [`crate::services::StepContext::set_status`].
    reported: BTreeMap<String, String>,
    health: Health,
    failures: Failures,
    /// Whether an error was reported during the current step, and since the latest
    /// publish: a step that reports an error and still returns (a leaderboard whose
    /// flush failed) has not gone well, and neither has a publish right after an error.
    reported_in_step: bool,
    clean_since_publish: bool,
}

/// The current run of failed steps, and what of it the log has been told.
#[derive(Default)]
struct Failures {
    in_a_row: u32,
    since: Option<SystemTime>,
    /// Failures since the log last spoke of them, and when it did.
    unlogged: u32,
    logged_at: Option<Instant>,
}

/// How often the log summarises failures that go on.
const FAILURE_SUMMARY_EVERY: Duration = Duration::from_secs(300);

impl Slot {
    /// A stopped service with its configured interval and parameters.
    pub(super) fn new(spec: ServiceSpec, bus: Bus, node: Option<String>) -> Self {
        let status = Status {
            state: ServiceState::Stopped,
            interval: spec.interval,
            params: spec.params.clone(),
            overrides: Overrides::default(),
            started_at: None,
            events: 0,
            event_bytes: 0,
            errors: 0,
            restarts: 0,
            last_error: String::new(),
            last_event_at: None,
            reported: BTreeMap::new(),
            health: Health::Unspecified,
            failures: Failures::default(),
            reported_in_step: false,
            clean_since_publish: false,
        };
        Self {
            spec,
            bus,
            node,
            run: tokio::sync::Mutex::new(None),
            retired: AtomicBool::new(false),
            status: Mutex::new(status),
        }
    }

    /// A run begins with these settings, of which a client chose `overrides`: no
    /// restarts yet, nothing reported.
    pub(super) fn mark_started(&self, interval: Duration, params: Params, overrides: &Overrides) {
        let mut status = lock(&self.status);
        status.state = ServiceState::Running;
        status.interval = interval;
        status.params = params;
        status.overrides = overrides.clone();
        status.started_at = Some(SystemTime::now());
        status.restarts = 0;
        status.reported.clear();
        status.health = Health::Unspecified;
        status.failures = Failures::default();
        status.clean_since_publish = false;
    }

    /// The run was stopped: back to the configured interval and parameters.
    pub(super) fn mark_stopped(&self) {
        let mut status = lock(&self.status);
        status.state = ServiceState::Stopped;
        status.started_at = None;
        status.interval = self.spec.interval;
        status.params = self.spec.params.clone();
        status.overrides = Overrides::default();
        status.health = Health::Unspecified;
        status.failures = Failures::default();
    }

    /// The worker crashed for `reason` and waits to be restarted.
    pub(super) fn mark_backing_off(&self, reason: &str) {
        let mut status = lock(&self.status);
        status.state = ServiceState::BackingOff;
        status.restarts += 1;
        status.last_error = redact(reason).into_owned();
    }

    /// A fresh worker took over after a crash; its health is judged anew.
    pub(super) fn mark_restarted(&self) {
        let mut status = lock(&self.status);
        status.state = ServiceState::Running;
        status.health = Health::Unspecified;
        status.clean_since_publish = false;
    }

    /// The service was given up on, for `reason`.
    pub(super) fn mark_failed(&self, reason: &str) {
        let mut status = lock(&self.status);
        status.state = ServiceState::Failed;
        status.started_at = None;
        status.last_error = redact(reason).into_owned();
        status.health = Health::Unspecified;
    }

    /// A step begins.
    pub(super) fn begin_step(&self) {
        lock(&self.status).reported_in_step = false;
    }

    /// A step returned without an error: it went well unless it reported one.
    pub(super) fn end_step(&self) {
        let mut status = lock(&self.status);
        if !status.reported_in_step {
            self.mark_working(&mut status);
        }
    }

    /// The service works: a step went well, or it published twice without an error
    /// between (a service that holds a connection may never end its step). Ends a run
    /// of failures, and tells the log so.
    fn mark_working(&self, status: &mut Status) {
        status.health = Health::Healthy;
        let failures = std::mem::take(&mut status.failures);
        if failures.in_a_row > 0 {
            tracing::info!(
                service = %self.spec.name,
                "recovered after {} failed step(s)",
                failures.in_a_row
            );
        }
    }

    /// Counts a crash among the errors; its reason is kept by what follows it, a
    /// restart or a failure.
    pub(super) fn count_crash(&self) {
        lock(&self.status).errors += 1;
    }

    /// Data events published since the daemon started.
    pub(super) fn published(&self) -> u64 {
        lock(&self.status).events
    }

    /// Publishes a lifecycle event of `kind` that carries only a message.
    pub(super) fn lifecycle(&self, kind: lifecycle::Kind, message: String) {
        self.publish_lifecycle(pb::Lifecycle {
            kind: kind.into(),
            message,
            ..Default::default()
        });
    }

    pub(super) fn publish_lifecycle(&self, mut event: pb::Lifecycle) {
        event.message = redact(&event.message).into_owned();
        event.node = self.node.clone().unwrap_or_default();
        // Lifecycle events are far below the size limit, and after the bus closes there
        // is nobody left to tell.
        let _ = self.bus.publish(&self.spec.name, Payload::Lifecycle(event));
    }

    pub(super) fn info(&self) -> pb::ServiceInfo {
        let status = lock(&self.status);
        pb::ServiceInfo {
            name: self.spec.name.clone(),
            kind: self.spec.kind.name.to_owned(),
            state: status.state.into(),
            interval: prost_types::Duration::try_from(status.interval).ok(),
            params: status
                .params
                .iter()
                .map(|(k, v)| (k.clone(), redact_param(k, v)))
                .collect(),
            started_at: status.started_at.map(Into::into),
            events_published: status.events,
            event_bytes: status.event_bytes,
            errors: status.errors,
            restarts: status.restarts,
            last_error: status.last_error.clone(),
            last_event_at: status.last_event_at.map(Into::into),
            description: self.spec.kind.description.to_owned(),
            status: status.reported.clone().into_iter().collect(),
            settings: settings(self.spec.kind, &status.params, &status.overrides),
            interval_source: interval_source(self.spec.kind, &self.spec, &status.overrides).into(),
            health: status.health.into(),
            consecutive_failures: status.failures.in_a_row,
            failing_since: status.failures.since.map(Into::into),
            node: match status.state {
                ServiceState::Stopped => String::new(),
                _ => self.node.clone().unwrap_or_default(),
            },
        }
    }
}

impl Slot {
    /// Counts a failed step, and tells the log of the first of a run at once and of the
    /// rest in a summary at most every [`FAILURE_SUMMARY_EVERY`].
    fn log_failure(&self, failures: &mut Failures, message: &str) {
        let now = Instant::now();
        failures.in_a_row += 1;
        failures.since.get_or_insert_with(SystemTime::now);
        let Some(logged_at) = failures.logged_at else {
            tracing::warn!(service = %self.spec.name, "step failed: {message}");
            failures.logged_at = Some(now);
            return;
        };
        failures.unlogged += 1;
        let quiet_for = now.duration_since(logged_at);
        if quiet_for >= FAILURE_SUMMARY_EVERY {
            tracing::warn!(
                service = %self.spec.name,
                "{} more failed step(s) in {}, the latest: {message}",
                failures.unlogged,
                humantime::format_duration(Duration::from_secs(quiet_for.as_secs()))
            );
            failures.unlogged = 0;
            failures.logged_at = Some(now);
        }
    }
}

/// Where the interval in force comes from; one the configuration sets to the kind's
/// default reads as the default.
fn interval_source(kind: &Kind, spec: &ServiceSpec, overrides: &Overrides) -> pb::SettingSource {
    if overrides.interval.is_some() {
        pb::SettingSource::Override
    } else if spec.interval == kind.default_interval {
        pb::SettingSource::Default
    } else {
        pb::SettingSource::Config
    }
}

/// Every parameter of `kind` with the value in force and where it comes from: a
/// family (`header.*`) as each member set, or as itself while none is.
fn settings(kind: &Kind, params: &Params, overrides: &Overrides) -> Vec<pb::Setting> {
    let source = |key: &str| {
        if overrides.params.contains_key(key) {
            pb::SettingSource::Override
        } else {
            pb::SettingSource::Config
        }
    };
    let mut settings = Vec::new();
    for spec in kind.params {
        let setting = |name: &str, value: &str, source: pb::SettingSource| pb::Setting {
            name: name.to_owned(),
            value: redact_param(name, value),
            source: source.into(),
            description: spec.help.to_owned(),
        };
        let set: Vec<_> = params
            .iter()
            .filter(|(key, _)| family_accepts(spec.name, key))
            .map(|(key, value)| setting(key, value, source(key)))
            .collect();
        if set.is_empty() {
            let default = spec.default.unwrap_or_default();
            settings.push(setting(spec.name, default, pb::SettingSource::Default));
        } else {
            settings.extend(set);
        }
    }
    settings
}

impl Outlet for Slot {
    fn publish(&self, payload: Payload) -> Result<(), Refused> {
        let bytes = payload.encoded_len() as u64;
        self.bus.publish(&self.spec.name, payload)?;
        let mut status = lock(&self.status);
        status.events += 1;
        status.event_bytes += bytes;
        status.last_event_at = Some(SystemTime::now());
        if std::mem::replace(&mut status.clean_since_publish, true) {
            self.mark_working(&mut status);
        }
        Ok(())
    }

    fn report(&self, message: String) {
        let message = redact(&message).into_owned();
        {
            let mut status = lock(&self.status);
            status.errors += 1;
            status.last_error = message.clone();
            status.health = Health::Failing;
            status.reported_in_step = true;
            status.clean_since_publish = false;
            self.log_failure(&mut status.failures, &message);
        }
        self.lifecycle(lifecycle::Kind::Error, message);
    }

    fn still_failing(&self) {
        let mut status = lock(&self.status);
        status.reported_in_step = true;
        status.clean_since_publish = false;
    }

    fn set_status(&self, key: &str, value: String) {
        let value = redact(&value).into_owned();
        lock(&self.status).reported.insert(key.to_owned(), value);
    }
}
