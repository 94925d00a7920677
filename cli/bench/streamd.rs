//! The workload against streamd: Subscribe streams over their connections, and a
//! PublishStream from each publisher.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, stream};
use streamhandler::pb::{Event, PublishRequest, SubscribeRequest, event::Payload};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tonic::Streaming;

use super::{
    IDLE, Plan,
    measure::{self, Shared, Signals},
    payload::{self, Stamp},
    report::{Report, Tally},
};
use crate::{
    args::Addr,
    client::{self, Client},
    error::Error,
};

/// Streams opened at once while setting up.
const OPENING: usize = 64;

/// Runs the plan against the daemon at `addr`.
pub async fn run(addr: &Addr, plan: &Plan) -> Result<Report, Error> {
    let subscribers = plan.subs + plan.stalled;
    let channels: Vec<Client> = stream::iter(0..plan.conns)
        .map(|_| client::connect(addr))
        .buffered(OPENING)
        .try_collect()
        .await?;
    // Stalled subscribers get connections of their own, as a stuck client would have.
    let stalled_channels: Vec<Client> = stream::iter(0..plan.stalled)
        .map(|_| client::connect(addr))
        .buffered(OPENING)
        .try_collect()
        .await?;
    let request = SubscribeRequest {
        topics: vec![plan.topic.clone()],
        last: false,
        ..Default::default()
    };
    let streams: Vec<Streaming<Event>> = stream::iter(0..subscribers)
        .map(|j| {
            let mut client = if j < plan.subs {
                channels[j % plan.conns].clone()
            } else {
                stalled_channels[j - plan.subs].clone()
            };
            let request = request.clone();
            async move {
                client
                    .subscribe(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| Error::from_status(status, addr))
            }
        })
        .buffered(OPENING)
        .try_collect()
        .await?;

    let shared = Arc::new(Shared::new());
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let (published_tx, published_rx) = watch::channel(false);
    let (release_tx, release_rx) = watch::channel(false);
    let (tally_tx, tally_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(subscribers);
    for (j, stream) in streams.into_iter().enumerate() {
        let task = Subscriber {
            index: j,
            stalled: j >= plan.subs,
            msgs: plan.msgs,
            timeout: plan.timeout,
            shared: shared.clone(),
            start: start_rx.clone(),
            published: published_rx.clone(),
            release: release_rx.clone(),
            tallies: tally_tx.clone(),
        };
        tasks.push(tokio::spawn(task.run(stream)));
    }
    drop(tally_tx);

    let publishers: Vec<Client> = stream::iter(0..plan.pubs)
        .map(|_| client::connect(addr))
        .buffered(OPENING)
        .try_collect()
        .await?;
    warm_up(addr, plan, &publishers[0], &shared, subscribers).await?;

    let mut signals = Signals {
        start: start_tx,
        published: published_tx,
        tallies: tally_rx,
    };
    let report = measure::timed(
        "streamd",
        plan,
        &shared,
        &mut signals,
        |start, published| {
            futures::future::try_join_all(
                publishers
                    .into_iter()
                    .enumerate()
                    .map(|(p, client)| publish(addr, plan, p, client, start, published.clone())),
            )
        },
    )
    .await?;
    let _ = release_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(report)
}

/// Publishes warm-up events until every subscriber has seen one.
async fn warm_up(
    addr: &Addr,
    plan: &Plan,
    client: &Client,
    shared: &Shared,
    subscribers: usize,
) -> Result<(), Error> {
    measure::warm_up("streamd", plan, shared, subscribers, || {
        let mut client = client.clone();
        let request = PublishRequest {
            topic: plan.topic.clone(),
            data: Some(payload::warmup()),
        };
        async move {
            client
                .publish(request)
                .await
                .map(drop)
                .map_err(|status| Error::from_status(status, addr))
        }
    })
    .await
}

/// Publisher `p`: its share of the messages, on schedule when a rate is set, as one
/// PublishStream call, so that HTTP/2 flow control rather than round trips paces it.
async fn publish(
    addr: &Addr,
    plan: &Plan,
    p: usize,
    mut client: Client,
    start: Instant,
    published: Arc<AtomicUsize>,
) -> Result<(), Error> {
    let (padding, topic) = (plan.padding, plan.topic.clone());
    let dues: Vec<_> = plan
        .indices(p)
        .map(|index| (index, plan.due(index)))
        .collect();
    let events = stream::iter(dues).then(move |(index, due)| {
        let topic = topic.clone();
        let published = published.clone();
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(start + due).await;
            }
            // Counted as it goes out: what the daemon has taken by the end.
            published.fetch_add(1, Ordering::Relaxed);
            PublishRequest {
                topic,
                data: Some(payload::data(index, payload::now_ns(), padding)),
            }
        }
    });
    client
        .publish_stream(events)
        .await
        .map_err(|status| Error::from_status(status, addr))?;
    Ok(())
}

/// One Subscribe stream's reader.
struct Subscriber {
    index: usize,
    stalled: bool,
    msgs: u64,
    timeout: Duration,
    shared: Arc<Shared>,
    start: watch::Receiver<Option<Instant>>,
    published: watch::Receiver<bool>,
    release: watch::Receiver<bool>,
    tallies: mpsc::UnboundedSender<Tally>,
}

impl Subscriber {
    async fn run(mut self, mut stream: Streaming<Event>) {
        // Until the warm-up event, then (if stalled) hold the stream without reading.
        let mut tally = Tally::new(self.msgs, 1);
        let mut warm = false;
        while !warm {
            match stream.message().await {
                Ok(Some(event)) => warm = self.take(&event, &mut tally, true),
                Ok(None) | Err(_) => break,
            }
        }
        if warm {
            self.shared.ready.fetch_add(1, Ordering::AcqRel);
            self.shared.ready_changed.notify_one();
        }
        if !self.stalled {
            self.read(&mut stream, &mut tally).await;
            let _ = self.tallies.send(tally);
        }
        let _ = self.release.wait_for(|r| *r).await;
    }

    /// Reads until every message has arrived, the deadline, or a second of silence
    /// after publishing ends.
    async fn read(&mut self, stream: &mut Streaming<Event>, tally: &mut Tally) {
        let Ok(start) = self
            .start
            .wait_for(Option::is_some)
            .await
            .map(|s| s.unwrap())
        else {
            return;
        };
        let deadline = start + self.timeout;
        let mut published = false;
        let mut last = Instant::now();
        while !tally.complete() {
            let idle = last + IDLE;
            let event = tokio::select! {
                event = stream.message() => event,
                () = tokio::time::sleep_until(deadline) => return,
                Ok(()) = self.published.changed(), if !published => {
                    published = true;
                    continue;
                }
                () = tokio::time::sleep_until(idle), if published => return,
            };
            match event {
                Ok(Some(event)) => {
                    last = Instant::now();
                    self.take(&event, tally, false);
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Records one event; says whether it was a warm-up.
    fn take(&self, event: &Event, tally: &mut Tally, warming: bool) -> bool {
        match &event.payload {
            Some(Payload::Data(data)) => match payload::stamp(data) {
                Some(Stamp::Warmup) => true,
                Some(Stamp::Data { index, sent_ns }) => {
                    if !warming {
                        let latency = payload::now_ns().saturating_sub(sent_ns);
                        self.shared.record(self.index, latency);
                        tally.record(index, 0, event.seq, Instant::now().into_std());
                    }
                    false
                }
                None => {
                    tally.foreign += 1;
                    false
                }
            },
            Some(Payload::Lagged(lagged)) => {
                tally.lagged += lagged.missed;
                false
            }
            _ => false,
        }
    }
}
