//! The in-process bus: topics in a sharded map, each with its own lock, its own
//! numbering and the list of subscribers it sends to.
//!
//! Publishing takes only its topic's lock, to number the event and append it to each
//! follower's inbox; the event was encoded before, with room left for its number. So
//! publishers of different topics never wait for each other, and none waits for a
//! subscriber. A subscriber joins each topic it follows under that topic's lock,
//! taking the latest event there if it asked, so its snapshot and its live events
//! neither overlap nor leave a gap; the topic's sequence number read then is its
//! position in the Subscribed event that opens the stream. Subscribers with patterns are also kept in a list
//! that every new topic is matched against, under one lock taken only to create a
//! topic or register such a subscriber, so a new topic and a new subscriber always
//! meet.
//!
//! Clients' topics are forgotten when unused past a retention, and the least recently
//! published go first beyond a cap, so that publishing to ever new names takes no more
//! memory; services' topics are kept for the daemon's life.
//!
//! Locks are taken in one order: the pattern list, a shard, a topic, a follower's list
//! of topics, an inbox. None is held across an await.

use std::{
    collections::{BTreeMap, HashMap},
    hash::BuildHasher,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use foldhash::fast::RandomState;
use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::{
    BufferFull, EventBus, Events, Outgoing, Published, Refused, Settings, SubscribeOptions,
    inbox::{Inbox, Overflows, Pool, Reader},
    lock, subscribed,
};
use crate::{
    pb::{self, event::Payload},
    topic::TopicFilter,
    wire::{Draft, EncodedEvent},
};

/// Shards of the topic map: publishers of different topics rarely share one.
const SHARDS: usize = 16;

/// A cheap-to-clone handle to an in-process bus.
#[derive(Clone)]
pub struct LocalBus {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    /// What every subscriber's inbox draws on.
    pool: Arc<Pool>,
    shards: Box<[Shard]>,
    /// Picks a name's shard; a seed of its own, apart from the maps'.
    hasher: RandomState,
    /// Followers with patterns, or of every topic, for new topics to be matched
    /// against. Held while a topic is created.
    pattern_followers: Mutex<Vec<Arc<Follower>>>,
    closed: AtomicBool,
    subscribers: AtomicUsize,
    /// Topics that may be forgotten (all but services'), and their latest events' bytes.
    forgettable: AtomicUsize,
    forgettable_bytes: AtomicUsize,
    /// Held by the one sweep that runs at a time.
    sweeping: Mutex<()>,
}

/// Part of the topic map. An RwLock: publishers only look topics up. Hashed with
/// foldhash, randomly seeded: several times faster than std's SipHash on short names,
/// and looked up for every event.
type Shard = RwLock<HashMap<Arc<str>, Arc<Topic>, RandomState>>;

struct Topic {
    name: Arc<str>,
    /// A std mutex: held to number an event and hand it to the followers' inboxes.
    state: Mutex<TopicState>,
}

struct TopicState {
    /// The last sequence number given out.
    seq: u64,
    /// The latest data event, for subscribers that ask for it.
    latest: Option<EncodedEvent>,
    followers: Vec<Arc<Follower>>,
    /// Followers that name this topic, not only match it: they keep it.
    named: usize,
    /// A service's topic, kept for the daemon's life.
    service: bool,
    /// When its last event was published: that event's own time, so that publishing
    /// reads the clock once. A wall clock, so retention moves with it if it is set.
    last_published: SystemTime,
    /// Removed from the map: whoever finds it looks again.
    forgotten: bool,
}

/// One subscription as topics see it.
struct Follower {
    filter: TopicFilter,
    inbox: Inbox,
    /// A std mutex: the topics it follows, so that it can leave them.
    joined: Mutex<Joined>,
}

#[derive(Default)]
struct Joined {
    /// Set when the subscription ends; it joins nothing more.
    left: bool,
    /// Each topic followed, and whether the filter names it.
    topics: HashMap<Arc<str>, (Arc<Topic>, bool)>,
}

/// What joining a topic changed.
#[derive(Default)]
struct Joining {
    /// Not followed before: add it to the topic's followers.
    new: bool,
    /// Named now and not before: count it.
    named: bool,
}

impl Follower {
    /// Notes that this follower follows `topic`, named or through a pattern.
    fn join(&self, topic: &Arc<Topic>, named: bool) -> Joining {
        let mut joined = lock(&self.joined);
        if joined.left {
            return Joining::default();
        }
        match joined.topics.get_mut(&topic.name) {
            Some((known, was_named)) if Arc::ptr_eq(known, topic) => {
                let newly_named = named && !*was_named;
                *was_named |= named;
                Joining {
                    new: false,
                    named: newly_named,
                }
            }
            _ => {
                joined
                    .topics
                    .insert(topic.name.clone(), (topic.clone(), named));
                Joining { new: true, named }
            }
        }
    }

    /// Forgets a topic that is being forgotten.
    fn drop_topic(&self, topic: &Arc<Topic>) {
        let mut joined = lock(&self.joined);
        if joined
            .topics
            .get(&topic.name)
            .is_some_and(|(known, _)| Arc::ptr_eq(known, topic))
        {
            joined.topics.remove(&topic.name);
        }
    }
}

impl TopicState {
    fn new() -> Self {
        Self {
            seq: 0,
            latest: None,
            followers: Vec::new(),
            named: 0,
            service: false,
            last_published: SystemTime::now(),
            forgotten: false,
        }
    }

    /// Adds a follower to this topic, with the latest event first if it asked. Returns
    /// the last sequence number given out when it joins now, not before: the follower
    /// gets every event after it.
    fn add(
        &mut self,
        topic: &Arc<Topic>,
        follower: &Arc<Follower>,
        named: bool,
        last: bool,
    ) -> Option<u64> {
        let joining = follower.join(topic, named);
        if joining.named {
            self.named += 1;
        }
        if !joining.new {
            return None;
        }
        self.followers.push(follower.clone());
        if let (true, Some(latest)) = (last, &self.latest) {
            follower.inbox.push(latest, 1);
        }
        Some(self.seq)
    }

    fn latest_bytes(&self) -> usize {
        self.latest.as_ref().map_or(0, EncodedEvent::len)
    }
}

impl LocalBus {
    pub fn new(settings: Settings) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool: Pool::new(settings.max_buffered),
                settings,
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                hasher: RandomState::default(),
                pattern_followers: Mutex::default(),
                closed: AtomicBool::new(false),
                subscribers: AtomicUsize::new(0),
                forgettable: AtomicUsize::new(0),
                forgettable_bytes: AtomicUsize::new(0),
                sweeping: Mutex::default(),
            }),
        }
    }

    /// Hands its topic's subscribers an event numbered elsewhere (by a cluster's
    /// sequencer): one at or below the topic's number, already delivered, is dropped.
    pub fn deliver(&self, topic: &str, seq: u64, draft: Draft, kind: Kind) -> Result<(), Refused> {
        self.shared
            .publish(topic, draft, kind, Numbering::Given(seq), SystemTime::now())
            .map(drop)
    }

    /// The number of a topic's last event here; 0 for a topic it does not have.
    pub fn last_seq(&self, topic: &str) -> u64 {
        self.shared
            .find(topic)
            .map_or(0, |topic| lock(&topic.state).seq)
    }

    /// Tells a topic's subscribers that they miss its events `first` to `last`: events
    /// numbered elsewhere that they will not be given, as they had others under those
    /// numbers.
    pub fn missed(&self, topic: &str, first: u64, last: u64) {
        if let Some(topic) = self.shared.find(topic) {
            let missed = gap(&topic.name, first, last);
            let followers = &lock(&topic.state).followers;
            for follower in followers {
                follower.inbox.push(&missed, followers.len());
            }
        }
    }

    /// Forgets clients' topics past their retention every so often, until `stop`.
    pub async fn sweep_until(self, stop: CancellationToken) {
        let period = (self.shared.settings.topic_retention / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => self.shared.sweep(SystemTime::now()),
            }
        }
    }
}

/// What an event is to the bus: whose, and whether it is kept as its topic's latest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A service's data event.
    ServiceData,
    /// A service's lifecycle event: not kept, so that `last` gives data.
    ServiceLifecycle,
    /// A client's data.
    Client,
}

impl Kind {
    pub fn of(event: &Outgoing<'_>) -> Self {
        match event {
            Outgoing::Service(Payload::Lifecycle(_)) => Self::ServiceLifecycle,
            Outgoing::Service(_) => Self::ServiceData,
            Outgoing::Client(_) => Self::Client,
        }
    }

    /// A service's event, not a client's.
    pub fn service(self) -> bool {
        self != Self::Client
    }

    fn retained(self) -> bool {
        self != Self::ServiceLifecycle
    }
}

/// Where an event's number comes from.
#[derive(Clone, Copy)]
enum Numbering {
    /// The topic's next.
    Next,
    /// Given by whoever numbers the topic's events.
    Given(u64),
}

impl EventBus for LocalBus {
    fn publish(&self, topic: &str, event: Outgoing<'_>) -> Result<Published, Refused> {
        let now = SystemTime::now();
        let draft = super::draft(topic, &event, now)?;
        self.shared
            .publish(topic, draft, Kind::of(&event), Numbering::Next, now)
            .map(Published::Numbered)
    }

    fn subscribe(&self, options: SubscribeOptions) -> Result<Events, Refused> {
        let shared = &self.shared;
        let buffer = shared.settings.buffer(options.buffer)?;
        let follower = Arc::new(Follower {
            filter: options.filter,
            inbox: Inbox::new(buffer, options.overflow, shared.pool.clone()),
            joined: Mutex::default(),
        });
        shared.subscribers.fetch_add(1, Ordering::Relaxed);
        // From here on, dropping the subscription undoes whatever was joined.
        let mut subscription = Subscription {
            follower: follower.clone(),
            shared: shared.clone(),
            subscribed: None,
            reader: Reader::new(),
        };
        let filter = &follower.filter;
        if filter.has_patterns() {
            // Before looking at the topics that exist, so that one created meanwhile
            // finds this follower.
            lock(&shared.pattern_followers).push(follower.clone());
        }
        let mut joining = BTreeMap::new();
        for name in filter.names() {
            joining.insert(Arc::<str>::from(name.as_str()), true);
        }
        if filter.has_patterns() {
            for shard in shared.shards.iter() {
                for name in read(shard).keys() {
                    if filter.matches_pattern(name) {
                        joining.entry(name.clone()).or_insert(false);
                    }
                }
                // Checked a shard at a time: past the cap, the rest need not be read.
                if joining.len() > super::MAX_SUBSCRIBED_TOPICS {
                    return Err(Refused::TooManyTopics);
                }
            }
        }
        // In name order, so that the latest events and the positions come sorted.
        let mut positions = Vec::new();
        for (name, named) in joining {
            let joined_at = if named {
                // Named topics are created if need be, and kept while named.
                shared.with_topic(&name, |topic, state| {
                    state.add(topic, &follower, true, options.last)
                })
            } else if let Some(topic) = shared.find(&name) {
                let mut state = lock(&topic.state);
                // One forgotten meanwhile is gone for this follower too; if published
                // again, it is created anew and matched then.
                (!state.forgotten)
                    .then(|| state.add(&topic, &follower, false, options.last))
                    .flatten()
            } else {
                None
            };
            // A topic without events yet (or one created meanwhile, which this
            // follower joined from its start) has no position to give.
            if let Some(seq) = joined_at.filter(|&seq| seq > 0) {
                positions.push(pb::TopicPosition {
                    topic: name.to_string(),
                    seq,
                });
            }
        }
        subscription.subscribed = Some(subscribed(filter, positions));
        // A close that began before this follower joined everything may have missed it.
        if shared.closed.load(Ordering::SeqCst) {
            follower.inbox.close();
        }
        Ok(Box::pin(subscription))
    }

    fn close(&self) {
        let shared = &self.shared;
        if shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let topics = shared.topics();
        // Every publish that took a topic's lock before the flag was set has finished
        // once each lock has been taken after it: then no more events come.
        for topic in &topics {
            drop(lock(&topic.state));
        }
        for topic in &topics {
            for follower in &lock(&topic.state).followers {
                follower.inbox.close();
            }
        }
        for follower in lock(&shared.pattern_followers).iter() {
            follower.inbox.close();
        }
    }

    fn overflows(&self) -> Overflows {
        self.shared.pool.overflows()
    }

    fn subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }

    fn topics(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|shard| read(shard).len())
            .sum()
    }
}

impl Shared {
    /// Numbers an event (or takes its given number), hands it to the topic's followers
    /// and keeps it as the latest if it is kept; returns its number. `now` is the
    /// event's time, read once.
    fn publish(
        &self,
        topic: &str,
        draft: Draft,
        kind: Kind,
        numbering: Numbering,
        now: SystemTime,
    ) -> Result<u64, Refused> {
        let seq = self.with_topic(topic, |_, state| {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Refused::Closed);
            }
            let seq = match numbering {
                Numbering::Next => state.seq + 1,
                Numbering::Given(seq) if seq > state.seq => seq,
                Numbering::Given(_) => return Ok(state.seq),
            };
            if kind.service() && !state.service {
                state.service = true;
                self.forgettable.fetch_sub(1, Ordering::Relaxed);
                self.forgettable_bytes
                    .fetch_sub(state.latest_bytes(), Ordering::Relaxed);
            }
            if state.seq > 0 && seq > state.seq + 1 && !state.followers.is_empty() {
                // Events numbered elsewhere that never came (a node that fell further
                // behind than the cluster holds): its followers are told which.
                let missed = gap(topic, state.seq + 1, seq - 1);
                for follower in &state.followers {
                    follower.inbox.push(&missed, state.followers.len());
                }
            }
            state.seq = seq;
            let event = draft.finish(seq);
            for follower in &state.followers {
                follower.inbox.push(&event, state.followers.len());
            }
            if kind.retained() {
                let before = state.latest_bytes();
                let after = event.len();
                state.latest = Some(event);
                if !state.service && before != after {
                    self.forgettable_bytes.fetch_add(after, Ordering::Relaxed);
                    self.forgettable_bytes.fetch_sub(before, Ordering::Relaxed);
                }
            }
            state.last_published = now;
            Ok(seq)
        })?;
        if !kind.service() && self.over_caps() {
            self.sweep(now);
        }
        Ok(seq)
    }

    fn shard(&self, name: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(name) as usize % SHARDS]
    }

    fn find(&self, name: &str) -> Option<Arc<Topic>> {
        read(self.shard(name)).get(name).cloned()
    }

    fn topics(&self) -> Vec<Arc<Topic>> {
        self.shards
            .iter()
            .flat_map(|shard| read(shard).values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Runs `f` on a topic under its lock, creating the topic if need be.
    fn with_topic<R>(&self, name: &str, f: impl FnOnce(&Arc<Topic>, &mut TopicState) -> R) -> R {
        loop {
            let topic = match self.find(name) {
                Some(topic) => topic,
                None => self.create(name),
            };
            let mut state = lock(&topic.state);
            if !state.forgotten {
                return f(&topic, &mut state);
            }
        }
    }

    /// Creates a topic, already followed by the pattern followers that match it.
    fn create(&self, name: &str) -> Arc<Topic> {
        let pattern_followers = lock(&self.pattern_followers);
        if let Some(topic) = self.find(name) {
            return topic;
        }
        let topic = Arc::new(Topic {
            name: name.into(),
            state: Mutex::new(TopicState::new()),
        });
        {
            let mut state = lock(&topic.state);
            for follower in pattern_followers.iter() {
                if follower.filter.matches_pattern(name) {
                    state.add(&topic, follower, false, false);
                }
            }
        }
        write(self.shard(name)).insert(topic.name.clone(), topic.clone());
        self.forgettable.fetch_add(1, Ordering::Relaxed);
        topic
    }

    /// Whether clients' topics take more than the caps allow.
    fn over_caps(&self) -> bool {
        self.forgettable.load(Ordering::Relaxed) > self.settings.max_topics
            || self.forgettable_bytes.load(Ordering::Relaxed) > self.settings.max_topic_bytes
    }

    /// Forgets the clients' topics that nobody has published to or followed for the
    /// retention and, when over a cap, the least recently published that no follower
    /// names, until a tenth below the caps (so that a sweep is not due at every new
    /// topic).
    fn sweep(&self, now: SystemTime) {
        let Ok(_sweeping) = self.sweeping.try_lock() else {
            return;
        };
        let trim = self.over_caps();
        let (topics_floor, bytes_floor) = (
            self.settings.max_topics - self.settings.max_topics / 10,
            self.settings.max_topic_bytes - self.settings.max_topic_bytes / 10,
        );
        let over = || {
            trim && (self.forgettable.load(Ordering::Relaxed) > topics_floor
                || self.forgettable_bytes.load(Ordering::Relaxed) > bytes_floor)
        };
        let mut candidates: Vec<(SystemTime, Arc<Topic>)> = Vec::new();
        for shard in self.shards.iter() {
            for topic in read(shard).values() {
                let state = lock(&topic.state);
                if !state.service && state.named == 0 {
                    candidates.push((state.last_published, topic.clone()));
                }
            }
        }
        candidates.sort_by_key(|(at, _)| *at);
        let retention = self.settings.topic_retention;
        for (_, topic) in candidates {
            self.forget(&topic, |state| {
                (now.duration_since(state.last_published)
                    .is_ok_and(|idle| idle >= retention)
                    && state.followers.is_empty())
                    || over()
            });
        }
    }

    /// Removes a topic if it may still be forgotten and `unwanted` says so.
    fn forget(&self, topic: &Arc<Topic>, unwanted: impl FnOnce(&TopicState) -> bool) {
        let mut shard = write(self.shard(&topic.name));
        let mut state = lock(&topic.state);
        if state.forgotten || state.service || state.named > 0 || !unwanted(&state) {
            return;
        }
        state.forgotten = true;
        for follower in state.followers.drain(..) {
            follower.drop_topic(topic);
        }
        self.forgettable_bytes
            .fetch_sub(state.latest_bytes(), Ordering::Relaxed);
        state.latest = None;
        shard.remove(&topic.name);
        self.forgettable.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes a follower off every topic it followed.
    fn leave(&self, follower: &Arc<Follower>) {
        follower.inbox.abandon();
        let topics = {
            let mut joined = lock(&follower.joined);
            joined.left = true;
            std::mem::take(&mut joined.topics)
        };
        if follower.filter.has_patterns() {
            lock(&self.pattern_followers).retain(|f| !Arc::ptr_eq(f, follower));
        }
        for (topic, named) in topics.into_values() {
            let mut state = lock(&topic.state);
            if let Some(i) = state
                .followers
                .iter()
                .position(|f| Arc::ptr_eq(f, follower))
            {
                state.followers.swap_remove(i);
            }
            if named {
                state.named -= 1;
            }
        }
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The Lagged event that tells a topic's followers its events `first` to `last` are
/// missing.
fn gap(topic: &str, first: u64, last: u64) -> EncodedEvent {
    let missed = last - first + 1;
    EncodedEvent::new(&pb::Event {
        topic: String::new(),
        seq: 0,
        time: Some(SystemTime::now().into()),
        payload: Some(Payload::Lagged(pb::Lagged {
            missed,
            topics: vec![pb::Skipped {
                topic: topic.to_owned(),
                missed,
                first_seq: first,
                last_seq: last,
            }],
        })),
    })
}

/// A subscription's stream; dropping it leaves every topic.
struct Subscription {
    follower: Arc<Follower>,
    shared: Arc<Shared>,
    /// The Subscribed event, until it is taken: ahead of the inbox and outside its
    /// buffer.
    subscribed: Option<EncodedEvent>,
    reader: Reader,
}

impl Stream for Subscription {
    type Item = Result<EncodedEvent, BufferFull>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(subscribed) = this.subscribed.take() {
            return Poll::Ready(Some(Ok(subscribed)));
        }
        this.follower.inbox.poll_next(&mut this.reader, cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.leave(&self.follower);
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};
    use prost::Message;

    use super::*;
    use crate::{
        bus::{Bus, MAX_EVENT_BYTES, MIN_BUFFER, Overflow, cost},
        pb,
        wire::EncodedStruct,
    };

    fn bus_with(settings: Settings) -> (LocalBus, Bus) {
        let local = LocalBus::new(settings);
        (local.clone(), Bus::new(local))
    }

    fn text(n: usize) -> Payload {
        Payload::Text(pb::Text {
            body: "x".repeat(n),
            ..Default::default()
        })
    }

    fn client_data(n: f64) -> EncodedStruct {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "n".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(n)),
            },
        );
        EncodedStruct::check(s.encode_to_vec().into()).unwrap()
    }

    /// A subscription past its Subscribed event.
    fn subscribe(bus: &Bus, patterns: &[&str], options: SubscribeOptions) -> Events {
        subscribe_at(bus, patterns, options).1
    }

    /// A subscription, and the positions its Subscribed event gave.
    fn subscribe_at(
        bus: &Bus,
        patterns: &[&str],
        options: SubscribeOptions,
    ) -> (Vec<(String, u64)>, Events) {
        let mut events = bus
            .subscribe(SubscribeOptions {
                filter: TopicFilter::new(patterns).unwrap(),
                ..options
            })
            .unwrap();
        let first = next_now(&mut events);
        let Some(pb::Event {
            topic,
            seq: 0,
            payload: Some(Payload::Subscribed(subscribed)),
            ..
        }) = first
        else {
            panic!("first came {first:?}");
        };
        assert!(topic.is_empty());
        assert_eq!(subscribed.topics, patterns);
        let positions = subscribed
            .positions
            .into_iter()
            .map(|p| (p.topic, p.seq))
            .collect();
        (positions, events)
    }

    /// The next event, decoded, if it has arrived.
    fn next_now(events: &mut Events) -> Option<pb::Event> {
        let event = events.next().now_or_never()??;
        Some(pb::Event::decode(event.unwrap().bytes().clone()).unwrap())
    }

    /// The events that have arrived, decoded, without waiting for more.
    fn arrived(events: &mut Events) -> Vec<pb::Event> {
        std::iter::from_fn(|| next_now(events)).collect()
    }

    fn topics_and_seqs(events: &[pb::Event]) -> Vec<(&str, u64)> {
        events.iter().map(|e| (e.topic.as_str(), e.seq)).collect()
    }

    #[test]
    fn events_numbered_elsewhere_that_never_came_are_reported_missing() {
        let (local, bus) = bus_with(Settings::default());
        let mut events = subscribe(&bus, &["t"], SubscribeOptions::default());
        next_now(&mut events);
        let time = SystemTime::now().into();
        let deliver = |seq| {
            let draft = Draft::new("t", &time, &text(seq as usize));
            local.deliver("t", seq, draft, Kind::Client).unwrap();
        };
        for seq in [1, 2, 2, 6, 4, 7] {
            deliver(seq);
        }
        let seen = arrived(&mut events);
        let lagged: Vec<_> = seen
            .iter()
            .filter_map(|e| match &e.payload {
                Some(Payload::Lagged(lagged)) => Some(lagged.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            topics_and_seqs(&seen),
            [("t", 1), ("t", 2), ("", 0), ("t", 6), ("t", 7)]
        );
        assert_eq!(
            lagged,
            [pb::Lagged {
                missed: 3,
                topics: vec![pb::Skipped {
                    topic: "t".into(),
                    missed: 3,
                    first_seq: 3,
                    last_seq: 5,
                }],
            }]
        );
    }

    #[test]
    fn sequences_are_per_topic_and_filters_apply() {
        let (_, bus) = bus_with(Settings::default());
        let mut all = subscribe(&bus, &[], Default::default());
        let mut only_b = subscribe(&bus, &["b*"], Default::default());
        assert_eq!(bus.subscribers(), 2);
        assert_eq!(bus.numbered("a", text(1)), Ok(1));
        assert_eq!(bus.numbered_data("a", &client_data(2.0)), Ok(2));
        assert_eq!(bus.numbered("bee", text(3)), Ok(1));
        assert_eq!(
            topics_and_seqs(&arrived(&mut all)),
            [("a", 1), ("a", 2), ("bee", 1)]
        );
        assert_eq!(topics_and_seqs(&arrived(&mut only_b)), [("bee", 1)]);
        drop(all);
        assert_eq!(bus.subscribers(), 1);
    }

    #[test]
    fn names_and_patterns_that_overlap_deliver_each_event_once() {
        let (_, bus) = bus_with(Settings::default());
        let mut events = subscribe(&bus, &["a1", "a*", "*1"], Default::default());
        bus.publish("a1", text(1)).unwrap();
        bus.publish("a2", text(1)).unwrap();
        bus.publish("b1", text(1)).unwrap();
        bus.publish("b2", text(1)).unwrap();
        assert_eq!(
            topics_and_seqs(&arrived(&mut events)),
            [("a1", 1), ("a2", 1), ("b1", 1)]
        );
    }

    #[test]
    fn last_gives_latest_data_first_in_topic_order_without_overlap() {
        let (_, bus) = bus_with(Settings::default());
        bus.publish("c", text(9)).unwrap();
        bus.publish("a", text(1)).unwrap();
        bus.publish("a", text(2)).unwrap();
        bus.publish("a", Payload::Lifecycle(pb::Lifecycle::default()))
            .unwrap();
        bus.publish("b", Payload::Lifecycle(pb::Lifecycle::default()))
            .unwrap();
        let options = || SubscribeOptions {
            last: true,
            ..Default::default()
        };
        let mut named = subscribe(&bus, &["c", "a", "b"], options());
        let mut patterned = subscribe(&bus, &["?"], options());
        bus.publish("a", text(3)).unwrap();
        for events in [&mut named, &mut patterned] {
            assert_eq!(
                topics_and_seqs(&arrived(events)),
                [("a", 2), ("c", 1), ("a", 4)]
            );
        }
    }

    #[test]
    fn a_snapshot_and_a_position_meet_live_events_without_gap_or_overlap_under_load() {
        let (_, bus) = bus_with(Settings::default());
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    bus.publish_data("hot", &client_data(i as f64)).unwrap();
                }
            })
        };
        loop {
            let publishing = !publisher.is_finished();
            for (patterns, last) in [(["h*"], true), (["hot"], false)] {
                let options = SubscribeOptions {
                    last,
                    ..Default::default()
                };
                let (positions, mut events) = subscribe_at(&bus, &patterns, options);
                std::thread::yield_now();
                let seqs: Vec<u64> = arrived(&mut events).iter().map(|e| e.seq).collect();
                assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
                // The snapshot is the event at the position; live events follow it.
                let first = match positions[..] {
                    [] => 1,
                    [(_, at)] if last => at,
                    [(_, at)] => at + 1,
                    _ => panic!("{positions:?}"),
                };
                assert!(seqs.first().is_none_or(|&seq| seq == first), "{seqs:?}");
            }
            if !publishing {
                break;
            }
        }
        publisher.join().unwrap();
    }

    #[test]
    fn subscribed_gives_each_matching_topic_with_events_its_latest_seq() {
        let (_, bus) = bus_with(Settings::default());
        for _ in 0..3 {
            bus.publish("a/1", text(1)).unwrap();
        }
        bus.publish("a/2", text(1)).unwrap();
        bus.publish("b", text(1)).unwrap();
        let _names_quiet = subscribe(&bus, &["a/quiet"], Default::default());
        let options = || SubscribeOptions {
            last: true,
            ..Default::default()
        };
        let (positions, mut events) = subscribe_at(&bus, &["a/*", "a/none"], options());
        let expected = [("a/1".to_owned(), 3), ("a/2".to_owned(), 1)];
        assert_eq!(
            positions, expected,
            "topics without events have no position"
        );
        bus.publish("a/1", text(1)).unwrap();
        assert_eq!(
            topics_and_seqs(&arrived(&mut events)),
            [("a/1", 3), ("a/2", 1), ("a/1", 4)]
        );
        let (positions, _) = subscribe_at(&bus, &[], options());
        assert_eq!(
            positions,
            [
                ("a/1".to_owned(), 4),
                ("a/2".to_owned(), 1),
                ("b".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn subscribed_comes_first_and_whole_even_when_the_snapshots_overflow() {
        let (_, bus) = bus_with(Settings::default());
        for i in 0..200 {
            bus.publish(&format!("t{i:03}"), text(1000)).unwrap();
        }
        for overflow in [Overflow::Skip, Overflow::Close] {
            let options = SubscribeOptions {
                last: true,
                buffer: Some(MIN_BUFFER as u64),
                overflow,
                ..Default::default()
            };
            let (positions, mut events) = subscribe_at(&bus, &["t*"], options);
            assert_eq!(positions.len(), 200);
            let next = events.next().now_or_never().flatten().unwrap();
            match overflow {
                Overflow::Skip => {
                    let next = pb::Event::decode(next.unwrap().bytes().clone()).unwrap();
                    assert!(matches!(next.payload, Some(Payload::Lagged(_))), "{next:?}");
                }
                Overflow::Close => assert!(next.is_ok(), "the snapshots held come first"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_subscriber_takes_its_events_after_a_pause_and_a_quiet_one_at_once() {
        struct Counted(AtomicUsize);
        impl std::task::Wake for Counted {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (_, bus) = bus_with(Settings::default());
        let mut events = subscribe(&bus, &["a"], Default::default());
        let wakes = Arc::new(Counted(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(Ordering::SeqCst);
        let mut taken = |events: &mut Events| {
            std::iter::from_fn(|| match events.as_mut().poll_next(&mut cx) {
                Poll::Ready(Some(Ok(event))) => Some(event),
                Poll::Pending => None,
                other => panic!("the stream gave {other:?}"),
            })
            .count()
        };
        let tick = Duration::from_micros(100);

        // Quiet: woken by its first event, and by the next, a while later.
        assert_eq!(taken(&mut events), 0);
        bus.publish("a", text(1)).unwrap();
        assert_eq!((woken(), taken(&mut events)), (1, 1));
        tokio::time::advance(Duration::from_millis(10)).await;
        bus.publish("a", text(1)).unwrap();
        assert_eq!((woken(), taken(&mut events)), (2, 1));

        // An event soon after the last makes it busy: those that follow do not wake it.
        tokio::time::advance(tick).await;
        bus.publish("a", text(1)).unwrap();
        assert_eq!((woken(), taken(&mut events)), (3, 1));
        for _ in 0..3 {
            bus.publish("a", text(1)).unwrap();
        }
        assert_eq!(woken(), 3);
        // The pause's end wakes it once, for all three.
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!((woken(), taken(&mut events)), (4, 3));

        // A pause with nothing in it: quiet again, woken by the next event at once.
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!((woken(), taken(&mut events)), (5, 0));
        bus.publish("a", text(1)).unwrap();
        assert_eq!((woken(), taken(&mut events)), (6, 1));
    }

    #[test]
    fn a_quiet_topic_loses_nothing_to_a_loud_one() {
        let (_, bus) = bus_with(Settings {
            subscriber_buffer: MIN_BUFFER,
            ..Default::default()
        });
        let mut quiet = subscribe(&bus, &["quiet"], Default::default());
        let mut loud = subscribe(&bus, &["loud"], Default::default());
        for i in 0..10_000 {
            bus.publish("loud", text(1000)).unwrap();
            if i % 100 == 0 {
                bus.publish("quiet", text(10)).unwrap();
            }
        }
        let events = arrived(&mut quiet);
        assert_eq!(events.len(), 100);
        assert!(events.iter().all(|e| e.topic == "quiet"));
        assert!(
            arrived(&mut loud)
                .iter()
                .any(|e| matches!(e.payload, Some(Payload::Lagged(_)))),
            "the loud topic's own reader overflowed"
        );
    }

    #[test]
    fn a_burst_that_fits_the_buffer_loses_nothing() {
        let (_, bus) = bus_with(Settings::default());
        let mut events = subscribe(&bus, &["burst"], Default::default());
        // 50,000 events of ~200 bytes: about 13 MiB with the overhead, within the default buffer.
        for _ in 0..50_000 {
            bus.publish("burst", text(180)).unwrap();
        }
        let seqs: Vec<u64> = arrived(&mut events).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=50_000).collect::<Vec<_>>());
    }

    #[test]
    fn past_its_buffer_a_reader_skips_the_oldest_and_is_told_exactly_which() {
        let (_, bus) = bus_with(Settings::default());
        let mut events = subscribe(
            &bus,
            &["a", "b"],
            SubscribeOptions {
                buffer: Some(MIN_BUFFER as u64),
                ..Default::default()
            },
        );
        bus.publish("other", text(1000)).unwrap();
        for _ in 0..100 {
            bus.publish("a", text(1000)).unwrap();
            bus.publish("b", text(1000)).unwrap();
        }
        let one = bus.numbered("a", text(1000)).unwrap();
        assert_eq!(one, 101);
        let seen = arrived(&mut events);
        let Some(Payload::Lagged(lagged)) = &seen[0].payload else {
            panic!("first came {:?}", seen[0]);
        };
        let kept = &seen[1..];
        assert_eq!(
            lagged.missed as usize + kept.len(),
            201,
            "every event counted once"
        );
        for skipped in &lagged.topics {
            assert_eq!(skipped.first_seq, 1, "{skipped:?}");
            assert_eq!(skipped.missed, skipped.last_seq, "{skipped:?}");
            let first_kept = kept.iter().find(|e| e.topic == skipped.topic).unwrap();
            assert_eq!(first_kept.seq, skipped.last_seq + 1, "it skips ahead");
        }
        let topics: Vec<_> = lagged.topics.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(topics, ["a", "b"], "only its own topics, in order");
        let held: usize = kept
            .iter()
            .map(|e| cost(&crate::wire::EncodedEvent::new(e)))
            .sum();
        assert!(held <= MIN_BUFFER, "{held}");
        // After catching up, nothing more is skipped.
        bus.publish("b", text(10)).unwrap();
        assert_eq!(topics_and_seqs(&arrived(&mut events)), [("b", 101)]);
    }

    #[test]
    fn a_reader_that_chose_close_gets_what_was_held_then_the_error() {
        let (_, bus) = bus_with(Settings::default());
        let mut events = subscribe(
            &bus,
            &["t"],
            SubscribeOptions {
                buffer: Some(MIN_BUFFER as u64),
                overflow: Overflow::Close,
                ..Default::default()
            },
        );
        for _ in 0..200 {
            bus.publish("t", text(1000)).unwrap();
        }
        let mut seqs = Vec::new();
        let error = loop {
            match events
                .next()
                .now_or_never()
                .expect("ready")
                .expect("an item")
            {
                Ok(event) => seqs.push(event.topic_and_seq().unwrap().1),
                Err(full) => break full,
            }
        };
        assert_eq!(error.buffer, MIN_BUFFER);
        assert!(!seqs.is_empty() && seqs.len() < 200);
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        assert_eq!(events.next().now_or_never(), Some(None), "then it ends");
    }

    #[test]
    fn subscribers_who_stop_reading_are_held_to_a_share_of_the_daemons_limit() {
        let limit = 4 * MIN_BUFFER;
        let (local, bus) = bus_with(Settings {
            max_buffered: limit,
            ..Settings::default()
        });
        let mut stalled: Vec<_> = (0..3)
            .map(|_| subscribe(&bus, &["t"], Default::default()))
            .collect();
        let mut closing = subscribe(
            &bus,
            &["t"],
            SubscribeOptions {
                overflow: Overflow::Close,
                ..Default::default()
            },
        );
        let mut reading = subscribe(&bus, &["t"], Default::default());
        let published = 2_000;
        let mut read = Vec::new();
        for _ in 0..published {
            bus.publish("t", text(1000)).unwrap();
            read.extend(arrived(&mut reading));
            // Each holds its share at most, plus less than two chunks of room drawn.
            assert!(local.shared.pool.drawn() <= 2 * limit + 5 * 128 * 1024);
        }
        assert_eq!(read.len(), published, "the reader lost nothing");
        assert!(
            read.iter()
                .all(|e| !matches!(e.payload, Some(Payload::Lagged(_))))
        );
        let share = limit / 5;
        for events in &mut stalled {
            let seen = arrived(events);
            let Some(Payload::Lagged(lagged)) = &seen[0].payload else {
                panic!("first came {:?}", seen[0]);
            };
            assert_eq!(lagged.missed as usize + seen.len() - 1, published);
            let held: usize = seen[1..]
                .iter()
                .map(|e| cost(&crate::wire::EncodedEvent::new(e)))
                .sum();
            assert!(held <= share, "{held} > {share}");
        }
        let error = loop {
            match closing
                .next()
                .now_or_never()
                .expect("ready")
                .expect("an item")
            {
                Ok(_) => continue,
                Err(full) => break full,
            }
        };
        assert_eq!((error.buffer, error.shared), (share, true), "{error}");
        drop((stalled, closing, reading));
        assert_eq!(
            local.shared.pool.drawn(),
            0,
            "everything drawn is given back"
        );
    }

    #[test]
    fn buffers_outside_the_limits_are_refused() {
        let (_, bus) = bus_with(Settings::default());
        for asked in [1, MIN_BUFFER as u64 - 1, (256 << 20) + 1] {
            let refused = bus
                .subscribe(SubscribeOptions {
                    buffer: Some(asked),
                    ..Default::default()
                })
                .err()
                .unwrap();
            assert!(matches!(refused, Refused::Buffer { .. }), "{asked}");
        }
        assert_eq!(bus.subscribers(), 0);
    }

    #[test]
    fn oversized_events_are_refused_without_using_a_sequence_number() {
        let (_, bus) = bus_with(Settings::default());
        assert!(matches!(
            bus.publish("t", text(MAX_EVENT_BYTES)),
            Err(Refused::TooLarge(_))
        ));
        assert_eq!(bus.numbered("t", text(1)), Ok(1));
    }

    #[test]
    fn closing_ends_subscriptions_after_the_events_before_it() {
        let (_, bus) = bus_with(Settings::default());
        let mut events = subscribe(&bus, &[], Default::default());
        bus.publish("t", text(1)).unwrap();
        bus.close();
        assert_eq!(bus.numbered("t", text(2)), Err(Refused::Closed));
        assert_eq!(topics_and_seqs(&arrived(&mut events)), [("t", 1)]);
        assert_eq!(events.next().now_or_never(), Some(None));
        let options = SubscribeOptions {
            last: true,
            ..Default::default()
        };
        let mut late = subscribe(&bus, &["t"], options);
        assert_eq!(topics_and_seqs(&arrived(&mut late)), [("t", 1)]);
        assert_eq!(late.next().now_or_never(), Some(None));
    }

    #[test]
    fn clients_topics_are_forgotten_after_the_retention_unless_kept() {
        let retention = Duration::from_secs(60);
        let (local, bus) = bus_with(Settings {
            topic_retention: retention,
            ..Default::default()
        });
        bus.publish("service", text(1)).unwrap();
        bus.publish_data("named", &client_data(1.0)).unwrap();
        bus.publish_data("matched", &client_data(1.0)).unwrap();
        bus.publish_data("idle", &client_data(1.0)).unwrap();
        let _named = subscribe(&bus, &["named"], Default::default());
        let _matched = subscribe(&bus, &["mat*"], Default::default());
        assert_eq!(local.shared.forgettable.load(Ordering::Relaxed), 3);
        local.shared.sweep(SystemTime::now());
        assert_eq!(
            local.shared.forgettable.load(Ordering::Relaxed),
            3,
            "not yet"
        );
        local.shared.sweep(SystemTime::now() + retention);
        assert_eq!(
            local.shared.forgettable.load(Ordering::Relaxed),
            2,
            "idle is gone"
        );
        // Numbering starts again for a topic forgotten; the others go on.
        assert_eq!(bus.numbered_data("idle", &client_data(2.0)), Ok(1));
        assert_eq!(bus.numbered_data("named", &client_data(2.0)), Ok(2));
        assert_eq!(bus.numbered("service", text(1)), Ok(2));
    }

    #[test]
    fn beyond_the_cap_the_least_recently_published_go_and_memory_stays_flat() {
        let (local, bus) = bus_with(Settings {
            max_topics: 100,
            ..Default::default()
        });
        let mut everything = subscribe(&bus, &[], Default::default());
        bus.publish_data("kept", &client_data(0.0)).unwrap();
        let _kept = subscribe(&bus, &["kept"], Default::default());
        for i in 0..10_000 {
            bus.publish_data(&format!("t{i}"), &client_data(i as f64))
                .unwrap();
            assert!(local.shared.forgettable.load(Ordering::Relaxed) <= 101);
        }
        assert!(local.shared.forgettable.load(Ordering::Relaxed) >= 90);
        // The newest stay, the topic that is named stays, and the follower of every
        // topic follows no more than there are.
        let shared = &local.shared;
        assert!(shared.find("t9999").is_some() && shared.find("kept").is_some());
        assert!(shared.find("t0").is_none());
        let follows = lock(&shared.pattern_followers)[0]
            .joined
            .lock()
            .unwrap()
            .topics
            .len();
        assert_eq!(follows, local.shared.forgettable.load(Ordering::Relaxed));
        assert_eq!(arrived(&mut everything).len(), 10_001, "it saw every event");
    }

    #[test]
    fn the_bytes_of_latest_events_are_capped_too() {
        let (local, bus) = bus_with(Settings {
            max_topic_bytes: 100_000,
            ..Default::default()
        });
        for i in 0..100 {
            bus.publish(&format!("s{i}"), text(10_000)).unwrap();
            let big = EncodedStruct::check(
                prost_types::Struct {
                    fields: [(
                        "pad".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue("x".repeat(10_000))),
                        },
                    )]
                    .into(),
                }
                .encode_to_vec()
                .into(),
            )
            .unwrap();
            bus.publish_data(&format!("c{i}"), &big).unwrap();
            assert!(local.shared.forgettable_bytes.load(Ordering::Relaxed) <= 100_000 + 10_100);
        }
        assert_eq!(
            local.shared.find("s0").map(|_| ()),
            Some(()),
            "services' topics stay"
        );
    }

    #[test]
    fn events_for_a_few_subscribers_are_copied_and_for_many_shared() {
        let (local, bus) = bus_with(Settings::default());
        let _few: Vec<_> = (0..2)
            .map(|_| subscribe(&bus, &["few"], Default::default()))
            .collect();
        let _many: Vec<_> = (0..50)
            .map(|_| subscribe(&bus, &["many"], Default::default()))
            .collect();
        for topic in ["few", "many"] {
            bus.publish(topic, text(10)).unwrap();
        }
        let chunks = |name| {
            let topic = local.shared.find(name).unwrap();
            let state = lock(&topic.state);
            state
                .followers
                .iter()
                .map(|f| f.inbox.chunks())
                .sum::<usize>()
        };
        assert_eq!((chunks("few"), chunks("many")), (2, 0));
    }

    #[test]
    fn leaving_takes_a_follower_off_every_topic() {
        let (local, bus) = bus_with(Settings::default());
        let events = subscribe(&bus, &["a", "b*"], Default::default());
        bus.publish("a", text(1)).unwrap();
        bus.publish("bb", text(1)).unwrap();
        drop(events);
        assert_eq!(bus.subscribers(), 0);
        for name in ["a", "bb"] {
            let topic = local.shared.find(name).unwrap();
            let state = lock(&topic.state);
            assert!(state.followers.is_empty() && state.named == 0, "{name}");
        }
        assert!(lock(&local.shared.pattern_followers).is_empty());
    }

    #[test]
    fn a_subscription_that_would_start_on_too_many_topics_is_refused_and_leaves_nothing() {
        let max = crate::bus::MAX_SUBSCRIBED_TOPICS;
        let (local, bus) = bus_with(Settings {
            max_topics: max + 10,
            ..Settings::default()
        });
        let data = client_data(1.0);
        for i in 0..=max {
            bus.numbered_data(&format!("t/{i}"), &data).unwrap();
        }
        let refused = bus.subscribe(SubscribeOptions {
            filter: TopicFilter::new(&["t/*"]).unwrap(),
            ..Default::default()
        });
        assert_eq!(refused.err(), Some(Refused::TooManyTopics));
        assert_eq!(bus.subscribers(), 0);
        assert!(lock(&local.shared.pattern_followers).is_empty());
        // One topic fewer, and it starts.
        assert!(local.shared.find("t/0").is_some());
        local
            .shared
            .forget(&local.shared.find("t/0").unwrap(), |_| true);
        let (positions, _events) = subscribe_at(&bus, &["t/*"], Default::default());
        assert_eq!(positions.len(), max);
    }
}
