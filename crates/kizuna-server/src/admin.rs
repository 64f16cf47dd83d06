//! The admin API (Bearer admin key): profiles, timelines, identities and merges, search, export, erasure,
//! consent.

use crate::error::invalid_param;
use crate::{ApiError, ApiResult, AppState};
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, header, request::Parts};
use axum::routing::{get, put};
use chrono::{DateTime, Utc};
use kizuna_identity::{IdKind, Identifier, ProfileId};
use kizuna_ingest::{Event, MessageType};
use kizuna_profiles::{CHANNELS, ConsentStatus, PURPOSES};
use kizuna_store::{EventFilter, StoredProfile};
use kizuna_types::{Code, KizunaError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/profiles", get(search_profiles))
        .route("/api/profiles/by/{kind}/{value}", get(profile_by_identifier))
        .route("/api/profiles/{id}", get(get_profile).delete(erase_profile))
        .route("/api/profiles/{id}/events", get(profile_events))
        .route("/api/profiles/{id}/identities", get(profile_identities))
        .route("/api/profiles/{id}/export", get(export_profile))
        .route("/api/profiles/{id}/consent", put(set_consent))
        .route("/api/sources", get(list_sources).post(create_source))
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/stats", get(stats))
}

/// Extractor that admits requests with a valid admin API key as a Bearer token, or a signed-in web app session
/// (whose changes must carry the session's CSRF token).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) || !crate::session::authorize_session(parts, state)? {
            authorize(&parts.headers, state)?;
        }
        Ok(Admin)
    }
}

pub(crate) fn authorize(headers: &HeaderMap, state: &AppState) -> ApiResult<()> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError(KizunaError::new(Code::MissingApiKey, "send an admin API key as `Authorization: Bearer KEY`"))
        })?;
    if state.store().api_key_is_valid(token)? {
        Ok(())
    } else {
        Err(ApiError(KizunaError::new(Code::InvalidApiKey, "the admin API key is unknown or revoked")))
    }
}

pub(crate) fn parse_profile_id(raw: &str) -> ApiResult<ProfileId> {
    raw.parse::<ProfileId>().map_err(|_| invalid_param("id", format!("'{raw}' is not a profile id")))
}

fn not_found(what: &str) -> ApiError {
    ApiError(KizunaError::new(Code::ProfileNotFound, format!("no profile {what}")))
}

/// Resolves an id that may have been merged away to the live profile.
fn live_profile(state: &AppState, raw_id: &str) -> ApiResult<StoredProfile> {
    let id = parse_profile_id(raw_id)?;
    let live = state.store().live_profile_id(id)?.ok_or_else(|| not_found(&format!("has id {id}")))?;
    state.store().profile(live)?.ok_or_else(|| not_found(&format!("has id {id}")))
}

/// A profile as the API shows it. `computed` carries what the events say (orders, revenue, affinities…), the
/// latest analytics run's scores for this profile (predictions, RFM; see `kizuna_jobs`) and its journey stage
/// now, so segments and templates find every attribute in one place.
pub fn profile_json(state: &AppState, profile: &StoredProfile) -> Value {
    let trait_meta: serde_json::Map<String, Value> = profile
        .state
        .traits
        .iter()
        .map(|(k, t)| (k.clone(), json!({"set_at": t.set_at, "source": t.source, "data_kind": t.data_kind})))
        .collect();
    json!({
        "id": profile.id.to_string(),
        "identities": profile.identities,
        "traits": profile.state.trait_values(),
        "trait_meta": trait_meta,
        "consent": profile.state.consent,
        "computed": computed_json(state, profile),
        "created_at": profile.created_at,
        "updated_at": profile.updated_at,
    })
}

fn computed_json(state: &AppState, profile: &StoredProfile) -> Value {
    let purchase_window_days = state.inner.analytics.read().settings.purchase_window_days;
    Value::Object(kizuna_jobs::facts::computed_attributes(
        &profile.state,
        profile.scores.as_ref(),
        state.clock().now(),
        purchase_window_days,
    ))
}

/// Get a profile by any identifier.
#[utoipa::path(get, path = "/api/profiles/by/{identifier_type}/{value}", tag = "profiles",
    params(("identifier_type" = String, Path, description = "user_id, anonymous_id, email, phone, line_user_id or a declared custom type"),
           ("value" = String, Path, description = "The identifier; emails and phones are normalised before lookup")),
    responses((status = 200, description = "The merged profile: id, identities, traits, consent, computed"),
              (status = 404, description = "No profile has this identifier")),
    security(("admin_key" = [])))]
async fn profile_by_identifier(
    _: Admin,
    State(state): State<AppState>,
    Path((kind, value)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let kind_parsed = IdKind::parse(&kind);
    if let IdKind::Custom(name) = &kind_parsed
        && !state.inner.identifiers.custom_types.contains(name)
    {
        return Err(invalid_param(
            "identifier_type",
            format!(
                "unknown identifier type '{kind}'; use user_id, anonymous_id, email, phone, line_user_id or a declared custom type"
            ),
        ));
    }
    let identifier = Identifier::normalised(kind_parsed, &value, state.inner.identifiers.default_country.as_deref())
        .ok_or_else(|| invalid_param("value", format!("'{value}' is not a valid {kind}")))?;
    let id =
        state.store().profile_by_identifier(&identifier)?.ok_or_else(|| not_found(&format!("has {identifier}")))?;
    let profile = state.store().profile(id)?.ok_or_else(|| not_found(&format!("has {identifier}")))?;
    Ok(axum::Json(profile_json(&state, &profile)))
}

/// Get a profile by id (ids merged into another profile resolve to it).
#[utoipa::path(get, path = "/api/profiles/{id}", tag = "profiles",
    responses((status = 200, description = "The profile"), (status = 404, description = "Unknown profile")),
    security(("admin_key" = [])))]
async fn get_profile(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(profile_json(&state, &live_profile(&state, &id)?)))
}

fn parse_time_param(params: &HashMap<String, String>, key: &str) -> ApiResult<Option<i64>> {
    params
        .get(key)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|_| invalid_param(key, format!("'{v}' is not an RFC 3339 date-time")))
        })
        .transpose()
}

fn parse_number_param(params: &HashMap<String, String>, key: &str) -> ApiResult<Option<i64>> {
    params
        .get(key)
        .map(|v| v.parse::<i64>().map_err(|_| invalid_param(key, format!("'{v}' is not an integer"))))
        .transpose()
}

/// A profile's events, newest first. Filters: `type` (comma-separated message types or event names),
/// `since`, `until` (RFC 3339), `limit` (1–1000, default 50), `before` (cursor from `next_before`).
#[utoipa::path(get, path = "/api/profiles/{id}/events", tag = "profiles",
    responses((status = 200, description = "{events: [...], next_before: cursor or null}")),
    security(("admin_key" = [])))]
async fn profile_events(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let profile = live_profile(&state, &id)?;
    let limit = parse_number_param(&params, "limit")?.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(invalid_param("limit", "must be between 1 and 1000"));
    }
    let filter = EventFilter {
        kinds: params
            .get("type")
            .map(|t| t.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default(),
        since_ms: parse_time_param(&params, "since")?,
        until_ms: parse_time_param(&params, "until")?,
        before_seq: parse_number_param(&params, "before")?,
        limit: limit as usize,
    };
    let events = state.store().events(profile.id, &filter)?;
    let next_before = (events.len() == filter.limit).then(|| events.last().map(|e| e.seq)).flatten();
    let events: Vec<Value> =
        events.into_iter().map(|e| json!({"seq": e.seq, "source_id": e.source_id, "message": e.body})).collect();
    Ok(axum::Json(json!({"profile_id": profile.id.to_string(), "events": events, "next_before": next_before})))
}

/// A profile's identifiers, the merges that made it, and the links that were refused (with why).
#[utoipa::path(get, path = "/api/profiles/{id}/identities", tag = "profiles",
    responses((status = 200, description = "{identities, merges, conflicts}")), security(("admin_key" = [])))]
async fn profile_identities(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let profile = live_profile(&state, &id)?;
    Ok(axum::Json(json!({
        "profile_id": profile.id.to_string(),
        "identities": profile.identities,
        "merges": state.store().merges(profile.id)?,
        "conflicts": state.store().conflicts(profile.id)?,
    })))
}

/// Everything Kizuna holds about a person, as one JSON document (GDPR/APPI access request).
#[utoipa::path(get, path = "/api/profiles/{id}/export", tag = "profiles",
    responses((status = 200, description = "Profile, identities, merges and every event")), security(("admin_key" = [])))]
async fn export_profile(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let profile = live_profile(&state, &id)?;
    let mut events = Vec::new();
    let mut before = None;
    loop {
        let page = state
            .store()
            .events(profile.id, &EventFilter { before_seq: before, limit: 1000, ..EventFilter::default() })?;
        let done = page.len() < 1000;
        before = page.last().map(|e| e.seq);
        events.extend(page.into_iter().map(|e| e.body));
        if done {
            break;
        }
    }
    Ok(axum::Json(json!({
        "exported_at": state.inner.clock.now(),
        "profile": profile_json(&state, &profile),
        "merges": state.store().merges(profile.id)?,
        "events": events,
    })))
}

/// Erase a person: profile, identities and events, and what was derived from them. Their messages stay only as
/// anonymous rows (no profile, address, content or reasons), so delivery figures do not change; queued ones are not
/// sent. Old messages replayed within the dedup window stay deduplicated and cannot bring the profile back.
#[utoipa::path(delete, path = "/api/profiles/{id}", tag = "profiles",
    responses((status = 200, description = "{erased: true, identities, events}")), security(("admin_key" = [])))]
async fn erase_profile(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let profile = live_profile(&state, &id)?;
    let receipt = state.pipeline().erase(profile.id).await?;
    Ok(axum::Json(
        json!({"erased": true, "profile_id": profile.id.to_string(), "identities": receipt.identities, "events": receipt.events}),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    /// email, sms, line or push
    channel: String,
    /// marketing, transactional, analytics or personalization
    purpose: String,
    /// granted or denied
    status: String,
    /// Where the decision was made, e.g. "preference-center"; defaults to the admin API.
    source: Option<String>,
    /// When the decision was made (RFC 3339); defaults to now.
    #[schema(value_type = Option<String>, format = DateTime)]
    at: Option<DateTime<Utc>>,
}

/// Record a consent decision for one channel and purpose. It is stored as an event in the profile's history.
#[utoipa::path(put, path = "/api/profiles/{id}/consent", tag = "profiles", request_body = ConsentChange,
    responses((status = 200, description = "The updated consent map")), security(("admin_key" = [])))]
async fn set_consent(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Value>> {
    let profile = live_profile(&state, &id)?;
    let change: ConsentChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError(KizunaError::new(Code::MalformedJson, format!("invalid consent body: {e}"))))?;
    if !CHANNELS.contains(&change.channel.as_str()) {
        return Err(ApiError(
            KizunaError::new(Code::InvalidField, format!("channel must be one of {CHANNELS:?}")).with_field("channel"),
        ));
    }
    if !PURPOSES.contains(&change.purpose.as_str()) {
        return Err(ApiError(
            KizunaError::new(Code::InvalidField, format!("purpose must be one of {PURPOSES:?}")).with_field("purpose"),
        ));
    }
    let status = ConsentStatus::parse(&Value::String(change.status.clone())).ok_or_else(|| {
        ApiError(KizunaError::new(Code::InvalidField, "status must be granted or denied").with_field("status"))
    })?;
    let at = change.at.unwrap_or_else(|| state.inner.clock.now());
    let mut body = serde_json::Map::new();
    body.insert("traits".into(), json!({"consent": {change.channel.clone(): {change.purpose.clone(): status}}}));
    if let Some(source) = &change.source {
        body.insert("context".into(), json!({"consentSource": source}));
    }
    let event = Event::internal(MessageType::Identify, body, at);
    state.pipeline().append(profile.id, &state.inner.admin_source, event).await?;
    let updated = state.store().profile(profile.id)?.ok_or_else(|| not_found("after update"))?;
    Ok(axum::Json(json!({"profile_id": profile.id.to_string(), "consent": updated.state.consent})))
}

/// Search profiles by a trait: `?trait=NAME&value=VALUE` (exact, case-insensitive), `limit` up to 1000.
/// Without `trait`, pages through all profiles in id order: `?after=ID` continues from `next_after`.
#[utoipa::path(get, path = "/api/profiles", tag = "profiles",
    responses((status = 200, description = "{profiles: [...], next_after (when paging)}")), security(("admin_key" = [])))]
async fn search_profiles(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let limit = parse_number_param(&params, "limit")?.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(invalid_param("limit", "must be between 1 and 1000"));
    }
    let Some(name) = params.get("trait").filter(|t| !t.is_empty()) else {
        if params.contains_key("value") {
            return Err(invalid_param("trait", "give the trait name to search by"));
        }
        let after = params
            .get("after")
            .map(|raw| {
                raw.parse::<ProfileId>().map_err(|_| invalid_param("after", format!("'{raw}' is not a profile id")))
            })
            .transpose()?;
        let page = state.store().scan_profiles(after, limit as usize)?;
        let next_after = (page.len() == limit as usize).then(|| page.last().map(|(id, _)| id.to_string())).flatten();
        let mut profiles = Vec::with_capacity(page.len());
        for (id, _) in page {
            if let Some(p) = state.store().profile(id)? {
                profiles.push(profile_json(&state, &p));
            }
        }
        return Ok(axum::Json(json!({"profiles": profiles, "next_after": next_after})));
    };
    let value = params.get("value").ok_or_else(|| invalid_param("value", "give the value to search for"))?;
    let ids = state.store().search_profiles(name, value, limit as usize)?;
    let mut profiles = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(p) = state.store().profile(id)? {
            profiles.push(profile_json(&state, &p));
        }
    }
    Ok(axum::Json(json!({"profiles": profiles})))
}

/// Sources (write keys) known to this server.
#[utoipa::path(get, path = "/api/sources", tag = "admin", responses((status = 200)), security(("admin_key" = [])))]
async fn list_sources(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!({"sources": state.store().list_sources()?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSource {
    name: String,
    #[serde(default)]
    trusted: bool,
    #[serde(default)]
    data_kind: Option<String>,
}

fn invalid_body(e: serde_json::Error) -> ApiError {
    let code = if e.is_data() { Code::InvalidField } else { Code::MalformedJson };
    ApiError(KizunaError::new(code, e.to_string()))
}

fn name_taken(e: kizuna_store::StoreError, what: &str) -> ApiError {
    match e {
        kizuna_store::StoreError::AlreadyExists(_) => {
            ApiError(KizunaError::new(Code::InvalidField, format!("a {what} with this name exists")).with_field("name"))
        }
        kizuna_store::StoreError::Invalid(message) => {
            ApiError(KizunaError::new(Code::InvalidField, message).with_field("name"))
        }
        other => ApiError::from(other),
    }
}

/// Create a source: `{name, trusted?, data_kind?}`; returns it with its write key.
#[utoipa::path(post, path = "/api/sources", tag = "admin", responses((status = 201), (status = 400)), security(("admin_key" = [])))]
async fn create_source(
    _: Admin,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, axum::Json<Value>)> {
    let body: NewSource = serde_json::from_slice(&body).map_err(invalid_body)?;
    let kind_name = body.data_kind.as_deref().unwrap_or("first_party");
    let kind = kizuna_profiles::DataKind::parse(kind_name).ok_or_else(|| {
        ApiError(
            KizunaError::new(Code::InvalidField, format!("unknown data kind '{kind_name}'")).with_field("data_kind"),
        )
    })?;
    if body.name.trim().is_empty() {
        return Err(ApiError(KizunaError::new(Code::MissingField, "a source needs a name").with_field("name")));
    }
    let source = state
        .store()
        .create_source(body.name.trim(), body.trusted, kind, state.clock().now())
        .map_err(|e| name_taken(e, "source"))?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(json!(source))))
}

/// Admin API keys (names and dates; the keys themselves were shown once).
#[utoipa::path(get, path = "/api/keys", tag = "admin", responses((status = 200)), security(("admin_key" = [])))]
async fn list_keys(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!({"keys": state.store().list_api_keys()?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
}

/// Create an admin API key: `{name}`; the response is the only time the key is shown.
#[utoipa::path(post, path = "/api/keys", tag = "admin", responses((status = 201), (status = 400)), security(("admin_key" = [])))]
async fn create_key(
    _: Admin,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, axum::Json<Value>)> {
    let body: NewKey = serde_json::from_slice(&body).map_err(invalid_body)?;
    let (key, secret) =
        state.store().create_api_key(&body.name, state.clock().now()).map_err(|e| name_taken(e, "key"))?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(json!({"key": key, "secret": secret}))))
}

/// Counts of profiles, events, identities and products.
#[utoipa::path(get, path = "/api/stats", tag = "admin", responses((status = 200)), security(("admin_key" = [])))]
async fn stats(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(
        serde_json::to_value(state.store().counts()?).map_err(|e| ApiError(KizunaError::internal(e.to_string())))?,
    ))
}
