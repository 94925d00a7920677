//! `streamctl bench`: measures the event stream the way `nats bench` measures NATS.
//! K subscribers read one topic, P publishers (each in its own task) publish payloads
//! stamped with the time they were due, and the report gives the publish rate, the
//! delivered rate summed over subscribers beside what was lost, latency percentiles,
//! the server's CPU per delivered event and every event lost, lagged, duplicated or out
//! of order. With `--against-nats` the same workload runs against nats-server too;
//! with `--spawn` each run gets fresh servers, and `--rates` climbs a ladder of rates
//! (see `ladder`).
//!
//! Each run waits until every subscriber has seen a warm-up event, then publishes for
//! the warm-up at the run's rate (those messages count nowhere) and then the measured
//! messages, and ends by a deadline whatever happens: what has not arrived by then
//! counts as lost.

mod control;
mod ladder;
mod measure;
mod names;
mod nats;
mod payload;
mod raw_event;
mod report;
mod server;
mod stall;
mod streamd;

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    args::{BenchArgs, StallLevel},
    client::Addr,
    error::Error,
    term,
};
use report::{Report, System};
use server::Processes;

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
/// How long each rate of a ladder is measured unless --duration says.
const LADDER_STEP: Duration = Duration::from_secs(10);
/// Runs of each system at each rate of a ladder unless --repeat says.
const LADDER_REPEAT: usize = 2;

/// A checked workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub subs: usize,
    /// Connections the subscribers use (K when each has its own).
    pub conns: usize,
    pub pubs: usize,
    /// Measured messages.
    pub msgs: u64,
    pub size: usize,
    pub rate: u64,
    /// How long the measured part publishes, for a paced run given a duration.
    pub duration: Option<Duration>,
    pub warmup: Duration,
    pub quiet_rate: u64,
    pub stalled: usize,
    pub stall: StallLevel,
    pub stall_shared: bool,
    pub nats_default_client: bool,
    pub hold: Option<Duration>,
    /// The deadline as given, if it was.
    timeout: Option<Duration>,
    pub topic: String,
    /// Bytes of padding that bring the payload to `size`.
    pub padding: usize,
}

impl Plan {
    /// Checks the arguments of a pub/sub run, naming the first bad one. For a ladder
    /// the plan is its first rate's.
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
        if args.size > MAX_SIZE {
            return Err(format!("--size must be at most {MAX_SIZE}"));
        }
        let padding = payload::padding_for(args.size).ok_or_else(|| {
            format!(
                "--size must be at least {} (the payload carries its index and send time)",
                payload::MIN_SIZE
            )
        })?;
        if args.rates.contains(&0) {
            return Err("--rates must all be above 0: a ladder is of paced rates".into());
        }
        if args.repeat == Some(0) {
            return Err("--repeat must be at least 1".into());
        }
        let rate = args.rates.first().copied().unwrap_or(args.rate);
        let duration = match args.duration {
            Some(_) if rate == 0 => {
                return Err(
                    "--duration needs --rate or --rates: at full speed a run is --msgs long".into(),
                );
            }
            None if !args.rates.is_empty() => Some(LADDER_STEP),
            duration => duration,
        };
        if args.stall_shared && args.stalled == 0 {
            return Err("--stall-shared needs --stalled".into());
        }
        if args.stall_shared && args.stall == StallLevel::Tcp {
            return Err(
                "--stall-shared needs --stall grpc: a connection that is not read stalls every \
                 stream on it"
                    .into(),
            );
        }
        let topic = match &args.topic {
            Some(topic) => {
                check_topic(topic)?;
                topic.clone()
            }
            None => format!("bench.{:08x}", rand::random::<u32>()),
        };
        let plan = Plan {
            subs: args.subs,
            conns: if args.conns == 0 {
                args.subs
            } else {
                args.conns
            },
            pubs: args.pubs,
            msgs: args.msgs,
            size: args.size,
            rate,
            duration,
            warmup: args.warmup,
            quiet_rate: args.quiet_rate,
            stalled: args.stalled,
            stall: args.stall,
            stall_shared: args.stall_shared,
            nats_default_client: args.nats_default_client,
            hold: args.hold,
            timeout: args.timeout,
            topic,
            padding,
        };
        let plan = plan.at_rate(rate);
        if plan.msgs == 0 {
            return Err("--msgs must be at least 1".into());
        }
        if plan.pubs as u64 > plan.msgs {
            return Err(format!(
                "--pubs {} exceeds the {} messages: each publisher needs a message",
                plan.pubs, plan.msgs
            ));
        }
        if plan.msgs > 1 << 40 {
            return Err("--msgs is too large".into());
        }
        Ok(plan)
    }

    /// The same plan at another rate: with a duration, its messages follow the rate.
    pub fn at_rate(&self, rate: u64) -> Self {
        let msgs = match self.duration {
            Some(duration) => (rate as f64 * duration.as_secs_f64()).round() as u64,
            None => self.msgs,
        };
        Plan {
            rate,
            msgs,
            ..self.clone()
        }
    }

    /// Messages the warm-up publishes at the plan's rate.
    pub fn warmup_msgs(&self) -> u64 {
        (self.rate as f64 * self.warmup.as_secs_f64()).round() as u64
    }

    /// How long after the start of publishing the run ends at the latest.
    pub fn timeout(&self) -> Duration {
        let rate = if self.rate > 0 { self.rate } else { FLOOR_RATE };
        let expected = Duration::from_secs_f64(self.msgs as f64 / rate as f64);
        self.timeout.unwrap_or(self.warmup + expected + GRACE)
    }

    /// The quiet topic, if the plan has one.
    pub fn quiet_topic(&self) -> Option<String> {
        (self.quiet_rate > 0).then(|| format!("{}.quiet", self.topic))
    }

    /// How long to wait for every subscriber to be ready: more streams take longer.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(20) + Duration::from_millis(2 * (self.subs + self.stalled) as u64)
    }
}

/// Topics that streamd and NATS both take alike: streamd's topic names, with no empty
/// `.`-separated part (which NATS refuses in a subject).
fn check_topic(topic: &str) -> Result<(), String> {
    streamhandler::topic::check_name(topic).map_err(|e| format!("--topic {e}"))?;
    if topic.starts_with('.') || topic.ends_with('.') || topic.contains("..") {
        return Err(format!("--topic {topic:?} has an empty `.`-separated part"));
    }
    Ok(())
}

/// Runs the bench the arguments ask for and prints its report.
pub async fn run(addr: &Addr, args: BenchArgs) -> Result<(), Error> {
    if args.control > 0 || args.names > 0 {
        // Fresh with --spawn, else the daemon at the address.
        let spawned = match args.spawn {
            true => {
                Some(server::Spawned::start(System::Streamd, &Binaries::new(&args)?.streamd).await?)
            }
            false => None,
        };
        let (addr, pid) = match &spawned {
            Some(spawned) => (
                format!("127.0.0.1:{}", spawned.port)
                    .parse()
                    .map_err(Error::Other)?,
                Some(spawned.pid),
            ),
            None => (addr.clone(), listener_pid(&addr.uri).await),
        };
        let text = if args.control > 0 {
            control::run(&addr, &args.service, args.control)
                .await
                .map(|report| (serde_json::to_string_pretty(&report), report.table()))
        } else {
            names::run(&addr, args.names, pid)
                .await
                .map(|report| (serde_json::to_string_pretty(&report), report.table()))
        };
        if let Some(spawned) = spawned {
            spawned.stop().await;
        }
        let (json, table) = text?;
        return term::emit(&if args.json {
            json.expect("plain data") + "\n"
        } else {
            table
        });
    }
    let plan = Plan::new(&args).map_err(Error::Other)?;
    let (ours, theirs) = if args.spawn {
        let bins = Binaries::new(&args)?;
        // A single run with --json-lines goes as a ladder of one rung, which writes it.
        if !args.rates.is_empty() || args.repeat.is_some() || args.json_lines.is_some() {
            return climb(&args, &plan, &bins).await;
        }
        let ours = spawned(System::Streamd, &bins, &plan).await?;
        let theirs = match &bins.nats {
            Some(_) => Some(spawned(System::Nats, &bins, &plan).await?),
            None => None,
        };
        (ours, theirs)
    } else {
        let nats_url = match &args.against_nats {
            Some(Some(url)) => Some(nats::url(url)?),
            Some(None) => {
                return Err(Error::Other(
                    "--against-nats needs a URL (nats://HOST:PORT) unless --spawn starts one"
                        .into(),
                ));
            }
            None => None,
        };
        // Reach NATS first, so that an unreachable server fails before a long run.
        if let Some(url) = &nats_url {
            nats::probe(url).await?;
        }
        // Across a cluster, every process the events pass through counts.
        let mut processes = Processes::one(listener_pid(&addr.uri).await);
        if let Some(subscribe) = &args.subscribe_addr {
            processes.add(listener_pid(&subscribe.uri).await);
        }
        if let Some(cluster_nats) = &args.cluster_nats {
            processes.add(listener_pid(cluster_nats).await);
        }
        let target = Server::Streamd {
            publish: addr.clone(),
            subscribe: args.subscribe_addr.clone(),
        };
        let ours = measure_server(target, processes, &plan).await?;
        let theirs = match nats_url {
            Some(url) => {
                let pid = listener_pid(&url).await;
                Some(measure_server(Server::Nats(url), Processes::one(pid), &plan).await?)
            }
            None => None,
        };
        (ours, theirs)
    };
    term::emit(&if args.json {
        report::json(&ours, theirs.as_ref())
    } else {
        report::table(&ours, theirs.as_ref())
    })
}

/// A server to measure, by its address.
enum Server {
    /// Publishers write at `publish`; subscribers read there too, or at `subscribe`,
    /// another node of its cluster.
    Streamd {
        publish: Addr,
        subscribe: Option<Addr>,
    },
    Nats(String),
}

/// Runs the plan against `server`, whose `processes` are known, reading their memory
/// before and after.
async fn measure_server(
    server: Server,
    processes: Processes,
    plan: &Plan,
) -> Result<Report, Error> {
    let rss_before = processes.rss_kib();
    let mut report = match &server {
        Server::Streamd { publish, subscribe } => {
            streamd::run(publish, subscribe.as_ref(), plan, &processes).await?
        }
        Server::Nats(url) => nats::run(url, plan, &processes).await?,
    };
    report.server_rss_kib_before = rss_before;
    report.server_rss_kib_after = processes.rss_kib();
    if processes.0.is_empty() {
        report
            .notes
            .push("the server's process was not found on this machine: no CPU or RSS".into());
    }
    Ok(report)
}

/// The process listening at a `scheme://host:port` address, if it is on this machine.
async fn listener_pid(uri: &str) -> Option<u32> {
    let authority = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority).await.ok()?.collect();
    addrs
        .into_iter()
        .find_map(streamhandler::listen::pid_listening_on)
}

/// The server binaries --spawn starts.
struct Binaries {
    streamd: PathBuf,
    /// With --against-nats.
    nats: Option<PathBuf>,
}

impl Binaries {
    fn new(args: &BenchArgs) -> Result<Self, Error> {
        if let Some(Some(url)) = &args.against_nats {
            return Err(Error::Other(format!(
                "--against-nats {url}: --spawn starts its own nats-server; give --against-nats \
                 without a URL"
            )));
        }
        let streamd = match &args.streamd_bin {
            Some(path) => path.clone(),
            None => server::default_streamd()?,
        };
        let nats = args.against_nats.as_ref().map(|_| {
            args.nats_server_bin
                .clone()
                .unwrap_or_else(server::default_nats_server)
        });
        for bin in std::iter::once(&streamd).chain(&nats) {
            if !bin.is_file() {
                return Err(Error::Other(format!(
                    "no server binary at {}",
                    bin.display()
                )));
            }
        }
        Ok(Self { streamd, nats })
    }

    fn of(&self, system: System) -> &Path {
        match system {
            System::Streamd => &self.streamd,
            System::Nats => self.nats.as_deref().expect("nats runs only with a binary"),
        }
    }
}

/// Runs the plan against a fresh `system`, stopped after the run.
async fn spawned(system: System, bins: &Binaries, plan: &Plan) -> Result<Report, Error> {
    let spawned = server::Spawned::start(system, bins.of(system)).await?;
    let target = match system {
        System::Streamd => Server::Streamd {
            publish: format!("127.0.0.1:{}", spawned.port)
                .parse()
                .map_err(Error::Other)?,
            subscribe: None,
        },
        System::Nats => Server::Nats(format!("nats://127.0.0.1:{}", spawned.port)),
    };
    let report = measure_server(target, Processes::one(Some(spawned.pid)), plan).await;
    spawned.stop().await;
    report
}

/// Climbs the ladder of --rates (or repeats the one workload), writing each run as a
/// JSON line, then the summary.
async fn climb(args: &BenchArgs, plan: &Plan, bins: &Binaries) -> Result<(), Error> {
    let mut lines = match &args.json_lines {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| Error::Other(format!("cannot open {}: {err}", path.display())))?,
        ),
        None => None,
    };
    let systems: Vec<System> = std::iter::once(System::Streamd)
        .chain(bins.nats.as_ref().map(|_| System::Nats))
        .collect();
    let rates = match args.rates.is_empty() {
        true => vec![plan.rate],
        false => args.rates.clone(),
    };
    let sustained = ladder::Sustained {
        p99_under: args.sustained_p99,
    };
    let records = ladder::climb(
        &rates,
        args.repeat.unwrap_or(LADDER_REPEAT),
        &systems,
        sustained,
        |system, rate| {
            let plan = plan.at_rate(rate);
            async move {
                spawned(system, bins, &plan)
                    .await
                    .unwrap_or_else(|err| Report::failed(system, &plan, err.to_string()))
            }
        },
        |record| {
            let r = &record.report;
            eprintln!(
                "streamctl: {} rep {} {}: {}, lost {}, p99 {}",
                report::rate_name(r.rate),
                record.rep,
                r.system,
                match (&r.error, sustained.by(r)) {
                    (Some(error), _) => format!("failed ({error})"),
                    (None, true) => "sustained".into(),
                    (None, false) => "not sustained".into(),
                },
                r.lost,
                report::us_text(r.latency.p99_us)
            );
            let line = serde_json::to_string(record).expect("plain data");
            match &mut lines {
                Some(file) => writeln!(file, "{line}")
                    .map_err(|err| Error::Other(format!("cannot write the JSON lines: {err}"))),
                None => term::emit(&line),
            }
        },
    )
    .await?;
    let summary = ladder::Summary::of(&rates, &systems, &records, sustained);
    term::emit(&if args.json {
        serde_json::to_string(&serde_json::json!({ "summary": summary })).expect("plain data")
    } else {
        summary.table()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, atomic::AtomicU64};

    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    /// The plan `streamctl bench ARGS` makes; panics if clap rejects the arguments.
    pub fn plan(extra: &[&str]) -> Result<Plan, String> {
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
            (p.subs, p.conns, p.pubs, p.msgs, p.size, p.warmup),
            (1, 1, 1, 100_000, 128, Duration::from_secs(2))
        );
        assert_eq!(p.timeout(), Duration::from_secs(22));
        assert!(p.topic.starts_with("bench."));
        assert_ne!(plan(&[]).unwrap().topic, p.topic);
        assert_eq!(p.quiet_topic(), None);
    }

    #[test]
    fn the_deadline_follows_the_rate_and_the_warmup() {
        let p = plan(&["--msgs", "5000", "--rate", "1000", "--warmup", "0s"]).unwrap();
        assert_eq!(p.timeout(), Duration::from_secs(15));
        let p = plan(&["--timeout", "3s"]).unwrap();
        assert_eq!(p.timeout(), Duration::from_secs(3));
    }

    #[test]
    fn a_duration_sets_the_messages_from_the_rate() {
        let p = plan(&["--rate", "2000", "--duration", "3s", "--warmup", "500ms"]).unwrap();
        assert_eq!((p.msgs, p.warmup_msgs()), (6000, 1000));
        let ladder = plan(&["--spawn", "--rates", "100,300", "--warmup", "1s"]).unwrap();
        assert_eq!((ladder.rate, ladder.msgs), (100, 1000));
        assert_eq!(ladder.at_rate(300).msgs, 3000);
    }

    #[test]
    fn connections_default_to_one_per_stream() {
        assert_eq!(plan(&["--subs", "10"]).unwrap().conns, 10);
        assert_eq!(plan(&["--subs", "10", "--conns", "3"]).unwrap().conns, 3);
    }

    /// What a schedule sends: (warm-up?, number, intended time after the start).
    async fn sent(plan: &Plan, p: usize) -> Vec<(bool, u64, Option<Duration>)> {
        let clock = measure::Clock {
            start: tokio::time::Instant::now(),
            start_ns: 1_000_000_000,
            warmup: plan.warmup,
        };
        let mut schedule =
            measure::Schedule::main(plan, p, clock, Arc::new(AtomicU64::new(0))).on_tokio_timer();
        let mut sent = Vec::new();
        while let Some(bytes) = schedule.next().await {
            sent.push(match payload::read(&bytes).unwrap() {
                payload::Stamp::Warmup => {
                    let decoded: prost_types::Struct = prost::Message::decode(bytes).unwrap();
                    let number = match decoded.fields["w"].kind {
                        Some(prost_types::value::Kind::NumberValue(n)) => n as u64,
                        _ => panic!("no number"),
                    };
                    (true, number, None)
                }
                payload::Stamp::Data { index, sent_ns } => (
                    false,
                    index,
                    Some(Duration::from_nanos(sent_ns - clock.start_ns)),
                ),
            });
        }
        sent
    }

    #[tokio::test(start_paused = true)]
    async fn paced_messages_carry_the_time_they_were_due_not_when_they_went_out() {
        let p = plan(&[
            "--msgs", "7", "--pubs", "3", "--rate", "10", "--warmup", "300ms",
        ])
        .unwrap();
        let ms = |n| Some(Duration::from_millis(n));
        // Publisher 1 of 3: warm-up messages 1 (of 0..3), then indices 1 and 4, due
        // at the warm-up's end plus index / rate.
        let started = tokio::time::Instant::now();
        assert_eq!(
            sent(&p, 1).await,
            [(true, 1, None), (false, 1, ms(400)), (false, 4, ms(700))]
        );
        assert_eq!(started.elapsed(), Duration::from_millis(700));
        // A publisher that starts late sends at once, but the stamps keep the schedule,
        // so the delay shows as latency.
        tokio::time::advance(Duration::from_secs(5)).await;
        let late = measure::Clock {
            start: started,
            start_ns: 1_000_000_000,
            warmup: p.warmup,
        };
        let mut schedule =
            measure::Schedule::main(&p, 2, late, Arc::new(AtomicU64::new(0))).on_tokio_timer();
        schedule.next().await; // warm-up
        let stamp = payload::read(&schedule.next().await.unwrap()).unwrap();
        assert_eq!(
            stamp,
            payload::Stamp::Data {
                index: 2,
                sent_ns: 1_000_000_000 + 500_000_000
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn publishers_share_the_indices() {
        let p = plan(&[
            "--msgs", "7", "--pubs", "3", "--rate", "1000", "--warmup", "0s",
        ])
        .unwrap();
        let mut all = Vec::new();
        for publisher in 0..3 {
            let indices: Vec<u64> = sent(&p, publisher).await.iter().map(|s| s.1).collect();
            all.push(indices);
        }
        assert_eq!(all, [vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    }

    #[tokio::test(start_paused = true)]
    async fn at_full_speed_the_warmup_lasts_its_time_and_stamps_are_real() {
        let p = plan(&["--msgs", "2", "--warmup", "0s"]).unwrap();
        let sent = sent(&p, 0).await;
        assert_eq!(
            sent.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
            [(false, 0), (false, 1)]
        );
        // The stamp is the real clock, not start + index / rate.
        assert!(sent[0].2.unwrap() > Duration::from_secs(1));
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
            (&["--duration", "1s"], "--duration"),
            (&["--spawn", "--rates", "10,0"], "--rates"),
            (&["--spawn", "--rates", "10", "--repeat", "0"], "--repeat"),
            (&["--stall-shared"], "--stall-shared"),
            (
                &["--stalled", "1", "--stall-shared", "--stall", "tcp"],
                "--stall grpc",
            ),
        ] {
            let err = plan(args).unwrap_err();
            assert!(err.contains(word), "{args:?}: {err}");
        }
        assert!(plan(&["--topic", "bench.my-run_1"]).is_ok());
    }
}
