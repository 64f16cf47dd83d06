//! The recommendations API over loopback HTTP against the real server: serving with an admin or storefront
//! key, every error path, placements CRUD, training, and counters that follow ingested events.

mod common;

use common::{TestServer, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn sync(server: &TestServer) {
    let recs = server.recommender.clone();
    tokio::task::spawn_blocking(move || recs.sync()).await.expect("sync");
}

fn ids(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["product"]["id"].as_str().expect("id").to_owned())
        .collect()
}

fn order(user: &str, order_id: &str, products: &[&str]) -> Value {
    let products: Vec<Value> = products.iter().map(|p| json!({"product_id": p, "quantity": 1, "price": 50})).collect();
    json!({"type": "track", "userId": user, "event": "Order Completed",
           "properties": {"order_id": order_id, "total": 100, "products": products}})
}

async fn store_with_orders() -> TestServer {
    let server = TestServer::start().await;
    let catalog = json!([
        {"id": "p1", "title": "Runner", "price": 50, "categories": ["shoes"], "brand": "acme"},
        {"id": "p2", "title": "Sock pack", "price": 10, "categories": ["socks"], "brand": "cozy"},
        {"id": "p3", "title": "Trail", "price": 60, "categories": ["shoes"], "brand": "bolt"},
        {"id": "p4", "title": "Tote", "price": 30, "categories": ["bags"], "brand": "acme"},
        {"id": "p5", "title": "Sold out", "price": 40, "categories": ["shoes"], "brand": "acme", "in_stock": false}
    ]);
    let (status, body) = server.admin(Method::POST, "/api/products", Some(catalog)).await;
    assert_eq!(status, 200, "{body}");
    let mut batch = Vec::new();
    for i in 0..4 {
        batch.push(order(&format!("u{i}"), &format!("o{i}"), &["p1", "p2"]));
    }
    batch.push(order("u9", "o9", &["p3"]));
    batch.push(order("u8", "o8", &["p5"]));
    batch.push(order("u8", "o8b", &["p5"]));
    let (status, body) = server.backend("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(status, 200, "{body}");
    sync(&server).await;
    server
}

#[tokio::test]
async fn serving_ranks_from_ingested_events_with_reasons_and_catalog_fields() {
    let server = store_with_orders().await;
    let (status, best) = server.admin_get("/api/recommendations/home_bestsellers").await;
    assert_eq!(status, 200, "{best}");
    // p5 sold most but is out of stock; p1 and p2 sold four each, p3 one.
    assert_eq!(ids(&best), ["p1", "p2", "p3"]);
    assert_eq!(best["items"][0]["product"]["title"], "Runner");
    assert_eq!(best["items"][0]["reason"], "bestseller");
    assert_eq!(best["items"][0]["strategy"], "bestsellers");

    let (status, cross) = server.admin_get("/api/recommendations/cart_cross_sell?product=p1").await;
    assert_eq!(status, 200, "{cross}");
    assert_eq!(ids(&cross)[0], "p2");
    assert_eq!(cross["items"][0]["reason"], "bought together with Runner");
    assert!(!ids(&cross).contains(&"p1".to_owned()), "never the context product: {cross}");

    // A buyer does not get back what they bought (p1, p2) from bestsellers.
    let (status, mine) = server.admin_get("/api/recommendations/home_bestsellers?user_id=u0").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&mine), ["p3"]);
    assert!(mine["profile_id"].is_u64());
    // limit
    let (_, one) = server.admin_get("/api/recommendations/home_bestsellers?limit=1").await;
    assert_eq!(ids(&one), ["p1"]);
}

#[tokio::test]
async fn storefront_key_cold_start_and_every_error_path() {
    let server = store_with_orders().await;
    // A write key serves storefronts.
    let url =
        server.url(&format!("/api/recommendations/home_trending?key={}&anonymous_id=fresh-visitor", server.web_key));
    let (status, body) = server.raw(server.client.get(url)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["profile_id"].is_null(), "an unknown visitor is a cold start");
    assert!(!ids(&body).is_empty(), "cold start falls back to trending/bestsellers: {body}");

    let bad_key = server.url("/api/recommendations/home_trending?key=nope");
    assert_error(&server.raw(server.client.get(bad_key)).await, 401, "invalid_write_key", None);
    assert_error(
        &server.raw(server.client.get(server.url("/api/recommendations/home_trending"))).await,
        401,
        "missing_api_key",
        None,
    );
    assert_error(
        &server.admin_get("/api/recommendations/nowhere").await,
        404,
        "placement_not_found",
        Some("placement"),
    );
    assert_error(
        &server.admin_get("/api/recommendations/product_similar?product=zzz").await,
        404,
        "product_not_found",
        Some("product"),
    );
    assert_error(
        &server.admin_get("/api/recommendations/product_similar?cart=p1,zzz").await,
        404,
        "product_not_found",
        Some("product"),
    );
    assert_error(
        &server.admin_get("/api/recommendations/home_trending?limit=0").await,
        400,
        "invalid_parameter",
        Some("limit"),
    );
    assert_error(
        &server.admin_get("/api/recommendations/home_trending?limit=x").await,
        400,
        "invalid_parameter",
        Some("limit"),
    );
    assert_error(
        &server.admin_get("/api/recommendations/home_trending?colour=red").await,
        400,
        "invalid_parameter",
        Some("colour"),
    );
    assert_error(
        &server.admin_get("/api/recommendations/home_trending?profile_id=abc").await,
        400,
        "invalid_parameter",
        Some("profile_id"),
    );
    assert_error(
        &server.admin_get("/api/recommendations/home_trending?email=not-an-email").await,
        400,
        "invalid_parameter",
        Some("email"),
    );
    // Unknown but valid identifiers are cold starts, not errors.
    let (status, body) = server.admin_get("/api/recommendations/for_you?email=nobody@example.com").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.admin_get("/api/recommendations/for_you?profile_id=999999").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn placements_are_managed_through_the_api() {
    let server = store_with_orders().await;
    let (status, list) = server.admin_get("/api/recommendations/placements").await;
    assert_eq!(status, 200);
    let names: Vec<&str> =
        list["placements"].as_array().expect("list").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"cart_cross_sell") && names.contains(&"for_you"), "{names:?}");

    let shoes = json!({"strategy": {"type": "bestsellers", "window_days": 7},
                       "rules": {"include_categories": ["shoes"]}, "fallback": [], "limit": 5});
    let (status, saved) =
        server.admin(Method::PUT, "/api/recommendations/placements/shoe_best", Some(shoes.clone())).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["builtin"], false);
    assert_eq!(saved["version"], 1);
    let (_, served) = server.admin_get("/api/recommendations/shoe_best").await;
    assert_eq!(ids(&served), ["p1", "p3"]);
    let (_, again) = server.admin(Method::PUT, "/api/recommendations/placements/shoe_best", Some(shoes)).await;
    assert_eq!(again["version"], 2);

    let bad = json!({"strategy": {"type": "trending"}, "limit": 500});
    assert_error(
        &server.admin(Method::PUT, "/api/recommendations/placements/x", Some(bad)).await,
        400,
        "invalid_placement",
        Some("limit"),
    );
    let bad = json!({"strategy": {"type": "telepathy"}});
    assert_error(
        &server.admin(Method::PUT, "/api/recommendations/placements/x", Some(bad)).await,
        400,
        "invalid_placement",
        Some("strategy"),
    );
    let bad = json!({"strategy": {"type": "trending"}, "rules": {"boosts": [{"brand": "acme", "factor": 0}]}});
    assert_error(
        &server.admin(Method::PUT, "/api/recommendations/placements/x", Some(bad)).await,
        400,
        "invalid_placement",
        Some("rules.boosts[0].factor"),
    );
    let bad = json!({"name": "other", "strategy": {"type": "trending"}});
    assert_error(
        &server.admin(Method::PUT, "/api/recommendations/placements/x", Some(bad)).await,
        400,
        "invalid_placement",
        Some("name"),
    );
    assert_error(
        &server
            .admin(
                Method::PUT,
                "/api/recommendations/placements/Bad%20Name",
                Some(json!({"strategy": {"type": "trending"}})),
            )
            .await,
        400,
        "invalid_placement",
        Some("name"),
    );
    let (status, _) = server.admin_get("/api/recommendations/placements/x").await;
    assert_eq!(status, 404, "nothing saved by rejected requests");

    assert_error(
        &server.admin(Method::DELETE, "/api/recommendations/placements/for_you", None).await,
        409,
        "placement_builtin",
        Some("name"),
    );
    let (status, _) = server.admin(Method::DELETE, "/api/recommendations/placements/shoe_best", None).await;
    assert_eq!(status, 204);
    assert_error(
        &server.admin_get("/api/recommendations/shoe_best").await,
        404,
        "placement_not_found",
        Some("placement"),
    );
    assert_error(
        &server.admin(Method::DELETE, "/api/recommendations/placements/shoe_best", None).await,
        404,
        "placement_not_found",
        Some("placement"),
    );
}

#[tokio::test]
async fn training_personalizes_and_new_products_arrive_at_once() {
    let server = store_with_orders().await;
    // A newcomer buys the runner: the model learned runner → socks.
    let (status, _) = server.backend("/v1/track", order("newbie", "o-new", &["p1"])).await;
    assert_eq!(status, 200);
    sync(&server).await;
    let (status, trained) = server.admin(Method::POST, "/api/recommendations/train", None).await;
    assert_eq!(status, 200, "{trained}");
    assert!(trained["model"]["items"].as_u64().is_some_and(|n| n >= 3), "{trained}");
    let (_, picks) = server.admin_get("/api/recommendations/for_you?user_id=newbie").await;
    assert_eq!(ids(&picks).first().map(String::as_str), Some("p2"), "{picks}");
    assert_eq!(picks["items"][0]["strategy"], "for_you");
    let (_, because) = server.admin_get("/api/recommendations/post_purchase?user_id=newbie").await;
    assert_eq!(because["items"][0]["reason"], "because you bought Runner", "{because}");

    let created_at = chrono::Utc::now().to_rfc3339();
    let new = json!([{"id": "p9", "title": "Fresh", "price": 20, "created_at": created_at}]);
    assert_eq!(server.admin(Method::POST, "/api/products", Some(new)).await.0, 200);
    let (_, arrivals) = server.admin_get("/api/recommendations/new_arrivals").await;
    assert_eq!(ids(&arrivals), ["p9"]);
    let (status, st) = server.admin_get("/api/recommendations/status").await;
    assert_eq!(status, 200);
    assert_eq!(st["products"], 6);
    assert!(st["model"]["trained_at"].is_string());
}

#[tokio::test]
async fn training_an_empty_store_says_there_is_nothing_to_learn() {
    let server = TestServer::start().await;
    assert_error(&server.admin(Method::POST, "/api/recommendations/train", None).await, 409, "nothing_to_learn", None);
    let (status, body) = server.admin_get("/api/recommendations/for_you?user_id=nobody").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([]));
}

#[tokio::test]
async fn offline_evaluation_on_the_stores_own_history() {
    let empty = TestServer::start().await;
    let (status, none) = empty.admin_get("/api/recommendations/evaluation").await;
    assert_eq!(status, 200);
    assert!(none["evaluation"].is_null(), "nothing ran yet");
    let answer = empty.admin(Method::POST, "/api/recommendations/evaluation", None).await;
    assert_error(&answer, 409, "nothing_to_learn", None);

    let server = store_with_orders().await;
    let (status, body) = server.admin(Method::POST, "/api/recommendations/evaluation", None).await;
    assert_eq!(status, 200, "{body}");
    let evaluation = &body["evaluation"];
    assert_eq!(evaluation["users"], 6, "six buyers");
    let results = evaluation["results"].as_array().expect("results");
    assert_eq!(results[0]["strategy"], "popularity");
    for result in results {
        let recall = result["recall@20"].as_f64().expect("recall");
        assert!((0.0..=1.0).contains(&recall), "{result}");
    }
    let (_, again) = server.admin_get("/api/recommendations/evaluation").await;
    assert_eq!(again["evaluation"]["evaluated_at"], evaluation["evaluated_at"], "the latest is kept");
}
