//! Foreign clients: grpcurl through reflection, Python stubs generated from proto/, and
//! the example clients in examples/ (Python, Node.js, Rust).
//!
//! The tools come from `tests/run.sh`, which installs them into a venv (and the Node
//! example's packages) and names them in `STREAMD_TEST_GRPCURL`, `STREAMD_TEST_PYTHON`
//! and `STREAMD_TEST_NODE`; without those a test says it is skipped and passes, so a
//! plain `cargo test` works offline. Under CI, tests/run.sh fails instead.

use std::{collections::BTreeMap, path::Path, process::Output, time::Duration};

use serde_json::Value;
use streamhandler::pb;
use tokio::process::Command;

use crate::harness::{Daemon, SERVICES, text};

pub(crate) const GRPCURL: &str = "STREAMD_TEST_GRPCURL";
pub(crate) const PYTHON: &str = "STREAMD_TEST_PYTHON";
/// Node.js, with examples/node's dependencies installed.
const NODE: &str = "STREAMD_TEST_NODE";

/// The `payload` oneof of `Event`, as protobuf JSON names its fields.
const PAYLOADS: [&str; 8] = [
    "lifecycle",
    "lagged",
    "data",
    "points",
    "text",
    "line",
    "image",
    "system",
];

/// The path in `var`, or `None` after saying the test is skipped.
pub(crate) fn tool(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!("skipped: {var} is not set (tests/run.sh sets it)");
            None
        }
    }
}

/// Runs `command` to the end, killing it if it takes longer than `limit`.
pub(crate) async fn run(command: &mut Command, limit: Duration) -> Output {
    let what = format!("{command:?}");
    let output = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(limit, output)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what} could not run: {e}"))
}

/// grpcurl aimed at one daemon, in plaintext, knowing the API only through reflection.
struct Grpcurl {
    bin: String,
    addr: String,
}

impl Grpcurl {
    /// A fresh daemon and grpcurl aimed at it, or `None` when grpcurl is not set up.
    fn start() -> Option<(Daemon, Self)> {
        let bin = tool(GRPCURL)?;
        let daemon = Daemon::start();
        let addr = daemon.addr.to_string();
        Some((daemon, Self { bin, addr }))
    }

    /// `grpcurl -plaintext -max-time SECS [-d DATA] ADDR REST...`.
    async fn run(&self, max_time: u32, data: Option<&str>, rest: &[&str]) -> Output {
        let mut command = Command::new(&self.bin);
        command.args(["-plaintext", "-max-time", &max_time.to_string()]);
        if let Some(data) = data {
            command.args(["-d", data]);
        }
        command.arg(&self.addr).args(rest);
        // grpcurl's own -max-time ends it; the outer limit only catches a hang.
        run(&mut command, Duration::from_secs(u64::from(max_time) + 10)).await
    }

    /// Runs grpcurl, fails the test unless it succeeds, and returns its stdout.
    async fn ok(&self, data: Option<&str>, rest: &[&str]) -> String {
        let output = self.run(10, data, rest).await;
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "grpcurl {rest:?} failed ({}):\n{stderr}{stdout}",
            output.status
        );
        stdout
    }

    /// Calls a StreamHandler method and parses its JSON reply.
    async fn call(&self, method: &str, data: &str) -> Value {
        let method = format!("streamhandler.v1.StreamHandler/{method}");
        let stdout = self.ok(Some(data), &[&method]).await;
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{method} printed no JSON ({e}):\n{stdout}"))
    }
}

#[tokio::test]
async fn grpcurl_lists_describes_and_checks_health_through_reflection() {
    let Some((_daemon, grpcurl)) = Grpcurl::start() else {
        return;
    };

    let list = grpcurl.ok(None, &["list"]).await;
    let services: Vec<&str> = list.lines().collect();
    for want in ["streamhandler.v1.StreamHandler", "grpc.health.v1.Health"] {
        assert!(
            services.contains(&want),
            "{want} missing from `list`:\n{list}"
        );
    }

    let event = grpcurl
        .ok(None, &["describe", "streamhandler.v1.Event"])
        .await;
    assert!(
        event.contains("message Event {")
            && event.contains(".streamhandler.v1.Points points = 20;"),
        "`describe streamhandler.v1.Event` shows no Event with its Points payload:\n{event}"
    );

    let health = grpcurl.ok(None, &["grpc.health.v1.Health/Check"]).await;
    let health: Value = serde_json::from_str(&health)
        .unwrap_or_else(|e| panic!("Health/Check printed no JSON ({e}):\n{health}"));
    assert_eq!(health["status"], "SERVING", "{health}");
}

#[tokio::test]
async fn grpcurl_lists_every_service_as_json() {
    let Some((_daemon, grpcurl)) = Grpcurl::start() else {
        return;
    };

    let reply = grpcurl.call("ListServices", "{}").await;
    let names: Vec<&str> = reply["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services array in {reply:#}"))
        .iter()
        .map(|service| service["name"].as_str().unwrap_or_default())
        .collect();
    for want in SERVICES {
        assert!(
            names.contains(&want),
            "{want} missing from ListServices: {names:?}"
        );
    }
}

#[tokio::test]
async fn grpcurl_streams_points_as_readable_json() {
    let Some((_daemon, grpcurl)) = Grpcurl::start() else {
        return;
    };

    let started = grpcurl
        .call("StartService", r#"{"name":"streamer","interval":"0.2s"}"#)
        .await;
    assert_eq!(
        started["service"]["state"], "SERVICE_STATE_RUNNING",
        "{started:#}"
    );

    // A Subscribe never ends by itself: grpcurl's -max-time cuts it off after some
    // 15 ticks, so a deadline error is the expected way for it to stop.
    let subscribe = ["streamhandler.v1.StreamHandler/Subscribe"];
    let output = grpcurl
        .run(3, Some(r#"{"topics":["streamer"]}"#), &subscribe)
        .await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success() || stderr.contains("DeadlineExceeded"),
        "Subscribe failed ({}):\n{stderr}",
        output.status
    );

    let events: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("Subscribe printed something other than JSON ({e}):\n{stdout}"));
    // First Subscribed, which has no topic and no seq (0, left out in JSON).
    let (subscribed, events) = events
        .split_first()
        .unwrap_or_else(|| panic!("no events:\n{stdout}\n{stderr}"));
    assert_eq!(
        subscribed["subscribed"]["topics"],
        serde_json::json!(["streamer"]),
        "{subscribed:#}"
    );
    assert!(subscribed.get("topic").is_none(), "{subscribed:#}");
    let mut last_seq = 0;
    for event in events {
        // Every field must be one grpcurl knew from reflection: a payload it could not
        // decode would show up as something else (e.g. base64 bytes).
        let fields = event
            .as_object()
            .unwrap_or_else(|| panic!("an event that is not an object: {event}"));
        assert_eq!(event["topic"], "streamer", "{event:#}");
        assert!(event["time"].is_string(), "no time in {event:#}");
        // uint64 is a string in protobuf JSON.
        let seq: u64 = event["seq"]
            .as_str()
            .and_then(|seq| seq.parse().ok())
            .unwrap_or_else(|| panic!("no seq in {event:#}"));
        assert!(seq > last_seq, "seq {seq} after {last_seq}");
        last_seq = seq;
        let payloads: Vec<&String> = fields
            .keys()
            .filter(|key| !["topic", "seq", "time"].contains(&key.as_str()))
            .collect();
        assert!(
            payloads.len() == 1 && PAYLOADS.contains(&payloads[0].as_str()),
            "expected one known payload besides topic, seq and time, got {payloads:?} in {event:#}"
        );
    }

    let points: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("points").is_some())
        .collect();
    assert!(
        !points.is_empty(),
        "no points events in 3 s:\n{stdout}\n{stderr}"
    );
    for event in points {
        let x = &event["points"]["series"][0]["points"][0]["x"];
        assert!(x.is_number(), "x is not a JSON number in {event:#}");
    }
}

#[tokio::test]
async fn grpcurl_reports_an_unknown_service_as_not_found() {
    let Some((_daemon, grpcurl)) = Grpcurl::start() else {
        return;
    };

    let start = ["streamhandler.v1.StreamHandler/StartService"];
    let output = grpcurl.run(10, Some(r#"{"name":"nope"}"#), &start).await;
    let (stdout, stderr) = text(&output);
    assert!(
        !output.status.success(),
        "starting `nope` succeeded:\n{stdout}"
    );
    assert!(
        stderr.contains("NotFound"),
        "starting `nope` failed without NotFound ({}):\n{stderr}{stdout}",
        output.status
    );
}

/// Generates Python stubs for proto/ into a fresh directory with grpc_tools' protoc.
pub(crate) async fn python_stubs(python: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory for the Python stubs");
    let out = dir.path().to_str().expect("a UTF-8 temporary directory");
    let output = run(
        Command::new(python).args([
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            &format!("--python_out={out}"),
            &format!("--grpc_python_out={out}"),
            "proto/streamhandler/v1/streamhandler.proto",
            "proto/streamhandler/v1/payloads.proto",
        ]),
        Duration::from_secs(60),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "grpc_tools.protoc failed ({}):\n{stderr}{stdout}",
        output.status
    );
    dir
}

/// Runs `tests/python/client.py ADDR MODE ARGS...` on fresh stubs and returns its JSON
/// summary.
async fn python_client(python: &str, daemon: &Daemon, mode: &[&str]) -> Value {
    let stubs = python_stubs(python).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    // The script's own gRPC deadlines (20 s at most) end it first; this is a backstop.
    let output = run(
        Command::new(python)
            .arg(&script)
            .arg(daemon.addr.to_string())
            .args(mode)
            .env("PYTHONPATH", stubs.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(60),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "client.py {mode:?} failed ({}):\n{stderr}{stdout}\nstreamd:\n{}",
        output.status,
        daemon.log()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("client.py {mode:?} printed no JSON summary ({e}):\n{stdout}{stderr}")
    })
}

#[tokio::test]
async fn python_client_streams_points_then_stops_streamer() {
    let Some(python) = tool(PYTHON) else {
        return;
    };
    let daemon = Daemon::start();

    let summary = python_client(&python, &daemon, &["streamer"]).await;
    assert_eq!(summary["points_events"], 3, "{summary}");
    let seqs: Vec<u64> = summary["seqs"]
        .as_array()
        .unwrap_or_else(|| panic!("no seqs in {summary}"))
        .iter()
        .map(|seq| {
            seq.as_u64()
                .unwrap_or_else(|| panic!("a seq that is not a number in {summary}"))
        })
        .collect();
    assert_eq!(seqs.len(), 3, "{summary}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs not increasing: {summary}"
    );

    let services = daemon
        .client()
        .await
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("ListServices after the Python client")
        .into_inner()
        .services;
    let states: BTreeMap<&str, pb::ServiceState> = services
        .iter()
        .map(|s| (s.name.as_str(), s.state()))
        .collect();
    assert_eq!(
        states.get("streamer"),
        Some(&pb::ServiceState::Stopped),
        "the Python client's StopService left {states:?}"
    );
}

#[tokio::test]
async fn python_client_publishes_a_struct_and_receives_it() {
    let Some(python) = tool(PYTHON) else {
        return;
    };
    let daemon = Daemon::start();

    let summary = python_client(&python, &daemon, &["publish"]).await;
    assert_eq!(
        summary["published_seq"], summary["received_seq"],
        "{summary}"
    );
    // Struct numbers are doubles, so the integers come back as floats; JSON compares
    // 2 and 2.0 as different, hence the explicit floats.
    let sent = serde_json::json!({
        "greeting": "hello from python",
        "n": 42.5,
        "ok": true,
        "nothing": null,
        "list": [1.0, "two", false],
        "nested": {"depth": 2.0},
    });
    assert_eq!(summary["data"], sent, "{summary}");
}

/// Checks that an example client ran to the end against `daemon` and printed what it
/// received: the subscription, its own event back, and the streamer's points.
fn assert_example_ran(output: &Output, daemon: &Daemon, language: &str) {
    let (stdout, stderr) = text(output);
    assert!(
        output.status.success(),
        "the {language} example failed ({}):\n{stderr}{stdout}\nstreamd:\n{}",
        output.status,
        daemon.log()
    );
    for want in [
        "subscribed to",
        "published demo/hello #",
        &format!("hello from {language}"),
        "10 series",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn the_python_example_runs() {
    let Some(python) = tool(PYTHON) else {
        return;
    };
    let daemon = Daemon::start();
    let stubs = python_stubs(&python).await;
    let output = run(
        Command::new(&python)
            .arg("examples/python/client.py")
            .env("STREAMD_ADDR", daemon.addr.to_string())
            .env("PYTHONPATH", stubs.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(30),
    )
    .await;
    assert_example_ran(&output, &daemon, "python");
}

#[tokio::test]
async fn the_node_example_runs() {
    let Some(node) = tool(NODE) else {
        return;
    };
    let daemon = Daemon::start();
    let output = run(
        Command::new(node)
            .arg("examples/node/client.js")
            .env("STREAMD_ADDR", daemon.addr.to_string()),
        Duration::from_secs(30),
    )
    .await;
    assert_example_ran(&output, &daemon, "node");
}

#[tokio::test]
async fn the_rust_example_runs() {
    // Tests run from target/<profile>/deps; cargo builds examples beside them.
    let exe = std::env::current_exe().unwrap();
    let example = exe.parent().unwrap().join("../examples/client");
    assert!(
        example.exists(),
        "{} is missing: `cargo build --examples` builds it",
        example.display()
    );
    let daemon = Daemon::start();
    let output = run(
        Command::new(example).env("STREAMD_ADDR", daemon.addr.to_string()),
        Duration::from_secs(30),
    )
    .await;
    assert_example_ran(&output, &daemon, "rust");
}

/// What each foreign client says of data at the nesting limit and past it: it
/// received the data LIMIT levels deep, and the daemon refused one level more, and a
/// NaN, naming where in the data.
pub(crate) fn assert_depth_summary(client: &str, summary: &Value) {
    let limit = streamhandler::wire::MAX_DATA_DEPTH;
    assert_eq!(summary["received_levels"], limit, "{client}: {summary}");
    let deeper = summary["one_deeper"].as_str().unwrap_or_default();
    let path = format!("data{}", ".a".repeat(limit as usize));
    assert!(
        deeper.starts_with(&path) && deeper.contains(&format!("deeper than {limit} levels")),
        "{client}: {summary}"
    );
    let nan = summary["nan"].as_str().unwrap_or_default();
    assert!(nan.contains("finite"), "{client}: {summary}");
}

#[tokio::test]
async fn python_decodes_data_at_the_nesting_limit_and_one_level_more_is_refused() {
    let Some(python) = tool(PYTHON) else {
        return;
    };
    let daemon = Daemon::start();
    let limit = streamhandler::wire::MAX_DATA_DEPTH.to_string();
    let summary = python_client(&python, &daemon, &["depth", &limit]).await;
    assert_depth_summary("python", &summary);
    assert!(
        summary["infinity"]
            .as_str()
            .is_some_and(|m| m.starts_with("data.x[0]: ") && m.contains("finite")),
        "{summary}"
    );
}

#[tokio::test]
async fn node_grpc_js_decodes_data_at_the_nesting_limit_and_one_level_more_is_refused() {
    let Some(node) = tool(NODE) else {
        return;
    };
    let daemon = Daemon::start();
    let limit = streamhandler::wire::MAX_DATA_DEPTH.to_string();
    let output = run(
        Command::new(node).args(["tests/node/depth.js", &daemon.addr.to_string(), &limit]),
        Duration::from_secs(30),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_depth_summary("node", &summary);
}
