//! The segments API over loopback HTTP against the real server: definitions in both forms, errors with
//! positions, live membership as events arrive, preview, members, CSV, history, templates.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

async fn sync(server: &TestServer) {
    server.membership.sync().await.expect("segment engine");
}

async fn create(server: &TestServer, body: Value) -> (u16, Value) {
    server.admin(Method::POST, "/api/segments", Some(body)).await
}

fn view(user: &str, category: &str) -> Value {
    json!({"userId": user, "event": "Product Viewed", "properties": {"product_id": "p1", "category": category}})
}

#[tokio::test]
async fn text_and_json_definitions_are_interchangeable_and_membership_follows_events() {
    let server = TestServer::start().await;
    let text =
        r#"event "Product Viewed" where category = "shoes" in last 7d and not event "Order Completed" in last 7d"#;
    let (status, created) = create(&server, json!({"name": "shoe-browsers", "text": text})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["members"], 0);
    assert_eq!(created["version"], 1);
    // The JSON form it answers with creates the same segment.
    let (status, twin) =
        create(&server, json!({"name": "shoe-browsers-json", "definition": created["definition"].clone()})).await;
    assert_eq!(status, 201, "{twin}");
    assert_eq!(twin["text"], created["text"]);

    assert_eq!(server.backend("/v1/track", view("u1", "shoes")).await.0, 200);
    assert_eq!(server.backend("/v1/track", view("u2", "bags")).await.0, 200);
    sync(&server).await;
    let (_, one) = server.admin_get("/api/segments/shoe-browsers").await;
    assert_eq!(one["members"], 1);
    let u1: u64 = server.profile("user_id", "u1").await["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    let (_, members) = server.admin_get("/api/segments/shoe-browsers/members").await;
    assert_eq!(members["members"][0]["profile_id"], json!(u1));

    // Ordering takes u1 out; the history says why.
    server
        .backend(
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"order_id": "o1", "total": 20}}),
        )
        .await;
    sync(&server).await;
    let (_, members) = server.admin_get("/api/segments/shoe-browsers/members").await;
    assert_eq!(members["members"], json!([]));
    let (_, history) = server.admin_get("/api/segments/shoe-browsers/transitions").await;
    let transitions = history["transitions"].as_array().expect("list");
    assert_eq!(transitions.len(), 2);
    assert_eq!(transitions[0]["entered"], true);
    assert_eq!(transitions[1]["entered"], false);
    assert_eq!(transitions[1]["cause"], json!({"kind": "events", "names": ["Order Completed"]}));
    // The cursor continues after what was read.
    let after = transitions[1]["seq"].as_i64().expect("seq");
    let (_, rest) = server.admin_get(&format!("/api/segments/shoe-browsers/transitions?after_seq={after}")).await;
    assert_eq!(rest["transitions"], json!([]));

    let (_, profile) = server.admin_get(&format!("/api/profiles/{u1}/segments")).await;
    assert_eq!(profile["segments"], json!([]));
    assert_eq!(profile["history"].as_array().map(Vec::len), Some(4), "two segments, entered and exited: {profile}");
    server.stop().await;
}

#[tokio::test]
async fn bad_definitions_are_rejected_with_position_and_nothing_is_saved() {
    let server = TestServer::start().await;
    let (status, error) =
        create(&server, json!({"name": "x", "text": "traits.vip = true and\n  event \"A\" in last 7"})).await;
    assert_eq!(status, 400);
    assert_eq!(error["code"], "invalid_segment");
    assert_eq!(error["field"], "text");
    assert!(error["message"].as_str().is_some_and(|m| m.starts_with("2:")), "{error}");

    let bad_json = json!({"and": [{"attribute": {"path": "traits.vip", "op": "equals", "value": true}}, {"event": {"name": "A", "measure": "count", "op": "gte", "value": "two"}}]});
    let (status, error) = create(&server, json!({"name": "x", "definition": bad_json})).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], "invalid_segment");
    assert_eq!(error["field"], "definition/and/1/event", "{error}");

    let (status, error) = create(&server, json!({"name": "x", "text": r#"in segment "nope""#})).await;
    assert_eq!((status, error["code"].as_str()), (400, Some("invalid_segment")), "{error}");
    let (status, error) = create(&server, json!({"name": "x"})).await;
    assert_eq!(
        (status, error["code"].as_str(), error["field"].as_str()),
        (400, Some("missing_field"), Some("definition"))
    );
    let (status, error) = create(&server, json!({"name": "x", "text": "has email", "template": "high-aov"})).await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = server
        .raw(server.client.post(server.url("/api/segments")).bearer_auth(&server.admin_key).body("{not json"))
        .await;
    assert_eq!((status, error["code"].as_str()), (400, Some("malformed_json")));

    // A cycle is named; neither segment changes.
    assert_eq!(create(&server, json!({"name": "a", "text": "has email"})).await.0, 201);
    assert_eq!(create(&server, json!({"name": "b", "text": r#"in segment "a""#})).await.0, 201);
    let (status, error) =
        server.admin(Method::PUT, "/api/segments/a", Some(json!({"text": r#"in segment "b""#}))).await;
    assert_eq!(status, 400);
    assert!(error["message"].as_str().is_some_and(|m| m.contains("a → b → a")), "{error}");
    let (_, a) = server.admin_get("/api/segments/a").await;
    assert_eq!((a["version"].as_i64(), a["text"].as_str()), (Some(1), Some("has email")));
    let (status, error) = server.admin(Method::DELETE, "/api/segments/a", None).await;
    assert_eq!((status, error["code"].as_str()), (409, Some("segment_in_use")));
    assert_eq!(create(&server, json!({"name": "a", "text": "has phone"})).await.0, 409, "exists");
    let (status, error) = server.admin_get("/api/segments/missing/members").await;
    assert_eq!((status, error["code"].as_str()), (404, Some("segment_not_found")));
    let (_, list) = server.admin_get("/api/segments").await;
    assert_eq!(list["segments"].as_array().map(Vec::len), Some(2));
    server.stop().await;
}

#[tokio::test]
async fn preview_members_pagination_csv_and_templates() {
    let server = TestServer::start().await;
    for i in 0..5 {
        let user = format!("u{i}");
        server
            .backend(
                "/v1/identify",
                json!({"userId": user, "traits": {"email": format!("{user}@example.com"), "vip": i % 2 == 0}}),
            )
            .await;
    }
    sync(&server).await;
    let (status, preview) = server
        .admin(Method::POST, "/api/segments/preview", Some(json!({"text": "traits.vip = true", "sample": 2})))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["count"], 3);
    assert_eq!(preview["sample"].as_array().map(Vec::len), Some(2));
    assert_eq!(preview["profiles"], 5);
    let (_, list) = server.admin_get("/api/segments").await;
    assert_eq!(list["segments"], json!([]), "a preview saves nothing");

    assert_eq!(create(&server, json!({"name": "vips", "text": "traits.vip = true and has email"})).await.0, 201);
    let (_, page) = server.admin_get("/api/segments/vips/members?limit=2").await;
    assert_eq!(page["members"].as_array().map(Vec::len), Some(2));
    let after = page["next_after"].as_u64().expect("a next page");
    let (_, rest) = server.admin_get(&format!("/api/segments/vips/members?limit=2&after={after}")).await;
    assert_eq!(rest["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["next_after"], Value::Null);
    let (status, error) = server.admin_get("/api/segments/vips/members?limit=0").await;
    assert_eq!((status, error["field"].as_str()), (400, Some("limit")));

    let response = server
        .client
        .get(server.url("/api/segments/vips/members.csv"))
        .bearer_auth(&server.admin_key)
        .send()
        .await
        .expect("csv");
    assert_eq!(response.status().as_u16(), 200);
    let csv = response.text().await.expect("body");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "profile_id,since,email,phone,user_id,line_user_id");
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().any(|l| l.contains("u0@example.com")) && !csv.contains("u1@example.com"), "{csv}");

    let (_, templates) = server.admin_get("/api/segments/templates").await;
    let names: Vec<&str> =
        templates["templates"].as_array().expect("list").iter().filter_map(|t| t["name"].as_str()).collect();
    for expected in ["first-time-buyers", "repeat-buyers", "lapsed-90d", "cart-abandoners-24h", "at-risk-by-churn"] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let (status, from_template) = create(&server, json!({"name": "repeat", "template": "repeat-buyers"})).await;
    assert_eq!(status, 201, "{from_template}");
    assert_eq!(from_template["description"], "Two or more orders");
    let (status, error) = create(&server, json!({"name": "nope", "template": "no-such"})).await;
    assert_eq!((status, error["field"].as_str()), (400, Some("template")));
    let (status, _) = server.admin(Method::DELETE, "/api/segments/repeat", None).await;
    assert_eq!(status, 204);
    let (status, _) = server.admin_get("/api/segments/repeat").await;
    assert_eq!(status, 404);
    server.stop().await;
}
