//! The segments API (Bearer admin key): definitions (create, replace, delete, list, one), preview without
//! saving, members (paginated, CSV), the Entered/Exited history (by segment, for flows to follow by cursor),
//! a profile's memberships and history, and the starter templates.
//!
//! A definition is sent as `definition` (the JSON tree), `text` (the text syntax) or `template` (a starter
//! segment's name); exactly one of them.

use crate::admin::{Admin, parse_profile_id};
use crate::error::invalid_param;
use crate::{ApiError, ApiResult, AppState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kizuna_identity::ProfileId;
use kizuna_membership::{Membership, MembershipError};
use kizuna_segments::engine::EngineError;
use kizuna_segments::templates::{TEMPLATES, template};
use kizuna_segments::{Condition, from_json, parse};
use kizuna_store::TransitionFilter;
use kizuna_types::{Code, KizunaError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/segments", get(list).post(create))
        .route("/api/segments/translate", post(translate))
        .route("/api/segments/preview", post(preview))
        .route("/api/segments/templates", get(templates))
        .route("/api/segments/{name}", get(get_one).put(replace).delete(delete))
        .route("/api/segments/{name}/members", get(members))
        .route("/api/segments/{name}/members.csv", get(members_csv))
        .route("/api/segments/{name}/transitions", get(transitions))
        .route("/api/profiles/{id}/segments", get(profile_segments))
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        let error = match e {
            MembershipError::Store(e) => return ApiError::from(e),
            MembershipError::Stopped => KizunaError::new(Code::Unavailable, "the segment engine is not running"),
            MembershipError::NotFound(name) => {
                KizunaError::new(Code::SegmentNotFound, format!("no segment is named \"{name}\""))
            }
            MembershipError::Engine(EngineError::InUse { segment, used_by }) => KizunaError::new(
                Code::SegmentInUse,
                format!("segment \"{used_by}\" refers to \"{segment}\"; change or delete it first"),
            ),
            MembershipError::Engine(EngineError::NeedsReload) => {
                KizunaError::internal("segment state was not ready for this definition; nothing was saved")
            }
            MembershipError::Engine(e) => {
                KizunaError::new(Code::InvalidSegment, e.to_string()).with_field("definition")
            }
        };
        ApiError(error)
    }
}

fn engine(state: &AppState) -> ApiResult<Membership> {
    state.membership().ok_or_else(|| ApiError(KizunaError::new(Code::Unavailable, "the segment engine is not running")))
}

/// A definition in any of its forms, plus what create / preview take.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    name: Option<String>,
    description: Option<String>,
    definition: Option<Value>,
    text: Option<String>,
    template: Option<String>,
    sample: Option<usize>,
}

fn read_body(bytes: &[u8]) -> ApiResult<Body> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() { Code::InvalidField } else { Code::MalformedJson };
        ApiError(KizunaError::new(code, format!("invalid segment body: {e}")))
    })
}

fn invalid_segment(field: &str, message: impl Into<String>) -> ApiError {
    ApiError(KizunaError::new(Code::InvalidSegment, message).with_field(field))
}

/// The condition a body defines, and the description it brings (a template's).
fn condition_of(body: &Body) -> ApiResult<(Condition, Option<&'static str>)> {
    match (&body.definition, &body.text, &body.template) {
        (Some(definition), None, None) => {
            let condition = from_json(definition).map_err(|e| {
                let field = match &e {
                    kizuna_segments::DefinitionError::Json { path, .. } => format!("definition{path}"),
                    _ => "definition".to_owned(),
                };
                invalid_segment(field.trim_end_matches('/'), e.to_string())
            })?;
            Ok((condition, None))
        }
        (None, Some(text), None) => {
            let condition = parse(text).map_err(|e| invalid_segment("text", format!("{e}")))?;
            kizuna_segments::check(&condition).map_err(|e| invalid_segment("text", e.to_string()))?;
            Ok((condition, None))
        }
        (None, None, Some(name)) => {
            let t = template(name).ok_or_else(|| {
                let known: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
                invalid_segment("template", format!("no starter segment \"{name}\"; known: {}", known.join(", ")))
            })?;
            let condition = parse(t.text).map_err(|e| ApiError(KizunaError::internal(e.to_string())))?;
            Ok((condition, Some(t.description)))
        }
        (None, None, None) => Err(ApiError(
            KizunaError::new(Code::MissingField, "send the definition as `definition` (JSON), `text` or `template`")
                .with_field("definition"),
        )),
        _ => Err(invalid_segment("definition", "send only one of `definition`, `text` and `template`")),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        && name.trim() == name;
    if ok {
        Ok(())
    } else {
        Err(ApiError(
            KizunaError::new(
                Code::InvalidField,
                "a segment name is 1 to 100 letters, digits, spaces, '-', '_' or '.', without leading or trailing spaces",
            )
            .with_field("name"),
        ))
    }
}

/// List segments with their member counts.
#[utoipa::path(get, path = "/api/segments", tag = "segments",
    responses((status = 200, description = "Segments: id, name, description, definition, text, version, members")),
    security(("admin_key" = [])))]
async fn list(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!({"segments": engine(&state)?.list().await?})))
}

/// Create a segment and build its membership over every profile.
#[utoipa::path(post, path = "/api/segments", tag = "segments",
    request_body(content = String, description = "{name, description?, definition | text | template}", content_type = "application/json"),
    responses((status = 201, description = "The segment with its member count"),
        (status = 400, description = "Invalid definition (position and what was expected)"),
        (status = 409, description = "A segment with this name exists")),
    security(("admin_key" = [])))]
async fn create(_: Admin, State(state): State<AppState>, bytes: Bytes) -> ApiResult<Response> {
    let body = read_body(&bytes)?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError(KizunaError::new(Code::MissingField, "a segment needs a name").with_field("name")))?;
    check_name(&name)?;
    let (condition, template_description) = condition_of(&body)?;
    if state.store().segment_by_name(&name)?.is_some() {
        return Err(ApiError(
            KizunaError::new(
                Code::SegmentExists,
                format!("segment \"{name}\" exists; PUT /api/segments/{name} replaces it"),
            )
            .with_field("name"),
        ));
    }
    let description = body.description.as_deref().or(template_description).unwrap_or_default();
    let saved = engine(&state)?.save(&name, description, condition).await?;
    Ok((StatusCode::CREATED, axum::Json(json!(saved))).into_response())
}

/// Replace a segment's definition (or create it); membership is rebuilt.
#[utoipa::path(put, path = "/api/segments/{name}", tag = "segments",
    request_body(content = String, description = "{description?, definition | text | template}", content_type = "application/json"),
    responses((status = 200, description = "The segment with its new version and member count"),
        (status = 400, description = "Invalid definition")),
    security(("admin_key" = [])))]
async fn replace(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let body = read_body(&bytes)?;
    check_name(&name)?;
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError(
            KizunaError::new(Code::InvalidField, "the body's name differs from the path's; segments are not renamed")
                .with_field("name"),
        ));
    }
    let (condition, template_description) = condition_of(&body)?;
    let existing = state.store().segment_by_name(&name)?;
    let description = match (&body.description, existing) {
        (Some(d), _) => d.clone(),
        (None, Some(existing)) => existing.description,
        (None, None) => template_description.unwrap_or_default().to_owned(),
    };
    Ok(axum::Json(json!(engine(&state)?.save(&name, &description, condition).await?)))
}

/// One segment.
#[utoipa::path(get, path = "/api/segments/{name}", tag = "segments",
    responses((status = 200, description = "The segment"), (status = 404, description = "No such segment")),
    security(("admin_key" = [])))]
async fn get_one(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!(engine(&state)?.get(&name).await?)))
}

/// Delete a segment (its history stays).
#[utoipa::path(delete, path = "/api/segments/{name}", tag = "segments",
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such segment"),
        (status = 409, description = "Another segment refers to it")),
    security(("admin_key" = [])))]
async fn delete(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    engine(&state)?.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Count and sample who a definition matches now, without saving it.
#[utoipa::path(post, path = "/api/segments/preview", tag = "segments",
    request_body(content = String, description = "{definition | text | template, sample? (default 20, max 1000)}", content_type = "application/json"),
    responses((status = 200, description = "count, sample (profile ids), profiles evaluated, took_ms"),
        (status = 400, description = "Invalid definition")),
    security(("admin_key" = [])))]
async fn preview(_: Admin, State(state): State<AppState>, bytes: Bytes) -> ApiResult<axum::Json<Value>> {
    let body = read_body(&bytes)?;
    let sample = body.sample.unwrap_or(20);
    if sample > 1000 {
        return Err(ApiError(
            KizunaError::new(Code::InvalidField, "sample is at most 1000; page through members instead")
                .with_field("sample"),
        ));
    }
    let (condition, _) = condition_of(&body)?;
    let preview = engine(&state)?.preview(condition.clone(), sample).await?;
    Ok(axum::Json(json!({
        "count": preview.count,
        "sample": preview.sample,
        "profiles": preview.profiles,
        "took_ms": preview.took_ms,
        "definition": condition,
        "text": kizuna_segments::print(&condition),
    })))
}

/// Checks a definition and returns it in both forms — the builder and the text editor of the web app stay in
/// sync through this: send `text` to get the JSON tree, or `definition` to get the text.
#[utoipa::path(post, path = "/api/segments/translate", tag = "segments",
    request_body(content = String, description = "{definition | text | template}", content_type = "application/json"),
    responses((status = 200, description = "{definition, text}"), (status = 400, description = "Invalid definition")),
    security(("admin_key" = [])))]
async fn translate(_: Admin, bytes: Bytes) -> ApiResult<axum::Json<Value>> {
    let body = read_body(&bytes)?;
    let (condition, _) = condition_of(&body)?;
    kizuna_segments::check(&condition).map_err(|e| invalid_segment("definition", e.to_string()))?;
    Ok(axum::Json(json!({"definition": condition, "text": kizuna_segments::print(&condition)})))
}

/// The starter segments (copy one with `POST /api/segments {"name": …, "template": …}`).
#[utoipa::path(get, path = "/api/segments/templates", tag = "segments",
    responses((status = 200, description = "Templates: name, description, text, definition")),
    security(("admin_key" = [])))]
async fn templates(_: Admin) -> ApiResult<axum::Json<Value>> {
    let list: Vec<Value> = TEMPLATES
        .iter()
        .map(|t| {
            let definition = parse(t.text).ok();
            json!({"name": t.name, "description": t.description, "text": t.text, "definition": definition})
        })
        .collect();
    Ok(axum::Json(json!({"templates": list})))
}

fn segment_id(state: &AppState, name: &str) -> ApiResult<i64> {
    state
        .store()
        .segment_by_name(name)?
        .map(|s| s.id)
        .ok_or_else(|| ApiError(KizunaError::new(Code::SegmentNotFound, format!("no segment is named \"{name}\""))))
}

fn limit_param(params: &HashMap<String, String>, default: usize, max: usize) -> ApiResult<usize> {
    match params.get("limit") {
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| invalid_param("limit", format!("'{raw}' is not a number from 1 to {max}"))),
        None => Ok(default),
    }
}

fn cursor_param(params: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    params
        .get(name)
        .map(|raw| raw.parse::<i64>().map_err(|_| invalid_param(name, format!("'{raw}' is not a cursor"))))
        .transpose()
}

/// Members in profile-id order, paginated with `after` (the last profile id of the previous page).
#[utoipa::path(get, path = "/api/segments/{name}/members", tag = "segments",
    params(("after" = Option<u64>, Query, description = "Cursor: the last profile id seen"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100, max 1000)")),
    responses((status = 200, description = "members: [{profile_id, since}], next_after"),
        (status = 404, description = "No such segment")),
    security(("admin_key" = [])))]
async fn members(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let id = segment_id(&state, &name)?;
    let limit = limit_param(&params, 100, 1000)?;
    let after = cursor_param(&params, "after")?.map(|a| a.max(0) as ProfileId);
    let page = state.store().segment_members(id, after, limit)?;
    let next_after = (page.len() == limit).then(|| page.last().map(|(p, _)| *p)).flatten();
    let members: Vec<Value> = page.iter().map(|(p, since)| json!({"profile_id": p, "since": since})).collect();
    Ok(axum::Json(json!({"segment": name, "members": members, "next_after": next_after})))
}

/// Identifiers come from customers: a cell starting with `=`, `+`, `-` or `@` would run as a formula when a
/// marketer opens the export in a spreadsheet, so it is quoted as text.
fn spreadsheet_safe(value: String) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{value}") } else { value }
}

/// Every member as CSV: profile id, since, email, phone, user id, LINE id.
#[utoipa::path(get, path = "/api/segments/{name}/members.csv", tag = "segments",
    responses((status = 200, description = "text/csv", content_type = "text/csv"), (status = 404, description = "No such segment")),
    security(("admin_key" = [])))]
async fn members_csv(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let id = segment_id(&state, &name)?;
    let store = state.store().clone();
    let csv = tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        let mut out = csv::Writer::from_writer(Vec::new());
        let header = ["profile_id", "since", "email", "phone", "user_id", "line_user_id"];
        out.write_record(header).map_err(|e| ApiError(KizunaError::internal(e.to_string())))?;
        let mut after = None;
        loop {
            let page = store.segment_members(id, after, 1000)?;
            let Some(last) = page.last().map(|(p, _)| *p) else { break };
            for (profile, since) in page {
                let identities = store.profile(profile)?.map(|p| p.identities).unwrap_or_default();
                let first = |kind: &str| {
                    let value = identities
                        .iter()
                        .find(|i| i.kind.as_str() == kind)
                        .map(|i| i.value.clone())
                        .unwrap_or_default();
                    // Phones are normalised E.164 (`+` and digits): never a formula.
                    if kind == "phone" { value } else { spreadsheet_safe(value) }
                };
                let row = [
                    profile.to_string(),
                    since.to_rfc3339(),
                    first("email"),
                    first("phone"),
                    first("user_id"),
                    first("line_user_id"),
                ];
                out.write_record(&row).map_err(|e| ApiError(KizunaError::internal(e.to_string())))?;
            }
            after = Some(last);
        }
        out.into_inner().map_err(|e| ApiError(KizunaError::internal(e.to_string())))
    })
    .await
    .map_err(|e| ApiError(KizunaError::internal(e.to_string())))??;
    let disposition = format!("attachment; filename=\"segment-{id}.csv\"");
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        csv,
    )
        .into_response())
}

/// The segment's Segment Entered / Segment Exited records, oldest first after the `after_seq` cursor: what
/// flows follow.
#[utoipa::path(get, path = "/api/segments/{name}/transitions", tag = "segments",
    params(("after_seq" = Option<i64>, Query, description = "Cursor: the last seq seen (default 0)"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100, max 1000)")),
    responses((status = 200, description = "transitions: [{seq, profile_id, entered, at, cause}]"),
        (status = 404, description = "No such segment")),
    security(("admin_key" = [])))]
async fn transitions(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let id = segment_id(&state, &name)?;
    let filter = TransitionFilter {
        segment_id: Some(id),
        after_seq: cursor_param(&params, "after_seq")?.unwrap_or(0),
        limit: limit_param(&params, 100, 1000)?,
        ..TransitionFilter::default()
    };
    Ok(axum::Json(json!({"segment": name, "transitions": state.store().segment_transitions(&filter)?})))
}

/// The segments a profile is in now, and its membership history (oldest first).
#[utoipa::path(get, path = "/api/profiles/{id}/segments", tag = "profiles",
    params(("limit" = Option<usize>, Query, description = "History entries (default 100, max 1000)")),
    responses((status = 200, description = "segments: [{id, name, since}], history: [transitions]"),
        (status = 404, description = "No such profile")),
    security(("admin_key" = [])))]
async fn profile_segments(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let requested = parse_profile_id(&id)?;
    let profile = state
        .store()
        .live_profile_id(requested)?
        .ok_or_else(|| ApiError(KizunaError::new(Code::ProfileNotFound, format!("no profile has id {requested}"))))?;
    let limit = limit_param(&params, 100, 1000)?;
    let segments: Vec<Value> = state
        .store()
        .profile_segments(profile)?
        .into_iter()
        .map(|(id, name, since)| json!({"id": id, "name": name, "since": since}))
        .collect();
    let filter = TransitionFilter { profile: Some(profile), limit, ..TransitionFilter::default() };
    let history = state.store().segment_transitions(&filter)?;
    Ok(axum::Json(json!({"profile_id": profile, "segments": segments, "history": history})))
}
