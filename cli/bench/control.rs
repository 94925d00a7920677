//! `streamctl bench --control N`: N cycles of StartService and StopService on one
//! service, timing each call and the wait from StartService's reply to the service's
//! first data event (its first step runs as soon as it starts).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use streamhandler::pb::{
    Event, StartServiceRequest, StopServiceRequest, SubscribeRequest, event::Payload,
};
use tokio::time::Instant;

use super::report::{self, Latency, align, us_text};
use crate::{
    client::{self, Addr},
    error::Error,
};

/// How long a start may wait for its first event before the bench gives up.
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of a control bench.
#[derive(Debug, Serialize)]
pub struct ControlReport {
    pub service: String,
    pub cycles: usize,
    pub start: Latency,
    pub stop: Latency,
    /// From StartService's reply to the first data event (0 if it came first).
    pub first_event: Latency,
}

impl ControlReport {
    pub fn table(&self) -> String {
        let mut lines = vec![
            ["", "p50", "p99", "p99.9", "max"]
                .map(String::from)
                .to_vec(),
        ];
        for (name, l) in [
            ("StartService", &self.start),
            ("StopService", &self.stop),
            ("first event", &self.first_event),
        ] {
            lines.push(vec![
                name.to_string(),
                us_text(l.p50_us),
                us_text(l.p99_us),
                us_text(l.p999_us),
                us_text(l.max_us),
            ]);
        }
        format!(
            "{} start/stop cycles of {}\n\n{}",
            self.cycles,
            self.service,
            align(&lines)
        )
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// Runs `cycles` start/stop cycles of `service` on the daemon at `addr`. The service
/// is stopped first, and left stopped.
pub async fn run(addr: &Addr, service: &str, cycles: usize) -> Result<ControlReport, Error> {
    let mut client = client::connect(addr).await?;
    let mut events = client::connect(addr)
        .await?
        .subscribe(SubscribeRequest {
            topics: vec![service.to_string()],
            last: false,
            ..Default::default()
        })
        .await
        .map_err(|status| Error::from_status(status, addr))?
        .into_inner();
    let stop = StopServiceRequest {
        name: service.to_string(),
    };
    client
        .stop_service(stop.clone())
        .await
        .map_err(|status| Error::from_status(status, addr))?;
    let (mut starts, mut stops, mut firsts) = (
        report::histogram(),
        report::histogram(),
        report::histogram(),
    );
    for _ in 0..cycles {
        let sent = Instant::now();
        client
            .start_service(StartServiceRequest {
                name: service.to_string(),
                interval: None,
                params: Default::default(),
            })
            .await
            .map_err(|status| Error::from_status(status, addr))?;
        let replied = Instant::now();
        record(&mut starts, replied - sent);
        let first = tokio::time::timeout(FIRST_EVENT_TIMEOUT, async {
            loop {
                match events.message().await {
                    Ok(Some(Event {
                        payload: Some(Payload::Lifecycle(_)),
                        ..
                    })) => continue,
                    Ok(Some(_)) => return Ok(Instant::now()),
                    Ok(None) => return Err(Error::Other("the event stream ended".into())),
                    Err(status) => return Err(Error::from_status(status, addr)),
                }
            }
        })
        .await
        .map_err(|_| {
            Error::Other(format!(
                "{service} published nothing within {} of starting",
                humantime::format_duration(FIRST_EVENT_TIMEOUT)
            ))
        })??;
        record(&mut firsts, first.saturating_duration_since(replied));
        let sent = Instant::now();
        client
            .stop_service(stop.clone())
            .await
            .map_err(|status| Error::from_status(status, addr))?;
        record(&mut stops, sent.elapsed());
    }
    Ok(ControlReport {
        service: service.to_string(),
        cycles,
        start: Latency::of(&starts),
        stop: Latency::of(&stops),
        first_event: Latency::of(&firsts),
    })
}
