//! `streamctl bench`: measures the event stream the way `nats bench` measures NATS.
//! K subscribers read one topic, P publishers publish N payloads stamped with their
//! send time, and the report gives the publish rate, the delivered rate summed over
//! subscribers, latency percentiles and every event lost, lagged, duplicated or out of
//! order. With `--against-nats` the same workload runs against nats-server too.
//!
//! Each run waits until every subscriber has seen a warm-up event before it starts the
//! clock, and ends by a deadline whatever happens: what has not arrived by then counts
//! as lost.

mod control;
mod measure;
mod nats;
mod payload;
mod report;
mod streamd;

use std::time::Duration;

use crate::{
    args::{Addr, BenchArgs},
    error::Error,
    term,
};

/// The largest payload: events are at most 64 KiB encoded, with room for the envelope.
const MAX_SIZE: usize = 60 * 1024;
/// The most subscribers one run may open.
const MAX_SUBS: usize = 100_000;
/// Publishing speed assumed, when no rate is given, to bound a run.
const FLOOR_RATE: u64 = 10_000;
/// Added to the expected publishing time to make the default deadline.
const GRACE: Duration = Duration::from_secs(10);
/// After publishing ends, a subscriber that has received nothing for this long stops
/// waiting for what is missing.
const IDLE: Duration = Duration::from_secs(1);

/// A checked workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub subs: usize,
    /// Connections the subscribers use (K when each has its own).
    pub conns: usize,
    pub pubs: usize,
    pub msgs: u64,
    pub size: usize,
    pub rate: u64,
    pub stalled: usize,
    pub hold: Option<Duration>,
    /// How long after the start of publishing the run ends at the latest.
    pub timeout: Duration,
    pub topic: String,
    /// Bytes of padding that bring the payload to `size`.
    pub padding: usize,
}

impl Plan {
    /// Checks the arguments of a pub/sub run, naming the first bad one.
    pub fn new(args: &BenchArgs) -> Result<Self, String> {
        if args.subs == 0 || args.subs > MAX_SUBS {
            return Err(format!("--subs must be 1 to {MAX_SUBS}"));
        }
        if args.conns > args.subs {
            return Err(format!(
                "--conns {} exceeds --subs {}: each connection needs a stream",
                args.conns, args.subs
            ));
        }
        if args.pubs == 0 {
            return Err("--pubs must be at least 1".into());
        }
        if args.msgs == 0 {
            return Err("--msgs must be at least 1".into());
        }
        if args.pubs as u64 > args.msgs {
            return Err(format!(
                "--pubs {} exceeds --msgs {}: each publisher needs a message",
                args.pubs, args.msgs
            ));
        }
        if args.msgs > 1 << 40 {
            return Err("--msgs is too large".into());
        }
        if args.size > MAX_SIZE {
            return Err(format!("--size must be at most {MAX_SIZE}"));
        }
        let padding = payload::padding_for(args.size).ok_or_else(|| {
            format!(
                "--size must be at least {} (the payload carries its index and send time)",
                payload::MIN_SIZE
            )
        })?;
        let topic = match &args.topic {
            Some(topic) => {
                check_topic(topic)?;
                topic.clone()
            }
            None => format!("bench.{:08x}", rand::random::<u32>()),
        };
        let expected = if args.rate > 0 {
            Duration::from_secs_f64(args.msgs as f64 / args.rate as f64)
        } else {
            Duration::from_secs_f64(args.msgs as f64 / FLOOR_RATE as f64)
        };
        Ok(Plan {
            subs: args.subs,
            conns: if args.conns == 0 {
                args.subs
            } else {
                args.conns
            },
            pubs: args.pubs,
            msgs: args.msgs,
            size: args.size,
            rate: args.rate,
            stalled: args.stalled,
            hold: args.hold,
            timeout: args.timeout.unwrap_or(expected + GRACE),
            topic,
            padding,
        })
    }

    /// When message `index` is due, counted from the start of publishing.
    pub fn due(&self, index: u64) -> Option<Duration> {
        (self.rate > 0).then(|| Duration::from_secs_f64(index as f64 / self.rate as f64))
    }

    /// The indices publisher `p` sends, in order.
    pub fn indices(&self, p: usize) -> impl Iterator<Item = u64> + Send + 'static {
        (p as u64..self.msgs).step_by(self.pubs)
    }

    /// How long to wait for every subscriber to be ready: more streams take longer.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(20) + Duration::from_millis(2 * (self.subs + self.stalled) as u64)
    }
}

/// Topics that streamd and NATS both take alike: 1 to 128 letters, digits and `._-`,
/// with no empty `.`-separated part.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 128 {
        return Err(format!(
            "--topic {topic:?} must be 1 to 128 characters long"
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(format!(
            "--topic {topic:?} has {c:?}; use letters, digits and ._- only"
        ));
    }
    if topic.starts_with('.') || topic.ends_with('.') || topic.contains("..") {
        return Err(format!("--topic {topic:?} has an empty `.`-separated part"));
    }
    Ok(())
}

/// Runs the bench the arguments ask for and prints its report.
pub async fn run(addr: &Addr, args: BenchArgs) -> Result<(), Error> {
    if args.control > 0 {
        let report = control::run(addr, &args.service, args.control).await?;
        return term::emit(&if args.json {
            serde_json::to_string_pretty(&report).expect("plain data") + "\n"
        } else {
            report.table()
        });
    }
    let plan = Plan::new(&args).map_err(Error::Other)?;
    let nats_url = args.against_nats.as_deref().map(nats::url).transpose()?;
    // Reach NATS first, so that an unreachable server fails before a long run.
    let nats_probe = match &nats_url {
        Some(url) => Some(nats::probe(url).await?),
        None => None,
    };
    let ours = streamd::run(addr, &plan).await?;
    let theirs = match (&nats_url, nats_probe) {
        (Some(url), Some(probe)) => {
            drop(probe);
            Some(nats::run(url, &plan).await?)
        }
        _ => None,
    };
    let text = if args.json {
        report::json(&ours, theirs.as_ref())
    } else {
        report::table(&ours, theirs.as_ref())
    };
    term::emit(&text)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn plan(extra: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(["streamctl", "bench"].iter().chain(extra)).unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("not bench");
        };
        Plan::new(&args)
    }

    #[test]
    fn defaults_give_a_bounded_run_on_a_fresh_topic() {
        let p = plan(&[]).unwrap();
        assert_eq!(
            (p.subs, p.conns, p.pubs, p.msgs, p.size),
            (1, 1, 1, 100_000, 128)
        );
        assert_eq!(p.timeout, Duration::from_secs(20));
        assert!(p.topic.starts_with("bench."));
        assert_ne!(plan(&[]).unwrap().topic, p.topic);
    }

    #[test]
    fn the_deadline_follows_the_rate() {
        let p = plan(&["--msgs", "5000", "--rate", "1000"]).unwrap();
        assert_eq!(p.timeout, Duration::from_secs(15));
        assert_eq!(p.due(1500), Some(Duration::from_millis(1500)));
        let p = plan(&["--timeout", "3s"]).unwrap();
        assert_eq!(p.timeout, Duration::from_secs(3));
        assert_eq!(p.due(10), None);
    }

    #[test]
    fn connections_default_to_one_per_stream() {
        assert_eq!(plan(&["--subs", "10"]).unwrap().conns, 10);
        assert_eq!(plan(&["--subs", "10", "--conns", "3"]).unwrap().conns, 3);
    }

    #[test]
    fn publishers_share_the_indices() {
        let p = plan(&["--msgs", "7", "--pubs", "3"]).unwrap();
        let all: Vec<Vec<u64>> = (0..3).map(|i| p.indices(i).collect()).collect();
        assert_eq!(all, [vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn bad_arguments_are_named() {
        for (args, word) in [
            (&["--subs", "0"][..], "--subs"),
            (&["--subs", "2", "--conns", "3"], "--conns"),
            (&["--pubs", "0"], "--pubs"),
            (&["--msgs", "0"], "--msgs"),
            (&["--msgs", "2", "--pubs", "3"], "--pubs"),
            (&["--size", "8"], "--size"),
            (&["--size", "100000"], "--size"),
            (&["--topic", "a b"], "--topic"),
            (&["--topic", "a..b"], "--topic"),
            (&["--topic", ""], "--topic"),
        ] {
            let err = plan(args).unwrap_err();
            assert!(err.contains(word), "{args:?}: {err}");
        }
        assert!(plan(&["--topic", "bench.my-run_1"]).is_ok());
    }
}
