//! The Segment-compatible tracking API: `/v1/identify|track|page|screen|group|alias|batch` (and the short
//! forms `/v1/i|t|p|s|g|a|b` that analytics.js uses).

use crate::{ApiError, ApiResult, AppState};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use base64::Engine;
use kizuna_ingest::{Endpoint, MessageType, parse_request};
use kizuna_pipeline::IngestReceipt;
use kizuna_types::{Code, KizunaError};
use serde::Serialize;
use std::io::Read;

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (long, short, endpoint) in [
        ("identify", "i", Endpoint::Single(MessageType::Identify)),
        ("track", "t", Endpoint::Single(MessageType::Track)),
        ("page", "p", Endpoint::Single(MessageType::Page)),
        ("screen", "s", Endpoint::Single(MessageType::Screen)),
        ("group", "g", Endpoint::Single(MessageType::Group)),
        ("alias", "a", Endpoint::Single(MessageType::Alias)),
        ("batch", "b", Endpoint::Batch),
    ] {
        let handler =
            move |state: State<AppState>, headers: HeaderMap, body: Body| ingest(state, headers, body, endpoint);
        router = router.route(&format!("/v1/{long}"), post(handler)).route(&format!("/v1/{short}"), post(handler));
    }
    router.layer(browser_access())
}

/// Browser SDKs post from the shop's own origin: RudderStack's sends a Basic `Authorization` header and JSON, so
/// the browser asks first (a preflight `OPTIONS`), and analytics.js needs the answer readable to stop retrying.
/// Any origin may send: a write key is public in every page that embeds it. Credentialed requests are allowed
/// too (an SDK that posts with `withCredentials` would otherwise be blocked): these routes read no cookies, and
/// only the admin routes read the admin session cookie (which is `SameSite=Strict` besides).
fn browser_access() -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([axum::http::Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
        .max_age(std::time::Duration::from_secs(24 * 60 * 60))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// Always true on 200, as Segment's API answers.
    success: bool,
    /// Messages stored by this request.
    accepted: usize,
    /// Messages already seen (same source and messageId) and therefore not stored again.
    duplicates: usize,
}

/// Ingest one message or a batch (Segment HTTP tracking API).
#[utoipa::path(post, path = "/v1/batch", tag = "ingest",
    request_body(content = String, description = "A Segment batch: {\"batch\": [...], \"sentAt\"?, \"context\"?, \"integrations\"?, \"writeKey\"?}", content_type = "application/json"),
    responses((status = 200, body = IngestResponse), (status = 400, description = "Invalid message; nothing stored"),
              (status = 401, description = "Missing or bad write key")),
    security(("write_key" = [])))]
async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> ApiResult<axum::Json<IngestResponse>> {
    let basic_key = basic_username(&headers)?;
    // Authenticate before reading the body when the key came in the header, so bad keys cost nothing.
    let early_source = match &basic_key {
        Some(key) => Some(state.source(key)?),
        None => None,
    };
    let limit = match endpoint {
        Endpoint::Batch => state.inner.limits.max_batch_bytes,
        Endpoint::Single(_) => state.inner.limits.max_event_bytes,
    };
    let raw = read_body(body, &headers, limit, endpoint).await?;
    let received_at = state.inner.clock.now();
    let parsed = parse_request(endpoint, &raw, received_at, &state.inner.limits)?;
    let source = match (early_source, parsed.write_key) {
        (Some(source), _) => source,
        (None, Some(key)) => state.source(&key)?,
        (None, None) => {
            return Err(ApiError(KizunaError::new(
                Code::MissingWriteKey,
                "send the write key as the HTTP Basic username or as `writeKey` in the body",
            )));
        }
    };
    let IngestReceipt { accepted, duplicates } = state.inner.pipeline.ingest(&source, parsed.events).await?;
    Ok(axum::Json(IngestResponse { success: true, accepted, duplicates }))
}

fn basic_username(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = || ApiError(KizunaError::new(Code::InvalidWriteKey, "the Authorization header is not valid HTTP Basic"));
    let text = value.to_str().map_err(|_| bad())?;
    // Scheme names are case-insensitive (RFC 9110). Another scheme (a proxy's bearer token) carries no write
    // key: the body's `writeKey` is used then.
    let (scheme, encoded) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(user, _)| user);
    Ok((!user.is_empty()).then(|| user.to_owned()))
}

/// Reads the body, inflating gzip, never holding more than the limit (plus one byte to detect overflow).
async fn read_body(body: Body, headers: &HeaderMap, limit: usize, endpoint: Endpoint) -> ApiResult<Bytes> {
    let too_large = |size: String| {
        let code = if endpoint == Endpoint::Batch { Code::BatchTooLarge } else { Code::EventTooLarge };
        ApiError(KizunaError::new(code, format!("the body is {size} bytes; the limit is {limit} bytes")))
    };
    // A compressed body is at most as large as what it inflates to, give or take headers.
    let raw = axum::body::to_bytes(body, limit + 1024)
        .await
        .map_err(|_| too_large("more than".to_owned() + " " + &limit.to_string()))?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => {
            let mut inflated = Vec::with_capacity(raw.len() * 4);
            // Every member: a gzip file may be several members one after another (RFC 1952), and bytes after the
            // first member are either another member or an error, never silently dropped.
            let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
            decoder.read_to_end(&mut inflated).map_err(|e| {
                ApiError(KizunaError::new(Code::MalformedBody, format!("the gzip body could not be inflated: {e}")))
            })?;
            if inflated.len() > limit {
                return Err(too_large(format!("more than {limit}")));
            }
            Ok(Bytes::from(inflated))
        }
        "identity" | "" => {
            if raw.len() > limit {
                return Err(too_large(raw.len().to_string()));
            }
            Ok(raw)
        }
        other => Err(ApiError(KizunaError::new(
            Code::UnsupportedMediaType,
            format!("Content-Encoding '{other}' is not supported; send gzip or no encoding"),
        ))),
    }
}
