//! The daemon's metrics, for `GET /metrics` on the --http address in the OpenMetrics
//! text format, which Prometheus reads.
//!
//! What happens is counted as it happens (RPCs, steps, flushes, streams ending); what
//! the daemon is (its services' states and counters, its subscribers, the process) is
//! read at each scrape. Labels are bounded: services come from the operator's
//! configuration and RPC methods from the API; topics clients publish to never become
//! labels.

use std::{
    fmt::Write,
    sync::atomic::AtomicU64,
    time::{Duration, SystemTime},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{bus::Overflows, pb, process};

/// What the daemon is at a scrape: its services, and its subscribers and topics.
pub struct Now {
    pub services: Vec<pb::ServiceInfo>,
    pub subscribers: usize,
    pub topics: usize,
    pub overflows: Overflows,
}

/// The content type of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`classic_text`]'s.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The same exposition in Prometheus' older text format (0.0.4), for scrapers that do
/// not ask for OpenMetrics: the lines that format lacks (`# UNIT`, `# EOF`) left out,
/// and each counter's HELP and TYPE named as its samples are, with `_total`. The
/// daemon's metrics are counters, gauges and histograms, which both formats write
/// alike otherwise.
pub fn classic_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let (name, rest) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {rest}"))
        });
        text.push_str(described.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// Static names and a code, not strings: these are made for every RPC, a client's
/// every unary Publish included.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: CodeLabel,
}

/// A gRPC status code, written by its name (`Ok`, `NotFound`) only at a scrape.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct CodeLabel(tonic::Code);

impl EncodeLabelValue for CodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{:?}", self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type Seconds = Family<ServiceLabel, Histogram, fn() -> Histogram>;

/// The counters and histograms kept as things happen. Cheap to clone: clones share
/// them.
#[derive(Clone, Debug)]
pub struct Metrics {
    steps: Seconds,
    step_errors: Family<ServiceLabel, Counter>,
    rpcs: Family<RpcLabels, Counter>,
    rpc_seconds: Family<MethodLabel, Histogram, fn() -> Histogram>,
    streams_seconds: Histogram,
    delivered: Counter,
    flushes: Family<OutcomeLabel, Counter>,
    flush_seconds: Histogram,
    pending_changes: Gauge,
    connections: Family<LaneLabel, Gauge>,
}

/// From a millisecond to about a minute.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            steps: Family::new_with_constructor(latency),
            step_errors: Family::default(),
            rpcs: Family::default(),
            rpc_seconds: Family::new_with_constructor(latency),
            // Streams last from a second to days.
            streams_seconds: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            delivered: Counter::default(),
            flushes: Family::default(),
            flush_seconds: latency(),
            pending_changes: Gauge::default(),
            connections: Family::default(),
        }
    }
}

impl Metrics {
    /// One step of `service` took `took`, and went well or not.
    pub fn step(&self, service: &str, took: Duration, failed: bool) {
        let label = ServiceLabel {
            service: service.to_owned(),
        };
        self.steps.get_or_create(&label).observe(took.as_secs_f64());
        if failed {
            self.step_errors.get_or_create(&label).inc();
        }
    }

    /// An RPC of `method` (its name, e.g. `StartService`) ended with `code` after
    /// `took`; for a stream, once it was answered.
    pub fn rpc(&self, method: &'static str, code: tonic::Code, took: Duration) {
        let labels = RpcLabels {
            method,
            code: CodeLabel(code),
        };
        self.rpcs.get_or_create(&labels).inc();
        let method = MethodLabel { method };
        self.rpc_seconds
            .get_or_create(&method)
            .observe(took.as_secs_f64());
    }

    /// Subscribe streams handed `events` more events to their clients.
    pub fn delivered(&self, events: u64) {
        self.delivered.inc_by(events);
    }

    /// A Subscribe stream ended after `lasted`.
    pub fn stream_ended(&self, lasted: Duration) {
        self.streams_seconds.observe(lasted.as_secs_f64());
    }

    /// A write of changed rows to the database went `ok` or not, after `took`, with
    /// `pending` changes left to write.
    pub fn flush(&self, ok: bool, took: Duration, pending: usize) {
        let outcome = if ok { "saved" } else { "failed" };
        self.flushes.get_or_create(&OutcomeLabel { outcome }).inc();
        self.flush_seconds.observe(took.as_secs_f64());
        self.pending_changes
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// The gauge of the gRPC listener's connections open on `lane` (daemon/lanes.rs).
    pub fn connections(&self, lane: &'static str) -> Gauge {
        self.connections.get_or_create(&LaneLabel { lane }).clone()
    }

    /// Every metric, with the daemon as it stands `now`, in the OpenMetrics text
    /// format.
    pub fn render(&self, now: &Now) -> String {
        let mut registry = Registry::with_prefix("streamd");
        self.register_events(&mut registry);
        register_services(&mut registry, &now.services);
        let gauge = |value: usize| {
            let gauge: Gauge = Gauge::default();
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            gauge
        };
        registry.register(
            "subscribers",
            "Subscribe streams open",
            gauge(now.subscribers),
        );
        registry.register("topics", "Topics the daemon holds", gauge(now.topics));
        let overflows = now.overflows;
        let counter = |value: u64| {
            let counter: Counter = Counter::default();
            counter.inc_by(value);
            counter
        };
        registry.register(
            "events_skipped",
            "Events dropped from subscribers' full buffers under the skip policy, each \
             told to its subscriber in a Lagged event",
            counter(overflows.skipped),
        );
        registry.register(
            "subscribe_streams_closed_full",
            "Subscribe streams ended by a full buffer under the close policy",
            counter(overflows.closed),
        );
        register_process(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String does not fail");
        text
    }

    fn register_events(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "service_step_duration",
            "Time each step of a service took",
            Unit::Seconds,
            self.steps.clone(),
        );
        registry.register(
            "service_step_errors",
            "Steps that failed, and crashes",
            self.step_errors.clone(),
        );
        registry.register(
            "rpc_requests",
            "RPCs answered, by method and gRPC status code",
            self.rpcs.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "Time to answer an RPC (for a stream, to open it)",
            Unit::Seconds,
            self.rpc_seconds.clone(),
        );
        registry.register_with_unit(
            "subscribe_stream_duration",
            "How long Subscribe streams lasted, once ended",
            Unit::Seconds,
            self.streams_seconds.clone(),
        );
        registry.register(
            "events_delivered",
            "Events Subscribe streams handed to their clients",
            self.delivered.clone(),
        );
        registry.register(
            "store_flushes",
            "Writes of changed scores to the database, by outcome",
            self.flushes.clone(),
        );
        registry.register_with_unit(
            "store_flush_duration",
            "Time a write of changed scores took",
            Unit::Seconds,
            self.flush_seconds.clone(),
        );
        registry.register(
            "store_pending_changes",
            "Changed scores not yet written, after the latest write",
            self.pending_changes.clone(),
        );
        registry.register(
            "connections",
            "Connections open on the gRPC listener, by lane: quiet, or busy once loud",
            self.connections.clone(),
        );
    }
}

/// The services as they are now: state, counters, and when each last published.
fn register_services(registry: &mut Registry, services: &[pb::ServiceInfo]) {
    let states: Family<StateLabels, Gauge> = Family::default();
    let events: Family<ServiceLabel, Counter> = Family::default();
    let bytes: Family<ServiceLabel, Counter> = Family::default();
    let restarts: Family<ServiceLabel, Counter> = Family::default();
    let last_event: Family<ServiceLabel, Gauge<f64, AtomicU64>> = Family::default();
    let all_states = [
        pb::ServiceState::Stopped,
        pb::ServiceState::Running,
        pb::ServiceState::BackingOff,
        pb::ServiceState::Failed,
    ];
    for service in services {
        let label = ServiceLabel {
            service: service.name.clone(),
        };
        for state in all_states {
            let labels = StateLabels {
                service: service.name.clone(),
                state: state_name(state).to_owned(),
            };
            states
                .get_or_create(&labels)
                .set(i64::from(service.state() == state));
        }
        events
            .get_or_create(&label)
            .inc_by(service.events_published);
        bytes.get_or_create(&label).inc_by(service.event_bytes);
        restarts.get_or_create(&label).inc_by(service.restarts);
        if let Some(at) = service.last_event_at
            && let Ok(at) = SystemTime::try_from(at)
            && let Ok(since_epoch) = at.duration_since(SystemTime::UNIX_EPOCH)
        {
            last_event
                .get_or_create(&label)
                .set(since_epoch.as_secs_f64());
        }
    }
    registry.register(
        "service_state",
        "1 for the state each service is in, 0 for the others",
        states,
    );
    registry.register(
        "service_events_published",
        "Data events each service published since the daemon started",
        events,
    );
    registry.register_with_unit(
        "service_event",
        "Bytes of the data events each service published since the daemon started",
        Unit::Bytes,
        bytes,
    );
    registry.register(
        "service_restarts",
        "Restarts after crashes since each service was last started",
        restarts,
    );
    registry.register(
        "service_last_event_timestamp_seconds",
        "When each service last published a data event, in Unix seconds",
        last_event,
    );
}

fn state_name(state: pb::ServiceState) -> &'static str {
    match state {
        pb::ServiceState::Stopped => "stopped",
        pb::ServiceState::Running => "running",
        pb::ServiceState::BackingOff => "backing_off",
        pb::ServiceState::Failed => "failed",
        pb::ServiceState::Unspecified => "unknown",
    }
}

/// The process: memory, CPU, open files, and the runtime's tasks.
fn register_process(registry: &mut Registry) {
    if let Ok(usage) = process::usage() {
        let rss: Gauge = Gauge::default();
        rss.set(i64::try_from(usage.rss_bytes).unwrap_or(i64::MAX));
        registry.register_with_unit(
            "process_resident_memory",
            "Resident set size",
            Unit::Bytes,
            rss,
        );
        let cpu: Counter<f64, AtomicU64> = Counter::default();
        cpu.inc_by(usage.cpu.as_secs_f64());
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time used",
            Unit::Seconds,
            cpu,
        );
    }
    if let Some(fds) = process::open_fds() {
        let open: Gauge = Gauge::default();
        open.set(i64::try_from(fds).unwrap_or(i64::MAX));
        registry.register("process_open_fds", "Open file descriptors", open);
    }
    let tasks: Gauge = Gauge::default();
    let alive = tokio::runtime::Handle::try_current()
        .map_or(0, |runtime| runtime.metrics().num_alive_tasks());
    tasks.set(i64::try_from(alive).unwrap_or(i64::MAX));
    registry.register("tokio_tasks", "Tasks alive in the async runtime", tasks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_format_names_counters_as_their_samples_and_drops_what_it_lacks() {
        let open_metrics = "# HELP streamd_rpc_requests RPCs answered.\n\
                            # TYPE streamd_rpc_requests counter\n\
                            streamd_rpc_requests_total{method=\"List\"} 2\n\
                            # HELP streamd_rpc_duration_seconds Time.\n\
                            # TYPE streamd_rpc_duration_seconds histogram\n\
                            # UNIT streamd_rpc_duration_seconds seconds\n\
                            streamd_rpc_duration_seconds_count 1\n\
                            # EOF\n";
        assert_eq!(
            classic_text(open_metrics),
            "# HELP streamd_rpc_requests_total RPCs answered.\n\
             # TYPE streamd_rpc_requests_total counter\n\
             streamd_rpc_requests_total{method=\"List\"} 2\n\
             # HELP streamd_rpc_duration_seconds Time.\n\
             # TYPE streamd_rpc_duration_seconds histogram\n\
             streamd_rpc_duration_seconds_count 1\n"
        );
    }
}
