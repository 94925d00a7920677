//! What a run counts and how it is reported: each subscriber's tally (every message
//! once, in order, or what went wrong), the latency histogram's summary, the server's
//! CPU and memory, and the report as a table or JSON, with NATS beside it when asked.

use std::{fmt, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::Plan;
use crate::args::StallLevel;

/// The largest latency recorded, in nanoseconds; longer ones count as this.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds")
}

/// The systems the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Streamd,
    Nats,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Streamd => "streamd",
            System::Nats => "nats",
        })
    }
}

/// One subscriber's account of the run.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Indices from here on are not the bench's.
    limit: u64,
    /// Which indices arrived, a bit each.
    seen: Vec<u64>,
    /// The last position seen in each ordered stream, plus one (0: none yet).
    last: Vec<u64>,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Events the transport says this subscriber skipped.
    pub lagged: u64,
    /// Payloads that were neither the bench's warm-up nor a valid index.
    pub foreign: u64,
    /// Messages taken from the stream, of any kind.
    pub taken: u64,
    /// When the last data message arrived.
    pub last_at: Option<Instant>,
}

impl Tally {
    /// A tally for indices below `limit` in `streams` independently ordered streams.
    pub fn new(limit: u64, streams: usize) -> Self {
        Self {
            limit,
            seen: vec![0; limit.div_ceil(64) as usize],
            last: vec![0; streams.max(1)],
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            lagged: 0,
            foreign: 0,
            taken: 0,
            last_at: None,
        }
    }

    /// Records message `index`, which is at `position` in ordered stream `stream`:
    /// positions must rise within a stream.
    pub fn record(&mut self, index: u64, stream: usize, position: u64, at: Instant) {
        if index >= self.limit || stream >= self.last.len() {
            self.foreign += 1;
            return;
        }
        self.received += 1;
        self.last_at = Some(at);
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
        } else {
            self.seen[word] |= bit;
        }
        if position < self.last[stream] {
            self.out_of_order += 1;
        }
        self.last[stream] = self.last[stream].max(position + 1);
    }

    /// Distinct messages received.
    pub fn distinct(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Of `expected` messages, those that never arrived.
    pub fn lost(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.distinct())
    }

    /// Whether all of `expected` messages arrived, once each and in order.
    pub fn ok(&self, expected: u64) -> bool {
        self.distinct() == expected
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.foreign == 0
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// One subscriber in the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Subscriber {
    pub received: u64,
    pub lost: u64,
    pub lagged: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Every message exactly once and in order.
    pub ok: bool,
}

/// The quiet topic's subscriber, while the main topic ran.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quiet {
    pub rate: u64,
    pub published: u64,
    pub received: u64,
    pub lost: u64,
    pub lagged: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub ok: bool,
    pub latency: Latency,
    /// Whether its publisher and subscriber ran at real-time priority in the client.
    pub probe_realtime: bool,
}

impl Quiet {
    /// `tally` is `None` if the quiet subscriber never reported.
    pub fn new(rate: u64, published: u64, tally: Option<&Tally>, latency: &Histogram<u64>) -> Self {
        let empty = Tally::new(0, 1);
        let t = tally.unwrap_or(&empty);
        Self {
            rate,
            published,
            received: t.received,
            lost: t.lost(published),
            lagged: t.lagged,
            duplicates: t.duplicates,
            out_of_order: t.out_of_order,
            ok: tally.is_some() && t.ok(published),
            latency: Latency::of(latency),
            probe_realtime: false,
        }
    }
}

/// The stalled subscribers a run had.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stall {
    pub subscribers: usize,
    pub level: StallLevel,
    /// On connections shared with live subscribers.
    pub shared: bool,
}

/// The outcome of one run against one system.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub system: System,
    pub topic: String,
    pub subs: usize,
    pub conns: usize,
    pub pubs: usize,
    pub msgs: u64,
    pub size: usize,
    pub rate: u64,
    pub duration_secs: Option<f64>,
    pub warmup_secs: f64,
    /// Measured messages published (all of them unless the deadline passed first).
    pub published: u64,
    /// From the start of the measured part to the end of publishing.
    pub publish_secs: f64,
    pub publish_rate: f64,
    /// Measured messages received, summed over subscribers.
    pub delivered: u64,
    /// From the start of the measured part to the last message received.
    pub elapsed_secs: f64,
    pub delivered_rate: f64,
    /// Measured messages that never arrived, summed over subscribers.
    pub lost: u64,
    /// Events streamd's Lagged said were skipped, warm-up ones included.
    pub lagged: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// The deadline passed before every subscriber finished.
    pub timed_out: bool,
    /// Every subscriber got every message exactly once and in order.
    pub ok: bool,
    /// Why the run did not finish, if it did not.
    pub error: Option<String>,
    pub latency: Latency,
    /// The server's user and system CPU time over the measured part; null where its
    /// process was not found.
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_ns_per_delivered: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    /// Messages async-nats dropped because a subscription's buffer was full.
    pub nats_client_dropped: Option<u64>,
    pub quiet: Option<Quiet>,
    pub stall: Option<Stall>,
    /// What the figures do not say by themselves.
    pub notes: Vec<String>,
    pub subscribers: Vec<Subscriber>,
}

/// What a run measured, for [`Report::new`].
pub struct Measured {
    pub published: u64,
    pub publish_time: Duration,
    /// From the start of the measured part to the last message any subscriber received.
    pub elapsed: Duration,
    pub timed_out: bool,
    pub server_cpu: Option<Duration>,
}

fn per_sec(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

impl Report {
    pub fn new(
        system: System,
        plan: &Plan,
        measured: Measured,
        tallies: &[Tally],
        latency: &Histogram<u64>,
    ) -> Self {
        let subscribers: Vec<Subscriber> = tallies
            .iter()
            .map(|t| Subscriber {
                received: t.received,
                lost: t.lost(plan.msgs),
                lagged: t.lagged,
                duplicates: t.duplicates,
                out_of_order: t.out_of_order,
                ok: t.ok(plan.msgs),
            })
            .collect();
        let sum = |f: fn(&Subscriber) -> u64| subscribers.iter().map(f).sum::<u64>();
        let delivered = sum(|s| s.received);
        // A subscriber whose task ended without a tally lost everything.
        let silent = (plan.subs - subscribers.len().min(plan.subs)) as u64;
        let mut report = Self::empty(system, plan);
        report.published = measured.published;
        report.publish_secs = measured.publish_time.as_secs_f64();
        report.publish_rate = per_sec(measured.published, measured.publish_time);
        report.delivered = delivered;
        report.elapsed_secs = measured.elapsed.as_secs_f64();
        report.delivered_rate = per_sec(delivered, measured.elapsed);
        report.lost = sum(|s| s.lost) + silent * plan.msgs;
        report.lagged = sum(|s| s.lagged);
        report.duplicates = sum(|s| s.duplicates);
        report.out_of_order = sum(|s| s.out_of_order);
        report.timed_out = measured.timed_out;
        report.ok =
            silent == 0 && subscribers.iter().all(|s| s.ok) && measured.published == plan.msgs;
        report.latency = Latency::of(latency);
        report.server_cpu_secs = measured.server_cpu.map(|cpu| cpu.as_secs_f64());
        report.server_cpu_ns_per_delivered = measured
            .server_cpu
            .filter(|_| delivered > 0)
            .map(|cpu| cpu.as_nanos() as f64 / delivered as f64);
        report.subscribers = subscribers;
        report
    }

    /// A run that failed before it measured anything.
    pub fn failed(system: System, plan: &Plan, error: String) -> Self {
        let mut report = Self::empty(system, plan);
        report.lost = plan.msgs * plan.subs as u64;
        report.error = Some(error);
        report
    }

    fn empty(system: System, plan: &Plan) -> Self {
        Report {
            system,
            topic: plan.topic.clone(),
            subs: plan.subs,
            conns: plan.conns,
            pubs: plan.pubs,
            msgs: plan.msgs,
            size: plan.size,
            rate: plan.rate,
            duration_secs: plan.duration.map(|d| d.as_secs_f64()),
            warmup_secs: plan.warmup.as_secs_f64(),
            published: 0,
            publish_secs: 0.0,
            publish_rate: 0.0,
            delivered: 0,
            elapsed_secs: 0.0,
            delivered_rate: 0.0,
            lost: 0,
            lagged: 0,
            duplicates: 0,
            out_of_order: 0,
            timed_out: false,
            ok: false,
            error: None,
            latency: Latency::default(),
            server_cpu_secs: None,
            server_cpu_ns_per_delivered: None,
            server_rss_kib_before: None,
            server_rss_kib_after: None,
            nats_client_dropped: None,
            quiet: None,
            stall: None,
            notes: Vec::new(),
            subscribers: Vec::new(),
        }
    }

    /// The share of the messages due to the subscribers that never arrived.
    pub fn loss_fraction(&self) -> f64 {
        let due = self.msgs * self.subs as u64;
        if due == 0 {
            0.0
        } else {
            self.lost as f64 / due as f64
        }
    }
}

/// Ours over theirs, for the figures both have.
#[derive(Debug, Serialize, PartialEq)]
pub struct Ratios {
    pub publish_rate: Option<f64>,
    pub delivered_rate: Option<f64>,
    pub server_cpu_ns_per_delivered: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

/// `ours / theirs`, when there is a base to divide by.
pub fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (theirs > 0.0).then(|| ours / theirs)
}

impl Ratios {
    pub fn of(ours: &Report, theirs: &Report) -> Self {
        Self {
            publish_rate: ratio(ours.publish_rate, theirs.publish_rate),
            delivered_rate: ratio(ours.delivered_rate, theirs.delivered_rate),
            server_cpu_ns_per_delivered: ours
                .server_cpu_ns_per_delivered
                .zip(theirs.server_cpu_ns_per_delivered)
                .and_then(|(o, t)| ratio(o, t)),
            p50: ratio(ours.latency.p50_us, theirs.latency.p50_us),
            p99: ratio(ours.latency.p99_us, theirs.latency.p99_us),
            p999: ratio(ours.latency.p999_us, theirs.latency.p999_us),
            max: ratio(ours.latency.max_us, theirs.latency.max_us),
        }
    }
}

/// The report as one JSON object: `streamd`, and `nats` and `ratios` (streamd over
/// nats) when NATS ran too.
pub fn json(ours: &Report, theirs: Option<&Report>) -> String {
    let value = serde_json::json!({
        "streamd": ours,
        "nats": theirs,
        "ratios": theirs.map(|t| Ratios::of(ours, t)),
    });
    serde_json::to_string_pretty(&value).expect("plain data") + "\n"
}

/// A rate, or `max` for flat out.
pub fn rate_name(rate: u64) -> String {
    if rate == 0 {
        "max".to_string()
    } else {
        format!("{rate}/s")
    }
}

/// A table row: its name, a cell from a report, and the figure ratios are taken of.
type Row = (
    &'static str,
    fn(&Report) -> String,
    Option<fn(&Report) -> f64>,
);

const ROWS: [Row; 16] = [
    (
        "published/s",
        |r| rate_text(r.publish_rate),
        Some(|r| r.publish_rate),
    ),
    (
        "delivered/s",
        |r| format!("{} ({})", rate_text(r.delivered_rate), lost_text(r)),
        Some(|r| r.delivered_rate),
    ),
    ("delivered", |r| r.delivered.to_string(), None),
    (
        "latency p50",
        |r| us_text(r.latency.p50_us),
        Some(|r| r.latency.p50_us),
    ),
    (
        "latency p99",
        |r| us_text(r.latency.p99_us),
        Some(|r| r.latency.p99_us),
    ),
    (
        "latency p99.9",
        |r| us_text(r.latency.p999_us),
        Some(|r| r.latency.p999_us),
    ),
    (
        "latency max",
        |r| us_text(r.latency.max_us),
        Some(|r| r.latency.max_us),
    ),
    ("lost", |r| r.lost.to_string(), None),
    ("lagged", |r| r.lagged.to_string(), None),
    ("duplicates", |r| r.duplicates.to_string(), None),
    ("out of order", |r| r.out_of_order.to_string(), None),
    (
        "server CPU",
        |r| match r.server_cpu_secs {
            Some(secs) => format!("{secs:.3} s"),
            None => "n/a (server process not found)".into(),
        },
        None,
    ),
    (
        "server CPU/delivered",
        |r| match r.server_cpu_ns_per_delivered {
            Some(ns) => format!("{ns:.0} ns"),
            None => "n/a".into(),
        },
        Some(|r| r.server_cpu_ns_per_delivered.unwrap_or(0.0)),
    ),
    (
        "server RSS",
        |r| match (r.server_rss_kib_before, r.server_rss_kib_after) {
            (Some(before), Some(after)) => format!("{before} → {after} KiB"),
            _ => "n/a".into(),
        },
        None,
    ),
    (
        "client dropped",
        |r| {
            r.nats_client_dropped
                .map_or("n/a".into(), |n| n.to_string())
        },
        None,
    ),
    (
        "complete",
        |r| {
            if r.ok {
                "yes".into()
            } else if r.error.is_some() {
                "no (failed)".into()
            } else if r.timed_out {
                "no (deadline)".into()
            } else {
                "no".into()
            }
        },
        None,
    ),
];

/// A row of the quiet subscriber's: its name and its cell.
type QuietRow = (&'static str, fn(&Quiet) -> String);

const QUIET_ROWS: [QuietRow; 6] = [
    ("quiet received", |q| {
        format!("{} of {}", q.received, q.published)
    }),
    ("quiet lost", |q| q.lost.to_string()),
    ("quiet lagged", |q| q.lagged.to_string()),
    ("quiet p50", |q| us_text(q.latency.p50_us)),
    ("quiet p99", |q| us_text(q.latency.p99_us)),
    ("quiet p99.9 / max", |q| {
        format!(
            "{} / {}",
            us_text(q.latency.p999_us),
            us_text(q.latency.max_us)
        )
    }),
];

/// The report as an aligned table, a column per system and the ratio beside.
pub fn table(ours: &Report, theirs: Option<&Report>) -> String {
    let stall = match &ours.stall {
        Some(s) => format!(
            " + {} stalled ({}{})",
            s.subscribers,
            s.level.name(),
            if s.shared {
                ", sharing connections"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    let quiet = ours
        .quiet
        .as_ref()
        .map(|q| format!(", quiet topic at {}/s", q.rate))
        .unwrap_or_default();
    let mut out = format!(
        "{} subscriber(s) on {} connection(s){stall}, {} publisher(s), {} messages of {} B at {} rate after a {} warm-up{quiet}, topic {}\n\n",
        ours.subs,
        ours.conns,
        ours.pubs,
        ours.msgs,
        ours.size,
        rate_name(ours.rate),
        humantime::format_duration(Duration::from_secs_f64(ours.warmup_secs)),
        ours.topic
    );
    let reports: Vec<&Report> = std::iter::once(ours).chain(theirs).collect();
    let mut lines = vec![
        std::iter::once(String::new())
            .chain(reports.iter().map(|r| r.system.to_string()))
            .chain(theirs.map(|_| "streamd/nats".to_string()))
            .collect::<Vec<_>>(),
    ];
    for (name, text, value) in ROWS {
        let mut line = vec![name.to_string()];
        line.extend(reports.iter().map(|r| text(r)));
        if let Some(theirs) = theirs {
            line.push(match value.and_then(|v| ratio(v(ours), v(theirs))) {
                Some(r) if is_measured(value, ours) => format!("{r:.2}×"),
                _ => String::new(),
            });
        }
        lines.push(line);
    }
    if reports.iter().any(|r| r.quiet.is_some()) {
        for (name, text) in QUIET_ROWS {
            let mut line = vec![name.to_string()];
            line.extend(
                reports
                    .iter()
                    .map(|r| r.quiet.as_ref().map_or("n/a".into(), text)),
            );
            lines.push(line);
        }
    }
    out.push_str(&align(&lines));
    for r in &reports {
        if let Some(error) = &r.error {
            out.push_str(&format!("\n{}: {error}", r.system));
        }
        for note in &r.notes {
            out.push_str(&format!("\n{}: {note}", r.system));
        }
    }
    if reports
        .iter()
        .any(|r| r.error.is_some() || !r.notes.is_empty())
    {
        out.push('\n');
    }
    out
}

/// Whether the row's figure was measured for `report` (absent ones read as 0).
fn is_measured(value: Option<fn(&Report) -> f64>, report: &Report) -> bool {
    value.is_some_and(|v| v(report) > 0.0)
}

fn lost_text(r: &Report) -> String {
    if r.lost == 0 {
        "0 lost".into()
    } else {
        format!("{} lost, {:.2}%", r.lost, 100.0 * r.loss_fraction())
    }
}

/// Columns padded to their widest cell: the first left-aligned, the rest right.
pub fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn rate_text(per_sec: f64) -> String {
    format!("{per_sec:.0}")
}

/// Microseconds, or milliseconds from 10 ms up.
pub fn us_text(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::plan;

    fn measured(published: u64, publish_secs: u64, elapsed_secs: u64) -> Measured {
        Measured {
            published,
            publish_time: Duration::from_secs(publish_secs),
            elapsed: Duration::from_secs(elapsed_secs),
            timed_out: false,
            server_cpu: Some(Duration::from_millis(4)),
        }
    }

    #[test]
    fn a_tally_counts_duplicates_gaps_and_disorder() {
        let now = Instant::now();
        let mut t = Tally::new(5, 2);
        t.record(0, 0, 10, now);
        t.record(1, 1, 1, now);
        t.record(2, 0, 11, now);
        t.record(2, 0, 12, now); // again
        t.record(3, 1, 0, now); // behind position 1 in stream 1
        t.record(9, 0, 13, now); // not a bench index
        assert_eq!(
            (
                t.received,
                t.distinct(),
                t.duplicates,
                t.out_of_order,
                t.foreign
            ),
            (5, 4, 1, 1, 1)
        );
        assert_eq!(t.lost(5), 1);
        assert!(!t.ok(5));
        t.record(4, 0, 14, now);
        assert_eq!(t.lost(5), 0);
        assert!(!t.ok(5), "a duplicate and disorder are not ok");
        let mut clean = Tally::new(2, 1);
        clean.record(0, 0, 0, now);
        clean.record(1, 0, 1, now);
        assert!(clean.ok(2) && !clean.ok(3));
    }

    #[test]
    fn losses_lag_and_cpu_add_up_over_subscribers() {
        let now = Instant::now();
        let p = plan(&["--msgs", "3", "--subs", "3"]).unwrap();
        let mut full = Tally::new(3, 1);
        (0..3).for_each(|i| full.record(i, 0, i, now));
        let mut partial = Tally::new(3, 1);
        partial.record(2, 0, 5, now);
        partial.lagged = 2;
        // The third subscriber never reported: everything it was due is lost.
        let r = Report::new(
            System::Streamd,
            &p,
            measured(3, 1, 2),
            &[full, partial],
            &histogram(),
        );
        assert_eq!((r.delivered, r.lost, r.lagged), (4, 5, 2));
        assert_eq!((r.publish_rate, r.delivered_rate), (3.0, 2.0));
        assert_eq!(r.server_cpu_ns_per_delivered, Some(1_000_000.0));
        assert!((r.loss_fraction() - 5.0 / 9.0).abs() < 1e-9);
        assert!(r.subscribers[0].ok && !r.subscribers[1].ok && !r.ok);
    }

    #[test]
    fn a_failed_run_is_reported_as_such() {
        let p = plan(&["--msgs", "10", "--subs", "2"]).unwrap();
        let r = Report::failed(System::Nats, &p, "no server".into());
        assert!(!r.ok);
        assert_eq!(r.lost, 20);
        assert!(table(&r, None).contains("no (failed)"));
        assert!(table(&r, None).contains("nats: no server"));
    }

    #[test]
    fn latency_summary_reads_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.p999_us - 999.0).abs() <= 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() <= 1.0, "{l:?}");
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    #[test]
    fn ratios_are_ours_over_theirs_and_absent_without_a_base() {
        let p = plan(&["--msgs", "1"]).unwrap();
        let ours = Report::new(System::Streamd, &p, measured(1, 1, 1), &[], &histogram());
        let theirs = Report::new(System::Nats, &p, measured(1, 2, 2), &[], &histogram());
        let r = Ratios::of(&ours, &theirs);
        assert_eq!(r.publish_rate, Some(2.0));
        assert_eq!(r.p99, None);
        let text = table(&ours, Some(&theirs));
        assert!(text.contains("2.00×"), "{text}");
        assert!(text.contains("(1 lost, 100.00%)"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&json(&ours, None)).unwrap();
        assert!(json["nats"].is_null() && json["streamd"]["ok"].is_boolean());
        assert_eq!(json["streamd"]["system"], "streamd");
    }

    #[test]
    fn the_quiet_subscriber_is_counted_against_what_its_publisher_sent() {
        let now = Instant::now();
        let mut t = Tally::new(100, 1);
        (0..8).for_each(|i| t.record(i, 0, i, now));
        let q = Quiet::new(10, 9, Some(&t), &histogram());
        assert_eq!((q.received, q.lost, q.ok), (8, 1, false));
        let silent = Quiet::new(10, 9, None, &histogram());
        assert_eq!((silent.lost, silent.ok), (9, false));
    }
}
