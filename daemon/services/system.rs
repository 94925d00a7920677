//! `system`: the daemon's own dashboard card. Each step publishes a snapshot of every
//! service's state and counters, the subscriber count, the process's memory and CPU,
//! and its uptime.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Build, Environment, Kind, Params, StepContext, StepError, Worker};
use crate::pb::{self, event::Payload};

pub const KIND: Kind = Kind {
    name: "system",
    description: "a snapshot of streamd itself: services, subscribers, memory, CPU",
    default_interval: Duration::from_secs(2),
    params: &[],
    build,
};

fn build(_: &Params, env: &Environment) -> Result<Box<dyn Worker>, Build> {
    Ok(Box::new(System {
        last_cpu: None,
        node_id: env.node_id.clone().unwrap_or_default(),
        nats: env.nats.clone(),
    }))
}

struct System {
    /// CPU time used and when it was read, to compute usage since the last step.
    last_cpu: Option<(Duration, Instant)>,
    /// In a cluster: this node, and its link to the cluster.
    node_id: String,
    nats: Option<async_nats::Client>,
}

#[async_trait]
impl Worker for System {
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let crate::process::Usage { rss_bytes, cpu } = crate::process::usage()
            .map_err(|e| StepError::Step(format!("cannot read process statistics: {e}")))?;
        let now = Instant::now();
        let cpu_percent = match self.last_cpu.replace((cpu, now)) {
            Some((before, then)) if now > then => {
                100.0 * cpu.saturating_sub(before).as_secs_f64() / (now - then).as_secs_f64()
            }
            _ => 0.0,
        };
        let daemon = ctx.daemon();
        let metrics = tokio::runtime::Handle::current().metrics();
        ctx.publish(Payload::System(pb::SystemSnapshot {
            services: daemon.services(),
            subscribers: u32::try_from(daemon.subscribers()).unwrap_or(u32::MAX),
            topics: daemon.topics() as u64,
            rss_bytes,
            cpu_percent,
            uptime: prost_types::Duration::try_from(daemon.uptime()).ok(),
            worker_threads: u32::try_from(metrics.num_workers()).unwrap_or(u32::MAX),
            tasks: metrics.num_alive_tasks() as u64,
            node_id: self.node_id.clone(),
            cluster_link: self
                .nats
                .as_ref()
                .map(|nats| nats.connection_state().to_string())
                .unwrap_or_default(),
        }))
    }
}
