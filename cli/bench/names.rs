//! `streamctl bench --names N`: publishes N events, each to a topic never used before,
//! with nobody subscribed, and reads the daemon's resident memory as it goes, to show
//! that a client publishing to ever new names does not grow it: the daemon forgets
//! clients' topics beyond its cap.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use serde::Serialize;
use streamhandler::pb::{
    ListServicesRequest, PublishRequest, StartServiceRequest, StopServiceRequest, SubscribeRequest,
    event::Payload,
};
use tokio::{sync::watch, time::Instant};

use super::{report::align, server};
use crate::{
    client::{self, Addr},
    error::Error,
};

/// How often the daemon's memory is read while publishing.
const SAMPLE: Duration = Duration::from_millis(200);

/// What a names bench saw.
#[derive(Debug, Serialize)]
pub struct NamesReport {
    pub names: u64,
    pub publish_secs: f64,
    pub publish_rate: f64,
    /// The daemon's resident memory before, at its highest while publishing, and
    /// after; null when its process is not on this machine.
    pub rss_kib_before: Option<u64>,
    pub rss_kib_peak: Option<u64>,
    pub rss_kib_after: Option<u64>,
    /// The resident memory after each tenth of the names, in KiB.
    pub rss_kib_by_tenth: Vec<u64>,
    /// Topics the daemon holds afterwards, from its `system` service's snapshot.
    pub topics_after: u64,
}

impl NamesReport {
    pub fn table(&self) -> String {
        let kib = |v: Option<u64>| v.map_or("n/a".into(), |v| format!("{v} KiB"));
        let lines = [
            ("names published", self.names.to_string()),
            ("published/s", format!("{:.0}", self.publish_rate)),
            ("RSS before", kib(self.rss_kib_before)),
            ("RSS peak", kib(self.rss_kib_peak)),
            ("RSS after", kib(self.rss_kib_after)),
            ("topics held after", self.topics_after.to_string()),
        ]
        .map(|(name, value)| vec![name.to_string(), value]);
        align(&lines)
    }
}

/// Publishes `names` events to fresh topics on the daemon at `addr`, whose process is
/// `pid` if known.
pub async fn run(addr: &Addr, names: u64, pid: Option<u32>) -> Result<NamesReport, Error> {
    let mut client = client::connect(addr).await?;
    let prefix = format!("bench.names.{:08x}", rand::random::<u32>());
    let rss_kib_before = pid.and_then(server::rss_kib);
    let (done, mut finished) = watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut peak = None;
        loop {
            peak = peak.max(pid.and_then(server::rss_kib));
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE) => {}
                _ = finished.wait_for(|f| *f) => return peak.max(pid.and_then(server::rss_kib)),
            }
        }
    });
    let tenths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tenth = (names / 10).max(1);
    // A small event, as a sensor's reading would be.
    let data = prost_types::Struct {
        fields: [(
            "n".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(1.0)),
            },
        )]
        .into(),
    };
    let requests = {
        let tenths = tenths.clone();
        futures::stream::iter(0..names).map(move |i| {
            if i > 0
                && i % tenth == 0
                && let Some(rss) = pid.and_then(server::rss_kib)
            {
                tenths.lock().unwrap_or_else(|e| e.into_inner()).push(rss);
            }
            PublishRequest {
                topic: format!("{prefix}.{i}"),
                data: Some(data.clone()),
            }
        })
    };
    let start = Instant::now();
    client
        .publish_stream(requests)
        .await
        .map_err(|status| Error::from_status(status, addr))?;
    let publish_secs = start.elapsed().as_secs_f64();
    let _ = done.send(true);
    let rss_kib_peak = sampler.await.unwrap_or(None);
    let rss_kib_after = pid.and_then(server::rss_kib);
    let topics_after = topics_held(addr, &mut client).await?;
    let rss_kib_by_tenth = std::mem::take(&mut *tenths.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(NamesReport {
        names,
        publish_secs,
        publish_rate: names as f64 / publish_secs.max(f64::EPSILON),
        rss_kib_before,
        rss_kib_peak,
        rss_kib_after,
        rss_kib_by_tenth,
        topics_after,
    })
}

/// The topics the daemon holds, from the next snapshot of its `system` service, started
/// for the purpose if it was not running (and stopped again).
async fn topics_held(addr: &Addr, client: &mut client::Client) -> Result<u64, Error> {
    let status = |status| Error::from_status(status, addr);
    let was_running = client
        .list_services(ListServicesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .services
        .iter()
        .any(|s| s.name == "system" && s.state() == streamhandler::pb::ServiceState::Running);
    let mut snapshots = client
        .subscribe(SubscribeRequest {
            topics: vec!["system".into()],
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    if !was_running {
        client
            .start_service(StartServiceRequest {
                name: "system".into(),
                ..Default::default()
            })
            .await
            .map_err(status)?;
    }
    let topics = loop {
        match tokio::time::timeout(Duration::from_secs(10), snapshots.next()).await {
            Ok(Some(Ok(event))) => {
                if let Some(Payload::System(snapshot)) = event.payload {
                    break snapshot.topics;
                }
            }
            _ => return Err(Error::Other("no snapshot from the system service".into())),
        }
    };
    if !was_running {
        client
            .stop_service(StopServiceRequest {
                name: "system".into(),
            })
            .await
            .map_err(status)?;
    }
    Ok(topics)
}
