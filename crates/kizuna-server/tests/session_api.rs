//! Signing in to the admin web app over HTTP: the password check, the session cookie, CSRF protection of changes,
//! sign-out, the guard against password guessing, and the app's files with their security headers.

mod common;

use common::TestServer;
use kizuna_server::session::hash_password;
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password";

async fn server_with_admin() -> TestServer {
    let server = TestServer::start().await;
    let hash = hash_password(PASSWORD).expect("hash");
    server.store.admins().create_admin("ops@example.com", &hash, chrono::Utc::now()).expect("create admin");
    server
}

fn session_cookie(response: &reqwest::Response) -> String {
    let header = response.headers().get("set-cookie").expect("a cookie is set").to_str().expect("ascii").to_owned();
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"), "{header}");
    header.split(';').next().expect("name=value").to_owned()
}

async fn sign_in(server: &TestServer, email: &str, password: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/api/session"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("sign in")
}

#[tokio::test]
async fn a_session_reads_freely_but_changes_only_with_its_csrf_token_and_ends_at_sign_out() {
    let server = server_with_admin().await;
    let response = sign_in(&server, " OPS@example.com ", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let cookie = session_cookie(&response);
    let body: Value = response.json().await.expect("json");
    let csrf = body["csrf_token"].as_str().expect("csrf token").to_owned();
    assert_eq!(body["email"], "ops@example.com");

    let me: Value = server
        .client
        .get(server.url("/api/session"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["csrf_token"], csrf.as_str(), "the app gets its token back after a reload");

    let read = server.client.get(server.url("/api/segments")).header("Cookie", &cookie).send().await.expect("read");
    assert_eq!(read.status(), 200, "reads need only the cookie");

    let segment = json!({"name": "csrf-test", "text": "computed.orders_count >= 1"});
    let forged = server
        .client
        .post(server.url("/api/segments"))
        .header("Cookie", &cookie)
        .json(&segment)
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 403);
    let error: Value = forged.json().await.expect("json");
    assert_eq!(error["code"], "csrf_token_mismatch");
    assert!(server.store.segment_by_name("csrf-test").expect("read").is_none(), "a refused change writes nothing");

    let wrong = server
        .client
        .post(server.url("/api/segments"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", "0".repeat(csrf.len()))
        .json(&segment)
        .send()
        .await
        .expect("wrong token");
    assert_eq!(wrong.status(), 403);

    let allowed = server
        .client
        .post(server.url("/api/segments"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&segment)
        .send()
        .await
        .expect("change");
    assert_eq!(allowed.status(), 201, "{:?}", allowed.text().await);

    let out = server
        .client
        .delete(server.url("/api/session"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 204);
    let after = server.client.get(server.url("/api/segments")).header("Cookie", &cookie).send().await.expect("read");
    assert_eq!(after.status(), 401);
    let error: Value = after.json().await.expect("json");
    assert_eq!(error["code"], "invalid_credentials");
    // The Bearer admin key still works beside sessions.
    let keyed =
        server.client.get(server.url("/api/segments")).bearer_auth(&server.admin_key).send().await.expect("read");
    assert_eq!(keyed.status(), 200);
}

#[tokio::test]
async fn wrong_passwords_are_refused_alike_and_guessing_is_slowed_down() {
    let server = server_with_admin().await;
    let unknown = sign_in(&server, "nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status(), 401);
    assert!(unknown.headers().get("set-cookie").is_none());
    let unknown: Value = unknown.json().await.expect("json");
    let wrong = sign_in(&server, "ops@example.com", "not the password").await;
    assert_eq!(wrong.status(), 401);
    let wrong: Value = wrong.json().await.expect("json");
    assert_eq!(unknown, wrong, "an unknown email and a wrong password get the same answer");

    let malformed = server
        .client
        .post(server.url("/api/session"))
        .body("{\"email\": ")
        .header("Content-Type", "application/json")
        .send()
        .await
        .expect("malformed");
    assert_eq!(malformed.status(), 400);
    // Login CSRF: a cross-site form posts text/plain; a browser says a request comes from another site.
    let plain = server
        .client
        .post(server.url("/api/session"))
        .header("Content-Type", "text/plain")
        .body(json!({"email": "ops@example.com", "password": PASSWORD}).to_string())
        .send()
        .await
        .expect("text/plain");
    assert_eq!(plain.status(), 415);
    let cross_site = server
        .client
        .post(server.url("/api/session"))
        .header("Sec-Fetch-Site", "cross-site")
        .json(&json!({"email": "ops@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("cross-site");
    assert_eq!(cross_site.status(), 403);
    assert!(cross_site.headers().get("set-cookie").is_none());
    let bad_email = sign_in(&server, "not-an-email", PASSWORD).await;
    assert_eq!(bad_email.status(), 400);
    let error: Value = bad_email.json().await.expect("json");
    assert_eq!(error["field"], "email");

    for _ in 0..4 {
        assert_eq!(sign_in(&server, "ops@example.com", "guess").await.status(), 401);
    }
    let locked = sign_in(&server, "ops@example.com", PASSWORD).await;
    assert_eq!(locked.status(), 429, "five failures in a row lock the email for a while, even for the right password");
    let error: Value = locked.json().await.expect("json");
    assert_eq!(error["code"], "too_many_attempts");
    assert_eq!(sign_in(&server, "other@example.com", "guess").await.status(), 401, "other emails are not locked");
}

#[tokio::test]
async fn the_app_is_served_with_its_modules_and_a_strict_content_security_policy() {
    let server = TestServer::start().await;
    let shell = server.client.get(server.url("/admin/customers/42")).send().await.expect("shell");
    assert_eq!(shell.status(), 200, "client-side routes get the app shell");
    let csp = shell.headers().get("content-security-policy").expect("CSP").to_str().expect("ascii").to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(shell.text().await.expect("html").contains("/admin/assets/js/app.js"));
    let module = server.client.get(server.url("/admin/assets/js/app.js")).send().await.expect("module");
    assert_eq!(module.status(), 200);
    assert_eq!(module.headers()["content-type"], "text/javascript; charset=utf-8");
    let missing = server.client.get(server.url("/admin/assets/js/nope.js")).send().await.expect("missing");
    assert_eq!(missing.status(), 404);
    let traversal =
        server.client.get(server.url("/admin/assets/..%2F..%2FCargo.toml")).send().await.expect("traversal");
    assert_eq!(traversal.status(), 404);
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(server.url("/"))
        .send()
        .await
        .expect("root");
    assert_eq!(root.headers()["location"], "/admin/");
}

#[tokio::test]
async fn store_settings_and_the_sending_policy_change_whole_or_not_at_all_and_are_kept() {
    let server = TestServer::start().await;
    let put =
        |body: Value| server.client.put(server.url("/api/settings")).bearer_auth(&server.admin_key).json(&body).send();
    let before = server.messenger.live_settings();

    let bad_currency = put(json!({"store": {"currency": "yen!"}, "policy": {"caps": [], "quiet_hours": null,
        "default_timezone": "Asia/Tokyo", "max_delay_hours": {"abandonment": 24, "flow": 72, "campaign": 48},
        "marketing_requires_opt_in": true}}))
    .await
    .expect("put");
    assert_eq!(bad_currency.status(), 400);
    let error: Value = bad_currency.json().await.expect("json");
    assert_eq!(error["field"], "store.currency");
    let bad_cap = put(json!({"policy": {"caps": [{"channel": "email", "max": "three", "window_hours": 24}],
        "quiet_hours": null, "default_timezone": "UTC", "max_delay_hours": {"abandonment": 24, "flow": 72, "campaign": 48}}}))
    .await
    .expect("put");
    assert_eq!(bad_cap.status(), 400);
    let error: Value = bad_cap.json().await.expect("json");
    assert_eq!(error["field"], "policy.caps[0].max");
    assert_eq!(server.messenger.live_settings(), before, "a refused change changes nothing");

    let ok = put(json!({"store": {"currency": "JPY", "timezone": "Asia/Tokyo", "locale": "ja-JP"}, "policy": {
        "caps": [{"channel": "line", "max": 2, "window_hours": 24}], "quiet_hours": {"start": "22:00:00", "end": "07:30:00"},
        "default_timezone": "Asia/Tokyo", "max_delay_hours": {"abandonment": 12, "flow": 48, "campaign": 24},
        "marketing_requires_opt_in": true}}))
    .await
    .expect("put");
    assert_eq!(ok.status(), 200);
    let shown: Value = ok.json().await.expect("json");
    assert_eq!(shown["store"]["currency"], "JPY");
    assert_eq!(shown["policy"]["quiet_hours"]["start"], "22:00:00");
    let live = server.messenger.live_settings();
    assert_eq!(live.policy.default_timezone, "Asia/Tokyo");
    assert_eq!(live.policy.caps.len(), 1);
    assert_eq!(live.store["name"], before.store["name"], "store keys not sent keep their value");
    let kept = server.store.messages().setting("live_settings").expect("read").expect("saved in the data directory");
    assert!(kept.contains("\"JPY\"") && kept.contains("Asia/Tokyo"), "{kept}");
}
