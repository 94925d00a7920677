//! Placement: which node runs each service.
//!
//! What clients want is kept in the key/value bucket [`WISHES_BUCKET`]: for each
//! service, whether it should run, with which overrides, and on which node if pinned.
//! Any node writes it on StartService and StopService. The node that runs a service
//! holds its lease in [`LEASES_BUCKET`]: taken by a create that fails where a lease
//! is, renewed every [`RENEW_EVERY`] by an update that fails unless the lease is
//! still the one this node wrote. The bucket forgets a lease [`LEASE_TTL`] after its
//! last renewal, and another node then takes the service over. A node that cannot
//! renew stops the service after [`GIVE_UP_AFTER`], before its lease can pass to
//! another; the lease's number, higher for each new owner, fences the service's
//! writes to the store against an owner that missed this.
//!
//! Every node makes the same pass every [`PASS_EVERY`], and at once when a wish
//! changes: a service wanted and unleased goes to the live node running the fewest
//! (the pinned one, if any), which takes its lease and starts it; a service no longer
//! wanted stops where it runs and its lease is given back. A service goes only to a
//! node that has it configured (each node lists its services in the members list).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{Connection, Member, Membership};
use crate::{
    bus::lock,
    error::Error,
    pb,
    services::Params,
    store::Fence,
    supervisor::{Overrides, Placed, Started, Stopped, Supervisor},
};

/// What clients want of each service, cluster-wide.
pub const WISHES_BUCKET: &str = "streamhandler_services";
/// Which node runs each service.
pub const LEASES_BUCKET: &str = "streamhandler_leases";
/// How long a lease outlives its last renewal.
const LEASE_TTL: Duration = Duration::from_secs(5);
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long one renewal may take before it counts as failed.
const RENEW_TIMEOUT: Duration = Duration::from_millis(800);
/// A service whose lease has not been renewed for this long is stopped: the renewals
/// every second and their timeout bring that before [`LEASE_TTL`].
const GIVE_UP_AFTER: Duration = Duration::from_millis(2500);
const PASS_EVERY: Duration = Duration::from_secs(1);
/// A service left without a lease for this long is taken by any node that may run it,
/// in case the node chosen for it has gone but is still listed. Counted in time, not
/// passes (a node may make several passes in a moment, woken by each change), and as
/// long as a lease: a node that dies is no longer listed as live by then, so this
/// never slows a takeover, and a chosen node that is merely slow keeps its turn.
const VACANT_FOR: Duration = LEASE_TTL;
/// How long StartService waits for a node to take the service.
const PLACE_WITHIN: Duration = Duration::from_secs(8);
/// How often a waiting StartService or StopService looks again.
const POLL: Duration = Duration::from_millis(50);

/// A client's wish for one service, as kept in [`WISHES_BUCKET`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Wish {
    running: bool,
    #[serde(default)]
    interval_ms: Option<u64>,
    #[serde(default)]
    params: Params,
    /// The node it must run on.
    #[serde(default)]
    node: Option<String>,
}

impl Wish {
    fn overrides(&self) -> Overrides {
        Overrides {
            interval: self.interval_ms.map(Duration::from_millis),
            params: self.params.clone(),
        }
    }
}

/// A lease's value: the node that holds it.
#[derive(Serialize, Deserialize)]
struct LeaseValue {
    node: String,
}

/// A lease as the bucket holds it.
#[derive(Clone, Debug)]
struct Lease {
    node: String,
    revision: u64,
}

/// A lease this node holds.
struct Held {
    /// The revision of this node's latest write of it, which the next renewal names.
    revision: u64,
    renewed: Instant,
    /// The revision that created it: the service's fence.
    fence: u64,
    /// The revision of the wish the service last started for.
    wish: u64,
}

/// Every service as the cluster runs it, for ListServices.
pub struct Listing {
    pub services: Vec<pb::ServiceInfo>,
    pub nodes: Vec<pb::Node>,
    /// Why the listing may be partial or stale.
    pub warning: String,
}

/// This node's part in placing services. Cheap to clone.
#[derive(Clone)]
pub struct Placement {
    shared: Arc<Shared>,
}

struct Shared {
    supervisor: Supervisor,
    membership: Membership,
    client: async_nats::Client,
    /// Whether NATS can be reached now, as the connection tells it.
    connected: watch::Receiver<bool>,
    node_id: String,
    wishes: kv::Store,
    leases: kv::Store,
    /// A std mutex, never held across an await.
    held: Mutex<BTreeMap<String, Held>>,
    /// Wakes the pass: a wish changed.
    wake: Notify,
    /// The wish revision this node failed to start each service for: it does not try
    /// that wish again.
    failed: Mutex<BTreeMap<String, u64>>,
}

/// What one pass remembers for the next.
#[derive(Default)]
struct Seen {
    /// Since when each wanted service has been without a lease.
    vacant: BTreeMap<String, Instant>,
    /// The node last seen holding each service's lease.
    owner: BTreeMap<String, String>,
}

impl Placement {
    pub fn membership(&self) -> &Membership {
        &self.shared.membership
    }

    /// Opens the wishes and leases buckets.
    pub async fn open(
        connection: &Connection,
        membership: Membership,
        supervisor: Supervisor,
    ) -> Result<Self, String> {
        let wishes = connection
            .open_bucket(WISHES_BUCKET, Duration::ZERO)
            .await?;
        let leases = connection.open_bucket(LEASES_BUCKET, LEASE_TTL).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                supervisor,
                membership,
                client: connection.client.clone(),
                connected: connection.connected.clone(),
                node_id: connection.node_id.clone(),
                wishes,
                leases,
                held: Mutex::default(),
                wake: Notify::new(),
                failed: Mutex::default(),
            }),
        })
    }

    /// Wishes the configuration's boot services running, unless a client has wished
    /// otherwise before: a service a client stopped stays stopped when a node restarts.
    pub async fn wish_at_boot(&self, names: &[String]) -> Result<(), String> {
        for name in names {
            self.shared
                .supervisor
                .check_start(name, &Overrides::default())
                .map_err(|e| format!("cannot start {name} at boot: {e}"))?;
            let wish = Wish {
                running: true,
                interval_ms: None,
                params: Params::new(),
                node: None,
            };
            match self.shared.wishes.create(key(name), encode(&wish)).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot ask the cluster to run {name}: {e}")),
            }
        }
        Ok(())
    }

    /// Places a service on a live node (`node`, if given) unless one runs it, and
    /// waits for the node to start it.
    pub async fn start(
        &self,
        name: &str,
        overrides: Overrides,
        node: Option<String>,
    ) -> Result<Started, Error> {
        let shared = &self.shared;
        shared.supervisor.check_start(name, &overrides)?;
        if let Some(pin) = &node {
            let members = shared
                .membership
                .members()
                .await
                .map_err(Error::Unavailable)?;
            let pinned = members.iter().find(|m| &m.node.id == pin && m.is_live());
            if pinned.is_some_and(|member| !member.has(name)) {
                return Err(Error::invalid(
                    "params.node",
                    format!("node {pin:?} has no service {name:?} configured"),
                ));
            }
            if pinned.is_none() {
                let live: Vec<_> = members
                    .iter()
                    .filter(|m| m.is_live())
                    .map(|m| m.node.id.as_str())
                    .collect();
                return Err(Error::invalid(
                    "params.node",
                    format!(
                        "no live node {pin:?} in the cluster; its nodes: {}",
                        live.join(", ")
                    ),
                ));
            }
        }
        let wish = Wish {
            running: true,
            interval_ms: overrides.interval.map(|d| d.as_millis() as u64),
            params: overrides.params,
            node,
        };
        if let Some(lease) = self.lease(name).await? {
            let service = self.info_on(name, &lease.node).await;
            if service.state() != pb::ServiceState::Failed {
                return Ok(Started {
                    already_running: true,
                    service,
                });
            }
            // It crashed past its restarts where it runs: asked for again, it starts
            // again there, as on a daemon that runs alone.
            self.put_wish(name, &wish).await?;
            shared.wake.notify_one();
            return self.until_started_again(name, &lease.node).await;
        }
        self.put_wish(name, &wish).await?;
        shared.wake.notify_one();
        let deadline = Instant::now() + PLACE_WITHIN;
        loop {
            if let Some(lease) = self.lease(name).await? {
                return Ok(Started {
                    already_running: false,
                    service: self.info_on(name, &lease.node).await,
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "no node has taken {name} within {PLACE_WITHIN:?}; it stays wanted and \
                     starts when a node can run it (the nodes' logs say why none did)"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `node` reports a service that had failed there as started again.
    async fn until_started_again(&self, name: &str, node: &str) -> Result<Started, Error> {
        let deadline = Instant::now() + PLACE_WITHIN;
        loop {
            let service = self.info_on(name, node).await;
            if service.state() != pb::ServiceState::Failed {
                return Ok(Started {
                    already_running: false,
                    service,
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "node {node} has not started {name} again within {PLACE_WITHIN:?}; it \
                     stays wanted (the node's log says why)"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops a service wherever it runs, and waits until it has stopped.
    pub async fn stop(&self, name: &str) -> Result<Stopped, Error> {
        let shared = &self.shared;
        let Some(service) = shared.supervisor.service(name) else {
            return Err(Error::UnknownService(name.to_owned()));
        };
        let wish = Wish {
            running: false,
            interval_ms: None,
            params: Params::new(),
            node: None,
        };
        self.put_wish(name, &wish).await?;
        let Some(lease) = self.lease(name).await? else {
            return Ok(Stopped {
                was_running: false,
                forced: false,
                service,
            });
        };
        if lease.node == shared.node_id {
            let stopped = shared.supervisor.stop(name).await?;
            self.release(name).await;
            return Ok(Stopped {
                was_running: true,
                ..stopped
            });
        }
        // Its node stops it at its next pass, in at most its stop timeout.
        let patience = PASS_EVERY * 2 + shared.supervisor.stop_timeout();
        let deadline = Instant::now() + patience;
        while self.lease(name).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "node {} has not stopped {name} within {patience:?}; it stays wanted \
                     stopped",
                    lease.node
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Stopped {
            was_running: true,
            forced: false,
            service: shared.supervisor.service(name).unwrap_or(service),
        })
    }

    /// Every service, each as the node that runs it reported it, and the members.
    pub async fn listing(&self) -> Listing {
        let shared = &self.shared;
        let mut services: BTreeMap<String, pb::ServiceInfo> = shared
            .supervisor
            .services()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let not_connected = |state: &dyn std::fmt::Display| {
            format!(
                "node {} is not connected to the cluster's NATS ({state}): only its own \
                 services are shown",
                shared.node_id
            )
        };
        let mut warning = String::new();
        let state = shared.client.connection_state();
        if state != async_nats::connection::State::Connected {
            warning = not_connected(&state);
        }
        let members = if !warning.is_empty() {
            Vec::new()
        } else {
            // A connection lost while the members are read would leave the listing
            // waiting for their timeout.
            let mut connection = shared.connected.clone();
            tokio::select! {
                members = shared.membership.members() => members.unwrap_or_else(|e| {
                    warning = format!("{e}: only this node's services are shown");
                    Vec::new()
                }),
                _ = connection.wait_for(|connected| !connected) => {
                    warning = not_connected(&"lost while listing");
                    Vec::new()
                }
            }
        };
        for member in members.iter().filter(|m| m.node.id != shared.node_id) {
            for service in &member.services {
                let entry = services.get_mut(&service.name);
                // A node's own view of what it runs wins over a report a second old.
                if let Some(entry) = entry.filter(|e| e.state() == pb::ServiceState::Stopped) {
                    *entry = service.clone();
                }
            }
        }
        Listing {
            services: services.into_values().collect(),
            nodes: members.into_iter().map(|m| m.node).collect(),
            warning,
        }
    }

    /// Makes this node's passes and keeps its leases until `stop`, then gives back
    /// the leases of the services it ran (which the daemon has stopped by then), so
    /// that other nodes take them at once.
    pub async fn run_until(self, stop: CancellationToken) {
        let watching = tokio::spawn(self.clone().wake_on_wishes(stop.clone()));
        let keeping = tokio::spawn(self.clone().keep_leases(stop.clone()));
        let mut seen = Seen::default();
        let mut ticks = tokio::time::interval(PASS_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
                _ = self.shared.wake.notified() => {}
            }
            if self.shared.supervisor.is_shutting_down() {
                continue;
            }
            if let Err(e) = self.pass(&mut seen).await {
                tracing::debug!("placement pass: {e}");
            }
        }
        let _ = tokio::join!(watching, keeping);
        let held: Vec<String> = lock(&self.shared.held).keys().cloned().collect();
        for name in held {
            self.release(&name).await;
        }
    }

    /// One pass over every configured service.
    async fn pass(&self, seen: &mut Seen) -> Result<(), String> {
        let shared = &self.shared;
        let me = shared.node_id.as_str();
        let members = shared.membership.members().await?;
        let mut load: BTreeMap<String, usize> = members
            .iter()
            .filter(|m| m.is_live())
            .map(|m| (m.node.id.clone(), 0))
            .collect();
        // Read together: one by one, a pass over many services takes long enough for
        // other nodes to think the chosen one slow.
        let reads = shared
            .supervisor
            .names()
            .into_iter()
            .map(|name| async move {
                let wish = self.wish(&name).await?;
                let lease = self.lease(&name).await?;
                Ok::<_, Error>((name, wish, lease))
            });
        let state = futures::future::try_join_all(reads)
            .await
            .map_err(|e| e.to_string())?;
        for (_, _, lease) in &state {
            if let Some(lease) = lease {
                *load.entry(lease.node.clone()).or_default() += 1;
            }
        }
        for (name, wish, lease) in state {
            let wanted = wish.filter(|(wish, _)| wish.running);
            match (wanted, lease) {
                (Some((wish, revision)), None) => {
                    let since = *seen.vacant.entry(name.clone()).or_insert_with(Instant::now);
                    let ours = match &wish.node {
                        Some(pin) => pin == me,
                        None => {
                            let may_run = |node: &str| {
                                members
                                    .iter()
                                    .any(|m| m.node.id == node && m.is_live() && m.has(&name))
                            };
                            least_loaded(&load, may_run) == Some(me)
                                || since.elapsed() >= VACANT_FOR
                        }
                    };
                    let failed_before = lock(&shared.failed).get(&name) == Some(&revision);
                    if ours && !failed_before {
                        let previous = seen.owner.get(&name).cloned();
                        if self.take(&name, &wish, revision, previous).await {
                            *load.entry(me.to_owned()).or_default() += 1;
                            seen.vacant.remove(&name);
                        }
                    }
                }
                (wanted, Some(lease)) if lease.node == me => {
                    seen.vacant.remove(&name);
                    let held = lock(&shared.held).contains_key(&name);
                    if wanted.is_none() {
                        self.stop_here(&name, "no longer wanted").await;
                        self.release(&name).await;
                    } else if let Some((wish, revision)) = wanted.filter(|_| held) {
                        self.start_again_if_failed(&name, &wish, revision).await;
                    } else {
                        // Written by this node before it restarted: given back, and
                        // taken again by whichever node the next pass chooses.
                        self.release_stale(&name, &lease).await;
                    }
                }
                (_, Some(lease)) => {
                    seen.vacant.remove(&name);
                    seen.owner.insert(name.clone(), lease.node);
                    self.stop_unleased(&name).await;
                }
                (None, None) => {
                    seen.vacant.remove(&name);
                    self.stop_unleased(&name).await;
                }
            }
        }
        Ok(())
    }

    /// Takes a service's lease and starts it here; false if another node was first,
    /// or it did not start.
    async fn take(&self, name: &str, wish: &Wish, revision: u64, previous: Option<String>) -> bool {
        let shared = &self.shared;
        let me = &shared.node_id;
        let asked = Instant::now();
        let value = encode(&LeaseValue { node: me.clone() });
        let token = match shared.leases.create(key(name), value).await {
            Ok(token) => token,
            Err(e) => {
                tracing::debug!(service = %name, "lease not taken: {e}");
                return false;
            }
        };
        lock(&shared.held).insert(
            name.to_owned(),
            Held {
                revision: token,
                renewed: asked,
                fence: token,
                wish: revision,
            },
        );
        let note = match previous {
            Some(previous) if &previous != me => {
                format!("on node {me}, taking over from node {previous}")
            }
            _ => format!("on node {me}"),
        };
        let placed = Placed {
            fence: Fence {
                service: name.to_owned(),
                token,
            },
            note,
        };
        match shared
            .supervisor
            .start_placed(name, wish.overrides(), placed)
            .await
        {
            Ok(_) => {
                shared.membership.report_soon();
                true
            }
            Err(e) => {
                tracing::warn!(service = %name, "placed on this node, and cannot start: {e}");
                lock(&shared.failed).insert(name.to_owned(), revision);
                self.release(name).await;
                false
            }
        }
    }

    /// Starts a service whose lease this node holds again if it failed here (crashed
    /// past its restarts) and has been asked for since, under the same lease.
    async fn start_again_if_failed(&self, name: &str, wish: &Wish, revision: u64) {
        let shared = &self.shared;
        let failed = shared
            .supervisor
            .service(name)
            .is_some_and(|s| s.state() == pb::ServiceState::Failed);
        let fence = match lock(&shared.held).get_mut(name) {
            Some(held) if failed && held.wish < revision => {
                held.wish = revision;
                held.fence
            }
            _ => return,
        };
        let placed = Placed {
            fence: Fence {
                service: name.to_owned(),
                token: fence,
            },
            note: format!("on node {}, again", shared.node_id),
        };
        match shared
            .supervisor
            .start_placed(name, wish.overrides(), placed)
            .await
        {
            Ok(_) => shared.membership.report_soon(),
            Err(e) => tracing::warn!(service = %name, "cannot start it again here: {e}"),
        }
    }

    /// Renews every lease this node holds every [`RENEW_EVERY`] until `stop`; stops a
    /// service whose lease another node now holds, or that could not be renewed for
    /// [`GIVE_UP_AFTER`].
    async fn keep_leases(self, stop: CancellationToken) {
        let shared = &self.shared;
        let mut ticks = tokio::time::interval(RENEW_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let due: Vec<(String, u64)> = lock(&shared.held)
                .iter()
                .map(|(name, held)| (name.clone(), held.revision))
                .collect();
            let placement = &self;
            let renewals = due.into_iter().map(|(name, revision)| async move {
                let asked = Instant::now();
                let renewed = placement.renew(&name, revision).await;
                (name, asked, renewed)
            });
            for (name, asked, renewed) in futures::future::join_all(renewals).await {
                let mut held = lock(&shared.held);
                let Some(lease) = held.get_mut(&name) else {
                    continue;
                };
                let why = match renewed {
                    Ok(revision) => {
                        lease.revision = revision;
                        lease.renewed = asked;
                        continue;
                    }
                    Err(Renewal::Lost(why)) => why,
                    Err(Renewal::Failed(e)) if lease.renewed.elapsed() >= GIVE_UP_AFTER => {
                        format!("its lease could not be renewed for {GIVE_UP_AFTER:?} ({e})")
                    }
                    Err(Renewal::Failed(e)) => {
                        tracing::debug!(service = %name, "lease not renewed: {e}");
                        continue;
                    }
                };
                held.remove(&name);
                drop(held);
                tracing::warn!(service = %name, "{why}; stopping it on this node");
                let placement = self.clone();
                tokio::spawn(async move {
                    placement.stop_here(&name, &why).await;
                });
            }
        }
    }

    /// Writes this node's lease of `name` again, naming the revision it last wrote.
    async fn renew(&self, name: &str, revision: u64) -> Result<u64, Renewal> {
        let shared = &self.shared;
        let value = encode(&LeaseValue {
            node: shared.node_id.clone(),
        });
        let update = shared.leases.update(key(name), value, revision);
        match tokio::time::timeout(RENEW_TIMEOUT, update).await {
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // A renewal whose answer was lost moved the revision on: still ours.
                match self.lease(name).await {
                    Ok(Some(lease)) if lease.node == shared.node_id => Ok(lease.revision),
                    Ok(Some(lease)) => Err(Renewal::Lost(format!(
                        "node {} holds its lease now",
                        lease.node
                    ))),
                    Ok(None) => Err(Renewal::Lost("its lease expired".into())),
                    Err(e) => Err(Renewal::Failed(e.to_string())),
                }
            }
            Ok(Err(e)) => Err(Renewal::Failed(e.to_string())),
            Err(_) => Err(Renewal::Failed(format!(
                "no answer within {RENEW_TIMEOUT:?}"
            ))),
        }
    }

    /// Wakes the pass whenever a wish changes, so that a node placed on starts the
    /// service at once rather than at its next pass.
    async fn wake_on_wishes(self, stop: CancellationToken) {
        loop {
            let watch = tokio::select! {
                _ = stop.cancelled() => return,
                watch = self.shared.wishes.watch_all() => watch,
            };
            match watch {
                Ok(mut changes) => loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        change = changes.next() => match change {
                            Some(Ok(_)) => self.shared.wake.notify_one(),
                            Some(Err(e)) => {
                                tracing::debug!("watching wishes: {e}");
                                break;
                            }
                            None => break,
                        },
                    }
                },
                Err(e) => tracing::debug!("watching wishes: {e}"),
            }
            // The passes go on meanwhile; the watch is only a shortcut.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PASS_EVERY) => {}
            }
        }
    }

    /// Stops the service on this node, if it runs here.
    async fn stop_here(&self, name: &str, why: &str) {
        let supervisor = &self.shared.supervisor;
        if supervisor.runs(name) {
            if let Err(e) = supervisor.stop_because(name, why.to_owned()).await {
                tracing::warn!(service = %name, "cannot stop: {e}");
            }
            self.shared.membership.report_soon();
        }
    }

    /// Stops the service if it runs here without this node's lease (a reload started
    /// it, or the lease was lost).
    async fn stop_unleased(&self, name: &str) {
        if !lock(&self.shared.held).contains_key(name) {
            self.stop_here(name, "this node does not hold its lease")
                .await;
        }
    }

    /// Gives back this node's lease of `name`, so that another node may take it.
    async fn release(&self, name: &str) {
        lock(&self.shared.held).remove(name);
        match self.lease(name).await {
            Ok(Some(lease)) if lease.node == self.shared.node_id => {
                self.release_stale(name, &lease).await
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(service = %name, "lease not given back: {e}"),
        }
    }

    /// Deletes `lease` unless it has been written since.
    async fn release_stale(&self, name: &str, lease: &Lease) {
        let deleted = self
            .shared
            .leases
            .delete_expect_revision(key(name), Some(lease.revision))
            .await;
        if let Err(e) = deleted {
            tracing::debug!(service = %name, "lease not given back: {e}");
        }
    }

    /// The service as its node last reported it (this node: as it is now).
    async fn info_on(&self, name: &str, node: &str) -> pb::ServiceInfo {
        let shared = &self.shared;
        let local = || shared.supervisor.service(name).unwrap_or_default();
        let here = node == shared.node_id;
        // A node starts a service a beat after it takes the lease, and reports it a beat
        // after that.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if here {
                let service = local();
                if service.state() != pb::ServiceState::Stopped {
                    return service;
                }
            } else {
                let members = shared.membership.members().await.unwrap_or_default();
                if let Some(info) = reported(&members, node, name) {
                    return info;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        if here {
            return local();
        }
        pb::ServiceInfo {
            state: pb::ServiceState::Running.into(),
            node: node.to_owned(),
            ..local()
        }
    }

    async fn put_wish(&self, name: &str, wish: &Wish) -> Result<(), Error> {
        self.shared
            .wishes
            .put(key(name), encode(wish))
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// The service's wish and its revision; none if never wished or unreadable.
    async fn wish(&self, name: &str) -> Result<Option<(Wish, u64)>, Error> {
        read(&self.shared.wishes, name).await
    }

    /// The service's lease, if a node holds one.
    async fn lease(&self, name: &str) -> Result<Option<Lease>, Error> {
        let lease = read::<LeaseValue>(&self.shared.leases, name).await?;
        Ok(lease.map(|(value, revision)| Lease {
            node: value.node,
            revision,
        }))
    }
}

/// The value under the service's key in `bucket`, and its revision; none if deleted,
/// never written, or unreadable.
async fn read<T: DeserializeOwned>(
    bucket: &kv::Store,
    name: &str,
) -> Result<Option<(T, u64)>, Error> {
    let entry = bucket.entry(key(name)).await.map_err(unavailable)?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision))))
}

/// Why a renewal failed.
enum Renewal {
    /// Another node holds the lease, or it expired: the service must stop now.
    Lost(String),
    /// NATS did not answer; the lease may still be this node's.
    Failed(String),
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("cannot reach the cluster's NATS: {e}"))
}

/// Of the nodes that `may_run` the service, the one running the fewest services, the
/// first by id among equals.
fn least_loaded(load: &BTreeMap<String, usize>, may_run: impl Fn(&str) -> bool) -> Option<&str> {
    load.iter()
        .filter(|(id, _)| may_run(id))
        .min_by_key(|(id, count)| (**count, *id))
        .map(|(id, _)| id.as_str())
}

/// The service as `node` reported it, if it did.
fn reported(members: &[Member], node: &str, name: &str) -> Option<pb::ServiceInfo> {
    let member = members.iter().find(|m| m.node.id == node)?;
    member.services.iter().find(|s| s.name == name).cloned()
}

fn encode(value: &impl Serialize) -> bytes::Bytes {
    serde_json::to_vec(value)
        .expect("wishes and leases serialise")
        .into()
}

/// A service's key in the buckets: its name where the key rules allow it, else `=`
/// and its name in hex (service names never hold `=`).
fn key(name: &str) -> String {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_/.".contains(&b));
    if plain && !name.starts_with('.') && !name.ends_with('.') {
        name.to_owned()
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("={hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_name_makes_a_key() {
        assert_eq!(key("leaderboard"), "leaderboard");
        assert_eq!(key("feeds/kraken.book"), "feeds/kraken.book");
        assert_eq!(key("a:b"), "=613a62");
        assert_eq!(key(".a"), "=2e61");
    }

    #[test]
    fn the_least_loaded_node_that_may_run_it_is_chosen_by_id_among_equals() {
        let load = BTreeMap::from([("c".into(), 0), ("a".into(), 1), ("b".into(), 0)]);
        assert_eq!(least_loaded(&load, |_| true), Some("b"));
        assert_eq!(least_loaded(&load, |id| id != "b"), Some("c"));
        assert_eq!(least_loaded(&load, |id| id == "a"), Some("a"));
        assert_eq!(least_loaded(&load, |_| false), None);
        assert_eq!(least_loaded(&BTreeMap::new(), |_| true), None);
    }
}
