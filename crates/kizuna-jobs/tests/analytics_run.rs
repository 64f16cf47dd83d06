//! The analytics run against the real store and write path, under a test clock: who gets scored, what the
//! scores say, what the run records, and that stale scores go.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use kizuna_analytics::simulate::{SimulationOptions, simulate_transactions};
use kizuna_analytics::{BgNbd, GammaGamma, TimeUnit};
use kizuna_identity::{IdKind, Identifier};
use kizuna_ingest::parse_message;
use kizuna_jobs::scheduler::{Schedule, is_due};
use kizuna_jobs::{AnalyticsScheduler, AnalyticsSettings, run_analytics};
use kizuna_pipeline::{Pipeline, PipelineConfig};
use kizuna_profiles::DataKind;
use kizuna_store::{Durability, Source, SqliteStore, Store};
use kizuna_types::{Clock, TestClock};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: TestClock,
    pipeline: Pipeline,
    source: Source,
    runtime: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), Durability::Process).expect("store"));
        let clock = TestClock::at(Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).single().expect("time"));
        let pipeline =
            Pipeline::start(store.clone(), PipelineConfig::default(), Arc::new(clock.clone())).expect("pipeline");
        let source = store.create_source("shop", true, DataKind::FirstParty, clock.now()).expect("source");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Fixture { _dir: dir, store, clock, pipeline, source, runtime }
    }

    fn send(&self, messages: Vec<Value>) {
        let events = messages.into_iter().map(|m| parse_message(m, self.clock.now()).expect("valid")).collect();
        self.runtime.block_on(self.pipeline.ingest(&self.source, events)).expect("ingest");
    }

    fn profile(&self, user: &str) -> kizuna_store::StoredProfile {
        let id = self
            .store
            .profile_by_identifier(&Identifier::new(IdKind::UserId, user))
            .expect("lookup")
            .unwrap_or_else(|| panic!("no profile for {user}"));
        self.store.profile(id).expect("read").expect("profile")
    }
}

fn order(user: &str, order_id: &str, at: DateTime<Utc>, total: f64, category: &str) -> Value {
    json!({"type": "track", "userId": user, "event": "Order Completed", "timestamp": at.to_rfc3339(),
        "messageId": format!("m-{order_id}"),
        "properties": {"order_id": order_id, "total": total, "products": [{"product_id": "p", "category": category, "price": total}]}})
}

/// A CDNOW-like store simulated from the published BG/NBD and Gamma-Gamma parameters: 300 customers acquired
/// over 12 weeks, about a year of history. Returns each customer's number of orders.
fn seed_store(f: &Fixture) -> BTreeMap<String, usize> {
    let options = SimulationOptions {
        customers: 300,
        seed: 7,
        start: NaiveDate::from_ymd_opt(2025, 6, 1).expect("date"),
        acquisition_days: 84,
        calibration_end: f.clock.now().date_naive() - Duration::days(1),
        observation_end: None,
        unit: TimeUnit::Weeks,
    };
    let model = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("model");
    let spend = GammaGamma::new(6.25, 3.74, 15.44).expect("spend");
    let transactions = simulate_transactions(&model, &spend, &options).expect("simulate");
    let mut orders: BTreeMap<String, usize> = BTreeMap::new();
    let mut messages = Vec::new();
    for t in &transactions {
        let n = orders.entry(t.customer_id.clone()).or_default();
        let at = t.date.and_hms_opt(10, 0, 0).expect("time").and_utc() + Duration::minutes(*n as i64);
        let category = if n.is_multiple_of(2) { "coffee" } else { "tea" };
        messages.push(order(&t.customer_id, &format!("{}-{n}", t.customer_id), at, t.amount.max(1.0), category));
        *n += 1;
    }
    f.send(messages);
    orders
}

#[test]
fn a_run_scores_every_buyer_and_records_fits_metrics_and_the_funnel() {
    let f = Fixture::new();
    let orders = seed_store(&f);
    let buyers = orders.len();
    let repeat = orders.iter().find(|(_, n)| **n >= 4).map(|(c, _)| c.clone()).expect("a frequent buyer");
    let advocate = orders.keys().next().expect("a buyer").clone();
    let one_time = orders.iter().find(|(_, n)| **n == 1).map(|(c, _)| c.clone()).expect("a one-time buyer");
    let now = f.clock.now();
    // Non-buyers: a cancelled order, a fully refunded order, a browser, a cart abandoner; a reviewing buyer.
    f.send(vec![
        order("cancelled", "x1", now - Duration::days(10), 50.0, "coffee"),
        json!({"type": "track", "userId": "cancelled", "event": "Order Cancelled", "properties": {"order_id": "x1"},
            "timestamp": (now - Duration::days(9)).to_rfc3339()}),
        order("refunded", "x2", now - Duration::days(10), 40.0, "coffee"),
        json!({"type": "track", "userId": "refunded", "event": "Order Refunded", "properties": {"order_id": "x2", "total": 40},
            "timestamp": (now - Duration::days(8)).to_rfc3339()}),
        json!({"type": "track", "userId": "browser", "event": "Product Viewed", "properties": {"product_id": "p"},
            "timestamp": (now - Duration::days(2)).to_rfc3339()}),
        json!({"type": "track", "userId": "cart", "event": "Product Added", "properties": {"product_id": "p"},
            "timestamp": (now - Duration::days(2)).to_rfc3339()}),
        json!({"type": "track", "userId": advocate, "event": "Product Reviewed", "properties": {"product_id": "p"},
            "timestamp": (now - Duration::days(1)).to_rfc3339()}),
    ]);

    let summary = run_analytics(f.store.as_ref(), now, "test", &AnalyticsSettings::default()).expect("run");
    assert_eq!((summary.buyers, summary.scored), (buyers, buyers));
    assert_eq!(summary.profiles, buyers + 4);
    let run = f.store.analytics_run(Some(summary.run_id)).expect("read").expect("run");
    assert!(summary.models_fitted, "{:?}", run.report.as_ref().map(|r| &r["models"]));
    assert_eq!((run.status.as_str(), run.trigger.as_str()), ("succeeded", "test"));
    let report = run.report.expect("report");
    let bg = &report["models"]["bgnbd"];
    assert_eq!(bg["n_customers"], buyers);
    assert!(bg["log_likelihood"].as_f64().expect("ll") < 0.0);
    assert_eq!(report["models"]["skipped"], json!([]), "all three models fitted");
    assert_eq!(report["metrics"]["customers"], buyers);
    assert_eq!(report["rfm"]["customers"], buyers);
    let stages = report["journey"]["stages"].as_array().expect("stages");
    let counted: u64 = stages.iter().map(|s| s["count"].as_u64().expect("count")).sum();
    assert_eq!(counted, (buyers + 4) as u64, "every profile in exactly one stage");
    let count = |stage: &str| stages.iter().find(|s| s["stage"] == stage).expect("stage")["count"].clone();
    assert_eq!(count("advocacy"), 1, "one buyer reviewed a product");
    // "cancelled" and "refunded" have no net order but a checkout-free order event: they browsed nothing.
    assert_eq!(count("decision"), 1, "the cart abandoner");
    assert_eq!(count("consideration"), 1, "the product viewer");
    let categories: Vec<&str> = report["metrics"]["category_gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .filter_map(|g| g["category"].as_str())
        .collect();
    assert!(categories.contains(&"coffee"), "{categories:?}");

    // Scores on a repeat buyer.
    let scores = f.profile(&repeat).scores.expect("the repeat buyer is scored");
    assert_eq!(scores["analytics_run"], summary.run_id);
    assert!(scores["orders_net"].as_u64().expect("orders") >= 2, "{scores}");
    assert_eq!(scores["one_time_buyer"], false);
    let p_alive = scores["p_alive"].as_f64().expect("p_alive");
    assert!((0.0..=1.0).contains(&p_alive));
    assert!((scores["churn_risk"].as_f64().expect("churn") - (1.0 - p_alive)).abs() < 1e-3);
    let e30 = scores["expected_orders_30d"].as_f64().expect("30d");
    let e90 = scores["expected_orders_90d"].as_f64().expect("90d");
    let e365 = scores["expected_orders_365d"].as_f64().expect("365d");
    assert!(0.0 < e30 && e30 < e90 && e90 < e365, "{e30} {e90} {e365}");
    assert!(scores["predicted_clv"].as_f64().expect("clv") > 0.0);
    assert_eq!(scores["rfm_score"].as_str().map(str::len), Some(3));
    if let Some(next) = scores["next_order_expected_at"].as_str() {
        assert!(next >= now.date_naive().to_string().as_str(), "{next}");
    }
    for user in ["cancelled", "refunded", "browser", "cart"] {
        assert!(f.profile(user).scores.is_none(), "{user} has no net order and gets no purchase scores");
    }

    // A buyer whose order is refunded in full stops being a buyer: the next run drops its scores.
    let single = f.profile(&one_time);
    let single_scores = single.scores.clone().expect("scored");
    assert_eq!(single_scores["one_time_buyer"], true);
    assert!(single_scores["p_alive"].as_f64().expect("Pareto/NBD P(alive)") < 1.0, "{single_scores}");
    f.send(vec![json!({"type": "track", "userId": one_time, "event": "Order Refunded",
        "properties": {"order_id": format!("{one_time}-0")}, "timestamp": now.to_rfc3339()})]);
    let second = run_analytics(f.store.as_ref(), now, "test", &AnalyticsSettings::default()).expect("run");
    assert_eq!(second.buyers, buyers - 1);
    assert!(f.profile(&one_time).scores.is_none(), "stale scores are removed");
    assert_eq!(f.profile(&repeat).scores.expect("scored")["analytics_run"], second.run_id);
    f.pipeline.shutdown();
}

#[test]
fn too_few_buyers_skip_the_models_but_keep_rfm_and_say_why() {
    let f = Fixture::new();
    let now = f.clock.now();
    f.send(vec![
        order("a", "a1", now - Duration::days(40), 30.0, "coffee"),
        order("a", "a2", now - Duration::days(5), 30.0, "coffee"),
        order("b", "b1", now - Duration::days(3), 80.0, "tea"),
    ]);
    let summary = run_analytics(f.store.as_ref(), now, "test", &AnalyticsSettings::default()).expect("run");
    assert!(!summary.models_fitted);
    let report = f.store.analytics_run(None).expect("read").expect("latest").report.expect("report");
    assert!(report["models"]["skipped"][0].as_str().expect("reason").contains("2 buyers"), "{}", report["models"]);
    let a = f.profile("a").scores.expect("scored by RFM");
    assert!(a["rfm_segment"].is_string() && a.get("p_alive").is_none());
    f.pipeline.shutdown();
}

#[test]
fn the_schedule_runs_on_the_injected_clock_and_requests_run_in_the_background() {
    let f = Fixture::new();
    seed_store(&f);
    let every = Duration::hours(6);
    let started = f.clock.now();
    assert!(!is_due(f.store.as_ref(), &f.clock, every, started), "a fresh scheduler waits one interval");
    f.clock.advance(Duration::hours(6));
    assert!(is_due(f.store.as_ref(), &f.clock, every, started), "never ran, six hours after start: due");
    run_analytics(f.store.as_ref(), f.clock.now(), "test", &AnalyticsSettings::default()).expect("run");
    assert!(!is_due(f.store.as_ref(), &f.clock, every, started));
    f.clock.advance(Duration::hours(5));
    assert!(!is_due(f.store.as_ref(), &f.clock, every, started));
    f.clock.advance(Duration::hours(1));
    assert!(is_due(f.store.as_ref(), &f.clock, every, started), "six hours after the last run");

    let scheduler = AnalyticsScheduler::start(
        f.store.clone(),
        Arc::new(f.clock.clone()),
        AnalyticsSettings::default(),
        Schedule { every: None, poll: std::time::Duration::from_millis(20) },
    )
    .expect("start");
    scheduler.request("import");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let runs = f.store.analytics_runs(5).expect("runs");
        if runs.iter().any(|r| r.trigger == "import" && r.status == "succeeded") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the requested run finished: {runs:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    scheduler.shutdown();
    f.pipeline.shutdown();
}
