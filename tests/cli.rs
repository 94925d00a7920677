//! streamctl as a user runs it in a shell.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use streamhandler::pb;

use crate::harness::{Daemon, text};

#[test]
fn start_list_stop_one_service() {
    let daemon = Daemon::start();
    let output = daemon.ctl(&[
        "start",
        "streamer",
        "--interval",
        "200ms",
        "--set",
        "series=3",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "streamer: started");

    let (stdout, _) = text(&daemon.ctl(&["start", "streamer"]));
    assert_eq!(stdout.trim(), "streamer: already running");

    let output = daemon.ctl(&["list"]);
    let (stdout, _) = text(&output);
    assert!(output.status.success());
    let row = stdout.lines().find(|l| l.starts_with("streamer")).unwrap();
    assert!(row.contains("running") && row.contains("200ms"), "{row}");
    for card in ["activities", "kraken", "leaderboard", "system"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(card)),
            "{card} missing:\n{stdout}"
        );
    }

    let (stdout, _) = text(&daemon.ctl(&["stop", "streamer"]));
    assert_eq!(stdout.trim(), "streamer: stopped");
    let (stdout, _) = text(&daemon.ctl(&["stop", "streamer"]));
    assert_eq!(stdout.trim(), "streamer: was not running");
}

#[test]
fn start_all_and_stop_all() {
    // Every network card points at a local port where nothing listens: no test touches
    // the internet, and each of them keeps running through its errors.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for (name, scheme) in [
        ("slugs", "http"),
        ("emojis", "http"),
        ("activities", "http"),
        ("aq", "http"),
        ("kraken", "ws"),
    ] {
        config.push_str(&format!(
            "[services.{name}.params]\nurl = \"{scheme}://{closed}/\"\n"
        ));
    }
    let config = crate::harness::write(dir.path(), "streamd.toml", &config);
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let output = daemon.ctl(&["start", "all"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    // Every service but aq, which needs its key.
    let started: Vec<_> = crate::harness::SERVICES
        .into_iter()
        .filter(|name| *name != "aq")
        .collect();
    for name in &started {
        assert!(stdout.contains(&format!("{name}: started")), "{stdout}");
    }
    assert!(
        stdout.contains("aq: skipped") && stdout.contains("OPEN_AQ_KEY"),
        "{stdout}"
    );

    let (stdout, _) = text(&daemon.ctl(&["list"]));
    // Those whose upstream this test does not run are running but failing.
    let running = stdout
        .lines()
        .filter(|l| l.contains("running") || l.contains("failing"))
        .count();
    assert_eq!(running, started.len(), "{stdout}");

    assert!(daemon.ctl(&["stop", "system"]).status.success());
    let output = daemon.ctl(&["stop", "all"]);
    assert!(output.status.success());
    // Only what it stopped: not aq, nor system, which were not running.
    let stopped: Vec<_> = text(&output).0.lines().map(str::to_owned).collect();
    let expected: Vec<_> = started
        .iter()
        .filter(|name| **name != "system")
        .map(|name| format!("{name}: stopped"))
        .collect();
    assert_eq!(stopped, expected);
    let (stdout, _) = text(&daemon.ctl(&["list"]));
    assert!(!stdout.contains("running"), "{stdout}");
    let output = daemon.ctl(&["stop", "all"]);
    assert_eq!(text(&output).0.trim(), "nothing was running");
}

#[tokio::test]
async fn unknown_names_are_refused_before_anything_starts() {
    let daemon = Daemon::start();
    let output = daemon.ctl(&["start", "streamer", "nosuch", "system", "ghost"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.trim(),
        "streamctl: no services named \"nosuch\", \"ghost\" (`streamctl list` shows them)"
    );
    for name in ["streamer", "system"] {
        let service = daemon.service(name).await;
        assert_eq!(service.state(), pb::ServiceState::Stopped, "{name}");
    }
}

#[test]
fn server_errors_are_one_line_and_fail() {
    let daemon = Daemon::start();
    for (args, expected) in [
        (&["start", "nope"][..], "no service named \"nope\""),
        (
            &["start", "streamer", "--set", "bogus=1"][..],
            "params.bogus",
        ),
        (&["start", "aq"][..], "OPEN_AQ_KEY"),
    ] {
        let output = daemon.ctl(args);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("streamctl: ") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_duration_says_what_a_duration_looks_like() {
    let daemon = Daemon::start();
    let output = daemon.ctl(&["start", "streamer", "--interval", "fast"]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stderr.contains(
            "'--interval <DURATION>': invalid duration \"fast\": expected a number and a \
             unit, like 500ms or 2s"
        ),
        "{stderr}"
    );
}

#[test]
fn a_daemon_that_is_not_running_is_one_clear_line() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for args in [&["list"][..], &["start", "streamer"], &["subscribe"]] {
        let output = crate::harness::streamctl_at(&addr.to_string())
            .args(args)
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("not running") && stderr.contains(&addr.to_string()),
            "{stderr}"
        );
        assert!(stderr.contains("streamd"), "says how to start it: {stderr}");
    }
}

#[test]
fn subscribe_prints_one_line_per_event() {
    let daemon = Daemon::start();
    let mut child = daemon
        .streamctl()
        .args(["subscribe", "reader", "images"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        daemon
            .ctl(&["start", "images", "--interval", "100ms"])
            .status
            .success()
    );
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(lines.next().unwrap().unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen[0].contains("images") && seen[0].contains("started"),
        "{seen:?}"
    );
    assert!(
        seen[1].contains("64x64") && seen[1].contains("image/png"),
        "{seen:?}"
    );
    assert!(
        !seen.concat().contains('\x1b'),
        "no colour when NO_COLOR is set"
    );
}

#[test]
fn subscribe_json_is_one_object_per_line() {
    let daemon = Daemon::start();
    assert!(
        daemon
            .ctl(&["start", "system", "--interval", "100ms"])
            .status
            .success()
    );
    let mut child = daemon
        .streamctl()
        .args(["subscribe", "--last", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // First the stream's Subscribed event, with where each topic stood.
    let line = lines.next().unwrap().unwrap();
    let subscribed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(subscribed.get("topic").is_none(), "no topic: {line}");
    let positions = subscribed["subscribed"]["positions"].as_array().unwrap();
    assert!(positions.iter().any(|p| p["topic"] == "system"), "{line}");
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["topic"], "system");
        assert!(event["seq"].is_u64(), "{line}");
        assert!(event["system"]["services"].is_array(), "{line}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn publish_from_the_shell() {
    let daemon = Daemon::start();
    let output = daemon.ctl(&["publish", "notes", r#"{"text": "hello", "n": 2}"#]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "published notes #1");
    let output = daemon.ctl(&["publish", "notes", "[1, 2]"]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn show_prints_one_service_in_full() {
    let daemon = Daemon::start();
    assert!(
        daemon
            .ctl(&[
                "start",
                "streamer",
                "--set",
                "series=3",
                "--interval",
                "250ms"
            ])
            .status
            .success()
    );
    let output = daemon.ctl(&["show", "streamer"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("state:       running since"), "{stdout}");
    assert!(stdout.contains("interval:    250ms"), "{stdout}");
    assert!(stdout.contains("series      3   (override)"), "{stdout}");
    let output = daemon.ctl(&["show", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output).1.trim(),
        "streamctl: no service named \"nope\" (`streamctl list` shows them)"
    );
}

/// A gRPC server answering Subscribe with a stream written by hand, as a daemon older
/// or other than this one might send: the events given, each framed, then OK. For what
/// streamctl does with events the daemon itself no longer lets through.
async fn serve_subscribe(events: Vec<Vec<u8>>) -> std::net::SocketAddr {
    use axum::{body::Body, http::HeaderMap, routing::post};
    use http_body_util::StreamBody;
    let answer = move || {
        let events = events.clone();
        async move {
            let mut frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::io::Error>> = events
                .into_iter()
                .map(|event| {
                    let mut framed = vec![0];
                    framed.extend_from_slice(&(event.len() as u32).to_be_bytes());
                    framed.extend_from_slice(&event);
                    Ok(http_body::Frame::data(framed.into()))
                })
                .collect();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            frames.push(Ok(http_body::Frame::trailers(trailers)));
            let body = Body::new(StreamBody::new(futures::stream::iter(frames)));
            ([("content-type", "application/grpc")], body)
        }
    };
    let app = axum::Router::new().route("/streamhandler.v1.StreamHandler/Subscribe", post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An Event carrying `data`, encoded.
fn data_event(topic: &str, seq: u64, data: prost_types::Struct) -> Vec<u8> {
    use prost::Message;
    pb::Event {
        topic: topic.into(),
        seq,
        time: None,
        payload: Some(pb::event::Payload::Data(data)),
    }
    .encode_to_vec()
}

#[tokio::test]
async fn subscribe_reports_an_event_it_cannot_decode_or_print_and_goes_on() {
    use prost::Message;
    use prost_types::{Struct, Value, value::Kind};
    let value = |kind| Value { kind: Some(kind) };
    // Nested past what prost decodes by default, as a daemon once let clients publish.
    let poison = (0..60).fold(Struct::default(), |inner, _| Struct {
        fields: [("a".to_owned(), value(Kind::StructValue(inner)))].into(),
    });
    let not_a_number = Struct {
        fields: [("x".to_owned(), value(Kind::NumberValue(f64::NAN)))].into(),
    };
    let fine = Struct {
        fields: [("ok".to_owned(), value(Kind::BoolValue(true)))].into(),
    };
    let subscribed = pb::Event {
        payload: Some(pb::event::Payload::Subscribed(pb::Subscribed::default())),
        ..Default::default()
    }
    .encode_to_vec();
    let addr = serve_subscribe(vec![
        subscribed,
        data_event("adv", 1, poison),
        data_event("adv", 2, not_a_number),
        data_event("adv", 3, fine),
    ])
    .await;
    for output in ["text", "json"] {
        let mut child =
            tokio::process::Command::from(crate::harness::streamctl_at(&addr.to_string()))
                .args(["subscribe", "--output", output])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
        use tokio::io::AsyncBufReadExt;
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let patience = crate::harness::PATIENCE;
        let printed = tokio::time::timeout(patience, async {
            loop {
                let line = stdout
                    .next_line()
                    .await
                    .unwrap()
                    .expect("streamctl went on");
                if line.contains("ok") {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{output}: the good event was never printed"));
        let said = tokio::time::timeout(patience, async {
            let mut said = String::new();
            while !said.contains("reconnecting") {
                said += &stderr.next_line().await.unwrap().unwrap_or_default();
                said.push('\n');
            }
            said
        })
        .await
        .expect("streamctl said nothing");
        assert!(
            said.contains("passed over event #1 of \"adv\"") && said.contains("cannot decode"),
            "{output}: {said}"
        );
        if output == "json" {
            assert!(printed.contains(r#""ok":true"#), "{printed}");
            assert!(said.contains("passed over event #2 of \"adv\""), "{said}");
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "{output}: streamctl exited"
        );
    }
}
