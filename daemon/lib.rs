//! streamd: a daemon that supervises long-running services and streams their events
//! over gRPC. The `pb` module is the public API, shared by the daemon, `streamctl` and
//! any Rust program that depends on this crate.
//!
//! A tour: [`config`] says which services exist, [`services`] holds one module per kind
//! of service, the [`supervisor`] runs them, the [`bus`] fans their events out, and the
//! [`server`] is the gRPC control plane in front of it all.

pub mod bus;
pub mod config;
pub mod error;
pub mod json;
pub mod pb;
pub mod server;
pub mod services;
pub mod supervisor;

use std::future::Future;

use tokio::net::TcpListener;

use crate::{bus::Bus, config::Config, services::Environment, supervisor::Supervisor};

/// Runs the daemon on `listener` until `shutdown` resolves: starts the services the
/// configuration names, serves the control plane, then stops everything cleanly.
pub async fn run(
    listener: TcpListener,
    config: Config,
    env: Environment,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    if let Err(e) = services::install_assets(&env.data_dir) {
        tracing::warn!(
            "cannot write the built-in texts and images into {}: {e}",
            env.data_dir.display()
        );
    }
    let supervisor = Supervisor::new(Bus::default(), env, config.settings, config.services);
    for name in &config.start {
        if let Err(e) = supervisor.start(name, Default::default()).await {
            supervisor.shutdown().await;
            anyhow::bail!("cannot start {name} at boot: {e}");
        }
    }
    server::serve(listener, supervisor, shutdown).await?;
    Ok(())
}
