//! A hostile client against the real binaries: each test is an attack that once
//! worked, and what must hold against it. RELIABILITY.md gives each one's figures.

use std::{process::Stdio, time::Duration};

use prost_types::{Struct, Value, value::Kind};
use streamhandler::{pb, wire::MAX_DATA_DEPTH};
use tokio::io::AsyncBufReadExt;

use crate::harness::{Daemon, Events, PATIENCE};

/// `levels` objects nested, the data object the first, with `leaf` at the bottom.
fn nested(levels: u32, leaf: Kind) -> Struct {
    let bottom = Struct {
        fields: [("leaf".to_owned(), Value { kind: Some(leaf) })].into(),
    };
    (1..levels).fold(bottom, |inner, _| Struct {
        fields: [(
            "a".to_owned(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into(),
    })
}

fn publish(topic: &str, data: Struct) -> pb::PublishRequest {
    pb::PublishRequest {
        topic: topic.into(),
        data: Some(data),
    }
}

/// Data nested 49 levels in 566 bytes once reached every subscriber of its topic,
/// none of which could decode it (prost's and Python's limit is 100 messages deep),
/// and `--last` served it to every new one; a NaN made `subscribe --output json` exit.
/// Now the daemon refuses both, naming where, and subscribers see only what decodes.
#[tokio::test]
async fn data_no_client_could_decode_is_refused_and_never_reaches_a_subscriber() {
    let daemon = Daemon::start();
    let mut watcher = tokio::process::Command::from(daemon.streamctl())
        .args(["subscribe", "adv.*", "--last", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut printed = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let subscribed = tokio::time::timeout(PATIENCE, printed.next_line()).await;
    assert!(subscribed.unwrap().unwrap().unwrap().contains("subscribed"));

    let mut client = daemon.client().await;
    let poison = nested(49, Kind::NumberValue(1.0));
    assert!(prost::Message::encoded_len(&poison) < 600);
    let refused = client.publish(publish("adv.x", poison)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let at = format!("data{}: ", ".a".repeat(MAX_DATA_DEPTH as usize));
    assert!(
        refused.message().starts_with(&at) && refused.message().contains("deeper than 20"),
        "{refused:?}"
    );
    for odd in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let refused = client
            .publish(publish("adv.x", nested(2, Kind::NumberValue(odd))))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with("data.a.leaf: "),
            "{refused:?}"
        );
    }
    // In a stream, the refused event is named by its place.
    let stream = futures::stream::iter([
        publish("adv.y", nested(1, Kind::BoolValue(true))),
        publish("adv.y", nested(MAX_DATA_DEPTH + 1, Kind::BoolValue(true))),
    ]);
    let refused = client.publish_stream(stream).await.unwrap_err();
    assert!(
        refused.message().starts_with("events[1].data.a"),
        "{refused:?}"
    );

    // At the limit, every subscriber gets it, and a new one with --last too.
    let deepest = nested(MAX_DATA_DEPTH, Kind::NumberValue(1.5));
    client
        .publish(publish("adv.x", deepest.clone()))
        .await
        .unwrap();
    let mut late = Events::open(&mut client, &["adv.*"], true).await;
    let latest = late.next_where(|e| e.topic == "adv.x").await;
    assert_eq!(latest.payload, Some(pb::event::Payload::Data(deepest)));
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("adv.x")) {
        let line = tokio::time::timeout(PATIENCE, printed.next_line()).await;
        lines.push(line.unwrap().unwrap().expect("streamctl went on"));
    }
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("adv.y") || l.contains("true")),
        "{lines:?}"
    );
    let _ = watcher.start_kill();
    let said = watcher.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&said.stderr);
    assert!(
        !said.contains("passed over") && !said.contains("lost"),
        "{said}"
    );
}

/// streamctl's `publish` refuses data past the limit itself, saying so.
#[test]
fn streamctl_publish_says_data_nests_too_deep() {
    let daemon = Daemon::start();
    // One object more than the limit.
    let deep = (0..=MAX_DATA_DEPTH).fold("1".to_owned(), |inner, _| format!("{{\"a\":{inner}}}"));
    let output = daemon.ctl(&["publish", "adv.x", &deep]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nest deeper than 20 levels"), "{stderr}");
}

/// The p99 of `samples`, in place.
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() * 99 / 100]
}

/// Sixty-four backtracking globs over 9,000 topic names, three Subscribes a second at
/// some 25 KB/s, once kept a thread at 95% and a probe subscriber's p99 at 318 ms (428
/// ms on the quiet lane). The patterns are now compiled into one automaton of bounded
/// size (or refused as too intricate), and compiling and matching run off the threads
/// that carry events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtracking_globs_over_thousands_of_topics_leave_a_probe_subscriber_alone() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    // Names as long as names go, of the letter the patterns are made of.
    let events = (0..9000).map(|i| {
        publish(
            &format!("{}{i:08}", "a".repeat(120)),
            nested(1, Kind::NullValue(0)),
        )
    });
    let published = client
        .publish_stream(futures::stream::iter(events))
        .await
        .unwrap();
    assert_eq!(published.into_inner().published, 9000);
    // Backtracking globs: sixty-four alike, which compile into a small automaton, and
    // sixty-four all different, which are too intricate to.
    let glob = |stars: usize| format!("{}*b", "*a*?".repeat(stars));
    let alike: Vec<String> = (0..64).map(|_| glob(20)).collect();
    let different: Vec<String> = (0..64).map(|i| glob(20 + i % 10)).collect();

    let mut attacker = daemon.client().await;
    let attack = tokio::spawn(async move {
        let mut answered = Vec::new();
        let mut every = tokio::time::interval(Duration::from_millis(333));
        for round in 0..24 {
            every.tick().await;
            let globs = if round % 2 == 0 { &alike } else { &different };
            let request = pb::SubscribeRequest {
                topics: globs.clone(),
                ..Default::default()
            };
            let answer = tokio::time::timeout(PATIENCE, attacker.subscribe(request)).await;
            answered.push(
                answer
                    .expect("a Subscribe was answered")
                    .map(drop)
                    .map_err(|e| e.code()),
            );
        }
        answered
    });

    // The probe: a connection of its own, 200 events a second, each carrying when it
    // was sent.
    let epoch = std::time::Instant::now();
    let mut probe = daemon.client().await;
    let mut events = Events::open(&mut probe, &["probe"], false).await;
    let publisher = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(5));
        for _ in 0..1600 {
            every.tick().await;
            let sent = epoch.elapsed().as_micros() as f64;
            let data = nested(1, Kind::NumberValue(sent));
            probe.publish(publish("probe", data)).await.unwrap();
        }
    });
    let mut waits = Vec::new();
    while waits.len() < 1600 {
        let event = events.next().await;
        let Some(pb::event::Payload::Data(data)) = event.payload else {
            continue;
        };
        let Some(Kind::NumberValue(sent)) = data.fields["leaf"].kind else {
            panic!("{data:?}");
        };
        waits.push(
            epoch
                .elapsed()
                .saturating_sub(Duration::from_micros(sent as u64)),
        );
    }
    publisher.await.unwrap();
    let answered = attack.await.unwrap();
    let p99 = p99(&mut waits);
    assert!(
        p99 < Duration::from_millis(10),
        "probe p99 {p99:?} beside {answered:?}"
    );
    // Both kinds of pattern were tried: the alike compiled, the different refused.
    assert!(answered.contains(&Ok(())), "{answered:?}");
    assert!(
        answered.contains(&Err(tonic::Code::InvalidArgument)),
        "{answered:?}"
    );
}

/// Connections from `from` (another loopback address than the real clients') to
/// `to`, each having sent one byte of a TLS hello and gone silent. Those the daemon
/// closes at once are kept all the same, as an attacker would.
async fn silent_connections(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        let Ok(mut stream) = socket.connect(to).await else {
            continue;
        };
        let _ = stream.write_all(&[0x16]).await;
        silent.push(stream);
    }
    silent
}

/// Raises this process's open-file limit as far as allowed: an attacker's thousand
/// connections are a thousand descriptors on its side too.
fn allow_many_sockets() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// How long a fresh TLS connection takes to answer ListServices with the token.
async fn timed_list(certs: &crate::transport::Certs, port: u16) -> Duration {
    let began = std::time::Instant::now();
    let channel = certs.endpoint(port).connect().await.unwrap();
    let mut request = tonic::Request::new(pb::ListServicesRequest {});
    let bearer = format!("Bearer {}", crate::transport::TOKEN);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    pb::stream_handler_client::StreamHandlerClient::new(channel)
        .list_services(request)
        .await
        .unwrap();
    began.elapsed()
}

/// 128 connections that sent one byte and went silent once held every new TLS
/// client at the handshake deadline (`streamctl list` 0.01 s -> 9.70 s), and renewing
/// 130 of them every 9 s kept every gRPC and HTTPS request at 8-8.5 s, with no token.
/// Now every handshake runs on its own with its own deadline, and one address may
/// hold only 64 connections in their handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connections_delay_no_one_elses_handshake_alone() {
    allow_many_sockets();
    let certs = crate::transport::Certs::new();
    let daemon = certs.daemon(&["--http", "127.0.0.1:0", "--handshake-timeout", "5s"]);
    let dashboard = daemon.dashboard().replace("127.0.0.1", "localhost");
    let (grpc, http) = (daemon.addr, dashboard_addr(&dashboard));
    // Twenty addresses, each under its share: a thousand handshakes under way at once.
    let attackers: Vec<std::net::IpAddr> = (2..22)
        .map(|i| format!("127.0.0.{i}").parse().unwrap())
        .collect();
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(certs.path("ca.pem")).unwrap()).unwrap(),
        )
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let measure = || async {
        let list = timed_list(&certs, grpc.port()).await;
        let began = std::time::Instant::now();
        let page = https.get(&dashboard).send().await.unwrap();
        assert!(page.status().is_success(), "{page:?}");
        (list, began.elapsed())
    };
    let (mut lists, mut pages) = (Vec::new(), Vec::new());

    let mut held = Vec::new();
    for &from in &attackers {
        held.extend(silent_connections(from, grpc, 50).await);
        held.extend(silent_connections(from, http, 50).await);
    }
    // One address past its share: the rest of its connections are closed at once.
    held.extend(silent_connections(attackers[0], grpc, 100).await);
    for _ in 0..15 {
        let (list, page) = measure().await;
        lists.push(list);
        pages.push(page);
    }
    drop(held);

    // The renewing kind: 130 more each second, each held until the daemon drops it.
    let renewing = tokio::spawn(async move {
        let mut waves = Vec::new();
        for wave in 0..6 {
            let from = attackers[wave % attackers.len()];
            let mut connections = silent_connections(from, grpc, 130).await;
            connections.extend(silent_connections(from, http, 130).await);
            waves.push(connections);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    while !renewing.is_finished() {
        let (list, page) = measure().await;
        lists.push(list);
        pages.push(page);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    renewing.await.unwrap();
    let (list, page) = (p99(&mut lists), p99(&mut pages));
    assert!(
        list < Duration::from_millis(100),
        "ListServices p99 {list:?} of {}",
        lists.len()
    );
    assert!(
        page < Duration::from_millis(100),
        "HTTPS page p99 {page:?} of {}",
        pages.len()
    );
    assert_closed_past_its_share(&daemon, "127.0.0.2");
}

/// Checks that the daemon closed connections of `peer` past its share of connections
/// in their handshake, and said so.
fn assert_closed_past_its_share(daemon: &Daemon, peer: &str) {
    let said = format!("from {peer}: 64 of its connections are in their handshake");
    assert!(daemon.log().contains(&said), "{}", daemon.log());
}

/// The address a dashboard URL names.
fn dashboard_addr(url: &str) -> std::net::SocketAddr {
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// An HTTPS client of a test daemon's dashboard, trusting the test's CA.
fn https_client(certs: &crate::transport::Certs) -> reqwest::Client {
    let ca = std::fs::read(certs.path("ca.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// `/images/SERVICE/FILE` once answered an unauthenticated caller of a daemon with a
/// token, 200 and the image, and its 404s said which services exist. Now every route
/// but the page's own files needs the token, and without it every path, real or not,
/// gets the same answer.
#[tokio::test]
async fn without_the_token_no_route_answers_and_no_name_shows() {
    let certs = crate::transport::Certs::new();
    let daemon = certs.daemon(&["--http", "127.0.0.1:0"]);
    let url = daemon.dashboard().replace("127.0.0.1", "localhost");
    let https = https_client(&certs);
    let get = |path: &str, token: Option<&str>| {
        let mut request = https.get(format!("{url}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let mut refusals = std::collections::BTreeSet::new();
    for path in [
        "images/images/bee.png",
        "images/images/missing.png",
        "images/nobody/bee.png",
        "metrics",
        "no/such/route",
    ] {
        for token in [None, Some("a-guess")] {
            let response = get(path, token).await.unwrap();
            assert_eq!(
                response.status(),
                reqwest::StatusCode::UNAUTHORIZED,
                "/{path}"
            );
            refusals.insert((token.is_some(), response.text().await.unwrap()));
        }
    }
    // One answer without a token and one with a wrong one, whatever the path.
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    for path in ["", "app.js", "app.css"] {
        assert!(
            get(path, None).await.unwrap().status().is_success(),
            "/{path}"
        );
    }
    let token = Some(crate::transport::TOKEN);
    let bee = get("images/images/bee.png", token).await.unwrap();
    assert_eq!(bee.status(), reqwest::StatusCode::OK);
    assert_eq!(bee.headers()["content-type"], "image/png");
    let nobody = get("images/nobody/bee.png", token).await.unwrap();
    assert_eq!(nobody.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(get("metrics", token).await.unwrap().status().is_success());
}

/// Wrong tokens for /metrics were answered as fast as they came (15,000 guesses in
/// 0.87 s on one connection). Now every request of the listener spends its
/// connection's request budget, as gRPC-Web's always did.
#[tokio::test]
async fn guessing_the_token_on_any_route_is_paced() {
    let certs = crate::transport::Certs::new();
    let daemon = certs.daemon(&["--http", "127.0.0.1:0", "--max-request-rate", "5"]);
    let url = daemon.dashboard().replace("127.0.0.1", "localhost");
    let https = https_client(&certs);
    for path in ["metrics", "images/images/bee.png", "no/such/route"] {
        let mut codes = Vec::new();
        for _ in 0..20 {
            let guess = https.get(format!("{url}{path}")).bearer_auth("guess");
            codes.push(guess.send().await.unwrap().status().as_u16());
        }
        let paced = codes.iter().filter(|&&code| code == 429).count();
        assert!(
            paced >= 10 && codes.iter().all(|c| [401, 429].contains(c)),
            "/{path}: {codes:?}"
        );
        // The budget refills.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
}

/// A gRPC-Web request whose body came at a byte a second was still open after 25 s.
/// Now an API request's body must arrive whole within --handshake-timeout.
#[tokio::test]
async fn a_trickled_request_body_is_cut_off_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start_with(&["--http", "127.0.0.1:0", "--handshake-timeout", "2s"]);
    let addr = dashboard_addr(&daemon.dashboard());
    let (mut reader, mut writer) = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap()
        .into_split();
    let head = format!(
        "POST /streamhandler.v1.StreamHandler/ListServices HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/grpc-web+proto\r\ncontent-length: 30\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let began = std::time::Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            if writer.write_all(&[0]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    while !String::from_utf8_lossy(&answer).contains("grpc-status") {
        let read = tokio::time::timeout(PATIENCE, reader.read(&mut chunk)).await;
        match read.expect("an answer before the trickle is over") {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let waited = began.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("grpc-status: 4"), "{answer}");
    assert!(answer.contains("--handshake-timeout"), "{answer}");
    assert!(waited < Duration::from_secs(6), "answered after {waited:?}");
}

/// Garbage for a body, over gRPC-Web or gRPC, was answered INTERNAL, as if the daemon
/// had failed. It is the client's: INVALID_ARGUMENT.
#[tokio::test]
async fn a_body_that_does_not_decode_is_an_invalid_argument() {
    let daemon = Daemon::start_with(&["--http", "127.0.0.1:0"]);
    let url = daemon.dashboard();
    let web = reqwest::Client::new();
    for (content_type, body) in [
        (
            "application/grpc-web+proto",
            &b"\0\0\0\0\x05\xff\xff\xff\xff\xff"[..],
        ),
        ("application/grpc-web-text", &b"not base64!!"[..]),
    ] {
        let answer = web
            .post(format!("{url}streamhandler.v1.StreamHandler/Publish"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.headers()["grpc-status"],
            "3",
            "{content_type}: {answer:?}"
        );
    }
    // The same over the gRPC listener, from a client that sends what it likes.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", daemon.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/streamhandler.v1.StreamHandler/Publish");
    let refused = grpc
        .unary::<_, pb::PublishResponse, _>(
            tonic::Request::new(bytes::Bytes::from_static(b"\xff\xff\xff")),
            path,
            RawRequests,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}

/// A codec that sends requests as the bytes given, and decodes replies as prost does.
struct RawRequests;

impl tonic::codec::Codec for RawRequests {
    type Encode = bytes::Bytes;
    type Decode = pb::PublishResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::PublishResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        Default::default()
    }
}

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

/// A socket directory that `nobody` owned (mode 755) was accepted: `nobody` moved the
/// socket aside, bound its own, and root's streamctl spoke to it. Now the directory
/// and those above it must be root's or the daemon user's, and private or sticky.
#[test]
fn a_socket_directory_another_user_owns_is_refused() {
    let Some((uid, gid)) = crate::harness::unprivileged_user() else {
        eprintln!("skipped: only root can give a directory to another user");
        return;
    };
    let top = tempfile::tempdir().unwrap();
    let theirs = top.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(uid), Some(gid)).unwrap();
    let socket = format!("unix:{}", theirs.join("streamd.sock").display());
    let stderr = crate::transport::refused(&["--listen", &socket]);
    assert!(stderr.contains("belongs to nobody"), "{stderr}");
    // Sticky and shared, as /tmp is, it is allowed: no one may move another's file.
    let shared = top.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let socket = format!("unix:{}", shared.join("streamd.sock").display());
    let daemon = Daemon::try_start(&[], &socket).unwrap();
    assert!(daemon.ctl(&["list"]).status.success());
}

/// A reader whose `dir` was a cgroup2 mount outside /sys published the kernel's
/// `cpu.stat`. Every kernel pseudo-filesystem is now refused by its magic number,
/// wherever it is mounted. Mounts one where allowed (root), else says it could not run.
#[tokio::test]
async fn a_reader_on_a_cgroup2_mount_is_refused() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = nix::mount::mount(
        Some("none"),
        mount.path(),
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    if let Err(e) = mounted {
        eprintln!("skipped: cannot mount cgroup2 here ({e})");
        return;
    }
    let unmount = unmount_on_drop(mount.path().to_owned());
    let services = format!(
        "[services.cgroup]\nkind = \"reader\"\ninterval = \"50ms\"\nparams = {{ dir = {:?} }}\n",
        mount.path().display().to_string()
    );
    let (daemon, _config) = crate::harness::with_config(&services);
    let mut client = daemon.client().await;
    let mut events = Events::open(&mut client, &["cgroup"], false).await;
    client
        .start_service(crate::harness::start_request("cgroup", 50, &[]))
        .await
        .unwrap();
    let refused = events
        .next_where(|e| {
            matches!(&e.payload, Some(pb::event::Payload::Lifecycle(l)) if l.kind() == pb::lifecycle::Kind::Error)
                || matches!(&e.payload, Some(pb::event::Payload::Text(_)))
        })
        .await;
    let Some(pb::event::Payload::Lifecycle(error)) = refused.payload else {
        panic!("published from a cgroup2 mount: {refused:?}");
    };
    assert!(
        error.message.contains("kernel pseudo-filesystem"),
        "{}",
        error.message
    );
    drop(unmount);
}

/// Unmounts a test's mount when dropped, however the test ends.
fn unmount_on_drop(path: std::path::PathBuf) -> impl Drop {
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount(&self.0);
        }
    }
    Unmount(path)
}

/// A second daemon pointed by --database-url at another's `streamd.db` started and
/// wrote beside it. The database file itself is now locked, not only the data
/// directory.
#[test]
fn a_second_daemon_on_another_daemons_database_is_refused() {
    let first = Daemon::start();
    let database = first.data_dir.path().join("streamd.db");
    let url = format!("sqlite://{}", database.display());
    let stderr = crate::transport::refused(&["--database-url", &url]);
    assert!(
        stderr.contains("in use by another streamd") && stderr.contains("streamd.db"),
        "{stderr}"
    );
    assert!(first.ctl(&["list"]).status.success());
}

/// A client could start services at `interval=1ns` (five of them: 51% CPU). A client's
/// interval is now at least 10 ms, unless the operator lowers that.
#[tokio::test]
async fn a_client_may_not_ask_for_an_interval_shorter_than_the_operator_allows() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut nanosecond = crate::harness::start_request("streamer", 1, &[]);
    nanosecond.interval = Some(prost_types::Duration {
        seconds: 0,
        nanos: 1,
    });
    let refused_ns = client.start_service(nanosecond.clone()).await.unwrap_err();
    assert_eq!(refused_ns.code(), tonic::Code::InvalidArgument);
    assert!(
        refused_ns
            .message()
            .starts_with("interval: 1ns is shorter than the 10ms"),
        "{refused_ns:?}"
    );
    let allowed = client
        .start_service(crate::harness::start_request("streamer", 10, &[]))
        .await
        .unwrap();
    assert!(!allowed.into_inner().already_running);
    // The operator may allow less.
    let (lenient, _config) =
        crate::harness::with_config("[supervisor]\nmin_client_interval = \"1ns\"\n");
    let mut client = lenient.client().await;
    nanosecond.interval = Some(prost_types::Duration {
        seconds: 0,
        nanos: 1_000_000,
    });
    assert!(client.start_service(nanosecond).await.is_ok());
}

/// Twelve subscribers that stopped reading their sockets once left the daemon at its
/// 3.08 GB peak after they had gone. Now, within 30 s of their leaving, the daemon's
/// memory is back within 64 MiB of where it was before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_held_for_stalled_subscribers_comes_back_when_they_go() {
    const STALLED: usize = 12;
    let daemon = Daemon::start_with(&["--subscriber-buffer", "48MiB"]);
    let mut publisher = daemon.client().await;
    // Each on a topic of its own, so that each holds events of its own.
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let mut client = daemon.client().await;
        let request = pb::SubscribeRequest {
            topics: vec![format!("stall.{i}")],
            ..Default::default()
        };
        // Opened, and never read.
        stalled.push((client.subscribe(request).await.unwrap(), client));
    }
    let before = daemon.rss_kib();
    for i in 0..STALLED {
        crate::bus::flood(&mut publisher, &format!("stall.{i}"), 45_000, 1000).await;
    }
    let peak = daemon.rss_kib();
    assert!(
        peak > before + 300 * 1024,
        "the buffers filled: {before} -> {peak} KiB"
    );
    drop(stalled);
    let left = std::time::Instant::now();
    let mut after = daemon.rss_kib();
    while after > before + 64 * 1024 && left.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = daemon.rss_kib();
    }
    assert!(
        after <= before + 64 * 1024,
        "{before} KiB before, {peak} KiB at the peak, {after} KiB 30 s after they left"
    );
}

/// Finished handshakes that never send the token once held their connections for as
/// long as they liked: one address could fill the daemon's cap. Where the daemon has a
/// token, a connection's handshake now lasts until a request carries it, so a stranger
/// holds at most 64 connections from one address, each for --handshake-timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_who_finish_the_handshake_but_send_no_token_are_let_go_alone() {
    let certs = crate::transport::Certs::new();
    let daemon = certs.daemon(&["--handshake-timeout", "2s", "--max-connections", "100"]);
    let endpoint = certs
        .endpoint(daemon.addr.port())
        .local_address(Some("127.0.0.2".parse().unwrap()));
    let stranger = || endpoint.connect();
    // TLS and HTTP/2 through, then nothing: more than the cap, from one address.
    let mut strangers = Vec::new();
    for _ in 0..150 {
        if let Ok(channel) = stranger().await {
            strangers.push(channel);
        }
    }
    assert_eq!(
        strangers.len(),
        64,
        "one address's share of connections in their handshake"
    );
    // A client with the token is served meanwhile, as fast as ever.
    let mut lists = Vec::new();
    for _ in 0..20 {
        lists.push(timed_list(&certs, daemon.addr.port()).await);
    }
    let list = p99(&mut lists);
    assert!(
        list < Duration::from_millis(100),
        "ListServices p99 {list:?}"
    );
    // Past the deadline the daemon has closed the strangers' connections (the test
    // still holds its ends): the address may open another 64.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut again = 0;
    for _ in 0..64 {
        again += usize::from(stranger().await.is_ok());
    }
    assert_eq!(again, 64);
    drop(strangers);
    assert_closed_past_its_share(&daemon, "127.0.0.2");
}
