//! A hostile client against the real binaries: each test is an attack that once
//! worked, and what must hold against it. RELIABILITY.md gives each one's figures.

use std::process::Stdio;

use prost_types::{Struct, Value, value::Kind};
use streamhandler::{pb, wire::MAX_DATA_DEPTH};
use tokio::io::AsyncBufReadExt;

use crate::harness::{Daemon, Events, PATIENCE};

/// `levels` objects nested, the data object the first, with `leaf` at the bottom.
fn nested(levels: u32, leaf: Kind) -> Struct {
    let bottom = Struct {
        fields: [("leaf".to_owned(), Value { kind: Some(leaf) })].into(),
    };
    (1..levels).fold(bottom, |inner, _| Struct {
        fields: [(
            "a".to_owned(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into(),
    })
}

fn publish(topic: &str, data: Struct) -> pb::PublishRequest {
    pb::PublishRequest {
        topic: topic.into(),
        data: Some(data),
    }
}

/// Data nested 49 levels in 566 bytes once reached every subscriber of its topic,
/// none of which could decode it (prost's and Python's limit is 100 messages deep),
/// and `--last` served it to every new one; a NaN made `subscribe --output json` exit.
/// Now the daemon refuses both, naming where, and subscribers see only what decodes.
#[tokio::test]
async fn data_no_client_could_decode_is_refused_and_never_reaches_a_subscriber() {
    let daemon = Daemon::start();
    let mut watcher = tokio::process::Command::from(daemon.streamctl())
        .args(["subscribe", "adv.*", "--last", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut printed = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let subscribed = tokio::time::timeout(PATIENCE, printed.next_line()).await;
    assert!(subscribed.unwrap().unwrap().unwrap().contains("subscribed"));

    let mut client = daemon.client().await;
    let poison = nested(49, Kind::NumberValue(1.0));
    assert!(prost::Message::encoded_len(&poison) < 600);
    let refused = client.publish(publish("adv.x", poison)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let at = format!("data{}: ", ".a".repeat(MAX_DATA_DEPTH as usize));
    assert!(
        refused.message().starts_with(&at) && refused.message().contains("deeper than 20"),
        "{refused:?}"
    );
    for odd in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let refused = client
            .publish(publish("adv.x", nested(2, Kind::NumberValue(odd))))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with("data.a.leaf: "),
            "{refused:?}"
        );
    }
    // In a stream, the refused event is named by its place.
    let stream = futures::stream::iter([
        publish("adv.y", nested(1, Kind::BoolValue(true))),
        publish("adv.y", nested(MAX_DATA_DEPTH + 1, Kind::BoolValue(true))),
    ]);
    let refused = client.publish_stream(stream).await.unwrap_err();
    assert!(
        refused.message().starts_with("events[1].data.a"),
        "{refused:?}"
    );

    // At the limit, every subscriber gets it, and a new one with --last too.
    let deepest = nested(MAX_DATA_DEPTH, Kind::NumberValue(1.5));
    client
        .publish(publish("adv.x", deepest.clone()))
        .await
        .unwrap();
    let mut late = Events::open(&mut client, &["adv.*"], true).await;
    let latest = late.next_where(|e| e.topic == "adv.x").await;
    assert_eq!(latest.payload, Some(pb::event::Payload::Data(deepest)));
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("adv.x")) {
        let line = tokio::time::timeout(PATIENCE, printed.next_line()).await;
        lines.push(line.unwrap().unwrap().expect("streamctl went on"));
    }
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("adv.y") || l.contains("true")),
        "{lines:?}"
    );
    let _ = watcher.start_kill();
    let said = watcher.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&said.stderr);
    assert!(
        !said.contains("passed over") && !said.contains("lost"),
        "{said}"
    );
}

/// streamctl's `publish` refuses data past the limit itself, saying so.
#[test]
fn streamctl_publish_says_data_nests_too_deep() {
    let daemon = Daemon::start();
    // One object more than the limit.
    let deep = (0..=MAX_DATA_DEPTH).fold("1".to_owned(), |inner, _| format!("{{\"a\":{inner}}}"));
    let output = daemon.ctl(&["publish", "adv.x", &deep]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nest deeper than 20 levels"), "{stderr}");
}
