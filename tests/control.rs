//! The control plane through a tonic client: starting, stopping, listing, subscribing
//! and publishing.

use std::time::Duration;

use prost_types::{Struct, Value, value::Kind as ValueKind};
use streamhandler::pb::{self, event::Payload, lifecycle::Kind};
use tonic::Code;

use crate::harness::{Daemon, Events, is_data, is_lifecycle};

fn start(name: &str) -> pb::StartServiceRequest {
    pb::StartServiceRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn every(millis: u64, name: &str) -> pb::StartServiceRequest {
    pb::StartServiceRequest {
        interval: Some(Duration::from_millis(millis).try_into().unwrap()),
        ..start(name)
    }
}

fn stop(name: &str) -> pb::StopServiceRequest {
    pb::StopServiceRequest { name: name.into() }
}

fn data(n: f64) -> Struct {
    Struct {
        fields: [(
            "n".to_owned(),
            Value {
                kind: Some(ValueKind::NumberValue(n)),
            },
        )]
        .into(),
    }
}

#[tokio::test]
async fn start_streams_events_and_stop_ends_them() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["streamer"], false).await;

    let reply = client
        .start_service(every(100, "streamer"))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.already_running);
    assert_eq!(reply.service.unwrap().state(), pb::ServiceState::Running);

    let started = events.next().await;
    assert!(is_lifecycle(&started, Kind::Started), "{started:?}");
    let mut last_seq = started.seq;
    for _ in 0..3 {
        let event = events.next().await;
        assert_eq!(event.topic, "streamer");
        assert_eq!(event.seq, last_seq + 1, "sequence numbers have no gaps");
        last_seq = event.seq;
        let Some(Payload::Points(points)) = event.payload else {
            panic!("not points: {event:?}");
        };
        assert_eq!(points.series.len(), 10);
        assert!(
            points
                .series
                .iter()
                .flat_map(|s| &s.points)
                .all(|p| (0.0..=3.0).contains(&p.x) && (0.0..=6.0).contains(&p.y))
        );
    }

    let reply = client
        .stop_service(stop("streamer"))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.was_running && !reply.forced);
    let stopped = events.next_where(|e| !is_data(e)).await;
    assert!(is_lifecycle(&stopped, Kind::Stopped), "{stopped:?}");
    // Ten intervals without a further event.
    assert_eq!(events.within(Duration::from_secs(1)).await, None);

    let streamer = daemon.service("streamer").await;
    assert_eq!(streamer.state(), pb::ServiceState::Stopped);
    assert!(streamer.events_published >= 3);
    assert!(streamer.last_event_at.is_some());
    assert_eq!(streamer.started_at, None);
}

#[tokio::test]
async fn starting_twice_runs_one_timer() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["streamer"], false).await;
    let interval = Duration::from_millis(200);
    client.start_service(every(200, "streamer")).await.unwrap();
    let again = client
        .start_service(every(200, "streamer"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_running);
    let again = client
        .start_service(start("streamer"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_running);

    let mut times = Vec::new();
    while times.len() < 6 {
        let event = events.next().await;
        if is_data(&event) {
            let time = event.time.unwrap();
            times.push(Duration::new(time.seconds as u64, time.nanos as u32));
        }
    }
    // A second timer would halve some gaps; a slow machine only lengthens them.
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= interval * 3 / 4,
            "events {gap:?} apart with a {interval:?} interval"
        );
    }
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;

    let status = client.start_service(start("nope")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // Worded for any gRPC client, not for streamctl.
    assert_eq!(
        status.message(),
        "no service named \"nope\"; ListServices shows every service"
    );
    assert_eq!(
        client.stop_service(stop("nope")).await.unwrap_err().code(),
        Code::NotFound
    );

    let mut bad_param = start("streamer");
    bad_param.params.insert("colour".into(), "red".into());
    let status = client.start_service(bad_param).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("params.colour:"),
        "{}",
        status.message()
    );

    let mut bad_value = start("streamer");
    bad_value.params.insert("series".into(), "many".into());
    let status = client.start_service(bad_value).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("params.series:"),
        "{}",
        status.message()
    );

    let status = client
        .start_service(every(0, "streamer"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("interval:"),
        "{}",
        status.message()
    );

    let status = client
        .subscribe(pb::SubscribeRequest {
            topics: vec!["[unclosed".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // None of it started anything, and the daemon is fine.
    let list = client
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.services
            .iter()
            .all(|s| s.state() == pb::ServiceState::Stopped)
    );
    let reply = client
        .stop_service(stop("streamer"))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.was_running);
}

#[tokio::test]
async fn list_shows_every_card() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let list = client
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, crate::harness::SERVICES);
    for service in &list.services {
        assert!(!service.description.is_empty());
        assert!(service.interval.is_some());
    }
}

#[tokio::test]
async fn publish_reaches_subscribers_beside_services() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut mine = Events::open(&mut client, &["sensors/*"], false).await;
    let mut all = Events::open(&mut client, &[], false).await;
    client.start_service(every(100, "streamer")).await.unwrap();

    for n in 1..=3 {
        let reply = client
            .publish(pb::PublishRequest {
                topic: "sensors/kitchen".into(),
                data: Some(data(n as f64)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.seq, n);
    }
    for n in 1..=3u64 {
        let event = mine.next().await;
        assert_eq!((event.topic.as_str(), event.seq), ("sensors/kitchen", n));
        assert_eq!(event.payload, Some(Payload::Data(data(n as f64))));
    }
    let seen_streamer = all.next_where(|e| e.topic == "streamer").await;
    assert!(seen_streamer.seq >= 1);
    all.next_where(|e| e.topic == "sensors/kitchen").await;

    for (topic, field) in [("streamer", "topic"), ("bad topic", "topic"), ("", "topic")] {
        let status = client
            .publish(pb::PublishRequest {
                topic: topic.into(),
                data: Some(data(0.0)),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{topic:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let status = client
        .publish(pb::PublishRequest {
            topic: "sensors/big".into(),
            data: Some(Struct {
                fields: [(
                    "blob".to_owned(),
                    Value {
                        kind: Some(ValueKind::StringValue("x".repeat(100_000))),
                    },
                )]
                .into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("limit"), "{}", status.message());
}

#[tokio::test]
async fn last_sends_the_latest_data_of_each_topic_first() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    for n in 1..=3 {
        client
            .publish(pb::PublishRequest {
                topic: "a".into(),
                data: Some(data(n as f64)),
            })
            .await
            .unwrap();
    }
    client
        .publish(pb::PublishRequest {
            topic: "b".into(),
            data: Some(data(9.0)),
        })
        .await
        .unwrap();
    let mut events = Events::open(&mut client, &["a", "c"], true).await;
    let first = events.next().await;
    assert_eq!((first.topic.as_str(), first.seq), ("a", 3));
    client
        .publish(pb::PublishRequest {
            topic: "a".into(),
            data: Some(data(4.0)),
        })
        .await
        .unwrap();
    let next = events.next().await;
    assert_eq!((next.topic.as_str(), next.seq), ("a", 4));
}

#[tokio::test]
async fn a_client_that_vanishes_is_forgotten() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    client.start_service(every(100, "system")).await.unwrap();
    {
        let mut other = daemon.client().await;
        let mut events = Events::open(&mut other, &[], false).await;
        events.next().await;
    }
    let mut watch = Events::open(&mut client, &["system"], false).await;
    // Once the dropped stream is noticed, only the watcher remains.
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        let event = watch.next_where(is_data).await;
        let Some(Payload::System(snapshot)) = event.payload else {
            unreachable!()
        };
        if snapshot.subscribers == 1 {
            assert!(snapshot.rss_bytes > 0);
            let system = snapshot
                .services
                .iter()
                .find(|s| s.name == "system")
                .unwrap();
            assert_eq!(system.state(), pb::ServiceState::Running);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "subscriber count stayed {}",
            snapshot.subscribers
        );
    }
}

#[tokio::test]
async fn reflection_v1_describes_the_api() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let daemon = Daemon::start();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", daemon.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"streamhandler.v1.StreamHandler"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test]
async fn publish_stream_publishes_in_order_and_names_a_bad_event() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["batch"], false).await;
    let request = |topic: &str, n| pb::PublishRequest {
        topic: topic.into(),
        data: Some(data(n as f64)),
    };
    let batch: Vec<_> = (0..500).map(|n| request("batch", n)).collect();
    let reply = client
        .publish_stream(futures::stream::iter(batch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.published, 500);
    for n in 0..500u64 {
        let event = events.next().await;
        assert_eq!(event.seq, n + 1);
        assert_eq!(event.payload, Some(Payload::Data(data(n as f64))));
    }

    let mixed = vec![
        request("batch", 500),
        request("streamer", 0),
        request("batch", 501),
    ];
    let status = client
        .publish_stream(futures::stream::iter(mixed))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("events[1].topic:"),
        "{}",
        status.message()
    );
    // The one before it went out; the one after it did not.
    assert_eq!(events.next().await.seq, 501);
    assert_eq!(events.within(Duration::from_millis(300)).await, None);
}
