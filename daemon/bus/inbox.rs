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

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    task::{Context, Poll, Waker},
    time::SystemTime,
};

use super::{BufferFull, Overflow, cost, lock};
use crate::{
    pb::{self, event::Payload},
    wire::EncodedEvent,
};

/// Room for events kept in an empty queue or batch; more, left by a burst, is given
/// back.
const KEPT_ROOM: usize = 256;

/// The most a reader takes from the queue at once, in the bytes its buffer counts:
/// about what the gRPC layer writes in one go.
const BATCH: usize = 32 * 1024;

pub(super) struct Inbox {
    buffer: usize,
    overflow: Overflow,
    /// A std mutex: held only to append or to take a batch, never across an await.
    queue: Mutex<Queue>,
}

struct Queue {
    events: VecDeque<EncodedEvent>,
    /// What the events waiting and those handed to the reader but not yet sent cost.
    held: usize,
    /// Events skipped since the reader last took any: they came before `events`.
    skipped: Option<Box<Skipped>>,
    /// The reader, when it waits for events.
    waker: Option<Waker>,
    state: State,
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
    pub(super) fn new(buffer: usize, overflow: Overflow) -> Self {
        Self {
            buffer,
            overflow,
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                held: 0,
                skipped: None,
                waker: None,
                state: State::Open,
            }),
        }
    }

    /// Adds an event for the subscriber, making room by the overflow policy when the
    /// buffer is full. Never waits for the reader.
    pub(super) fn push(&self, event: &EncodedEvent) {
        let cost = cost(event);
        let waker = {
            let mut queue = lock(&self.queue);
            if queue.state != State::Open {
                return;
            }
            if queue.held + cost > self.buffer {
                match self.overflow {
                    Overflow::Close => queue.state = State::Full,
                    Overflow::Skip => queue.skip_for(cost, self.buffer, event),
                }
            } else {
                queue.held += cost;
                queue.events.push_back(event.clone());
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// No more events: the reader ends once it has those waiting.
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
        queue.events = VecDeque::new();
        queue.skipped = None;
        queue.waker = None;
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
            let skipped = queue.skipped.take();
            if !queue.events.is_empty() {
                reader.held = queue.take_batch(&mut reader.batch);
            } else if skipped.is_none() {
                return match queue.state {
                    State::Open => {
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
                        Poll::Ready(Some(Err(BufferFull {
                            buffer: self.buffer,
                        })))
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
        while let Some(event) = self.events.front() {
            let cost = super::cost(event);
            if taken > 0 && taken + cost > BATCH {
                break;
            }
            taken += cost;
            batch.extend(self.events.pop_front());
        }
        // Given back only when well past what steady traffic uses, so that a queue
        // that keeps filling is not reallocated every time.
        if self.events.is_empty() && self.events.capacity() > 4 * KEPT_ROOM {
            self.events.shrink_to(KEPT_ROOM);
        }
        taken
    }

    /// Drops the oldest events waiting until `cost` fits, then adds the event; drops
    /// the event itself when what the reader already took leaves no room.
    fn skip_for(&mut self, cost: usize, buffer: usize, event: &EncodedEvent) {
        let skipped = self.skipped.get_or_insert_default();
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
            self.events.push_back(event.clone());
        }
    }
}

/// The reading side's batch: events taken from the queue and not yet sent.
#[derive(Default)]
pub(super) struct Reader {
    batch: VecDeque<EncodedEvent>,
    /// What the batch cost when it was taken, returned to the buffer with the next.
    held: usize,
}
