//! Flows survive `kill -9` of the real server in the middle of a round: after a restart every run finishes,
//! every step is carried out for every person, and a webhook made again after the crash carries the same
//! idempotency key, run, step and data (so the receiver can tell it is the same call).

mod common;

use common::{Server, last_line, run};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PEOPLE: usize = 150;

/// Every call received: (idempotency key, body).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver that answers each call after `delay`, so a round of many people's calls takes long
/// enough to be killed in the middle of.
async fn hook_server(delay: Duration) -> (String, Calls) {
    use axum::routing::post;
    let calls = Calls::default();
    let recorded = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
            let recorded = recorded.clone();
            async move {
                tokio::time::sleep(delay).await;
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
                recorded.lock().expect("calls").push((key.to_owned(), body.0));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), calls)
}

async fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, &url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_killed_mid_round_carries_out_every_step_for_everyone_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let write_key = last_line(&run(&["source", "create", "web", "--data-dir", &data]));
    let admin_key = last_line(&run(&["key", "create", "ops", "--data-dir", &data]));
    let (hook, calls) = hook_server(Duration::from_millis(40)).await;
    let client = reqwest::Client::new();
    let mut server = Server::start(dir.path()).await;

    let flow = json!({"trigger": {"event": {"name": "Signed Up"}}, "steps": [
        {"id": "first", "type": "webhook", "url": hook, "body": {"n": 1}, "next": "second"},
        {"id": "second", "type": "webhook", "url": hook, "body": {"n": 2}, "next": "tag"},
        {"id": "tag", "type": "tag", "add": ["welcomed"]}]});
    let base = server.base.clone();
    admin(&client, reqwest::Method::PUT, format!("{base}/api/flows/signup"), &admin_key, Some(flow)).await;
    admin(&client, reqwest::Method::POST, format!("{base}/api/flows/signup/activate"), &admin_key, None).await;
    let batch: Vec<Value> = (0..PEOPLE)
        .map(
            |i| json!({"type": "track", "userId": format!("p{i}"), "event": "Signed Up", "messageId": format!("m{i}")}),
        )
        .collect();
    let response = client
        .post(format!("{base}/v1/batch"))
        .basic_auth(&write_key, Some(""))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .expect("send");
    assert!(response.status().is_success(), "{}", response.status());

    // Killed once a fifth of the calls have been answered: others are in flight, and no run has been written
    // as past its webhooks yet or only some have.
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls.lock().expect("calls").len() < PEOPLE * 2 / 5 {
        assert!(Instant::now() < deadline, "the flow made too few calls");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    // Calls the server made before it died are recorded once the receiver's delay has passed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_kill = calls.lock().expect("calls").len();
    assert!(at_kill < PEOPLE * 2, "every call was made before the kill ({at_kill}): the test killed nothing mid-round");
    drop(server);

    let server = Server::start(dir.path()).await;
    let base = server.base.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let runs = loop {
        let body =
            admin(&client, reqwest::Method::GET, format!("{base}/api/flows/signup/runs?limit=1000"), &admin_key, None)
                .await;
        let runs = body["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() == PEOPLE && runs.iter().all(|r| r["status"] == "completed") {
            break runs;
        }
        assert!(Instant::now() < deadline, "runs did not all complete after the restart: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Each run went the whole way once: both webhooks called, then tagged.
    for run in &runs {
        let id = run["id"].as_str().expect("run id");
        let detail = admin(&client, reqwest::Method::GET, format!("{base}/api/flow-runs/{id}"), &admin_key, None).await;
        let path: Vec<(&str, &str)> = detail["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| (s["step"].as_str().unwrap_or(""), s["outcome"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(path, vec![("first", "called"), ("second", "called"), ("tag", "tagged")], "run {id}");
    }

    // Every person's two calls arrived; a call made again after the crash is the same call (same key, run,
    // step and data), and no two different calls share a key. The profile snapshot in a repeated call may be
    // newer: the run had got as far as tagging before the kill, and the tag is there on the second attempt.
    let calls = calls.lock().expect("calls").clone();
    let identity = |body: &Value| (body["run_id"].clone(), body["step"].clone(), body["data"].clone());
    let mut by_key: BTreeMap<&str, &Value> = BTreeMap::new();
    for (key, body) in &calls {
        assert!(!key.is_empty(), "a call without an idempotency key: {body}");
        let first = by_key.entry(key).or_insert(body);
        assert_eq!(identity(first), identity(body), "two different calls under key {key}");
    }
    let mut steps_by_run: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for body in by_key.values() {
        steps_by_run
            .entry(body["run_id"].as_str().expect("run_id"))
            .or_default()
            .insert(body["step"].as_str().expect("step"));
    }
    assert_eq!(by_key.len(), PEOPLE * 2, "{} calls, {} distinct", calls.len(), by_key.len());
    assert_eq!(steps_by_run.len(), PEOPLE);
    assert!(steps_by_run.values().all(|steps| steps.iter().copied().eq(["first", "second"])));
    // At least once, not more: only calls made before the kill are made again (a round writes its runs'
    // progress after carrying out their steps, so a kill in between repeats them under the same keys).
    let repeated = calls.len() - by_key.len();
    assert!(repeated <= at_kill, "{repeated} calls repeated after the restart, {at_kill} made before the kill");

    let profile =
        admin(&client, reqwest::Method::GET, format!("{base}/api/profiles/by/user_id/p7"), &admin_key, None).await;
    assert_eq!(profile["traits"]["tags"], json!(["welcomed"]), "{profile}");
}
