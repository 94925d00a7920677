//! The dashboard's files, built from web/ and embedded in the binary so that nothing
//! but streamd is needed to serve it, and the images of `images` services.

use axum::{
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{services::images, supervisor::Supervisor};

/// The page may load its own script and styles, show images it fetched from its own
/// origin (with the token, as `blob:` URLs), and talk to its own origin: nothing else,
/// and no other site may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// A file of the dashboard.
pub struct Asset {
    pub bytes: &'static [u8],
    pub media_type: &'static str,
}

pub const INDEX: Asset = Asset {
    bytes: include_bytes!("../../web/dist/index.html"),
    media_type: "text/html; charset=utf-8",
};
pub const SCRIPT: Asset = Asset {
    bytes: include_bytes!("../../web/dist/app.js"),
    media_type: "text/javascript; charset=utf-8",
};
pub const STYLES: Asset = Asset {
    bytes: include_bytes!("../../web/dist/app.css"),
    media_type: "text/css; charset=utf-8",
};

impl Asset {
    pub fn response(&self) -> Response {
        with_headers(self.bytes.into(), self.media_type)
    }
}

/// A file with the headers every dashboard response carries. `no-cache`: a new
/// streamd may bring a new page, so the browser asks again each time.
fn with_headers(body: axum::body::Body, media_type: &str) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, media_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// `/images/{service}/{file}`: a file from the directory the `images` service named
/// `service` picks from, only a plain image file name, read under that service's own
/// confinement.
pub async fn image(
    State(supervisor): State<Supervisor>,
    Path((service, file)): Path<(String, String)>,
) -> Response {
    let not_found = |why: String| (StatusCode::NOT_FOUND, format!("{why}\n")).into_response();
    let Some(info) = supervisor.service(&service) else {
        return not_found(format!("no service named {service:?}"));
    };
    if info.kind != images::KIND.name {
        return not_found(format!("{service:?} is not an images service"));
    }
    let params = info.params.into_iter().collect();
    let data_dir = &supervisor.environment().data_dir;
    match images::served(&params, data_dir, &file).await {
        Ok((bytes, media_type)) => with_headers(bytes.into(), media_type),
        Err(why) => {
            tracing::debug!("dashboard image {service}/{file}: {why}");
            not_found(format!("no image {file:?} for {service}"))
        }
    }
}
