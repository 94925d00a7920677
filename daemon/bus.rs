//! The event bus: every event published in the daemon fans out to every subscriber.
//!
//! This is the one seam between producers (services, Publish) and consumers (Subscribe
//! streams). Each event is encoded once, at publish time, and subscribers share its
//! bytes. The fan-out is a bounded ring: a subscriber that falls more than
//! [`BUS_CAPACITY`] events behind skips ahead and receives a Lagged event, so no
//! subscriber can block a publisher or another subscriber, and memory stays bounded
//! whatever clients do.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use futures::{Stream, StreamExt, stream};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{
    pb::{self, event::Payload},
    wire::{EncodedEvent, EncodedStruct},
};

/// Events retained for subscribers that are behind; past this they skip ahead.
pub const BUS_CAPACITY: usize = 1024;

/// The largest encoded event the bus accepts, which with [`BUS_CAPACITY`] bounds the
/// memory that buffered events can take.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// An event on its way through the bus.
#[derive(Clone, Debug)]
struct Published {
    topic: Arc<str>,
    encoded: EncodedEvent,
}

/// What travels through the ring: events, then at shutdown one last word that ends
/// every subscription after the events before it.
#[derive(Clone, Debug)]
enum Frame {
    Event(Published),
    Closed,
}

struct Topic {
    /// The topic's name, shared by its events so they need no copy of it.
    name: Arc<str>,
    /// The last sequence number given out.
    seq: u64,
    /// The latest data event, for subscribers that ask for it.
    latest: Option<Published>,
}

impl Topic {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            seq: 0,
            latest: None,
        }
    }
}

/// A publish the bus refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refused {
    #[error("the event is {0} bytes encoded; the limit is {MAX_EVENT_BYTES}")]
    TooLarge(usize),
    #[error("the daemon is shutting down")]
    Closed,
}

/// Which topics a subscriber wants: names or glob patterns, or every topic when empty.
#[derive(Clone, Debug, Default)]
pub struct TopicFilter {
    /// Plain names, compared as strings: every event passes through the filter of
    /// every subscriber, and most filters are plain names.
    names: Vec<String>,
    patterns: Vec<glob::Pattern>,
}

impl TopicFilter {
    /// Compiles the patterns, naming the first malformed one.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut filter = Self::default();
        for pattern in patterns.iter().map(AsRef::as_ref) {
            if pattern.contains(['*', '?', '[', ']']) {
                let compiled = glob::Pattern::new(pattern)
                    .map_err(|e| format!("topic pattern {pattern:?}: {}", e.msg))?;
                filter.patterns.push(compiled);
            } else {
                filter.names.push(pattern.to_owned());
            }
        }
        Ok(filter)
    }

    pub fn matches(&self, topic: &str) -> bool {
        (self.names.is_empty() && self.patterns.is_empty())
            || self.names.iter().any(|n| n == topic)
            || self.patterns.iter().any(|p| p.matches(topic))
    }
}

/// A cheap-to-clone handle to the bus.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
}

struct Shared {
    sender: broadcast::Sender<Frame>,
    /// Held while a sequence number is given out and the event sent, so that each
    /// topic's events enter the ring in sequence order, and while a subscriber joins, so
    /// that its snapshot and its live events neither overlap nor leave a gap. A std
    /// mutex: it is never held across an await.
    topics: Mutex<HashMap<Arc<str>, Topic>>,
    subscribers: AtomicUsize,
    /// Set by [`Bus::close`]; read and written under the `topics` lock.
    closed: AtomicBool,
}

impl Default for Bus {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                sender: broadcast::channel(BUS_CAPACITY).0,
                topics: Mutex::default(),
                subscribers: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

impl Bus {
    /// Publishes a payload on a topic and returns its sequence number. Data events are
    /// retained as the topic's latest; lifecycle events are not, so that a subscriber
    /// asking for the latest events sees data.
    pub fn publish(&self, topic: &str, payload: Payload) -> Result<u64, Refused> {
        let retain = !matches!(payload, Payload::Lifecycle(_));
        self.publish_with(topic, retain, |seq, time| {
            EncodedEvent::new(&pb::Event {
                topic: topic.to_owned(),
                seq,
                time: Some(time),
                payload: Some(payload),
            })
        })
    }

    /// Publishes a client's data, as it arrived, on a topic: a data event.
    pub fn publish_data(&self, topic: &str, data: &EncodedStruct) -> Result<u64, Refused> {
        self.publish_with(topic, true, |seq, time| {
            EncodedEvent::with_data(topic, seq, &time, data)
        })
    }

    /// Gives the event its sequence number and time, encodes it and sends it.
    fn publish_with(
        &self,
        topic: &str,
        retain: bool,
        encode: impl FnOnce(u64, prost_types::Timestamp) -> EncodedEvent,
    ) -> Result<u64, Refused> {
        let time = SystemTime::now().into();
        let mut topics = lock(&self.shared.topics);
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        if !topics.contains_key(topic) {
            let name: Arc<str> = topic.into();
            topics.insert(name.clone(), Topic::new(name));
        }
        let state = topics.get_mut(topic).expect("inserted above");
        let seq = state.seq + 1;
        let encoded = encode(seq, time);
        if encoded.len() > MAX_EVENT_BYTES {
            return Err(Refused::TooLarge(encoded.len()));
        }
        state.seq = seq;
        let published = Published {
            topic: state.name.clone(),
            encoded,
        };
        if retain {
            state.latest = Some(published.clone());
        }
        // An error only means nobody is subscribed right now.
        let _ = self.shared.sender.send(Frame::Event(published));
        Ok(seq)
    }

    /// Refuses further events and ends every subscription once it has received the
    /// events published before.
    pub fn close(&self) {
        let _topics = lock(&self.shared.topics);
        if !self.shared.closed.swap(true, Ordering::Relaxed) {
            let _ = self.shared.sender.send(Frame::Closed);
        }
    }

    /// Subscribes to the topics the filter matches. With `last`, the stream starts with
    /// the latest data event of each matching topic. The stream ends when the bus is
    /// closed; callers end it earlier by dropping it.
    pub fn subscribe(
        &self,
        filter: TopicFilter,
        last: bool,
    ) -> impl Stream<Item = EncodedEvent> + Send + 'static {
        let guard = SubscriberGuard::new(self.shared.clone());
        let (receiver, snapshot, closed) = {
            let topics = lock(&self.shared.topics);
            let closed = self.shared.closed.load(Ordering::Relaxed);
            let receiver = self.shared.sender.subscribe();
            let mut latest: Vec<_> = if last {
                topics
                    .iter()
                    .filter(|(name, _)| filter.matches(name))
                    .filter_map(|(name, topic)| Some((name.clone(), topic.latest.clone()?)))
                    .collect()
            } else {
                Vec::new()
            };
            latest.sort_by(|a, b| a.0.cmp(&b.0));
            let snapshot: Vec<_> = latest.into_iter().map(|(_, p)| p.encoded).collect();
            (receiver, snapshot, closed)
        };
        let live = stream::unfold(
            (receiver, filter, guard),
            move |(mut receiver, filter, guard)| async move {
                if closed {
                    return None;
                }
                loop {
                    let event = match receiver.recv().await {
                        Ok(Frame::Event(p)) if filter.matches(&p.topic) => p.encoded,
                        Ok(Frame::Event(_)) => continue,
                        Ok(Frame::Closed) | Err(RecvError::Closed) => return None,
                        Err(RecvError::Lagged(missed)) => lagged(missed),
                    };
                    return Some((event, (receiver, filter, guard)));
                }
            },
        );
        stream::iter(snapshot).chain(live)
    }

    /// Open subscriptions.
    pub fn subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }
}

/// The event that tells one subscriber it skipped `missed` events.
fn lagged(missed: u64) -> EncodedEvent {
    EncodedEvent::new(&pb::Event {
        topic: String::new(),
        seq: 0,
        time: Some(SystemTime::now().into()),
        payload: Some(Payload::Lagged(pb::Lagged { missed })),
    })
}

/// Counts a subscription for as long as its stream lives.
struct SubscriberGuard(Arc<Shared>);

impl SubscriberGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.subscribers.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked: every critical
/// section here leaves it valid at each step.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn data(n: f64) -> Payload {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "n".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(n)),
            },
        );
        Payload::Data(s)
    }

    fn decode(e: &EncodedEvent) -> pb::Event {
        pb::Event::decode(e.bytes().clone()).unwrap()
    }

    #[tokio::test]
    async fn sequences_are_per_topic_and_filters_apply() {
        let bus = Bus::default();
        let mut all = Box::pin(bus.subscribe(TopicFilter::default(), false));
        let mut only_b = Box::pin(bus.subscribe(TopicFilter::new(&["b*"]).unwrap(), false));
        assert_eq!(bus.subscribers(), 2);
        assert_eq!(bus.publish("a", data(1.0)), Ok(1));
        assert_eq!(bus.publish("a", data(2.0)), Ok(2));
        assert_eq!(bus.publish("bee", data(3.0)), Ok(1));
        let seen: Vec<_> = (0..3)
            .map(|_| decode(&futures::executor::block_on(all.next()).unwrap()))
            .map(|e| (e.topic, e.seq))
            .collect();
        assert_eq!(seen, [("a".into(), 1), ("a".into(), 2), ("bee".into(), 1)]);
        let e = decode(&only_b.next().await.unwrap());
        assert_eq!((e.topic.as_str(), e.seq), ("bee", 1));
        drop(all);
        assert_eq!(bus.subscribers(), 1);
    }

    #[tokio::test]
    async fn last_gives_latest_data_first_without_lifecycle_and_without_overlap() {
        let bus = Bus::default();
        bus.publish("a", data(1.0)).unwrap();
        bus.publish("a", data(2.0)).unwrap();
        bus.publish("a", Payload::Lifecycle(pb::Lifecycle::default()))
            .unwrap();
        bus.publish("c", data(9.0)).unwrap();
        let mut s = Box::pin(bus.subscribe(TopicFilter::new(&["a"]).unwrap(), true));
        bus.publish("a", data(3.0)).unwrap();
        let first = decode(&s.next().await.unwrap());
        assert_eq!((first.topic.as_str(), first.seq), ("a", 2));
        let second = decode(&s.next().await.unwrap());
        assert_eq!(second.seq, 4);
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_lagged_and_skips_ahead() {
        let bus = Bus::default();
        let mut s = Box::pin(bus.subscribe(TopicFilter::default(), false));
        let total = BUS_CAPACITY as u64 + 10;
        for i in 0..total {
            bus.publish("t", data(i as f64)).unwrap();
        }
        let e = decode(&s.next().await.unwrap());
        assert_eq!(e.payload, Some(Payload::Lagged(pb::Lagged { missed: 10 })));
        let next = decode(&s.next().await.unwrap());
        assert_eq!(next.seq, 11);
    }

    #[test]
    fn oversized_events_are_refused_without_using_a_sequence_number() {
        let bus = Bus::default();
        let big = Payload::Text(pb::Text {
            body: "x".repeat(MAX_EVENT_BYTES),
            ..Default::default()
        });
        assert!(bus.publish("t", big).is_err());
        assert_eq!(bus.publish("t", data(0.0)), Ok(1));
    }

    #[tokio::test]
    async fn closing_ends_subscriptions_after_the_events_before_it() {
        let bus = Bus::default();
        let mut s = Box::pin(bus.subscribe(TopicFilter::default(), false));
        bus.publish("t", data(1.0)).unwrap();
        bus.close();
        assert_eq!(bus.publish("t", data(2.0)), Err(Refused::Closed));
        assert_eq!(decode(&s.next().await.unwrap()).seq, 1);
        assert_eq!(s.next().await, None);
        let mut late = Box::pin(bus.subscribe(TopicFilter::default(), true));
        assert_eq!(decode(&late.next().await.unwrap()).seq, 1);
        assert_eq!(late.next().await, None);
    }

    #[test]
    fn encoded_event_encodes_as_its_bytes() {
        let event = pb::Event {
            topic: "t".into(),
            seq: 7,
            ..Default::default()
        };
        let encoded = EncodedEvent::new(&event);
        assert_eq!(encoded.encode_to_vec(), event.encode_to_vec());
        assert_eq!(decode(&encoded), event);
    }

    #[test]
    fn names_match_exactly_and_patterns_as_globs() {
        let filter = TopicFilter::new(&["a", "s/*", "x?"]).unwrap();
        for (topic, matches) in [
            ("a", true),
            ("ab", false),
            ("s/1", true),
            ("x1", true),
            ("x12", false),
        ] {
            assert_eq!(filter.matches(topic), matches, "{topic}");
        }
        assert!(TopicFilter::new::<&str>(&[]).unwrap().matches("anything"));
    }

    #[test]
    fn malformed_patterns_are_named() {
        let err = TopicFilter::new(&["ok", "[oops"]).unwrap_err();
        assert!(err.contains("[oops"), "{err}");
    }
}
