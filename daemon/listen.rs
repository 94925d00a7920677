//! Where the control plane listens: a TCP address, loopback by default, or a Unix
//! socket that only its owner may reach. Binding a socket checks its directory and
//! removes a stale socket file safely; the file goes again at shutdown.

use std::{
    fmt,
    io::ErrorKind,
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    str::FromStr,
};

use tokio::net::{TcpListener, UnixListener};

/// What `--listen` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/streamd/streamd.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse().map(Self::Tcp).map_err(|_| {
            format!("`{s}` is neither host:port (an IP address and a port) nor unix:/path")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// Whether clients on other hosts could reach this address: any TCP address but a
    /// loopback one. A Unix socket is guarded by its file's permissions.
    pub fn reaches_other_hosts(&self) -> bool {
        matches!(self, Self::Tcp(addr) if !addr.ip().is_loopback())
    }
}

/// A bound listener, ready to serve.
pub enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        /// Removes the socket file when the daemon is done with it.
        file: SocketFile,
    },
}

impl Listener {
    /// Binds `addr`. A Unix socket is created mode 0600 in a directory that only root
    /// and this user can change (created 0700 if missing; see [`check_socket_dir`]); a
    /// socket file left by a daemon that is gone is replaced, anything else at that
    /// path is refused and left alone.
    pub async fn bind(addr: &ListenAddr) -> Result<Self, String> {
        match addr {
            ListenAddr::Tcp(socket) => {
                TcpListener::bind(socket)
                    .await
                    .map(Self::Tcp)
                    .map_err(|e| match e.kind() {
                        ErrorKind::AddrInUse => in_use(*socket),
                        _ => format!("cannot listen on {socket}: {e}"),
                    })
            }
            ListenAddr::Unix(path) => bind_unix(path),
        }
    }

    /// Where the listener really is (with the port the system chose, for port 0).
    pub fn local_addr(&self) -> Result<ListenAddr, std::io::Error> {
        match self {
            Self::Tcp(listener) => listener.local_addr().map(ListenAddr::Tcp),
            Self::Unix { file, .. } => Ok(ListenAddr::Unix(file.path.clone())),
        }
    }
}

/// Why `socket` is taken, by whom if /proc tells, and where else to listen.
fn in_use(socket: SocketAddr) -> String {
    let holder = pid_listening_on(socket)
        .map(|pid| {
            let name = procfs::process::Process::new(pid as i32)
                .and_then(|p| p.stat())
                .map(|stat| format!(" ({})", stat.comm))
                .unwrap_or_default();
            format!("; port {} is held by pid {pid}{name}", socket.port())
        })
        .unwrap_or_default();
    let another = match socket {
        SocketAddr::V4(v4) => format!("{}:PORT", v4.ip()),
        SocketAddr::V6(v6) => format!("[{}]:PORT", v6.ip()),
    };
    format!(
        "cannot listen on {socket}: address already in use{holder}; choose another with \
         --listen {another} or --listen unix:/path"
    )
}

/// The process listening on `addr`, if `addr` is on this machine and /proc shows it:
/// its socket's inode in /proc/net/tcp{,6} matched against every process's open files
/// that this user may read.
pub fn pid_listening_on(addr: SocketAddr) -> Option<u32> {
    if !(addr.ip().is_loopback() || addr.ip().is_unspecified()) {
        return None;
    }
    // An unspecified address on either side takes the port on every address.
    let listens = |local: SocketAddr| {
        local.port() == addr.port()
            && (local.ip() == addr.ip()
                || local.ip().is_unspecified()
                || addr.ip().is_unspecified())
    };
    let inodes: Vec<u64> = procfs::net::tcp()
        .into_iter()
        .chain(procfs::net::tcp6())
        .flatten()
        .filter(|entry| {
            entry.state == procfs::net::TcpState::Listen && listens(entry.local_address)
        })
        .map(|entry| entry.inode)
        .collect();
    if inodes.is_empty() {
        return None;
    }
    procfs::process::all_processes()
        .ok()?
        .flatten()
        .find_map(|process| {
            let owns = process.fd().ok()?.flatten().any(|fd| {
                matches!(fd.target, procfs::process::FDTarget::Socket(inode) if inodes.contains(&inode))
            });
            owns.then_some(process.pid as u32)
        })
}

fn bind_unix(path: &Path) -> Result<Listener, String> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    check_socket_dir(dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!(
                "{shown} exists and is not a socket; remove it or choose another path"
            ));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "another streamd is already listening on {shown}; stop it first"
                ));
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tracing::info!("removing the stale socket {shown}");
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?;
            }
            Err(e) => return Err(format!("cannot tell whether {shown} is in use: {e}")),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    }
    // Made owner-only as it is made: set after, a shared directory's users could
    // connect in between, and keep the connection.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(umask);
    let listener = listener.map_err(|e| format!("cannot listen on {shown}: {e}"))?;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    // Again, explicitly: a directory's default ACL takes precedence over the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {shown} owner-only: {e}"))?;
    Ok(Listener::Unix { listener, file })
}

/// Checks that a socket in `dir` stays this daemon's, the way OpenSSH checks the paths
/// it trusts: `dir` and every directory above it must be owned by root or by this
/// user, and writable by no one else unless sticky (as /tmp is, where no one may
/// remove or rename another's file). Whoever could write one of them could move the
/// socket aside and bind their own in its place, for clients to talk to.
fn check_socket_dir(dir: &Path) -> Result<(), String> {
    let real = dir
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid();
    for ancestor in real.ancestors() {
        let shown = ancestor.display();
        let meta = std::fs::metadata(ancestor).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let owner = nix::unistd::Uid::from_raw(meta.uid());
        if !owner.is_root() && owner != me {
            let name = nix::unistd::User::from_uid(owner)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {owner}"), |user| user.name);
            return Err(format!(
                "{shown} belongs to {name}, who could replace the socket with one of their \
                 own; put it in a directory of this user's or root's, e.g. mode 700"
            ));
        }
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "{shown} is writable by users other than its owner (mode {:o}) and not \
                 sticky; put the socket in a directory only its owner can write, e.g. mode \
                 700",
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// A socket file this daemon created; dropping it removes the file, unless something
/// else has taken its place meanwhile.
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot remove the socket {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "127.0.0.1:50051".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:50051".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/s.sock".parse(),
            Ok(ListenAddr::Unix("/run/s.sock".into()))
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("localhost:50051".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn this_process_is_found_by_its_listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(pid_listening_on(addr), Some(std::process::id()));
        drop(listener);
        assert_eq!(pid_listening_on(addr), None);
        assert_eq!(pid_listening_on("192.0.2.1:80".parse().unwrap()), None);
    }

    #[test]
    fn a_socket_directory_must_be_this_users_or_roots_and_private_or_sticky() {
        use std::os::unix::fs::PermissionsExt;
        let set = |dir: &Path, mode| {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        for (mode, allowed) in [
            (0o700, true),
            (0o755, true),
            (0o775, false),
            (0o777, false),
            (0o1777, true),
        ] {
            set(&dir, mode);
            assert_eq!(check_socket_dir(&dir).is_ok(), allowed, "{mode:o}");
        }
        set(&dir, 0o700);
        // A directory above that others may write: the socket's can be moved aside.
        set(top.path(), 0o777);
        let refused = check_socket_dir(&dir).unwrap_err();
        assert!(
            refused.contains(&top.path().display().to_string()),
            "{refused}"
        );
        set(top.path(), 0o700);
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            std::os::unix::fs::chown(&dir, Some(nobody.uid.as_raw()), None).unwrap();
            let refused = check_socket_dir(&dir).unwrap_err();
            assert!(refused.contains("belongs to nobody"), "{refused}");
        }
    }

    #[test]
    fn only_non_loopback_tcp_reaches_other_hosts() {
        let reaches = |s: &str| s.parse::<ListenAddr>().unwrap().reaches_other_hosts();
        assert!(!reaches("127.0.0.1:1"));
        assert!(!reaches("[::1]:1"));
        assert!(!reaches("unix:/tmp/x.sock"));
        assert!(reaches("0.0.0.0:1"));
        assert!(reaches("[::]:1"));
        assert!(reaches("192.168.1.20:1"));
    }
}
