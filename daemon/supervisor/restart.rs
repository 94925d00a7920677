//! The restart policy: how long a crashed service waits before it is restarted, and
//! how many crashes it is allowed before it is marked failed.

use std::time::Duration;

use rand::Rng;

/// When a crashing service is restarted, and when it is given up on.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; one more crash marks the service failed.
    pub max_restarts: u32,
    pub window: Duration,
    /// The wait before the first restart; each further restart within the window
    /// doubles it, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// The wait before restart number `attempt` (from 1): exponential, capped, and
    /// jittered down by up to half so that services that crashed together do not
    /// restart together.
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .initial_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(20));
        exponential
            .min(self.max_backoff)
            .mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_cap_with_jitter() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RestartPolicy::default()
        };
        for _ in 0..100 {
            for (attempt, full) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (60, 1000),
            ] {
                let backoff = policy.backoff(attempt);
                let full = Duration::from_millis(full);
                assert!(
                    backoff <= full && backoff >= full / 2,
                    "{attempt}: {backoff:?}"
                );
            }
        }
    }
}
