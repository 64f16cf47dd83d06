//! The recommendations API. Serving (`GET /api/recommendations/{placement}`) takes an admin key or a source's
//! write key as `?key=` (a storefront's public, read-only use: write keys are already public in browsers);
//! placements and training need the admin key.
//!
//! An unknown profile is a cold-start visitor, not an error; an unknown placement or product is a 404, a bad
//! parameter a 400, always with the JSON error shape.

use crate::admin::{Admin, parse_profile_id};
use crate::error::invalid_param;
use crate::{ApiError, ApiResult, AppState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use kizuna_identity::{IdKind, Identifier};
use kizuna_recs::{Placement, Rules, Strategy, place_keys};
use kizuna_recs_service::{Query as RecsQuery, Recommender, RecsError};
use kizuna_types::{Code, KizunaError};
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/recommendations/placements", get(list_placements))
        .route("/api/recommendations/placements/{name}", get(get_placement).put(put_placement).delete(delete_placement))
        .route("/api/recommendations/status", get(status))
        .route("/api/recommendations/train", post(train))
        .route("/api/recommendations/evaluation", get(last_evaluation).post(evaluate))
        .route("/api/recommendations/{placement}", get(serve))
}

impl From<RecsError> for ApiError {
    fn from(e: RecsError) -> Self {
        let error = match e {
            RecsError::Store(e) => return ApiError::from(e),
            RecsError::PlacementNotFound(name) => {
                KizunaError::new(Code::PlacementNotFound, format!("no placement is named \"{name}\""))
                    .with_field("placement")
            }
            RecsError::UnknownProduct(id) => {
                KizunaError::new(Code::ProductNotFound, format!("no product has the id \"{id}\"")).with_field("product")
            }
            RecsError::InvalidPlacement(e) => KizunaError::new(Code::InvalidPlacement, e.message).with_field(e.field),
            RecsError::BuiltIn => KizunaError::new(Code::PlacementBuiltIn, e.to_string()).with_field("name"),
            RecsError::Training(message) => KizunaError::internal(message),
            RecsError::NothingToLearn => KizunaError::new(Code::NothingToLearn, e.to_string()),
        };
        ApiError(error)
    }
}

fn recommender(state: &AppState) -> ApiResult<Recommender> {
    state.recommender().ok_or_else(|| ApiError(KizunaError::new(Code::Unavailable, "recommendations are not running")))
}

/// Admin key as a Bearer token, or a source's write key as `key`.
fn authorize_reader(state: &AppState, headers: &HeaderMap, params: &HashMap<String, String>) -> ApiResult<()> {
    if headers.contains_key(header::AUTHORIZATION) || !params.contains_key("key") {
        // A read: a signed-in session needs no CSRF token for it.
        if !headers.contains_key(header::AUTHORIZATION) && crate::session::signed_in(headers, state)? {
            return Ok(());
        }
        return crate::admin::authorize(headers, state);
    }
    let key = params.get("key").map(String::as_str).unwrap_or_default();
    state.source(key).map(|_| ())
}

const PARAMS: &[&str] =
    &["key", "profile_id", "anonymous_id", "user_id", "email", "product", "cart", "limit", "country", "region", "city"];

/// Products for a placement.
#[utoipa::path(get, path = "/api/recommendations/{placement}", tag = "recommendations",
    params(("placement" = String, Path, description = "A placement name (GET /api/recommendations/placements)"),
           ("profile_id" = Option<String>, Query, description = "The visitor's profile id; or anonymous_id, user_id, email"),
           ("product" = Option<String>, Query, description = "The product being viewed"),
           ("cart" = Option<String>, Query, description = "Comma-separated product ids in the cart"),
           ("limit" = Option<usize>, Query, description = "1 to 100; default the placement's"),
           ("country" = Option<String>, Query, description = "Where the visitor is (also region, city); default the profile's"),
           ("key" = Option<String>, Query, description = "A source's write key, for storefronts (else an admin Bearer key)")),
    responses((status = 200, description = "{placement, profile_id, items: [{product, score, reason, strategy}]}"),
              (status = 404, description = "Unknown placement or product")))]
async fn serve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(placement): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    authorize_reader(&state, &headers, &params)?;
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(invalid_param(unknown, format!("unknown parameter '{unknown}'; use {}", PARAMS.join(", "))));
    }
    let mut products: Vec<String> = Vec::new();
    if let Some(p) = params.get("product").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        products.push(p.to_owned());
    }
    for p in params.get("cart").into_iter().flat_map(|c| c.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        if !products.iter().any(|x| x == p) {
            products.push(p.to_owned());
        }
    }
    if products.len() > 100 {
        return Err(invalid_param("cart", "at most 100 products"));
    }
    let limit = match params.get("limit") {
        Some(raw) => Some(
            raw.parse::<usize>()
                .ok()
                .filter(|n| (1..=kizuna_recs::MAX_LIMIT).contains(n))
                .ok_or_else(|| invalid_param("limit", format!("'{raw}' is not a number between 1 and 100")))?,
        ),
        None => None,
    };
    let get = |k: &str| params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    if get("region").is_some() && get("country").is_none() {
        return Err(invalid_param("region", "a region needs its country (country=JP&region=13)"));
    }
    let places = (get("country").is_some() || get("region").is_some() || get("city").is_some())
        .then(|| place_keys(get("country"), get("region"), get("city")));
    let recs = recommender(&state)?;
    // Resolving the profile reads SQLite and ranking is CPU work: both off the async workers, and at most a few
    // at once (more would only queue on the cores and open reader connections beyond the store's pool).
    let _permit =
        state.inner.blocking_reads.acquire().await.map_err(|e| ApiError(KizunaError::internal(e.to_string())))?;
    let reader = state.clone();
    let (profile, answer) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let profile = resolve_profile(&reader, &params)?;
        let query = RecsQuery { profile, products, places, limit };
        Ok((profile, recs.recommend(&placement, &query)?))
    })
    .await
    .map_err(|e| ApiError(KizunaError::internal(e.to_string())))??;
    Ok(axum::Json(json!({
        "placement": answer.placement,
        "profile_id": profile,
        "items": answer.items,
    })))
}

/// The profile a request names, following merges; an identifier nobody has is a cold start (`None`).
fn resolve_profile(state: &AppState, params: &HashMap<String, String>) -> ApiResult<Option<u64>> {
    if let Some(raw) = params.get("profile_id") {
        let id =
            parse_profile_id(raw).map_err(|_| invalid_param("profile_id", format!("'{raw}' is not a profile id")))?;
        return Ok(state.store().live_profile_id(id)?);
    }
    for (param, kind) in [("user_id", IdKind::UserId), ("anonymous_id", IdKind::AnonymousId), ("email", IdKind::Email)]
    {
        let Some(value) = params.get(param) else { continue };
        let identifier = Identifier::normalised(kind, value, state.inner.identifiers.default_country.as_deref())
            .ok_or_else(|| invalid_param(param, format!("'{value}' is not a valid {param}")))?;
        return Ok(state.store().profile_by_identifier(&identifier)?);
    }
    Ok(None)
}

#[utoipa::path(get, path = "/api/recommendations/placements", tag = "recommendations",
    responses((status = 200, description = "Saved placements and the built-in starters")), security(("admin_key" = [])))]
async fn list_placements(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!({"placements": recommender(&state)?.placements()})))
}

#[utoipa::path(get, path = "/api/recommendations/placements/{name}", tag = "recommendations",
    responses((status = 200, description = "One placement"), (status = 404, description = "Unknown placement")),
    security(("admin_key" = [])))]
async fn get_placement(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!(recommender(&state)?.placement(&name)?)))
}

/// Creates or replaces a placement: `{strategy, rules?, fallback?, limit?, description?}`.
#[utoipa::path(put, path = "/api/recommendations/placements/{name}", tag = "recommendations",
    responses((status = 200, description = "The saved placement"), (status = 400, description = "Invalid; nothing saved")),
    security(("admin_key" = [])))]
async fn put_placement(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError(KizunaError::new(Code::MalformedJson, format!("invalid JSON: {e}"))))?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError(KizunaError::new(Code::InvalidPlacement, "send a JSON object")));
    };
    match object.get("name") {
        Some(Value::String(n)) if *n != name => {
            return Err(ApiError(
                KizunaError::new(Code::InvalidPlacement, "the body's name differs from the path's").with_field("name"),
            ));
        }
        _ => {
            object.insert("name".into(), Value::String(name));
        }
    }
    let placement = parse_placement(value)?;
    let recs = recommender(&state)?;
    let saved = tokio::task::spawn_blocking(move || recs.save_placement(&placement))
        .await
        .map_err(|e| ApiError(KizunaError::internal(e.to_string())))??;
    Ok(axum::Json(json!(saved)))
}

/// Parses a placement, naming the part that is wrong (`strategy`, `fallback[1]`, `rules`, `limit`…).
fn parse_placement(value: Value) -> ApiResult<Placement> {
    let invalid = |field: String, e: serde_json::Error| {
        ApiError(KizunaError::new(Code::InvalidPlacement, e.to_string()).with_field(field))
    };
    if let Some(object) = value.as_object() {
        if !object.contains_key("strategy") {
            return Err(ApiError(
                KizunaError::new(Code::InvalidPlacement, "a placement needs a strategy, e.g. {\"type\": \"trending\"}")
                    .with_field("strategy"),
            ));
        }
        for (key, part) in object {
            let checked = match key.as_str() {
                "strategy" => serde_json::from_value::<Strategy>(part.clone()).map(drop),
                "rules" => serde_json::from_value::<Rules>(part.clone()).map(drop),
                "limit" => serde_json::from_value::<usize>(part.clone()).map(drop),
                "name" | "description" => serde_json::from_value::<String>(part.clone()).map(drop),
                "fallback" => match part.as_array() {
                    Some(list) => {
                        for (i, s) in list.iter().enumerate() {
                            serde_json::from_value::<Strategy>(s.clone())
                                .map_err(|e| invalid(format!("fallback[{i}]"), e))?;
                        }
                        Ok(())
                    }
                    None => serde_json::from_value::<Vec<Strategy>>(part.clone()).map(drop),
                },
                other => {
                    return Err(ApiError(
                        KizunaError::new(
                            Code::InvalidPlacement,
                            format!("unknown field '{other}'; use strategy, rules, fallback, limit, description"),
                        )
                        .with_field(other),
                    ));
                }
            };
            checked.map_err(|e| invalid(key.clone(), e))?;
        }
    }
    serde_json::from_value(value).map_err(|e| invalid("placement".into(), e))
}

#[utoipa::path(delete, path = "/api/recommendations/placements/{name}", tag = "recommendations",
    responses((status = 204, description = "Deleted (a built-in of the same name takes its place)"),
              (status = 404, description = "Unknown placement"), (status = 409, description = "A built-in placement")),
    security(("admin_key" = [])))]
async fn delete_placement(_: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    recommender(&state)?.delete_placement(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/recommendations/status", tag = "recommendations",
    responses((status = 200, description = "Counters, rankings and model")), security(("admin_key" = [])))]
async fn status(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!(recommender(&state)?.status())))
}

/// Rebuilds rankings and retrains the personalized model now; answers when done.
#[utoipa::path(post, path = "/api/recommendations/train", tag = "recommendations",
    responses((status = 200, description = "The new model's summary")), security(("admin_key" = [])))]
async fn train(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let recs = recommender(&state)?;
    let info = tokio::task::spawn_blocking(move || {
        recs.rebuild_rankings();
        recs.train()
    })
    .await
    .map_err(|e| ApiError(KizunaError::internal(e.to_string())))??;
    Ok(axum::Json(json!({"model": info})))
}

/// Evaluate the recommenders offline on this store's history now (each person's latest 20% of product touches
/// held out): recall@20, NDCG@10, NDCG@100 and coverage for popularity and EASE.
#[utoipa::path(post, path = "/api/recommendations/evaluation", tag = "recommendations",
    responses((status = 200, description = "{evaluation: {evaluated_at, split, users, items, interactions, results}}"),
        (status = 409, description = "Nothing to learn from yet")),
    security(("admin_key" = [])))]
async fn evaluate(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let recs = recommender(&state)?;
    let evaluation = crate::blocking(move || Ok(recs.evaluate()?)).await?;
    Ok(axum::Json(json!({"evaluation": evaluation})))
}

/// The latest offline evaluation since the server started (`null` when none ran).
#[utoipa::path(get, path = "/api/recommendations/evaluation", tag = "recommendations",
    responses((status = 200, description = "{evaluation: … or null}")), security(("admin_key" = [])))]
async fn last_evaluation(_: Admin, State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(json!({"evaluation": recommender(&state)?.last_evaluation()})))
}
