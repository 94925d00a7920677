//! The event bus through the real daemon: topics that cannot starve each other, a
//! subscriber's buffer and what happens past it, the limits on Subscribe, and clients'
//! topics forgotten so that new names take no more memory.

use std::time::Duration;

use futures::StreamExt;
use prost_types::{Struct, Value, value::Kind as ValueKind};
use streamhandler::pb::{self, event::Payload, stream_handler_client::StreamHandlerClient};
use tonic::{Code, Streaming, transport::Channel};

use crate::harness::{Daemon, Events, PATIENCE, is_data, subscribed};

/// The smallest buffer a subscriber may ask for: room for the largest event.
const MIN_BUFFER: u64 = 64 * 1024 + 64;

fn padded(pad: usize) -> Struct {
    Struct {
        fields: [(
            "pad".to_owned(),
            Value {
                kind: Some(ValueKind::StringValue("x".repeat(pad))),
            },
        )]
        .into(),
    }
}

/// Publishes `count` events on `topic` in one PublishStream.
pub async fn flood(client: &mut StreamHandlerClient<Channel>, topic: &str, count: u64, pad: usize) {
    let (data, topic) = (padded(pad), topic.to_owned());
    let events = (0..count).map(move |_| pb::PublishRequest {
        topic: topic.clone(),
        data: Some(data.clone()),
    });
    let reply = client
        .publish_stream(futures::stream::iter(events))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.published, count);
}

/// A Subscribe stream once it is live, past its Subscribed event.
async fn subscribe(
    client: &mut StreamHandlerClient<Channel>,
    request: pb::SubscribeRequest,
) -> Result<Streaming<pb::Event>, tonic::Status> {
    let mut stream = client.subscribe(request).await?.into_inner();
    subscribed(&mut stream).await;
    Ok(stream)
}

fn topics(topics: &[&str]) -> Vec<String> {
    topics.iter().map(|t| t.to_string()).collect()
}

#[tokio::test]
async fn a_topic_ticking_at_1000_per_second_loses_nothing_while_another_floods() {
    // A millisecond is shorter than a client may ask for unless the operator allows it.
    let (daemon, _config) =
        crate::harness::with_config("[supervisor]\nmin_client_interval = \"1ms\"\n");
    let mut client = daemon.client().await;
    // A reader of every topic that never reads, so that the flood overflows a buffer.
    let mut stalled_client = daemon.client().await;
    let _stalled = subscribe(
        &mut stalled_client,
        pb::SubscribeRequest {
            buffer_bytes: MIN_BUFFER,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut quiet = Events::open(&mut client, &["streamer"], false).await;
    let mut starter = daemon.client().await;
    starter
        .start_service(crate::harness::start_request("streamer", 1, &[]))
        .await
        .unwrap();
    let first = quiet.next().await.seq;

    let mut publisher = daemon.client().await;
    let flooding = tokio::spawn(async move { flood(&mut publisher, "loud", 200_000, 100).await });
    let mut last = first;
    let mut during = 0;
    while !flooding.is_finished() {
        let event = quiet.next().await;
        assert!(
            !matches!(event.payload, Some(Payload::Lagged(_))),
            "{event:?}"
        );
        assert_eq!(event.seq, last + 1, "no streamer event is missed");
        last = event.seq;
        during += 1;
    }
    flooding.await.unwrap();
    assert!(during > 100, "the flood lasted {during} ticks");
}

#[tokio::test]
async fn past_its_buffer_a_subscriber_is_told_exactly_which_of_its_events_it_missed() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut slow = subscribe(
        &mut client,
        pb::SubscribeRequest {
            topics: topics(&["flood"]),
            buffer_bytes: MIN_BUFFER,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut publisher = daemon.client().await;
    let total = 20_000;
    flood(&mut publisher, "flood", total, 1000).await;
    flood(&mut publisher, "elsewhere", 1000, 1000).await;

    // Read everything now: what arrives plus what is reported missed is all of it, and
    // each Lagged names exactly the sequence numbers skipped where it stands.
    let (mut received, mut missed, mut lagged) = (0, 0, 0);
    let (mut next_seq, mut last_received) = (1, 0);
    while received + missed < total {
        let event = tokio::time::timeout(PATIENCE, slow.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event.payload {
            Some(Payload::Lagged(l)) => {
                assert_eq!(l.topics.len(), 1, "only its own topic: {l:?}");
                let skipped = &l.topics[0];
                assert_eq!(skipped.topic, "flood");
                assert_eq!(skipped.missed, l.missed);
                assert_eq!(skipped.first_seq, next_seq);
                assert_eq!(skipped.last_seq - skipped.first_seq + 1, skipped.missed);
                next_seq = skipped.last_seq + 1;
                missed += l.missed;
                lagged += 1;
            }
            Some(Payload::Data(_)) => {
                assert_eq!((event.topic.as_str(), event.seq), ("flood", next_seq));
                last_received = event.seq;
                next_seq += 1;
                received += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received + missed, total);
    assert!(lagged >= 1, "a reader this slow must lag");
    assert_eq!(
        last_received, total,
        "it skips the oldest and keeps the newest"
    );
}

/// Subscribers that stop reading, each with the default 64 MiB buffer, share the
/// daemon's `--max-buffered`: the daemon's memory stays near it, and each is told what
/// it missed.
#[tokio::test]
async fn subscribers_who_stop_reading_cannot_take_the_daemons_memory() {
    let daemon = Daemon::start_with(&["--max-buffered", "8MiB"]);
    let names: Vec<_> = (0..5).map(|i| format!("stalled.{i}")).collect();
    let mut stalled = Vec::new();
    for name in &names {
        let request = pb::SubscribeRequest {
            topics: vec![name.clone()],
            ..Default::default()
        };
        // A connection each, so that one stream's unread events cannot hold another's.
        stalled.push(
            subscribe(&mut daemon.client().await, request)
                .await
                .unwrap(),
        );
    }
    let before = daemon.rss_kib();
    let mut publisher = daemon.client().await;
    // 20 MB on each topic: without the limit the daemon would hold 100 MB.
    for name in &names {
        flood(&mut publisher, name, 20_000, 1000).await;
    }
    let grown = daemon.rss_kib().saturating_sub(before);
    assert!(grown < 50 * 1024, "RSS grew by {grown} KiB");
    for events in &mut stalled {
        let missed = loop {
            let event = tokio::time::timeout(PATIENCE, events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Some(Payload::Lagged(lagged)) = event.payload {
                break lagged.missed;
            }
        };
        assert!(missed > 0);
    }
}

#[tokio::test]
async fn a_subscriber_that_chose_close_gets_every_event_up_to_the_break_then_an_error() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut strict = subscribe(
        &mut client,
        pb::SubscribeRequest {
            topics: topics(&["flood"]),
            buffer_bytes: MIN_BUFFER,
            on_overflow: pb::OverflowPolicy::Close.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut publisher = daemon.client().await;
    flood(&mut publisher, "flood", 20_000, 1000).await;
    let mut seq = 0;
    let status = loop {
        match tokio::time::timeout(PATIENCE, strict.next()).await.unwrap() {
            Some(Ok(event)) => {
                assert_eq!(event.seq, seq + 1, "nothing skipped before the break");
                seq = event.seq;
            }
            Some(Err(status)) => break status,
            None => panic!("ended without an error after {seq} events"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("65600 bytes"),
        "{}",
        status.message()
    );
    assert!(seq > 0 && seq < 20_000, "{seq}");
}

#[tokio::test]
async fn a_burst_within_the_default_buffer_loses_nothing() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["burst"], false).await;
    let mut publisher = daemon.client().await;
    // 40,000 events of ~200 bytes, about 10 MiB held at most, all published before
    // the subscriber reads one.
    flood(&mut publisher, "burst", 40_000, 150).await;
    for seq in 1..=40_000 {
        let event = events.next().await;
        assert!(is_data(&event), "{event:?}");
        assert_eq!(event.seq, seq);
    }
}

#[tokio::test]
async fn subscribe_limits_are_named() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let too_many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let long = format!("{}*", "x".repeat(256));
    for (request, field) in [
        (
            pb::SubscribeRequest {
                topics: too_many,
                ..Default::default()
            },
            "topics:",
        ),
        (
            pb::SubscribeRequest {
                topics: vec!["ok".into(), long],
                ..Default::default()
            },
            "topics[1]:",
        ),
        (
            pb::SubscribeRequest {
                topics: topics(&["a b"]),
                ..Default::default()
            },
            "topics[0]:",
        ),
        (
            pb::SubscribeRequest {
                buffer_bytes: 1 << 40,
                ..Default::default()
            },
            "buffer_bytes:",
        ),
        (
            pb::SubscribeRequest {
                buffer_bytes: 1000,
                ..Default::default()
            },
            "buffer_bytes:",
        ),
        (
            pb::SubscribeRequest {
                on_overflow: 7,
                ..Default::default()
            },
            "on_overflow:",
        ),
    ] {
        let status = subscribe(&mut client, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
        assert!(status.message().len() < 300, "{}", status.message());
    }
    let status = client
        .start_service(pb::StartServiceRequest {
            name: "y".repeat(20_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().len() < 300, "{}", status.message());
}

#[tokio::test]
async fn clients_topics_beyond_the_cap_are_forgotten_and_named_ones_kept() {
    let daemon = Daemon::start_with(&["--max-topics", "100"]);
    let mut client = daemon.client().await;
    let _keeper = Events::open(&mut client, &["keep"], false).await;
    let publish = |topic: &str| pb::PublishRequest {
        topic: topic.into(),
        data: Some(padded(10)),
    };
    let mut publisher = daemon.client().await;
    let first = publisher
        .publish(publish("keep"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.seq, 1);
    let names = (0..5_000).map(move |i| publish(&format!("name.{i}")));
    publisher
        .publish_stream(futures::stream::iter(names))
        .await
        .unwrap();
    let again = |topic| {
        let mut publisher = publisher.clone();
        async move {
            publisher
                .publish(publish(topic))
                .await
                .unwrap()
                .into_inner()
                .seq
        }
    };
    assert_eq!(again("keep").await, 2, "a topic a subscriber names is kept");
    assert_eq!(again("name.0").await, 1, "the oldest was forgotten");
    assert_eq!(again("name.4999").await, 2, "the newest is still known");

    client
        .start_service(crate::harness::start_request("system", 100, &[]))
        .await
        .unwrap();
    let mut system = Events::open(&mut client, &["system"], false).await;
    let event = system.next_where(is_data).await;
    let Some(Payload::System(snapshot)) = event.payload else {
        unreachable!()
    };
    // The clients' topics at most, and the system service's own.
    assert!(
        (90..=101).contains(&snapshot.topics),
        "{} topics held",
        snapshot.topics
    );
}

#[test]
fn bad_bus_settings_are_refused_by_flag_name() {
    let error = Daemon::try_start(&["--subscriber-buffer", "1KiB"], "127.0.0.1:0")
        .err()
        .expect("refused");
    assert!(
        error.contains("--subscriber-buffer: must be from 65600 bytes"),
        "{error}"
    );
    let error = Daemon::try_start(&["--max-topics", "0"], "127.0.0.1:0")
        .err()
        .expect("refused");
    assert!(
        error.contains("--max-topics: must be at least 1"),
        "{error}"
    );
}

/// Subscribe, wait for Subscribed, publish one event: it arrives, every time. Eight
/// streams at a time on one connection, as a client with many would open them.
#[tokio::test]
async fn an_event_published_after_subscribed_always_arrives() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let rounds = (0..8).map(|task| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut missed = 0;
            for round in 0..125 {
                let topic = format!("race.{task}.{round}");
                let mut events = Events::open(&mut client, &[&topic], false).await;
                assert!(events.positions().is_empty(), "a new topic has no position");
                let published = client
                    .publish(pb::PublishRequest {
                        topic: topic.clone(),
                        data: Some(padded(1)),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                match events.within(PATIENCE).await {
                    Some(event) => assert_eq!((event.topic, event.seq), (topic, published.seq)),
                    None => missed += 1,
                }
            }
            missed
        })
    });
    let missed: u32 = futures::future::try_join_all(rounds)
        .await
        .unwrap()
        .into_iter()
        .sum();
    assert_eq!(missed, 0, "of 1,000 first events");
}

#[tokio::test]
async fn subscribed_gives_where_each_matching_topic_stands() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    for topic in ["a/1", "a/1", "a/1", "a/2", "b/1"] {
        client
            .publish(pb::PublishRequest {
                topic: topic.into(),
                data: Some(padded(1)),
            })
            .await
            .unwrap();
    }
    let mut live = Events::open(&mut client, &["a/*"], false).await;
    assert_eq!(live.positions(), [("a/1", 3), ("a/2", 1)]);
    let mut last = Events::open(&mut client, &["a/*"], true).await;
    assert_eq!(last.positions(), [("a/1", 3), ("a/2", 1)]);
    client
        .publish(pb::PublishRequest {
            topic: "a/1".into(),
            data: Some(padded(1)),
        })
        .await
        .unwrap();
    let event = live.next().await;
    assert_eq!((event.topic.as_str(), event.seq), ("a/1", 4));
    // With `last`, the latest events come right after Subscribed, at the positions.
    for (topic, seq) in [("a/1", 3), ("a/2", 1), ("a/1", 4)] {
        let event = last.next().await;
        assert_eq!((event.topic.as_str(), event.seq), (topic, seq));
    }
}

#[tokio::test]
async fn subscribed_comes_first_on_a_very_busy_topic() {
    let daemon = Daemon::start();
    let mut publisher = daemon.client().await;
    let flooding = tokio::spawn(async move { flood(&mut publisher, "busy", 300_000, 100).await });
    let mut opened = 0;
    while !flooding.is_finished() {
        // A connection each round: a connection that cancels many streams with
        // events in flight is closed by HTTP/2's reset limits.
        let mut client = daemon.client().await;
        for (last, buffer_bytes) in [(false, 0), (true, 0), (false, MIN_BUFFER)] {
            let request = pb::SubscribeRequest {
                topics: topics(&["busy"]),
                last,
                buffer_bytes,
                ..Default::default()
            };
            // Checks that Subscribed comes first.
            let mut stream = client.subscribe(request).await.unwrap().into_inner();
            let positions = subscribed(&mut stream).await.positions;
            let Ok(next) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await else {
                assert!(flooding.is_finished(), "no event from a busy topic");
                break;
            };
            let event = next.unwrap().unwrap();
            if buffer_bytes == 0 && !positions.is_empty() {
                // What follows joins the position: the snapshot at it, or the next.
                let at = positions[0].seq;
                assert_eq!(event.seq, if last { at } else { at + 1 }, "{event:?}");
            }
            opened += 1;
        }
    }
    flooding.await.unwrap();
    assert!(opened > 10, "only {opened} subscriptions during the flood");
}
