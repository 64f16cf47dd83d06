//! Segment membership end to end below HTTP: the real SQLite store, the ingest pipeline's change feed, the
//! engine thread, under a test clock.

use chrono::{Duration, TimeZone, Utc};
use kizuna_identity::{IdKind, Identifier};
use kizuna_ingest::{Event, parse_message};
use kizuna_membership::{Membership, MembershipSettings};
use kizuna_pipeline::{Pipeline, PipelineConfig};
use kizuna_profiles::DataKind;
use kizuna_segments::parse;
use kizuna_store::{Durability, SegmentTransitionRow, Source, SqliteStore, Store, TransitionFilter};
use kizuna_types::{Clock, TestClock};
use serde_json::{Value, json};
use std::sync::Arc;

struct Node {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Arc<dyn Store>,
    clock: TestClock,
    membership: Membership,
    pipeline: Pipeline,
    source: Source,
    rt: tokio::runtime::Runtime,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        let clock = TestClock::at(Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).single().expect("time"));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Durability::Process).expect("store"));
        let source = store.create_source("web", true, DataKind::FirstParty, clock.now()).expect("source");
        let (membership, pipeline) = Self::boot(store.clone(), &clock);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Node { _dir: dir, path, store, clock, membership, pipeline, source, rt }
    }

    fn boot(store: Arc<dyn Store>, clock: &TestClock) -> (Membership, Pipeline) {
        let membership =
            Membership::start(store.clone(), Arc::new(clock.clone()), MembershipSettings::default()).expect("engine");
        let pipeline = Pipeline::start_with_feed(
            store,
            PipelineConfig::default(),
            Arc::new(clock.clone()),
            Some(membership.feed_sink()),
        )
        .expect("pipeline");
        (membership, pipeline)
    }

    /// Stops both threads and starts them again on the same data directory.
    fn restart(&mut self) {
        self.pipeline.clone().shutdown();
        self.membership.shutdown();
        self.store = Arc::new(SqliteStore::open(&self.path, Durability::Process).expect("store"));
        let (membership, pipeline) = Self::boot(self.store.clone(), &self.clock);
        self.membership = membership;
        self.pipeline = pipeline;
    }

    fn send(&self, message: Value) {
        let event: Event = parse_message(message, self.clock.now()).expect("valid message");
        self.rt.block_on(self.pipeline.ingest(&self.source, vec![event])).expect("ingest");
        self.sync();
    }

    fn sync(&self) {
        self.rt.block_on(self.membership.sync()).expect("sync");
    }

    fn save(&self, name: &str, text: &str) {
        self.rt.block_on(self.membership.save(name, "", parse(text).expect("definition"))).expect("save");
    }

    fn profile(&self, user: &str) -> u64 {
        self.store
            .profile_by_identifier(&Identifier::new(IdKind::UserId, user))
            .expect("lookup")
            .expect("profile exists")
    }

    fn history(&self) -> Vec<SegmentTransitionRow> {
        self.store
            .segment_transitions(&TransitionFilter { limit: 1000, ..TransitionFilter::default() })
            .expect("history")
    }

    fn members(&self, segment: &str) -> Vec<u64> {
        let id = self.store.segment_by_name(segment).expect("read").expect("segment").id;
        self.store.segment_members(id, None, 1000).expect("members").into_iter().map(|(p, _)| p).collect()
    }
}

const BROWSE: &str =
    r#"event "Product Viewed" where category = "shoes" in last 7d and not event "Order Completed" in last 7d"#;

fn view(user: &str, at: chrono::DateTime<Utc>) -> Value {
    json!({"type": "track", "userId": user, "event": "Product Viewed", "timestamp": at.to_rfc3339(),
           "properties": {"product_id": "p1", "category": "shoes"}})
}

#[test]
fn an_event_enters_time_expires_and_the_history_says_why() {
    let node = Node::start();
    node.save("browse-abandoners", BROWSE);
    let mut feed = node.membership.subscribe();
    let viewed = node.clock.now();
    node.send(view("u1", viewed));
    let u1 = node.profile("u1");
    assert_eq!(node.members("browse-abandoners"), vec![u1]);
    let batch = feed.try_recv().expect("published");
    assert_eq!(batch.len(), 1, "one record from one event: {batch:?}");
    let entered = &batch[0];
    assert!(entered.entered && entered.profile_id == u1 && entered.seq > 0, "{entered:?}");
    assert_eq!(entered.cause, json!({"kind": "events", "names": ["Product Viewed"]}));

    node.clock.advance(Duration::days(7) - Duration::seconds(1));
    node.sync();
    assert_eq!(node.members("browse-abandoners"), vec![u1], "still inside the window");
    node.clock.advance(Duration::seconds(1));
    node.sync();
    assert!(node.members("browse-abandoners").is_empty(), "the view left the 7-day window");
    let history = node.history();
    assert_eq!(history.len(), 2);
    assert!(!history[1].entered);
    assert_eq!(history[1].cause, json!({"kind": "time"}));
    assert_eq!(history[1].at, viewed + Duration::days(7));
}

#[test]
fn late_events_count_when_they_happened_and_a_new_segment_is_built_from_history() {
    let node = Node::start();
    let now = node.clock.now();
    node.send(view("u1", now - Duration::days(8)));
    node.send(view("u2", now - Duration::days(2)));
    node.send(json!({"type": "track", "userId": "u3", "event": "Product Viewed", "timestamp": now.to_rfc3339(),
                     "properties": {"category": "bags"}}));
    // Created after the events: reloads them from the event log and builds over every profile.
    node.save("browse-abandoners", BROWSE);
    let u2 = node.profile("u2");
    assert_eq!(node.members("browse-abandoners"), vec![u2]);
    assert_eq!(node.history()[0].cause, json!({"kind": "definition"}));
    // A late order (yesterday) arriving now takes u2 out.
    node.send(json!({"type": "track", "userId": "u2", "event": "Order Completed",
                     "timestamp": (now - Duration::days(1)).to_rfc3339(), "properties": {"order_id": "o1", "total": 30}}));
    assert!(node.members("browse-abandoners").is_empty());
    let preview = node
        .rt
        .block_on(node.membership.preview(parse(r#"event "Product Viewed" in last 30d"#).expect("definition"), 10))
        .expect("preview");
    assert_eq!(preview.count, 3);
    assert_eq!(preview.profiles, 3);
}

#[test]
fn with_no_segment_nothing_is_kept_and_the_first_one_loads_what_it_reads() {
    let mut node = Node::start();
    node.send(json!({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}));
    node.send(json!({"type": "identify", "userId": "u2"}));
    let stats = |node: &Node| node.rt.block_on(node.membership.stats()).expect("stats");
    assert_eq!(stats(&node).profiles, 0, "no segment: no per-profile state");
    // Reads identifiers only — nothing an empty summary would lack — and is still built from storage.
    node.save("reachable", "has email");
    assert_eq!(node.members("reachable"), vec![node.profile("u1")]);
    assert_eq!(stats(&node).profiles, 2);
    node.send(json!({"type": "identify", "userId": "u2", "traits": {"email": "u2@example.com"}}));
    assert_eq!(node.members("reachable").len(), 2, "kept current once loaded");
    node.rt.block_on(node.membership.delete("reachable")).expect("deleted");
    assert_eq!(stats(&node).profiles, 0, "the last segment deleted: state dropped");
    node.restart();
    assert_eq!(stats(&node).profiles, 0, "a start with no segment loads nothing");
    node.save("reachable", "has email");
    assert_eq!(node.members("reachable").len(), 2);
}

#[test]
fn a_segment_reading_identifiers_after_others_that_do_not_loads_them_then() {
    let node = Node::start();
    // Summaries kept for this one hold no identity flags at all.
    node.save("repeat", r#"count of event "Order Completed" >= 2"#);
    node.send(json!({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}));
    node.send(json!({"type": "identify", "userId": "u2"}));
    node.save("reachable", "has email");
    assert_eq!(node.members("reachable"), vec![node.profile("u1")]);
    node.send(json!({"type": "identify", "userId": "u2", "traits": {"email": "u2@example.com"}}));
    assert_eq!(node.members("reachable").len(), 2, "kept current once loaded");
    assert!(node.members("repeat").is_empty());
}

#[test]
fn merging_two_profiles_in_different_segments_and_erasure() {
    let node = Node::start();
    node.save("repeat", r#"count of event "Order Completed" >= 2"#);
    node.save("has-email", "has email");
    let order = |anonymous: &str, id: &str| {
        json!({"type": "track", "anonymousId": anonymous, "event": "Order Completed",
               "properties": {"order_id": id, "total": 10}})
    };
    node.send(order("device-a", "o1"));
    node.send(json!({"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}}));
    node.send(order("device-b", "o2"));
    assert!(node.members("repeat").is_empty());
    let u1 = node.profile("u1");
    assert_eq!(node.members("has-email"), vec![u1]);
    // device-a and device-b turn out to be u1: three profiles become one with two orders.
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "device-a"}));
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "device-b"}));
    let u1 = node.profile("u1");
    assert_eq!(node.members("repeat"), vec![u1]);
    assert_eq!(node.members("has-email"), vec![u1]);
    let entered = node.history().into_iter().find(|t| t.segment == "repeat").expect("entered repeat");
    assert_eq!(entered.cause["kind"], "merged", "{entered:?}");

    node.rt.block_on(node.pipeline.erase(u1)).expect("erase");
    node.sync();
    assert!(node.members("repeat").is_empty() && node.members("has-email").is_empty());
    assert!(node.history().iter().all(|t| t.profile_id != u1), "erasure removes the membership history");
}

#[test]
fn a_restart_restores_membership_and_catches_up_on_time_that_passed() {
    let mut node = Node::start();
    node.save("browse-abandoners", BROWSE);
    node.send(view("u1", node.clock.now()));
    node.send(view("u2", node.clock.now() - Duration::days(5)));
    let (u1, u2) = (node.profile("u1"), node.profile("u2"));
    assert_eq!(node.members("browse-abandoners"), vec![u1, u2]);
    node.restart();
    node.sync();
    assert_eq!(node.history().len(), 2, "nothing changed: no transitions at start-up");
    assert_eq!(node.members("browse-abandoners"), vec![u1, u2]);
    // Down for three days: u2's view left the window meanwhile.
    node.pipeline.clone().shutdown();
    node.membership.shutdown();
    node.clock.advance(Duration::days(3));
    node.restart();
    node.sync();
    assert_eq!(node.members("browse-abandoners"), vec![u1]);
    let last = node.history().pop().expect("catch-up");
    assert_eq!((last.profile_id, last.entered, last.cause), (u2, false, json!({"kind": "recomputed"})));
    // Still live after the restart.
    node.send(view("u3", node.clock.now()));
    assert_eq!(node.members("browse-abandoners").len(), 2);
    let stats = node.rt.block_on(node.membership.stats()).expect("stats");
    assert_eq!(stats.segments, 1);
}

#[test]
fn definitions_that_do_not_hold_are_refused_without_a_write() {
    let node = Node::start();
    node.save("a", "has email");
    let cycle = node.rt.block_on(node.membership.save("b", "", parse(r#"in segment "c""#).expect("parse")));
    assert!(cycle.is_err(), "unknown segment");
    node.save("b", r#"in segment "a""#);
    let cycle = node.rt.block_on(node.membership.save("a", "", parse(r#"in segment "b""#).expect("parse")));
    let message = cycle.expect_err("cycle").to_string();
    assert!(message.contains("a → b → a") || message.contains("b → a → b"), "{message}");
    assert_eq!(node.store.segment_by_name("a").expect("read").expect("kept").version, 1, "nothing written");
    let in_use = node.rt.block_on(node.membership.delete("a"));
    assert!(in_use.is_err(), "b refers to a");
}

#[test]
fn analytics_scores_are_read_after_a_refresh_and_with_every_change() {
    let node = Node::start();
    node.send(json!({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}));
    node.send(json!({"type": "identify", "userId": "u2", "traits": {"email": "u2@example.com"}}));
    node.save("at-risk", "computed.churn_risk >= 0.7 and has email");
    assert!(node.members("at-risk").is_empty());
    let (u1, u2) = (node.profile("u1"), node.profile("u2"));
    let run = node.store.start_analytics_run("test", node.clock.now()).expect("run");
    node.store
        .save_profile_scores(run, &[(u1, json!({"churn_risk": 0.9})), (u2, json!({"churn_risk": 0.2}))])
        .expect("scores");
    assert!(node.members("at-risk").is_empty(), "scores are read on refresh, not polled");
    node.rt.block_on(node.membership.refresh()).expect("refresh");
    node.sync();
    assert_eq!(node.members("at-risk"), vec![u1]);
    assert_eq!(node.history().last().map(|t| t.cause.clone()), Some(json!({"kind": "recomputed"})));
    // A later change to u2 reads its current scores too.
    node.store.save_profile_scores(run, &[(u2, json!({"churn_risk": 0.8}))]).expect("scores");
    node.send(json!({"type": "identify", "userId": "u2", "traits": {"plan": "gold"}}));
    assert_eq!(node.members("at-risk"), vec![u1, u2]);
}
