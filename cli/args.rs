//! The command line: streamctl's subcommands and options, and the parsers for the
//! values that need more than clap's defaults (interval, `KEY=VALUE`).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
// Durations follow the daemon's rules: one parser, at most a year.
use streamhandler::duration::{parse_any as parse_duration, parse_positive as parse_interval};

use crate::client::{AccessArgs, Addr};

/// Drive streamd from a shell: start, stop and list its services, publish events and
/// follow the live event stream.
#[derive(Debug, Parser)]
#[command(name = "streamctl", version)]
pub struct Cli {
    /// streamd's address: `host:port`, an `http://` or `https://` URL, or
    /// `unix:/path` for a Unix socket.
    #[arg(
        long,
        global = true,
        env = "STREAMD_ADDR",
        default_value = "127.0.0.1:50051",
        value_name = "ADDR"
    )]
    pub addr: Addr,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start services by name, or every service with `all`.
    Start(StartArgs),
    /// Stop services by name, or every service with `all`.
    Stop(StopArgs),
    /// Show every service, its state and its counters.
    List,
    /// Show the nodes of the daemon's cluster: where each listens, its services, when it
    /// last reported.
    Nodes,
    /// A full-screen live view: each service's state, events per second, errors and
    /// restarts, the daemon's memory and CPU; keys start and stop services.
    Top,
    /// Show one service in full: its parameters and what it reports of itself.
    Show {
        /// The service.
        name: String,
    },
    /// Publish a JSON object as an event on a topic of your own.
    Publish(PublishArgs),
    /// Print events as they arrive, until Ctrl-C.
    Subscribe(SubscribeArgs),
    /// Measure the event stream: publish rate, delivered rate, latency and loss,
    /// optionally beside nats-server running the same workload.
    Bench(Box<BenchArgs>),
}

/// Arguments of `streamctl start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Services to start, or `all`.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,

    /// Tick interval for this run, e.g. `500ms` or `2s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Option<Duration>,

    /// Override a parameter for this run; may be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,

    /// Return as soon as the daemon has started it, without waiting up to 2s for the
    /// first step's outcome.
    #[arg(long, conflicts_with = "wait_healthy")]
    pub no_wait: bool,

    /// Exit 1 unless every service started has ended its first step well within 2s.
    #[arg(long)]
    pub wait_healthy: bool,
}

impl StartArgs {
    /// The `--set` overrides as the request's map; a repeated key keeps its last value.
    pub fn params(&self) -> HashMap<String, String> {
        self.set.iter().cloned().collect()
    }
}

/// Arguments of `streamctl stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Services to stop, or `all`.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Arguments of `streamctl publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic: letters, digits and `._-/:`, not a service's name.
    pub topic: String,
    /// The event's data: a JSON object, e.g. '{"temp": 21.5}'.
    pub json: String,
}

/// Arguments of `streamctl subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Topic names or glob patterns (`*`, `?`, `[abc]`); none means every topic.
    #[arg(value_name = "PATTERN")]
    pub topics: Vec<String>,

    /// Start with the latest event of each matching topic.
    #[arg(long)]
    pub last: bool,

    /// Bytes of events the daemon holds while this terminal is slower than they come,
    /// e.g. `64MiB` [default: the daemon's].
    #[arg(long, value_name = "SIZE", value_parser = streamhandler::config::parse_size)]
    pub buffer: Option<usize>,

    /// When the buffer is full: skip the oldest events (and say which), or end with
    /// an error after the events held.
    #[arg(long, value_enum, default_value_t = OnOverflow::Skip)]
    pub on_overflow: OnOverflow,

    /// How to print events.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// What a subscription does when the client falls a whole buffer behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOverflow {
    Skip,
    Close,
}

impl From<OnOverflow> for streamhandler::pb::OverflowPolicy {
    fn from(policy: OnOverflow) -> Self {
        match policy {
            OnOverflow::Skip => Self::Skip,
            OnOverflow::Close => Self::Close,
        }
    }
}

/// Arguments of `streamctl bench`. [`crate::bench::Plan`] checks them.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Subscribe streams reading the bench topic.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub subs: usize,

    /// Connections the streams share, round-robin; 0 gives each stream its own.
    #[arg(long, default_value_t = 0, value_name = "C")]
    pub conns: usize,

    /// Publishers, each on its own connection and in its own task.
    #[arg(long, default_value_t = 1, value_name = "P")]
    pub pubs: usize,

    /// Measured messages in total, shared among the publishers.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub msgs: u64,

    /// Payload size in bytes (the encoded Struct, which carries the send time).
    #[arg(long, default_value_t = 128, value_name = "BYTES")]
    pub size: usize,

    /// Messages per second over all publishers; 0 publishes as fast as possible.
    /// Latency counts from when each message was due, so a publisher that falls
    /// behind shows the delay.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub rate: u64,

    /// With a rate: publish for this long once warmed up (--msgs becomes rate × D).
    #[arg(long, value_name = "DURATION", value_parser = parse_interval, conflicts_with = "msgs")]
    pub duration: Option<Duration>,

    /// Publish at the same rate for this long before the measured part; those
    /// messages count nowhere.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Also run a quiet topic: one subscriber on its own connection and a publisher of
    /// its own at R/s while the main topic runs; reported on its own.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub quiet_rate: u64,

    /// Extra subscribers that read the warm-up, then stop reading until the end (an
    /// isolation test); they are left out of the figures.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub stalled: usize,

    /// How stalled subscribers stop: `grpc` holds the stream unread, `tcp` stops
    /// reading the socket.
    #[arg(long, value_enum, default_value_t = StallLevel::Grpc, value_name = "LEVEL")]
    pub stall: StallLevel,

    /// Stalled streamd streams share their connections with live subscribers.
    #[arg(long)]
    pub stall_shared: bool,

    /// Keep every stream open this long after the run, e.g. to measure the daemon's
    /// memory per idle stream.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub hold: Option<Duration>,

    /// Give up on events not delivered by then (default: the warm-up and the expected
    /// publishing time plus 10s); what did not arrive counts as lost.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub timeout: Option<Duration>,

    /// The topic (NATS subject) to use; default: a fresh `bench.*` one per run.
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,

    /// Also run the same workload against nats-server: the one at URL, or with --spawn
    /// a fresh one per run.
    #[arg(long, value_name = "URL", num_args = 0..=1)]
    pub against_nats: Option<Option<String>>,

    /// Keep async-nats's default subscription buffer (64Ki messages, dropped past
    /// that) instead of one that holds the whole run.
    #[arg(long)]
    pub nats_default_client: bool,

    /// Subscribe at this daemon instead of --addr: another node of the same cluster,
    /// so that every event crosses from one node to the other.
    #[arg(long, value_name = "ADDR", conflicts_with = "spawn")]
    pub subscribe_addr: Option<Addr>,

    /// With --subscribe-addr: the cluster's NATS server (nats://HOST:PORT). Its CPU
    /// and memory count with both nodes', as the cost of an event crossing nodes.
    #[arg(long, value_name = "URL", requires = "subscribe_addr")]
    pub cluster_nats: Option<String>,

    /// Start a fresh streamd (and nats-server) for each run, and stop it after.
    #[arg(long)]
    pub spawn: bool,

    /// The streamd that --spawn starts [default: streamd beside streamctl].
    #[arg(long, value_name = "PATH", requires = "spawn")]
    pub streamd_bin: Option<PathBuf>,

    /// The nats-server that --spawn starts [default: nats-server on PATH, else
    /// /usr/sbin/nats-server].
    #[arg(long, value_name = "PATH", requires = "spawn")]
    pub nats_server_bin: Option<PathBuf>,

    /// A ladder of rates, climbed in order with fresh servers per run until a system
    /// no longer sustains a rate (any loss, a p99 at --sustained-p99 or more, or an
    /// incomplete run).
    #[arg(long, value_name = "R1,R2,...", value_delimiter = ',', num_args = 1.., requires = "spawn", conflicts_with_all = ["rate", "msgs"])]
    pub rates: Vec<u64>,

    /// The p99 latency under which a ladder's run sustains its rate.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration, requires = "spawn")]
    pub sustained_p99: Duration,

    /// Runs of each system at each rate, alternating which goes first [default: 2 in a
    /// ladder]. Without --rates: the one workload N times each, as a ladder of one step.
    #[arg(long, value_name = "N", requires = "spawn")]
    pub repeat: Option<usize>,

    /// Append each run to FILE as a JSON line (default: print them).
    #[arg(long, value_name = "FILE", requires = "spawn")]
    pub json_lines: Option<PathBuf>,

    /// Instead of the pub/sub workload, time N start/stop cycles of --service and the
    /// first event after each start.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub control: usize,

    /// Instead of the pub/sub workload, publish N events each to a topic never used
    /// before, with nobody subscribed, and read the daemon's memory as it goes.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub names: u64,

    /// The service the control bench starts and stops.
    #[arg(long, value_name = "NAME", default_value = "streamer")]
    pub service: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How a stalled subscriber stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StallLevel {
    /// The stream (NATS: the subscription) is held but never read; the connection is
    /// still read.
    Grpc,
    /// The client stops reading its socket.
    Tcp,
}

impl StallLevel {
    /// The name `--stall` takes.
    pub fn name(self) -> &'static str {
        match self {
            StallLevel::Grpc => "grpc",
            StallLevel::Tcp => "tcp",
        }
    }
}

/// The format `subscribe` prints events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One human-readable line per event.
    Text,
    /// One proto3 JSON object per line, as grpcurl prints them.
    Json,
}

/// Which services a `start` or `stop` applies to.
#[derive(Debug, PartialEq, Eq)]
pub enum Targets<'a> {
    /// Every service ListServices shows.
    All,
    /// These, in the order given.
    Names(&'a [String]),
}

/// Reads `NAME...` as either the lone word `all` or a list of names.
pub fn targets(names: &[String]) -> Result<Targets<'_>, String> {
    match names {
        [only] if only == "all" => Ok(Targets::All),
        _ if names.iter().any(|name| name == "all") => {
            Err("`all` cannot be combined with service names".into())
        }
        _ => Ok(Targets::Names(names)),
    }
}

/// Parses `KEY=VALUE`; the value may be empty and may itself contain `=`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("`{s}` has no key before `=`")),
        Some((key, value)) => Ok((key.to_string(), value.to_string())),
        None => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_value_pairs() {
        assert_eq!(parse_key_value("n=10"), Ok(("n".into(), "10".into())));
        assert_eq!(parse_key_value("q=a=b"), Ok(("q".into(), "a=b".into())));
        assert_eq!(parse_key_value("empty="), Ok(("empty".into(), "".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn set_without_equals_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["streamctl", "start", "streamer", "--set", "x"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn start_collects_interval_and_params() {
        let cli = Cli::try_parse_from([
            "streamctl",
            "start",
            "streamer",
            "--interval",
            "500ms",
            "--set",
            "series=3",
            "--set",
            "series=4",
            "--set",
            "seed=1",
        ])
        .unwrap();
        let Command::Start(args) = cli.command else {
            panic!("not start");
        };
        assert_eq!(args.interval, Some(Duration::from_millis(500)));
        let params = args.params();
        assert_eq!(params.len(), 2);
        assert_eq!(params["series"], "4");
        assert_eq!(params["seed"], "1");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("300000000000y").is_err());
    }

    #[test]
    fn addresses() {
        let addr: Addr = "127.0.0.1:50051".parse().unwrap();
        assert_eq!(addr.uri, "http://127.0.0.1:50051");
        assert_eq!(addr.display, "127.0.0.1:50051");
        let addr: Addr = "http://localhost:9000/".parse().unwrap();
        assert_eq!(addr.uri, "http://localhost:9000");
        let addr: Addr = "[::1]:50051".parse().unwrap();
        assert_eq!(addr.uri, "http://[::1]:50051");
        let addr: Addr = "https://example.com:443".parse().unwrap();
        assert_eq!(addr.uri, "https://example.com:443");
        let addr: Addr = "unix:/run/streamd.sock".parse().unwrap();
        assert_eq!(addr.uri, "unix:/run/streamd.sock");
        assert!("unix:".parse::<Addr>().is_err());
        assert!("ftp://example.com".parse::<Addr>().is_err());
        assert!("".parse::<Addr>().is_err());
    }

    #[test]
    fn all_stands_alone() {
        let all = vec!["all".to_string()];
        assert_eq!(targets(&all), Ok(Targets::All));
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(targets(&names), Ok(Targets::Names(&names)));
        let mixed = vec!["a".to_string(), "all".to_string()];
        assert!(targets(&mixed).is_err());
    }
}
