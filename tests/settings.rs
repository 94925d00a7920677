//! Every setting in force: ListServices and `streamctl show` list each parameter of a
//! service's kind, with its value and where the value comes from.

use streamhandler::pb::{self, SettingSource};

use crate::harness::{Daemon, start_request, text, write};

/// The setting `name` of `service`; fails the test when it is missing.
fn setting<'a>(service: &'a pb::ServiceInfo, name: &str) -> &'a pb::Setting {
    service
        .settings
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no setting {name}: {:?}", service.settings))
}

#[tokio::test]
async fn a_built_in_service_lists_its_defaults() {
    let daemon = Daemon::start();
    let activities = daemon.service("activities").await;
    let names: Vec<_> = activities
        .settings
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["url", "timeout"]);
    let url = setting(&activities, "url");
    assert_eq!(url.value, "https://bored-api.appbrewery.com/random");
    assert_eq!(url.source(), SettingSource::Default);
    assert_eq!(url.description, "the endpoint to poll");
    assert_eq!(setting(&activities, "timeout").value, "10s");

    let output = daemon.ctl(&["show", "activities"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains(
            "settings:    url      https://bored-api.appbrewery.com/random  (default)  \
             the endpoint to poll"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("timeout  10s"), "{stdout}");
}

#[tokio::test]
async fn a_client_override_is_marked_until_the_service_stops() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let started = client
        .start_service(start_request("streamer", 500, &[("series", "3")]))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    let series = setting(&started, "series");
    assert_eq!(
        (series.value.as_str(), series.source()),
        ("3", SettingSource::Override)
    );
    let max_points = setting(&started, "max_points");
    assert_eq!(
        (max_points.value.as_str(), max_points.source()),
        ("12", SettingSource::Default)
    );
    let output = daemon.ctl(&["show", "streamer"]);
    let stdout = text(&output).0;
    assert!(stdout.contains("series      3   (override)"), "{stdout}");
    assert!(stdout.contains("max_points  12  (default)"), "{stdout}");

    assert!(daemon.ctl(&["stop", "streamer"]).status.success());
    let stopped = daemon.service("streamer").await;
    assert_eq!(setting(&stopped, "series").source(), SettingSource::Default);
    assert_eq!(setting(&stopped, "series").value, "10");
}

#[tokio::test]
async fn configured_values_are_marked_and_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "streamd.toml",
        r#"
[services.prices]
kind = "http"
params = { url = "http://127.0.0.1:9/prices", "header.Authorization" = "Bearer hunter2", "header.Accept" = "text/plain" }
"#,
    );
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let prices = daemon.service("prices").await;
    let authorization = setting(&prices, "header.Authorization");
    assert_eq!(authorization.value, "<redacted>");
    assert_eq!(authorization.source(), SettingSource::Config);
    assert_eq!(setting(&prices, "header.Accept").value, "text/plain");
    assert_eq!(setting(&prices, "url").source(), SettingSource::Config);
    assert_eq!(setting(&prices, "method").value, "GET");
    assert_eq!(setting(&prices, "method").source(), SettingSource::Default);
    // A family with no member set shows as itself, unset.
    let fields = setting(&prices, "field.*");
    assert_eq!(
        (fields.value.as_str(), fields.source()),
        ("", SettingSource::Default)
    );

    let output = daemon.ctl(&["show", "prices"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("header.Authorization  <redacted>"),
        "{stdout}"
    );
    assert!(stdout.contains("(config)"), "{stdout}");
}
