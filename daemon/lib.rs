//! streamd: a daemon that supervises long-running services and streams their events
//! over gRPC. The `pb` module is the public API, shared by the daemon, `streamctl` and
//! any Rust program that depends on this crate.
//!
//! A tour: [`config`] says which services exist, [`services`] holds one module per kind
//! of service, the [`supervisor`] runs them, the [`bus`] fans their events out, and the
//! [`server`] is the gRPC control plane in front of it all.

pub mod api;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod duration;
pub mod error;
pub mod json;
pub mod lanes;
pub mod listen;
pub mod lock;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pb;
pub mod process;
pub mod resume;
pub mod secret;
pub mod server;
pub mod services;
pub mod store;
pub mod supervisor;
pub mod topic;
pub mod web;
pub mod wire;

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::{
    api::ControlPlane,
    auth::Access,
    bus::{Bus, ClusterBus, LocalBus},
    cluster::{Connection, Membership, Placement, Services},
    config::Config,
    resume::Recorder,
    server::Listeners,
    services::Environment,
    supervisor::{Supervisor, WishRecorder},
};

/// Runs the daemon on `listeners` until `shutdown` resolves: starts the services the
/// configuration names and, with `resume`, those that clients left running; serves
/// the control plane (and the dashboard) to the clients `access` admits, taking each
/// configuration that arrives on `reloads`; then stops everything cleanly.
pub async fn run(
    listeners: Listeners,
    access: Access,
    config: Config,
    mut env: Environment,
    resume: bool,
    reloads: tokio::sync::mpsc::Receiver<Config>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    if let Err(e) = services::install_assets(&env.data_dir) {
        tracing::warn!(
            "cannot write the built-in texts and images into {}: {e}",
            env.data_dir.display()
        );
    }
    let store = env.store.clone();
    if let Err(e) = store.prepare().await {
        tracing::error!("{e}; services that need the database report errors until it is back");
    }
    let stop_recorder = CancellationToken::new();
    let (recorder, recorder_task) = Recorder::start(store.clone(), stop_recorder.clone());
    let database_patience = config.settings.stop_timeout;
    let stop_following = CancellationToken::new();
    let (bus, local, connection) = match config.cluster.resolve().map_err(|e| anyhow::anyhow!(e))? {
        None => {
            let local = LocalBus::new(config.bus);
            (Bus::new(local.clone()), local, None)
        }
        Some(cluster) => {
            let connection = Connection::open(&cluster)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let joined = ClusterBus::join(&connection, config.bus, stop_following.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            tracing::info!(
                "node {} of the cluster at {}",
                cluster.node_id,
                cluster.nats
            );
            let local = joined.local().clone();
            (Bus::new(joined), local, Some(connection))
        }
    };
    // In a cluster, what clients ask of services is kept in the cluster, not here.
    let recorder: Option<Box<dyn WishRecorder>> = match connection {
        None => Some(Box::new(recorder)),
        Some(_) => None,
    };
    env.nats = connection.as_ref().map(|c| c.client.clone());
    let supervisor = Supervisor::new(bus, env, config.settings, config.services, recorder);
    let placement = match &connection {
        None => {
            for name in &config.start {
                if let Err(e) = supervisor.start(name, Default::default()).await {
                    supervisor.shutdown().await;
                    anyhow::bail!("cannot start {name} at boot: {e}");
                }
            }
            if resume {
                resume::resume(&supervisor, &store).await;
            }
            None
        }
        Some(connection) => {
            let address = listeners
                .grpc
                .local_addr()
                .map_or_else(|_| String::new(), |addr| addr.to_string());
            let membership = Membership::join(connection, address)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let services = {
                let supervisor = supervisor.clone();
                move || Services {
                    active: supervisor
                        .services()
                        .into_iter()
                        .filter(|s| s.state() != pb::ServiceState::Stopped)
                        .collect(),
                    configured: supervisor.names(),
                }
            };
            tokio::spawn(
                membership
                    .clone()
                    .report_until(services, stop_following.clone()),
            );
            let placement = Placement::open(connection, membership, supervisor.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            placement
                .wish_at_boot(&config.start)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            Some(placement)
        }
    };
    let stop_sweeping = CancellationToken::new();
    let sweeper = tokio::spawn(local.sweep_until(stop_sweeping.clone()));
    let applying = tokio::spawn(apply_reloads(
        supervisor.clone(),
        placement.clone(),
        reloads,
    ));
    let stop_placing = CancellationToken::new();
    let placing = placement
        .clone()
        .map(|placement| tokio::spawn(placement.run_until(stop_placing.clone())));
    let control = ControlPlane::new(supervisor, placement);
    let served = server::serve(listeners, access, control, shutdown).await;
    applying.abort();
    stop_sweeping.cancel();
    // The services have stopped: their leases go back before this node leaves.
    stop_placing.cancel();
    if let Some(placing) = placing {
        let _ = placing.await;
    }
    stop_following.cancel();
    let _ = sweeper.await;
    // After the services, which may still write to the database as they stop. A
    // database that stopped answering must not keep the daemon from exiting.
    stop_recorder.cancel();
    let saved = tokio::time::timeout(database_patience, async {
        let _ = recorder_task.await;
        store.close().await;
    })
    .await;
    if saved.is_err() {
        tracing::warn!(
            "the database did not answer within {database_patience:?} at shutdown; which \
             services were running may not be saved"
        );
    }
    served
}

/// Applies each reloaded configuration's services in turn; settings of the bus and the
/// supervisor apply at the next start. In a cluster, its boot services are wished
/// running where no client has wished otherwise.
async fn apply_reloads(
    supervisor: Supervisor,
    placement: Option<Placement>,
    mut reloads: tokio::sync::mpsc::Receiver<Config>,
) {
    while let Some(config) = reloads.recv().await {
        let start = if placement.is_some() {
            &[][..]
        } else {
            &config.start[..]
        };
        let reloaded = supervisor.reload(config.services, start).await;
        if let Some(placement) = &placement
            && let Err(e) = placement.wish_at_boot(&config.start).await
        {
            tracing::warn!("after the reload: {e}");
        }
        tracing::info!(
            added = ?reloaded.added,
            removed = ?reloaded.removed,
            changed = ?reloaded.changed,
            started = ?reloaded.started,
            "configuration reloaded"
        );
        for failure in &reloaded.failed {
            tracing::warn!("after the reload, cannot start {failure}");
        }
    }
}
