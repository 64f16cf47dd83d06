//! The analytics API (Bearer admin key): runs (list, one, start) and each result of the latest successful run —
//! models, RFM, predictions' distributions, store metrics, cohorts, journey funnel, holdout diagnostics.

use crate::admin::Admin;
use crate::error::invalid_param;
use crate::{ApiError, ApiResult, AppState};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kizuna_analytics::diagnostics::HoldoutReport;
use kizuna_types::{Code, KizunaError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/analytics/runs", get(list_runs).post(start_run))
        .route("/api/analytics/runs/{id}", get(get_run))
        .route("/api/analytics/holdout", get(holdout))
        .route("/api/dashboard", get(dashboard))
        .route("/api/analytics/{section}", get(section))
}

/// The parts of a run's report served at `/api/analytics/{section}`.
const SECTIONS: &[(&str, &str)] = &[
    ("models", "models"),
    ("rfm", "rfm"),
    ("distributions", "distributions"),
    ("metrics", "metrics"),
    ("journey", "journey"),
    ("cohorts", "metrics"),
];

fn no_run(what: &str) -> ApiError {
    ApiError(KizunaError::new(Code::AnalyticsRunNotFound, what.to_owned()))
}

/// The latest successful run with its report.
fn latest(state: &AppState) -> ApiResult<(i64, Value)> {
    let run = state
        .store()
        .analytics_run(None)?
        .ok_or_else(|| no_run("no analytics run has succeeded yet; POST /api/analytics/runs starts one"))?;
    Ok((run.id, run.report.unwrap_or(Value::Null)))
}

/// List analytics runs, newest first.
#[utoipa::path(get, path = "/api/analytics/runs", tag = "analytics",
    params(("limit" = Option<usize>, Query, description = "At most this many (default 20, max 500)")),
    responses((status = 200, description = "Runs: id, trigger, status, started_at, finished_at, error")),
    security(("admin_key" = [])))]
async fn list_runs(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let limit = match params.get("limit") {
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| invalid_param("limit", format!("'{raw}' is not a number from 1 to 500")))?,
        None => 20,
    };
    Ok(axum::Json(json!({"runs": state.store().analytics_runs(limit)?})))
}

/// One run with its full report (fits with parameters, log-likelihood and data window; metrics; funnel…).
#[utoipa::path(get, path = "/api/analytics/runs/{id}", tag = "analytics",
    responses((status = 200, description = "The run and its report"), (status = 404, description = "No such run")),
    security(("admin_key" = [])))]
async fn get_run(_: Admin, State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let id: i64 = id.parse().map_err(|_| invalid_param("id", format!("'{id}' is not a run id")))?;
    let run = state.store().analytics_run(Some(id))?.ok_or_else(|| no_run(&format!("no analytics run {id}")))?;
    Ok(axum::Json(json!(run)))
}

/// The one analytics run a server's API may have going; freed when the run ends, however it ends.
struct ApiRunSlot(Arc<AtomicBool>);

impl ApiRunSlot {
    fn take(going: &Arc<AtomicBool>) -> Option<ApiRunSlot> {
        going.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).ok().map(|_| ApiRunSlot(going.clone()))
    }
}

impl Drop for ApiRunSlot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Start a run: refit the models and rescore every buyer. In the background by default (202); with
/// `wait=true` the response comes when the run is over (200, with its summary).
#[utoipa::path(post, path = "/api/analytics/runs", tag = "analytics",
    params(("wait" = Option<bool>, Query, description = "Answer when the run has finished")),
    responses((status = 202, description = "Run requested"), (status = 200, description = "Run finished (wait=true)"),
        (status = 409, description = "A run started through the API is still going")),
    security(("admin_key" = [])))]
async fn start_run(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let wait = match params.get("wait").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(invalid_param("wait", format!("'{other}' is not true or false"))),
    };
    let (settings, scheduler) = {
        let analytics = state.inner.analytics.read();
        (analytics.settings.clone(), analytics.scheduler.clone())
    };
    if !wait && let Some(scheduler) = scheduler {
        scheduler.request("api");
        return Ok((StatusCode::ACCEPTED, axum::Json(json!({"status": "requested"}))).into_response());
    }
    // Runs go one at a time; a second one queued behind it held a blocking thread all along, and a client
    // repeating `wait=true` could take every thread the API's reads need.
    let Some(slot) = ApiRunSlot::take(&state.inner.api_analytics_run) else {
        return Err(ApiError(KizunaError::new(
            Code::AnalyticsRunning,
            "an analytics run started through the API is still going; wait for it to finish",
        )));
    };
    let store = state.store().clone();
    let now = state.clock().now();
    let membership = state.membership();
    let task = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let summary = kizuna_jobs::run_analytics(store.as_ref(), now, "api", &settings)?;
        // Segments that read scores see the new ones.
        if let Some(membership) = membership {
            membership.request_refresh();
        }
        Ok::<_, kizuna_jobs::JobError>(summary)
    });
    if !wait {
        return Ok((StatusCode::ACCEPTED, axum::Json(json!({"status": "requested"}))).into_response());
    }
    let summary = task
        .await
        .map_err(|e| ApiError(KizunaError::internal(format!("analytics run stopped: {e}"))))?
        .map_err(|e| ApiError(KizunaError::internal(format!("analytics run failed: {e}"))))?;
    Ok((StatusCode::OK, axum::Json(json!(summary))).into_response())
}

/// One result of the latest successful run: `models`, `rfm`, `distributions` (CLV, churn risk, P(alive)),
/// `metrics` (store metrics), `cohorts` (retention by first-order month), `journey` (stage funnel and KPIs).
#[utoipa::path(get, path = "/api/analytics/{section}", tag = "analytics",
    params(("section" = String, Path, description = "models, rfm, distributions, metrics, cohorts or journey")),
    responses((status = 200, description = "That part of the latest run's report, with the run id"),
              (status = 404, description = "No successful run yet")),
    security(("admin_key" = [])))]
async fn section(_: Admin, State(state): State<AppState>, Path(section): Path<String>) -> ApiResult<axum::Json<Value>> {
    let Some((_, key)) = SECTIONS.iter().find(|(name, _)| *name == section) else {
        let names: Vec<&str> = SECTIONS.iter().map(|(n, _)| *n).chain(["runs", "holdout"]).collect();
        return Err(ApiError(KizunaError::new(
            Code::RouteNotFound,
            format!("no analytics result '{section}'; there are {}", names.join(", ")),
        )));
    };
    let (run_id, report) = latest(&state)?;
    let mut body = report[*key].clone();
    if section == "cohorts" {
        body = json!({"cohorts": body["cohorts"]});
    }
    Ok(axum::Json(json!({"run_id": run_id, "as_of": report["as_of"], section: body})))
}

/// Holdout diagnostics of the latest run: predicted vs actual orders in the last `holdout_days` per
/// calibration-frequency group, as JSON or (`format=svg`) as a chart.
#[utoipa::path(get, path = "/api/analytics/holdout", tag = "analytics",
    params(("format" = Option<String>, Query, description = "json (default) or svg")),
    responses((status = 200, description = "The holdout report"), (status = 404, description = "No run, or not enough history")),
    security(("admin_key" = [])))]
async fn holdout(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (run_id, report) = latest(&state)?;
    let holdout = &report["holdout"];
    if holdout.is_null() {
        return Err(no_run(
            "the latest run has no holdout validation: it needs a history at least twice the holdout length and \
             fitted models",
        ));
    }
    match params.get("format").map(String::as_str) {
        None | Some("json") => Ok(axum::Json(json!({"run_id": run_id, "holdout": holdout})).into_response()),
        Some("svg") => {
            let parsed: HoldoutReport = serde_json::from_value(holdout["report"].clone())
                .map_err(|e| ApiError(KizunaError::internal(format!("stored holdout report unreadable: {e}"))))?;
            let title =
                format!("Orders after {}: actual vs predicted", holdout["calibration_end"].as_str().unwrap_or("?"));
            Ok(([(header::CONTENT_TYPE, "image/svg+xml")], parsed.to_svg(&title)).into_response())
        }
        Some(other) => Err(invalid_param("format", format!("'{other}' is not json or svg"))),
    }
}

/// The home page's figures for the last `days` (7, 30, 90 or 365): revenue, orders, AOV, active and new
/// customers, repeat purchase rate with the period before and a daily series (from the latest analytics run),
/// messages sent and attributed revenue (live), and the journey-stage funnel.
#[utoipa::path(get, path = "/api/dashboard", tag = "analytics",
    params(("days" = Option<i64>, Query, description = "7, 30 (default), 90 or 365")),
    responses((status = 200, description = "{days, as_of, kpis, messaging, journey}"),
        (status = 404, description = "No analytics run has succeeded yet")),
    security(("admin_key" = [])))]
async fn dashboard(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let days = match params.get("days") {
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|d| kizuna_analytics::kpis::PERIODS.contains(d))
            .ok_or_else(|| invalid_param("days", "one of 7, 30, 90, 365"))?,
        None => 30,
    };
    let since = state.clock().now() - chrono::Duration::days(days);
    let reader = state.clone();
    let (run_id, report, rows) = crate::blocking(move || {
        let (run_id, report) = latest(&reader)?;
        Ok((run_id, report, reader.store().messages().report("channel", since)?))
    })
    .await?;
    let kpis = report["kpis"]
        .as_array()
        .and_then(|periods| periods.iter().find(|p| p["days"].as_i64() == Some(days)).cloned())
        .unwrap_or(Value::Null);
    let messaging = json!({
        "sent": rows.iter().map(|r| r.sent).sum::<i64>(),
        "orders": rows.iter().map(|r| r.orders).sum::<i64>(),
        "revenue": rows.iter().map(|r| r.revenue).sum::<f64>(),
        "by_channel": rows,
    });
    Ok(axum::Json(json!({
        "days": days,
        "run_id": run_id,
        "as_of": report["as_of"],
        "kpis": kpis,
        "messaging": messaging,
        "journey": report["journey"],
    })))
}

#[cfg(test)]
mod tests {
    use super::ApiRunSlot;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn one_api_run_at_a_time_and_the_slot_frees_when_the_run_ends() {
        let going = Arc::new(AtomicBool::new(false));
        let slot = ApiRunSlot::take(&going).expect("free at first");
        assert!(ApiRunSlot::take(&going).is_none(), "a second run is refused while one is going");
        let run = std::thread::spawn(move || {
            let _slot = slot;
            panic!("a run that fails still frees the slot");
        });
        assert!(run.join().is_err());
        assert!(ApiRunSlot::take(&going).is_some(), "free again");
    }
}
