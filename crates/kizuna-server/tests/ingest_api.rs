//! The Segment-compatible ingest API over real HTTP: every endpoint, auth, gzip, limits, errors, dedup,
//! all-or-nothing batches, clock-skew correction.

mod common;

use base64::Engine as _;
use common::{TestServer, assert_error};
use serde_json::json;
use std::io::Write;

#[tokio::test]
async fn every_single_message_endpoint_stores_its_message() {
    let server = TestServer::start().await;
    let calls = [
        ("/v1/identify", json!({"userId": "u1", "traits": {"email": "u1@example.com"}})),
        ("/v1/track", json!({"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}})),
        ("/v1/page", json!({"userId": "u1", "name": "Home"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Cart"})),
        ("/v1/group", json!({"userId": "u1", "groupId": "g1"})),
        ("/v1/alias", json!({"userId": "u1", "previousId": "anon-1"})),
        ("/v1/t", json!({"userId": "u1", "event": "Short Path"})),
    ];
    for (path, body) in calls {
        let (status, answer) = server.web(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["success"], true);
        assert_eq!(answer["accepted"], 1);
    }
    let profile = server.profile("user_id", "u1").await;
    let id = profile["id"].as_str().expect("id");
    let (_, events) = server.admin_get(&format!("/api/profiles/{id}/events?limit=100")).await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["message"]["type"].as_str().unwrap_or(""))
        .collect();
    for t in ["identify", "track", "page", "screen", "group", "alias"] {
        assert!(types.contains(&t), "{t} stored: {types:?}");
    }
    // The alias linked the earlier anonymous id to the same person.
    assert_eq!(server.profile("anonymous_id", "anon-1").await["id"], profile["id"]);
    server.stop().await;
}

#[tokio::test]
async fn browser_sdks_may_post_from_any_origin() {
    let server = TestServer::start().await;
    let origin = "https://shop.example.com";
    // The preflight a browser sends before a cross-origin JSON post with a Basic Authorization header.
    let preflight = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/v1/batch"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization,content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let header = |response: &reqwest::Response, name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_lowercase)
    };
    assert_eq!(header(&preflight, "access-control-allow-origin").as_deref(), Some(origin));
    assert!(header(&preflight, "access-control-allow-methods").is_some_and(|m| m.contains("post")));
    assert!(header(&preflight, "access-control-allow-headers").is_some_and(|h| h.contains("authorization")));

    let sent = server
        .client
        .post(server.url("/v1/track"))
        .header("Origin", origin)
        .basic_auth(&server.web_key, Some(""))
        .json(&json!({"userId": "u", "event": "E"}))
        .send()
        .await
        .expect("post");
    assert_eq!(sent.status().as_u16(), 200);
    assert_eq!(header(&sent, "access-control-allow-origin").as_deref(), Some(origin), "the answer is readable");
    // Only the collection routes: the admin API is not for other origins.
    let admin = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/api/profiles/by/user_id/u"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .expect("admin preflight");
    assert_eq!(header(&admin, "access-control-allow-origin"), None);
    server.stop().await;
}

#[tokio::test]
async fn write_key_in_basic_auth_or_body_and_clear_errors_without_one() {
    let server = TestServer::start().await;
    let body = json!({"userId": "u", "event": "E", "writeKey": server.web_key});
    let answer = server.raw(server.client.post(server.url("/v1/track")).json(&body)).await;
    assert_eq!(answer.0, 200, "{}", answer.1);

    let answer =
        server.raw(server.client.post(server.url("/v1/track")).json(&json!({"userId": "u", "event": "E"}))).await;
    assert_error(&answer, 401, "missing_write_key", None);

    let answer = server.send("wk_not_a_key", "/v1/track", &json!({"userId": "u", "event": "E"})).await;
    assert_error(&answer, 401, "invalid_write_key", None);

    let batch = json!({"writeKey": "nope", "batch": [{"type": "track", "userId": "u", "event": "E"}]});
    let answer = server.raw(server.client.post(server.url("/v1/batch")).json(&batch)).await;
    assert_error(&answer, 401, "invalid_write_key", None);

    assert_eq!(server.event_count().await, 1, "rejected requests store nothing");

    // A batch whose messages carry the key (and the envelope does not) is stored under it.
    let item = json!({"type": "track", "userId": "u", "event": "E", "writeKey": server.web_key});
    let answer = server.raw(server.client.post(server.url("/v1/batch")).json(&json!({"batch": [item]}))).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(server.event_count().await, 2);

    // The scheme name is case-insensitive; another scheme (a proxy's token) leaves the body's key to count.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", server.web_key));
    let plain = json!({"userId": "u", "event": "E"});
    let upper = server.client.post(server.url("/v1/track")).header("Authorization", format!("BASIC {basic}"));
    assert_eq!(server.raw(upper.json(&plain)).await.0, 200);
    let bearer = server.client.post(server.url("/v1/track")).header("Authorization", "Bearer proxy-token");
    assert_eq!(server.raw(bearer.json(&body)).await.0, 200, "the body's writeKey");
    let bearer = server.client.post(server.url("/v1/track")).header("Authorization", "Bearer proxy-token");
    assert_error(&server.raw(bearer.json(&plain)).await, 401, "missing_write_key", None);
    server.stop().await;
}

#[tokio::test]
async fn gzip_bodies_are_inflated_and_bad_gzip_is_rejected() {
    let server = TestServer::start().await;
    let gzip = |text: &str| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).expect("gzip");
        encoder.finish().expect("gzip")
    };
    let post_gzip = |body: Vec<u8>| {
        server
            .client
            .post(server.url("/v1/batch"))
            .basic_auth(&server.web_key, Some(""))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
    };
    let batch = json!({"batch": (0..50).map(|i| json!({"type": "track", "anonymousId": "a", "event": "E", "messageId": format!("gz-{i}")})).collect::<Vec<_>>()});
    let compressed = gzip(&batch.to_string());
    let answer = server.raw(post_gzip(compressed.clone())).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["accepted"], 50);

    // A body of two gzip members (as `cat a.gz b.gz` makes) is read whole: the JSON is split across them.
    let text = json!({"batch": [{"type": "track", "anonymousId": "a", "event": "E", "messageId": "gz-two-members"}]})
        .to_string();
    let (head, tail) = text.split_at(text.len() / 2);
    let answer = server.raw(post_gzip([gzip(head), gzip(tail)].concat())).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["accepted"], 1);

    // Bytes after a whole member that are not another member are an error, not silently dropped.
    let trailing = [compressed, b"trailing bytes".to_vec()].concat();
    assert_error(&server.raw(post_gzip(trailing)).await, 400, "malformed_body", None);
    assert_error(&server.raw(post_gzip(b"this is not gzip".to_vec())).await, 400, "malformed_body", None);
    server.stop().await;
}

#[tokio::test]
async fn invalid_input_is_rejected_with_the_field_and_nothing_is_stored() {
    let server = TestServer::start_with(kizuna_ingest::Limits { max_event_bytes: 2048, max_batch_bytes: 8192 }).await;
    let request =
        server.client.post(server.url("/v1/batch")).basic_auth(&server.web_key, Some("")).body("{\"batch\": [");
    assert_error(&server.raw(request).await, 400, "malformed_json", None);

    assert_error(&server.web("/v1/track", json!({"event": "E"})).await, 400, "missing_identity", Some("userId"));
    assert_error(
        &server.web("/v1/track", json!({"userId": "null", "event": "E"})).await,
        400,
        "missing_identity",
        Some("userId"),
    );
    assert_error(&server.web("/v1/track", json!({"userId": "u"})).await, 400, "missing_field", Some("event"));
    assert_error(
        &server.web("/v1/track", json!({"userId": "u", "event": "E", "properties": "x"})).await,
        400,
        "invalid_field",
        Some("properties"),
    );
    assert_error(&server.web("/v1/identify", json!({"userId": ["u"]})).await, 400, "invalid_field", Some("userId"));

    // One bad message rejects the whole batch: the good ones before and after it are not stored.
    let batch = json!({"batch": [
        {"type": "track", "userId": "u", "event": "Good", "messageId": "good-1"},
        {"type": "track", "userId": "u", "event": "Bad", "timestamp": "not a time"},
        {"type": "track", "userId": "u", "event": "Good", "messageId": "good-2"},
    ]});
    assert_error(&server.web("/v1/batch", batch).await, 400, "invalid_field", Some("batch[1].timestamp"));
    // Too large by itself, and valid otherwise (an invalid field in an oversized message is reported as invalid).
    let batch = json!({"batch": [
        {"type": "track", "userId": "u", "event": "Good"},
        {"type": "track", "userId": "u", "event": "E", "properties": {"pad": "x".repeat(3000)}},
    ]});
    assert_error(&server.web("/v1/batch", batch).await, 400, "event_too_large", Some("batch[1]"));
    let big: Vec<_> = (0..20)
        .map(|i| json!({"type": "track", "userId": "u", "event": "E", "properties": {"pad": "y".repeat(500), "i": i}}))
        .collect();
    assert_error(&server.web("/v1/batch", json!({"batch": big})).await, 400, "batch_too_large", None);
    let batch = json!({"batch": [{"type": "launch", "userId": "u"}]});
    assert_error(&server.web("/v1/batch", batch).await, 400, "invalid_field", Some("batch[0].type"));

    assert_eq!(server.event_count().await, 0, "no rejected request stored anything");
    // The good messages of the rejected batch can be sent again and are stored then (they were not claimed).
    let retry = json!({"batch": [{"type": "track", "userId": "u", "event": "Good", "messageId": "good-1"}]});
    assert_eq!(server.web("/v1/batch", retry).await.1["accepted"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_message_is_acknowledged_and_stored_once() {
    let server = TestServer::start().await;
    let message = json!({"type": "track", "userId": "u", "event": "Order Completed", "messageId": "order-1",
        "properties": {"order_id": "o1", "total": 25.0}});
    let first = server.web("/v1/track", message.clone()).await;
    let again = server.web("/v1/track", message.clone()).await;
    assert_eq!((first.0, again.0), (200, 200));
    assert_eq!((first.1["accepted"].clone(), again.1["duplicates"].clone()), (json!(1), json!(1)));
    // Within one batch too.
    let batch = json!({"batch": [message.clone(), message.clone()]});
    assert_eq!(server.web("/v1/batch", batch).await.1["duplicates"], 2);
    // The same messageId from another source is a different message.
    assert_eq!(server.backend("/v1/track", message).await.1["accepted"], 1);
    assert_eq!(server.event_count().await, 2);
    let profile = server.profile("user_id", "u").await;
    assert_eq!(profile["computed"]["orders_count"], 1, "the order counts once");
    server.stop().await;
}

#[tokio::test]
async fn clock_skew_is_corrected_from_sent_at() {
    let server = TestServer::start().await;
    // The device clock is ten years ahead; it made the event 60 s before sending it.
    let body = json!({"userId": "skewed", "event": "E", "timestamp": "2036-01-01T00:00:00Z", "sentAt": "2036-01-01T00:01:00Z"});
    let before = chrono::Utc::now();
    assert_eq!(server.web("/v1/track", body).await.0, 200);
    let profile = server.profile("user_id", "skewed").await;
    let id = profile["id"].as_str().expect("id");
    let (_, events) = server.admin_get(&format!("/api/profiles/{id}/events")).await;
    let message = &events["events"][0]["message"];
    let ts: chrono::DateTime<chrono::Utc> = message["timestamp"].as_str().expect("ts").parse().expect("rfc3339");
    let expected = before - chrono::Duration::seconds(60);
    assert!((ts - expected).num_seconds().abs() <= 5, "corrected {ts} ~ {expected}");
    assert_eq!(message["originalTimestamp"], "2036-01-01T00:00:00.000Z");
    assert!(message.get("receivedAt").is_some());
    assert!(message.get("writeKey").is_none());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_events_of_one_person_land_in_one_profile() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"batch": [
                {"type": "page", "anonymousId": format!("device-{i}"), "name": "Home"},
                {"type": "identify", "anonymousId": format!("device-{i}"), "userId": "same-person"},
                {"type": "track", "anonymousId": format!("device-{i}"), "event": "Product Viewed"},
            ]});
            server.backend("/v1/batch", body).await.0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    let profile = server.profile("user_id", "same-person").await;
    assert_eq!(profile["identities"].as_array().expect("ids").len(), 25, "one userId and 24 devices");
    assert_eq!(profile["computed"]["event_count"], 72);
    for i in [0, 11, 23] {
        assert_eq!(server.profile("anonymous_id", &format!("device-{i}")).await["id"], profile["id"]);
    }
    let (_, stats) = server.admin_get("/api/stats").await;
    assert_eq!(stats["profiles"], 1);
    match std::sync::Arc::try_unwrap(server) {
        Ok(server) => server.stop().await,
        Err(_) => panic!("server still shared"),
    }
}
