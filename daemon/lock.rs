//! The data directory's lock: one streamd per data directory, so that two daemons never
//! overwrite each other's scores and records.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// Name of the lock file inside the data directory; it holds the owner's pid.
const LOCK_FILE: &str = "streamd.lock";

/// Held for the life of the process. The lock is an advisory `flock`, so the kernel
/// releases it when the process ends, however it ends (kill -9 included).
pub struct DataDirLock {
    _file: Flock<File>,
}

impl DataDirLock {
    /// Takes the lock on `dir` and writes this process's pid into the lock file, or says
    /// which streamd holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                // The holder writes its pid right after locking; an empty file means it
                // is still writing it.
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "unknown".to_owned(),
                    pid => pid.chars().take(20).collect(),
                };
                anyhow::bail!(
                    "data directory {} is in use by streamd pid {holder}",
                    dir.display()
                );
            }
            Err((_, e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
        };
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        written.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(Self { _file: file })
    }
}
