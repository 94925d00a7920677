//! What a step sees of the daemon: its service's topic and status, its stop request,
//! and a read-only view of the daemon. The supervisor provides these through the
//! traits here, so services depend on nothing of the supervisor's own.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::StepError;
use crate::{
    bus::Refused,
    pb::{self, event::Payload},
    store::Fence,
};

/// Where one service's events and reports go: its topic, and the status the
/// supervisor keeps for it.
pub(crate) trait Outlet: Send + Sync {
    /// Publishes a data event on the service's topic and counts it.
    fn publish(&self, payload: Payload) -> Result<(), Refused>;

    /// Counts a failed step, or a problem a step carries on through, and publishes it
    /// as an error event.
    fn report(&self, message: String);

    /// Sets one entry of what the service reports of itself in ListServices.
    fn set_status(&self, key: &str, value: String);

    /// The problem reported earlier lasts: this step does not count as a good one.
    fn still_failing(&self);
}

/// The daemon as a service that reports on it sees it.
pub(crate) trait DaemonView: Send + Sync {
    /// Every service, in name order.
    fn services(&self) -> Vec<pb::ServiceInfo>;

    /// Subscriptions open on the bus.
    fn subscribers(&self) -> usize;

    /// Topics the bus holds.
    fn topics(&self) -> usize;

    fn uptime(&self) -> Duration;
}

/// What a step can use.
pub struct StepContext {
    outlet: Arc<dyn Outlet>,
    cancel: CancellationToken,
    daemon: Arc<dyn DaemonView>,
    fence: Option<Fence>,
}

impl StepContext {
    pub(crate) fn new(
        outlet: Arc<dyn Outlet>,
        cancel: CancellationToken,
        daemon: Arc<dyn DaemonView>,
        fence: Option<Fence>,
    ) -> Self {
        Self {
            outlet,
            cancel,
            daemon,
            fence,
        }
    }

    /// Publishes a data event on the service's topic.
    pub fn publish(&self, payload: Payload) -> Result<(), StepError> {
        self.outlet
            .publish(payload)
            .map_err(|e| StepError::Step(format!("event not published: {e}")))
    }

    /// Reports a problem as an error event without ending the step, for steps that
    /// carry on through it (a missing file being followed, a dropped connection).
    pub fn report(&self, message: String) {
        self.outlet.report(message)
    }

    /// Says that a problem reported earlier lasts (a write that failed waits for its
    /// retry), so that this step, and a publish in it, do not count as recovery.
    pub fn still_failing(&self) {
        self.outlet.still_failing()
    }

    /// Sets one entry of what the service reports of itself, shown in ListServices:
    /// a connection's state, the time of the last heartbeat, a count of skipped frames.
    pub fn set_status(&self, key: &str, value: impl Into<String>) {
        self.outlet.set_status(key, value.into())
    }

    /// Resolves when the service is asked to stop. Long-running steps return soon after.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// In a cluster, what the service's writes to the store carry so that the store
    /// refuses them once another node has taken the service over.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// The daemon this service runs in, for services that report on it.
    pub(crate) fn daemon(&self) -> &dyn DaemonView {
        &*self.daemon
    }
}
