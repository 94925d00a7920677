//! Process hygiene: one streamd per data directory, and the lock goes with the process.

use std::process::Command;

use nix::sys::signal::{Signal, kill};

use crate::harness::{Daemon, STREAMD};

/// Runs a second streamd on `daemon`'s data directory and returns its exit code and
/// stderr; it must exit by itself.
fn second_daemon_on(daemon: &Daemon) -> (Option<i32>, String) {
    let output = Command::new(STREAMD)
        .args(["--listen", "127.0.0.1:0", "--no-resume", "--data-dir"])
        .arg(daemon.data_dir.path())
        .env_remove("STREAMD_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_second_daemon_on_the_same_data_directory_exits_naming_the_holder() {
    let daemon = Daemon::start();
    let (code, stderr) = second_daemon_on(&daemon);
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!(
        "data directory {} is in use by streamd pid {}",
        daemon.data_dir.path().display(),
        daemon.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // The first daemon is untouched.
    assert!(daemon.ctl(&["list"]).status.success());
}

#[test]
fn the_lock_goes_with_a_killed_daemon() {
    let mut daemon = Daemon::start();
    kill(daemon.pid(), Signal::SIGKILL).unwrap();
    daemon.wait();
    let again = daemon.restart(&[]);
    let (code, stderr) = second_daemon_on(&again);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("streamd pid {}", again.pid())),
        "{stderr}"
    );
}
