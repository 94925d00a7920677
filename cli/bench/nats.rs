//! The same workload against nats-server, through async-nats: K subscriptions over
//! their connections, P publishers each on its own connection, the same payload bytes
//! as the message body. A stalled subscriber is a raw connection that subscribes and
//! then never reads, as a stuck client would.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    IDLE, Plan,
    measure::{self, Shared, Signals},
    payload::{self, Stamp},
    report::{Report, Tally},
};
use crate::error::Error;

const OPENING: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks a `nats://host:port` URL and returns it.
pub fn url(url: &str) -> Result<String, Error> {
    let rest = url.strip_prefix("nats://").ok_or_else(|| {
        Error::Other(format!("--against-nats {url:?}: expected nats://HOST:PORT"))
    })?;
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(url.to_string())
        }
        _ => Err(Error::Other(format!(
            "--against-nats {url:?}: expected nats://HOST:PORT"
        ))),
    }
}

/// Connects once, so that an unreachable server is reported before any run.
pub async fn probe(url: &str) -> Result<Client, Error> {
    connect(url).await
}

async fn connect(url: &str) -> Result<Client, Error> {
    async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .ignore_discovered_servers()
        .connect(url)
        .await
        .map_err(|err| Error::Other(format!("nats-server is not reachable at {url} ({err})")))
}

fn nats_error(url: &str, err: impl std::fmt::Display) -> Error {
    Error::Other(format!("nats-server at {url}: {err}"))
}

/// Runs the plan against nats-server at `url`.
pub async fn run(url: &str, plan: &Plan) -> Result<Report, Error> {
    let clients: Vec<Client> = stream::iter(0..plan.conns)
        .map(|_| connect(url))
        .buffered(OPENING)
        .try_collect()
        .await?;
    let subscriptions: Vec<async_nats::Subscriber> = stream::iter(0..plan.subs)
        .map(|j| {
            let client = clients[j % plan.conns].clone();
            let subject = plan.topic.clone();
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|err| nats_error(url, err))
            }
        })
        .buffered(OPENING)
        .try_collect()
        .await?;
    for client in &clients {
        client.flush().await.map_err(|err| nats_error(url, err))?;
    }
    let mut stalled = Vec::with_capacity(plan.stalled);
    for _ in 0..plan.stalled {
        stalled.push(stalled_subscriber(url, &plan.topic).await?);
    }

    let shared = Arc::new(Shared::new());
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let (published_tx, published_rx) = watch::channel(false);
    let (release_tx, release_rx) = watch::channel(false);
    let (tally_tx, tally_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(plan.subs);
    for (j, subscription) in subscriptions.into_iter().enumerate() {
        let task = Subscriber {
            index: j,
            msgs: plan.msgs,
            pubs: plan.pubs,
            timeout: plan.timeout,
            shared: shared.clone(),
            start: start_rx.clone(),
            published: published_rx.clone(),
            release: release_rx.clone(),
            tallies: tally_tx.clone(),
        };
        tasks.push(tokio::spawn(task.run(subscription)));
    }
    drop(tally_tx);

    let publishers: Vec<Client> = stream::iter(0..plan.pubs)
        .map(|_| connect(url))
        .buffered(OPENING)
        .try_collect()
        .await?;
    warm_up(url, plan, &publishers[0], &shared).await?;

    let mut signals = Signals {
        start: start_tx,
        published: published_tx,
        tallies: tally_rx,
    };
    let report = measure::timed("nats", plan, &shared, &mut signals, |start, published| {
        futures::future::try_join_all(
            publishers
                .into_iter()
                .enumerate()
                .map(|(p, client)| publish(url, plan, p, client, start, published.clone())),
        )
    })
    .await?;
    let _ = release_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    drop(stalled);
    Ok(report)
}

/// A subscriber that stops reading: subscribes over a raw connection, waits for the
/// server to confirm, then never reads again.
async fn stalled_subscriber(url: &str, subject: &str) -> Result<TcpStream, Error> {
    let addr = url.trim_start_matches("nats://");
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|err| Error::Other(format!("nats-server is not reachable at {url} ({err})")))?;
    let command = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n"
    );
    socket
        .write_all(command.as_bytes())
        .await
        .map_err(|err| nats_error(url, err))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"PONG") {
        let n = tokio::time::timeout(CONNECT_TIMEOUT, socket.read(&mut buf))
            .await
            .map_err(|_| nats_error(url, "no PONG from a new subscriber"))?
            .map_err(|err| nats_error(url, err))?;
        if n == 0 {
            return Err(nats_error(url, "the connection closed"));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(socket)
}

async fn warm_up(url: &str, plan: &Plan, client: &Client, shared: &Shared) -> Result<(), Error> {
    let body: Bytes = payload::warmup().encode_to_vec().into();
    measure::warm_up("NATS", plan, shared, plan.subs, || async {
        client
            .publish(plan.topic.clone(), body.clone())
            .await
            .map_err(|err| nats_error(url, err))?;
        client.flush().await.map_err(|err| nats_error(url, err))
    })
    .await
}

async fn publish(
    url: &str,
    plan: &Plan,
    p: usize,
    client: Client,
    start: Instant,
    published: Arc<AtomicUsize>,
) -> Result<(), Error> {
    for index in plan.indices(p) {
        if let Some(due) = plan.due(index) {
            tokio::time::sleep_until(start + due).await;
        }
        let body = payload::data(index, payload::now_ns(), plan.padding).encode_to_vec();
        client
            .publish(plan.topic.clone(), body.into())
            .await
            .map_err(|err| nats_error(url, err))?;
        published.fetch_add(1, Ordering::Relaxed);
    }
    client.flush().await.map_err(|err| nats_error(url, err))
}

struct Subscriber {
    index: usize,
    msgs: u64,
    pubs: usize,
    timeout: Duration,
    shared: Arc<Shared>,
    start: watch::Receiver<Option<Instant>>,
    published: watch::Receiver<bool>,
    release: watch::Receiver<bool>,
    tallies: mpsc::UnboundedSender<Tally>,
}

impl Subscriber {
    async fn run(mut self, mut subscription: async_nats::Subscriber) {
        let mut tally = Tally::new(self.msgs, self.pubs);
        while let Some(message) = subscription.next().await {
            if payload::stamp_bytes(&message.payload) == Some(Stamp::Warmup) {
                self.shared.ready.fetch_add(1, Ordering::AcqRel);
                self.shared.ready_changed.notify_one();
                self.read(&mut subscription, &mut tally).await;
                break;
            }
        }
        let _ = self.tallies.send(tally);
        let _ = self.release.wait_for(|r| *r).await;
    }

    async fn read(&mut self, subscription: &mut async_nats::Subscriber, tally: &mut Tally) {
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
            let message = tokio::select! {
                message = subscription.next() => message,
                () = tokio::time::sleep_until(deadline) => return,
                Ok(()) = self.published.changed(), if !published => {
                    published = true;
                    continue;
                }
                () = tokio::time::sleep_until(idle), if published => return,
            };
            let Some(message) = message else { return };
            last = Instant::now();
            match payload::stamp_bytes(&message.payload) {
                Some(Stamp::Data { index, sent_ns }) => {
                    let latency = payload::now_ns().saturating_sub(sent_ns);
                    self.shared.record(self.index, latency);
                    let publisher = (index % self.pubs as u64) as usize;
                    tally.record(index, publisher, index, last.into_std());
                }
                Some(Stamp::Warmup) => {}
                None => tally.foreign += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_the_nats_scheme_a_host_and_a_port() {
        assert_eq!(
            url("nats://127.0.0.1:4222").unwrap(),
            "nats://127.0.0.1:4222"
        );
        for bad in [
            "127.0.0.1:4222",
            "nats://:4222",
            "nats://host",
            "http://h:1",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }
}
