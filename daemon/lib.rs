//! streamd: a daemon that supervises long-running services and streams their events
//! over gRPC. The `pb` module is the public API, shared by the daemon, `streamctl` and
//! any Rust program that depends on this crate.

pub mod pb;
