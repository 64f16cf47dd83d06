//! Serves the admin web app (`kizuna-web`) under `/admin/`. Files under `/admin/assets/…` are the embedded
//! modules and styles; every other path under `/admin/` is a client-side route and gets the app shell, which
//! asks `GET /api/session` whether someone is signed in.

use crate::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/admin/") }))
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(shell))
        .route("/admin/assets/{*path}", get(asset))
        .route("/admin/{*route}", get(shell))
}

/// The pages may load only their own scripts and styles; previews of email HTML render in a sandboxed frame
/// (which inherits this policy: its product images come from the store's https CDN).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; \
     script-src 'self'; frame-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

fn respond(file: kizuna_web::Asset, cache: &'static str) -> Response {
    let mut response = file.bytes.into_owned().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

async fn shell() -> Response {
    match kizuna_web::index_html() {
        Some(file) => respond(file, "no-cache"),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "the admin app is missing from this build").into_response(),
    }
}

async fn asset(Path(path): Path<String>) -> Response {
    match kizuna_web::asset(&path) {
        // Modules import each other by relative paths without version stamps: revalidate rather than cache
        // blindly, so an upgraded server never mixes old and new modules.
        Some(file) => respond(file, "no-cache"),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
