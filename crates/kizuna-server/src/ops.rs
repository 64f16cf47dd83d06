//! Operations: health, readiness, Prometheus metrics, the OpenAPI document, and the JSON 404.

use crate::{ApiError, AppState};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kizuna_types::telemetry;
use kizuna_types::{Code, KizunaError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use utoipa::OpenApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// One recorder per process (tests run several servers in one process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Durations in seconds by default; the two histograms that count things get buckets for counts
            // (with the seconds buckets every commit group fell in `+Inf`).
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(telemetry::COMMIT_GROUP_EVENTS.into()),
                        &[1.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(telemetry::SYNC_COMMITS.into()),
                        &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0],
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.inner.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "draining"})))
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.inner.metrics.render())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Kizuna API", description = "Segment-compatible ingestion and the Kizuna admin API."),
    paths(
        crate::ingest::ingest,
        crate::admin::profile_by_identifier, crate::admin::get_profile, crate::admin::profile_events,
        crate::admin::profile_identities, crate::admin::export_profile, crate::admin::erase_profile,
        crate::admin::set_consent, crate::admin::search_profiles, crate::admin::list_sources, crate::admin::stats,
        crate::products::upsert_products, crate::products::list_products, crate::products::get_product,
        crate::analytics::list_runs, crate::analytics::get_run, crate::analytics::start_run,
        crate::analytics::section, crate::analytics::holdout,
        crate::segments::list, crate::segments::create, crate::segments::replace, crate::segments::get_one,
        crate::segments::delete, crate::segments::preview, crate::segments::templates, crate::segments::members,
        crate::segments::members_csv, crate::segments::transitions, crate::segments::profile_segments,
        crate::recommendations::serve, crate::recommendations::list_placements, crate::recommendations::get_placement,
        crate::recommendations::put_placement, crate::recommendations::delete_placement,
        crate::recommendations::status, crate::recommendations::train,
        crate::messaging::list_templates, crate::messaging::starters, crate::messaging::get_template,
        crate::messaging::put_template, crate::messaging::delete_template, crate::messaging::preview_saved,
        crate::messaging::preview_draft, crate::messaging::test_send, crate::messaging::enqueue,
        crate::messaging::list_messages, crate::messaging::get_message, crate::messaging::retry,
        crate::messaging::report, crate::messaging::list_suppressions, crate::messaging::add_suppression,
        crate::messaging::remove_suppression, crate::messaging::provider_status, crate::messaging::inbound_sms,
        crate::messaging::open_pixel, crate::messaging::click, crate::messaging::unsubscribe_one_click,
        crate::messaging::unsubscribe_page, crate::messaging::preferences_page, crate::messaging::preferences_save,
        crate::flows::list, crate::flows::check, crate::flows::starters, crate::flows::install_starter,
        crate::flows::get_one, crate::flows::put_flow, crate::flows::delete_flow, crate::flows::versions,
        crate::flows::version, crate::flows::activate, crate::flows::pause, crate::flows::migrate,
        crate::flows::enroll, crate::flows::simulate, crate::flows::runs, crate::flows::report, crate::flows::run,
        crate::flows::profile_runs,
        crate::session::sign_in, crate::session::current, crate::session::sign_out,
        crate::admin::create_source, crate::admin::list_keys, crate::admin::create_key,
        crate::analytics::dashboard, crate::segments::translate, crate::messaging::settings,
        crate::messaging::test_channel, crate::messaging::update_settings,
        crate::recommendations::evaluate, crate::recommendations::last_evaluation,
    ),
    components(schemas(crate::ingest::IngestResponse, crate::admin::ConsentChange)),
    modifiers(&Security),
    tags((name = "ingest", description = "Segment HTTP tracking API: /v1/identify, track, page, screen, group, alias, batch (also /v1/i, t, p, s, g, a, b)"),
         (name = "profiles"), (name = "catalog"), (name = "analytics"), (name = "segments"), (name = "recommendations"),
         (name = "templates"), (name = "messages"), (name = "flows", description = "Automated journeys: definitions, starters, activation, replay, runs, reports"), (name = "tracking", description = "Public links in messages: open pixel, click redirect, unsubscribe, preferences"), (name = "admin"), (name = "session", description = "Signing in to the admin web app (/admin/): a session cookie, and a CSRF token to echo on changes"))
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("write_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme("admin_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

async fn openapi() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError(KizunaError::new(Code::RouteNotFound, format!("no endpoint at {}", uri.path())))
}
