//! Recommendations end to end below HTTP: the real SQLite store, the ingest pipeline's change feed and the
//! recommender's threads, under a test clock — identity merges, erasure, time passing, and a restart that
//! rebuilds every counter from the event log.

use chrono::{Duration, TimeZone, Utc};
use kizuna_catalog::Product;
use kizuna_identity::{IdKind, Identifier};
use kizuna_ingest::parse_message;
use kizuna_pipeline::{Pipeline, PipelineConfig};
use kizuna_profiles::DataKind;
use kizuna_recs_service::{Query, Recommender, RecsSettings};
use kizuna_store::{Durability, Source, SqliteStore, Store};
use kizuna_types::{Clock, TestClock};
use serde_json::{Value, json};
use std::sync::Arc;

struct Node {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Arc<dyn Store>,
    clock: TestClock,
    recs: Recommender,
    pipeline: Pipeline,
    source: Source,
    rt: tokio::runtime::Runtime,
}

fn settings() -> RecsSettings {
    RecsSettings { retrain_minutes: 0, rebuild_ms: 10, ..RecsSettings::default() }
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        let clock = TestClock::at(Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).single().expect("time"));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Durability::Process).expect("store"));
        let source = store.create_source("web", true, DataKind::FirstParty, clock.now()).expect("source");
        let products: Vec<Product> = ["p1", "p2", "p3", "p4"]
            .iter()
            .map(|id| {
                serde_json::from_value(json!({"id": id, "title": format!("T{id}"), "price": 30})).expect("product")
            })
            .collect();
        store.upsert_products(&products, clock.now()).expect("catalog");
        let (recs, pipeline) = Self::boot(store.clone(), &clock);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Node { _dir: dir, path, store, clock, recs, pipeline, source, rt }
    }

    fn boot(store: Arc<dyn Store>, clock: &TestClock) -> (Recommender, Pipeline) {
        let recs = Recommender::start(store.clone(), Arc::new(clock.clone()), settings()).expect("recommender");
        let pipeline = Pipeline::start_with_feed(
            store,
            PipelineConfig::default(),
            Arc::new(clock.clone()),
            Some(recs.feed_sink()),
        )
        .expect("pipeline");
        (recs, pipeline)
    }

    fn restart(&mut self) {
        self.pipeline.clone().shutdown();
        self.recs.stop();
        self.store = Arc::new(SqliteStore::open(&self.path, Durability::Process).expect("store"));
        let (recs, pipeline) = Self::boot(self.store.clone(), &self.clock);
        self.recs = recs;
        self.pipeline = pipeline;
    }

    fn send(&self, message: Value) {
        let event = parse_message(message, self.clock.now()).expect("valid message");
        self.rt.block_on(self.pipeline.ingest(&self.source, vec![event])).expect("ingest");
        self.recs.sync();
    }

    fn profile(&self, kind: IdKind, value: &str) -> u64 {
        self.store.profile_by_identifier(&Identifier::new(kind, value)).expect("lookup").expect("profile exists")
    }

    fn ids(&self, placement: &str, query: Query) -> Vec<String> {
        let answer = self.recs.recommend(placement, &query).expect("answer");
        answer.items.iter().map(|i| i.product.id.clone()).collect()
    }
}

fn view(anonymous: &str, product: &str, at: chrono::DateTime<Utc>) -> Value {
    json!({"type": "track", "anonymousId": anonymous, "event": "Product Viewed",
           "properties": {"product_id": product}, "timestamp": at.to_rfc3339()})
}

fn order(user: &str, id: &str, products: &[&str]) -> Value {
    let products: Vec<Value> = products.iter().map(|p| json!({"product_id": p})).collect();
    json!({"type": "track", "userId": user, "event": "Order Completed",
           "properties": {"order_id": id, "total": 60, "products": products}})
}

#[test]
fn histories_follow_merges_and_erasure_and_survive_a_restart() {
    let mut node = Node::start();
    let now = node.clock.now();
    node.send(view("device-a", "p1", now - Duration::minutes(30)));
    node.send(view("device-b", "p2", now - Duration::minutes(20)));
    // Two devices, one person: both identify as u1.
    node.send(json!({"type": "identify", "anonymousId": "device-a", "userId": "u1"}));
    node.send(json!({"type": "identify", "anonymousId": "device-b", "userId": "u1"}));
    let u1 = node.profile(IdKind::UserId, "u1");
    let recent = Query { profile: Some(u1), ..Query::default() };
    assert_eq!(node.ids("recently_viewed", recent.clone()), ["p2", "p1"]);

    for (user, products) in [("u2", vec!["p3", "p4"]), ("u3", vec!["p3"]), ("u4", vec!["p3", "p4"])] {
        node.send(order(user, &format!("o-{user}"), &products));
    }
    assert_eq!(node.ids("home_bestsellers", Query::default()), ["p3", "p4"]);
    let before_restart = node.ids("cart_cross_sell", Query { products: vec!["p3".into()], ..Query::default() });
    assert_eq!(before_restart.first().map(String::as_str), Some("p4"));

    node.restart();
    assert_eq!(node.ids("recently_viewed", recent.clone()), ["p2", "p1"], "history rebuilt from the event log");
    assert_eq!(node.ids("home_bestsellers", Query::default()), ["p3", "p4"]);
    assert_eq!(node.ids("cart_cross_sell", Query { products: vec!["p3".into()], ..Query::default() }), before_restart);

    // Erasure drops the person's history (the anonymous aggregates stay).
    node.rt.block_on(node.pipeline.erase(u1)).expect("erase");
    node.recs.sync();
    assert!(node.ids("recently_viewed", recent).is_empty());
}

#[test]
fn a_future_timestamp_counts_as_now_and_cannot_wipe_a_products_counters() {
    let node = Node::start();
    let next_year = (node.clock.now() + Duration::days(365)).to_rfc3339();
    let mut forged = order("u1", "o1", &["p3"]);
    forged["timestamp"] = json!(next_year);
    node.send(forged);
    node.send(order("u2", "o2", &["p3"]));
    node.send(order("u3", "o3", &["p4"]));
    // Both p3 orders count today: p3 first with 2, then p4.
    assert_eq!(node.ids("home_bestsellers", Query::default()), ["p3", "p4"]);
}

#[test]
fn time_passing_moves_windows_under_the_test_clock() {
    let node = Node::start();
    node.send(order("u1", "o1", &["p1"]));
    node.send(order("u2", "o2", &["p1"]));
    let trending = Query { ..Query::default() };
    assert_eq!(node.ids("home_trending", trending.clone()), ["p1"]);
    // 40 days on: no longer trending, no longer a 30-day bestseller; the fallback is empty too.
    node.clock.advance(Duration::days(40));
    node.recs.rebuild_rankings();
    assert!(node.ids("home_trending", trending).is_empty());
    assert!(node.ids("home_bestsellers", Query::default()).is_empty());
    // A new product arrives at once in new arrivals.
    let fresh: Product = serde_json::from_value(json!({"id": "p9", "title": "New", "price": 5,
        "created_at": node.clock.now().to_rfc3339()}))
    .expect("product");
    node.recs.upsert_products(&[fresh]);
    assert_eq!(node.ids("new_arrivals", Query::default()), ["p9"]);
}
