//! The flows API (Bearer admin key): versioned definitions (JSON or YAML bodies), checking without saving,
//! the starter flows (installed with the templates and segments they use), activation and the kill switch,
//! explicit migration of running people to the latest version, manual enrolment, the replay before launch,
//! runs with their paths, and the per-flow report with hold-out lift.

use crate::admin::{Admin, parse_profile_id};
use crate::error::invalid_param;
use crate::{ApiError, ApiResult, AppState, blocking};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kizuna_flows::starters::{starter_flow, starter_flows};
use kizuna_flows_service::{FlowEngine, FlowsError, SimRequest};
use kizuna_identity::ProfileId;
use kizuna_types::{Code, KizunaError};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/flows", get(list))
        .route("/api/flows/check", post(check))
        .route("/api/flows/starters", get(starters))
        .route("/api/flows/starters/{starter}", post(install_starter))
        .route("/api/flows/{name}", get(get_one).put(put_flow).delete(delete_flow))
        .route("/api/flows/{name}/versions", get(versions))
        .route("/api/flows/{name}/versions/{version}", get(version))
        .route("/api/flows/{name}/activate", post(activate))
        .route("/api/flows/{name}/pause", post(pause))
        .route("/api/flows/{name}/migrate", post(migrate))
        .route("/api/flows/{name}/enroll", post(enroll))
        .route("/api/flows/{name}/simulate", post(simulate))
        .route("/api/flows/{name}/runs", get(runs))
        .route("/api/flows/{name}/report", get(report))
        .route("/api/flow-runs/{id}", get(run))
        .route("/api/profiles/{id}/flows", get(profile_runs))
}

impl From<FlowsError> for ApiError {
    fn from(e: FlowsError) -> Self {
        let error = match e {
            FlowsError::Store(e) => return ApiError::from(e),
            FlowsError::Invalid(e) => {
                let field = if e.field.is_empty() { "definition".to_string() } else { e.field.clone() };
                KizunaError::new(Code::InvalidFlow, e.to_string()).with_field(field)
            }
            FlowsError::NotFound(name) => KizunaError::new(Code::FlowNotFound, format!("no flow \"{name}\"")),
            FlowsError::RunNotFound(id) => KizunaError::new(Code::RunNotFound, format!("no flow run {id}")),
            FlowsError::NotActive(name) => {
                KizunaError::new(Code::FlowNotActive, format!("flow \"{name}\" is not active"))
            }
            FlowsError::ProfileNotFound(id) => {
                KizunaError::new(Code::ProfileNotFound, format!("profile {id} not found")).with_field("profiles")
            }
        };
        ApiError(error)
    }
}

fn engine(state: &AppState) -> ApiResult<FlowEngine> {
    state.flows().ok_or_else(|| ApiError(KizunaError::new(Code::Unavailable, "the flow engine is not running")))
}

/// A JSON body, or YAML when the content type says so.
fn document(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let yaml = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("yaml"));
    if yaml {
        return serde_norway::from_slice(body).map_err(|e| {
            let mut error = KizunaError::new(Code::MalformedBody, format!("invalid YAML: {e}"));
            if let Some(at) = e.location() {
                error = KizunaError::new(
                    Code::MalformedBody,
                    format!("invalid YAML at line {}, column {}: {e}", at.line(), at.column()),
                );
            }
            ApiError(error)
        });
    }
    serde_json::from_slice(body).map_err(|e| ApiError(KizunaError::new(Code::MalformedJson, e.to_string())))
}

fn body_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let value: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError(KizunaError::new(Code::MalformedJson, e.to_string())))?
    };
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        let field = text.split('`').nth(1).unwrap_or("body").to_string();
        ApiError(KizunaError::new(Code::InvalidField, text).with_field(field))
    })
}

/// Flows with their status and headline numbers.
#[utoipa::path(get, path = "/api/flows", tag = "flows",
    responses((status = 200, description = "{flows: [{name, status, version, live_version, definition, entered, in_progress, conversions, messages_queued}]}")),
    security(("admin_key" = [])))]
async fn list(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    blocking(move || {
        let mut out = Vec::new();
        for flow in engine.list()? {
            let report = engine.report(&flow.name)?;
            let mut item = serde_json::to_value(&flow).map_err(|e| ApiError(KizunaError::internal(e.to_string())))?;
            item["entered"] = json!(report.entered);
            item["in_progress"] = json!(report.in_progress);
            item["conversions"] = json!(report.conversions);
            item["messages_queued"] = json!(report.messages_queued);
            out.push(item);
        }
        Ok(axum::Json(json!({"flows": out})))
    })
    .await
}

/// Checks a definition without saving it: 200 with the normalized definition, or the first problem.
#[utoipa::path(post, path = "/api/flows/check", tag = "flows",
    responses((status = 200, description = "{valid: true, definition}"), (status = 400, description = "invalid_flow with `field`")),
    security(("admin_key" = [])))]
async fn check(
    _: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let definition = document(&headers, &body)?;
    blocking(move || {
        let def = engine.check(&definition)?;
        Ok(axum::Json(json!({"valid": true, "definition": def})))
    })
    .await
}

#[utoipa::path(get, path = "/api/flows/starters", tag = "flows",
    responses((status = 200, description = "{starters: [{name, description, templates, segments, definition}]}")),
    security(("admin_key" = [])))]
async fn starters(_: Admin) -> axum::Json<Value> {
    let starters: Vec<Value> = starter_flows()
        .into_iter()
        .map(|s| {
            json!({"name": s.name, "description": s.description, "templates": s.templates, "segments": s.segments,
                   "definition": s.definition})
        })
        .collect();
    axum::Json(json!({"starters": starters}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    /// The flow's name (the starter's name by default).
    name: Option<String>,
}

/// Installs a starter flow as a draft, creating the message templates and segments it uses when missing.
#[utoipa::path(post, path = "/api/flows/starters/{starter}", tag = "flows",
    responses((status = 201, description = "The draft flow"), (status = 409, description = "flow_exists")),
    security(("admin_key" = [])))]
async fn install_starter(
    _: Admin,
    State(state): State<AppState>,
    Path(starter): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let engine = engine(&state)?;
    let install: InstallBody = body_object(&body)?;
    let Some(starter) = starter_flow(&starter) else {
        return Err(ApiError(KizunaError::new(Code::FlowNotFound, format!("no starter flow \"{starter}\""))));
    };
    let name = install.name.unwrap_or_else(|| starter.name.to_string());
    if state.store().flows().flow(&name)?.is_some() {
        return Err(ApiError(
            KizunaError::new(Code::FlowExists, format!("flow \"{name}\" already exists")).with_field("name"),
        ));
    }
    if !starter.templates.is_empty() {
        let messenger = state
            .messenger()
            .ok_or_else(|| ApiError(KizunaError::new(Code::Unavailable, "messaging is not running")))?;
        let shipped = kizuna_messaging::starters::starter_templates();
        for template in starter.templates {
            if state.store().messages().template(template, None)?.is_none()
                && let Some((_, definition)) = shipped.iter().find(|(n, _)| n == template)
            {
                messenger.save_template(template, definition)?;
            }
        }
    }
    if !starter.segments.is_empty() {
        let membership = state
            .membership()
            .ok_or_else(|| ApiError(KizunaError::new(Code::Unavailable, "the segment engine is not running")))?;
        for segment in starter.segments {
            if state.store().segment_by_name(segment)?.is_none()
                && let Some(t) = kizuna_segments::templates::template(segment)
            {
                let condition = kizuna_segments::parse(t.text).map_err(|e| {
                    ApiError(KizunaError::internal(format!("starter segment {segment}: {}", e.message)))
                })?;
                membership.save(segment, t.description, condition).await?;
            }
        }
    }
    let definition = starter.definition.clone();
    let info = blocking(move || Ok(engine.save(&name, &definition)?)).await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

#[utoipa::path(get, path = "/api/flows/{name}", tag = "flows",
    responses((status = 200, description = "{name, status, version, live_version, definition, created_at, updated_at}"), (status = 404, description = "flow_not_found")),
    security(("admin_key" = [])))]
async fn get_one(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    blocking(move || Ok(axum::Json(json!(engine.info(&name)?)))).await
}

/// Creates the flow (a draft) or saves a new version. On an active flow, new entrants get the new version
/// while people inside finish on theirs (POST …/migrate moves them).
#[utoipa::path(put, path = "/api/flows/{name}", tag = "flows",
    request_body(content = String, description = "The definition, JSON or YAML (Content-Type: application/yaml)"),
    responses((status = 200, description = "The saved flow"), (status = 400, description = "invalid_flow with `field`")),
    security(("admin_key" = [])))]
async fn put_flow(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let definition = document(&headers, &body)?;
    blocking(move || Ok(axum::Json(json!(engine.save(&name, &definition)?)))).await
}

#[utoipa::path(delete, path = "/api/flows/{name}", tag = "flows",
    responses((status = 204, description = "Deleted with its runs; its sends not gone out yet are withdrawn"), (status = 404, description = "flow_not_found")),
    security(("admin_key" = [])))]
async fn delete_flow(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    engine(&state)?.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/flows/{name}/versions", tag = "flows",
    responses((status = 200, description = "{versions: [{version, created_at}]}, newest first")), security(("admin_key" = [])))]
async fn versions(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    blocking(move || {
        let versions: Vec<Value> =
            engine.versions(&name)?.into_iter().map(|(v, at)| json!({"version": v, "created_at": at})).collect();
        Ok(axum::Json(json!({"versions": versions})))
    })
    .await
}

#[utoipa::path(get, path = "/api/flows/{name}/versions/{version}", tag = "flows",
    responses((status = 200, description = "{version, definition}")), security(("admin_key" = [])))]
async fn version(
    _: Admin,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let version: i64 = version.parse().map_err(|_| invalid_param("version", "a version is a number"))?;
    blocking(move || Ok(axum::Json(json!({"version": version, "definition": engine.version(&name, version)?})))).await
}

/// Starts the flow: triggers from now on enter the latest version; paused runs continue.
#[utoipa::path(post, path = "/api/flows/{name}/activate", tag = "flows",
    responses((status = 200, description = "The active flow"), (status = 400, description = "invalid_flow: a reference has gone since it was saved")),
    security(("admin_key" = [])))]
async fn activate(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    blocking(move || Ok(axum::Json(json!(engine.activate(&name)?)))).await
}

/// The kill switch: nobody enters, no step runs, timers wait until the flow is activated again; the flow's sends
/// not gone out yet are withdrawn.
#[utoipa::path(post, path = "/api/flows/{name}/pause", tag = "flows",
    responses((status = 200, description = "The paused flow")), security(("admin_key" = [])))]
async fn pause(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!(engine(&state)?.pause(&name).await?)))
}

/// Moves people on other versions to the live one where their current step is still there as the same kind of step.
#[utoipa::path(post, path = "/api/flows/{name}/migrate", tag = "flows",
    responses((status = 200, description = "{migrated}")), security(("admin_key" = [])))]
async fn migrate(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let migrated = engine.migrate(&name).await?;
    Ok(axum::Json(json!({"migrated": migrated})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    #[serde(default)]
    profiles: Vec<Value>,
    segment: Option<String>,
}

/// Enrols people (ids, up to 10,000) or a segment's members in an active flow; the entry rules still apply.
#[utoipa::path(post, path = "/api/flows/{name}/enroll", tag = "flows",
    request_body(content = String, description = "{profiles: [\"id\", …]} or {segment: \"name\"}"),
    responses((status = 200, description = "{considered, entered}"), (status = 409, description = "flow_not_active")),
    security(("admin_key" = [])))]
async fn enroll(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let request: EnrollBody = body_object(&body)?;
    let mut ids: Vec<ProfileId> = Vec::new();
    for (i, raw) in request.profiles.iter().enumerate() {
        let text = match raw {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(invalid_param(&format!("profiles[{i}]"), "a profile id is a string of digits")),
        };
        ids.push(
            text.parse()
                .map_err(|_| invalid_param(&format!("profiles[{i}]"), format!("'{text}' is not a profile id")))?,
        );
    }
    if ids.len() > 10_000 {
        return Err(invalid_param("profiles", "at most 10,000 profiles per request; enrol a segment for more"));
    }
    match (&request.segment, ids.is_empty()) {
        (Some(segment), true) => {
            let Some(stored) = state.store().segment_by_name(segment)? else {
                return Err(ApiError(
                    KizunaError::new(Code::SegmentNotFound, format!("no segment \"{segment}\"")).with_field("segment"),
                ));
            };
            let mut after = None;
            loop {
                let page = state.store().segment_members(stored.id, after, 5_000)?;
                let Some(last) = page.last().map(|(p, _)| *p) else { break };
                after = Some(last);
                ids.extend(page.into_iter().map(|(p, _)| p));
            }
        }
        (None, false) => {}
        _ => return Err(invalid_param("profiles", "give either `profiles` or `segment`")),
    }
    let considered = ids.len();
    let entered = engine.enroll(&name, &ids).await?;
    Ok(axum::Json(json!({"considered": considered, "entered": entered})))
}

/// Replays the flow (or a draft `definition`) over the last `days` of history in simulated time, sending
/// nothing: who would have entered, each path, what would have been sent, suppressed or deferred, and when.
#[utoipa::path(post, path = "/api/flows/{name}/simulate", tag = "flows",
    request_body(content = String, description = "{days: 30, sample: 50, definition?}"),
    responses((status = 200, description = "{from, to, summary, runs, took_ms}")), security(("admin_key" = [])))]
async fn simulate(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let request: SimRequest = body_object(&body)?;
    blocking(move || Ok(axum::Json(json!(engine.simulate(&name, &request)?)))).await
}

#[derive(Deserialize)]
struct RunsQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn run_json(run: &kizuna_flows::Run, flow: &str) -> Value {
    let mut value = json!(run);
    value["id"] = json!(run.id.to_string());
    value["profile"] = json!(run.profile.to_string());
    value["flow"] = json!(flow);
    value
}

/// A flow's runs in id order, paginated by `after` (a run id); `status` filters.
#[utoipa::path(get, path = "/api/flows/{name}/runs", tag = "flows",
    responses((status = 200, description = "{runs: [...], next}")), security(("admin_key" = [])))]
async fn runs(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RunsQuery>,
) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let limit: usize = match query.limit.as_deref() {
        Some(raw) => {
            raw.parse().ok().filter(|n| (1..=1_000).contains(n)).ok_or_else(|| invalid_param("limit", "1 to 1000"))?
        }
        None => 100,
    };
    let after: Option<i64> =
        query.after.as_deref().map(|a| a.parse().map_err(|_| invalid_param("after", "a run id"))).transpose()?;
    if let Some(status) = &query.status
        && kizuna_flows::RunStatus::parse(status).is_none()
    {
        return Err(invalid_param("status", "one of active, waiting, holdout, completed, exited"));
    }
    blocking(move || {
        let runs = engine.runs(Some(&name), None, query.status.as_deref(), after, limit)?;
        let next = (runs.len() == limit).then(|| runs.last().map(|(r, _)| r.id.to_string())).flatten();
        let runs: Vec<Value> = runs.iter().map(|(r, f)| run_json(r, f)).collect();
        Ok(axum::Json(json!({"runs": runs, "next": next})))
    })
    .await
}

#[utoipa::path(get, path = "/api/flows/{name}/report", tag = "flows",
    responses((status = 200, description = "Entered, in progress, exits by reason, per-step outcomes, messages, conversions, revenue, lift per arm against the hold-out with a 95% interval")),
    security(("admin_key" = [])))]
async fn report(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    blocking(move || Ok(axum::Json(json!(engine.report(&name)?)))).await
}

/// One run with the path it took.
#[utoipa::path(get, path = "/api/flow-runs/{id}", tag = "flows",
    responses((status = 200, description = "{run, steps}"), (status = 404, description = "run_not_found")), security(("admin_key" = [])))]
async fn run(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let id: i64 = id.parse().map_err(|_| invalid_param("id", "a run id is a number"))?;
    blocking(move || {
        let (run, flow, steps) = engine.run(id)?;
        Ok(axum::Json(json!({"run": run_json(&run, &flow), "steps": steps})))
    })
    .await
}

/// The flows a person is or was in.
#[utoipa::path(get, path = "/api/profiles/{id}/flows", tag = "flows",
    responses((status = 200, description = "{runs: [...]}")), security(("admin_key" = [])))]
async fn profile_runs(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let engine = engine(&state)?;
    let profile = parse_profile_id(&id)?;
    blocking(move || {
        let runs = engine.runs(None, Some(profile), None, None, 1_000)?;
        let runs: Vec<Value> = runs.iter().map(|(r, f)| run_json(r, f)).collect();
        Ok(axum::Json(json!({"runs": runs})))
    })
    .await
}
