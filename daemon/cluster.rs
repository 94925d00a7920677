//! A node's place in a cluster: its connection to the cluster's NATS, and the members
//! list every node keeps itself on.
//!
//! Each node puts a record of itself (address, start time, services running) under its
//! id in a JetStream key/value bucket every [`HEARTBEAT`], and the bucket forgets
//! records older than [`NODE_TTL`]: the members are the records it holds.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::pb;

/// The key/value bucket of members.
pub const NODES_BUCKET: &str = "streamhandler_nodes";
/// How often a node reports itself.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node's record outlives its last report.
const NODE_TTL: Duration = Duration::from_secs(5);
/// How long listing the members may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node joins its cluster: trusted, from the operator's flags or config file.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    /// The NATS server(s): `nats://HOST:PORT`, comma-separated for several.
    pub nats: String,
    /// This node's name, unique in the cluster.
    pub node_id: String,
}

/// A node's connection to its cluster.
#[derive(Clone)]
pub struct Connection {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub node_id: String,
}

impl Connection {
    /// Connects to the cluster's NATS; an unreachable server is an error, not a retry.
    pub async fn open(settings: &ClusterSettings) -> Result<Self, String> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("streamd {}", settings.node_id))
            .connection_timeout(Duration::from_secs(5))
            .connect(settings.nats.as_str())
            .await
            .map_err(|e| format!("cannot reach the cluster's NATS at {}: {e}", settings.nats))?;
        Ok(Self {
            jetstream: jetstream::new(client.clone()),
            client,
            node_id: settings.node_id.clone(),
        })
    }

    /// Creates a JetStream stream, or brings an existing one to this configuration.
    pub async fn open_stream(
        &self,
        config: jetstream::stream::Config,
    ) -> Result<jetstream::stream::Stream, String> {
        let name = config.name.clone();
        let fail = |e: &dyn std::fmt::Display| {
            format!("cannot open the JetStream stream {name} (is JetStream enabled?): {e}")
        };
        self.jetstream
            .create_or_update_stream(config)
            .await
            .map_err(|e| fail(&e))?;
        self.jetstream.get_stream(&name).await.map_err(|e| fail(&e))
    }
}

/// What a node says of itself in the members bucket.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    address: String,
    /// Unix milliseconds.
    started_at: u64,
    seen_at: u64,
    services: u32,
}

/// This node's entry in the members list, and the list.
#[derive(Clone)]
pub struct Membership {
    nodes: kv::Store,
    node_id: String,
    address: String,
    started_at: u64,
}

impl Membership {
    /// Opens the members bucket and puts this node on the list.
    pub async fn join(connection: &Connection, address: String) -> Result<Self, String> {
        // The bucket's stream is made here as the key/value API would make it: that
        // API first asks for account details that older servers (2.9) answer in a
        // form the client does not read.
        connection
            .open_stream(jetstream::stream::Config {
                name: format!("KV_{NODES_BUCKET}"),
                subjects: vec![format!("$KV.{NODES_BUCKET}.>")],
                max_messages_per_subject: 1,
                max_age: NODE_TTL,
                duplicate_window: NODE_TTL,
                storage: jetstream::stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await?;
        let nodes = connection
            .jetstream
            .get_key_value(NODES_BUCKET)
            .await
            .map_err(|e| format!("cannot open the cluster's members bucket {NODES_BUCKET}: {e}"))?;
        let membership = Self {
            nodes,
            node_id: connection.node_id.clone(),
            address,
            started_at: unix_millis(SystemTime::now()),
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
        membership.report(0).await?;
        Ok(membership)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Reports this node every [`HEARTBEAT`] until `stop`, with the services `running`
    /// counts at the time; a report that fails is logged and tried again at the next.
    pub async fn report_until(self, running: impl Fn() -> u32, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {
                    if let Err(e) = self.report(running()).await {
                        tracing::warn!("{e}");
                    }
                }
            }
        }
        // Leaves the list at once rather than when the record expires.
        if let Err(e) = self.nodes.delete(&self.node_id).await {
            tracing::debug!("leaving the members list: {e}");
        }
    }

    async fn report(&self, services: u32) -> Result<(), String> {
        let record = Record {
            address: self.address.clone(),
            started_at: self.started_at,
            seen_at: unix_millis(SystemTime::now()),
            services,
        };
        let value = serde_json::to_vec(&record).expect("a record serializes");
        self.nodes
            .put(&self.node_id, value.into())
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
        Ok(value.and_then(|value| serde_json::from_slice(&value).ok()))
    }

    /// The members, in id order; an error if NATS does not give them within
    /// [`LISTING_TIMEOUT`] (a listing begun while the connection is being restored can
    /// otherwise wait for ever).
    pub async fn members(&self) -> Result<Vec<pb::Node>, String> {
        tokio::time::timeout(LISTING_TIMEOUT, self.read_members())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the cluster's NATS did not list the members within {LISTING_TIMEOUT:?}"
                ))
            })
    }

    async fn read_members(&self) -> Result<Vec<pb::Node>, String> {
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
                members.push(pb::Node {
                    id,
                    address: record.address,
                    started_at: Some(from_unix_millis(record.started_at).into()),
                    seen_at: Some(from_unix_millis(record.seen_at).into()),
                    services: record.services,
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
