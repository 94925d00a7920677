//! Who may connect and how: Unix sockets, TLS, bearer tokens, the refusal to serve a
//! non-loopback address unprotected, HTTP/2 limits that pace a fast publisher, and
//! what each connection may spend.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use futures::StreamExt;
use prost_types::Struct;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use streamhandler::pb::{self, stream_handler_client::StreamHandlerClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{
    foreign::{self, GRPCURL, PYTHON},
    harness::{Daemon, Events, PATIENCE, STREAMD, is_data, streamctl_at, text},
};

/// Runs streamd with `args`, which must make it exit 1 (within [`PATIENCE`], or it is
/// killed and the test fails), and returns what it wrote to stderr. Unless `args` say
/// otherwise it listens on a free loopback port, so a daemon that wrongly starts
/// disturbs nothing.
pub fn refused(args: &[&str]) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    let stderr_file = data_dir.path().join("stderr");
    let mut child = Command::new(STREAMD)
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(args)
        .env("STREAMD_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "streamd {args:?} did not exit 1:\n{stderr}"
    );
    stderr
}

/// Asserts that a client's command succeeded and printed `want`.
fn assert_succeeded_with(output: &std::process::Output, want: &str) {
    let (stdout, stderr) = text(output);
    assert!(
        output.status.success() && stdout.contains(want),
        "{stdout}{stderr}"
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The first line `streamctl subscribe` prints, then the command is killed.
fn first_line_of_subscribe(mut command: Command) -> String {
    let mut child = command
        .args(["subscribe", "streamer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = line.send(first);
    });
    let first = got.recv_timeout(PATIENCE).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    first
}

#[tokio::test]
async fn streamctl_drives_a_daemon_on_an_owner_only_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/streamd.sock");
    let listen = format!("unix:{}", socket.display());
    let mut daemon = Daemon::try_start(&[], &listen).unwrap();
    assert_eq!(daemon.listening, listen);
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert_eq!(mode(&socket), 0o600, "the socket's mode");
    assert_eq!(
        mode(socket.parent().unwrap()),
        0o700,
        "the directory made for it"
    );

    let (stdout, stderr) = text(&daemon.ctl(&["list"]));
    assert!(
        stdout.contains("streamer"),
        "list over the socket:\n{stdout}{stderr}"
    );
    let started = daemon.ctl(&["start", "streamer", "--interval", "200ms"]);
    assert!(started.status.success(), "{:?}", text(&started));
    let line = first_line_of_subscribe(daemon.streamctl());
    assert!(line.contains("streamer"), "subscribe printed {line:?}");

    assert!(daemon.terminate().await.success(), "{}", daemon.log());
    assert!(!socket.exists(), "the socket outlived a clean shutdown");
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_or_another_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("streamd.sock");
    let listen = format!("unix:{}", socket.display());
    // A socket whose listener is gone, as a daemon killed with -9 leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let daemon = Daemon::try_start(&[], &listen).unwrap();
    assert!(
        daemon.log().contains("removing the stale socket"),
        "{}",
        daemon.log()
    );
    assert!(daemon.ctl(&["list"]).status.success());

    let stderr = refused(&["--listen", &listen]);
    assert!(
        stderr.contains("another streamd is already listening on"),
        "{stderr}"
    );
    assert!(
        daemon.ctl(&["list"]).status.success(),
        "the first daemon lost its socket"
    );

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let stderr = refused(&["--listen", &format!("unix:{}", file.display())]);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn a_token_guards_a_unix_socket_too() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix:{}", dir.path().join("streamd.sock").display());
    let daemon = Daemon::try_start(&["--token-file", &certs.path("token")], &listen).unwrap();
    let list = |token: &str| {
        daemon
            .streamctl()
            .env("STREAMD_TOKEN", token)
            .arg("list")
            .output()
            .unwrap()
    };
    let output = list(TOKEN);
    assert!(output.status.success(), "{:?}", text(&output));
    let output = list("guess");
    let (_, stderr) = text(&output);
    assert!(
        !output.status.success() && stderr.contains("wrong"),
        "{stderr}"
    );
}

#[test]
fn a_socket_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let listen = format!("unix:{}", dir.path().join("streamd.sock").display());
    let stderr = refused(&["--listen", &listen]);
    assert!(
        stderr.contains("writable by users other than its owner")
            && stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
}

#[test]
fn other_hosts_are_not_served_without_tls_and_a_token() {
    let stderr = refused(&["--listen", "0.0.0.0:0"]);
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:0 without TLS and a token")
            && stderr.contains("add --tls-cert FILE --tls-key FILE and --token-file FILE"),
        "{stderr}"
    );
    let certs = Certs::new();
    let stderr = refused(&[
        "--listen",
        "[::]:0",
        "--tls-cert",
        &certs.path("server.pem"),
        "--tls-key",
        &certs.path("server.key"),
    ]);
    assert!(stderr.contains("add --token-file FILE"), "{stderr}");
    let stderr = refused(&["--token-file", &certs.path("empty-token")]);
    assert!(
        stderr.contains("--token-file") && stderr.contains("empty"),
        "{stderr}"
    );
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

#[test]
fn bad_tls_files_are_refused_before_listening() {
    let certs = Certs::new();
    let garbage = certs.dir.path().join("garbage.key");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let garbage = garbage.display().to_string();
    let stderr = refused(&[
        "--tls-cert",
        &certs.path("server.pem"),
        "--tls-key",
        &garbage,
    ]);
    assert!(
        stderr.contains(&garbage)
            && stderr.contains("private key")
            && !stderr.contains("listening"),
        "{stderr}"
    );
    let stderr = refused(&[
        "--tls-cert",
        &certs.path("server.key"),
        "--tls-key",
        &garbage,
    ]);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("no PEM CERTIFICATE"),
        "{stderr}"
    );
}

/// A CA, a server certificate for localhost signed by it, a client certificate, and
/// token files, generated afresh in a directory of their own.
pub struct Certs {
    dir: tempfile::TempDir,
}

pub const TOKEN: &str = "k7Qd2mZx9Lr4vTn8";

impl Certs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: a certificate whose issuer is named as itself reads as
        // self-signed to OpenSSL-based clients.
        ca_params.distinguished_name = name("streamd test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (file, name_of, names) in [
            (
                "server",
                "streamd",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ),
            ("client", "streamctl", vec!["streamctl".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name = name(name_of);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{file}.key")), key.serialize_pem()).unwrap();
        }
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("empty-token"), "\n").unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A daemon on loopback serving TLS and requiring the token, with `extra` flags.
    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        let files = [
            ("--tls-cert", "server.pem"),
            ("--tls-key", "server.key"),
            ("--token-file", "token"),
        ];
        let mut args: Vec<String> = files
            .iter()
            .flat_map(|(flag, file)| [flag.to_string(), self.path(file)])
            .collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        Daemon::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// An endpoint of a TLS daemon on loopback port `port`, trusting the CA.
    pub fn endpoint(&self, port: u16) -> Endpoint {
        let ca = std::fs::read(self.path("ca.pem")).unwrap();
        Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .unwrap()
    }

    /// streamctl aimed at `daemon` over TLS, trusting the CA, sending `token` if any.
    fn streamctl(&self, daemon: &Daemon, token: Option<&str>) -> Command {
        let mut command = streamctl_at(&format!("https://localhost:{}", daemon.addr.port()));
        command.env("STREAMD_TLS_CA", self.path("ca.pem"));
        match token {
            Some(token) => command.env("STREAMD_TOKEN", token),
            None => command.env_remove("STREAMD_TOKEN"),
        };
        command
    }
}

#[test]
fn streamctl_needs_the_token_of_a_tls_daemon() {
    let certs = Certs::new();
    let daemon = certs.daemon(&[]);

    let output = certs
        .streamctl(&daemon, Some(TOKEN))
        .arg("list")
        .output()
        .unwrap();
    assert_succeeded_with(&output, "streamer");
    let started = certs
        .streamctl(&daemon, Some(TOKEN))
        .args(["start", "streamer", "--interval", "200ms"])
        .output()
        .unwrap();
    assert!(started.status.success(), "{:?}", text(&started));
    let line = first_line_of_subscribe(certs.streamctl(&daemon, Some(TOKEN)));
    assert!(line.contains("streamer"), "subscribe printed {line:?}");
    // The token file works as the variable does.
    let output = certs
        .streamctl(&daemon, None)
        .args(["--token-file", &certs.path("token"), "list"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", text(&output));

    for (token, want) in [(None, "requires a bearer token"), (Some("guess"), "wrong")] {
        let output = certs
            .streamctl(&daemon, token)
            .arg("list")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(
            !output.status.success(),
            "list with {token:?} succeeded:\n{stdout}"
        );
        assert!(stderr.contains(want) && !stderr.contains(TOKEN), "{stderr}");
    }
    // Plaintext is not TLS: the daemon never answers it.
    let plain = streamctl_at(&daemon.addr.to_string())
        .env("STREAMD_TOKEN", TOKEN)
        .arg("list")
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{:?}", text(&plain));
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let certs = Certs::new();
    let daemon = certs.daemon(&["--tls-client-ca", &certs.path("ca.pem")]);

    let output = certs
        .streamctl(&daemon, Some(TOKEN))
        .arg("list")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(
        !output.status.success() && stderr.to_lowercase().contains("certificate"),
        "{stdout}{stderr}"
    );

    let output = certs
        .streamctl(&daemon, Some(TOKEN))
        .args(["--tls-cert", &certs.path("client.pem")])
        .args(["--tls-key", &certs.path("client.key"), "list"])
        .output()
        .unwrap();
    assert_succeeded_with(&output, "streamer");
}

#[tokio::test]
async fn grpcurl_reaches_a_tls_daemon_only_with_its_token() {
    let Some(grpcurl) = foreign::tool(GRPCURL) else {
        return;
    };
    let certs = Certs::new();
    let daemon = certs.daemon(&[]);
    let target = format!("localhost:{}", daemon.addr.port());
    let call = |auth: Option<String>, rest: &[&str]| {
        let mut command = tokio::process::Command::new(&grpcurl);
        command.args(["-cacert", &certs.path("ca.pem"), "-max-time", "10"]);
        if let Some(auth) = auth {
            command.args(["-H", &format!("authorization: Bearer {auth}")]);
        }
        command.arg(&target).args(rest);
        async move { foreign::run(&mut command, Duration::from_secs(20)).await }
    };

    let output = call(Some(TOKEN.into()), &["list"]).await;
    assert_succeeded_with(&output, "streamhandler.v1.StreamHandler");
    let method = "streamhandler.v1.StreamHandler/ListServices";
    let output = call(Some(TOKEN.into()), &[method]).await;
    assert_succeeded_with(&output, "streamer");

    // Reflection and health are behind the token as much as the API is.
    for rest in [&["list"][..], &[method], &["grpc.health.v1.Health/Check"]] {
        for auth in [None, Some("guess".to_string())] {
            let output = call(auth.clone(), rest).await;
            let (stdout, stderr) = text(&output);
            assert!(
                !output.status.success() && stderr.contains("Unauthenticated"),
                "grpcurl {rest:?} with {auth:?}:\n{stdout}{stderr}"
            );
        }
    }
}

#[tokio::test]
async fn the_python_client_reaches_a_tls_daemon_only_with_its_token() {
    let Some(python) = foreign::tool(PYTHON) else {
        return;
    };
    let certs = Certs::new();
    let daemon = certs.daemon(&[]);
    let stubs = foreign::python_stubs(&python).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let client = |token: &str| {
        let mut command = tokio::process::Command::new(&python);
        command
            .arg(&script)
            .arg(format!("localhost:{}", daemon.addr.port()))
            .arg("publish")
            .env("PYTHONPATH", stubs.path())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("STREAMD_TLS_CA", certs.path("ca.pem"))
            .env("STREAMD_TOKEN", token);
        async move { foreign::run(&mut command, Duration::from_secs(60)).await }
    };

    let output = client(TOKEN).await;
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "client.py with the token:\n{stdout}{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        summary["published_seq"], summary["received_seq"],
        "{summary}"
    );

    // An empty STREAMD_TOKEN sends none.
    for token in ["", "guess"] {
        let output = client(token).await;
        let (stdout, stderr) = text(&output);
        assert!(
            !output.status.success() && stderr.contains("UNAUTHENTICATED"),
            "client.py with the token {token:?}:\n{stdout}{stderr}"
        );
    }
}

const TINY_EVENTS: u64 = 200_000;
const TINY_TOPICS: u64 = 1_000;

#[tokio::test]
async fn a_fast_stream_of_tiny_events_to_many_topics_is_paced_not_cut_off() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["tiny/*"], false).await;
    // Each event waits a turn of the scheduler, so tonic sends it in a DATA frame of
    // its own, as a publisher of live readings would.
    let requests = futures::stream::iter(0..TINY_EVENTS).then(|i| async move {
        tokio::task::yield_now().await;
        pb::PublishRequest {
            topic: format!("tiny/{}", i % TINY_TOPICS),
            data: Some(Struct::default()),
        }
    });
    let reply = tokio::time::timeout(PATIENCE * 3, client.publish_stream(requests))
        .await
        .expect("the PublishStream finished in time")
        .unwrap_or_else(|status| panic!("PublishStream failed: {status}\n{}", daemon.log()))
        .into_inner();
    assert_eq!(reply.published, TINY_EVENTS);
    let mut received = 0;
    while received < TINY_EVENTS {
        let event = events.next().await;
        assert!(is_data(&event), "not a data event: {event:?}");
        received += 1;
    }
}

/// The token admits a client, not the daemon's authority: with it, over TLS, the
/// attacks of a client on the daemon's files, credentials and memory fail as they do
/// on loopback.
#[test]
fn a_client_with_the_token_still_cannot_take_the_daemons_authority() {
    let certs = Certs::new();
    let daemon = certs.daemon(&[]);
    let catcher = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    catcher.set_nonblocking(true).unwrap();
    let catcher_url = format!("url=http://{}/", catcher.local_addr().unwrap());
    let long_name = "n".repeat(20_000);
    let attacks: [(&[&str], &str); 5] = [
        (
            &["start", "reader", "--set", "dir=/proc/self"],
            "operator setting",
        ),
        (
            &["start", "reader", "--set", "follow=/etc/shadow"],
            "operator setting",
        ),
        (&["start", "aq", "--set", &catcher_url], "operator setting"),
        (
            &[
                "start",
                "leaderboard",
                "--set",
                "flush_interval=300000000000y",
            ],
            "flush_interval",
        ),
        (&["start", &long_name], "name"),
    ];
    for (args, want) in attacks {
        let output = certs
            .streamctl(&daemon, Some(TOKEN))
            .args(args)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        let shown = &args[..args.len().min(3)];
        assert!(!output.status.success(), "{shown:?} succeeded: {stdout}");
        assert!(
            stderr.contains(want) && stderr.len() < 2_000,
            "{shown:?}: {stderr}"
        );
    }
    assert!(
        catcher.accept().is_err(),
        "the daemon connected to the client's URL"
    );
    let list = certs
        .streamctl(&daemon, Some(TOKEN))
        .arg("list")
        .output()
        .unwrap();
    assert!(list.status.success(), "{:?}", text(&list));
}

/// The status codes of `count` ListServices calls made one after another on `channel`,
/// each with `token` if any.
async fn list_codes(channel: &Channel, count: usize, token: Option<&str>) -> Vec<tonic::Code> {
    let mut client = StreamHandlerClient::new(channel.clone());
    let mut codes = Vec::new();
    for _ in 0..count {
        let mut request = tonic::Request::new(pb::ListServicesRequest {});
        if let Some(token) = token {
            let bearer = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", bearer);
        }
        let code = match client.list_services(request).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        codes.push(code);
    }
    codes
}

async fn plain_channel(daemon: &Daemon) -> Channel {
    Endpoint::from_shared(format!("http://{}", daemon.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_connection_past_its_request_rate_is_refused_while_others_are_served() {
    let daemon = Daemon::start_with(&["--max-request-rate", "10"]);
    let (busy, other) = (plain_channel(&daemon).await, plain_channel(&daemon).await);
    let codes = list_codes(&busy, 60, None).await;
    let served = codes.iter().filter(|c| **c == tonic::Code::Ok).count();
    assert!(
        (10..60).contains(&served)
            && codes
                .iter()
                .all(|c| matches!(c, tonic::Code::Ok | tonic::Code::ResourceExhausted)),
        "{codes:?}"
    );
    let mut client = StreamHandlerClient::new(busy.clone());
    let refused = loop {
        match client.list_services(pb::ListServicesRequest {}).await {
            Err(status) => break status,
            Ok(_) => continue,
        }
    };
    assert!(
        refused.message().contains("--max-request-rate"),
        "{refused:?}"
    );
    assert_eq!(list_codes(&other, 5, None).await, vec![tonic::Code::Ok; 5]);
    // The budget refills: a second later the busy connection is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(list_codes(&busy, 5, None).await, vec![tonic::Code::Ok; 5]);
}

#[tokio::test]
async fn guessing_the_token_over_tls_is_paced_too() {
    let certs = Certs::new();
    let daemon = certs.daemon(&["--max-request-rate", "5"]);
    let channel = certs.endpoint(daemon.addr.port()).connect().await.unwrap();
    let guesses = list_codes(&channel, 20, Some("guess")).await;
    let refused_fast = guesses
        .iter()
        .filter(|c| **c == tonic::Code::ResourceExhausted)
        .count();
    assert!(
        refused_fast >= 10
            && guesses.iter().all(|c| matches!(
                c,
                tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted
            )),
        "{guesses:?}"
    );
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_until_one_goes() {
    let daemon = Daemon::start_with(&["--max-connections", "2"]);
    let first = plain_channel(&daemon).await;
    let second = plain_channel(&daemon).await;
    // Each has been served, so each holds its place.
    assert_eq!(list_codes(&first, 1, None).await, vec![tonic::Code::Ok]);
    assert_eq!(list_codes(&second, 1, None).await, vec![tonic::Code::Ok]);
    // A third is closed as it arrives, and streamctl says what may be the cause.
    let output = streamctl_at(&daemon.addr.to_string())
        .arg("list")
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(
        !output.status.success() && stderr.contains("closed the connection"),
        "{stderr}"
    );
    assert!(stderr.contains("--max-connections"), "{stderr}");
    assert!(
        daemon
            .log()
            .contains("2 are open, the most --max-connections allows"),
        "{}",
        daemon.log()
    );
    drop(first);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let fresh = Endpoint::from_shared(format!("http://{}", daemon.addr))
            .unwrap()
            .connect_lazy();
        if list_codes(&fresh, 1, None).await == [tonic::Code::Ok] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection admitted after one closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_at_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let daemon = Daemon::start_with(&["--handshake-timeout", "1s"]);
    let mut silent = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0; 256];
    // Until it is closed the daemon may send its own settings; the end is what counts.
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after {PATIENCE:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    // A client that speaks is served as ever.
    assert_eq!(
        list_codes(&plain_channel(&daemon).await, 1, None).await,
        vec![tonic::Code::Ok]
    );
}

#[test]
fn the_bench_runs_against_a_tls_daemon_with_its_token() {
    let certs = Certs::new();
    let daemon = certs.daemon(&[]);
    let bench = |workload: &[&str]| -> serde_json::Value {
        let output = certs
            .streamctl(&daemon, Some(TOKEN))
            .args(["bench", "--json"])
            .args(workload)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "bench {workload:?}: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let fan_out = bench(&[
        "--subs", "2", "--msgs", "500", "--rate", "5000", "--size", "64",
    ]);
    assert_eq!(fan_out["streamd"]["delivered"], 1000, "{fan_out:#}");
    assert_eq!(fan_out["streamd"]["ok"], true, "{fan_out:#}");
    let control = bench(&["--control", "2"]);
    assert_eq!(control["cycles"], 2, "{control:#}");
}

#[test]
fn a_port_in_use_names_its_holder_and_another_way_to_listen() {
    // Held by this test.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let log = Daemon::try_start(&[], &addr.to_string())
        .err()
        .expect("a port in use cannot be listened on");
    assert!(
        log.contains(&format!(
            "cannot listen on {addr}: address already in use; port {} is held by pid {} (",
            addr.port(),
            std::process::id()
        )),
        "{log}"
    );
    assert!(
        log.contains("choose another with --listen 127.0.0.1:PORT or --listen unix:/path"),
        "{log}"
    );

    // Held by another streamd, named as such.
    let daemon = Daemon::start();
    let log = Daemon::try_start(&[], &daemon.addr.to_string())
        .err()
        .expect("a port in use cannot be listened on");
    assert!(
        log.contains(&format!(
            "port {} is held by pid {} (streamd)",
            daemon.addr.port(),
            daemon.pid()
        )),
        "{log}"
    );
}

/// Started with the common soft limit of open files far below what its connection caps
/// need, streamd raises it to the hard limit.
#[test]
fn streamd_raises_its_open_file_limit_to_the_hard_one() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .args([
            "-c",
            r#"ulimit -Sn 256 && exec "$0" --listen 127.0.0.1:0 --data-dir "$1""#,
            STREAMD,
        ])
        .arg(data_dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("listening on") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(open_files[0], open_files[1], "{limits}");
    assert_ne!(open_files[0], "256", "{limits}");
}
