//! Identity resolution, profiles, the admin API, consent, export and erasure, catalog and operations — over
//! real HTTP.

mod common;

use common::{TestServer, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

fn ids(profile: &Value) -> Vec<String> {
    profile["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .map(|i| format!("{}:{}", i["type"].as_str().unwrap_or(""), i["value"].as_str().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn anonymous_browsing_becomes_the_identified_customer() {
    let server = TestServer::start().await;
    for product in ["p1", "p2"] {
        let view = json!({"anonymousId": "cookie-1", "event": "Product Viewed", "properties": {"product_id": product, "category": "Shoes"}});
        assert_eq!(server.web("/v1/track", view).await.0, 200);
    }
    let anonymous = server.profile("anonymous_id", "cookie-1").await;
    let identify = json!({"anonymousId": "cookie-1", "userId": "cust-9", "traits": {"email": " Aiko@Example.COM ", "phone": "090-1234-5678", "first_name": "Aiko"}});
    assert_eq!(server.web("/v1/identify", identify).await.0, 200);
    let by_user = server.profile("user_id", "cust-9").await;
    assert_eq!(by_user["id"], anonymous["id"], "the anonymous profile became the customer's");
    assert_eq!(server.profile("email", "AIKO@example.com").await["id"], by_user["id"], "emails are normalised");
    assert_eq!(server.profile("phone", "+81 90-1234-5678").await["id"], by_user["id"], "phones are E.164");
    assert_eq!(by_user["traits"]["first_name"], "Aiko");
    assert_eq!(by_user["computed"]["event_counts"]["Product Viewed"], 2);
    assert_eq!(by_user["computed"]["last_viewed_products"][0]["product_id"], "p2");
    let mut got = ids(&by_user);
    got.sort();
    assert_eq!(got, ["anonymous_id:cookie-1", "email:aiko@example.com", "phone:+819012345678", "user_id:cust-9"]);
    server.stop().await;
}

#[tokio::test]
async fn two_devices_become_one_person_with_an_explained_merge() {
    let server = TestServer::start().await;
    server.web("/v1/page", json!({"anonymousId": "phone-app", "name": "Cart"})).await;
    server
        .web(
            "/v1/track",
            json!({"anonymousId": "phone-app", "event": "Product Added", "properties": {"cart_id": "c1"}}),
        )
        .await;
    server.web("/v1/identify", json!({"anonymousId": "phone-app", "userId": "u-7"})).await;
    server.web("/v1/page", json!({"anonymousId": "laptop", "name": "Home"})).await;
    let laptop_before = server.profile("anonymous_id", "laptop").await;
    assert_ne!(laptop_before["id"], server.profile("user_id", "u-7").await["id"]);
    server.web("/v1/track", json!({"anonymousId": "laptop", "userId": "u-7", "event": "Order Completed", "properties": {"order_id": "o-1", "total": 80}})).await;

    let person = server.profile("user_id", "u-7").await;
    assert_eq!(server.profile("anonymous_id", "laptop").await["id"], person["id"]);
    assert_eq!(person["computed"]["event_count"], 5, "the journey across both devices is one history");
    assert_eq!(person["computed"]["orders_count"], 1);
    let id = person["id"].as_str().expect("id");
    let (_, identities) = server.admin_get(&format!("/api/profiles/{id}/identities")).await;
    let merges = identities["merges"].as_array().expect("merges");
    assert_eq!(merges.len(), 1, "{identities}");
    assert_eq!(merges[0]["from"].to_string(), laptop_before["id"].as_str().expect("id"));
    assert_eq!(merges[0]["identifier"], json!({"type": "anonymous_id", "value": "laptop"}));
    // The merged-away id still resolves, to the live profile.
    let (status, old) = server.admin_get(&format!("/api/profiles/{}", laptop_before["id"].as_str().expect("id"))).await;
    assert_eq!((status, &old["id"]), (200, &person["id"]));
    server.stop().await;
}

#[tokio::test]
async fn an_email_shared_by_two_user_ids_never_merges_them() {
    let server = TestServer::start().await;
    // Explicit times: links apply in event-time order, and two messages in the same millisecond would be
    // ordered by their (random) messageIds.
    server
        .backend(
            "/v1/identify",
            json!({"userId": "mum", "traits": {"email": "family@example.com"}, "timestamp": "2026-01-01T00:00:01Z"}),
        )
        .await;
    server
        .backend(
            "/v1/identify",
            json!({"userId": "son", "traits": {"email": "family@example.com"}, "timestamp": "2026-01-01T00:00:02Z"}),
        )
        .await;
    let mum = server.profile("user_id", "mum").await;
    let son = server.profile("user_id", "son").await;
    assert_ne!(mum["id"], son["id"]);
    assert_eq!(server.profile("email", "family@example.com").await["id"], mum["id"], "the first link keeps the email");
    let (_, identities) =
        server.admin_get(&format!("/api/profiles/{}/identities", son["id"].as_str().expect("id"))).await;
    let conflict = &identities["conflicts"][0];
    assert_eq!(conflict["reason"]["rule"], "user_id_conflict", "{identities}");
    assert_eq!(conflict["identifier"]["value"], "family@example.com");
    server.stop().await;
}

#[tokio::test]
async fn only_trusted_sources_merge_two_identified_profiles() {
    let server = TestServer::start().await;
    server.backend("/v1/identify", json!({"userId": "u-1", "timestamp": "2026-01-01T00:00:01Z"})).await;
    server.backend("/v1/identify", json!({"anonymousId": "newsletter", "traits": {"email": "x@example.com"}, "timestamp": "2026-01-01T00:00:02Z"})).await;
    // A browser claims both: refused, and the refusal is on record.
    server
        .web(
            "/v1/identify",
            json!({"userId": "u-1", "traits": {"email": "x@example.com"}, "timestamp": "2026-01-01T00:00:03Z"}),
        )
        .await;
    assert_ne!(server.profile("user_id", "u-1").await["id"], server.profile("email", "x@example.com").await["id"]);
    // The brand's server says the same: merged.
    server
        .backend(
            "/v1/identify",
            json!({"userId": "u-1", "traits": {"email": "x@example.com"}, "timestamp": "2026-01-01T00:00:04Z"}),
        )
        .await;
    assert_eq!(server.profile("user_id", "u-1").await["id"], server.profile("email", "x@example.com").await["id"]);
    server.stop().await;
}

#[tokio::test]
async fn timeline_is_newest_first_paginated_and_filterable() {
    let server = TestServer::start().await;
    let batch: Vec<Value> = (0..25)
        .map(|i| {
            let name = if i % 5 == 0 { "Order Completed" } else { "Product Viewed" };
            json!({"type": "track", "userId": "t", "event": name, "timestamp": format!("2026-03-01T00:{:02}:00Z", i),
                   "properties": {"order_id": format!("o{i}"), "total": 10}})
        })
        .collect();
    assert_eq!(server.backend("/v1/batch", json!({"batch": batch})).await.0, 200);
    let id = server.profile("user_id", "t").await["id"].as_str().expect("id").to_owned();
    let mut seen = Vec::new();
    let mut path = format!("/api/profiles/{id}/events?limit=10");
    loop {
        let (status, page) = server.admin_get(&path).await;
        assert_eq!(status, 200, "{page}");
        for e in page["events"].as_array().expect("events") {
            seen.push(e["message"]["timestamp"].as_str().expect("ts").to_owned());
        }
        match page["next_before"].as_i64() {
            Some(cursor) => path = format!("/api/profiles/{id}/events?limit=10&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first: {seen:?}");
    let (_, orders) = server.admin_get(&format!("/api/profiles/{id}/events?type=Order%20Completed")).await;
    assert_eq!(orders["events"].as_array().expect("events").len(), 5);
    let (_, window) = server
        .admin_get(&format!("/api/profiles/{id}/events?since=2026-03-01T00:10:00Z&until=2026-03-01T00:20:00Z"))
        .await;
    assert_eq!(window["events"].as_array().expect("events").len(), 10);
    assert_error(
        &server.admin_get(&format!("/api/profiles/{id}/events?limit=0")).await,
        400,
        "invalid_parameter",
        Some("limit"),
    );
    assert_error(
        &server.admin_get(&format!("/api/profiles/{id}/events?since=yesterday")).await,
        400,
        "invalid_parameter",
        Some("since"),
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_api_errors_are_clear() {
    let server = TestServer::start().await;
    let answer = server.raw(server.client.get(server.url("/api/profiles/1"))).await;
    assert_error(&answer, 401, "missing_api_key", None);
    let answer = server.raw(server.client.get(server.url("/api/profiles/1")).bearer_auth("kz_wrong")).await;
    assert_error(&answer, 401, "invalid_api_key", None);
    assert_error(&server.admin_get("/api/profiles/by/user_id/nobody").await, 404, "profile_not_found", None);
    assert_error(
        &server.admin_get("/api/profiles/by/passport/123").await,
        400,
        "invalid_parameter",
        Some("identifier_type"),
    );
    assert_error(
        &server.admin_get("/api/profiles/by/email/not-an-email").await,
        400,
        "invalid_parameter",
        Some("value"),
    );
    assert_error(&server.admin_get("/api/profiles/abc").await, 400, "invalid_parameter", Some("id"));
    assert_error(&server.admin_get("/api/profiles/999").await, 404, "profile_not_found", None);
    assert_error(&server.admin_get("/api/nothing-here").await, 404, "route_not_found", None);
    server.stop().await;
}

#[tokio::test]
async fn custom_identifiers_and_search_by_trait() {
    let server = TestServer::start().await;
    let body = json!({"userId": "c-1", "traits": {"city": "Osaka", "plan": "vip"},
        "context": {"externalIds": [{"id": "SH-77", "type": "shopify_customer_id"}]}});
    server.backend("/v1/identify", body).await;
    server.backend("/v1/identify", json!({"userId": "c-2", "traits": {"city": "Tokyo"}})).await;
    let profile = server.profile("shopify_customer_id", "SH-77").await;
    assert_eq!(profile["traits"]["plan"], "vip");
    let (status, found) = server.admin_get("/api/profiles?trait=city&value=osaka").await;
    assert_eq!(status, 200);
    let found = found["profiles"].as_array().expect("profiles");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], profile["id"]);
    assert_error(&server.admin_get("/api/profiles?value=x").await, 400, "invalid_parameter", Some("trait"));
    // Without a trait: everyone, a page at a time in id order.
    let (status, first) = server.admin_get("/api/profiles?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(first["profiles"][0]["id"], profile["id"]);
    let after = first["next_after"].as_str().expect("a next page").to_owned();
    let (_, second) = server.admin_get(&format!("/api/profiles?limit=1&after={after}")).await;
    assert_eq!(second["profiles"][0]["traits"]["city"], "Tokyo");
    let (_, last) = server.admin_get(&format!("/api/profiles?limit=5&after={after}")).await;
    assert_eq!(last["profiles"].as_array().map(Vec::len), Some(1));
    assert!(last["next_after"].is_null(), "the last page says so");
    assert_error(&server.admin_get("/api/profiles?after=abc").await, 400, "invalid_parameter", Some("after"));
    server.stop().await;
}

#[tokio::test]
async fn consent_per_channel_and_purpose_with_source_and_time() {
    let server = TestServer::start().await;
    let identify = json!({"userId": "c", "traits": {"consent": {"email": {"marketing": "granted"}}}, "timestamp": "2026-01-01T00:00:00Z"});
    server.web("/v1/identify", identify).await;
    let id = server.profile("user_id", "c").await["id"].as_str().expect("id").to_owned();
    let change = json!({"channel": "sms", "purpose": "marketing", "status": "denied"});
    let (status, answer) = server.admin(Method::PUT, &format!("/api/profiles/{id}/consent"), Some(change)).await;
    assert_eq!(status, 200, "{answer}");
    let profile = server.profile("user_id", "c").await;
    assert_eq!(profile["consent"]["email"]["marketing"]["status"], "granted");
    assert_eq!(profile["consent"]["email"]["marketing"]["source"], "web");
    assert_eq!(profile["consent"]["email"]["marketing"]["at"], "2026-01-01T00:00:00Z");
    assert_eq!(profile["consent"]["sms"]["marketing"]["status"], "denied");
    let bad = json!({"channel": "fax", "purpose": "marketing", "status": "granted"});
    assert_error(
        &server.admin(Method::PUT, &format!("/api/profiles/{id}/consent"), Some(bad)).await,
        400,
        "invalid_field",
        Some("channel"),
    );
    let bad = json!({"channel": "sms", "purpose": "marketing", "status": "maybe"});
    assert_error(
        &server.admin(Method::PUT, &format!("/api/profiles/{id}/consent"), Some(bad)).await,
        400,
        "invalid_field",
        Some("status"),
    );
    server.stop().await;
}

#[tokio::test]
async fn export_then_erase_and_replays_cannot_bring_the_person_back() {
    let server = TestServer::start().await;
    let messages: Vec<Value> = (0..3)
        .map(
            |i| json!({"type": "track", "userId": "leaving", "event": "Product Viewed", "messageId": format!("m-{i}")}),
        )
        .collect();
    server.web("/v1/batch", json!({"batch": messages.clone()})).await;
    server
        .web(
            "/v1/identify",
            json!({"userId": "leaving", "traits": {"email": "leaving@example.com"}, "messageId": "m-id"}),
        )
        .await;
    let id = server.profile("user_id", "leaving").await["id"].as_str().expect("id").to_owned();
    let (status, export) = server.admin_get(&format!("/api/profiles/{id}/export")).await;
    assert_eq!(status, 200);
    assert_eq!(export["events"].as_array().expect("events").len(), 4);
    assert_eq!(export["profile"]["traits"]["email"], "leaving@example.com");

    let (status, erased) = server.admin(Method::DELETE, &format!("/api/profiles/{id}"), None).await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!((erased["events"].as_u64(), erased["identities"].as_u64()), (Some(4), Some(2)));
    assert_error(&server.admin_get(&format!("/api/profiles/{id}")).await, 404, "profile_not_found", None);
    assert_error(&server.admin_get("/api/profiles/by/email/leaving@example.com").await, 404, "profile_not_found", None);
    assert_eq!(server.event_count().await, 0);

    // A client retrying its old queue inside the dedup window is acknowledged, and stores nothing.
    let (status, replay) = server.web("/v1/batch", json!({"batch": messages})).await;
    assert_eq!((status, replay["duplicates"].as_u64()), (200, Some(3)));
    assert_error(&server.admin_get("/api/profiles/by/user_id/leaving").await, 404, "profile_not_found", None);
    server.stop().await;
}

#[tokio::test]
async fn product_catalog_upsert_list_get_and_csv() {
    let server = TestServer::start().await;
    let products = json!([
        {"id": "p1", "title": "Tee", "price": 20.0, "categories": ["Apparel"], "brand": "Kizuna"},
        {"id": "p2", "title": "Mug", "price": 12.5, "currency": "JPY", "in_stock": false},
    ]);
    let (status, answer) = server.admin(Method::POST, "/api/products", Some(products)).await;
    assert_eq!((status, answer["upserted"].as_u64()), (200, Some(2)), "{answer}");
    let (status, p1) = server.admin_get("/api/products/p1").await;
    assert_eq!((status, &p1["brand"]), (200, &json!("Kizuna")));
    let update = json!({"products": [{"id": "p1", "title": "Tee v2", "price": 22.0}]});
    server.admin(Method::POST, "/api/products", Some(update)).await;
    assert_eq!(server.admin_get("/api/products/p1").await.1["title"], "Tee v2");

    let bad = json!([{"id": "p3", "title": "OK", "price": 1.0}, {"id": "p4", "title": "Bad", "price": -3}]);
    assert_error(
        &server.admin(Method::POST, "/api/products", Some(bad)).await,
        400,
        "invalid_field",
        Some("[1].price"),
    );
    assert_error(&server.admin_get("/api/products/p3").await, 404, "product_not_found", None);

    let csv = "id,title,price,categories,brand\np5,Beans,18,Coffee|Beans,Kumo\n";
    let request = server
        .client
        .post(server.url("/api/products"))
        .bearer_auth(&server.admin_key)
        .header("content-type", "text/csv")
        .body(csv);
    let answer = server.raw(request).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(server.admin_get("/api/products/p5").await.1["categories"], json!(["Coffee", "Beans"]));
    let (_, page) = server.admin_get("/api/products?limit=2").await;
    assert_eq!(page["products"].as_array().expect("products").len(), 2);
    let after = page["next_after"].as_str().expect("cursor").to_owned();
    let (_, rest) = server.admin_get(&format!("/api/products?after={after}")).await;
    assert_eq!(rest["products"].as_array().expect("products").len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let server = TestServer::start().await;
    server.web("/v1/track", json!({"userId": "m", "event": "E"})).await;
    let (status, _) = server.raw(server.client.get(server.url("/healthz"))).await;
    assert_eq!(status, 200);
    let (status, ready) = server.raw(server.client.get(server.url("/readyz"))).await;
    assert_eq!((status, &ready["status"]), (200, &json!("ready")));
    let (_, metrics) = server.raw(server.client.get(server.url("/metrics"))).await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(metrics.contains(kizuna_types::telemetry::EVENTS_ACCEPTED), "{metrics}");
    assert!(metrics.contains(kizuna_types::telemetry::HTTP_REQUEST_SECONDS), "{metrics}");
    // Counts get count buckets (the seconds buckets end at 2.5): a group of one event is counted under 50.
    let group_bucket = format!("{}_bucket{{le=\"50\"}} ", kizuna_types::telemetry::COMMIT_GROUP_EVENTS);
    let line = metrics.lines().find(|l| l.starts_with(&group_bucket)).unwrap_or_else(|| panic!("{metrics}"));
    let up_to_50: u64 = line[group_bucket.len()..].trim().parse().expect("a count");
    assert!(up_to_50 >= 1, "{line}");
    let (status, doc) = server.raw(server.client.get(server.url("/openapi.json"))).await;
    assert_eq!(status, 200);
    for path in
        ["/v1/batch", "/api/profiles/by/{identifier_type}/{value}", "/api/profiles/{id}/events", "/api/products"]
    {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    server.stop().await;
}
