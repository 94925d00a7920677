//! What a run counts and how it is reported: each subscriber's tally (every message
//! once, in order, or what went wrong), the latency histogram's summary, and the
//! report as a table or JSON, with NATS beside it when asked.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Plan;

/// The largest latency recorded, in nanoseconds; longer ones count as this.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds")
}

/// One subscriber's account of the run.
#[derive(Debug, Clone)]
pub struct Tally {
    msgs: u64,
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
    /// When the last data message arrived.
    pub last_at: Option<Instant>,
}

impl Tally {
    /// A tally for `msgs` messages in `streams` independently ordered streams.
    pub fn new(msgs: u64, streams: usize) -> Self {
        Self {
            msgs,
            seen: vec![0; msgs.div_ceil(64) as usize],
            last: vec![0; streams.max(1)],
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            lagged: 0,
            foreign: 0,
            last_at: None,
        }
    }

    /// Records message `index`, which is at `position` in ordered stream `stream`:
    /// positions must rise within a stream.
    pub fn record(&mut self, index: u64, stream: usize, position: u64, at: Instant) {
        if index >= self.msgs || stream >= self.last.len() {
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

    /// Whether every message has arrived.
    pub fn complete(&self) -> bool {
        self.distinct() == self.msgs
    }

    /// Messages that never arrived.
    pub fn lost(&self) -> u64 {
        self.msgs - self.distinct()
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

/// The outcome of one run against one system.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub system: &'static str,
    pub topic: String,
    pub subs: usize,
    pub conns: usize,
    pub pubs: usize,
    pub msgs: u64,
    pub size: usize,
    pub rate: u64,
    pub stalled: usize,
    /// Messages published (all of them unless the deadline passed first).
    pub published: u64,
    pub publish_secs: f64,
    pub publish_rate: f64,
    /// Messages received, summed over subscribers.
    pub delivered: u64,
    /// From the start of publishing to the last message received.
    pub elapsed_secs: f64,
    pub delivered_rate: f64,
    pub latency: Latency,
    pub lost: u64,
    pub lagged: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// The deadline passed before every subscriber finished.
    pub timed_out: bool,
    /// Every subscriber got every message exactly once and in order.
    pub ok: bool,
    pub subscribers: Vec<Subscriber>,
}

/// What a run measured, for [`Report::new`].
pub struct Measured {
    pub published: u64,
    pub publish_time: Duration,
    /// From the start of publishing to the last message any subscriber received.
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Report {
    pub fn new(
        system: &'static str,
        plan: &Plan,
        measured: Measured,
        tallies: &[Tally],
        latency: &Histogram<u64>,
    ) -> Self {
        let subscribers: Vec<Subscriber> = tallies
            .iter()
            .map(|t| Subscriber {
                received: t.received,
                lost: t.lost(),
                lagged: t.lagged,
                duplicates: t.duplicates,
                out_of_order: t.out_of_order,
                ok: t.complete() && t.duplicates == 0 && t.out_of_order == 0 && t.foreign == 0,
            })
            .collect();
        let sum = |f: fn(&Subscriber) -> u64| subscribers.iter().map(f).sum::<u64>();
        let delivered = sum(|s| s.received);
        let per_sec = |n: u64, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        Report {
            system,
            topic: plan.topic.clone(),
            subs: plan.subs,
            conns: plan.conns,
            pubs: plan.pubs,
            msgs: plan.msgs,
            size: plan.size,
            rate: plan.rate,
            stalled: plan.stalled,
            published: measured.published,
            publish_secs: measured.publish_time.as_secs_f64(),
            publish_rate: per_sec(measured.published, measured.publish_time),
            delivered,
            elapsed_secs: measured.elapsed.as_secs_f64(),
            delivered_rate: per_sec(delivered, measured.elapsed),
            latency: Latency::of(latency),
            lost: sum(|s| s.lost),
            lagged: sum(|s| s.lagged),
            duplicates: sum(|s| s.duplicates),
            out_of_order: sum(|s| s.out_of_order),
            timed_out: measured.timed_out,
            ok: subscribers.iter().all(|s| s.ok) && measured.published == plan.msgs,
            subscribers,
        }
    }
}

/// Ours over theirs, for the figures both have.
#[derive(Debug, Serialize, PartialEq)]
pub struct Ratios {
    pub publish_rate: Option<f64>,
    pub delivered_rate: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (theirs > 0.0).then(|| ours / theirs)
}

impl Ratios {
    pub fn of(ours: &Report, theirs: &Report) -> Self {
        Self {
            publish_rate: ratio(ours.publish_rate, theirs.publish_rate),
            delivered_rate: ratio(ours.delivered_rate, theirs.delivered_rate),
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

/// The report as an aligned table, a column per system and the ratio beside.
pub fn table(ours: &Report, theirs: Option<&Report>) -> String {
    let rate = if ours.rate == 0 {
        "max".to_string()
    } else {
        format!("{}/s", ours.rate)
    };
    let mut out = format!(
        "{} subscriber(s) on {} connection(s){}, {} publisher(s), {} messages of {} B at {} rate, topic {}\n\n",
        ours.subs,
        ours.conns,
        if ours.stalled > 0 {
            format!(" + {} stalled", ours.stalled)
        } else {
            String::new()
        },
        ours.pubs,
        ours.msgs,
        ours.size,
        rate,
        ours.topic
    );
    type Row = (
        &'static str,
        fn(&Report) -> String,
        Option<fn(&Report) -> f64>,
    );
    let rows: [Row; 12] = [
        (
            "published/s",
            |r| rate_text(r.publish_rate),
            Some(|r| r.publish_rate),
        ),
        (
            "delivered/s",
            |r| rate_text(r.delivered_rate),
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
            "complete",
            |r| {
                if r.ok {
                    "yes".into()
                } else if r.timed_out {
                    "no (deadline)".into()
                } else {
                    "no".into()
                }
            },
            None,
        ),
    ];
    let mut lines = vec![
        match theirs {
            Some(_) => vec!["", "streamd", "nats", "streamd/nats"],
            None => vec!["", "streamd"],
        }
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>(),
    ];
    for (name, text, value) in rows {
        let mut line = vec![name.to_string(), text(ours)];
        if let Some(theirs) = theirs {
            line.push(text(theirs));
            line.push(match value.and_then(|v| ratio(v(ours), v(theirs))) {
                Some(r) => format!("{r:.2}×"),
                None => String::new(),
            });
        }
        lines.push(line);
    }
    out.push_str(&align(&lines));
    out
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
    use crate::{
        args::{Cli, Command},
        bench::Plan,
    };
    use clap::Parser;

    fn plan(msgs: u64) -> Plan {
        let cli = Cli::try_parse_from([
            "streamctl",
            "bench",
            "--msgs",
            &msgs.to_string(),
            "--topic",
            "t",
        ])
        .unwrap();
        let Command::Bench(args) = cli.command else {
            panic!()
        };
        Plan::new(&args).unwrap()
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
        assert_eq!(t.lost(), 1);
        assert!(!t.complete());
        t.record(4, 0, 14, now);
        assert!(t.complete());
    }

    #[test]
    fn losses_and_lag_add_up_over_subscribers() {
        let now = Instant::now();
        let p = plan(3);
        let mut full = Tally::new(3, 1);
        (0..3).for_each(|i| full.record(i, 0, i, now));
        let mut partial = Tally::new(3, 1);
        partial.record(2, 0, 5, now);
        partial.lagged = 2;
        let measured = Measured {
            published: 3,
            publish_time: Duration::from_secs(1),
            elapsed: Duration::from_secs(2),
            timed_out: false,
        };
        let r = Report::new("streamd", &p, measured, &[full, partial], &histogram());
        assert_eq!((r.delivered, r.lost, r.lagged), (4, 2, 2));
        assert_eq!((r.publish_rate, r.delivered_rate), (3.0, 2.0));
        assert!(r.subscribers[0].ok && !r.subscribers[1].ok && !r.ok);
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
        let p = plan(1);
        let measured = |secs| Measured {
            published: 1,
            publish_time: Duration::from_secs(secs),
            elapsed: Duration::from_secs(secs),
            timed_out: false,
        };
        let ours = Report::new("streamd", &p, measured(1), &[], &histogram());
        let theirs = Report::new("nats", &p, measured(2), &[], &histogram());
        let r = Ratios::of(&ours, &theirs);
        assert_eq!(r.publish_rate, Some(2.0));
        assert_eq!(r.p99, None);
        let text = table(&ours, Some(&theirs));
        assert!(text.contains("2.00×"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&json(&ours, None)).unwrap();
        assert!(json["nats"].is_null() && json["streamd"]["ok"].is_boolean());
    }
}
