//! Who may connect and how: Unix sockets, TLS, bearer tokens, the refusal to serve a
//! non-loopback address unprotected, HTTP/2 limits that pace a fast publisher, and
//! panics in RPCs.

use futures::StreamExt;
use prost_types::Struct;
use streamhandler::pb;

use crate::harness::{Daemon, Events, PATIENCE, is_data};

const TINY_EVENTS: u64 = 200_000;
const TINY_TOPICS: u64 = 1_000;

#[tokio::test]
async fn a_fast_stream_of_tiny_events_to_many_topics_is_paced_not_cut_off() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["tiny/*"], false).await;
    // Each event waits a turn of the scheduler, so tonic sends it in a DATA frame of
    // its own, as a publisher of live readings would.
    let requests = futures::stream::iter(0..TINY_EVENTS).then(|i| async move {
        tokio::task::yield_now().await;
        pb::PublishRequest {
            topic: format!("tiny/{}", i % TINY_TOPICS),
            data: Some(Struct::default()),
        }
    });
    let reply = tokio::time::timeout(PATIENCE * 3, client.publish_stream(requests))
        .await
        .expect("the PublishStream finished in time")
        .unwrap_or_else(|status| panic!("PublishStream failed: {status}\n{}", daemon.log()))
        .into_inner();
    assert_eq!(reply.published, TINY_EVENTS);
    let mut received = 0;
    while received < TINY_EVENTS {
        let event = events.next().await;
        assert!(is_data(&event), "not a data event: {event:?}");
        received += 1;
    }
}
