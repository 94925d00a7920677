//! Stopping the daemon: SIGTERM and SIGINT stop services cleanly, end subscriber
//! streams and exit 0; `streamctl subscribe` rides out a daemon restart.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use nix::sys::signal::{Signal, kill};
use streamhandler::pb::{self, lifecycle::Kind};

use crate::harness::{Daemon, Events, PATIENCE, is_lifecycle, streamctl_at};

async fn signal_stops_everything_cleanly(signal: Signal) {
    let mut daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &[], false).await;
    for name in ["streamer", "system", "reader"] {
        client
            .start_service(pb::StartServiceRequest {
                name: name.into(),
                interval: Some(Duration::from_millis(100).try_into().unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    events
        .next_where(|e| e.topic == "system" && crate::harness::is_data(e))
        .await;

    kill(daemon.pid(), signal).unwrap();
    let mut stopped = Vec::new();
    while stopped.len() < 3 {
        let event = events.next().await;
        if is_lifecycle(&event, Kind::Stopped) {
            stopped.push(event.topic);
        }
    }
    stopped.sort();
    assert_eq!(stopped, ["reader", "streamer", "system"]);
    assert!(
        events.ends_cleanly().await,
        "the stream ends with OK, not an error"
    );
    let status = daemon.wait().await;
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(!daemon.log().contains("forced=true"), "{}", daemon.log());
}

#[tokio::test]
async fn sigterm_stops_services_ends_streams_and_exits_zero() {
    signal_stops_everything_cleanly(Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigint_does_the_same() {
    signal_stops_everything_cleanly(Signal::SIGINT).await;
}

#[tokio::test]
async fn a_sigterm_the_moment_the_daemon_listens_still_ends_it_cleanly() {
    let mut daemon = Daemon::start();
    kill(daemon.pid(), Signal::SIGTERM).unwrap();
    let status = daemon.wait().await;
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", daemon.log());
}

#[tokio::test]
async fn streamctl_subscribe_reconnects_when_the_daemon_comes_back() {
    let mut first = Daemon::start();
    let addr = first.addr.to_string();
    let mut subscribe = streamctl_at(&addr)
        .args(["subscribe", "streamer", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = mpsc::channel();
    let stdout = subscribe.stdout.take().unwrap();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out.send(("out", line));
        }
    });
    let stderr = subscribe.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(("err", line));
        }
    });
    let next = |want: &dyn Fn(&str, &str) -> bool| loop {
        let (stream, line) = seen.recv_timeout(PATIENCE).expect("streamctl went quiet");
        if want(stream, &line) {
            return line;
        }
    };
    // Once the stream is live, as its first line says, events flow.
    let is_subscribed = |s: &str, l: &str| s == "out" && l.contains("\"subscribed\"");
    let line = next(&is_subscribed);
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        event["subscribed"]["topics"],
        serde_json::json!(["streamer"])
    );
    let mut client = first.client().await;
    let start = pb::StartServiceRequest {
        name: "streamer".into(),
        interval: Some(Duration::from_millis(100).try_into().unwrap()),
        ..Default::default()
    };
    client.start_service(start.clone()).await.unwrap();
    let line = next(&|s, l| s == "out" && l.contains("\"points\""));
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["topic"], "streamer");

    assert_eq!(first.terminate().await.code(), Some(0));
    let lost = next(&|s, _| s == "err");
    assert!(
        lost.contains("lost streamd") && lost.contains("reconnecting"),
        "{lost}"
    );

    let second = Daemon::try_start(&[], &addr).expect("the same port is free again");
    // The new stream says it is live too; stdout and stderr arrive in either order.
    let (mut reconnected, mut live) = (false, false);
    while !(reconnected && live) {
        let line = next(&|s, l| (s == "err" && l.contains("reconnected")) || is_subscribed(s, l));
        reconnected |= line.contains("reconnected");
        live |= line.contains("\"subscribed\"");
    }
    let mut client = second.client().await;
    client.start_service(start).await.unwrap();
    let line = next(&|s, l| s == "out" && l.contains("\"points\""));
    assert!(line.contains("\"topic\":\"streamer\""), "{line}");

    kill(
        nix::unistd::Pid::from_raw(subscribe.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = subscribe.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
