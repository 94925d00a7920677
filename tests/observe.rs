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
