//! `images`: each step publishes a random image file from a directory (param `dir`; the
//! built-in avatars otherwise) with its size, media type and pixel dimensions, read
//! from the file's header.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use async_trait::async_trait;
use imagesize::ImageType;
use rand::seq::IndexedRandom;
use tokio::io::AsyncReadExt;

use super::{
    Build, Confined, Environment, Kind, ParamSpec, Params, StepContext, StepError, Worker,
};
use crate::pb::{self, event::Payload};

pub const KIND: Kind = Kind {
    name: "images",
    description: "a random image from a directory, with its size and dimensions",
    default_interval: Duration::from_secs(1),
    params: &[ParamSpec {
        name: "dir",
        help: "directory of images (default: the built-in avatars)",
        default: None,
        authority: super::Authority::Operator,
    }],
    build,
};

/// Enough of a file to hold the header of every format `imagesize` reads.
const HEADER_BYTES: u64 = 64 * 1024;

/// The file name extensions of the formats whose media types are known here.
const EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "webp", "bmp", "ico", "tif", "tiff", "avif", "heic", "heif",
];

const AVATARS: &[(&str, &[u8])] = &[
    ("bee.png", include_bytes!("../assets/images/bee.png")),
    ("crab.png", include_bytes!("../assets/images/crab.png")),
    ("fox.png", include_bytes!("../assets/images/fox.png")),
    ("frog.png", include_bytes!("../assets/images/frog.png")),
    ("owl.png", include_bytes!("../assets/images/owl.png")),
    ("whale.png", include_bytes!("../assets/images/whale.png")),
];

pub(super) fn install_builtin(data_dir: &std::path::Path) -> std::io::Result<()> {
    super::install_files(&data_dir.join("images"), AVATARS)
}

fn build(params: &Params, env: &Environment) -> Result<Box<dyn Worker>, Build> {
    Ok(Box::new(Images {
        dir: directory(params, &env.data_dir),
    }))
}

/// The directory an `images` service with `params` picks from.
fn directory(params: &Params, data_dir: &Path) -> PathBuf {
    params
        .get("dir")
        .map_or_else(|| data_dir.join("images"), PathBuf::from)
}

/// The largest image file the dashboard is sent.
const MAX_SERVED_BYTES: u64 = 8 * 1024 * 1024;

/// The bytes and media type of `name`, an image file an `images` service with `params`
/// may publish, for the dashboard: a plain file name with an image extension, read
/// under the same confinement as the service's own reads.
pub async fn served(
    params: &Params,
    data_dir: &Path,
    name: &str,
) -> Result<(Vec<u8>, &'static str), String> {
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']);
    let extension = Path::new(name).extension().and_then(|e| e.to_str());
    if !plain || !extension.is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())) {
        return Err(format!("{name:?} is not an image file name"));
    }
    let dir = Confined::new(&directory(params, data_dir))
        .await
        .map_err(|e| e.to_string())?;
    let bytes = dir
        .read(&dir.root().join(name), MAX_SERVED_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let kind = imagesize::image_type(&bytes).map_err(|_| format!("{name}: not an image"))?;
    Ok((bytes, media_type(kind)))
}

struct Images {
    dir: PathBuf,
}

#[async_trait]
impl Worker for Images {
    async fn step(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let dir = Confined::new(&self.dir).await?;
        let files = super::files_in(&dir, |path, _| {
            path.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .await?;
        let path = files.choose(&mut rand::rng()).ok_or_else(|| {
            StepError::Step(format!(
                "{}: no image files ({})",
                self.dir.display(),
                EXTENSIONS.join(", ")
            ))
        })?;
        let failed =
            |e: &dyn std::fmt::Display| StepError::Step(format!("{}: {e}", path.display()));
        let (file, metadata) = dir.open(path).await?;
        let size_bytes = metadata.len();
        let mut header = Vec::new();
        tokio::fs::File::from_std(file)
            .take(HEADER_BYTES)
            .read_to_end(&mut header)
            .await
            .map_err(|e| failed(&e))?;
        let kind = imagesize::image_type(&header)
            .map_err(|_| failed(&"not an image this service can read"))?;
        let size = imagesize::blob_size(&header).map_err(|e| failed(&e))?;
        ctx.publish(Payload::Image(pb::Image {
            path: path.display().to_string(),
            size_bytes,
            media_type: media_type(kind).to_owned(),
            width: u32::try_from(size.width).unwrap_or(u32::MAX),
            height: u32::try_from(size.height).unwrap_or(u32::MAX),
        }))
    }
}

fn media_type(kind: ImageType) -> &'static str {
    match kind {
        ImageType::Png => "image/png",
        ImageType::Jpeg => "image/jpeg",
        ImageType::Gif => "image/gif",
        ImageType::Webp => "image/webp",
        ImageType::Bmp => "image/bmp",
        ImageType::Ico => "image/vnd.microsoft.icon",
        ImageType::Tiff => "image/tiff",
        ImageType::Heif(_) => "image/heif",
        _ => "application/octet-stream",
    }
}
