//! Which node of a cluster runs each service: a start on any node places it on one
//! live node, a stop on any node stops it there, a node that dies or loses NATS has
//! its services taken over within the lease, and no service ever runs on two nodes.
//! Each test has a nats-server of its own, so that no other test's nodes take its
//! services.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use streamhandler::pb::{self, event::Payload, lifecycle::Kind};

use crate::harness::{
    Daemon, Events, Nats, PATIENCE, PgSchema, Proxy, crashing_feed, is_data, is_lifecycle,
    start_request,
};

/// A lease outlives its last renewal by 5 s and every node looks for vacant services
/// each second: a takeover comes within their sum. A second more for the start.
const TAKEOVER_BOUND: Duration = Duration::from_secs(7);

fn node(nats: &str, id: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--cluster", nats, "--node-id", id];
    args.extend_from_slice(extra);
    Daemon::start_with(&args)
}

/// Waits until `daemon` counts `n` live members.
async fn until_members(daemon: &Daemon, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = daemon
            .client()
            .await
            .list_nodes(pb::ListNodesRequest {})
            .await;
        if reply.is_ok_and(|r| r.into_inner().nodes.len() == n) {
            return;
        }
        assert!(Instant::now() < deadline, "{n} members never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn listing(daemon: &Daemon) -> pb::ListServicesResponse {
    let mut client = daemon.client().await;
    let reply = client.list_services(pb::ListServicesRequest {}).await;
    reply.unwrap().into_inner()
}

/// Waits until `daemon` lists `name` in `state` on `node` ("" for none).
async fn until_listed(daemon: &Daemon, name: &str, state: pb::ServiceState, node: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let service = daemon.service(name).await;
        if service.state() == state && service.node == node {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} lists {name} as {service:?}, not {state:?} on {node:?}",
            daemon.listening
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lifecycle(event: &pb::Event) -> &pb::Lifecycle {
    match &event.payload {
        Some(Payload::Lifecycle(lifecycle)) => lifecycle,
        _ => panic!("not a lifecycle event: {event:?}"),
    }
}

async fn start(daemon: &Daemon, request: pb::StartServiceRequest) -> pb::StartServiceResponse {
    let reply = daemon.client().await.start_service(request).await;
    reply.unwrap().into_inner()
}

/// A StartService that must be refused as an invalid argument; its message.
async fn start_refused(daemon: &Daemon, request: pb::StartServiceRequest) -> String {
    let reply = daemon.client().await.start_service(request).await;
    let refused = reply.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    refused.message().to_owned()
}

#[tokio::test]
async fn a_start_on_any_node_places_the_service_once_and_a_stop_on_any_node_ends_it() {
    let Some(nats) = Nats::start() else { return };
    let nodes = ["a", "b", "c"].map(|id| node(&nats.url, id, &[]));
    until_members(&nodes[0], 3).await;
    let topics = ["streamer", "system", "reader"];
    let mut watcher = Events::open(&mut nodes[1].client().await, &topics, false).await;

    // Pinned by a start on another node.
    let pinned = start(&nodes[0], start_request("streamer", 200, &[("node", "c")])).await;
    assert!(!pinned.already_running);
    assert_eq!(pinned.service.unwrap().node, "c");
    let started = watcher.next_where(|e| is_lifecycle(e, Kind::Started)).await;
    assert_eq!(
        (started.topic.as_str(), lifecycle(&started).node.as_str()),
        ("streamer", "c")
    );
    watcher
        .next_where(|e| e.topic == "streamer" && is_data(e))
        .await;
    for daemon in &nodes {
        until_listed(daemon, "streamer", pb::ServiceState::Running, "c").await;
    }
    let again = start(&nodes[1], start_request("streamer", 200, &[])).await;
    assert!(again.already_running);
    assert_eq!(again.service.unwrap().node, "c");

    // Unpinned: each to the node running the fewest, the first by id among equals.
    let system = start(&nodes[2], start_request("system", 500, &[])).await;
    assert_eq!(system.service.unwrap().node, "a");
    let reader = start(&nodes[2], start_request("reader", 500, &[])).await;
    assert_eq!(reader.service.unwrap().node, "b");
    let listed = listing(&nodes[2]).await;
    assert_eq!(listed.node_id, "c");
    assert_eq!(listed.cluster_warning, "");
    let counts: Vec<_> = listed
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.services))
        .collect();
    assert_eq!(counts, [("a", 1), ("b", 1), ("c", 1)]);

    // A stop on a node that does not run it.
    let mut client = nodes[0].client().await;
    let stop = pb::StopServiceRequest {
        name: "streamer".into(),
    };
    let stopped = client.stop_service(stop).await.unwrap().into_inner();
    assert!(stopped.was_running);
    let event = watcher
        .next_where(|e| e.topic == "streamer" && is_lifecycle(e, Kind::Stopped))
        .await;
    assert_eq!(lifecycle(&event).node, "c");
    for daemon in &nodes {
        until_listed(daemon, "streamer", pb::ServiceState::Stopped, "").await;
    }
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    while let Some(event) = watcher.within(quiet_until - Instant::now()).await {
        assert_ne!(event.topic, "streamer", "a stopped service published");
    }

    // Pinned to a node that is not there.
    let refused = start_refused(&nodes[0], start_request("streamer", 200, &[("node", "z")])).await;
    assert!(refused.contains("params.node"), "{refused}");
}

#[tokio::test]
async fn a_service_goes_only_to_a_node_that_has_it_configured() {
    let Some(nats) = Nats::start() else { return };
    let config = tempfile::tempdir().unwrap();
    let extra = crate::harness::write(
        config.path(),
        "streamd.toml",
        "[services.extra]\nkind = \"streamer\"\n",
    );
    let with_it = node(&nats.url, "a", &["--config", extra.to_str().unwrap()]);
    let without = node(&nats.url, "b", &[]);
    until_members(&with_it, 2).await;
    // Node a runs one service and b none: b is the least loaded, but lacks the service.
    start(&with_it, start_request("system", 500, &[("node", "a")])).await;
    let asked = Instant::now();
    let placed = start(&with_it, start_request("extra", 200, &[])).await;
    assert_eq!(placed.service.unwrap().node, "a");
    // At once, not after a service left vacant is offered to any node.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    let mut client = with_it.client().await;
    client
        .stop_service(pb::StopServiceRequest {
            name: "extra".into(),
        })
        .await
        .unwrap();
    let refused = start_refused(&with_it, start_request("extra", 200, &[("node", "b")])).await;
    assert!(
        refused.contains("node \"b\" has no service \"extra\""),
        "{refused}"
    );
    drop(without);
}

#[tokio::test]
async fn a_service_that_failed_where_it_ran_starts_again_there_when_asked_on_any_node() {
    let Some(nats) = Nats::start() else { return };
    let config = tempfile::tempdir().unwrap();
    let feed = crashing_feed(config.path()).await;
    let nodes = ["a", "b"].map(|id| node(&nats.url, id, &["--config", feed.to_str().unwrap()]));
    until_members(&nodes[1], 2).await;
    let mut events = Events::open(&mut nodes[1].client().await, &["feed"], false).await;
    let placed = start(&nodes[0], start_request("feed", 100, &[])).await;
    let owner = placed.service.unwrap().node;
    until_listed(&nodes[1], "feed", pb::ServiceState::Failed, &owner).await;
    events.next_where(|e| is_lifecycle(e, Kind::Failed)).await;

    // Asked for again on the other node: no longer "already running" while failed.
    let other = if owner == "a" { &nodes[1] } else { &nodes[0] };
    let again = start(other, start_request("feed", 100, &[])).await;
    assert!(!again.already_running, "{again:?}");
    let service = again.service.unwrap();
    assert_eq!(service.node, owner);
    assert_ne!(service.state(), pb::ServiceState::Failed, "{service:?}");
    let started = events.next_where(|e| is_lifecycle(e, Kind::Started)).await;
    assert_eq!(lifecycle(&started).node, owner);
    // It fails again as it did, and stays where it was.
    events.next_where(|e| is_lifecycle(e, Kind::Failed)).await;
    until_listed(&nodes[1], "feed", pb::ServiceState::Failed, &owner).await;
}

#[tokio::test]
async fn when_its_node_is_killed_another_takes_the_service_over_and_the_node_does_not_take_it_back()
{
    let Some(nats) = Nats::start() else { return };
    let mut nodes = ["a", "b", "c"].map(|id| node(&nats.url, id, &[]));
    until_members(&nodes[0], 3).await;
    let started = start(&nodes[1], start_request("streamer", 200, &[])).await;
    assert_eq!(started.service.unwrap().node, "a");
    let mut watchers = Vec::new();
    for daemon in &nodes[1..] {
        let mut events = Events::open(&mut daemon.client().await, &["streamer"], false).await;
        events.next_where(is_data).await;
        watchers.push(events);
    }

    kill(nodes[0].pid(), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let mut takeovers = Vec::new();
    for events in &mut watchers {
        takeovers.push(events.next_where(|e| is_lifecycle(e, Kind::Started)).await);
    }
    let took = killed.elapsed();
    let new_owner = lifecycle(&takeovers[0]).node.clone();
    assert!(["b", "c"].contains(&new_owner.as_str()), "{takeovers:?}");
    assert!(
        lifecycle(&takeovers[0])
            .message
            .contains("taking over from node a"),
        "{takeovers:?}"
    );
    assert_eq!(
        takeovers[0].seq, takeovers[1].seq,
        "one event, seen on both"
    );
    assert!(took <= TAKEOVER_BOUND, "taken over after {took:?}");
    for events in &mut watchers {
        events.next_where(is_data).await;
    }

    // The killed node comes back under its id: the service stays where it went.
    nodes[0] = nodes[0].restart(&["--cluster", &nats.url, "--node-id", "a"]);
    until_members(&nodes[1], 3).await;
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        for daemon in &nodes {
            let service = daemon.service("streamer").await;
            assert_eq!(service.node, new_owner, "{service:?}");
        }
        if let Some(event) = watchers[0].within(Duration::from_millis(200)).await {
            assert!(!is_lifecycle(&event, Kind::Started), "{event:?}");
        }
    }
}

/// Waits until `daemon` says it is (or is not) cut off from NATS.
async fn until_cut_off(daemon: &Daemon, cut_off: bool) {
    let deadline = Instant::now() + PATIENCE;
    while listing(daemon)
        .await
        .cluster_warning
        .contains("not connected")
        != cut_off
    {
        assert!(Instant::now() < deadline, "never cut off: {cut_off}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events a stream gives within `wait`.
async fn received(events: &mut Events, wait: Duration) -> Vec<pb::Event> {
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    while let Some(event) = events.within(deadline - Instant::now()).await {
        received.push(event);
    }
    received
}

fn is_lagged(event: &pb::Event) -> bool {
    matches!(event.payload, Some(Payload::Lagged(_)))
}

/// Checks that events are numbered one after another, and gives their numbers.
fn one_after_another(events: &[pb::Event]) -> Vec<u64> {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{seqs:?}"
    );
    seqs
}

#[tokio::test]
async fn a_node_cut_off_from_nats_for_a_moment_serves_its_own_subscribers_and_gives_the_cluster_the_same_events_after()
 {
    let Some(nats) = Nats::start() else { return };
    let proxy = Proxy::start(format!("127.0.0.1:{}", nats.port)).await;
    let cut_off = node(&format!("nats://127.0.0.1:{}", proxy.port), "c", &[]);
    until_members(&cut_off, 1).await;
    start(&cut_off, start_request("streamer", 100, &[])).await;
    let other = node(&nats.url, "a", &[]);
    until_members(&other, 2).await;
    let mut here = Events::open(&mut cut_off.client().await, &["streamer"], false).await;
    let mut there = Events::open(&mut other.client().await, &["streamer"], false).await;
    here.next_where(is_data).await;
    let first_there = there.next_where(is_data).await;

    proxy.cut().await;
    until_cut_off(&cut_off, true).await;
    // Well within the lease: the service goes on where it runs, and the node's own
    // subscriber goes on getting its events; the other node gets none of them yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut seen_there = received(&mut there, Duration::from_millis(100)).await;
    let taken_before = seen_there.last().unwrap_or(&first_there).seq;
    let mut seen_here = received(&mut here, Duration::from_millis(100)).await;
    let during: Vec<pb::Event> = seen_here
        .iter()
        .filter(|e| e.seq > taken_before)
        .cloned()
        .collect();
    assert!(
        during.iter().filter(|e| is_data(e)).count() >= 3,
        "{seen_here:?}"
    );

    proxy.restore();
    until_cut_off(&cut_off, false).await;
    // The other node gets the events given while the node was cut off, under the
    // numbers they were given, after those it had, with none missing.
    let last_given = during.last().unwrap().seq;
    while seen_there.last().is_none_or(|e| e.seq < last_given) {
        seen_there.push(there.next().await);
    }
    seen_here.extend(received(&mut here, Duration::from_millis(300)).await);
    seen_there.extend(received(&mut there, Duration::from_millis(300)).await);
    for seen in [&seen_here, &seen_there] {
        assert!(!seen.iter().any(is_lagged), "{seen:?}");
        one_after_another(seen);
    }
    for given in &during {
        let taken = seen_there.iter().find(|e| e.seq == given.seq);
        assert_eq!(taken, Some(given), "event {} differs", given.seq);
    }
}

#[tokio::test]
async fn a_node_cut_off_from_nats_stops_its_service_before_another_takes_it_and_not_after() {
    let Some(nats) = Nats::start() else { return };
    let proxy = Proxy::start(format!("127.0.0.1:{}", nats.port)).await;
    let cut_off = node(&format!("nats://127.0.0.1:{}", proxy.port), "c", &[]);
    until_members(&cut_off, 1).await;
    let started = start(&cut_off, start_request("streamer", 200, &[])).await;
    assert_eq!(started.service.unwrap().node, "c");
    let others = ["a", "b"].map(|id| node(&nats.url, id, &[]));
    until_members(&others[0], 3).await;
    let mut here = Events::open(&mut cut_off.client().await, &["streamer"], false).await;
    let mut events = Events::open(&mut others[0].client().await, &["streamer"], false).await;
    here.next_where(is_data).await;
    events.next_where(is_data).await;

    proxy.cut().await;
    let cut = Instant::now();
    let takeover = events.next_where(|e| is_lifecycle(e, Kind::Started)).await;
    let took = cut.elapsed();
    let new_owner = lifecycle(&takeover).node.clone();
    assert!(["a", "b"].contains(&new_owner.as_str()), "{takeover:?}");
    assert!(took <= TAKEOVER_BOUND, "taken over after {took:?}");
    // By then the cut-off node had stopped its copy, and says why it sees only itself.
    let alone = listing(&cut_off).await;
    assert!(alone.cluster_warning.contains("not connected"), "{alone:?}");
    let own = alone
        .services
        .iter()
        .find(|s| s.name == "streamer")
        .unwrap();
    assert_eq!(own.state(), pb::ServiceState::Stopped, "{own:?}");
    assert!(
        cut_off.log().contains("stopping it on this node"),
        "{}",
        cut_off.log()
    );
    // Until it stopped, it gave its own subscriber the service's events, numbered on
    // from the cluster's last: the numbers the new owner gave again.
    let given = received(&mut here, Duration::from_millis(300)).await;
    let given_seqs = one_after_another(&given);
    let given_from = given_seqs.iter().position(|&seq| seq == takeover.seq);
    let given_from = given_from.unwrap_or_else(|| panic!("{given_seqs:?} {takeover:?}"));
    let given_during = &given[given_from..];
    assert!(
        given_during.iter().filter(|e| is_data(e)).count() >= 2,
        "{given:?}"
    );
    assert!(
        is_lifecycle(given.last().unwrap(), Kind::Stopped),
        "{given:?}"
    );

    proxy.restore();
    let deadline = Instant::now() + PATIENCE;
    while !listing(&cut_off).await.cluster_warning.is_empty() {
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen = vec![takeover];
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        let service = cut_off.service("streamer").await;
        assert_eq!(service.node, new_owner, "{service:?}");
        if let Some(event) = events.within(Duration::from_millis(200)).await {
            assert!(!is_lifecycle(&event, Kind::Started), "{event:?}");
            seen.push(event);
        }
    }
    one_after_another(&seen);
    // Back, the node's subscriber is told that it misses the cluster's events under
    // the numbers it had from the node, and goes on with the new owner's after them.
    let (first, last) = (given_during[0].seq, given.last().unwrap().seq);
    let after = received(&mut here, Duration::from_secs(1)).await;
    let lagged: Vec<_> = after.iter().filter(|e| is_lagged(e)).collect();
    let [
        pb::Event {
            payload: Some(Payload::Lagged(lagged)),
            ..
        },
    ] = &lagged[..]
    else {
        panic!("{after:?}");
    };
    let skipped = &lagged.topics[..];
    assert_eq!(
        (skipped.len(), skipped[0].first_seq, skipped[0].last_seq),
        (1, first, last),
        "{lagged:?}"
    );
    let from_cluster: Vec<pb::Event> = after.into_iter().filter(|e| !is_lagged(e)).collect();
    let cluster_seqs = one_after_another(&from_cluster);
    assert!(
        cluster_seqs.first().is_some_and(|&seq| seq > last),
        "{cluster_seqs:?}"
    );
    for event in from_cluster
        .iter()
        .filter(|e| e.seq <= seen.last().unwrap().seq)
    {
        assert_eq!(seen.iter().find(|e| e.seq == event.seq), Some(event));
    }
}

/// Every user's score on a leaderboard event.
fn scores(event: &pb::Event) -> Vec<(String, i64)> {
    let Some(Payload::Leaderboard(board)) = &event.payload else {
        panic!("not a board: {event:?}")
    };
    let mut scores: Vec<_> = board
        .entries
        .iter()
        .map(|e| (e.username.clone(), e.score))
        .collect();
    scores.sort();
    scores
}

#[tokio::test]
async fn the_leaderboard_taken_over_loses_at_most_a_flush_interval_and_applies_nothing_twice() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let Some(nats) = Nats::start() else { return };
    let database = ["--database-url", schema.url.as_str()];
    let first = node(&nats.url, "a", &database);
    until_members(&first, 1).await;
    // Every round adds exactly 1 to every score, so scores count the rounds applied.
    let params = [
        ("change_min", "1"),
        ("change_max", "1"),
        ("flush_interval", "300ms"),
    ];
    let started = start(&first, start_request("leaderboard", 100, &params)).await;
    assert_eq!(started.service.unwrap().node, "a");
    let second = node(&nats.url, "b", &database);
    until_members(&second, 2).await;
    let mut events = Events::open(&mut second.client().await, &["leaderboard"], false).await;
    let mut last = events.next_where(is_data).await;
    for _ in 0..10 {
        last = events.next_where(is_data).await;
    }

    kill(first.pid(), Signal::SIGKILL).unwrap();
    let takeover = loop {
        let event = events.next().await;
        if is_data(&event) {
            last = event;
        } else if is_lifecycle(&event, Kind::Started) {
            break event;
        }
    };
    assert_eq!(lifecycle(&takeover).node, "b");
    let resumed = events.next_where(is_data).await;
    // Three rounds per flush interval; one more may have been saved but not yet
    // published when the node died.
    for ((user, before), (_, after)) in scores(&last).into_iter().zip(scores(&resumed)) {
        let lost = before + 1 - after;
        assert!(
            (-1..=4).contains(&lost),
            "{user}: {before} last published, {after} after the takeover"
        );
    }
}

#[tokio::test]
async fn a_replaced_leaderboard_owners_late_flush_is_refused_by_the_database() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let Some(nats) = Nats::start() else { return };
    // The first owner reaches NATS and PostgreSQL through proxies the test cuts.
    let url = reqwest::Url::parse(&schema.url).unwrap();
    let database = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let database_proxy = Proxy::start(database).await;
    let mut proxied = url.clone();
    proxied.set_port(Some(database_proxy.port)).unwrap();
    let nats_proxy = Proxy::start(format!("127.0.0.1:{}", nats.port)).await;
    let config = tempfile::tempdir().unwrap();
    // Its final flush goes on being tried until the other node has taken over.
    let patient = crate::harness::write(
        config.path(),
        "streamd.toml",
        "[supervisor]\nstop_timeout = \"15s\"\n",
    );
    let first = node(
        &format!("nats://127.0.0.1:{}", nats_proxy.port),
        "a",
        &[
            "--database-url",
            proxied.as_str(),
            "--config",
            patient.to_str().unwrap(),
        ],
    );
    until_members(&first, 1).await;
    let params = [
        ("change_min", "1"),
        ("change_max", "1"),
        ("flush_interval", "300ms"),
    ];
    start(&first, start_request("leaderboard", 100, &params)).await;
    let second = node(&nats.url, "b", &["--database-url", &schema.url]);
    until_members(&second, 2).await;
    let mut events = Events::open(&mut second.client().await, &["leaderboard"], false).await;
    for _ in 0..5 {
        events.next_where(is_data).await;
    }

    nats_proxy.cut().await;
    database_proxy.cut().await;
    let takeover = events.next_where(|e| is_lifecycle(e, Kind::Started)).await;
    assert_eq!(lifecycle(&takeover).node, "b");
    let resumed = scores(&events.next_where(is_data).await);
    // The first owner's last rounds, unsaved, reach the database now: refused.
    database_proxy.restore();
    let deadline = Instant::now() + PATIENCE;
    while !first
        .log()
        .contains("another node has taken this leaderboard over")
    {
        assert!(Instant::now() < deadline, "{}", first.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The second owner's rounds go on from its own: the refused flush left no trace.
    let later = scores(&events.next_where(is_data).await);
    for ((user, before), (_, after)) in resumed.into_iter().zip(later) {
        assert_eq!(after, before + 1, "{user}");
    }
    // What the database holds is the second owner's: behind it, never ahead.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let saved = streamhandler::store::Store::open(Some(&schema.url), config.path()).unwrap();
    let stored = saved.user_scores().await.unwrap();
    let mut shown = scores(&events.next_where(is_data).await);
    while let Some(event) = events.within(Duration::from_millis(100)).await {
        if is_data(&event) {
            shown = scores(&event);
        }
    }
    for user in stored {
        let (_, now) = shown
            .iter()
            .find(|(name, _)| *name == user.username)
            .unwrap();
        // Behind by the rounds since its last flush, however many a loaded machine
        // lets pass; never ahead, as a late write of the replaced owner's could be.
        assert!(
            user.score <= *now,
            "{}: {} saved, {now} shown",
            user.username,
            user.score
        );
    }
    saved.close().await;
}
