//! Compiles `proto/` with protox (pure Rust, so no protoc is needed) into two modules:
//! the public API (messages and client, plus the server for Rust users) and the
//! daemon's own server, whose Subscribe stream yields events encoded once at publish
//! time rather than once per subscriber, whose Publish passes the client's data
//! through without decoding it, and whose codec answers a request that does not
//! decode with INVALID_ARGUMENT (see daemon/wire.rs).

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds these; a new migration must rebuild the daemon.
    println!("cargo:rerun-if-changed=migrations");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let files = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_file("streamhandler/v1/streamhandler.proto")?
        .file_descriptor_set();
    fs::write(
        out.join("streamhandler_descriptor.bin"),
        prost::Message::encode_to_vec(&files),
    )?;

    let api = out.join("api");
    fs::create_dir_all(&api)?;
    tonic_prost_build::configure()
        .out_dir(&api)
        .compile_fds(files.clone())?;

    let daemon = out.join("daemon");
    fs::create_dir_all(&daemon)?;
    tonic_prost_build::configure()
        .out_dir(&daemon)
        .build_client(false)
        // A request that does not decode is answered INVALID_ARGUMENT.
        .codec_path("crate::wire::Codec")
        .extern_path(".streamhandler.v1.Event", "crate::wire::EncodedEvent")
        .extern_path(
            ".streamhandler.v1.PublishRequest",
            "crate::wire::RawPublish",
        )
        .extern_path(".streamhandler.v1", "crate::pb")
        .compile_fds(files)?;
    Ok(())
}
