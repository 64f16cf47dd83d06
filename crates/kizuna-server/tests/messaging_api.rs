//! The messaging API over loopback HTTP against the real server, with email delivered to a real SMTP server
//! (aiosmtpd, installed by scripts/test): templates checked on save, previews, queuing with every error path,
//! the delivery log, tracking links (a tampered token gets a 400 and no redirect), and one-click unsubscribe
//! stopping the next message.

mod common;

use common::{TestServer, assert_error};
use kizuna_messaging_service::{MessagingSettings, SmtpSettings, SmtpTls};
use reqwest::Method;
use serde_json::{Value, json};

use kizuna_testkit::SmtpSink;

async fn wait_for_state(server: &TestServer, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = server.admin_get(&format!("/api/messages/{id}")).await;
        assert_eq!(status, 200, "{body}");
        if body["message"]["state"] == state {
            return body;
        }
        last = body;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("message {id} never reached {state}: {last}");
}

fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text.find(marker).map(|i| i + marker.len()).expect("marker");
    let rest = &text[start..];
    &rest[..rest.find(|c: char| c == '"' || c == '>' || c.is_whitespace()).unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_messages_tracking_and_unsubscribe_over_http() {
    let sink = SmtpSink::start();
    let server = TestServer::start_messaging(MessagingSettings {
        public_url: "https://crm.shop.example".into(),
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
        sms: Some(kizuna_messaging_service::SmsSettings {
            base_url: "http://127.0.0.1:9".into(),
            account_sid: "AC1".into(),
            auth_token: "twilio-token".into(),
            from: "+15005550006".into(),
            stop_text: "Reply STOP to opt out.".into(),
            rate_per_second: 0.0,
        }),
        // The server runs on the wall clock: quiet hours are tested under a test clock in the service's tests.
        policy: kizuna_messaging::governor::Policy { quiet_hours: None, ..Default::default() },
        ..MessagingSettings::default()
    })
    .await;

    // A template with a mistake is refused with the part, line and column.
    let bad = json!({"channel": "email", "subject": "Hi", "html": "<p>ok</p>\n<p>{{ profile.first_name </p>"});
    let answer = server.admin(Method::PUT, "/api/templates/welcome", Some(bad)).await;
    assert_error(&answer, 400, "invalid_template", Some("html"));
    assert!(answer.1["message"].as_str().is_some_and(|m| m.contains("line 2")), "{}", answer.1);
    let answer =
        server.admin(Method::PUT, "/api/templates/welcome", Some(json!({"channel": "fax", "body": "x"}))).await;
    assert_eq!(answer.0, 400, "{}", answer.1);
    let answer =
        server.admin(Method::PUT, "/api/templates/Bad%20Name", Some(json!({"channel": "sms", "body": "x"}))).await;
    assert_error(&answer, 400, "invalid_field", Some("name"));
    let (status, _) = server.admin_get("/api/templates/welcome").await;
    assert_eq!(status, 404, "nothing was saved");

    let template = json!({"channel": "email", "purpose": "marketing", "topic": "news",
        "subject": "Welcome {{ profile.first_name | default: \"friend\" }}",
        "html": "<p>Hello {{ profile.first_name }}</p><p><a href=\"https://shop.example/new\">New in</a></p>"});
    let (status, body) = server.admin(Method::PUT, "/api/templates/welcome", Some(template.clone())).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");
    let (_, body) = server.admin(Method::PUT, "/api/templates/welcome", Some(template)).await;
    assert_eq!(body["version"], 2);
    let (status, body) = server.admin_get("/api/templates/welcome?version=1").await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)));

    let (status, _) = server
        .backend(
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": "KEN@Example.com", "first_name": "Ken",
            "consent": {"email": {"marketing": "granted"}}}}),
        )
        .await;
    assert_eq!(status, 200);
    let profile_id = server.profile("user_id", "u1").await["id"].as_str().expect("id").to_owned();

    let (status, body) =
        server.admin(Method::POST, "/api/templates/welcome/preview", Some(json!({"profile_id": profile_id}))).await;
    assert_eq!((status, body["subject"].as_str()), (200, Some("Welcome Ken")), "{body}");
    let (_, body) = server.admin(Method::POST, "/api/templates/welcome/preview", None).await;
    assert_eq!(body["subject"], "Welcome Sample", "sample data without a profile");

    // Queuing: every bad input is a 400 naming the field; nothing is queued.
    let answer =
        server.admin(Method::POST, "/api/messages", Some(json!({"template": "nope", "profile_id": profile_id}))).await;
    assert_error(&answer, 400, "invalid_field", Some("template"));
    let answer =
        server.admin(Method::POST, "/api/messages", Some(json!({"template": "welcome", "profile_id": "999999"}))).await;
    assert_error(&answer, 400, "invalid_field", Some("profile_id"));
    let answer = server
        .admin(
            Method::POST,
            "/api/messages",
            Some(json!({"template": "welcome", "profile_id": profile_id, "priority": "urgent"})),
        )
        .await;
    assert_eq!(answer.0, 400, "{}", answer.1);
    let answer =
        server.raw(server.client.post(server.url("/api/messages")).bearer_auth(&server.admin_key).body("{oops")).await;
    assert_error(&answer, 400, "malformed_json", None);
    let (_, listed) = server.admin_get("/api/messages").await;
    assert_eq!(listed["messages"].as_array().map(Vec::len), Some(0));

    let (status, body) = server
        .admin(
            Method::POST,
            "/api/messages",
            Some(json!({"template": "welcome", "profile_id": profile_id, "idempotency_key": "welcome:u1"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["messages"][0]["id"].as_str().expect("id").to_owned();
    let log = wait_for_state(&server, &id, "sent").await;
    let states: Vec<&str> =
        log["decisions"].as_array().expect("decisions").iter().filter_map(|d| d["state"].as_str()).collect();
    assert_eq!(states, ["queued", "sending", "sent"]);
    assert_eq!(log["message"]["recipient"], "ken@example.com");

    let mails = sink.received();
    assert_eq!(mails.len(), 1);
    let html = mails[0]["html"].as_str().expect("html");
    let click = after(html, "https://crm.shop.example/t/c/");
    let open = after(html, "https://crm.shop.example/t/o/");
    let unsubscribe = mails[0]["headers"]["List-Unsubscribe"].as_str().expect("header");
    let unsubscribe = after(unsubscribe, "https://crm.shop.example/t/u/");

    // Tracking links: a tampered token is a 400 and never a redirect.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut tampered = click.to_owned();
    tampered.replace_range(5..6, if &click[5..6] == "A" { "B" } else { "A" });
    let response = no_redirect.get(server.url(&format!("/t/c/{tampered}"))).send().await.expect("request");
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    let response = no_redirect.get(server.url(&format!("/t/c/{click}"))).send().await.expect("request");
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "https://shop.example/new");
    let response = no_redirect
        .get(server.url(&format!("/t/o/{open}")))
        .header("user-agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["content-type"], "image/gif");
    let (_, report) = server.admin_get("/api/messaging/report?group=template").await;
    assert_eq!(report["rows"][0]["clicked"], 1, "{report}");
    // Opened within seconds of sending: what security scanners do, so it is flagged as a machine open.
    assert_eq!(
        (report["rows"][0]["opened"].as_i64(), report["rows"][0]["machine_opened"].as_i64()),
        (Some(0), Some(1)),
        "{report}"
    );

    // The unsubscribe link's page does not unsubscribe by itself (mail scanners follow links)…
    let page = no_redirect.get(server.url(&format!("/t/u/{unsubscribe}"))).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let profile = server.profile("user_id", "u1").await;
    assert_eq!(profile["consent"]["email"]["marketing"]["status"], "granted");
    // …the one-click POST does.
    let response = no_redirect
        .post(server.url(&format!("/t/u/{unsubscribe}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("unsubscribe");
    assert_eq!(response.status(), 200);
    let profile = server.profile("user_id", "u1").await;
    assert_eq!(profile["consent"]["email"]["marketing"]["status"], "denied");

    let (_, body) = server
        .admin(Method::POST, "/api/messages", Some(json!({"template": "welcome", "profile_id": profile_id})))
        .await;
    let next = body["messages"][0]["id"].as_str().expect("id").to_owned();
    let log = wait_for_state(&server, &next, "suppressed").await;
    assert_eq!(log["message"]["reason"], "suppressed: unsubscribe");
    assert_eq!(sink.received().len(), 1, "the unsubscribed person got nothing more");
    let (_, listed) = server.admin_get("/api/messages?state=suppressed").await;
    assert_eq!(listed["messages"].as_array().map(Vec::len), Some(1));
    let answer = server.admin_get("/api/messages?state=lost").await;
    assert_error(&answer, 400, "invalid_parameter", Some("state"));
    let answer = server.admin_get("/api/messages/nope").await;
    assert_error(&answer, 404, "message_not_found", None);

    // Inbound SMS: STOP withdraws SMS marketing consent. Twilio signs its requests; an unsigned or wrongly
    // signed one is refused (the signature check itself is tested with Twilio's documented example).
    server
        .backend(
            "/v1/identify",
            json!({"userId": "u3", "traits": {"phone": "+81 90-1111-2222",
            "consent": {"sms": {"marketing": "granted"}}}}),
        )
        .await;
    let form = "From=%2B819011112222&Body=STOP";
    let post = |signature: Option<&str>| {
        let mut request = server
            .client
            .post(server.url("/hooks/sms/inbound"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        request
    };
    assert_error(&server.raw(post(None)).await, 401, "invalid_api_key", None);
    assert_error(&server.raw(post(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA="))).await, 401, "invalid_api_key", None);
    let response = post(None).bearer_auth(&server.admin_key).send().await.expect("inbound");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap_or_default().contains("unsubscribed"));
    let profile = server.profile("user_id", "u3").await;
    assert_eq!(profile["consent"]["sms"]["marketing"]["status"], "denied");
    server.stop().await;
}
