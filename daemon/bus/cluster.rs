//! The bus of a cluster: several streamd nodes that share their events through NATS
//! JetStream, each fanning them out to its own subscribers.
//!
//! Every event goes once to `streamhandler.v1.events.<topic>`, and the events stream
//! takes it; the events of a topic that wait together on a node go in one message,
//! whose header numbers the first. Numbers are given against that stream: a node
//! publishes a topic's next message with the stream's last sequence for that subject
//! as the expected one, so that of two nodes numbering the same topic at once one is
//! refused, reads the topic's last event and numbers again. Each topic's numbers thus
//! stay gap-free across nodes, and none is given twice.
//!
//! Each node takes every event the stream took, its own included, from one ordered
//! JetStream consumer and hands it to an in-process [`LocalBus`] with its number, so
//! that subscribers on every node see the same events in the same order, under the
//! same buffers and Lagged rules. (A node hands its services' events to its own bus
//! as soon as the stream took them; their copies from the consumer are then dropped.)
//! The events stream holds events for a while; a second stream, sourced from it, keeps
//! each topic's latest ones for as long as the topic is kept. A node reads that one,
//! then the events stream's latest of each topic, before it serves anyone, so that
//! `last` and the Subscribed positions cover events published before it joined.
//!
//! A node cut off from NATS goes on giving its own services' events to its own
//! subscribers: it numbers them on from the topic's last, and holds them for the
//! cluster. When NATS is back it gives them to the cluster under those numbers, unless
//! another node numbered the topic meanwhile (it took the service over, the lease
//! having run out): then the cluster's numbers stand, and the node's subscribers are
//! told which of the cluster's events they miss. Either way no subscriber anywhere
//! gets a number twice. Clients' events are refused while NATS is away.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::DeliverPolicy,
        context::{PublishErrorKind, traits::Publisher as _},
        message::PublishMessage,
        stream::{self, LastRawMessageErrorKind},
    },
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{
    EventBus, Events, Kind, LocalBus, Outgoing, Overflows, Published, Refused, Settings,
    SubscribeOptions, draft, lock,
};
use crate::{cluster::Connection, wire::Draft};

/// Where every event goes: this, then its topic.
pub const SUBJECT_PREFIX: &str = "streamhandler.v1.events.";
/// The JetStream stream that takes every event, and holds it for a while.
pub const EVENTS_STREAM: &str = "STREAMHANDLER_EVENTS";
/// The JetStream stream that holds each topic's latest events, sourced from the other.
pub const LATEST_STREAM: &str = "STREAMHANDLER_LATEST";
/// Events it holds of each topic: the latest, and enough before it that a service's
/// latest data outlives the lifecycle events after it (which `last` does not give).
const KEPT_PER_TOPIC: i64 = 16;
/// How long the events stream holds an event: how far behind a node may fall and
/// catch up. On disk, so that the cluster's events outlive a restart of NATS, and
/// capped.
const EVENTS_RETENTION: Duration = Duration::from_secs(600);
const EVENTS_MAX_BYTES: i64 = 256 << 20;
/// The number, within its topic, of a message's first event.
const SEQ_HEADER: &str = "Streamhandler-Seq";
/// The node that published a message.
const NODE_HEADER: &str = "Streamhandler-Node";
/// The most bytes of events one message carries: well within NATS's default 1 MiB.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Events of all topics that wait for the cluster to take them, in bytes: beyond,
/// publishing is refused until it catches up.
const MAX_WAITING_BYTES: usize = 64 << 20;
/// How long a joining node may take to read the latest event of every topic.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster has to take an event before the publish is given up.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// While a topic has events held for the cluster, how often its new events are looked
/// for (to give them to this node's subscribers), and how often the cluster is tried.
const HOLD_POLL: Duration = Duration::from_millis(50);
const RELEASE_RETRY: Duration = Duration::from_millis(500);

/// A cheap-to-clone handle to a node's share of a cluster's bus.
#[derive(Clone)]
pub struct ClusterBus {
    shared: Arc<Shared>,
}

struct Shared {
    local: LocalBus,
    jetstream: jetstream::Context,
    /// Every event, for a while: what nodes follow, and what numbers are given against.
    events: stream::Stream,
    /// The latest events of each topic, for as long as the topic is kept.
    latest: stream::Stream,
    /// Each topic with events waiting to be numbered, in order; a topic leaves when it
    /// has none. One task per topic sends them.
    lines: Mutex<HashMap<Arc<str>, VecDeque<Waiting>>>,
    /// Where the lines' tasks run: the runtime the bus was joined on, whichever one
    /// the publishing RPC is served on (daemon/lanes.rs).
    runtime: tokio::runtime::Handle,
    /// The last position this node knows of each topic it published services' events
    /// to (a few: one per service), kept between its bursts of events, so that a node
    /// cut off from NATS numbers on from its own last event even if that one has not
    /// yet come back to it.
    services_last: Mutex<HashMap<Arc<str>, Position>>,
    /// Bytes of events waiting, or held while the cluster cannot take them.
    waiting_bytes: AtomicUsize,
    /// Set by the connection: whether NATS can be reached now.
    connected: watch::Receiver<bool>,
    /// Written on every message, so that a node knows its own.
    node_id: String,
}

struct Waiting {
    body: Bytes,
    kind: Kind,
    numbered: oneshot::Sender<Result<u64, Refused>>,
}

/// A service's event that this node numbered and gave its own subscribers while the
/// cluster could not take it, held for the cluster.
struct HeldEvent {
    seq: u64,
    kind: Kind,
    body: Bytes,
}

/// A topic's last event: its number, its sequence in the JetStream stream, and
/// whether this node published it.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    seq: u64,
    stream_seq: u64,
    ours: bool,
}

/// Why a message was not taken.
enum Put {
    /// Another node numbered the topic since the last position read.
    Outnumbered,
    Failed(Refused),
}

impl ClusterBus {
    /// Connects to the cluster's NATS, makes sure its stream exists, reads the latest
    /// events into the node's bus and follows the events of every node from then on.
    pub async fn join(
        connection: &Connection,
        settings: Settings,
        stop: CancellationToken,
    ) -> Result<Self, String> {
        let (client, jetstream) = (&connection.client, connection.jetstream.clone());
        let events = connection
            .open_stream(stream::Config {
                name: EVENTS_STREAM.into(),
                subjects: vec![format!("{SUBJECT_PREFIX}>")],
                max_age: EVENTS_RETENTION,
                max_bytes: EVENTS_MAX_BYTES,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let latest = connection
            .open_stream(stream::Config {
                name: LATEST_STREAM.into(),
                sources: Some(vec![stream::Source {
                    name: EVENTS_STREAM.into(),
                    ..Default::default()
                }]),
                max_messages_per_subject: KEPT_PER_TOPIC,
                // Clients' topics are bounded as on one node: the oldest go first.
                max_messages: settings.max_topics as i64 * KEPT_PER_TOPIC,
                discard: stream::DiscardPolicy::Old,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let shared = Arc::new(Shared {
            local: LocalBus::new(settings),
            jetstream,
            events,
            latest,
            lines: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
            services_last: Mutex::default(),
            waiting_bytes: AtomicUsize::new(0),
            connected: connection.connected.clone(),
            node_id: connection.node_id.clone(),
        });
        // Subscribers are served once the node knows where every topic stands: the
        // latest event of each, from the stream that keeps them, then those of the
        // topics the events stream still holds, which may be newer. From there the
        // same consumer goes on with every event the events stream takes, in its
        // order; not a plain subscription, which would also see the publishes refused
        // for a wrong last sequence.
        let mut snapshot = ordered(client, &shared.latest, DeliverPolicy::All).await?;
        shared.catch_up(&mut snapshot, &shared.latest).await?;
        drop(snapshot);
        let mut live = ordered(client, &shared.events, DeliverPolicy::LastPerSubject).await?;
        shared.catch_up(&mut live, &shared.events).await?;
        tokio::spawn(shared.clone().follow(live, stop));
        Ok(Self { shared })
    }

    /// The in-process bus this node's subscribers read from.
    pub fn local(&self) -> &LocalBus {
        &self.shared.local
    }
}

impl EventBus for ClusterBus {
    fn publish(&self, topic: &str, event: Outgoing<'_>) -> Result<Published, Refused> {
        let body = draft(topic, &event, std::time::SystemTime::now())?.unnumbered();
        let (numbered, rx) = oneshot::channel();
        let size = body.len();
        if self.shared.waiting_bytes.fetch_add(size, Ordering::Relaxed) + size > MAX_WAITING_BYTES {
            let waiting = self.shared.waiting_bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(Refused::Busy(waiting - size));
        }
        let waiting = Waiting {
            body,
            kind: Kind::of(&event),
            numbered,
        };
        let start = {
            let mut lines = lock(&self.shared.lines);
            match lines.get_mut(topic) {
                Some(line) => {
                    line.push_back(waiting);
                    false
                }
                None => {
                    lines.insert(topic.into(), VecDeque::from([waiting]));
                    true
                }
            }
        };
        if start {
            self.shared
                .runtime
                .spawn(self.shared.clone().send_line(topic.into()));
        }
        Ok(Published::Pending(rx))
    }

    fn subscribe(&self, options: SubscribeOptions) -> Result<Events, Refused> {
        self.shared.local.subscribe(options)
    }

    fn close(&self) {
        self.shared.local.close()
    }

    fn subscribers(&self) -> usize {
        self.shared.local.subscribers()
    }

    fn topics(&self) -> usize {
        self.shared.local.topics()
    }

    fn overflows(&self) -> Overflows {
        self.shared.local.overflows()
    }
}

impl Shared {
    /// Sends a topic's waiting events to the cluster until none waits, then lets the
    /// topic go. Those that wait together go in one message, under one check of the
    /// topic's last number, so that a topic's rate is not one event per round trip.
    /// Events the cluster cannot take are held (see [`Shared::hold`]) and tried again
    /// every so often, ahead of any newer.
    async fn send_line(self: Arc<Self>, topic: Arc<str>) {
        let subject = subject(&topic);
        let mut known = lock(&self.services_last).get(&topic).copied();
        let mut service = known.is_some();
        let mut held = VecDeque::new();
        let mut next_release = Instant::now();
        loop {
            if !held.is_empty()
                && Instant::now() >= next_release
                && !self.release(&subject, &topic, &mut held, &mut known).await
            {
                next_release = Instant::now() + RELEASE_RETRY;
            }
            let batch = {
                let mut lines = lock(&self.lines);
                let Some(line) = lines.get_mut(&topic) else {
                    return;
                };
                if line.is_empty() && held.is_empty() {
                    lines.remove(&topic);
                    if service {
                        let mut services_last = lock(&self.services_last);
                        match known {
                            Some(position) => services_last.insert(topic, position),
                            None => services_last.remove(&topic),
                        };
                    }
                    return;
                }
                take_batch(line)
            };
            let services_events = batch.iter().any(|w| w.kind.service());
            service |= services_events;
            if batch.is_empty() {
                // Only held events are left: new ones are looked for now and then.
                tokio::time::sleep(HOLD_POLL).await;
                continue;
            }
            let bytes: usize = batch.iter().map(|w| w.body.len()).sum();
            self.waiting_bytes.fetch_sub(bytes, Ordering::Relaxed);
            // Behind held events, a service's events are held too, in order.
            let sent = if held.is_empty() && self.connected() {
                self.send(&subject, &batch, &mut known).await
            } else {
                Err(Refused::Unavailable("not connected to NATS".into()))
            };
            match sent {
                Ok(last) => {
                    let first = last.seq + 1 - batch.len() as u64;
                    // A service's own subscribers need not wait for its events to come
                    // back from the cluster; if NATS goes now, they have them.
                    let here = services_events && self.local.last_seq(&topic) + 1 == first;
                    for (seq, waiting) in (first..).zip(batch) {
                        if here {
                            self.deliver_here(&topic, seq, &waiting);
                        }
                        let _ = waiting.numbered.send(Ok(seq));
                    }
                    known = Some(last);
                }
                Err(e) => {
                    self.hold(&topic, batch, known, &mut held, &e);
                    // Read the topic's last event again before the next.
                    known = None;
                }
            }
        }
    }

    /// Numbers a batch of events after the topic's last and has the stream take them
    /// in one message, reading the last again whenever another node numbered one
    /// meanwhile. Gives the position of the batch's last event; `known` is the last
    /// position read.
    async fn send(
        &self,
        subject: &str,
        batch: &[Waiting],
        known: &mut Option<Position>,
    ) -> Result<Position, Refused> {
        let body = encode_batch(batch.iter().map(|w| (w.kind, &w.body[..])));
        loop {
            let last = match *known {
                Some(position) => position,
                None => *known.insert(self.last_of(subject).await?),
            };
            match self.put(subject, last, body.clone()).await {
                Ok(stream_seq) => {
                    return Ok(Position {
                        seq: last.seq + batch.len() as u64,
                        stream_seq,
                        ours: true,
                    });
                }
                Err(Put::Outnumbered) => *known = None,
                Err(Put::Failed(e)) => return Err(e),
            }
        }
    }

    /// Has the stream take one message of events numbered from after `last`, if the
    /// topic's last message is still the one `last` names; gives its stream sequence.
    async fn put(&self, subject: &str, last: Position, body: Bytes) -> Result<u64, Put> {
        let mut headers = HeaderMap::new();
        headers.insert(SEQ_HEADER, (last.seq + 1).to_string().as_str());
        headers.insert(NODE_HEADER, self.node_id.as_str());
        let message = PublishMessage::build()
            .payload(body)
            .headers(headers)
            .expected_last_subject_sequence(last.stream_seq);
        let ack = async {
            self.jetstream
                .publish_message(message.outbound_message(subject.to_owned()))
                .await?
                .await
        };
        let mut connection = self.connected.clone();
        tokio::select! {
            acked = tokio::time::timeout(PUBLISH_TIMEOUT, ack) => match acked {
                Ok(Ok(ack)) => Ok(ack.sequence),
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    Err(Put::Outnumbered)
                }
                Ok(Err(e)) => Err(Put::Failed(Refused::Unavailable(e.to_string()))),
                Err(_) => Err(Put::Failed(Refused::Unavailable(format!(
                    "NATS did not take the event within {PUBLISH_TIMEOUT:?}"
                )))),
            },
            // Whether it was taken is known when the connection is back (see release).
            _ = connection.wait_for(|connected| !connected) => Err(Put::Failed(
                Refused::Unavailable("the connection to NATS was lost".into()),
            )),
        }
    }

    /// What becomes of events the cluster could not take. A service's events are this
    /// node's own: it numbers them on from the topic's last, hands them to its own
    /// subscribers at once and holds them for the cluster. Clients' are refused.
    fn hold(
        &self,
        topic: &str,
        batch: Vec<Waiting>,
        known: Option<Position>,
        held: &mut VecDeque<HeldEvent>,
        why: &Refused,
    ) {
        let holding = held.is_empty();
        let mut seq = match held.back() {
            Some(last) => last.seq,
            None => known.map_or(0, |p| p.seq).max(self.local.last_seq(topic)),
        };
        let mut refused = 0;
        for waiting in batch {
            if !waiting.kind.service() {
                refused += 1;
                let _ = waiting.numbered.send(Err(why.clone()));
                continue;
            }
            seq += 1;
            self.deliver_here(topic, seq, &waiting);
            let _ = waiting.numbered.send(Ok(seq));
            self.waiting_bytes
                .fetch_add(waiting.body.len(), Ordering::Relaxed);
            held.push_back(HeldEvent {
                seq,
                kind: waiting.kind,
                body: waiting.body,
            });
        }
        if refused > 0 {
            tracing::warn!("{refused} event(s) of {topic} not published: {why}");
        }
        if holding && !held.is_empty() {
            tracing::warn!(
                "events of {topic} held for the cluster ({why}): this node's subscribers \
                 get them now, the cluster once it is back"
            );
        }
    }

    /// Gives the cluster the events held while it could not take them, with the
    /// numbers they were given, if no other node numbered the topic meanwhile. If one
    /// did (it took the service over), its numbers stand: the held events are let go,
    /// and this node's subscribers are told that they miss the cluster's events under
    /// those numbers. Says whether the held events are settled.
    async fn release(
        &self,
        subject: &str,
        topic: &str,
        held: &mut VecDeque<HeldEvent>,
        known: &mut Option<Position>,
    ) -> bool {
        let (Some(first), Some(last_held)) = (held.front(), held.back()) else {
            return true;
        };
        let (first, last_held) = (first.seq, last_held.seq);
        if !self.connected() {
            return false;
        }
        let Ok(mut last) = self.last_of(subject).await else {
            return false;
        };
        // The topic's last message may be held events of this node's, sent as the
        // connection went and taken after all.
        let taken_after_all = last.ours && (first..=last_held).contains(&last.seq);
        if last.seq != first - 1 && !taken_after_all {
            tracing::warn!(
                "{} event(s) of {topic} that this node gave its subscribers while cut off \
                 from the cluster were not taken: another node numbered the topic \
                 meanwhile (its last is {}); this node's subscribers are told they miss \
                 the cluster's events {first} to {last_held}",
                held.len(),
                last.seq
            );
            self.local.missed(topic, first, last_held);
            self.let_go(held, usize::MAX);
            *known = None;
            return true;
        }
        let taken = held.iter().take_while(|e| e.seq <= last.seq).count();
        self.let_go(held, taken);
        while !held.is_empty() {
            let mut count = 0;
            let mut bytes = 0;
            for event in held.iter() {
                if count > 0 && bytes + event.body.len() > MAX_BATCH_BYTES {
                    break;
                }
                count += 1;
                bytes += event.body.len();
            }
            let body = encode_batch(held.iter().take(count).map(|e| (e.kind, &e.body[..])));
            // Another node numbering the topic now, or the connection lost again: the
            // next try reads the topic's last anew.
            let Ok(stream_seq) = self.put(subject, last, body).await else {
                return false;
            };
            last = Position {
                seq: last.seq + count as u64,
                stream_seq,
                ours: true,
            };
            self.let_go(held, count);
        }
        tracing::info!("the cluster took the events of {topic} held while it was away");
        *known = Some(last);
        true
    }

    /// Gives this node's subscribers one of its own events.
    fn deliver_here(&self, topic: &str, seq: u64, waiting: &Waiting) {
        if let Some(draft) = Draft::from_unnumbered(&waiting.body) {
            let _ = self.local.deliver(topic, seq, draft, waiting.kind);
        }
    }

    /// Lets the oldest `count` held events go.
    fn let_go(&self, held: &mut VecDeque<HeldEvent>, count: usize) {
        let count = count.min(held.len());
        let bytes: usize = held.drain(..count).map(|e| e.body.len()).sum();
        self.waiting_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// The topic's last event: its number, and its sequence in the events stream to
    /// number the next against (0 when that stream no longer holds one, and the number
    /// comes from the latest kept); the start for a topic without any.
    async fn last_of(&self, subject: &str) -> Result<Position, Refused> {
        let ours = |message: &jetstream::message::StreamMessage| {
            message
                .headers
                .get(NODE_HEADER)
                .is_some_and(|node| node.as_str() == self.node_id)
        };
        if let Some(message) = last_message(&self.events, subject).await? {
            return Ok(Position {
                seq: last_seq_of(&message),
                stream_seq: message.sequence,
                ours: ours(&message),
            });
        }
        let kept = last_message(&self.latest, subject).await?;
        Ok(Position {
            seq: kept.as_ref().map_or(0, last_seq_of),
            stream_seq: 0,
            ours: kept.as_ref().is_some_and(ours),
        })
    }

    /// Hands a stream's messages to this node's bus until it has the one that was last
    /// when it began.
    async fn catch_up(
        &self,
        messages: &mut jetstream::consumer::push::Ordered,
        stream: &stream::Stream,
    ) -> Result<(), String> {
        let state = stream
            .clone()
            .info()
            .await
            .map_err(|e| format!("cannot read the cluster's stream: {e}"))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok(());
        }
        let reading = async {
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| e.to_string())?;
                self.take(&message.subject, message.headers.as_ref(), &message.payload);
                let info = message.info().map_err(|e| e.to_string())?;
                if info.pending == 0 || info.stream_sequence >= state.last_sequence {
                    return Ok(());
                }
            }
            Err("the stream ended".to_owned())
        };
        match tokio::time::timeout(CATCH_UP_TIMEOUT, reading).await {
            Ok(read) => read.map_err(|e| {
                format!(
                    "cannot read the latest of the cluster's {} events: {e}",
                    state.messages
                )
            }),
            Err(_) => Err(format!(
                "could not read the latest of the cluster's {} events within {CATCH_UP_TIMEOUT:?}",
                state.messages
            )),
        }
    }

    /// Hands every event the cluster takes to this node's bus until `stop`.
    async fn follow(
        self: Arc<Self>,
        mut messages: jetstream::consumer::push::Ordered,
        stop: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => message,
            };
            match message {
                Some(Ok(message)) => {
                    self.take(&message.subject, message.headers.as_ref(), &message.payload)
                }
                Some(Err(e)) => tracing::warn!("the cluster's events: {e}; following on"),
                None => {
                    tracing::error!("the cluster's events ended");
                    return;
                }
            }
        }
    }

    /// Hands one event from the cluster to this node's bus; one that is not streamd's,
    /// or damaged, is logged and dropped.
    fn take(&self, subject: &str, headers: Option<&HeaderMap>, body: &[u8]) {
        let batch = (|| {
            let topic = topic_of(subject)?;
            let first = seq_of(headers?)?;
            let events = decode_batch(body)?;
            Some((topic, first, events))
        })();
        let Some((topic, first, events)) = batch else {
            tracing::warn!("dropped a message on {subject} that is not streamd's events");
            return;
        };
        for (seq, (kind, draft)) in (first..).zip(events) {
            if let Err(e) = self.local.deliver(&topic, seq, draft, kind) {
                tracing::debug!("event {seq} of {topic} not delivered: {e}");
                return;
            }
        }
    }
}

/// Takes the oldest waiting events, up to [`MAX_BATCH_BYTES`] of them (at least one).
fn take_batch(waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(next) = waiting.front() {
        if !batch.is_empty() && bytes + next.body.len() > MAX_BATCH_BYTES {
            break;
        }
        bytes += next.body.len();
        batch.extend(waiting.pop_front());
    }
    batch
}

/// A message's body: for each event, its kind's byte, its length as a varint, then the
/// event without its number.
fn encode_batch<'a>(events: impl Iterator<Item = (Kind, &'a [u8])> + Clone) -> Bytes {
    let len: usize = events.clone().map(|(_, event)| 1 + 10 + event.len()).sum();
    let mut body = Vec::with_capacity(len);
    for (kind, event) in events {
        body.push(kind_byte(kind));
        prost::encoding::encode_varint(event.len() as u64, &mut body);
        body.extend_from_slice(event);
    }
    body.into()
}

/// The events of a message's body; None if any is damaged.
fn decode_batch(mut body: &[u8]) -> Option<Vec<(Kind, Draft)>> {
    let mut events = Vec::new();
    while let Some((&kind, rest)) = body.split_first() {
        let kind = kind_of(kind)?;
        body = rest;
        let len = usize::try_from(prost::encoding::decode_varint(&mut body).ok()?).ok()?;
        let event = body.get(..len)?;
        events.push((kind, Draft::from_unnumbered(event)?));
        body = &body[len..];
    }
    (!events.is_empty()).then_some(events)
}

/// The number of a stored message's last event.
fn last_seq_of(message: &jetstream::message::StreamMessage) -> u64 {
    let first = seq_of(&message.headers).unwrap_or(0);
    let count = decode_batch(&message.payload).map_or(1, |events| events.len() as u64);
    first + count - 1
}

/// A stream's last message on a subject, if it holds one.
async fn last_message(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<jetstream::message::StreamMessage>, Refused> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(Refused::Unavailable(format!(
            "cannot read the last event of {subject}: {e}"
        ))),
    }
}

/// An ordered consumer of a whole stream, starting where `deliver_policy` says.
async fn ordered(
    client: &async_nats::Client,
    stream: &stream::Stream,
    deliver_policy: DeliverPolicy,
) -> Result<jetstream::consumer::push::Ordered, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot follow the cluster's events: {e}");
    stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy,
            filter_subject: format!("{SUBJECT_PREFIX}>"),
            ..Default::default()
        })
        .await
        .map_err(|e| fail(&e))?
        .messages()
        .await
        .map_err(|e| fail(&e))
}

fn seq_of(headers: &HeaderMap) -> Option<u64> {
    headers.get(SEQ_HEADER)?.as_str().parse().ok()
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::ServiceData => b's',
        Kind::ServiceLifecycle => b'l',
        Kind::Client => b'c',
    }
}

fn kind_of(byte: u8) -> Option<Kind> {
    [Kind::ServiceData, Kind::ServiceLifecycle, Kind::Client]
        .into_iter()
        .find(|&kind| kind_byte(kind) == byte)
}

/// A topic's subject. Topic names are valid subject tokens joined by dots unless a dot
/// starts or ends one or comes twice; those are carried in hex after `~`, which no
/// name holds.
pub fn subject(topic: &str) -> String {
    if topic.split('.').all(|token| !token.is_empty()) {
        format!("{SUBJECT_PREFIX}{topic}")
    } else {
        let hex: String = topic.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{SUBJECT_PREFIX}~{hex}")
    }
}

/// The topic of a subject [`subject`] made; None for any other.
fn topic_of(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?;
    let topic = match rest.strip_prefix('~') {
        Some(hex) => {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()?
        }
        None => rest.to_owned(),
    };
    crate::topic::check_name(&topic).ok()?;
    Some(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_carries_its_events_and_their_kinds_and_damage_is_refused() {
        let time = prost_types::Timestamp::default();
        let payload = crate::pb::event::Payload::Text(crate::pb::Text::default());
        let batch: Vec<Waiting> = [Kind::ServiceData, Kind::ServiceLifecycle, Kind::Client]
            .into_iter()
            .map(|kind| Waiting {
                body: Draft::new("t", &time, &payload).unnumbered(),
                kind,
                numbered: oneshot::channel().0,
            })
            .collect();
        let body = encode_batch(batch.iter().map(|w| (w.kind, &w.body[..])));
        let events = decode_batch(&body).unwrap();
        let kinds: Vec<Kind> = events.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(
            kinds,
            [Kind::ServiceData, Kind::ServiceLifecycle, Kind::Client]
        );
        let (_, draft) = events.into_iter().nth(1).unwrap();
        assert_eq!(draft.finish(7), Draft::new("t", &time, &payload).finish(7));
        for damaged in [&b""[..], &body[..body.len() - 1], b"x\x00", b"s\x05ab"] {
            assert!(decode_batch(damaged).is_none(), "{damaged:?}");
        }
    }

    #[test]
    fn every_topic_name_has_a_subject_that_gives_it_back() {
        for topic in [
            "leaderboard",
            "bench.x1",
            "a/b:c",
            ".lead",
            "trail.",
            "a..b",
            ".",
        ] {
            let subject = subject(topic);
            assert!(
                subject[SUBJECT_PREFIX.len()..]
                    .split('.')
                    .all(|token| !token.is_empty()),
                "{subject}"
            );
            assert_eq!(topic_of(&subject).as_deref(), Some(topic), "{subject}");
        }
        assert_eq!(subject("a.b"), "streamhandler.v1.events.a.b");
        for foreign in [
            "other.subject",
            "streamhandler.v1.events.~zz",
            "streamhandler.v1.events.a b",
        ] {
            assert_eq!(topic_of(foreign), None, "{foreign}");
        }
    }
}
