//! Process hygiene: one streamd per data directory, the lock goes with the process, and
//! SIGHUP checks the config file without ending the daemon.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};

use crate::harness::{Daemon, PATIENCE, STREAMCTL, STREAMD, text, write};

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

#[tokio::test]
async fn the_lock_goes_with_a_killed_daemon() {
    let mut daemon = Daemon::start();
    kill(daemon.pid(), Signal::SIGKILL).unwrap();
    daemon.wait().await;
    let again = daemon.restart(&[]);
    let (code, stderr) = second_daemon_on(&again);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("streamd pid {}", again.pid())),
        "{stderr}"
    );
}

/// Waits until the daemon's log holds `line`.
fn logs(daemon: &Daemon, line: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !daemon.log().contains(line) {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_running_one_for_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "streamd.toml",
        "start = [\"streamer\", \"ticker\"]\n\
         [services.streamer]\ninterval = \"1s\"\n\
         [services.ticker]\nkind = \"streamer\"\ninterval = \"1s\"\n",
    );
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    write(
        dir.path(),
        "streamd.toml",
        "[services.streamer]\ninterval = \"soon\"\n",
    );
    kill(daemon.pid(), Signal::SIGHUP).unwrap();
    logs(
        &daemon,
        &format!(
            "SIGHUP: bad config: {}:2: services.streamer.interval:",
            config.display()
        ),
    );
    let lines = list_lines(&daemon);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ticker ") && l.contains("running")),
        "{lines:?}"
    );

    // streamer changes (and restarts, as it ran), ticker goes, fresh comes and starts.
    write(
        dir.path(),
        "streamd.toml",
        "start = [\"streamer\", \"fresh\"]\n\
         [services.streamer]\ninterval = \"2s\"\n\
         [services.fresh]\nkind = \"streamer\"\ninterval = \"1s\"\n",
    );
    kill(daemon.pid(), Signal::SIGHUP).unwrap();
    logs(&daemon, "configuration reloaded");
    let lines = list_lines(&daemon);
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .cloned()
            .unwrap_or_default()
    };
    assert!(line("ticker").is_empty(), "{lines:?}");
    assert!(line("fresh").contains("running"), "{lines:?}");
    let streamer = line("streamer");
    assert!(
        streamer.contains("running") && streamer.contains("2s"),
        "{lines:?}"
    );
}

/// `streamctl list`'s rows, without colour.
fn list_lines(daemon: &Daemon) -> Vec<String> {
    let output = daemon.ctl(&["list"]);
    assert!(output.status.success(), "{}", daemon.log());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn sighup_without_a_config_file_has_nothing_to_reload() {
    let daemon = Daemon::start();
    kill(daemon.pid(), Signal::SIGHUP).unwrap();
    logs(&daemon, "SIGHUP: no --config file, nothing to reload");
    assert!(daemon.ctl(&["list"]).status.success(), "{}", daemon.log());
}

#[test]
fn versions_name_each_binary_and_help_names_the_data_directory() {
    for (binary, name) in [(STREAMD, "streamd"), (STREAMCTL, "streamctl")] {
        let output = Command::new(binary).arg("--version").output().unwrap();
        assert!(output.status.success());
        assert_eq!(
            text(&output).0,
            format!("{name} {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    let data_home = tempfile::tempdir().unwrap();
    let output = Command::new(STREAMD)
        .arg("--help")
        .env("XDG_DATA_HOME", data_home.path())
        .env_remove("STREAMD_DATA_DIR")
        .output()
        .unwrap();
    let help = text(&output).0;
    let default = format!("[default: {}/streamd]", data_home.path().display());
    assert!(help.contains(&default), "no {default} in:\n{help}");
}
