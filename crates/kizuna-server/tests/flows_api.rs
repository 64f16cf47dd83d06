//! The flows API over loopback HTTP against the real server: a flow saved as YAML, activated, triggered by
//! events sent through the Segment-compatible API, its email delivered to a real SMTP server; runs, paths,
//! the report, the replay, starters, enrolment and every error shape.

mod common;

use common::{TestServer, assert_error};
use kizuna_messaging_service::{MessagingSettings, SmtpSettings, SmtpTls};
use kizuna_testkit::SmtpSink;
use reqwest::Method;
use serde_json::{Value, json};

async fn wait_for<F: Fn(&Value) -> bool>(server: &TestServer, path: &str, done: F) -> Value {
    for _ in 0..200 {
        let (status, body) = server.admin_get(path).await;
        if status == 200 && done(&body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} never reached the expected state");
}

const CART_FLOW_YAML: &str = r#"
description: Cart follow-up
trigger:
  event:
    name: Checkout Started
    where:
      - {path: value, op: gt, value: 50}
goal:
  event: {name: Order Completed}
  within: 5d
steps:
  - id: remind
    type: send
    template: cart
    next: tag
  - id: tag
    type: tag
    add: [cart_reminded]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_over_http() {
    let sink = SmtpSink::start();
    let server = TestServer::start_messaging(MessagingSettings {
        email: Some(SmtpSettings {
            host: "127.0.0.1".into(),
            port: sink.port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Shop <hello@shop.example>".into(),
            reply_to: None,
            pool_size: 1,
            rate_per_second: 0.0,
            ca_file: None,
        }),
        policy: kizuna_messaging::governor::Policy { quiet_hours: None, caps: Vec::new(), ..Default::default() },
        ..MessagingSettings::default()
    })
    .await;
    let template = json!({"channel": "email", "purpose": "marketing",
        "subject": "{{ profile.first_name }}, your cart ({{ event.properties.value | money }})", "html": "<p>Come back</p>"});
    let (status, _) = server.admin(Method::PUT, "/api/templates/cart", Some(template)).await;
    assert_eq!(status, 200);

    // Bad definitions: each error names the field; nothing is saved.
    let bad = json!({"trigger": {"event": {"name": "Checkout Started"}}, "steps": [
        {"id": "remind", "type": "send", "template": "nope"}]});
    let answer = server.admin(Method::PUT, "/api/flows/cart", Some(bad)).await;
    assert_error(&answer, 400, "invalid_flow", Some("steps[0].template"));
    let bad = json!({"trigger": {"event": {"name": "Checkout Started"}}, "steps": [
        {"id": "remind", "type": "send", "template": "cart", "next": "gone"}]});
    let answer = server.admin(Method::PUT, "/api/flows/cart", Some(bad)).await;
    assert_error(&answer, 400, "invalid_flow", Some("steps[0].next"));
    let answer =
        server.admin(Method::POST, "/api/flows/check", Some(json!({"trigger": {"event": {"name": "x"}}}))).await;
    assert_error(&answer, 400, "invalid_flow", None);
    let answer = server.admin(Method::PUT, "/api/flows/Bad%20Name", Some(json!({}))).await;
    assert_eq!(answer.0, 400, "{}", answer.1);
    let response = server
        .client
        .put(server.url("/api/flows/cart"))
        .bearer_auth(&server.admin_key)
        .header("Content-Type", "application/yaml")
        .body("trigger: [unclosed")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    assert_error(&server.admin_get("/api/flows/cart").await, 404, "flow_not_found", None);

    // Saved from YAML as a draft, then activated.
    let response = server
        .client
        .put(server.url("/api/flows/cart"))
        .bearer_auth(&server.admin_key)
        .header("Content-Type", "application/yaml")
        .body(CART_FLOW_YAML)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let saved: Value = response.json().await.expect("json");
    assert_eq!((saved["status"].as_str(), saved["version"].as_i64()), (Some("draft"), Some(1)), "{saved}");
    assert_eq!(saved["definition"]["steps"][1]["add"], json!(["cart_reminded"]));
    let answer = server.admin(Method::POST, "/api/flows/cart/enroll", Some(json!({"profiles": ["1"]}))).await;
    assert_error(&answer, 409, "flow_not_active", None);
    let (status, active) = server.admin(Method::POST, "/api/flows/cart/activate", None).await;
    assert_eq!((status, active["status"].as_str()), (200, Some("active")), "{active}");

    for (user, value) in [("u1", 80), ("u2", 20)] {
        let (status, _) = server
            .backend(
                "/v1/identify",
                json!({"userId": user, "traits": {"email": format!("{user}@example.com"), "first_name": user,
                       "consent": {"email": {"marketing": "granted"}}}}),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = server
            .backend(
                "/v1/track",
                json!({"userId": user, "event": "Checkout Started",
                       "properties": {"value": value, "currency": "USD", "cart_id": format!("c-{user}")}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let runs = wait_for(&server, "/api/flows/cart/runs", |b| {
        b["runs"].as_array().is_some_and(|r| r.len() == 1 && r[0]["status"] == "completed")
    })
    .await;
    let run = &runs["runs"][0];
    let u1 = server.profile("user_id", "u1").await;
    assert_eq!(run["profile"], u1["id"]);
    for _ in 0..200 {
        if sink.count() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mails = sink.received();
    assert_eq!(mails.len(), 1, "only the cart over 50 triggers");
    assert_eq!(mails[0]["headers"]["Subject"], "u1, your cart ($80.00)");
    assert_eq!(mails[0]["headers"]["To"], "u1@example.com");

    let (status, detail) = server.admin_get(&format!("/api/flow-runs/{}", run["id"].as_str().expect("id"))).await;
    assert_eq!(status, 200);
    let path: Vec<(&str, &str)> = detail["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["step"].as_str().unwrap_or(""), s["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(path, vec![("remind", "sent"), ("tag", "tagged")]);
    let tagged = wait_for(&server, &format!("/api/profiles/{}", u1["id"].as_str().expect("id")), |p| {
        p["traits"]["tags"]["value"] == json!(["cart_reminded"]) || p["traits"]["tags"] == json!(["cart_reminded"])
    })
    .await;
    assert!(tagged["traits"]["tags"].is_object() || tagged["traits"]["tags"].is_array());
    let (_, person) = server.admin_get(&format!("/api/profiles/{}/flows", u1["id"].as_str().expect("id"))).await;
    assert_eq!(person["runs"][0]["flow"], "cart");

    // An order within the goal window counts as a conversion with its revenue.
    let (status, _) = server
        .backend(
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue": 80, "cart_id": "c-u1"}}),
        )
        .await;
    assert_eq!(status, 200);
    let report = wait_for(&server, "/api/flows/cart/report", |r| r["conversions"] == 1).await;
    assert_eq!((report["entered"].as_i64(), report["messages_queued"].as_i64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["revenue"], 80.0);

    // The replay over the same history predicts the same entrant and the same send.
    let (status, replay) = server.admin(Method::POST, "/api/flows/cart/simulate", Some(json!({"days": 1}))).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["summary"]["entered"], 1);
    assert_eq!(replay["summary"]["sends"]["send"], 1);
    assert_eq!(replay["runs"][0]["profile"], u1["id"]);
    let answer = server.admin(Method::POST, "/api/flows/cart/simulate", Some(json!({"days": 0}))).await;
    assert_error(&answer, 400, "invalid_flow", Some("days"));
    let answer = server.admin(Method::POST, "/api/flows/cart/simulate", Some(json!({"dayz": 3}))).await;
    assert_error(&answer, 400, "invalid_field", None);

    // Versions: a second save makes version 2 live.
    let (status, v2) = server
        .admin(
            Method::PUT,
            "/api/flows/cart",
            Some(json!({"trigger": {"event": {"name": "Checkout Started"}}, "steps": [
            {"id": "remind", "type": "send", "template": "cart"}]})),
        )
        .await;
    assert_eq!((status, v2["version"].as_i64(), v2["live_version"].as_i64()), (200, Some(2), Some(2)), "{v2}");
    let (_, versions) = server.admin_get("/api/flows/cart/versions").await;
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(2));
    let (_, v1) = server.admin_get("/api/flows/cart/versions/1").await;
    assert_eq!(v1["definition"]["description"], "Cart follow-up");

    // Starters install their templates and segments; installing twice is a conflict.
    let (status, starters) = server.admin_get("/api/flows/starters").await;
    assert_eq!(status, 200);
    assert!(starters["starters"].as_array().is_some_and(|s| s.len() >= 10));
    let (status, installed) = server.admin(Method::POST, "/api/flows/starters/win_back", None).await;
    assert_eq!((status, installed["status"].as_str()), (201, Some("draft")), "{installed}");
    let (status, _) = server.admin_get("/api/templates/win_back").await;
    assert_eq!(status, 200, "the starter's template was installed");
    let (status, _) = server.admin_get("/api/segments/lapsed-90d").await;
    assert_eq!(status, 200, "the starter's segment was installed");
    let answer = server.admin(Method::POST, "/api/flows/starters/win_back", None).await;
    assert_error(&answer, 409, "flow_exists", Some("name"));
    let answer = server.admin(Method::POST, "/api/flows/starters/nothing", None).await;
    assert_error(&answer, 404, "flow_not_found", None);

    // Manual enrolment: bad ids name the index; the entry rules still apply.
    let answer = server.admin(Method::POST, "/api/flows/cart/enroll", Some(json!({"profiles": ["x1"]}))).await;
    assert_error(&answer, 400, "invalid_parameter", Some("profiles[0]"));
    let u2 = server.profile("user_id", "u2").await;
    let (status, enrolled) =
        server.admin(Method::POST, "/api/flows/cart/enroll", Some(json!({"profiles": [u2["id"]]}))).await;
    assert_eq!((status, enrolled["entered"].as_u64()), (200, Some(1)), "{enrolled}");

    // The kill switch and the list.
    let (status, paused) = server.admin(Method::POST, "/api/flows/cart/pause", None).await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    let (_, list) = server.admin_get("/api/flows").await;
    let names: Vec<&str> = list["flows"].as_array().expect("flows").iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, vec!["cart", "win_back"]);
    assert_error(&server.admin_get("/api/flow-runs/999999").await, 404, "run_not_found", None);
    assert_error(&server.admin_get("/api/flows/cart/runs?status=lost").await, 400, "invalid_parameter", Some("status"));
    let (status, _) = server.admin(Method::DELETE, "/api/flows/win_back", None).await;
    assert_eq!(status, 204);
    server.stop().await;
}
