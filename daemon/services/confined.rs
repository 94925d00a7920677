//! The files a service may read: regular files inside one directory, symlinks resolved.
//!
//! A directory is resolved once per use and refused if it lies on /proc, /sys or /dev
//! or on a kernel pseudo-filesystem, whose files report sizes that lie and whose reads
//! can be endless. A file is opened first and checked after, on the descriptor itself
//! (its type, its filesystem and the path the kernel resolved it to), so that swapping
//! a symlink between a check and the open gains nothing. Reads are capped in bytes
//! whatever size a file reports.

use std::{
    fs::{File, Metadata},
    io::Read,
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use nix::sys::statfs::{self, FsType};

use super::StepError;

/// Trees never read from, whatever they are mounted as.
const REFUSED_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// Kernel pseudo-filesystems, by their magic numbers (linux/magic.h), wherever they
/// are mounted: their files describe or steer the running system, not data.
const PSEUDO_FILESYSTEMS: &[FsType] = &[
    statfs::PROC_SUPER_MAGIC,
    statfs::SYSFS_MAGIC,
    statfs::DEVPTS_SUPER_MAGIC,
    statfs::CGROUP_SUPER_MAGIC,
    statfs::CGROUP2_SUPER_MAGIC,
    statfs::DEBUGFS_MAGIC,
    statfs::TRACEFS_MAGIC,
    statfs::SECURITYFS_MAGIC,
    statfs::BPF_FS_MAGIC,
    statfs::SELINUX_MAGIC,
    statfs::SMACK_MAGIC,
    statfs::NSFS_MAGIC,
    statfs::RDTGROUP_SUPER_MAGIC,
    statfs::HUGETLBFS_MAGIC,
    statfs::OPENPROM_SUPER_MAGIC,
    statfs::USBDEVICE_SUPER_MAGIC,
    statfs::XENFS_SUPER_MAGIC,
    statfs::FUTEXFS_SUPER_MAGIC,
    CONFIGFS_MAGIC,
    PSTOREFS_MAGIC,
    EFIVARFS_MAGIC,
    BINFMTFS_MAGIC,
    MQUEUE_MAGIC,
    FUSECTL_SUPER_MAGIC,
    BINDERFS_SUPER_MAGIC,
    RPC_PIPEFS_MAGIC,
];

// Those nix does not name.
const CONFIGFS_MAGIC: FsType = FsType(0x6265_6570 as _);
const PSTOREFS_MAGIC: FsType = FsType(0x6165_676C as _);
const EFIVARFS_MAGIC: FsType = FsType(0xDE5E_81E4_u32 as _);
const BINFMTFS_MAGIC: FsType = FsType(0x4249_4E4D as _);
const MQUEUE_MAGIC: FsType = FsType(0x1980_0202 as _);
const FUSECTL_SUPER_MAGIC: FsType = FsType(0x6573_5543 as _);
const BINDERFS_SUPER_MAGIC: FsType = FsType(0x6C6F_6F70 as _);
const RPC_PIPEFS_MAGIC: FsType = FsType(0x6759_6969 as _);

/// A directory whose regular files may be read.
#[derive(Clone, Debug)]
pub(super) struct Confined {
    /// The directory with every symlink resolved.
    root: PathBuf,
}

impl Confined {
    /// Resolves `dir` and checks that it may be read from.
    pub(super) async fn new(dir: &Path) -> Result<Self, StepError> {
        let dir = dir.to_owned();
        blocking(move || {
            let root = dir.canonicalize().map_err(|e| failed(&dir, e))?;
            if let Some(tree) = REFUSED_TREES.iter().find(|t| root.starts_with(t)) {
                return Err(failed(&dir, format!("lies under {tree}; refused")));
            }
            let filesystem = statfs::statfs(&root).map_err(|e| failed(&dir, e))?;
            if PSEUDO_FILESYSTEMS.contains(&filesystem.filesystem_type()) {
                return Err(failed(&dir, "is on a kernel pseudo-filesystem; refused"));
            }
            Ok(Self { root })
        })
        .await
    }

    /// The directory, resolved.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Opens `path`, which must be, once resolved, a regular file inside the directory.
    pub(super) async fn open(&self, path: &Path) -> Result<(File, Metadata), StepError> {
        let (confined, path) = (self.clone(), path.to_owned());
        blocking(move || confined.open_now(&path)).await
    }

    /// Reads all of `path`, refusing it if it holds more than `cap` bytes.
    pub(super) async fn read(&self, path: &Path, cap: u64) -> Result<Vec<u8>, StepError> {
        let (confined, path) = (self.clone(), path.to_owned());
        blocking(move || {
            let (file, _) = confined.open_now(&path)?;
            let mut bytes = Vec::new();
            // One byte more than the cap tells a file at the cap from a larger one.
            file.take(cap + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| failed(&path, e))?;
            if bytes.len() as u64 > cap {
                return Err(failed(
                    &path,
                    format!("holds more than {cap} bytes; skipped"),
                ));
            }
            Ok(bytes)
        })
        .await
    }

    fn open_now(&self, path: &Path) -> Result<(File, Metadata), StepError> {
        // Type first, so that no device or FIFO is even opened in the common case.
        let before = std::fs::metadata(path).map_err(|e| failed(path, e))?;
        check_type(path, &before)?;
        // Non-blocking: a FIFO swapped in after that look cannot hold the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(path)
            .map_err(|e| failed(path, e))?;
        // What was opened decides, not what the path named a moment before.
        let metadata = file.metadata().map_err(|e| failed(path, e))?;
        check_type(path, &metadata)?;
        let resolved = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| failed(path, format!("cannot resolve: {e}")))?;
        if !resolved.starts_with(&self.root) {
            return Err(failed(
                path,
                format!("resolves outside {}; refused", self.root.display()),
            ));
        }
        let filesystem = statfs::fstatfs(&file).map_err(|e| failed(path, e))?;
        if PSEUDO_FILESYSTEMS.contains(&filesystem.filesystem_type()) {
            return Err(failed(path, "is on a kernel pseudo-filesystem; refused"));
        }
        Ok((file, metadata))
    }
}

fn check_type(path: &Path, metadata: &Metadata) -> Result<(), StepError> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(failed(
        path,
        format!("is {what}; only regular files are read"),
    ))
}

fn failed(path: &Path, e: impl std::fmt::Display) -> StepError {
    StepError::Step(format!("{}: {e}", path.display()))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StepError::Step(format!("file task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: StepError) -> String {
        error.to_string()
    }

    #[tokio::test]
    async fn reads_are_capped_whatever_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        std::fs::write(&path, vec![b'x'; 1 << 20]).unwrap();
        let confined = Confined::new(dir.path()).await.unwrap();
        let e = message(confined.read(&path, 1000).await.unwrap_err());
        assert!(e.contains("more than 1000 bytes"), "{e}");
        assert_eq!(confined.read(&path, 1 << 20).await.unwrap().len(), 1 << 20);
    }

    #[tokio::test]
    async fn only_regular_files_inside_are_opened() {
        let (outside, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("in"), "i").unwrap();
        std::os::unix::fs::symlink(dir.path().join("in"), dir.path().join("alias")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let confined = Confined::new(dir.path()).await.unwrap();
        assert_eq!(
            confined.read(&dir.path().join("alias"), 10).await.unwrap(),
            b"i"
        );
        let e = message(
            confined
                .read(&dir.path().join("out"), 10)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("resolves outside"), "{e}");
        let e = message(
            confined
                .read(&dir.path().join("fifo"), 10)
                .await
                .unwrap_err(),
        );
        assert!(e.contains("is a FIFO"), "{e}");
        let e = message(confined.read(Path::new("/dev/null"), 10).await.unwrap_err());
        assert!(e.contains("is a device"), "{e}");
    }

    #[tokio::test]
    async fn kernel_trees_are_refused() {
        for dir in ["/proc/self", "/sys/kernel", "/dev"] {
            let e = message(Confined::new(Path::new(dir)).await.unwrap_err());
            assert!(e.contains("refused"), "{dir}: {e}");
        }
    }
}
