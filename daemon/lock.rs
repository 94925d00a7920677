//! The locks that keep two daemons apart: one streamd per data directory, and one per
//! SQLite database file, wherever it lies, so that two daemons never overwrite each
//! other's scores and records.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
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

/// Held for the life of the process on a SQLite database file, which another daemon
/// could be pointed at (`--database-url sqlite://...`) from another data directory. An
/// advisory `flock` on the file itself: SQLite's own locks are POSIX record locks,
/// which Linux keeps apart from it, and the descriptor stays open until the process
/// ends, so that closing it never drops SQLite's.
pub struct DatabaseLock {
    _file: Flock<File>,
}

impl DatabaseLock {
    /// Takes the lock on the database file at `path` (making the file, empty, if it is
    /// not there yet), or says that another process holds it.
    pub fn acquire(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => Ok(Self { _file: locked }),
            Err((_, Errno::EWOULDBLOCK)) => anyhow::bail!(
                "database {} is in use by another streamd; each daemon needs a SQLite file of \
                 its own (nodes of a cluster share a PostgreSQL database)",
                shown(path)
            ),
            Err((_, e)) => anyhow::bail!("cannot lock the database {}: {e}", path.display()),
        }
    }
}

/// A path as messages show it: absolute where it can be made so.
fn shown(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| PathBuf::from(path))
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_file_is_held_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("streamd.db");
        let held = DatabaseLock::acquire(&db).unwrap();
        // Another open file description: as another process's would be.
        let refused = DatabaseLock::acquire(&db).err().unwrap().to_string();
        assert!(refused.contains("in use by another streamd"), "{refused}");
        drop(held);
        assert!(DatabaseLock::acquire(&db).is_ok());
    }
}
