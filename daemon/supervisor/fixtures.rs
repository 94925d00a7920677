//! Test fixtures: kinds whose workers misbehave on purpose, and a supervisor of them
//! with a quick restart policy.

use std::time::Duration;

use super::{RestartPolicy, ServiceSpec, Settings, Supervisor};
use crate::{
    bus::Bus,
    services::{Environment, Kind, Params},
};

/// Declares `static $name: Kind` whose every worker is `$worker`, ticking every 10 ms.
macro_rules! test_kind {
    ($name:ident, $worker:expr) => {
        static $name: $crate::services::Kind = $crate::services::Kind {
            name: stringify!($name),
            description: "test",
            default_interval: ::std::time::Duration::from_millis(10),
            params: &[],
            build: |_: &$crate::services::Params,
                    _: &$crate::services::Environment|
             -> Result<Box<dyn $crate::services::Worker>, $crate::services::Build> {
                Ok(Box::new($worker))
            },
        };
    };
}
pub(super) use test_kind;

/// A supervisor of one service per kind, named as the kind in lower case, that
/// restarts at most 3 times with backoffs from 10 to 40 ms.
pub(super) fn supervisor(stop_timeout: Duration, kinds: &[&'static Kind]) -> Supervisor {
    let specs = kinds
        .iter()
        .map(|&kind| ServiceSpec {
            name: kind.name.to_ascii_lowercase(),
            kind,
            interval: kind.default_interval,
            params: Params::new(),
            allow_override: Vec::new(),
        })
        .collect();
    let settings = Settings {
        restart: RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        },
        stop_timeout,
        // The supervisor's tests run services at a millisecond or two.
        min_client_interval: Duration::from_millis(1),
    };
    let env = Environment::new("/nonexistent".into(), None).unwrap();
    Supervisor::new(Bus::local(), env, settings, specs, None)
}
