//! The analytics API over HTTP against the real server: a run started from the API, each result of it, the
//! scores on profiles, and clear errors.

mod common;

use chrono::{Duration, Utc};
use common::{TestServer, assert_error};
use kizuna_analytics::simulate::{SimulationOptions, simulate_transactions};
use kizuna_analytics::{BgNbd, GammaGamma, TimeUnit};
use serde_json::{Value, json};

/// About 14 months of a simulated store (published CDNOW parameters), sent as Order Completed events.
async fn send_history(server: &TestServer) -> Vec<String> {
    let today = Utc::now().date_naive();
    let options = SimulationOptions {
        customers: 250,
        seed: 11,
        start: today - Duration::days(420),
        acquisition_days: 84,
        calibration_end: today - Duration::days(1),
        observation_end: None,
        unit: TimeUnit::Weeks,
    };
    let model = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("model");
    let spend = GammaGamma::new(6.25, 3.74, 15.44).expect("spend");
    let transactions = simulate_transactions(&model, &spend, &options).expect("simulate");
    let mut messages = Vec::new();
    let mut customers = Vec::new();
    for (i, t) in transactions.iter().enumerate() {
        if customers.last() != Some(&t.customer_id) {
            customers.push(t.customer_id.clone());
        }
        let at = t.date.and_hms_opt(9, 0, 0).expect("time").and_utc() + Duration::seconds(i as i64);
        messages.push(json!({"type": "track", "userId": t.customer_id, "event": "Order Completed",
            "timestamp": at.to_rfc3339(), "messageId": format!("order-{i}"),
            "properties": {"order_id": format!("o{i}"), "total": t.amount.max(1.0),
                "products": [{"product_id": "p1", "category": "coffee", "price": t.amount.max(1.0)}]}}));
    }
    for chunk in messages.chunks(200) {
        let (status, body) = server.backend("/v1/batch", json!({"batch": chunk})).await;
        assert_eq!(status, 200, "{body}");
    }
    customers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_from_the_api_serves_every_result_and_scores_profiles() {
    let server = TestServer::start().await;
    let before = server.admin_get("/api/analytics/models").await;
    assert_error(&before, 404, "analytics_run_not_found", None);
    let customers = send_history(&server).await;

    let (status, summary) = server.admin(reqwest::Method::POST, "/api/analytics/runs?wait=true", None).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["buyers"], customers.len());
    assert_eq!(summary["models_fitted"], true);
    let run_id = summary["run_id"].as_i64().expect("run id");

    let (status, runs) = server.admin_get("/api/analytics/runs").await;
    assert_eq!(status, 200);
    assert_eq!(runs["runs"][0]["id"], run_id);
    assert_eq!(
        (runs["runs"][0]["status"].as_str(), runs["runs"][0]["trigger"].as_str()),
        (Some("succeeded"), Some("api"))
    );
    let (status, run) = server.admin_get(&format!("/api/analytics/runs/{run_id}")).await;
    assert_eq!(status, 200);
    assert!(run["report"]["duration_ms"].as_f64().is_some());

    let (_, models) = server.admin_get("/api/analytics/models").await;
    assert_eq!(models["run_id"], run_id);
    let bg = &models["models"]["bgnbd"];
    let names: Vec<&str> = bg["parameters"].as_array().expect("params").iter().filter_map(|p| p[0].as_str()).collect();
    assert_eq!(names, ["r", "alpha", "a", "b"]);
    assert!(bg["log_likelihood"].as_f64().expect("ll") < 0.0);
    assert!(bg["window"]["start"].is_string() && bg["window"]["end"].is_string(), "the data window is recorded");

    let (_, rfm) = server.admin_get("/api/analytics/rfm").await;
    let grid_total: u64 = rfm["rfm"]["grid_recency_by_frequency"]
        .as_array()
        .expect("grid")
        .iter()
        .flat_map(|row| row.as_array().expect("row").iter().map(|v| v.as_u64().expect("count")))
        .sum();
    assert_eq!(grid_total, customers.len() as u64);
    let (_, cohorts) = server.admin_get("/api/analytics/cohorts").await;
    let cohorts = cohorts["cohorts"]["cohorts"].as_array().expect("cohorts");
    assert!(cohorts.len() >= 3, "customers acquired over 12 weeks: {cohorts:?}");
    assert_eq!(cohorts[0]["retention"][0], 1.0);
    let (_, metrics) = server.admin_get("/api/analytics/metrics").await;
    assert_eq!(metrics["metrics"]["customers"], customers.len());
    let (_, journey) = server.admin_get("/api/analytics/journey").await;
    assert_eq!(journey["journey"]["profiles"], customers.len());
    let (_, distributions) = server.admin_get("/api/analytics/distributions").await;
    assert_eq!(distributions["distributions"]["churn_risk"]["count"], customers.len());

    let (status, holdout) = server.admin_get("/api/analytics/holdout").await;
    assert_eq!(status, 200, "{holdout}");
    let report = &holdout["holdout"]["report"];
    let groups: u64 =
        report["groups"].as_array().expect("groups").iter().map(|g| g["customers"].as_u64().expect("n")).sum();
    assert_eq!(groups, report["total"]["customers"].as_u64().expect("total"));
    let svg = server
        .client
        .get(server.url("/api/analytics/holdout?format=svg"))
        .bearer_auth(&server.admin_key)
        .send()
        .await
        .expect("svg");
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.expect("body").starts_with("<svg"));

    // Scores are computed attributes of the profile, beside what the events say and the journey stage.
    let repeat = &customers[0];
    let profile = server.profile("user_id", repeat).await;
    let computed = &profile["computed"];
    assert_eq!(computed["analytics_run"], run_id);
    assert!(computed["rfm_segment"].is_string() && computed["rfm_score"].is_string(), "{computed}");
    assert!(computed["p_alive"].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)), "{computed}");
    assert!(computed["predicted_clv"].as_f64().is_some(), "{computed}");
    let stage = computed["journey_stage"].as_str().expect("stage");
    assert!(["purchase", "post_purchase", "retention"].contains(&stage), "{stage}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_errors_are_clear() {
    let server = TestServer::start().await;
    assert_error(&server.admin_get("/api/analytics/nope").await, 404, "route_not_found", None);
    assert_error(&server.admin_get("/api/analytics/runs/999").await, 404, "analytics_run_not_found", None);
    assert_error(&server.admin_get("/api/analytics/runs/x").await, 400, "invalid_parameter", Some("id"));
    assert_error(&server.admin_get("/api/analytics/runs?limit=0").await, 400, "invalid_parameter", Some("limit"));
    let bad_wait = server.admin(reqwest::Method::POST, "/api/analytics/runs?wait=maybe", None).await;
    assert_error(&bad_wait, 400, "invalid_parameter", Some("wait"));
    let anonymous: (u16, Value) = {
        let response = server.client.get(server.url("/api/analytics/models")).send().await.expect("request");
        (response.status().as_u16(), response.json().await.expect("json"))
    };
    assert_error(&anonymous, 401, "missing_api_key", None);
    // A run on an empty store succeeds and says why there are no models.
    let (status, summary) = server.admin(reqwest::Method::POST, "/api/analytics/runs?wait=true", None).await;
    assert_eq!((status, summary["buyers"].as_u64()), (200, Some(0)));
    let (_, models) = server.admin_get("/api/analytics/models").await;
    assert!(models["models"]["skipped"][0].as_str().expect("reason").contains("0 buyers"), "{models}");
    assert_error(&server.admin_get("/api/analytics/holdout").await, 404, "analytics_run_not_found", None);
    server.stop().await;
}
