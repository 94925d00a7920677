//! Looking at the running daemon from outside: its log as JSON lines, each saying
//! which service or RPC it came from.

use std::time::{Duration, Instant};

use serde_json::Value;
use streamhandler::pb;

use crate::harness::{Daemon, PATIENCE, start_request};

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
    let daemon = Daemon::start_with(&["--log-format", "json"]);
    let mut client = daemon.client().await;
    // Nothing listens on port 9: every step fails.
    let failing = start_request("slugs", 100, &[("url", "http://127.0.0.1:9/")]);
    client.start_service(failing).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !daemon.log().contains("step failed") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let started = lines.iter().find(|l| message(l) == "started").unwrap();
    assert_eq!(started["service"], "slugs");
    assert_eq!(started["span"]["name"], "rpc");
    assert_eq!(
        started["span"]["method"],
        "/streamhandler.v1.StreamHandler/StartService"
    );
    assert!(lines.iter().any(|l| message(l) == "stopped"));
}

/// One sample of a scrape, as the Prometheus client library's parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Value,
    value: f64,
}

/// Scrapes `/metrics` at the dashboard address `url`, sending `token` if any, and
/// parses the answer with the Prometheus client library's OpenMetrics parser.
async fn scrape(python: &str, url: &str) -> Vec<Sample> {
    let response = reqwest::get(format!("{url}metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = response.text().await.unwrap();
    let mut parser = tokio::process::Command::new(python)
        .arg("tests/python/scrape.py")
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
    let daemon = Daemon::start_with(&["--http", "127.0.0.1:0"]);
    let url = daemon.dashboard();
    let mut client = daemon.client().await;
    client
        .start_service(start_request("streamer", 50, &[]))
        .await
        .unwrap();
    let failing = start_request("slugs", 50, &[("url", "http://127.0.0.1:9/")]);
    client.start_service(failing).await.unwrap();
    let unknown = client
        .start_service(start_request("nonesuch", 50, &[]))
        .await
        .unwrap_err();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let first = scrape(&python, &url).await;
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
        Some(2.0)
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
    assert!(value(&first, "streamd_process_open_fds", &[]).unwrap() > 0.0);

    let stop = pb::StopServiceRequest {
        name: "slugs".into(),
    };
    client.stop_service(stop).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = scrape(&python, &url).await;
    let stopped = [("service", "slugs"), ("state", "stopped")];
    assert_eq!(value(&second, "streamd_service_state", &stopped), Some(1.0));
    assert_eq!(value(&second, "streamd_service_state", &running), Some(0.0));
    let later = value(&second, "streamd_service_events_published_total", &streamer).unwrap();
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
    assert!(with.text().await.unwrap().ends_with("# EOF\n"));
}
