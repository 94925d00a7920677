//! Who may use the control plane: TLS (optionally requiring a client certificate) and a
//! bearer token checked on every RPC of every service, read from files once at start.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

use crate::{
    connection::{Admission, HandshakeEnd, Limits},
    listen::ListenAddr,
};

/// What a client must bring: nothing (loopback by default, a Unix socket), or TLS
/// and a bearer token; and what its connections may spend.
#[derive(Clone, Default)]
pub struct Access {
    pub tls: Option<Tls>,
    pub token: Option<Token>,
    pub limits: Limits,
}

/// The daemon's TLS: its certificate, and the CA client certificates must be signed
/// by, if any. Each listener adds the protocols it speaks (ALPN).
#[derive(Clone)]
pub struct Tls(Arc<rustls::ServerConfig>);

impl Tls {
    /// An acceptor offering `protocols` (ALPN ids), most preferred first.
    pub fn acceptor(&self, protocols: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        let mut config = (*self.0).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// The files `--tls-cert`, `--tls-key` and `--tls-client-ca` name.
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

impl Access {
    /// Where a new connection's handshake ends: at its first request with the token
    /// where there is one, so that a client without it holds a connection no longer
    /// than the handshake deadline; else once TLS, or its first bytes, are through.
    pub fn handshake_end(&self) -> HandshakeEnd {
        match (&self.token, &self.tls) {
            (Some(_), _) => HandshakeEnd::Token,
            (None, Some(_)) => HandshakeEnd::Tls,
            (None, None) => HandshakeEnd::Greeting,
        }
    }

    /// Refuses to serve an address that other hosts can reach without both TLS and a
    /// token, and says exactly what to add.
    pub fn check(&self, listen: &ListenAddr) -> Result<(), String> {
        if let ListenAddr::Unix(_) = listen
            && self.tls.is_some()
        {
            return Err(
                "--tls-cert: a Unix socket is guarded by its file's permissions; TLS is \
                 for TCP addresses"
                    .into(),
            );
        }
        if !listen.reaches_other_hosts() {
            return Ok(());
        }
        let missing: Vec<&str> = [
            (self.tls.is_none(), "--tls-cert FILE --tls-key FILE"),
            (self.token.is_none(), "--token-file FILE"),
        ]
        .into_iter()
        .filter_map(|(missing, flags)| missing.then_some(flags))
        .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "refusing to serve {listen} without TLS and a token: any host that reaches it \
             would control this daemon; add {}, or listen on a loopback address or a \
             unix:/path socket",
            missing.join(" and ")
        ))
    }
}

/// Makes ring rustls's process-wide provider, for every TLS connection the daemon
/// makes or takes (its listeners, the cluster's NATS): rustls cannot pick one by
/// itself when dependencies build more than one. One already installed is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads the server's certificate chain and key, and the CA that client certificates
/// must be signed by, naming the file at fault.
pub fn load_tls(files: &TlsFiles) -> Result<Tls, String> {
    install_crypto_provider();
    let cert = read_pem(files.cert, "--tls-cert", "CERTIFICATE")?;
    let key = read_pem(files.key, "--tls-key", "PRIVATE KEY")?;
    let client_ca = files
        .client_ca
        .map(|ca| read_pem(ca, "--tls-client-ca", "CERTIFICATE"))
        .transpose()?;
    server_config(&cert, &key, client_ca.as_deref())
        .map(|config| Tls(Arc::new(config)))
        .map_err(|cause| {
            let files = [Some(files.cert), Some(files.key), files.client_ca];
            let files: Vec<String> = files
                .iter()
                .flatten()
                .map(|f| f.display().to_string())
                .collect();
            format!("TLS files {}: {cause}", files.join(", "))
        })
}

fn server_config(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("client CA: {e}"))?;
                roots.add(cert).map_err(|e| format!("client CA: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and private key: {e}"))
}

/// Reads a PEM file, checking it holds a block whose label ends with `label`.
fn read_pem(path: &Path, flag: &str, label: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains(&format!("{label}-----")) {
        return Err(format!("{flag} {}: no PEM {label} in it", path.display()));
    }
    Ok(pem)
}

/// The bearer token clients must send, as `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// Reads the token from `path`, once: surrounding whitespace is dropped, and an
    /// empty token, or one that cannot travel in a header, is refused.
    pub fn read(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("--token-file {shown}: {e}"))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("--token-file {shown}: the file is empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "--token-file {shown}: the token must be printable ASCII without spaces"
            ));
        }
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!("--token-file {shown} can be read by other users; chmod 600 it");
        }
        Ok(Self(token.as_bytes().into()))
    }

    /// Whether an `authorization` header's value carries this token; if not, why.
    pub fn admits(&self, authorization: Option<&[u8]>) -> Result<(), &'static str> {
        let sent = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .ok_or("this daemon requires a bearer token: send `authorization: Bearer <token>`")?;
        if bool::from(sent.ct_eq(&self.0)) {
            Ok(())
        } else {
            Err("the bearer token is wrong")
        }
    }
}

/// Checks every request's bearer token: installed as a layer in front of every
/// service, so that none can be reached without it.
#[derive(Clone)]
pub struct RequireToken(pub Option<Token>);

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let sent = request.metadata().get("authorization");
        admit(
            token,
            sent.map(|value| value.as_bytes()),
            request.extensions(),
        )
        .map_err(Status::unauthenticated)?;
        Ok(request)
    }
}

/// Checks a request's `authorization` against the token; once one carries it, its
/// connection's handshake is over.
pub fn admit(
    token: &Token,
    authorization: Option<&[u8]>,
    extensions: &http::Extensions,
) -> Result<(), &'static str> {
    token.admits(authorization)?;
    if let Some(admission) = Admission::of(extensions) {
        admission.handshake_over(HandshakeEnd::Token);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn token(text: &str) -> Token {
        Token(text.as_bytes().into())
    }

    fn check(required: Option<&str>, sent: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(sent) = sent {
            request
                .metadata_mut()
                .insert("authorization", MetadataValue::try_from(sent).unwrap());
        }
        RequireToken(required.map(token))
            .call(request)
            .map(|_| ())
            .map_err(|status| status.code())
    }

    #[test]
    fn tokens_are_checked_only_when_required() {
        use tonic::Code::Unauthenticated;
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(Some("s3cret"), Some("Bearer s3cret")), Ok(()));
        assert_eq!(check(Some("s3cret"), None), Err(Unauthenticated));
        assert_eq!(
            check(Some("s3cret"), Some("Bearer s3cre")),
            Err(Unauthenticated)
        );
        assert_eq!(check(Some("s3cret"), Some("s3cret")), Err(Unauthenticated));
        assert_eq!(
            check(Some("s3cret"), Some("Basic s3cret")),
            Err(Unauthenticated)
        );
    }

    #[test]
    fn token_files_are_trimmed_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc123\n").unwrap();
        assert_eq!(&*Token::read(&path).unwrap().0, b"abc123");
        std::fs::write(&path, " \n").unwrap();
        let err = Token::read(&path).err().unwrap();
        assert!(
            err.contains("empty") && err.contains("--token-file"),
            "{err}"
        );
        std::fs::write(&path, "two words").unwrap();
        assert!(Token::read(&path).is_err());
    }

    #[test]
    fn other_hosts_need_tls_and_a_token() {
        let open: ListenAddr = "0.0.0.0:1".parse().unwrap();
        let err = Access::default().check(&open).unwrap_err();
        assert!(
            err.contains("--tls-cert FILE --tls-key FILE and --token-file FILE"),
            "{err}"
        );
        let tokened = Access {
            token: Some(token("t")),
            ..Access::default()
        };
        let err = tokened.check(&open).unwrap_err();
        assert!(
            err.contains("add --tls-cert") && !err.contains("--token-file"),
            "{err}"
        );
        assert!(
            Access::default()
                .check(&"127.0.0.1:1".parse().unwrap())
                .is_ok()
        );
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let files = TlsFiles {
            cert: &cert,
            key: &key,
            client_ca: None,
        };
        let both = Access {
            tls: Some(load_tls(&files).unwrap()),
            token: Some(token("t")),
            ..Access::default()
        };
        assert!(both.check(&open).is_ok());
    }
}
