//! Desired state: which services clients want running, kept in the database so that
//! the services running when streamd stopped are running again after it starts, like
//! enabled units.
//!
//! Starts and stops are recorded by a background writer, so a control request never
//! waits for the database: the supervisor notes the latest wish per service and the
//! writer saves it, retrying while the database is unavailable.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    bus::lock,
    store::{DesiredState, Store},
    supervisor::{Overrides, Supervisor, WishRecorder},
};

/// The wait before saving again after the database refused.
const RETRY: Duration = Duration::from_secs(1);

/// Notes wishes and saves them in the background. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

struct Shared {
    /// The latest unsaved wish per service; a std mutex, never held across an await.
    pending: Mutex<BTreeMap<String, DesiredState>>,
    wake: Notify,
}

impl Recorder {
    /// Starts the writer; it saves what is pending and ends once `stop` is cancelled
    /// and everything noted before is saved (or the database still refuses).
    pub fn start(store: Store, stop: CancellationToken) -> (Self, JoinHandle<()>) {
        let recorder = Self {
            shared: Arc::new(Shared {
                pending: Mutex::default(),
                wake: Notify::new(),
            }),
        };
        let writer = tokio::spawn(recorder.clone().write(store, stop));
        (recorder, writer)
    }

    async fn write(self, store: Store, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = self.shared.wake.notified() => false,
                _ = stop.cancelled() => true,
            };
            let batch = std::mem::take(&mut *lock(&self.shared.pending));
            for (name, desired) in batch {
                if let Err(e) = store.save_desired(&desired).await {
                    tracing::warn!(service = %name, "cannot save desired state: {e}");
                    // Keep it unless a newer wish came in meanwhile.
                    lock(&self.shared.pending).entry(name).or_insert(desired);
                }
            }
            let failed = !lock(&self.shared.pending).is_empty();
            if stopping {
                return;
            }
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => self.shared.wake.notify_one(),
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
}

impl WishRecorder for Recorder {
    fn note(&self, wish: DesiredState) {
        lock(&self.shared.pending).insert(wish.name.clone(), wish);
        self.shared.wake.notify_one();
    }
}

/// Starts the services that clients left running, with the overrides they gave.
/// A service that cannot start now is logged and left stopped.
pub async fn resume(supervisor: &Supervisor, store: &Store) {
    let desired = match store.desired().await {
        Ok(desired) => desired,
        Err(e) => {
            tracing::warn!("cannot resume services: {e}");
            return;
        }
    };
    for wish in desired.into_iter().filter(|d| d.running) {
        if !supervisor.has_service(&wish.name) {
            tracing::warn!(service = %wish.name, "not resumed: no longer configured");
            continue;
        }
        let overrides = Overrides {
            interval: wish.interval,
            params: wish.params,
        };
        match supervisor.start(&wish.name, overrides).await {
            Ok(_) => tracing::info!(service = %wish.name, "resumed"),
            Err(e) => tracing::warn!(service = %wish.name, "not resumed: {e}"),
        }
    }
}
