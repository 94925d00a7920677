//! The public API, package `streamhandler.v1`, generated from `proto/` by `build.rs`:
//! every message, the client that `streamctl` and Rust programs use, and a server trait
//! for programs that serve the same API themselves.

include!(concat!(env!("OUT_DIR"), "/api/streamhandler.v1.rs"));

/// The encoded descriptors of `proto/` and its imports, served by gRPC reflection and
/// used to print events as proto3 JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/streamhandler_descriptor.bin"));
