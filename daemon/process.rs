//! The daemon process's own figures, from /proc: for the `system` service, /metrics
//! and ListServices.

use std::time::Duration;

/// What the process uses now.
pub struct Usage {
    pub rss_bytes: u64,
    /// User and system CPU time since it started.
    pub cpu: Duration,
}

pub fn usage() -> Result<Usage, procfs::ProcError> {
    let stat = procfs::process::Process::myself()?.stat()?;
    let ticks = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    Ok(Usage {
        rss_bytes: stat.rss * procfs::page_size(),
        cpu: Duration::from_secs_f64(ticks),
    })
}

/// File descriptors the process holds open.
pub fn open_fds() -> Option<usize> {
    procfs::process::Process::myself().ok()?.fd_count().ok()
}
