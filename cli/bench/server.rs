//! The servers under test as processes: starting a fresh streamd or nats-server for a
//! run (its own temporary directory, a free loopback port, its log in a file) and
//! stopping it after; and reading a process's CPU time and resident memory from /proc.
//! The process behind a listening port the bench did not start is found by
//! [`streamhandler::listen::pid_listening_on`].

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nix::{sys::signal, unistd::Pid};
use procfs::process::Process;
use tokio::{
    net::TcpStream,
    process::{Child, Command},
    time::Instant,
};

use super::report::System;
use crate::error::Error;

/// How long a fresh server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM before it is killed.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// A server the bench started, stopped when the run is over (or killed if dropped).
pub struct Spawned {
    child: Child,
    pub pid: u32,
    pub port: u16,
    /// Holds the data directory and the log until the server is stopped (then its
    /// drop removes them).
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Starts `bin` as `system` on a free loopback port and waits until it listens.
    pub async fn start(system: System, bin: &Path) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("streamctl-bench-{system}-"))
            .tempdir()
            .map_err(|err| Error::Other(format!("cannot make a temporary directory: {err}")))?;
        let port = free_port()?;
        let log_path = dir.path().join(format!("{system}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|err| Error::Other(format!("cannot create {}: {err}", log_path.display())))?;
        let mut command = Command::new(bin);
        match system {
            System::Streamd => command
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--no-resume")
                .env_remove("STREAMD_CONFIG")
                .env_remove("DATABASE_URL"),
            // No -js: JetStream stays off, as plain pub/sub.
            System::Nats => command.args(["-a", "127.0.0.1", "-p", &port.to_string()]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| Error::Other(format!("cannot start {}: {err}", bin.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::Other(format!("{} exited at once", bin.display())))?;
        let mut server = Self {
            child,
            pid,
            port,
            _dir: dir,
        };
        server.wait_listening(bin, &log_path).await?;
        Ok(server)
    }

    async fn wait_listening(&mut self, bin: &Path, log: &Path) -> Result<(), Error> {
        let give_up = Instant::now() + STARTUP;
        let failed = |why: String| {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("no log").trim().to_string();
            Error::Other(format!("{} {why} (its log: {last})", bin.display()))
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(failed(format!("exited with {status}")));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= give_up {
                return Err(failed(format!(
                    "did not listen on port {} within {}",
                    self.port,
                    humantime::format_duration(STARTUP)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited in time.
    pub async fn stop(mut self) {
        let pid = Pid::from_raw(self.pid as i32);
        if signal::kill(pid, signal::Signal::SIGTERM).is_ok()
            && tokio::time::timeout(SHUTDOWN, self.child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = self.child.kill().await;
    }
}

/// A loopback port nothing listens on now. Another process could take it before the
/// server binds it; the server then fails to start and says so.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| Error::Other(format!("cannot find a free port: {err}")))
}

/// The default streamd for --spawn: the one beside the running streamctl.
pub fn default_streamd() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()
        .map_err(|err| Error::Other(format!("cannot find streamctl's own path: {err}")))?;
    Ok(exe.with_file_name("streamd"))
}

/// The default nats-server for --spawn: the first on PATH, else Debian's.
pub fn default_nats_server() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// The processes a run's server CPU and memory are read from: the server, or the
/// nodes of a cluster and the NATS server between them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Processes(pub Vec<u32>);

impl Processes {
    pub fn one(pid: Option<u32>) -> Self {
        Self(pid.into_iter().collect())
    }

    /// Adds `pid` unless it is there already (two addresses of one process).
    pub fn add(&mut self, pid: Option<u32>) {
        if let Some(pid) = pid.filter(|pid| !self.0.contains(pid)) {
            self.0.push(pid);
        }
    }

    /// Their CPU time so far, together; None if any cannot be read, or there are none.
    pub fn cpu_time(&self) -> Option<Duration> {
        let times: Option<Vec<Duration>> = self.0.iter().map(|&pid| cpu_time(pid)).collect();
        times.filter(|t| !t.is_empty()).map(|t| t.into_iter().sum())
    }

    /// Their resident sets together, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let sizes: Option<Vec<u64>> = self.0.iter().map(|&pid| rss_kib(pid)).collect();
        sizes.filter(|s| !s.is_empty()).map(|s| s.into_iter().sum())
    }
}

/// The user and system CPU time process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = Process::new(pid as i32).ok()?.stat().ok()?;
    let ticks = stat.utime + stat.stime;
    Some(Duration::from_secs_f64(
        ticks as f64 / procfs::ticks_per_second() as f64,
    ))
}

/// Process `pid`'s resident set, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    Process::new(pid as i32).ok()?.status().ok()?.vmrss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_from_proc() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_time(me).unwrap() > Duration::ZERO);
        assert!(rss_kib(me).unwrap() > 0);
        assert_eq!(cpu_time(u32::MAX), None);
    }

    #[test]
    fn processes_count_together_and_once_each() {
        let me = std::process::id();
        let mut processes = Processes::one(Some(me));
        processes.add(Some(me));
        processes.add(None);
        assert_eq!(processes, Processes(vec![me]));
        assert!(processes.cpu_time().is_some());
        processes.add(Some(u32::MAX));
        assert_eq!(
            processes.cpu_time(),
            None,
            "one it cannot read spoils the sum"
        );
        assert_eq!(Processes::default().rss_kib(), None);
    }
}
