//! The members list: each node puts a record of itself (address, start time, the
//! services it runs and those it has configured) under its id in a JetStream key/value bucket every [`HEARTBEAT`],
//! and at once when its services change; the bucket forgets records older than
//! [`NODE_TTL`]. The members are the records it holds.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use prost::Message;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Connection;
use crate::pb;

/// The key/value bucket of members.
pub const NODES_BUCKET: &str = "streamhandler_nodes";
/// How often a node reports itself.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's record outlives its last report.
const NODE_TTL: Duration = Duration::from_secs(5);
/// A node that has not reported itself for this long is taken for gone when services
/// are placed, though it stays on the list until its record expires.
const LIVE_WITHIN: Duration = Duration::from_millis(2500);
/// How long listing the members may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node says of itself in the members bucket.
#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(string, tag = "1")]
    address: String,
    /// Unix milliseconds.
    #[prost(uint64, tag = "2")]
    started_at: u64,
    #[prost(uint64, tag = "3")]
    seen_at: u64,
    /// Its services that are not stopped.
    #[prost(message, repeated, tag = "4")]
    services: Vec<pb::ServiceInfo>,
    /// The names of the services it has configured, sorted.
    #[prost(string, repeated, tag = "5")]
    configured: Vec<String>,
}

/// What a node says of its services when it reports itself.
#[derive(Default)]
pub struct Services {
    /// Those that are not stopped.
    pub active: Vec<pb::ServiceInfo>,
    /// The names of those it has configured: the services it may be given.
    pub configured: Vec<String>,
}

/// A member as it last reported itself.
#[derive(Clone, Debug)]
pub struct Member {
    pub node: pb::Node,
    /// Its services that are not stopped, as it saw them then.
    pub services: Vec<pb::ServiceInfo>,
    /// The names of the services it has configured, sorted.
    configured: Vec<String>,
    seen_at: u64,
}

impl Member {
    /// Whether it reported itself lately enough to be given services.
    pub fn is_live(&self) -> bool {
        let age = unix_millis(SystemTime::now()).saturating_sub(self.seen_at);
        Duration::from_millis(age) < LIVE_WITHIN
    }

    /// Whether it has the service configured, and so may be given it. A record that
    /// names none (a node that has just joined) is taken to have every service.
    pub fn has(&self, name: &str) -> bool {
        self.configured.is_empty()
            || self
                .configured
                .binary_search_by(|n| n.as_str().cmp(name))
                .is_ok()
    }
}

/// This node's entry in the members list, and the list.
#[derive(Clone)]
pub struct Membership {
    nodes: kv::Store,
    node_id: String,
    address: String,
    started_at: u64,
    /// Asks for a report before the next heartbeat.
    report_now: Arc<Notify>,
}

impl Membership {
    /// Opens the members bucket and puts this node on the list.
    pub async fn join(connection: &Connection, address: String) -> Result<Self, String> {
        let nodes = connection.open_bucket(NODES_BUCKET, NODE_TTL).await?;
        let membership = Self {
            nodes,
            node_id: connection.node_id.clone(),
            address,
            started_at: unix_millis(SystemTime::now()),
            report_now: Arc::default(),
        };
        if let Some(other) = membership.record(&membership.node_id).await? {
            tracing::warn!(
                "node id {} was reported {} ms ago by {}; if that node still runs, two nodes \
                 share one id",
                membership.node_id,
                unix_millis(SystemTime::now()).saturating_sub(other.seen_at),
                other.address
            );
        }
        membership.report(Services::default()).await?;
        Ok(membership)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Has this node report itself now rather than at the next heartbeat: its
    /// services changed.
    pub fn report_soon(&self) {
        self.report_now.notify_one();
    }

    /// Reports this node every [`HEARTBEAT`], and when asked to, until `stop`, with
    /// the services `services` gives at the time; a report that fails is logged and
    /// tried again at the next.
    pub async fn report_until(self, services: impl Fn() -> Services, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
                _ = self.report_now.notified() => {}
            }
            if let Err(e) = self.report(services()).await {
                tracing::warn!("{e}");
            }
        }
        // Leaves the list at once rather than when the record expires.
        if let Err(e) = self.nodes.delete(&self.node_id).await {
            tracing::debug!("leaving the members list: {e}");
        }
    }

    async fn report(&self, services: Services) -> Result<(), String> {
        let mut configured = services.configured;
        configured.sort();
        let record = Record {
            address: self.address.clone(),
            started_at: self.started_at,
            seen_at: unix_millis(SystemTime::now()),
            services: services.active,
            configured,
        };
        self.nodes
            .put(&self.node_id, record.encode_to_vec().into())
            .await
            .map(drop)
            .map_err(|e| format!("cannot report this node to the cluster: {e}"))
    }

    async fn record(&self, id: &str) -> Result<Option<Record>, String> {
        let value = self
            .nodes
            .get(id)
            .await
            .map_err(|e| format!("cannot read the cluster's members: {e}"))?;
        // A record of another form (an older version's) reads as none.
        Ok(value.and_then(|value| Record::decode(value).ok()))
    }

    /// The members, in id order; an error if NATS does not give them within
    /// [`LISTING_TIMEOUT`] (a listing begun while the connection is being restored can
    /// otherwise wait for ever).
    pub async fn members(&self) -> Result<Vec<Member>, String> {
        tokio::time::timeout(LISTING_TIMEOUT, self.read_members())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the cluster's NATS did not list the members within {LISTING_TIMEOUT:?}"
                ))
            })
    }

    async fn read_members(&self) -> Result<Vec<Member>, String> {
        let mut ids: Vec<String> = self
            .nodes
            .keys()
            .await
            .map_err(|e| format!("cannot read the cluster's members: {e}"))?
            .try_collect()
            .await
            .map_err(|e| format!("cannot read the cluster's members: {e}"))?;
        ids.sort();
        let mut members = Vec::with_capacity(ids.len());
        for id in ids {
            // One that left between the listing and now is left out.
            if let Some(record) = self.record(&id).await? {
                let running = record.services.iter().filter(|s| {
                    matches!(
                        s.state(),
                        pb::ServiceState::Running | pb::ServiceState::BackingOff
                    )
                });
                members.push(Member {
                    node: pb::Node {
                        id,
                        address: record.address,
                        started_at: Some(from_unix_millis(record.started_at).into()),
                        seen_at: Some(from_unix_millis(record.seen_at).into()),
                        services: running.count() as u32,
                    },
                    services: record.services,
                    configured: record.configured,
                    seen_at: record.seen_at,
                });
            }
        }
        Ok(members)
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_millis(millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
}
