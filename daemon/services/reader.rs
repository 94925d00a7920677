//! `reader`: files as events. By default each step publishes a random text from a
//! directory (param `dir`; the built-in poems otherwise). With `follow=PATH`, a file
//! inside `dir`, it streams the lines appended to it instead, like `tail -n 0 -F`: it
//! starts at the
//! file's end, waits for a file that does not exist yet, starts over when the file is
//! truncated, and moves on to the new file when it is replaced (rotated).

use std::{
    io::SeekFrom,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use async_trait::async_trait;
use rand::seq::IndexedRandom;
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncSeekExt},
};

use super::{
    Build, Confined, Environment, Kind, ParamError, ParamSpec, Params, StepContext, StepError,
    Worker,
};
use crate::pb::{self, event::Payload};

pub const KIND: Kind = Kind {
    name: "reader",
    description: "a random text from a directory, or the lines appended to a file",
    default_interval: Duration::from_secs(3),
    params: &[
        ParamSpec {
            name: "dir",
            help: "directory of text files (default: the built-in poems)",
            default: None,
            authority: super::Authority::Operator,
        },
        ParamSpec {
            name: "follow",
            help: "a file inside dir whose appended lines to stream, like tail -F",
            default: None,
            authority: super::Authority::Operator,
        },
    ],
    build,
};

/// Texts larger than this are passed over, to keep events small.
const MAX_TEXT_BYTES: u64 = 32 * 1024;
/// A line longer than this is published in pieces of this size.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// The most of a followed file read in one poll.
const MAX_FOLLOW_READ: u64 = 1024 * 1024;
/// How often a followed file is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

const POEMS: &[(&str, &[u8])] = &[
    (
        "hope-is-the-thing-with-feathers.txt",
        include_bytes!("../assets/poems/hope-is-the-thing-with-feathers.txt"),
    ),
    (
        "ozymandias.txt",
        include_bytes!("../assets/poems/ozymandias.txt"),
    ),
    (
        "remember.txt",
        include_bytes!("../assets/poems/remember.txt"),
    ),
    (
        "sonnet-18.txt",
        include_bytes!("../assets/poems/sonnet-18.txt"),
    ),
    (
        "the-road-not-taken.txt",
        include_bytes!("../assets/poems/the-road-not-taken.txt"),
    ),
    (
        "the-tyger.txt",
        include_bytes!("../assets/poems/the-tyger.txt"),
    ),
];

pub(super) fn install_builtin(data_dir: &Path) -> std::io::Result<()> {
    super::install_files(&data_dir.join("poems"), POEMS)
}

fn build(params: &Params, env: &Environment) -> Result<Box<dyn Worker>, Build> {
    match (params.get("dir"), params.get("follow")) {
        (_, Some(path)) if path.is_empty() => {
            Err(ParamError::new("follow", "must name a file").into())
        }
        (None, Some(_)) => Err(ParamError::new(
            "follow",
            "needs dir, the directory the followed file lies in",
        )
        .into()),
        (Some(dir), Some(path)) => {
            let (dir, path) = (PathBuf::from(dir), Path::new(dir).join(path));
            // The lexical check here; the resolved one each time the file is opened.
            if !path.starts_with(&dir) || path.components().any(|c| c == Component::ParentDir) {
                return Err(ParamError::new(
                    "follow",
                    format!("{} is not inside dir {}", path.display(), dir.display()),
                )
                .into());
            }
            Ok(Box::new(Follower::new(dir, path)))
        }
        (dir, None) => Ok(Box::new(Texts {
            dir: dir.map_or_else(|| env.data_dir.join("poems"), PathBuf::from),
        })),
    }
}

/// Publishes a random text from a directory each step.
struct Texts {
    dir: PathBuf,
}

#[async_trait]
impl Worker for Texts {
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let dir = Confined::new(&self.dir).await?;
        let files = super::files_in(&dir, |_, size| size <= MAX_TEXT_BYTES).await?;
        let path = files.choose(&mut rand::rng()).ok_or_else(|| {
            StepError::Step(format!(
                "{}: no text files of at most {MAX_TEXT_BYTES} bytes",
                self.dir.display()
            ))
        })?;
        let bytes = dir.read(path, MAX_TEXT_BYTES).await?;
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let title = body
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_owned();
        ctx.publish(Payload::Text(pb::Text {
            path: path.display().to_string(),
            title,
            body,
        }))
    }
}

/// Follows one file, `tail -F` style.
struct Follower {
    /// The directory the file must lie in, however its path resolves.
    dir: PathBuf,
    path: PathBuf,
    open: Option<Followed>,
    /// Set once the first look at the path is done: a file that is there then is
    /// followed from its end, a file that appears later from its start.
    looked: bool,
    /// Set while the file is missing and that has been reported, to report it once.
    reported_missing: bool,
}

struct Followed {
    file: File,
    /// Device and inode: a different pair at the path means the file was replaced.
    identity: (u64, u64),
    position: u64,
    /// Lines completed so far in this file.
    line: u64,
    /// Bytes after the last line ending, waiting for the rest of their line.
    partial: Vec<u8>,
}

impl Follower {
    fn new(dir: PathBuf, path: PathBuf) -> Self {
        Self {
            dir,
            path,
            open: None,
            looked: false,
            reported_missing: false,
        }
    }

    /// Publishes whatever complete lines were appended since the last look.
    async fn poll(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let at_end = !std::mem::replace(&mut self.looked, true);
        let metadata = match tokio::fs::metadata(&self.path).await {
            Ok(m) => m,
            Err(e) => {
                // A rotated file may still have lines to give before it is let go.
                if let Some(mut old) = self.open.take() {
                    self.read_new(&mut old, ctx).await?;
                }
                if !self.reported_missing {
                    self.reported_missing = true;
                    ctx.report(format!("{}: {e}; waiting for it", self.path.display()));
                }
                return Ok(());
            }
        };
        self.reported_missing = false;
        let identity = (metadata.dev(), metadata.ino());
        if let Some(mut old) = self.open.take_if(|f| f.identity != identity) {
            self.read_new(&mut old, ctx).await?;
        }
        let mut followed = match self.open.take() {
            Some(f) => f,
            None => {
                let (file, opened) = Confined::new(&self.dir).await?.open(&self.path).await?;
                let mut file = File::from_std(file);
                let position = if at_end { opened.len() } else { 0 };
                file.seek(SeekFrom::Start(position))
                    .await
                    .map_err(|e| StepError::Step(format!("{}: {e}", self.path.display())))?;
                Followed {
                    file,
                    identity: (opened.dev(), opened.ino()),
                    position,
                    line: 0,
                    partial: Vec::new(),
                }
            }
        };
        if metadata.len() < followed.position {
            followed
                .file
                .seek(SeekFrom::Start(0))
                .await
                .map_err(|e| StepError::Step(format!("{}: {e}", self.path.display())))?;
            followed.position = 0;
            followed.line = 0;
            followed.partial.clear();
        }
        let result = self.read_new(&mut followed, ctx).await;
        self.open = Some(followed);
        result
    }

    /// Reads to the end of the file and publishes each complete line.
    async fn read_new(&self, followed: &mut Followed, ctx: &StepContext) -> Result<(), StepError> {
        let mut chunk = Vec::new();
        // What is beyond waits for the next poll, so no file's growth takes memory.
        (&mut followed.file)
            .take(MAX_FOLLOW_READ)
            .read_to_end(&mut chunk)
            .await
            .map_err(|e| StepError::Step(format!("{}: {e}", self.path.display())))?;
        followed.position += chunk.len() as u64;
        followed.partial.extend_from_slice(&chunk);
        let mut start = 0;
        let buffer = std::mem::take(&mut followed.partial);
        loop {
            let rest = &buffer[start..];
            // The length of the next line, and of its line ending: none when a line too
            // long is cut.
            let (end, ending) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) if i <= MAX_LINE_BYTES => (i, 1),
                _ if rest.len() >= MAX_LINE_BYTES => (MAX_LINE_BYTES, 0),
                _ => break,
            };
            let line = &rest[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            followed.line += 1;
            ctx.publish(Payload::Line(pb::Line {
                path: self.path.display().to_string(),
                number: followed.line,
                text: String::from_utf8_lossy(line).into_owned(),
            }))?;
            start += end + ending;
        }
        followed.partial = buffer[start..].to_vec();
        Ok(())
    }
}

#[async_trait]
impl Worker for Follower {
    /// Follows the file until the service stops.
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        loop {
            self.poll(ctx).await?;
            tokio::select! {
                _ = ctx.cancelled() => return Ok(()),
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }
}
