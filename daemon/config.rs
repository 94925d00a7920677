//! The daemon's configuration: built-in defaults, changed by an optional TOML file.
//!
//! ```toml
//! start = ["streamer", "system"]      # services to start at boot
//!
//! [supervisor]
//! max_restarts = 5                    # restarts allowed within restart_window
//! restart_window = "60s"
//! initial_backoff = "200ms"
//! max_backoff = "30s"
//! stop_timeout = "5s"
//! min_client_interval = "10ms"        # the shortest interval a client may ask for
//!
//! [bus]
//! subscriber_buffer = "64MiB"         # events held for a slow subscriber
//! max_subscriber_buffer = "256MiB"    # the most a subscriber may ask for
//! max_buffered = "4GiB"               # all subscribers together [default: RAM / 4]
//! topic_retention = "10m"             # clients' topics unused this long are forgotten
//! max_topics = 10000                  # clients' topics kept at most
//! max_topic_bytes = "64MiB"           # bytes of their latest events kept at most
//!
//! [services.streamer]                 # a built-in service: change its interval
//! interval = "1s"
//!
//! [services.sonnets]                  # another service of an existing kind
//! kind = "reader"
//! interval = "10s"
//! params = { dir = "/srv/sonnets" }
//! ```
//!
//! A bad file is refused as a whole, with its path, the line and the key at fault.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    bus,
    cluster::ClusterSettings,
    duration,
    secret::expand_env,
    services::{self, Environment, Params},
    supervisor::{self, RestartPolicy, ServiceSpec, Settings},
};

/// Everything the daemon is configured with.
#[derive(Debug)]
pub struct Config {
    /// Every service, built-in and added, in name order.
    pub services: Vec<ServiceSpec>,
    /// Services to start at boot.
    pub start: Vec<String>,
    pub settings: Settings,
    pub bus: bus::Settings,
    pub http: HttpSettings,
    /// The `[cluster]` section: the cluster's NATS and this node's name, when set.
    pub cluster: ClusterFileSettings,
}

/// The `[cluster]` section; flags override each key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFileSettings {
    pub nats: Option<String>,
    pub node_id: Option<String>,
    pub credentials: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The `[http]` section: where the dashboard is served, and by which further names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpSettings {
    pub listen: Option<SocketAddr>,
    pub hosts: Vec<String>,
}

impl Config {
    /// The built-in services with their defaults, nothing started at boot.
    pub fn builtin() -> Self {
        Self {
            services: services::KINDS
                .iter()
                .map(|kind| ServiceSpec {
                    name: kind.name.to_owned(),
                    kind,
                    interval: kind.default_interval,
                    params: Params::new(),
                    allow_override: Vec::new(),
                })
                .collect(),
            start: Vec::new(),
            settings: Settings::default(),
            bus: bus::Settings::default(),
            http: HttpSettings::default(),
            cluster: ClusterFileSettings::default(),
        }
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, env).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: e.span.map(|span| line_of(&text, span.start)),
            key: e.key,
            message: e.message,
        })
    }

    fn parse(text: &str, env: &Environment) -> Result<Self, Problem> {
        let file: File = toml::from_str(text).map_err(|e| Problem {
            span: e.span(),
            key: String::new(),
            message: e.message().trim_end().to_owned(),
        })?;
        let mut config = Self::builtin();
        apply_supervisor(&file.supervisor, &mut config.settings)?;
        apply_bus(&file.bus, &mut config.bus)?;
        config.http = http_settings(&file.http)?;
        config.cluster = cluster_settings(&file.cluster)?;
        // Keyed by name, so that loading stays linear in the number of services.
        let mut specs: BTreeMap<String, ServiceSpec> = std::mem::take(&mut config.services)
            .into_iter()
            .map(|spec| (spec.name.clone(), spec))
            .collect();
        for (name, service) in &file.services {
            apply_service(name, service, &mut specs, env)?;
        }
        for name in &file.start {
            if !specs.contains_key(name.get_ref()) {
                return Err(Problem::at(
                    name,
                    "start",
                    format!("no service named {:?}", name.get_ref()),
                ));
            }
            config.start.push(name.get_ref().clone());
        }
        config.services = specs.into_values().collect();
        Ok(config)
    }
}

fn apply_supervisor(file: &SupervisorFile, settings: &mut Settings) -> Result<(), Problem> {
    let restart: &mut RestartPolicy = &mut settings.restart;
    if let Some(n) = &file.max_restarts {
        restart.max_restarts = *n.get_ref();
    }
    let durations = [
        (&file.restart_window, "restart_window", &mut restart.window),
        (
            &file.initial_backoff,
            "initial_backoff",
            &mut restart.initial_backoff,
        ),
        (&file.max_backoff, "max_backoff", &mut restart.max_backoff),
        (
            &file.stop_timeout,
            "stop_timeout",
            &mut settings.stop_timeout,
        ),
        (
            &file.min_client_interval,
            "min_client_interval",
            &mut settings.min_client_interval,
        ),
    ];
    for (value, key, target) in durations {
        if let Some(value) = value {
            *target = positive_duration(value, &format!("supervisor.{key}"))?;
        }
    }
    Ok(())
}

fn apply_bus(file: &BusFile, settings: &mut bus::Settings) -> Result<(), Problem> {
    let sizes = [
        (
            &file.subscriber_buffer,
            "subscriber_buffer",
            &mut settings.subscriber_buffer,
        ),
        (
            &file.max_subscriber_buffer,
            "max_subscriber_buffer",
            &mut settings.max_subscriber_buffer,
        ),
        (
            &file.max_buffered,
            "max_buffered",
            &mut settings.max_buffered,
        ),
        (
            &file.max_topic_bytes,
            "max_topic_bytes",
            &mut settings.max_topic_bytes,
        ),
    ];
    for (value, key, target) in sizes {
        if let Some(value) = value {
            *target = parse_size(value.get_ref())
                .map_err(|message| Problem::at(value, &format!("bus.{key}"), message))?;
        }
    }
    if let Some(value) = &file.topic_retention {
        settings.topic_retention = positive_duration(value, "bus.topic_retention")?;
    }
    if let Some(value) = &file.max_topics {
        settings.max_topics = *value.get_ref();
    }
    settings.check().map_err(|(key, message)| {
        let span = match key {
            "subscriber_buffer" => file.subscriber_buffer.as_ref().map(Spanned::span),
            "max_subscriber_buffer" => file.max_subscriber_buffer.as_ref().map(Spanned::span),
            "max_buffered" => file.max_buffered.as_ref().map(Spanned::span),
            "max_topics" => file.max_topics.as_ref().map(Spanned::span),
            _ => None,
        };
        Problem {
            span,
            key: format!("bus.{key}"),
            message,
        }
    })
}

fn http_settings(file: &HttpFile) -> Result<HttpSettings, Problem> {
    let listen = file
        .listen
        .as_ref()
        .map(|value| {
            value.get_ref().parse().map_err(|_| {
                Problem::at(
                    value,
                    "http.listen",
                    "must be IP:PORT, e.g. \"127.0.0.1:8080\"".into(),
                )
            })
        })
        .transpose()?;
    let hosts = file
        .hosts
        .iter()
        .map(|host| checked(host, "http.hosts", check_host_name))
        .collect::<Result<_, _>>()?;
    Ok(HttpSettings { listen, hosts })
}

impl ClusterFileSettings {
    /// How to join the cluster, if the node is in one.
    pub fn resolve(&self) -> Result<Option<ClusterSettings>, String> {
        let client_certificate = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err("--cluster-tls-cert and --cluster-tls-key go together".into()),
        };
        match (&self.nats, &self.node_id) {
            (None, None) => Ok(None),
            (Some(nats), Some(node_id)) => Ok(Some(ClusterSettings {
                nats: nats.clone(),
                node_id: node_id.clone(),
                credentials: self.credentials.clone(),
                tls_ca: self.tls_ca.clone(),
                client_certificate,
            })),
            (Some(_), None) => {
                Err("--cluster needs --node-id: this node's name in the cluster".into())
            }
            (None, Some(_)) => Err("--node-id is for a cluster: give --cluster too".into()),
        }
    }
}

fn cluster_settings(file: &ClusterFile) -> Result<ClusterFileSettings, Problem> {
    let nats = file.nats.as_ref();
    let node_id = file.node_id.as_ref();
    let path = |value: &Option<Spanned<String>>| value.as_ref().map(|v| PathBuf::from(v.get_ref()));
    Ok(ClusterFileSettings {
        nats: nats
            .map(|value| checked(value, "cluster.nats", check_nats_url))
            .transpose()?,
        node_id: node_id
            .map(|value| checked(value, "cluster.node_id", check_node_id))
            .transpose()?,
        credentials: path(&file.credentials),
        tls_ca: path(&file.tls_ca),
        tls_cert: path(&file.tls_cert),
        tls_key: path(&file.tls_key),
    })
}

/// The text the file gives for `key`, if `check` passes it.
fn checked(
    value: &Spanned<String>,
    key: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<String, Problem> {
    check(value.get_ref())
        .map(|()| value.get_ref().clone())
        .map_err(|message| Problem::at(value, key, message))
}

/// The cluster's NATS servers: `nats://HOST:PORT` (or `tls://`), comma-separated.
pub fn check_nats_url(urls: &str) -> Result<(), String> {
    for url in urls.split(',') {
        url.trim().parse::<async_nats::ServerAddr>().map_err(|e| {
            format!("{url:?} is not a NATS server address ({e}); e.g. \"nats://127.0.0.1:4222\"")
        })?;
    }
    Ok(())
}

/// A node's name: 1 to 64 letters, digits, `-` and `_`, so that it can stand in a NATS
/// subject and a key/value key.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} must be 1 to 64 letters, digits, '-' and '_'",
            crate::topic::quoted(id)
        ))
    }
}

/// A name by which the dashboard is reached, as it appears in a URL without its port.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a host name (letters, digits, `-` and `.`, without a port)"
        ))
    }
}

/// Parses a size such as "16MiB", "512 KiB" or "1000000".
pub fn parse_size(text: &str) -> Result<usize, String> {
    text.parse::<bytesize::ByteSize>()
        .ok()
        .and_then(|size| usize::try_from(size.as_u64()).ok())
        .ok_or_else(|| format!("{text:?} is not a size like \"16MiB\" or \"512KiB\""))
}

fn apply_service(
    name: &Spanned<String>,
    file: &ServiceFile,
    specs: &mut BTreeMap<String, ServiceSpec>,
    env: &Environment,
) -> Result<(), Problem> {
    if let Err(message) = check_name(name.get_ref()) {
        return Err(Problem::at(name, "services", message));
    }
    let key = format!("services.{}", name.get_ref());
    let existing = specs.get(name.get_ref()).map(|spec| spec.kind);
    let kind = match (&file.kind, existing) {
        (Some(kind), Some(builtin)) if *kind.get_ref() != builtin.name => {
            return Err(Problem::at(
                kind,
                &format!("{key}.kind"),
                format!(
                    "{:?} is the built-in {} service; give another kind's service another name",
                    name.get_ref(),
                    builtin.name
                ),
            ));
        }
        (_, Some(builtin)) => builtin,
        (Some(kind), None) => services::kind(kind.get_ref()).ok_or_else(|| {
            let known: Vec<_> = services::kinds().map(|k| k.name).collect();
            Problem::at(
                kind,
                &format!("{key}.kind"),
                format!(
                    "unknown kind {:?}; kinds: {}",
                    kind.get_ref(),
                    known.join(", ")
                ),
            )
        })?,
        (None, None) => {
            return Err(Problem::at(
                name,
                &key,
                "a new service needs a `kind`".to_owned(),
            ));
        }
    };
    let interval = match &file.interval {
        Some(value) => positive_duration(value, &format!("{key}.interval"))?,
        None => kind.default_interval,
    };
    let mut params = Params::new();
    for (param, value) in &file.params {
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                value.get_ref().to_string()
            }
            _ => {
                return Err(Problem::at(
                    value,
                    &format!("{key}.params.{}", param.get_ref()),
                    "must be a string, number or boolean".to_owned(),
                ));
            }
        };
        if let Err(e) = supervisor::check_param(param.get_ref(), &text) {
            return Err(Problem::at(
                value,
                &format!("{key}.params.{}", e.key),
                e.message,
            ));
        }
        // `${VAR}` in a credential is read when the service starts (the variable may
        // be set by then); here only its form is checked.
        let credential = kind
            .param(param.get_ref())
            .is_some_and(|p| p.authority == services::Authority::Credential);
        if credential && let Err(e) = expand_env(&text, |_| Some(String::new())) {
            return Err(Problem::at(
                value,
                &format!("{key}.params.{}", param.get_ref()),
                e.to_string(),
            ));
        }
        params.insert(param.get_ref().clone(), text);
    }
    if let Err(services::Build::Param(e)) = kind.build(&params, env) {
        let span = file
            .params
            .iter()
            .find(|(k, _)| *k.get_ref() == e.key)
            .map(|(k, _)| k.span());
        return Err(Problem {
            span,
            key: format!("{key}.params.{}", e.key),
            message: e.message,
        });
    }
    let mut allow_override = Vec::new();
    for allowed in &file.allow_override {
        let name = allowed.get_ref();
        // A family's own name (`header.*`) names each of its members.
        if kind.param(name).is_none() {
            let known: Vec<_> = kind.params.iter().map(|p| p.name).collect();
            return Err(Problem::at(
                allowed,
                &format!("{key}.allow_override"),
                format!(
                    "{name:?} is not a parameter of {}; it takes {}",
                    kind.name,
                    known.join(", ")
                ),
            ));
        }
        allow_override.push(name.clone());
    }
    let spec = ServiceSpec {
        name: name.get_ref().clone(),
        kind,
        interval,
        params,
        allow_override,
    };
    specs.insert(spec.name.clone(), spec);
    Ok(())
}

/// Service names are topics too, so they follow the topic rules.
pub fn check_name(name: &str) -> Result<(), String> {
    crate::topic::check_name(name)
}

fn positive_duration(value: &Spanned<String>, key: &str) -> Result<Duration, Problem> {
    duration::parse(value.get_ref(), duration::Zero::Refused)
        .map_err(|message| Problem::at(value, key, message))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A problem found while parsing, before the file's path is known.
struct Problem {
    span: Option<std::ops::Range<usize>>,
    key: String,
    message: String,
}

impl Problem {
    fn at<T>(value: &Spanned<T>, key: &str, message: String) -> Self {
        Self {
            span: Some(value.span()),
            key: key.to_owned(),
            message,
        }
    }
}

/// A configuration file that was refused.
#[derive(Debug, PartialEq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    /// The dotted key at fault; empty when the file as a whole is.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    start: Vec<Spanned<String>>,
    #[serde(default)]
    supervisor: SupervisorFile,
    #[serde(default)]
    bus: BusFile,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    cluster: ClusterFile,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, ServiceFile>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorFile {
    max_restarts: Option<Spanned<u32>>,
    restart_window: Option<Spanned<String>>,
    initial_backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<String>>,
    min_client_interval: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusFile {
    subscriber_buffer: Option<Spanned<String>>,
    max_subscriber_buffer: Option<Spanned<String>>,
    max_buffered: Option<Spanned<String>>,
    topic_retention: Option<Spanned<String>>,
    max_topics: Option<Spanned<usize>>,
    max_topic_bytes: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    nats: Option<Spanned<String>>,
    node_id: Option<Spanned<String>>,
    credentials: Option<Spanned<String>>,
    tls_ca: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    kind: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// Operator's parameters a client's StartService may set nonetheless.
    #[serde(default)]
    allow_override: Vec<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Lines of a config file built from its own keys and values, some well formed, some
    /// not, so that the checks past TOML parsing run.
    fn near_valid() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            prop::sample::select(vec![
                "[supervisor]",
                "[bus]",
                "[services.streamer]",
                "[services.x]",
                "[services.x.params]",
                "[services.leaderboard.params]",
            ])
            .prop_map(str::to_owned),
            (
                prop::sample::select(vec![
                    "kind",
                    "interval",
                    "start",
                    "max_restarts",
                    "stop_timeout",
                    "subscriber_buffer",
                    "topic_retention",
                    "max_topics",
                    "flush_interval",
                    "dir",
                    "url",
                ]),
                prop::sample::select(vec![
                    "\"1s\"",
                    "\"300000000000y\"",
                    "\"streamer\"",
                    "\"http\"",
                    "[\"x\"]",
                    "18446744073709551615",
                    "-1",
                    "0",
                    "\"64MiB\"",
                    "\"\"",
                    "{}",
                ]),
            )
                .prop_map(|(key, value)| format!("{key} = {value}")),
            "\\PC{0,40}",
        ];
        prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
    }

    proptest! {
        // Cases kept few enough to run in seconds; PROPTEST_CASES=100000 runs them longer.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
        ))]

        #[test]
        fn any_text_is_a_config_or_a_clear_error(text in "\\PC{0,200}") {
            if let Err(e) = Config::parse(&text, &env()) {
                prop_assert!(!e.message.is_empty());
            }
        }

        #[test]
        fn near_valid_configs_are_accepted_or_refused_with_a_message(text in near_valid()) {
            if let Err(e) = Config::parse(&text, &env()) {
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    fn env() -> Environment {
        Environment::new(PathBuf::from("/nonexistent"), None).unwrap()
    }

    fn error(text: &str) -> (Option<usize>, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streamd.toml");
        std::fs::write(&path, text).unwrap();
        let e = Config::load(&path, &env()).unwrap_err();
        assert_eq!(e.path, path);
        (e.line, e.key, e.message)
    }

    #[test]
    fn no_file_means_every_card_stopped() {
        let config = Config::builtin();
        let names: Vec<_> = config.services.iter().map(|s| s.name.as_str()).collect();
        let kinds: Vec<_> = services::KINDS.iter().map(|k| k.name).collect();
        assert_eq!(names, kinds);
        assert_eq!(names.len(), 10, "nine cards and the system card");
        assert!(config.start.is_empty());
    }

    #[test]
    fn a_file_changes_intervals_adds_instances_and_names_boot_services() {
        let text = r#"
            start = ["poems", "streamer"]
            [supervisor]
            max_restarts = 2
            stop_timeout = "1500ms"
            min_client_interval = "1ms"
            [services.streamer]
            interval = "250ms"
            [services.poems]
            kind = "reader"
            interval = "10s"
            params = { dir = "/srv/poems" }
        "#;
        let config = Config::parse(text, &env()).ok().unwrap();
        assert_eq!(config.start, ["poems", "streamer"]);
        assert_eq!(config.settings.restart.max_restarts, 2);
        assert_eq!(config.settings.stop_timeout, Duration::from_millis(1500));
        assert_eq!(
            config.settings.min_client_interval,
            Duration::from_millis(1)
        );
        let find = |n: &str| config.services.iter().find(|s| s.name == n).unwrap();
        assert_eq!(find("streamer").interval, Duration::from_millis(250));
        assert_eq!(find("poems").kind.name, "reader");
        assert_eq!(find("poems").params["dir"], "/srv/poems");
        assert_eq!(find("reader").params, Params::new());
    }

    #[test]
    fn bad_files_name_line_and_key() {
        let (line, key, message) = error("[services.streamer]\ninterval = \"fast\"\n");
        assert_eq!(
            (line, key.as_str()),
            (Some(2), "services.streamer.interval")
        );
        assert_eq!(
            message,
            "invalid duration \"fast\": expected a number and a unit, like 500ms or 2s"
        );

        let (line, _, message) = error("\n[services.streamer]\nintervall = \"1s\"\n");
        assert_eq!(line, Some(3));
        assert!(message.contains("intervall"), "{message}");

        let (line, key, message) = error("[services.x]\nkind = \"nope\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "services.x.kind"));
        assert!(message.contains("streamer"), "{message}");

        let (line, key, _) = error("[services.x]\ninterval = \"1s\"\n");
        assert_eq!((line, key.as_str()), (Some(1), "services.x"));

        let (line, key, _) = error("start = [\"streamer\",\n  \"ghost\"]\n");
        assert_eq!((line, key.as_str()), (Some(2), "start"));

        let (line, key, message) = error("[services.streamer.params]\n\nbogus = 1\n");
        assert_eq!(
            (line, key.as_str()),
            (Some(3), "services.streamer.params.bogus")
        );
        assert!(message.contains("unknown parameter"), "{message}");

        let (line, key, _) = error("[supervisor]\nstop_timeout = \"0s\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "supervisor.stop_timeout"));

        let (line, _, message) = error("start = [");
        assert!(line.is_some(), "{message}");

        let (line, key, message) = error("[bus]\nsubscriber_buffer = \"lots\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "bus.subscriber_buffer"));
        assert!(message.contains("\"lots\""), "{message}");

        let (line, key, message) = error("[bus]\n\nsubscriber_buffer = \"1KiB\"\n");
        assert_eq!((line, key.as_str()), (Some(3), "bus.subscriber_buffer"));
        assert!(message.contains("65600"), "{message}");

        let (line, key, _) = error("[bus]\nmax_topics = 0\n");
        assert_eq!((line, key.as_str()), (Some(2), "bus.max_topics"));
    }

    #[test]
    fn allow_override_names_parameters_of_the_service_s_kind() {
        let (line, key, message) =
            error("[services.aq]\n\nallow_override = [\"url\", \"bogus\"]\n");
        assert_eq!(
            (line, key.as_str()),
            (Some(3), "services.aq.allow_override")
        );
        assert!(
            message.contains("\"bogus\" is not a parameter of aq"),
            "{message}"
        );

        let text = r#"
            [services.prices]
            kind = "http"
            params = { url = "http://h/" }
            allow_override = ["header.*", "method"]
        "#;
        let config = Config::parse(text, &env()).ok().unwrap();
        let prices = config.services.iter().find(|s| s.name == "prices").unwrap();
        assert_eq!(prices.allow_override, ["header.*", "method"]);
        let aq = config.services.iter().find(|s| s.name == "aq").unwrap();
        assert!(aq.allow_override.is_empty(), "nothing by default");

        let (line, key, message) = error(
            "[services.p]\nkind = \"http\"\nparams = { url = \"http://h/\", \"header.A\" = \"${X\" }\n",
        );
        assert_eq!(
            (line, key.as_str()),
            (Some(3), "services.p.params.header.A")
        );
        assert!(message.contains("closing"), "{message}");
    }

    #[test]
    fn the_bus_section_sets_buffers_and_topic_limits() {
        let text = r#"
            [bus]
            subscriber_buffer = "1MiB"
            max_subscriber_buffer = "2 MiB"
            max_buffered = "3MiB"
            topic_retention = "30s"
            max_topics = 50
            max_topic_bytes = "100KiB"
        "#;
        let bus = Config::parse(text, &env()).ok().unwrap().bus;
        assert_eq!(
            bus,
            bus::Settings {
                subscriber_buffer: 1 << 20,
                max_subscriber_buffer: 2 << 20,
                max_buffered: 3 << 20,
                topic_retention: Duration::from_secs(30),
                max_topics: 50,
                max_topic_bytes: 100 << 10,
            }
        );
    }

    #[test]
    fn the_cluster_section_names_the_nats_servers_and_the_node() {
        let text = "[cluster]\nnats = \"tls://127.0.0.1:4222\"\nnode_id = \"a-1\"\n\
                    credentials = \"/etc/streamd/node.creds\"\ntls_ca = \"ca.pem\"\n";
        let cluster = Config::parse(text, &env()).ok().unwrap().cluster;
        assert_eq!(
            cluster,
            ClusterFileSettings {
                nats: Some("tls://127.0.0.1:4222".into()),
                node_id: Some("a-1".into()),
                credentials: Some("/etc/streamd/node.creds".into()),
                tls_ca: Some("ca.pem".into()),
                tls_cert: None,
                tls_key: None,
            }
        );
        let resolved = cluster.resolve().unwrap().unwrap();
        assert_eq!(resolved.client_certificate, None);
        let half = ClusterFileSettings {
            tls_cert: Some("client.pem".into()),
            ..cluster
        };
        assert!(half.resolve().unwrap_err().contains("--cluster-tls-key"));
        let (line, key, message) = error("[cluster]\nnode_id = \"a.b\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "cluster.node_id"));
        assert!(message.contains("letters, digits"), "{message}");
        let (line, key, _) = error("[cluster]\n\nnats = \"http://127.0.0.1:4222\"\n");
        assert_eq!((line, key.as_str()), (Some(3), "cluster.nats"));
    }

    #[test]
    fn the_http_section_sets_the_dashboard_address_and_names() {
        let text = "[http]\nlisten = \"127.0.0.1:8080\"\nhosts = [\"dash.example\"]\n";
        let http = Config::parse(text, &env()).ok().unwrap().http;
        assert_eq!(
            http,
            HttpSettings {
                listen: Some("127.0.0.1:8080".parse().unwrap()),
                hosts: vec!["dash.example".into()],
            }
        );
        let (line, key, message) = error("[http]\nlisten = \"localhost\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "http.listen"));
        assert!(message.contains("IP:PORT"), "{message}");
        let (line, key, message) = error("[http]\nhosts = [\"a:80\"]\n");
        assert_eq!((line, key.as_str()), (Some(2), "http.hosts"));
        assert!(message.contains("without a port"), "{message}");
    }

    #[test]
    fn an_unreadable_file_says_so() {
        let e = Config::load(Path::new("/nonexistent/streamd.toml"), &env()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/streamd.toml: cannot read"),
            "{e}"
        );
    }
}
