//! Integration tests: the real `streamd` and `streamctl` binaries, driven as a user and
//! as client programs would.

mod harness;

mod cli;
mod config;
mod control;
mod foreign;
mod services;
mod shutdown;
