//! The --http listener: the dashboard's files from the binary, the API as gRPC-Web,
//! images confined to an images service's directory, and the refusal of requests
//! that name another host or come from another site's page.
//!
//! The page itself is checked in Chromium (Playwright) and Firefox (puppeteer-core, over
//! WebDriver BiDi), and its API from a Node client on the page's own gRPC-Web
//! transport, with web/'s packages that tests/run.sh installs: `STREAMD_TEST_WEB_NODE`
//! names Node.js, `STREAMD_TEST_CHROMIUM` and `STREAMD_TEST_FIREFOX` the browsers.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

use crate::{
    bus,
    foreign::{run, tool},
    harness::{Daemon, PATIENCE, text, write},
    http::Api,
    kraken,
    transport::{Certs, TOKEN, refused},
};

/// Node.js, with web/'s packages installed.
const WEB_NODE: &str = "STREAMD_TEST_WEB_NODE";
/// The Chromium that Playwright drives.
const CHROMIUM: &str = "STREAMD_TEST_CHROMIUM";
/// The Firefox that puppeteer-core drives.
const FIREFOX: &str = "STREAMD_TEST_FIREFOX";

/// A daemon serving the dashboard on a free loopback port, with `extra` flags.
fn daemon(extra: &[&str]) -> (Daemon, String) {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let daemon = Daemon::start_with(&args);
    let url = daemon.dashboard();
    (daemon, url)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// An empty ListServicesRequest as a gRPC-Web message: a flag byte and a zero length.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

/// A daemon serving TLS and requiring the token, with its dashboard on a free port,
/// and the dashboard's URL by the name its certificate carries.
fn tls_daemon(certs: &Certs) -> (Daemon, String) {
    let daemon = certs.daemon(&["--http", "127.0.0.1:0"]);
    let url = daemon.dashboard().replace("127.0.0.1", "localhost");
    (daemon, url)
}

/// The port of a dashboard URL.
fn port_of(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned()
}

/// POSTs ListServices as gRPC-Web, with `headers`.
async fn list_services(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    list_services_with(&client(), url, headers).await
}

/// POSTs ListServices as gRPC-Web from `client`, with `headers`.
async fn list_services_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client
        .post(format!("{url}streamhandler.v1.StreamHandler/ListServices"))
        .header(header::CONTENT_TYPE, "application/grpc-web+proto")
        .body(EMPTY_MESSAGE);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_page_and_its_files_come_from_the_binary() {
    let (_daemon, url) = daemon(&[]);
    for (path, file, media_type) in [
        ("", "index.html", "text/html"),
        ("app.js", "app.js", "text/javascript"),
        ("app.css", "app.css", "text/css"),
    ] {
        let response = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "/{path}");
        let headers = response.headers().clone();
        let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(
            content_type.starts_with(media_type),
            "/{path}: {content_type}"
        );
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let committed = std::fs::read(format!("web/dist/{file}")).unwrap();
        assert_eq!(response.bytes().await.unwrap(), committed, "/{path}");
    }
    let missing = client().get(format!("{url}nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_api_answers_grpc_web_on_the_same_address() {
    let (_daemon, url) = daemon(&[]);
    let origin = url.trim_end_matches('/');
    let response = list_services(&url, &[("origin", origin)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/grpc-web"),
        "{content_type}"
    );
    let body = response.bytes().await.unwrap();
    // A data frame (flag 0) holding every service's name, then the trailers frame.
    assert_eq!(body[0], 0);
    assert!(body.windows(8).any(|w| w == b"streamer"), "{body:?}");
    let trailers = String::from_utf8_lossy(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn forged_hosts_and_other_sites_pages_are_refused() {
    let (_daemon, url) = daemon(&["--http-host", "dash.example"]);
    let port = port_of(&url);
    let get = |host: String, extra: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move {
            let mut request = client().get(&url).header(header::HOST, host);
            for (name, value) in extra {
                request = request.header(name, value);
            }
            request.send().await.unwrap()
        }
    };
    for host in [format!("localhost:{port}"), format!("dash.example:{port}")] {
        assert_eq!(
            get(host.clone(), vec![]).await.status(),
            StatusCode::OK,
            "{host}"
        );
    }
    // A DNS-rebinding page reaches the right address under its own name.
    let rebound = get(format!("attacker.example:{port}"), vec![]).await;
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    let why = rebound.text().await.unwrap();
    assert!(why.contains("--http-host attacker.example"), "{why}");
    // Another site's page, by its Origin or by what the browser says of it.
    let host = format!("localhost:{port}");
    for headers in [
        vec![("origin", "http://attacker.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")],
    ] {
        let response = list_services(
            &url,
            &[headers.as_slice(), &[("host", host.as_str())]].concat(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
        let image = get(host.clone(), headers.clone()).await;
        assert_eq!(image.status(), StatusCode::FORBIDDEN, "{headers:?}");
    }
    // Following a link from elsewhere opens the page, and only the page.
    let link = get(
        host.clone(),
        vec![
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ],
    )
    .await;
    assert_eq!(link.status(), StatusCode::OK);
}

#[tokio::test]
async fn images_come_only_from_an_images_services_directory() {
    let (daemon, url) = daemon(&[]);
    let images = daemon.data_dir.path().join("images");
    let fox = client()
        .get(format!("{url}images/images/fox.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(fox.status(), StatusCode::OK);
    assert_eq!(fox.headers()[header::CONTENT_TYPE], "image/png");
    assert_eq!(
        fox.bytes().await.unwrap(),
        std::fs::read(images.join("fox.png")).unwrap()
    );
    // A link inside the directory that leads out of it, named like an image.
    let secret = write(daemon.data_dir.path(), "secret.png", "not for browsers");
    std::os::unix::fs::symlink(&secret, images.join("leak.png")).unwrap();
    for path in [
        "images/images/leak.png",
        "images/images/..%2Fsecret.png",
        "images/images/%2E%2E",
        "images/images/.hidden.png",
        "images/images/missing.png",
        "images/streamer/fox.png",
        "images/nobody/fox.png",
    ] {
        let response = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "/{path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("not for browsers"), "/{path}: {body}");
    }
}

#[test]
fn off_loopback_the_dashboard_needs_tls_and_a_token() {
    let stderr = refused(&["--http", "0.0.0.0:0"]);
    assert!(
        stderr.contains("--http")
            && stderr.contains("--tls-cert")
            && stderr.contains("--token-file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_tls_and_a_token_the_api_needs_the_token_and_the_page_does_not() {
    let certs = Certs::new();
    let (_daemon, url) = tls_daemon(&certs);
    assert!(url.starts_with("https://localhost:"), "{url}");
    let ca = std::fs::read(certs.path("ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let page = client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let refused = list_services_with(&client, &url, &[]).await;
    assert_eq!(refused.headers()["grpc-status"], "16", "UNAUTHENTICATED");
    let bearer = format!("Bearer {TOKEN}");
    let served = list_services_with(&client, &url, &[("authorization", &bearer)]).await;
    let body = served.bytes().await.unwrap();
    assert!(body.windows(8).any(|w| w == b"streamer"));
}

#[tokio::test]
async fn the_config_file_can_turn_the_dashboard_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "streamd.toml",
        "[http]\nlisten = \"127.0.0.1:0\"\nhosts = [\"dash.example\"]\n",
    );
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let url = daemon.dashboard();
    let port = port_of(&url);
    let page = client()
        .get(&url)
        .header(header::HOST, format!("dash.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_committed_bundle_is_built_from_web_sources() {
    let Some(_node) = tool(WEB_NODE) else {
        return;
    };
    let output = run(
        Command::new("npm").args(["run", "--silent", "--prefix", "web", "check"]),
        Duration::from_secs(120),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "web/dist is not what web/src builds; run `npm run build --prefix web`:\n{stdout}{stderr}"
    );
}

#[tokio::test]
async fn a_grpc_web_client_from_node_lists_starts_and_subscribes() {
    let Some(node) = tool(WEB_NODE) else {
        return;
    };
    let certs = Certs::new();
    let (_daemon, url) = tls_daemon(&certs);
    let output = run(
        Command::new(node)
            .args(["web/test/grpc-web-client.mjs", &url, TOKEN])
            .env("NODE_EXTRA_CA_CERTS", certs.path("ca.pem")),
        Duration::from_secs(60),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines[0]["listed"].as_array().unwrap().len() >= 10,
        "{stdout}"
    );
    assert_eq!(lines[1]["started"], "streamer", "{stdout}");
    assert_eq!(lines[2]["subscribed"][0], "streamer", "{stdout}");
    let plots: Vec<&Value> = lines.iter().filter(|l| l.get("series").is_some()).collect();
    assert_eq!(plots.len(), 3, "{stdout}");
    // In order and without a gap, from wherever the stream joined.
    let first = plots[0]["seq"].as_u64().unwrap();
    for (plot, seq) in plots.iter().zip(first..) {
        assert_eq!(plot["seq"], seq, "{stdout}");
        assert_eq!(plot["series"], 10, "{stdout}");
    }
    assert_eq!(lines.last().unwrap()["stopped"], true, "{stdout}");
    // Without the token, the same client is refused.
    let refused = run(
        Command::new(tool(WEB_NODE).unwrap())
            .args(["web/test/grpc-web-client.mjs", &url])
            .env("NODE_EXTRA_CA_CERTS", certs.path("ca.pem")),
        Duration::from_secs(60),
    )
    .await;
    let (stdout, stderr) = text(&refused);
    assert!(!refused.status.success(), "{stdout}");
    assert!(stderr.contains("bearer token"), "{stderr}");
}

#[tokio::test]
async fn protobuf_es_decodes_data_at_the_nesting_limit_and_one_level_more_is_refused() {
    let Some(node) = tool(WEB_NODE) else {
        return;
    };
    let daemon = Daemon::start_with(&["--http", "127.0.0.1:0"]);
    let limit = streamhandler::wire::MAX_DATA_DEPTH.to_string();
    let output = run(
        Command::new(node).args([
            "web/test/depth.mjs",
            daemon.dashboard().trim_end_matches('/'),
            &limit,
        ]),
        Duration::from_secs(60),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    crate::foreign::assert_depth_summary("protobuf-es", &summary);
}

/// A browser script that asks the test to act: each line it prints is either a report
/// or a request, which the test carries out and then answers.
struct Conversation {
    script: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    deadline: Instant,
}

impl Conversation {
    /// Runs `node SCRIPT ARGS...` driving `chromium`, which must finish within `limit`.
    fn start(node: &str, chromium: &str, args: &[&str], limit: Duration) -> Self {
        let mut script = Command::new(node)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            stdin: script.stdin.take().unwrap(),
            lines: BufReader::new(script.stdout.take().unwrap()).lines(),
            script,
            deadline: Instant::now() + limit,
        }
    }

    /// The script's next line; None once it has ended or run out of time.
    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout_at(self.deadline.into(), self.lines.next_line())
            .await
            .ok()?
            .ok()?
    }

    /// Tells the script its request has been carried out.
    async fn answer(&mut self) {
        self.stdin.write_all(b"done\n").await.unwrap();
    }

    /// How the script ended.
    async fn end(mut self) -> std::process::ExitStatus {
        tokio::time::timeout_at(self.deadline.into(), self.script.wait())
            .await
            .expect("the browser test finishes")
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_drives_every_card() {
    let (Some(node), Some(chromium)) = (tool(WEB_NODE), tool(CHROMIUM)) else {
        return;
    };
    // The network cards poll a local API and follow a local feed: no test reaches the
    // internet.
    let api = Api::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "streamd.toml",
        &format!(
            "[services.slugs]\nparams = {{ url = \"{}\" }}\n\
             [services.emojis]\nparams = {{ url = \"{}\" }}\n\
             [services.activities]\nparams = {{ url = \"{}\" }}\n\
             [services.aq]\nparams = {{ url = \"{}\" }}\n\
             [services.kraken]\nparams = {{ url = \"{}\" }}\n",
            api.url("/slugs"),
            api.url("/emoji"),
            api.url("/activity"),
            api.url("/aq"),
            kraken::feed().await,
        ),
    );
    let http = format!("127.0.0.1:{}", crate::harness::free_port());
    let args = [
        "--http",
        http.as_str(),
        "--config",
        config.to_str().unwrap(),
    ];
    let env = [("OPEN_AQ_KEY", "k3y-for-tests")];
    let mut daemon = Daemon::start_with_env(&args, &env);
    let url = daemon.dashboard();
    let published = daemon.ctl(&["publish", "weather/denver", r#"{"temp": 21.5}"#]);
    assert!(published.status.success(), "{:?}", text(&published));
    // Beside the test's other output; the README shows the one a run leaves in web/.
    let screenshot = std::env::var("STREAMD_TEST_SCREENSHOT").unwrap_or_else(|_| {
        let dir = std::env::temp_dir().join(format!("streamd-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("dashboard.png").display().to_string()
    });
    let filled = "slugs,emojis,activities,kraken,aq,leaderboard,streamer,reader,images,system";
    let mut browser = Conversation::start(
        &node,
        &chromium,
        &["web/test/dashboard.mjs", &url, &screenshot, filled],
        6 * PATIENCE,
    );
    let mut seen = Vec::new();
    while let Some(line) = browser.line().await {
        match line.as_str() {
            "stop-daemon" => {
                daemon.terminate().await;
            }
            "start-daemon" => daemon = daemon.restart_with_env(&args, &env),
            _ => {
                seen.push(line);
                continue;
            }
        }
        browser.answer().await;
    }
    let status = browser.end().await;
    let report = seen.join("\n");
    assert!(status.success(), "{report}\n{}", daemon.log());
    for step in [
        "a client's topic has a card",
        "streamer started from its card",
        "start all",
        "nine ranked rows",
        "an image that loaded",
        "every dot is off",
        "reconnecting",
        "reconnected",
    ] {
        assert!(report.contains(step), "no `{step}` in:\n{report}");
    }
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{screenshot}");
}

#[tokio::test]
async fn the_dashboard_works_in_firefox() {
    let (Some(node), Some(firefox)) = (tool(WEB_NODE), tool(FIREFOX)) else {
        return;
    };
    let (_daemon, url) = daemon(&[]);
    let output = run(
        Command::new(node)
            .args(["web/test/firefox.mjs", &url])
            .env("FIREFOX", firefox),
        Duration::from_secs(90),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    for step in ["the page streams", "the image loaded", "the dots are off"] {
        assert!(stdout.contains(step), "no `{step}` in:\n{stdout}");
    }
}

#[tokio::test]
async fn the_page_asks_once_for_the_token_of_a_daemon_that_needs_one() {
    let (Some(node), Some(chromium)) = (tool(WEB_NODE), tool(CHROMIUM)) else {
        return;
    };
    let certs = Certs::new();
    let (_daemon, url) = tls_daemon(&certs);
    let output = run(
        Command::new(node)
            .args(["web/test/token.mjs", &url, TOKEN])
            .env("CHROMIUM", chromium),
        Duration::from_secs(90),
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    for step in [
        "asks for the token",
        "wrong token is refused",
        "still has the token",
        "fetched with the token, loaded",
    ] {
        assert!(stdout.contains(step), "no `{step}` in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_falls_behind_says_what_it_skipped() {
    let (Some(node), Some(chromium)) = (tool(WEB_NODE), tool(CHROMIUM)) else {
        return;
    };
    let (daemon, url) = daemon(&["--subscriber-buffer", "1MiB"]);
    let mut browser = Conversation::start(
        &node,
        &chromium,
        &["web/test/lagged.mjs", &url],
        3 * PATIENCE,
    );
    let mut seen = Vec::new();
    while let Some(line) = browser.line().await {
        if line == "flood" {
            // 40 MiB while the page reads nothing: far past its 1 MiB buffer.
            bus::flood(&mut daemon.client().await, "flood", 40_000, 1024).await;
            browser.answer().await;
        } else {
            seen.push(line);
        }
    }
    let status = browser.end().await;
    let report = seen.join("\n");
    assert!(status.success(), "{report}");
    assert!(
        report.contains("skipped") && report.contains("flood"),
        "no skipped events of `flood` in:\n{report}"
    );
}
