//! The event bus: every event published in the daemon reaches the subscribers whose
//! filters match its topic.
//!
//! This is the one seam between producers (services, Publish) and consumers (Subscribe
//! streams), so it is a small interface, [`EventBus`], behind a cheap handle, [`Bus`]:
//! the daemon runs on the in-process [`LocalBus`], and another implementation (a
//! cluster's, say) can sit beside it without touching services or the gRPC layer.
//!
//! What every implementation guarantees:
//! - a subscription's first event is Subscribed ([`subscribed`]), made once it is
//!   registered: every matching event published after it reaches the subscriber, and
//!   each position it gives is where that topic's events resume;
//! - each topic's events are numbered from 1 without gaps, and reach each subscriber
//!   in that order;
//! - a subscriber never misses an event because of traffic on topics it does not
//!   match, and publishers never wait for subscribers;
//! - a subscriber that reads slower than its events come has them held for it up to
//!   its buffer; past that it skips the oldest and is told exactly which of its own it
//!   missed, or its stream ends with [`BufferFull`], as it chose;
//! - with `last`, a subscription starts with the latest data event of each matching
//!   topic, then continues live, with no event twice and none left out.

mod cluster;
mod inbox;
mod local;

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures::Stream;

pub use self::{
    cluster::ClusterBus,
    inbox::Overflows,
    local::{Kind, LocalBus},
};
use crate::{
    pb::{self, event::Payload},
    topic::TopicFilter,
    wire::{Draft, EncodedEvent, EncodedStruct},
};

/// The largest encoded event the bus accepts.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The most topics a subscription may join as it starts: each takes its position in
/// the Subscribed event, which must stay within the 4 MiB a gRPC client decodes by
/// default (a position takes at most 144 bytes).
pub const MAX_SUBSCRIBED_TOPICS: usize = 25_000;

/// What an event held for a subscriber costs beyond its encoded bytes: the slot it
/// takes and the bookkeeping. Counted against the subscriber's buffer, so that the
/// buffer bounds memory however small the events.
pub const EVENT_OVERHEAD: usize = 64;

/// The smallest buffer: room for the largest event.
pub const MIN_BUFFER: usize = MAX_EVENT_BYTES + EVENT_OVERHEAD;

/// What a subscriber's buffer counts for one event.
pub fn cost(event: &EncodedEvent) -> usize {
    cost_of(event.len())
}

/// What a subscriber's buffer counts for an event of `len` encoded bytes.
pub fn cost_of(len: usize) -> usize {
    len + EVENT_OVERHEAD
}

/// An event on its way in.
#[derive(Clone, Copy, Debug)]
pub enum Outgoing<'a> {
    /// A service's event on its own topic. Its data events are kept as the topic's
    /// latest; lifecycle events are not, so that `last` gives data.
    Service(&'a Payload),
    /// A client's data, passed through as it arrived; kept as the topic's latest.
    Client(&'a EncodedStruct),
}

/// An event encoded but for its number, if the bus takes it.
pub(crate) fn draft(topic: &str, event: &Outgoing<'_>, now: SystemTime) -> Result<Draft, Refused> {
    let time = now.into();
    let draft = match event {
        Outgoing::Service(payload) => Draft::new(topic, &time, payload),
        Outgoing::Client(data) => Draft::with_data(topic, &time, data),
    };
    if draft.max_len() > MAX_EVENT_BYTES {
        return Err(Refused::TooLarge(draft.max_len()));
    }
    Ok(draft)
}

/// A published event's number: known at once in one process; in a cluster, once the
/// topic's sequencer has taken the event.
#[derive(Debug)]
pub enum Published {
    Numbered(u64),
    Pending(tokio::sync::oneshot::Receiver<Result<u64, Refused>>),
}

impl Published {
    /// The number, once given; an error if the event could not be published after all.
    pub async fn seq(self) -> Result<u64, Refused> {
        match self {
            Self::Numbered(seq) => Ok(seq),
            Self::Pending(rx) => rx.await.unwrap_or(Err(Refused::Closed)),
        }
    }
}

/// What a subscriber does when its buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest events held and say which, in a Lagged event where they were.
    #[default]
    Skip,
    /// Deliver the events held, then end the stream with [`BufferFull`].
    Close,
}

/// What a subscriber asks for.
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    pub filter: TopicFilter,
    /// Start with the latest data event of each matching topic.
    pub last: bool,
    /// Bytes of events to hold for a slow reader; None for the daemon's default.
    pub buffer: Option<u64>,
    pub overflow: Overflow,
}

/// The event that opens every subscription: the filter's names and patterns, and each
/// topic that had events when the subscriber joined it, in topic order, with the
/// sequence number it had then. Handed over apart from the buffer, so that nothing
/// can skip it or come before it.
pub fn subscribed(filter: &TopicFilter, positions: Vec<pb::TopicPosition>) -> EncodedEvent {
    EncodedEvent::new(&pb::Event {
        topic: String::new(),
        seq: 0,
        time: Some(std::time::SystemTime::now().into()),
        payload: Some(Payload::Subscribed(pb::Subscribed {
            topics: filter.accepted().to_vec(),
            positions,
        })),
    })
}

/// A subscription's events, [`subscribed`] first, until the bus closes or the subscriber's buffer overflows
/// under [`Overflow::Close`]. Dropping it unsubscribes.
pub type Events = Pin<Box<dyn Stream<Item = Result<EncodedEvent, BufferFull>> + Send>>;

/// Ends a stream whose subscriber chose [`Overflow::Close`] and fell a whole buffer
/// behind; every event before it was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferFull {
    /// The limit it reached.
    pub buffer: usize,
    /// Whether that was its share of the daemon's limit rather than its own buffer.
    pub shared: bool,
}

impl std::fmt::Display for BufferFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.shared {
            write!(
                f,
                "the stream fell {} bytes behind, its share of what the daemon lets all \
                 subscribers hold together",
                self.buffer
            )
        } else {
            write!(
                f,
                "the stream fell its whole buffer of {} bytes behind",
                self.buffer
            )
        }
    }
}

impl std::error::Error for BufferFull {}

/// A publish or subscribe the bus refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum Refused {
    #[error("the event is {0} bytes encoded; the limit is {MAX_EVENT_BYTES}")]
    TooLarge(usize),
    #[error("{asked} bytes is outside what this daemon allows: {min} to {max}")]
    Buffer { asked: u64, min: usize, max: usize },
    #[error(
        "the names and patterns match more than {MAX_SUBSCRIBED_TOPICS} topics, the most a \
         subscription may start on; narrow them"
    )]
    TooManyTopics,
    #[error("the daemon is shutting down")]
    Closed,
    /// The cluster could not take the event (NATS unreachable, say).
    #[error("the cluster cannot take events now: {0}")]
    Unavailable(String),
    /// The cluster takes events slower than they come, and holds as many as it may.
    #[error("{0} bytes of events wait for the cluster already; try again shortly")]
    Busy(usize),
}

/// The bus's operations, whatever carries the events.
pub trait EventBus: Send + Sync {
    /// Numbers the event within its topic and sends it to the topic's subscribers;
    /// gives its number, or how to wait for it.
    fn publish(&self, topic: &str, event: Outgoing<'_>) -> Result<Published, Refused>;

    /// Subscribes to the topics the filter matches, with the buffer and overflow policy
    /// asked for. The stream starts with [`subscribed`], whose positions are read as
    /// the subscriber joins each topic (atomically with joining it), then, with
    /// `last`, the latest data events, then live events.
    fn subscribe(&self, options: SubscribeOptions) -> Result<Events, Refused>;

    /// Refuses further events and ends every subscription once it has received the
    /// events published before.
    fn close(&self);

    /// Open subscriptions.
    fn subscribers(&self) -> usize;

    /// Topics held: services' and those clients publish or follow.
    fn topics(&self) -> usize;

    /// What full buffers have cost this node's subscribers so far.
    fn overflows(&self) -> Overflows;
}

/// How much the bus holds: for each subscriber, and for topics that clients publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// A subscriber's buffer unless it asks for another.
    pub subscriber_buffer: usize,
    /// The largest buffer a subscriber may ask for.
    pub max_subscriber_buffer: usize,
    /// What all subscribers may hold together; past it, each is held to an equal
    /// share.
    pub max_buffered: usize,
    /// A client's topic that nobody publishes to or follows for this long is forgotten.
    pub topic_retention: Duration,
    /// Beyond this many clients' topics, the least recently published that no
    /// subscriber names are forgotten.
    pub max_topics: usize,
    /// Likewise beyond this many bytes of their latest events.
    pub max_topic_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            subscriber_buffer: 64 << 20,
            max_subscriber_buffer: 256 << 20,
            max_buffered: default_max_buffered(),
            topic_retention: Duration::from_secs(600),
            max_topics: 10_000,
            max_topic_bytes: 64 << 20,
        }
    }
}

/// A quarter of the machine's memory, or 1 GiB where that cannot be read: subscribers
/// who stop reading then cannot take the host's memory, however many there are.
fn default_max_buffered() -> usize {
    use procfs::Current;
    procfs::Meminfo::current()
        .ok()
        .and_then(|m| usize::try_from(m.mem_total / 4).ok())
        .unwrap_or(1 << 30)
        .max(MIN_BUFFER)
}

impl Settings {
    /// The buffer for a subscriber that asks for `asked` bytes, or the default.
    pub fn buffer(&self, asked: Option<u64>) -> Result<usize, Refused> {
        let Some(asked) = asked else {
            return Ok(self.subscriber_buffer);
        };
        usize::try_from(asked)
            .ok()
            .filter(|b| (MIN_BUFFER..=self.max_subscriber_buffer).contains(b))
            .ok_or(Refused::Buffer {
                asked,
                min: MIN_BUFFER,
                max: self.max_subscriber_buffer,
            })
    }

    /// Checks settings that came from the operator, naming the one at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let range = MIN_BUFFER..=self.max_subscriber_buffer;
        if self.max_subscriber_buffer < MIN_BUFFER {
            return Err((
                "max_subscriber_buffer",
                format!("must be at least {MIN_BUFFER} bytes, room for the largest event"),
            ));
        }
        if !range.contains(&self.subscriber_buffer) {
            return Err((
                "subscriber_buffer",
                format!(
                    "must be from {MIN_BUFFER} bytes to max_subscriber_buffer ({})",
                    self.max_subscriber_buffer
                ),
            ));
        }
        if self.max_buffered < MIN_BUFFER {
            return Err((
                "max_buffered",
                format!("must be at least {MIN_BUFFER} bytes, room for the largest event"),
            ));
        }
        if self.max_topics == 0 {
            return Err(("max_topics", "must be at least 1".into()));
        }
        if self.topic_retention.is_zero() {
            return Err(("topic_retention", "must be greater than zero".into()));
        }
        Ok(())
    }
}

/// A cheap-to-clone handle to the daemon's bus.
#[derive(Clone)]
pub struct Bus(Arc<dyn EventBus>);

impl Bus {
    pub fn new(bus: impl EventBus + 'static) -> Self {
        Self(Arc::new(bus))
    }

    /// Publishes a service's event on its topic.
    pub fn publish(&self, topic: &str, payload: Payload) -> Result<(), Refused> {
        self.0.publish(topic, Outgoing::Service(&payload)).map(drop)
    }

    /// Publishes a client's data, as it arrived, on a topic of the client's.
    pub fn publish_data(&self, topic: &str, data: &EncodedStruct) -> Result<Published, Refused> {
        self.0.publish(topic, Outgoing::Client(data))
    }

    pub fn subscribe(&self, options: SubscribeOptions) -> Result<Events, Refused> {
        self.0.subscribe(options)
    }

    pub fn close(&self) {
        self.0.close()
    }

    pub fn subscribers(&self) -> usize {
        self.0.subscribers()
    }

    pub fn topics(&self) -> usize {
        self.0.topics()
    }

    pub fn overflows(&self) -> Overflows {
        self.0.overflows()
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
impl Bus {
    /// Publishes a service's event on an in-process bus and gives its number.
    pub(crate) fn numbered(&self, topic: &str, payload: Payload) -> Result<u64, Refused> {
        match self.0.publish(topic, Outgoing::Service(&payload))? {
            Published::Numbered(seq) => Ok(seq),
            Published::Pending(_) => panic!("an in-process bus numbers at once"),
        }
    }

    /// Publishes a client's data on an in-process bus and gives its number.
    pub(crate) fn numbered_data(&self, topic: &str, data: &EncodedStruct) -> Result<u64, Refused> {
        match self.0.publish(topic, Outgoing::Client(data))? {
            Published::Numbered(seq) => Ok(seq),
            Published::Pending(_) => panic!("an in-process bus numbers at once"),
        }
    }

    /// An in-process bus with the default settings.
    pub(crate) fn local() -> Self {
        Self::new(LocalBus::new(Settings::default()))
    }

    /// The events of the topics `patterns` match, from now on, past Subscribed.
    pub(crate) fn follow(&self, patterns: &[&str]) -> impl Stream<Item = EncodedEvent> + Unpin {
        use futures::StreamExt;
        let options = SubscribeOptions {
            filter: TopicFilter::new(patterns).expect("valid patterns"),
            ..Default::default()
        };
        self.subscribe(options)
            .expect("default buffer")
            .skip(1)
            .map(|event| event.expect("no overflow under Skip"))
    }
}
