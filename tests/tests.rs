//! Integration tests: the real `streamd` and `streamctl` binaries, driven as a user and
//! as client programs would.

mod harness;

mod authority;
mod bench;
mod bus;
mod cli;
mod cluster;
mod config;
mod confine;
mod control;
mod foreign;
mod health;
mod hostile;
mod http;
mod hygiene;
mod kraken;
mod lanes;
mod leaderboard;
mod observe;
mod placement;
mod services;
mod settings;
mod shutdown;
mod soak;
mod store;
mod transport;
mod web;
mod websocket;
