//! A node's place in a cluster: its connection to the cluster's NATS (here), the
//! members list every node keeps itself on (`members`), and which node runs each
//! service (`placement`). Events cross nodes on the bus (`crate::bus::ClusterBus`).

mod members;
mod placement;

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv};
use tokio::sync::watch;

pub use self::{
    members::{Member, Membership, Services},
    placement::{Listing, Placement},
};

/// How a node joins its cluster: trusted, from the operator's flags or config file.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    /// The NATS server(s): `nats://HOST:PORT` (`tls://` for TLS), comma-separated for
    /// several; `nats://USER:PASSWORD@HOST:PORT` logs in with a password.
    pub nats: String,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// A NATS credentials file (a user JWT and its NKey seed).
    pub credentials: Option<PathBuf>,
    /// A PEM CA certificate to trust for the servers' TLS; TLS is then required.
    pub tls_ca: Option<PathBuf>,
    /// A PEM certificate and key to present to servers that verify clients.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// The longest a node waits between its tries to reach NATS again. A node that cannot
/// renew its leases for 2.5 s (`placement::GIVE_UP_AFTER`) stops their services, so it
/// must be back well within that after a blip; the client's own default waits up to
/// 4 s between tries.
const RECONNECT_DELAY_MAX: Duration = Duration::from_millis(250);

/// The wait before the `attempts`-th try to reconnect: none for the first, then
/// doubling from 2 ms up to [`RECONNECT_DELAY_MAX`].
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = (attempts - 1).min(16) as u32;
    Duration::from_millis(1 << doublings).min(RECONNECT_DELAY_MAX)
}

/// A node's connection to its cluster.
#[derive(Clone)]
pub struct Connection {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub node_id: String,
    /// Whether the client is connected now, and a way to wait for it to change: the
    /// client's own state can be read but not waited on.
    pub connected: watch::Receiver<bool>,
}

impl Connection {
    /// Connects to the cluster's NATS; an unreachable server is an error, not a retry.
    pub async fn open(settings: &ClusterSettings) -> Result<Self, String> {
        let shown = crate::secret::redact(&settings.nats);
        let (connection_changed, connected) = watch::channel(false);
        let connection_changed = Arc::new(connection_changed);
        let changes = connection_changed.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("streamd {}", settings.node_id))
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                match event {
                    async_nats::Event::Connected => changes.send_replace(true),
                    async_nats::Event::Disconnected => changes.send_replace(false),
                    _ => false,
                };
                std::future::ready(())
            });
        // The client does not read a password from the URL by itself.
        if let Some((user, password)) = url_login(&settings.nats) {
            options = options.user_and_password(user, password);
        }
        if let Some(path) = &settings.credentials {
            options = options.credentials_file(path).await.map_err(|e| {
                format!(
                    "cannot read the NATS credentials file {}: {e}",
                    path.display()
                )
            })?;
        }
        if let Some(ca) = &settings.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &settings.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(settings.nats.as_str())
            .await
            .map_err(|e| format!("cannot reach the cluster's NATS at {shown}: {e}"))?;
        // The callback hears of the first connection a moment after it is made.
        if client.connection_state() == async_nats::connection::State::Connected {
            connection_changed.send_replace(true);
        }
        Ok(Self {
            jetstream: jetstream::new(client.clone()),
            client,
            node_id: settings.node_id.clone(),
            connected,
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

/// The user and password the first server's URL carries, percent-decoded.
fn url_login(urls: &str) -> Option<(String, String)> {
    let first = urls.split(',').next()?.trim();
    let url = reqwest::Url::parse(first).ok()?;
    let password = url.password()?;
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((decode(url.username()), decode(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_read_decoded() {
        assert_eq!(
            url_login("nats://u:s3cr%2Ft@h:4222,nats://h2:4222"),
            Some(("u".into(), "s3cr/t".into()))
        );
        assert_eq!(url_login("nats://h:4222"), None);
        assert_eq!(url_login("tls://token@h:4222"), None);
    }

    #[test]
    fn reconnects_come_at_once_then_doubling_up_to_a_quarter_second() {
        let delays: Vec<u128> = (1..=10).map(|n| reconnect_delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 2, 4, 8, 16, 32, 64, 128, 250, 250]);
        assert_eq!(reconnect_delay(usize::MAX), RECONNECT_DELAY_MAX);
    }
}
