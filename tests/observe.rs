//! Looking at the running daemon from outside: its log as JSON lines, each saying
//! which service or RPC it came from.

use std::time::{Duration, Instant};

use serde_json::Value;
use streamhandler::pb;

use crate::harness::{Daemon, Events, PATIENCE, crashing_feed, start_request};

/// Starts `feed` and waits until it has failed.
async fn until_failed(daemon: &Daemon) {
    let mut client = daemon.client().await;
    client
        .start_service(start_request("feed", 100, &[]))
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while daemon.service("feed").await.state() != pb::ServiceState::Failed {
        assert!(
            Instant::now() < deadline,
            "feed never failed:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `slugs` polling a port nothing listens on (9), so that every step fails, and
/// waits until the log says so.
async fn start_failing_slugs(daemon: &Daemon) {
    let failing = start_request("slugs", 50, &[("url", "http://127.0.0.1:9/")]);
    daemon.client().await.start_service(failing).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !daemon.log().contains("step failed") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a daemon with the crashing feed: `feed` failed, `streamer` running every
/// `streamer_ms`, and `slugs` running with every step failing.
async fn one_failed_one_running_one_failing_steps(daemon: &Daemon, streamer_ms: u64) {
    until_failed(daemon).await;
    daemon
        .client()
        .await
        .start_service(start_request("streamer", streamer_ms, &[]))
        .await
        .unwrap();
    start_failing_slugs(daemon).await;
}

/// The daemon's log lines, each parsed as a JSON object.
fn json_lines(daemon: &Daemon) -> Vec<Value> {
    let log = daemon.log();
    log.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            for key in ["timestamp", "level", "target"] {
                assert!(value[key].is_string(), "no {key}: {line}");
            }
            value
        })
        .collect()
}

fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_naming_the_service_or_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let config = crashing_feed(dir.path()).await;
    let config = config.to_str().unwrap();
    let daemon = Daemon::start_with(&["--log-format", "json", "--config", config]);
    until_failed(&daemon).await;
    let mut client = daemon.client().await;
    start_failing_slugs(&daemon).await;
    let stop = pb::StopServiceRequest {
        name: "slugs".into(),
    };
    client.stop_service(stop).await.unwrap();

    let lines = json_lines(&daemon);
    let failed = lines
        .iter()
        .find(|l| message(l).starts_with("step failed"))
        .unwrap();
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["span"]["name"], "service");
    assert_eq!(failed["span"]["service"], "slugs");
    let started = lines
        .iter()
        .find(|l| message(l) == "started" && l["service"] == "slugs")
        .unwrap();
    assert_eq!(started["service"], "slugs");
    assert_eq!(started["span"]["name"], "rpc");
    assert_eq!(started["span"]["method"], "StartService");
    assert!(lines.iter().any(|l| message(l) == "stopped"));
    let crashes: Vec<_> = lines
        .iter()
        .filter(|l| message(l) == "crashed; restarting")
        .collect();
    assert_eq!(crashes.len(), 2, "{lines:?}");
    for crash in crashes {
        assert_eq!(crash["level"], "WARN");
        assert_eq!(crash["span"]["service"], "feed");
        assert!(
            crash["reason"].as_str().unwrap().contains("HTTP 404"),
            "{crash}"
        );
    }
    let failed = lines.iter().find(|l| message(l) == "failed").unwrap();
    assert_eq!(failed["level"], "ERROR");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("crashed 3 times"),
        "{failed}"
    );
    assert_eq!(failed["span"]["service"], "feed");
}

/// One sample of a scrape, as the Prometheus client library's parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    /// Its family's type: counter, gauge, histogram.
    kind: String,
    labels: Value,
    value: f64,
}

/// Scrapes `/metrics` at the dashboard address `url`, asking for OpenMetrics as
/// Prometheus does, or for nothing in particular as curl does, and parses the answer
/// with the Prometheus client library's parser of that format.
async fn scrape(python: &str, url: &str, open_metrics: bool) -> Vec<Sample> {
    let mut request = reqwest::Client::new().get(format!("{url}metrics"));
    if open_metrics {
        request = request.header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        );
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let (expected, format) = match open_metrics {
        true => ("application/openmetrics-text; version=1.0.0", "openmetrics"),
        false => ("text/plain; version=0.0.4", "text"),
    };
    assert!(kind.starts_with(expected), "{kind}");
    let text = response.text().await.unwrap();
    let mut parser = tokio::process::Command::new(python)
        .args(["tests/python/scrape.py", format])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = parser.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(PATIENCE, parser.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the parser refused it: {stderr}\n{text}"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let sample: Value = serde_json::from_str(line).unwrap();
            Sample {
                name: sample["name"].as_str().unwrap().to_owned(),
                kind: sample["type"].as_str().unwrap().to_owned(),
                labels: sample["labels"].clone(),
                value: sample["value"].as_f64().unwrap(),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
        .map(|s| s.value)
}

#[tokio::test]
async fn metrics_follow_services_as_they_run_fail_and_stop() {
    let Some(python) = crate::foreign::tool(crate::foreign::PYTHON) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = crashing_feed(dir.path()).await;
    let config = config.to_str().unwrap();
    let daemon = Daemon::start_with(&["--http", "127.0.0.1:0", "--config", config]);
    let url = daemon.dashboard();
    one_failed_one_running_one_failing_steps(&daemon, 50).await;
    let mut client = daemon.client().await;
    let unknown = client
        .start_service(start_request("nonesuch", 50, &[]))
        .await
        .unwrap_err();
    // A subscriber that reads five events and leaves, and one that never reads while
    // its topic floods past its buffer.
    let mut reader = Events::open(&mut daemon.client().await, &["streamer"], false).await;
    for _ in 0..5 {
        reader.next().await;
    }
    drop(reader);
    let mut stalled_client = daemon.client().await;
    let stalled = pb::SubscribeRequest {
        topics: vec!["flood".into()],
        buffer_bytes: streamhandler::bus::MIN_BUFFER as u64,
        ..Default::default()
    };
    let _stalled = stalled_client.subscribe(stalled).await.unwrap();
    crate::bus::flood(&mut client, "flood", 4000, 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let first = scrape(&python, &url, true).await;
    let streamer = [("service", "streamer")];
    let slugs = [("service", "slugs")];
    let running = [("service", "slugs"), ("state", "running")];
    assert_eq!(value(&first, "streamd_service_state", &running), Some(1.0));
    let published = value(&first, "streamd_service_events_published_total", &streamer).unwrap();
    assert!(published > 0.0, "{first:?}");
    assert!(value(&first, "streamd_service_step_errors_total", &slugs).unwrap() > 0.0);
    assert!(
        value(
            &first,
            "streamd_service_step_duration_seconds_count",
            &streamer
        )
        .unwrap()
            > 0.0
    );
    assert!(
        value(
            &first,
            "streamd_service_last_event_timestamp_seconds",
            &streamer
        )
        .is_some()
    );
    let started = [("method", "StartService"), ("code", "Ok")];
    assert_eq!(
        value(&first, "streamd_rpc_requests_total", &started),
        Some(3.0)
    );
    let feed = [("service", "feed")];
    assert_eq!(
        value(&first, "streamd_service_restarts_total", &feed),
        Some(2.0)
    );
    let failed = [("service", "feed"), ("state", "failed")];
    assert_eq!(value(&first, "streamd_service_state", &failed), Some(1.0));
    assert_eq!(
        value(&first, "streamd_service_step_errors_total", &feed),
        Some(3.0)
    );
    let refused = [
        ("method", "StartService"),
        ("code", &format!("{:?}", unknown.code())),
    ];
    assert_eq!(
        value(&first, "streamd_rpc_requests_total", &refused),
        Some(1.0)
    );
    assert!(value(&first, "streamd_process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(value(&first, "streamd_service_event_bytes_total", &streamer).unwrap() > 0.0);
    assert!(value(&first, "streamd_events_delivered_total", &[]).unwrap() >= 5.0);
    assert!(value(&first, "streamd_events_skipped_total", &[]).unwrap() > 0.0);
    assert_eq!(
        value(
            &first,
            "streamd_subscribe_stream_duration_seconds_count",
            &[]
        ),
        Some(1.0),
        "the reader's stream ended"
    );
    assert!(value(&first, "streamd_process_open_fds", &[]).unwrap() > 0.0);

    let stop = pb::StopServiceRequest {
        name: "slugs".into(),
    };
    client.stop_service(stop).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // As curl would ask: the older text format, read by that format's parser.
    let second = scrape(&python, &url, false).await;
    let stopped = [("service", "slugs"), ("state", "stopped")];
    assert_eq!(value(&second, "streamd_service_state", &stopped), Some(1.0));
    assert_eq!(value(&second, "streamd_service_state", &running), Some(0.0));
    let later = value(&second, "streamd_service_events_published_total", &streamer).unwrap();
    let typed = second
        .iter()
        .find(|s| s.name == "streamd_service_events_published_total");
    assert_eq!(
        typed.unwrap().kind,
        "counter",
        "typed as a counter in either format"
    );
    assert!(later > published, "{published} then {later}");
}

#[tokio::test]
async fn metrics_need_the_daemons_token_when_it_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let token = crate::harness::write(dir.path(), "token", "m3tr1cs-t0ken\n");
    let daemon = Daemon::start_with(&[
        "--http",
        "127.0.0.1:0",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let url = format!("{}metrics", daemon.dashboard());
    let http = reqwest::Client::new();
    let without = http.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let wrong = http.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let with = http
        .get(&url)
        .bearer_auth("m3tr1cs-t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let text = with.text().await.unwrap();
    assert!(text.contains("# TYPE streamd_subscribers gauge"), "{text}");
}

/// A tmux session of the test's own, running a shell in a terminal of a known size.
struct Tmux {
    session: String,
}

impl Tmux {
    /// A session running bash, or None after saying the test is skipped.
    fn start() -> Option<Self> {
        let session = format!("streamd-test-{}", uuid::Uuid::new_v4().simple());
        let started = std::process::Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "150", "-y", "24"])
            .args(["bash", "--norc", "--noprofile"])
            .env("PS1", "$ ")
            .status();
        match started {
            Ok(status) if status.success() => Some(Self { session }),
            _ => {
                eprintln!("skipped: tmux cannot start a session here");
                None
            }
        }
    }

    /// Types `keys` (tmux key names, e.g. `Enter`, `C-c`).
    fn send(&self, keys: &[&str]) {
        let sent = std::process::Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Types a line of text and Enter.
    fn type_line(&self, line: &str) {
        self.send(&["-l", line]);
        self.send(&["Enter"]);
    }

    fn screen(&self) -> String {
        let output = std::process::Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the screen satisfies `want`, and gives it.
    async fn until(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if want(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "never {what}:\n{screen}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// The cells of `service`'s row on a `top` screen.
fn top_row(screen: &str, service: &str) -> Option<Vec<String>> {
    let row = screen
        .lines()
        .find(|l| l.starts_with(&format!("{service} ")))?;
    Some(row.split_whitespace().map(str::to_owned).collect())
}

#[tokio::test]
async fn top_shows_services_live_starts_and_stops_them_and_outlives_a_daemon_restart() {
    let Some(tmux) = Tmux::start() else { return };
    let port = crate::harness::free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = crashing_feed(dir.path()).await;
    let config = ["--config", config.to_str().unwrap()];
    let mut daemon = Daemon::try_start(&config, &listen).unwrap();
    one_failed_one_running_one_failing_steps(&daemon, 100).await;

    tmux.type_line(&format!(
        "{} --addr {listen} top",
        crate::harness::STREAMCTL
    ));
    let screen = tmux
        .until("a streamer row with events per second", |s| {
            top_row(s, "streamer").is_some_and(|row| row[3].parse::<f64>().unwrap_or(0.0) > 0.0)
        })
        .await;
    assert!(screen.contains("RSS") && screen.contains("up "), "{screen}");
    assert_eq!(top_row(&screen, "streamer").unwrap()[1], "running");
    tmux.until("slugs failing with errors", |s| {
        top_row(s, "slugs").is_some_and(|row| row[1] == "failing" && row[4] != "0")
    })
    .await;
    let feed = top_row(&screen, "feed").unwrap();
    assert_eq!(
        (feed[1].as_str(), feed[5].as_str()),
        ("failed", "2"),
        "{screen}"
    );

    // Filter down to one stopped service, start it, stop it.
    tmux.send(&["/"]);
    tmux.send(&["-l", "reader"]);
    tmux.send(&["Enter", "s"]);
    tmux.until("reader started", |s| s.contains("reader started"))
        .await;
    assert!(daemon.service("reader").await.state() == pb::ServiceState::Running);
    tmux.send(&["x"]);
    tmux.until("reader stopped", |s| s.contains("reader stopped"))
        .await;
    assert!(daemon.service("reader").await.state() == pb::ServiceState::Stopped);

    // The daemon goes away and comes back on the same address.
    daemon.terminate().await;
    tmux.until("a reconnecting line", |s| s.contains("reconnecting to"))
        .await;
    let _back = Daemon::try_start(&config, &listen).unwrap();
    tmux.until("connected again", |s| {
        !s.contains("reconnecting to") && top_row(s, "reader").is_some()
    })
    .await;

    // `q` ends it, and so does Ctrl-C, the terminal as it was each time: the shell
    // reads lines again, echoing them.
    let top = format!("{} --addr {listen} top", crate::harness::STREAMCTL);
    for quit in ["q", "C-c"] {
        tmux.send(&[quit]);
        // The output's last line, unlike the typed one, is `done` alone.
        tmux.type_line("clear; stty -a | grep -o -- '-*icanon' ; echo do''ne");
        let screen = tmux
            .until("the shell back", |s| s.lines().any(|l| l.trim() == "done"))
            .await;
        assert!(
            screen.lines().any(|l| l.trim() == "icanon"),
            "left in raw mode after {quit}:\n{screen}"
        );
        tmux.type_line(&format!("clear; {top}"));
        tmux.until("top again", |s| top_row(s, "reader").is_some())
            .await;
    }
}

#[test]
fn top_without_a_terminal_points_to_list_and_subscribe() {
    let output = std::process::Command::new(crate::harness::STREAMCTL)
        .args(["--addr", "127.0.0.1:1", "top"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("streamctl list") && stderr.contains("--output json"),
        "{stderr}"
    );
}

/// A collector of the test's own: takes OTLP/HTTP exports on /v1/traces, and keeps
/// their bodies (protobuf, in which every span's name and attributes stand as text).
#[cfg(feature = "otlp")]
async fn otlp_collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let received = std::sync::Arc::<std::sync::Mutex<Vec<u8>>>::default();
    let sink = received.clone();
    let collect = axum::routing::post(move |body: axum::body::Bytes| async move {
        sink.lock().unwrap().extend_from_slice(&body);
        axum::http::StatusCode::OK
    });
    let app = axum::Router::new().route("/v1/traces", collect);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[cfg(feature = "otlp")]
#[tokio::test]
async fn spans_of_services_and_rpcs_reach_an_otlp_collector() {
    let (url, received) = otlp_collector().await;
    let mut daemon = Daemon::start_with(&["--otlp-endpoint", &url]);
    start_failing_slugs(&daemon).await;
    // The last batch goes when the daemon stops.
    daemon.terminate().await;
    let body = received.lock().unwrap().clone();
    let has = |text: &str| body.windows(text.len()).any(|w| w == text.as_bytes());
    for text in [
        "streamd",
        "service",
        "slugs",
        "rpc",
        "StartService",
        "step failed",
    ] {
        assert!(
            has(text),
            "no {text:?} in what the collector received; the daemon said:\n{}",
            daemon.log()
        );
    }
}
