//! Several real streamd nodes joined through this machine's NATS with JetStream: an
//! event published on any node reaches the subscribers of every node, each topic
//! numbered without gaps or repeats across nodes; a node that joins later knows where
//! every topic stands.

use std::{collections::BTreeSet, process::Command, time::Duration};

use prost_types::{Struct, Value, value::Kind as ValueKind};
use streamhandler::pb::{self, event::Payload, stream_handler_client::StreamHandlerClient};
use tonic::transport::Channel;

use crate::{
    harness::{Daemon, Events, Nats, PATIENCE, STREAMD, nats_url, start_request, text, unique},
    transport::refused,
};

/// A node of the cluster at `nats`.
fn node(nats: &str, id: &str) -> Daemon {
    Daemon::start_with(&["--cluster", nats, "--node-id", id])
}

fn numbered(n: u64) -> Struct {
    Struct {
        fields: [(
            "n".to_owned(),
            Value {
                kind: Some(ValueKind::NumberValue(n as f64)),
            },
        )]
        .into(),
    }
}

fn number_of(event: &pb::Event) -> u64 {
    match &event.payload {
        Some(Payload::Data(data)) => match data.fields["n"].kind {
            Some(ValueKind::NumberValue(n)) => n as u64,
            _ => panic!("not a numbered event: {event:?}"),
        },
        _ => panic!("not a data event: {event:?}"),
    }
}

async fn publish(client: &mut StreamHandlerClient<Channel>, topic: &str, n: u64) -> u64 {
    client
        .publish(pb::PublishRequest {
            topic: topic.into(),
            data: Some(numbered(n)),
        })
        .await
        .unwrap()
        .into_inner()
        .seq
}

#[tokio::test]
async fn events_from_every_node_reach_every_node_in_one_order_once() {
    let Some(nats) = nats_url() else { return };
    let nodes = ["a", "b", "c"].map(|id| node(&nats, id));
    let topic = unique("cluster");
    let mut subscribers = Vec::new();
    for node in &nodes {
        subscribers.push(Events::open(&mut node.client().await, &[&topic], false).await);
    }
    // Each node publishes 100 events at once, unary and in a PublishStream, so that
    // the nodes keep numbering the same topic at the same time.
    const EACH: u64 = 100;
    let mut publishers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (mut client, topic) = (node.client().await, topic.clone());
        let first = i as u64 * EACH;
        publishers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in first..first + EACH / 2 {
                seqs.push(publish(&mut client, &topic, n).await);
            }
            let events = (first + EACH / 2..first + EACH).map(move |n| pb::PublishRequest {
                topic: topic.clone(),
                data: Some(numbered(n)),
            });
            let reply = client.publish_stream(futures::stream::iter(events)).await;
            assert_eq!(reply.unwrap().into_inner().published, EACH / 2);
            seqs
        }));
    }
    let mut given = Vec::new();
    for publisher in publishers {
        given.extend(publisher.await.unwrap());
    }
    let total = EACH * nodes.len() as u64;
    let unique_given: BTreeSet<_> = given.iter().copied().collect();
    assert_eq!(
        unique_given.len(),
        given.len(),
        "a number given twice: {given:?}"
    );
    let mut orders = Vec::new();
    for (subscriber, id) in subscribers.iter_mut().zip(["a", "b", "c"]) {
        let mut order = Vec::new();
        for expected_seq in 1..=total {
            let event = subscriber.next().await;
            assert_eq!(event.seq, expected_seq, "node {id}: numbered without gaps");
            order.push(number_of(&event));
        }
        let seen: BTreeSet<_> = order.iter().copied().collect();
        assert_eq!(seen, (0..total).collect(), "node {id}: every event once");
        assert_eq!(subscriber.within(Duration::from_millis(300)).await, None);
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "one order everywhere"
    );
}

#[tokio::test]
async fn a_node_that_joins_later_knows_where_each_topic_stands() {
    let Some(nats) = nats_url() else { return };
    let first = node(&nats, "first");
    let prefix = unique("joined");
    let (one, two) = (format!("{prefix}.one"), format!("{prefix}.two"));
    let mut client = first.client().await;
    for n in 1..=3 {
        publish(&mut client, &one, n).await;
    }
    publish(&mut client, &two, 7).await;
    let later = node(&nats, "later");
    let pattern = format!("{prefix}.*");
    let mut last = Events::open(&mut later.client().await, &[&pattern], true).await;
    assert_eq!(last.positions(), [(one.as_str(), 3), (two.as_str(), 1)]);
    for (topic, seq, n) in [(&one, 3, 3), (&two, 1, 7)] {
        let event = last.next().await;
        assert_eq!(
            (&event.topic, event.seq, number_of(&event)),
            (topic, seq, n)
        );
    }
    // The later node numbers after the first's events, and the first node sees it.
    let mut watching = Events::open(&mut client, &[&one], false).await;
    assert_eq!(publish(&mut later.client().await, &one, 4).await, 4);
    let event = watching.next().await;
    assert_eq!((event.seq, number_of(&event)), (4, 4));
    let event = last.next().await;
    assert_eq!((&event.topic, event.seq), (&one, 4));
}

#[test]
fn a_cluster_that_cannot_be_reached_stops_the_node_with_a_clear_error() {
    let stderr = refused(&["--cluster", "nats://127.0.0.1:1", "--node-id", "lonely"]);
    assert!(
        stderr.contains("cannot reach the cluster's NATS at nats://127.0.0.1:1"),
        "{stderr}"
    );
    let cases: [(&[&str], &str); 3] = [
        (&["--cluster", "nats://127.0.0.1:4222"], "--node-id"),
        (
            &["--cluster", "nats://127.0.0.1:4222", "--node-id", "a.b"],
            "letters, digits",
        ),
        (
            &["--cluster", "http://[::1", "--node-id", "a"],
            "not a NATS server address",
        ),
    ];
    for (args, message) in cases {
        let output = Command::new(STREAMD).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_node_logs_in_to_nats_with_a_password_or_a_tls_certificate() {
    let Some(nats) = Nats::start_with(&["--user", "streamd", "--pass", "s3cr/t"]) else {
        return;
    };
    let port = nats.port;
    let daemon = node(&format!("nats://streamd:s3cr%2Ft@127.0.0.1:{port}"), "pw");
    let (stdout, stderr) = text(&daemon.ctl(&["nodes"]));
    assert!(stdout.contains("pw *"), "{stdout}{stderr}");
    assert!(!daemon.log().contains("s3cr"), "{}", daemon.log());
    let wrong = format!("nats://streamd:wr0ng@127.0.0.1:{port}");
    let stderr = refused(&["--cluster", &wrong, "--node-id", "refused"]);
    assert!(
        stderr.contains("cannot reach the cluster's NATS") && !stderr.contains("wr0ng"),
        "{stderr}"
    );

    // TLS, the server verifying the node's certificate as the node verifies the server's.
    let certs = crate::transport::Certs::new();
    let Some(tls) = Nats::start_with(&[
        "--tls",
        "--tlscert",
        &certs.path("server.pem"),
        "--tlskey",
        &certs.path("server.key"),
        "--tlsverify",
        "--tlscacert",
        &certs.path("ca.pem"),
    ]) else {
        return;
    };
    let url = format!("tls://127.0.0.1:{}", tls.port);
    let (ca, cert, key) = (
        certs.path("ca.pem"),
        certs.path("client.pem"),
        certs.path("client.key"),
    );
    let with_ca = ["--cluster-tls-ca", ca.as_str()];
    let daemon = Daemon::start_with(
        &[
            &["--cluster", &url, "--node-id", "tls"][..],
            &with_ca,
            &["--cluster-tls-cert", &cert, "--cluster-tls-key", &key],
        ]
        .concat(),
    );
    let (stdout, stderr) = text(&daemon.ctl(&["nodes"]));
    assert!(stdout.contains("tls *"), "{stdout}{stderr}");
    // Without its certificate, or without the CA to trust the server by: refused.
    for extra in [&with_ca[..], &[]] {
        let stderr = refused(&[&["--cluster", &url, "--node-id", "refused"][..], extra].concat());
        assert!(
            stderr.contains("cannot reach the cluster's NATS"),
            "{stderr}"
        );
    }
}

/// A node id no other test uses: clusters share their NATS server.
fn node_id(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[tokio::test]
async fn every_node_lists_the_members_and_one_that_stops_leaves_the_list() {
    // A cluster of its own: other tests' nodes would take the service it starts.
    let Some(nats) = Nats::start() else { return };
    let (first, second) = (node_id("first"), node_id("second"));
    let one = node(&nats.url, &first);
    let mut two = node(&nats.url, &second);
    let pinned = start_request("streamer", 1000, &[("node", &second)]);
    two.client().await.start_service(pinned).await.unwrap();
    // The service count comes with the next report, at most a second later.
    let listed = || {
        let (stdout, stderr) = text(&one.ctl(&["nodes"]));
        assert!(stderr.is_empty(), "{stderr}");
        stdout
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let table = loop {
        let table = listed();
        let row = table
            .lines()
            .find(|l| l.starts_with(&second))
            .unwrap_or_default();
        if row.split_whitespace().nth(2) == Some("1") || std::time::Instant::now() > deadline {
            break table;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let heading = table.lines().next().unwrap();
    assert!(
        heading.starts_with("NODE") && heading.contains("SERVICES"),
        "{table}"
    );
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row(&first)[..3],
        [first.clone(), "*".into(), one.listening.clone()]
    );
    assert_eq!(
        row(&second)[..3],
        [second.clone(), two.listening.clone(), "1".into()]
    );
    two.terminate().await;
    assert!(
        !listed().contains(&second),
        "a node that stopped leaves at once"
    );
}

#[tokio::test]
async fn a_daemon_that_runs_alone_says_so() {
    let daemon = Daemon::start();
    let (stdout, _) = text(&daemon.ctl(&["nodes"]));
    assert!(stdout.contains("runs alone"), "{stdout}");
}

#[tokio::test]
async fn the_leaderboard_of_a_node_refuses_a_database_file_no_other_node_can_share() {
    let Some(nats) = nats_url() else { return };
    let daemon = node(&nats, &node_id("sqlite"));
    let refused = daemon
        .client()
        .await
        .start_service(start_request("leaderboard", 1000, &[]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("needs a database every node shares")
            && refused.message().contains("--database-url postgres://"),
        "{}",
        refused.message()
    );
    let (_, stderr) = text(&daemon.ctl(&["start", "leaderboard"]));
    assert!(
        stderr.contains("needs a database every node shares"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_node_goes_on_publishing_after_its_nats_restarts() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let daemon = node(&nats.url, "restarted");
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["t"], false).await;
    assert_eq!(publish(&mut client, "t", 1).await, 1);
    assert_eq!(events.next().await.seq, 1);

    nats.kill();
    let refused = client
        .publish(pb::PublishRequest {
            topic: "t".into(),
            data: Some(numbered(2)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    nats.restart();
    let deadline = std::time::Instant::now() + PATIENCE;
    let seq = loop {
        let request = pb::PublishRequest {
            topic: "t".into(),
            data: Some(numbered(3)),
        };
        match client.publish(request).await {
            Ok(reply) => break reply.into_inner().seq,
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("still refused after the restart: {e:?}"),
        }
    };
    assert_eq!(seq, 2, "numbering goes on from the stream kept on disk");
    let event = events.next().await;
    assert_eq!((event.seq, number_of(&event)), (2, 3));
}
