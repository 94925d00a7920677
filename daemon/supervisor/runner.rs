//! One run of a service: runs its worker's steps on its interval, backs off while
//! steps keep failing, and restarts a crashed worker until the restart policy gives up.

use std::{
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{Supervisor, slot::Slot};
use crate::{
    pb::{self, lifecycle},
    secret::Secret,
    services::{Outlet, Params, StepContext, StepError, Worker},
    store::Fence,
};

/// One run of a service, from a client's start to its stop or failure.
pub(super) struct Runner {
    pub(super) supervisor: Supervisor,
    pub(super) slot: Arc<Slot>,
    pub(super) interval: Duration,
    /// As the worker gets them: with what the config's `${VAR}`s read.
    pub(super) params: Secret<Params>,
    /// In a cluster, what guards the service's writes to the store.
    pub(super) fence: Option<Fence>,
}

/// How a worker's steps ended.
enum Ended {
    Stopped,
    Crashed(String),
}

impl Runner {
    /// Runs the worker's steps, restarting it after a crash as the restart policy
    /// allows, until the service is stopped or given up on.
    pub(super) async fn supervise(self, mut worker: Box<dyn Worker>, cancel: CancellationToken) {
        let ctx = StepContext::new(
            self.slot.clone(),
            cancel,
            Arc::new(self.supervisor.clone()),
            self.fence.clone(),
        );
        let policy = &self.supervisor.shared.settings.restart;
        let mut crashes = VecDeque::new();
        loop {
            let reason = match self.run_steps(worker.as_mut(), &ctx).await {
                Ended::Stopped => return,
                Ended::Crashed(reason) => reason,
            };
            let now = Instant::now();
            while crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > policy.window)
            {
                crashes.pop_front();
            }
            if crashes.len() >= policy.max_restarts as usize {
                let message = format!(
                    "crashed {} times within {:?}; last: {reason}",
                    crashes.len() + 1,
                    policy.window
                );
                self.fail(message);
                return;
            }
            crashes.push_back(now);
            let attempt = crashes.len() as u32;
            let backoff = policy.backoff(attempt);
            tracing::warn!(service = %self.slot.spec.name, %reason, ?backoff, "crashed; restarting");
            self.slot.mark_backing_off(&reason);
            self.slot.publish_lifecycle(pb::Lifecycle {
                kind: lifecycle::Kind::Restarting.into(),
                message: reason,
                backoff: prost_types::Duration::try_from(backoff).ok(),
                attempt,
                ..Default::default()
            });
            tokio::select! {
                _ = ctx.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            worker = match self
                .slot
                .spec
                .kind
                .build(self.params.expose(), &self.supervisor.shared.env)
            {
                Ok(worker) => worker,
                // The same parameters built the first worker, so this is not expected.
                Err(e) => {
                    self.fail(format!("cannot restart: {e}"));
                    return;
                }
            };
            self.slot.mark_restarted();
        }
    }

    /// Runs steps until the service is stopped or its worker crashes. Each failed step
    /// in a row lengthens the wait before the next, up to the restart policy's
    /// `max_backoff`; a step that succeeds, or publishes before failing (a connection
    /// that served a while), resets it.
    async fn run_steps(&self, worker: &mut dyn Worker, ctx: &StepContext) -> Ended {
        let mut failures = 0;
        loop {
            let published = self.slot.published();
            self.slot.begin_step();
            let began = Instant::now();
            let stepped = AssertUnwindSafe(worker.step(ctx)).catch_unwind().await;
            let metrics = &self.supervisor.shared.env.metrics;
            metrics.step(
                &self.slot.spec.name,
                began.elapsed(),
                !matches!(stepped, Ok(Ok(()))),
            );
            match stepped {
                Ok(Ok(())) => {
                    failures = 0;
                    self.slot.end_step();
                }
                Ok(Err(StepError::Step(message))) => {
                    self.slot.report(message);
                    if self.slot.published() > published {
                        failures = 0;
                    }
                    failures += 1;
                }
                Ok(Err(StepError::Fatal(message))) => {
                    self.slot.count_crash();
                    return Ended::Crashed(message);
                }
                Err(panic) => {
                    self.slot.count_crash();
                    return Ended::Crashed(format!("panicked: {}", panic_message(&*panic)));
                }
            }
            let wait = self.wait_after(failures);
            tokio::select! {
                biased;
                _ = ctx.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        match AssertUnwindSafe(worker.finish(ctx)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(StepError::Step(message) | StepError::Fatal(message))) => {
                self.slot.report(message)
            }
            Err(panic) => self.slot.report(format!(
                "panicked while stopping: {}",
                panic_message(&*panic)
            )),
        }
        Ended::Stopped
    }

    /// The wait before the next step after `failures` failed steps in a row: the
    /// interval, doubled for each failure after the first, capped, with jitter.
    fn wait_after(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return self.interval;
        }
        let cap = self
            .supervisor
            .shared
            .settings
            .restart
            .max_backoff
            .max(self.interval);
        let full = self
            .interval
            .saturating_mul(1 << (failures - 1).min(20))
            .min(cap);
        full.mul_f64(rand::rng().random_range(0.5..=1.0))
            .max(self.interval)
    }

    /// Gives up on the service.
    fn fail(&self, message: String) {
        tracing::error!(service = %self.slot.spec.name, reason = %message, "failed");
        self.slot.mark_failed(&message);
        self.slot.lifecycle(lifecycle::Kind::Failed, message);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use futures::StreamExt;
    use prost::Message;

    use super::*;
    use crate::{
        pb::{ServiceState, event::Payload},
        supervisor::{
            Overrides,
            fixtures::{self, test_kind},
        },
    };

    /// Panics on every step.
    struct Panics;
    #[async_trait]
    impl Worker for Panics {
        async fn step(&mut self, _: &StepContext) -> Result<(), StepError> {
            panic!("boom")
        }
    }

    /// Fails its first step fatally, once per process, then publishes.
    static FLAKY_CRASHED: AtomicBool = AtomicBool::new(false);
    struct Flaky;
    #[async_trait]
    impl Worker for Flaky {
        async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
            if !FLAKY_CRASHED.swap(true, Ordering::SeqCst) {
                return Err(StepError::Fatal("lost my marbles".into()));
            }
            ctx.publish(Payload::Text(pb::Text::default()))
        }
    }

    /// Fails every other step, and publishes on the others.
    struct Stumbles(usize);
    #[async_trait]
    impl Worker for Stumbles {
        async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
            self.0 += 1;
            if self.0 % 2 == 1 {
                return Err(StepError::Step(format!("stumble {}", self.0)));
            }
            ctx.publish(Payload::Text(pb::Text::default()))
        }
    }

    /// Publishes, then reports an error, then returns as if all went well: a
    /// leaderboard whose flush fails.
    struct Grumbles;
    #[async_trait]
    impl Worker for Grumbles {
        async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
            ctx.publish(Payload::Text(pb::Text::default()))?;
            ctx.report("cannot save".into());
            Ok(())
        }
    }

    test_kind!(PANICS, Panics);
    test_kind!(GRUMBLES, Grumbles);
    test_kind!(FLAKY, Flaky);
    test_kind!(STUMBLES, Stumbles(0));

    /// A supervisor of the crashing kinds, beside a well-behaved streamer.
    fn supervisor(stop_timeout: Duration) -> Supervisor {
        let streamer = crate::services::kind("streamer").unwrap();
        fixtures::supervisor(
            stop_timeout,
            &[&PANICS, &FLAKY, &STUMBLES, &GRUMBLES, streamer],
        )
    }

    fn info(supervisor: &Supervisor, name: &str) -> pb::ServiceInfo {
        supervisor
            .services()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    }

    /// The lifecycle events of one topic, decoded, until `until` matches one.
    async fn lifecycles_until(
        events: &mut (impl futures::Stream<Item = crate::wire::EncodedEvent> + Unpin),
        until: lifecycle::Kind,
    ) -> Vec<pb::Lifecycle> {
        let mut seen = Vec::new();
        while let Some(encoded) = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event in time")
        {
            let event = pb::Event::decode(encoded.bytes().clone()).unwrap();
            if let Some(Payload::Lifecycle(l)) = event.payload {
                let done = l.kind() == until;
                seen.push(l);
                if done {
                    break;
                }
            }
        }
        seen
    }

    #[tokio::test]
    async fn a_crashing_service_restarts_with_backoff_then_fails_alone() {
        let supervisor = supervisor(Duration::from_secs(1));
        let mut events = Box::pin(supervisor.bus().follow(&["panics"]));
        let mut streamer = Box::pin(supervisor.bus().follow(&["streamer"]));
        supervisor
            .start("streamer", Overrides::default())
            .await
            .unwrap();
        supervisor
            .start("panics", Overrides::default())
            .await
            .unwrap();

        let seen = lifecycles_until(&mut events, lifecycle::Kind::Failed).await;
        let kinds: Vec<_> = seen.iter().map(|l| l.kind()).collect();
        use lifecycle::Kind::*;
        assert_eq!(kinds, [Started, Restarting, Restarting, Restarting, Failed]);
        let attempts: Vec<_> = seen[1..4].iter().map(|l| l.attempt).collect();
        assert_eq!(attempts, [1, 2, 3]);
        for (l, cap) in seen[1..4].iter().zip([10, 20, 40]) {
            let backoff = Duration::try_from(l.backoff.unwrap()).unwrap();
            assert!(
                backoff <= Duration::from_millis(cap) && backoff >= Duration::from_millis(cap / 2)
            );
            assert!(l.message.contains("panicked: boom"), "{}", l.message);
        }
        assert!(
            seen[4].message.contains("crashed 4 times"),
            "{}",
            seen[4].message
        );

        let panics = info(&supervisor, "panics");
        assert_eq!(panics.state(), ServiceState::Failed);
        assert_eq!(panics.restarts, 3);
        assert!(panics.last_error.contains("boom"));
        // The neighbour never noticed.
        assert_eq!(info(&supervisor, "streamer").state(), ServiceState::Running);
        assert!(streamer.next().await.is_some());

        // A failed service can be started again, with a clean restart history.
        let started = supervisor
            .start("panics", Overrides::default())
            .await
            .unwrap();
        assert!(!started.already_running);
        assert_eq!(started.service.restarts, 0);
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn a_fatal_error_restarts_a_fresh_worker_that_then_runs() {
        let supervisor = supervisor(Duration::from_secs(1));
        let mut events = Box::pin(supervisor.bus().follow(&["flaky"]));
        supervisor
            .start("flaky", Overrides::default())
            .await
            .unwrap();
        let seen = lifecycles_until(&mut events, lifecycle::Kind::Restarting).await;
        assert_eq!(seen[1].message, "lost my marbles");
        // Data flows after the restart.
        loop {
            let event = pb::Event::decode(events.next().await.unwrap().bytes().clone()).unwrap();
            if matches!(event.payload, Some(Payload::Text(_))) {
                break;
            }
        }
        let flaky = info(&supervisor, "flaky");
        assert_eq!(
            (flaky.state(), flaky.restarts, flaky.errors),
            (ServiceState::Running, 1, 1)
        );
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn a_failed_step_is_reported_and_the_service_carries_on() {
        let supervisor = supervisor(Duration::from_secs(1));
        let mut events = Box::pin(supervisor.bus().follow(&["stumbles"]));
        supervisor
            .start("stumbles", Overrides::default())
            .await
            .unwrap();
        let (mut errors, mut data) = (0, 0);
        while errors < 3 || data < 3 {
            let event = pb::Event::decode(events.next().await.unwrap().bytes().clone()).unwrap();
            match event.payload {
                Some(Payload::Lifecycle(l)) if l.kind() == lifecycle::Kind::Error => {
                    assert!(l.message.starts_with("stumble "));
                    errors += 1;
                }
                Some(Payload::Lifecycle(l)) => assert_eq!(l.kind(), lifecycle::Kind::Started),
                _ => data += 1,
            }
        }
        let stumbles = info(&supervisor, "stumbles");
        assert_eq!(
            (stumbles.state(), stumbles.restarts),
            (ServiceState::Running, 0)
        );
        assert!(stumbles.errors >= 3 && stumbles.events_published >= 3);
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn a_step_that_reports_an_error_leaves_the_service_failing_though_it_publishes() {
        let supervisor = supervisor(Duration::from_secs(1));
        supervisor
            .start("grumbles", Overrides::default())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let grumbles = loop {
            let grumbles = info(&supervisor, "grumbles");
            if grumbles.events_published >= 5 {
                break grumbles;
            }
            assert!(tokio::time::Instant::now() < deadline, "{grumbles:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(grumbles.health(), pb::Health::Failing);
        assert!(grumbles.consecutive_failures >= 4, "{grumbles:?}");
        supervisor.shutdown().await;
    }
}
