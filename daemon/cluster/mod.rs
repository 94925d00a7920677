//! A node's place in a cluster: its connection to the cluster's NATS (here), the
//! members list every node keeps itself on (`members`), and which node runs each
//! service (`placement`). Events cross nodes on the bus (`crate::bus::ClusterBus`).

mod members;
mod placement;

use std::time::Duration;

use async_nats::jetstream::{self, kv};

pub use self::{
    members::{Member, Membership},
    placement::{Listing, Placement},
};

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

    /// Opens a key/value bucket whose entries live `max_age` after their last write
    /// (for ever if zero), creating its stream as the key/value API would: that API
    /// first asks for account details that older servers (2.9) answer in a form the
    /// client does not read.
    pub async fn open_bucket(&self, bucket: &str, max_age: Duration) -> Result<kv::Store, String> {
        const MAX_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
        let duplicate_window = if max_age.is_zero() {
            MAX_DUPLICATE_WINDOW
        } else {
            max_age.min(MAX_DUPLICATE_WINDOW)
        };
        self.open_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            duplicate_window,
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
        self.jetstream
            .get_key_value(bucket)
            .await
            .map_err(|e| format!("cannot open the cluster's key/value bucket {bucket}: {e}"))
    }
}
