//! One subscriber's inbox: the events waiting for its client, within its buffer, and
//! the reading side that hands them to its stream.
//!
//! Publishers push into the inbox under its own lock, held only to append; the stream
//! takes a batch of the oldest events at a time and sends them without the lock.
//! Events handed over still count against the buffer until the stream asks for more,
//! so the buffer bounds all that the subscriber holds; a batch is small beside the
//! buffer, so that when the buffer is full the oldest waiting events are dropped and
//! the newest kept. Memory is taken as events wait and given back as they go: an idle
//! inbox holds no events and no room for them.
//!
//! A busy reader (one whose events come less than a [`PAUSE`] apart) is not woken for
//! each event: once it has sent what it took, it waits out a pause and then takes what
//! came meanwhile. At a few thousand events a second to a hundred subscribers, waking
//! each for each event (a task woken on another thread, that thread woken from its
//! sleep, one write per event) costs more than the events; a busy subscriber waits at
//! most a pause longer, and a quiet one is woken at once.
//!
//! All inboxes together draw on one [`Pool`], the daemon's limit on what subscribers
//! hold: while it has room each inbox may fill its own buffer; once it is full, an
//! inbox holding more than an equal share is held to that share, so that subscribers
//! who stopped reading cannot take the memory of those who read.

use std::{
    collections::{BTreeMap, VecDeque},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

use bytes::BytesMut;
use tokio::time::{Instant, Sleep};

use super::{BufferFull, Overflow, cost, cost_of, lock};
use crate::{
    lanes::{self, Lane},
    pb::{self, event::Payload},
    wire::EncodedEvent,
};

/// Room for events kept in an empty queue or batch; more, left by a burst, is given
/// back.
const KEPT_ROOM: usize = 256;

/// The most a reader takes from the queue at once, in the bytes its buffer counts:
/// about what the gRPC layer writes in one go.
const BATCH: usize = 32 * 1024;

/// How long a busy reader waits before it takes what came; a reader whose events came
/// further apart than this is woken by the next at once. Timers have millisecond
/// resolution: the readers that pause together are woken together.
const PAUSE: Duration = Duration::from_millis(1);

/// An inbox draws on the pool in steps of this much, so that steady traffic touches
/// the shared count rarely.
const CHUNK: usize = 64 * 1024;

/// What all inboxes hold together, against the daemon's limit.
pub(super) struct Pool {
    limit: usize,
    /// What inboxes have drawn: what they hold, plus less than two chunks each.
    drawn: AtomicUsize,
    inboxes: AtomicUsize,
    /// Events dropped from full buffers under [`Overflow::Skip`], since the start.
    skipped: AtomicU64,
    /// Streams ended by a full buffer under [`Overflow::Close`], since the start.
    closed: AtomicU64,
}

impl Pool {
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            drawn: AtomicUsize::new(0),
            inboxes: AtomicUsize::new(0),
            skipped: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        })
    }

    /// What full buffers have cost subscribers so far.
    pub(super) fn overflows(&self) -> Overflows {
        Overflows {
            skipped: self.skipped.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }

    /// Each inbox's part of the limit once it is reached.
    fn share(&self) -> usize {
        self.limit / self.inboxes.load(Ordering::Relaxed).max(1)
    }

    #[cfg(test)]
    pub(super) fn drawn(&self) -> usize {
        self.drawn.load(Ordering::Relaxed)
    }
}

pub(super) struct Inbox {
    buffer: usize,
    overflow: Overflow,
    pool: Arc<Pool>,
    /// A std mutex: held only to append or to take a batch, never across an await.
    queue: Mutex<Queue>,
}

struct Queue {
    events: Waiting,
    /// What the events waiting and those handed to the reader but not yet sent cost.
    held: usize,
    /// What this inbox has drawn from the pool: `held` and some room.
    drawn: usize,
    /// Events skipped since the reader last took any: they came before `events`.
    skipped: Option<Box<Skipped>>,
    /// The reader, when it waits to be woken by the next event; None while it waits
    /// out a pause, which its timer ends.
    waker: Option<Waker>,
    state: State,
    /// The limit that overflowed under [`Overflow::Close`].
    full: Option<BufferFull>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// No more events: the reader ends after those waiting.
    Closed,
    /// The buffer overflowed under [`Overflow::Close`]: the reader gets the events
    /// waiting, then the error.
    Full,
    /// The reader is gone; nothing is kept.
    Abandoned,
}

/// What full buffers have cost subscribers since the daemon started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Overflows {
    /// Events dropped from buffers under the skip policy (each told in a Lagged event).
    pub skipped: u64,
    /// Streams ended under the close policy.
    pub closed: u64,
}

/// The events one subscriber skipped, per topic.
#[derive(Default)]
struct Skipped {
    total: u64,
    topics: BTreeMap<String, pb::Skipped>,
}

impl Skipped {
    fn add(&mut self, event: &EncodedEvent) {
        self.total += 1;
        let Some((topic, seq)) = event.topic_and_seq() else {
            return;
        };
        match self.topics.get_mut(topic) {
            Some(skipped) => {
                skipped.missed += 1;
                skipped.last_seq = seq;
            }
            None => {
                self.topics.insert(
                    topic.to_owned(),
                    pb::Skipped {
                        topic: topic.to_owned(),
                        missed: 1,
                        first_seq: seq,
                        last_seq: seq,
                    },
                );
            }
        }
    }

    /// The Lagged event that tells the subscriber.
    fn lagged(self) -> EncodedEvent {
        EncodedEvent::new(&pb::Event {
            topic: String::new(),
            seq: 0,
            time: Some(SystemTime::now().into()),
            payload: Some(Payload::Lagged(pb::Lagged {
                missed: self.total,
                topics: self.topics.into_values().collect(),
            })),
        })
    }
}

impl Inbox {
    pub(super) fn new(buffer: usize, overflow: Overflow, pool: Arc<Pool>) -> Self {
        pool.inboxes.fetch_add(1, Ordering::Relaxed);
        Self {
            buffer,
            overflow,
            pool,
            queue: Mutex::new(Queue {
                events: Waiting::default(),
                held: 0,
                drawn: 0,
                skipped: None,
                waker: None,
                state: State::Open,
                full: None,
            }),
        }
    }

    /// Adds an event for the subscriber, making room by the overflow policy when the
    /// buffer is full. Never waits for the reader. `fan_out`: how many inboxes the
    /// event goes to (see [`Waiting`]).
    pub(super) fn push(&self, event: &EncodedEvent, fan_out: usize) {
        let cost = cost(event);
        let waker = {
            let mut queue = lock(&self.queue);
            if queue.state != State::Open {
                return;
            }
            let needed = queue.held + cost;
            let limit = self.draw(&mut queue, needed);
            if needed > limit.buffer {
                match self.overflow {
                    Overflow::Close => {
                        queue.state = State::Full;
                        queue.full = Some(limit);
                        self.pool.closed.fetch_add(1, Ordering::Relaxed);
                    }
                    Overflow::Skip => {
                        let skipped = queue.skip_for(cost, limit.buffer, event, fan_out);
                        self.pool.skipped.fetch_add(skipped, Ordering::Relaxed);
                        self.give_back_spare(&mut queue);
                    }
                }
            } else {
                queue.held += cost;
                queue.events.push_back(event, fan_out);
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Draws from the pool what holding `needed` bytes takes, when it has room or
    /// `needed` is within an equal share; returns the limit that applies: this inbox's
    /// buffer, or its share of a full pool.
    fn draw(&self, queue: &mut Queue, needed: usize) -> BufferFull {
        let pool = &self.pool;
        let own = BufferFull {
            buffer: self.buffer,
            shared: false,
        };
        if needed > self.buffer {
            return own;
        }
        let limited = || BufferFull {
            buffer: pool.share().min(self.buffer),
            shared: true,
        };
        if needed <= queue.drawn {
            // Drawn while the pool had room: once it is full, still only a share.
            let full = pool.drawn.load(Ordering::Relaxed) + CHUNK > pool.limit;
            return if full && needed > pool.share() {
                limited()
            } else {
                own
            };
        }
        let more = (needed - queue.drawn).next_multiple_of(CHUNK);
        let before = pool.drawn.fetch_add(more, Ordering::Relaxed);
        if before + more <= pool.limit || needed <= pool.share() {
            queue.drawn += more;
            return own;
        }
        pool.drawn.fetch_sub(more, Ordering::Relaxed);
        limited()
    }

    /// Returns to the pool what this inbox drew beyond a chunk over what it holds.
    fn give_back_spare(&self, queue: &mut Queue) {
        let keep = queue.held.next_multiple_of(CHUNK);
        if queue.drawn > keep + CHUNK {
            self.pool
                .drawn
                .fetch_sub(queue.drawn - keep, Ordering::Relaxed);
            queue.drawn = keep;
        }
    }

    /// No more events: the reader ends once it has those waiting (a reader in a pause,
    /// when the pause ends).
    pub(super) fn close(&self) {
        let waker = {
            let mut queue = lock(&self.queue);
            if queue.state == State::Open {
                queue.state = State::Closed;
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The reader is gone: drops what waits and refuses what comes.
    pub(super) fn abandon(&self) {
        let mut queue = lock(&self.queue);
        queue.state = State::Abandoned;
        queue.events = Waiting::default();
        queue.skipped = None;
        queue.waker = None;
        queue.held = 0;
        self.give_back_spare(&mut queue);
    }

    /// The next event for the reader, taking a batch from the queue when its own is
    /// used up; Pending (with the waker kept) when there is none yet.
    pub(super) fn poll_next(
        &self,
        reader: &mut Reader,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<EncodedEvent, BufferFull>>> {
        if let Some(event) = reader.batch.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        if reader.batch.capacity() > KEPT_ROOM {
            reader.batch = VecDeque::new();
        }
        let skipped = {
            let mut queue = lock(&self.queue);
            // Everything in the last batch has been sent.
            queue.held -= std::mem::take(&mut reader.held);
            self.give_back_spare(&mut queue);
            let skipped = queue.skipped.take();
            if !queue.events.is_empty() {
                reader.held = queue.take_batch(&mut reader.batch);
                reader.took();
            } else if skipped.is_none() {
                return match queue.state {
                    State::Open => {
                        if reader.pauses(cx) {
                            queue.waker = None;
                            return Poll::Pending;
                        }
                        queue.events.release();
                        if !queue
                            .waker
                            .as_ref()
                            .is_some_and(|w| w.will_wake(cx.waker()))
                        {
                            queue.waker = Some(cx.waker().clone());
                        }
                        Poll::Pending
                    }
                    State::Full => {
                        queue.state = State::Closed;
                        Poll::Ready(queue.full.take().map(Err))
                    }
                    State::Closed | State::Abandoned => Poll::Ready(None),
                };
            }
            skipped
        };
        match skipped {
            // The skipped events came before this batch.
            Some(skipped) => Poll::Ready(Some(Ok(skipped.lagged()))),
            None => Poll::Ready(reader.batch.pop_front().map(Ok)),
        }
    }
}

impl Queue {
    /// Moves the oldest events, up to [`BATCH`] bytes' worth (at least one), to the
    /// reader's batch; returns what they cost. A batch much smaller than the buffer
    /// leaves room for new events while it is sent, so that the newest are kept.
    fn take_batch(&mut self, batch: &mut VecDeque<EncodedEvent>) -> usize {
        let mut taken = 0;
        while let Some(len) = self.events.front_len() {
            let cost = cost_of(len);
            if taken > 0 && taken + cost > BATCH {
                break;
            }
            taken += cost;
            batch.extend(self.events.pop_front());
        }
        self.events.shrink();
        taken
    }

    /// Drops the oldest events waiting until `cost` fits, then adds the event; drops
    /// the event itself when what the reader already took leaves no room. Gives how
    /// many it dropped.
    fn skip_for(
        &mut self,
        cost: usize,
        buffer: usize,
        event: &EncodedEvent,
        fan_out: usize,
    ) -> u64 {
        let skipped = self.skipped.get_or_insert_default();
        let before = skipped.total;
        while self.held + cost > buffer {
            let Some(oldest) = self.events.pop_front() else {
                break;
            };
            self.held -= super::cost(&oldest);
            skipped.add(&oldest);
        }
        if self.held + cost > buffer {
            skipped.add(event);
        } else {
            self.held += cost;
            self.events.push_back(event, fan_out);
        }
        skipped.total - before
    }
}

/// The events waiting in a queue. A small event for a few subscribers is copied into
/// chunks of each inbox's own, so that handing it to a reader on another thread
/// touches nothing that other threads touch: a shared event's reference count, taken
/// by the publisher and dropped by each subscriber's stream, is a cache line that every
/// delivery moves between cores, and the event's memory is freed on another thread
/// than took it. A large event, or one for many subscribers, is shared: copies would
/// cost each subscriber a copy and, for a burst to many idle ones, a chunk each.
#[derive(Default)]
struct Waiting {
    entries: VecDeque<Entry>,
    /// Copies, oldest first. A chunk is filled and never grown: however far behind
    /// the reader is, what waits is never copied to a larger allocation.
    chunks: VecDeque<BytesMut>,
    /// A chunk the reader has emptied, written again once the reader has sent all it
    /// took from it: memory still in the caches rather than new.
    spare: Option<BytesMut>,
    /// Chunks allocated, rather than written again.
    #[cfg(test)]
    chunks_made: usize,
}

enum Entry {
    /// This many bytes at the front of the first chunk that holds any.
    Copied(usize),
    Shared(EncodedEvent),
}

/// The largest event copied into an inbox; larger ones are shared. An eighth of a
/// chunk, so that the room a chunk leaves unused stays within what the buffer counts
/// for each event beyond its bytes.
const COPIED_MAX: usize = COPY_CHUNK / 8;

/// The most inboxes an event is copied into; for more it is shared.
const COPIED_FAN_OUT: usize = 10;

/// The size of a chunk of copies.
const COPY_CHUNK: usize = 4 * 1024;

impl Waiting {
    fn push_back(&mut self, event: &EncodedEvent, fan_out: usize) {
        let len = event.len();
        if len > COPIED_MAX || fan_out > COPIED_FAN_OUT {
            self.entries.push_back(Entry::Shared(event.clone()));
            return;
        }
        // `try_reclaim` takes back the room of what the reader has sent, when it has
        // sent all it took from the chunk.
        if !self
            .chunks
            .back_mut()
            .is_some_and(|chunk| chunk.try_reclaim(len))
        {
            let chunk = self
                .spare
                .take()
                .and_then(|mut spare| spare.try_reclaim(COPY_CHUNK).then_some(spare))
                .unwrap_or_else(|| {
                    #[cfg(test)]
                    {
                        self.chunks_made += 1;
                    }
                    BytesMut::with_capacity(COPY_CHUNK)
                });
            self.chunks.push_back(chunk);
        }
        let back = self.chunks.back_mut().expect("a chunk with room");
        back.extend_from_slice(event.bytes());
        self.entries.push_back(Entry::Copied(len));
    }

    fn front_len(&self) -> Option<usize> {
        self.entries.front().map(|entry| match entry {
            Entry::Copied(len) => *len,
            Entry::Shared(event) => event.len(),
        })
    }

    fn pop_front(&mut self) -> Option<EncodedEvent> {
        Some(match self.entries.pop_front()? {
            Entry::Copied(len) => {
                // A chunk is left only when full, so the oldest copy is in the first
                // chunk that holds any.
                while self.chunks.front().is_some_and(BytesMut::is_empty) {
                    self.spare = self.chunks.pop_front();
                }
                let chunk = self.chunks.front_mut()?;
                EncodedEvent::from_bytes(chunk.split_to(len).freeze())
            }
            Entry::Shared(event) => event,
        })
    }

    /// Once empty, keeps no more room for entries than steady traffic uses, so that a
    /// queue that keeps filling is not reallocated every time.
    fn shrink(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 4 * KEPT_ROOM {
            self.entries.shrink_to(KEPT_ROOM);
        }
    }

    /// Gives back the chunks, once empty: for a reader that waits to be woken, not
    /// one that pauses between events that keep coming.
    fn release(&mut self) {
        if self.entries.is_empty() {
            self.chunks = VecDeque::new();
            self.spare = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
impl Inbox {
    /// How many chunks of copies the queue holds.
    pub(super) fn chunks(&self) -> usize {
        lock(&self.queue).events.chunks.len()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let queue = self.queue.get_mut().unwrap_or_else(|e| e.into_inner());
        self.pool.drawn.fetch_sub(queue.drawn, Ordering::Relaxed);
        self.pool.inboxes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reading side's batch: events taken from the queue and not yet sent.
pub(super) struct Reader {
    batch: VecDeque<EncodedEvent>,
    /// What the batch cost when it was taken, returned to the buffer with the next.
    held: usize,
    /// When it last took events.
    taken_at: Option<Instant>,
    /// Its events come less than a [`PAUSE`] apart: it pauses when it has none.
    busy: bool,
    /// The timer of its pauses, kept from one to the next while the stream stays on
    /// the lane it was made on (daemon/lanes.rs).
    pause: Option<(Pin<Box<Sleep>>, Lane)>,
    /// The timer runs: the reader waits out a pause.
    pausing: bool,
    /// Timers need a runtime; a reader made outside one (the bus's own tests) is woken
    /// for every event.
    can_pause: bool,
}

impl Reader {
    pub(super) fn new() -> Self {
        Self {
            batch: VecDeque::new(),
            held: 0,
            taken_at: None,
            busy: false,
            pause: None,
            pausing: false,
            can_pause: tokio::runtime::Handle::try_current().is_ok(),
        }
    }

    /// Events were taken: after a pause the reader stays busy; woken by an event, it
    /// is busy when it took others less than a pause before.
    fn took(&mut self) {
        let now = Instant::now();
        if !std::mem::take(&mut self.pausing) {
            self.busy = self.taken_at.is_some_and(|at| now - at < PAUSE);
        }
        self.taken_at = Some(now);
    }

    /// Whether the reader, finding no events, waits out a pause (its timer then wakes
    /// it) rather than being woken by the next event.
    fn pauses(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.can_pause {
            return false;
        }
        if let Some((pause, _)) = self.pause.as_mut().filter(|_| self.pausing) {
            if pause.as_mut().poll(cx).is_pending() {
                return true;
            }
            // A whole pause and nothing came: the reader is quiet now.
            self.pausing = false;
            self.busy = false;
            return false;
        }
        if !self.busy {
            return false;
        }
        let end = Instant::now() + PAUSE;
        let here = lanes::current();
        let pause = match &mut self.pause {
            Some((pause, made_on)) if *made_on == here => {
                pause.as_mut().reset(end);
                pause
            }
            // A timer made on the quiet lane would go on being fired by its thread,
            // a cross-thread wake for every pause, after the stream moved.
            _ => {
                &mut self
                    .pause
                    .insert((Box::pin(tokio::time::sleep_until(end)), here))
                    .0
            }
        };
        self.pausing = pause.as_mut().poll(cx).is_pending();
        self.pausing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize, len: usize) -> EncodedEvent {
        EncodedEvent::new(&pb::Event {
            topic: format!("t{n}"),
            seq: n as u64,
            time: None,
            payload: Some(Payload::Text(pb::Text {
                body: "x".repeat(len),
                ..Default::default()
            })),
        })
    }

    #[test]
    fn copied_and_shared_events_come_out_whole_and_in_order() {
        let mut waiting = Waiting::default();
        // Sizes on both sides of COPIED_MAX, enough to span many chunks.
        let events: Vec<_> = (0..500).map(|n| event(n, (n * 37) % 1500)).collect();
        assert!(events.iter().any(|e| e.len() > COPIED_MAX));
        for event in &events {
            waiting.push_back(event, 1);
        }
        assert!(waiting.chunks.len() > 10);
        for event in &events {
            assert_eq!(waiting.front_len(), Some(event.len()));
            assert_eq!(waiting.pop_front().as_ref(), Some(event));
        }
        assert!(waiting.is_empty());
        assert_eq!(waiting.pop_front(), None);
    }

    #[test]
    fn a_reader_that_keeps_up_holds_the_queue_to_two_chunks() {
        let mut waiting = Waiting::default();
        let mut taken = Vec::new();
        for n in 0..10_000 {
            waiting.push_back(&event(n, 100), 1);
            // The reader takes events in batches and sends them before the next.
            if n % 10 == 9 {
                taken.clear();
                while let Some(event) = waiting.pop_front() {
                    taken.push(event);
                }
            }
            assert!(waiting.chunks.len() <= 2, "{} chunks", waiting.chunks.len());
        }
    }

    #[test]
    fn chunks_whose_copies_were_sent_are_written_again() {
        let mut waiting = Waiting::default();
        let event = event(0, 100);
        // A hundred chunks' worth, the reader taking ten events at a time and sending
        // them while the next ten come.
        let mut sending = Vec::new();
        for n in 1..=100 * COPY_CHUNK / event.len() {
            waiting.push_back(&event, 1);
            if n % 10 == 0 {
                sending = std::iter::from_fn(|| waiting.pop_front()).collect();
            }
        }
        drop(sending);
        assert!(
            waiting.chunks_made <= 2,
            "{} chunks made",
            waiting.chunks_made
        );
    }

    #[test]
    fn copies_the_reader_still_holds_are_not_written_over() {
        let mut waiting = Waiting::default();
        let first: Vec<_> = (0..100).map(|n| event(n, 100)).collect();
        for event in &first {
            waiting.push_back(event, 1);
        }
        let held: Vec<_> = std::iter::from_fn(|| waiting.pop_front()).collect();
        for n in 100..200 {
            waiting.push_back(&event(n, 100), 1);
        }
        assert_eq!(held, first);
        for n in 100..200 {
            assert_eq!(waiting.pop_front(), Some(event(n, 100)));
        }
    }

    #[test]
    fn an_event_for_many_subscribers_is_shared() {
        let mut waiting = Waiting::default();
        let event = event(0, 100);
        waiting.push_back(&event, COPIED_FAN_OUT + 1);
        assert!(waiting.chunks.is_empty());
        waiting.push_back(&event, COPIED_FAN_OUT);
        assert_eq!(waiting.chunks.len(), 1);
        assert_eq!(waiting.pop_front(), Some(event.clone()));
        assert_eq!(waiting.pop_front(), Some(event));
    }

    #[test]
    fn a_quiet_reader_keeps_no_chunks() {
        let mut waiting = Waiting::default();
        waiting.push_back(&event(0, 100), 1);
        waiting.release();
        assert_eq!(
            waiting.chunks.len(),
            1,
            "nothing is given back while events wait"
        );
        waiting.pop_front();
        waiting.release();
        assert!(waiting.chunks.is_empty() && waiting.spare.is_none());
    }
}
