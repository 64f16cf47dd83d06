//! The product catalog API: bulk upsert (JSON or CSV), list, get.

use crate::admin::Admin;
use crate::error::invalid_param;
use crate::{ApiError, ApiResult, AppState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::get;
use kizuna_catalog::Product;
use kizuna_import::{ImportItem, ImportKind};
use kizuna_types::{Code, KizunaError};
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/products", get(list_products).post(upsert_products))
        .route("/api/products/{id}", get(get_product))
}

const MAX_PRODUCTS_PER_REQUEST: usize = 10_000;

/// Bulk upsert products: a JSON array (or `{"products": [...]}`), or a CSV file (`Content-Type: text/csv`,
/// Shopify products export or the generic format). All or nothing: one invalid product rejects the request.
#[utoipa::path(post, path = "/api/products", tag = "catalog",
    responses((status = 200, description = "{upserted: N}"), (status = 400, description = "An invalid product; nothing stored")),
    security(("admin_key" = [])))]
async fn upsert_products(
    _: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Value>> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let products = if content_type.starts_with("text/csv") { from_csv(&body)? } else { from_json(&body)? };
    if products.len() > MAX_PRODUCTS_PER_REQUEST {
        return Err(ApiError(KizunaError::new(
            Code::BatchTooLarge,
            format!("at most {MAX_PRODUCTS_PER_REQUEST} products per request"),
        )));
    }
    let upserted = state.store().upsert_products(&products, state.inner.clock.now())?;
    if let Some(recs) = state.recommender() {
        tokio::task::spawn_blocking(move || recs.upsert_products(&products))
            .await
            .map_err(|e| ApiError(KizunaError::internal(e.to_string())))?;
    }
    Ok(axum::Json(json!({"upserted": upserted})))
}

fn from_json(body: &[u8]) -> ApiResult<Vec<Product>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError(KizunaError::new(Code::MalformedJson, format!("invalid JSON: {e}"))))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("products") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ApiError(
                    KizunaError::new(Code::MissingField, "send an array of products or {\"products\": [...]}")
                        .with_field("products"),
                ));
            }
        },
        _ => return Err(ApiError(KizunaError::new(Code::InvalidField, "send an array of products"))),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let product: Product = serde_json::from_value(item).map_err(|e| {
                ApiError(KizunaError::new(Code::InvalidField, e.to_string()).with_field(format!("[{index}]")))
            })?;
            product.validate().map_err(|e| {
                ApiError(KizunaError::new(Code::InvalidField, e.message).with_field(format!("[{index}].{}", e.field)))
            })?;
            Ok(product)
        })
        .collect()
}

fn from_csv(body: &[u8]) -> ApiResult<Vec<Product>> {
    let importer = kizuna_import::parse(ImportKind::Products, body)
        .map_err(|e| ApiError(KizunaError::new(Code::InvalidField, e.reason).with_field(format!("line {}", e.line))))?;
    let mut products = Vec::new();
    for record in importer {
        let record = record.map_err(|e| {
            ApiError(KizunaError::new(Code::InvalidField, e.reason).with_field(format!("line {}", e.line)))
        })?;
        for item in record.items {
            if let ImportItem::Product(product) = item {
                products.push(product);
            }
        }
    }
    Ok(products)
}

/// List products by id, paginated: `after` (the last id of the previous page), `limit` (1–1000, default 100).
#[utoipa::path(get, path = "/api/products", tag = "catalog", responses((status = 200, description = "{products, next_after}")), security(("admin_key" = [])))]
async fn list_products(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let limit = match params.get("limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| invalid_param("limit", "must be between 1 and 1000"))?,
        None => 100,
    };
    let products = state.store().list_products(params.get("after").map(String::as_str), limit)?;
    let next_after = (products.len() == limit).then(|| products.last().map(|p| p.id.clone())).flatten();
    Ok(axum::Json(json!({"products": products, "next_after": next_after})))
}

/// Get one product.
#[utoipa::path(get, path = "/api/products/{id}", tag = "catalog", responses((status = 200), (status = 404)), security(("admin_key" = [])))]
async fn get_product(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Product>> {
    state
        .store()
        .product(&id)?
        .map(axum::Json)
        .ok_or_else(|| ApiError(KizunaError::new(Code::ProductNotFound, format!("no product has id '{id}'"))))
}
