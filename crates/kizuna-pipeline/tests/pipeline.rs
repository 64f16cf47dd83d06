//! The write path against the real SQLite store, under a test clock.

use chrono::TimeZone;
use kizuna_identity::{IdKind, Identifier};
use kizuna_ingest::{Event, parse_message};
use kizuna_pipeline::{Committed, FeedSink, Pipeline, PipelineConfig, PipelineError};
use kizuna_profiles::DataKind;
use kizuna_store::{Durability, SqliteStore, Store, StoreError, StoreResult, StoreWriter, Syncer, WriteTx};
use kizuna_types::{Clock, TestClock};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn setup() -> (tempfile::TempDir, Arc<dyn Store>, TestClock) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), Durability::Process).expect("store"));
    let clock = TestClock::at(chrono::Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).single().expect("time"));
    (dir, store, clock)
}

fn event(value: serde_json::Value) -> Event {
    parse_message(value, chrono::Utc::now()).expect("valid message")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn shutdown_finishes_even_while_other_handles_are_alive() {
    let (_dir, store, clock) = setup();
    let pipeline = Pipeline::start(store.clone(), PipelineConfig::default(), Arc::new(clock)).expect("start");
    let still_held = pipeline.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pipeline.shutdown();
        let _ = done_tx.send(());
    });
    assert!(done_rx.recv_timeout(Duration::from_secs(10)).is_ok(), "shutdown returned");
    let source = store.create_source("s", true, DataKind::FirstParty, chrono::Utc::now()).expect("source");
    let refused = runtime()
        .block_on(still_held.ingest(&source, vec![event(json!({"type": "track", "userId": "u", "event": "E"}))]));
    assert!(refused.is_err(), "a stopped pipeline refuses work instead of losing it silently");
}

#[test]
fn late_events_and_merges_refold_the_profile_from_its_history() {
    let (_dir, store, clock) = setup();
    let pipeline = Pipeline::start(store.clone(), PipelineConfig::default(), Arc::new(clock.clone())).expect("start");
    let source = store.create_source("s", true, DataKind::FirstParty, clock.now()).expect("source");
    let rt = runtime();
    let send = |value: serde_json::Value| rt.block_on(pipeline.ingest(&source, vec![event(value)])).expect("ingest");
    // Arrival order differs from event order: u2's link to the device arrives before u1's earlier one.
    send(json!({"type": "track", "anonymousId": "dev", "userId": "u2", "event": "Order Completed",
        "timestamp": "2026-04-02T00:00:00Z", "properties": {"order_id": "o2", "total": 20}}));
    send(json!({"type": "track", "anonymousId": "dev", "event": "Product Viewed",
        "timestamp": "2026-04-03T00:00:00Z", "properties": {"product_id": "p9"}}));
    send(json!({"type": "track", "anonymousId": "dev", "userId": "u1", "event": "Order Completed",
        "timestamp": "2026-04-01T00:00:00Z", "properties": {"order_id": "o1", "total": 10}}));
    let profile_of = |user: &str| {
        let id = store.profile_by_identifier(&Identifier::new(IdKind::UserId, user)).expect("lookup").expect("exists");
        store.profile(id).expect("read").expect("profile")
    };
    let (u1, u2) = (profile_of("u1"), profile_of("u2"));
    assert_ne!(u1.id, u2.id);
    assert_eq!(
        store.profile_by_identifier(&Identifier::new(IdKind::AnonymousId, "dev")).expect("lookup"),
        Some(u1.id),
        "the device belongs to its earliest link"
    );
    // Each profile's state matches its events after the replay moved them.
    assert_eq!(u1.state.computed.summary()["orders_count"], 1);
    assert_eq!(u1.state.computed.summary()["revenue"], 10.0);
    assert_eq!(
        u1.state.computed.summary()["last_viewed_products"][0]["product_id"],
        "p9",
        "the device's anonymous view moved with it"
    );
    assert_eq!(u2.state.computed.summary()["revenue"], 20.0);
    assert_eq!(u2.state.computed.summary()["event_count"], 1);
    pipeline.shutdown();
}

#[test]
fn dedup_window_expires_under_the_clock() {
    let (_dir, store, clock) = setup();
    let config = PipelineConfig { dedup_window: chrono::Duration::days(7), ..PipelineConfig::default() };
    let pipeline = Pipeline::start(store.clone(), config, Arc::new(clock.clone())).expect("start");
    let source = store.create_source("s", false, DataKind::FirstParty, clock.now()).expect("source");
    let rt = runtime();
    let message = json!({"type": "track", "userId": "u", "event": "E", "messageId": "same"});
    let first = rt.block_on(pipeline.ingest(&source, vec![event(message.clone())])).expect("ingest");
    clock.advance(chrono::Duration::days(6));
    let within = rt.block_on(pipeline.ingest(&source, vec![event(message.clone())])).expect("ingest");
    clock.advance(chrono::Duration::days(2));
    let after = rt.block_on(pipeline.ingest(&source, vec![event(message)])).expect("ingest");
    assert_eq!((first.accepted, within.duplicates, after.accepted), (1, 1, 1));
    pipeline.shutdown();
}

/// A device's profile and a user's, then an event carrying both ids that merges them: (device, user, survivor).
fn merge_a_device_into_a_user(
    pipeline: &Pipeline,
    store: &Arc<dyn Store>,
    source: &kizuna_store::Source,
    rt: &tokio::runtime::Runtime,
) -> (u64, u64, u64) {
    let send = |value: serde_json::Value| rt.block_on(pipeline.ingest(source, vec![event(value)])).expect("ingest");
    let id_of = |identifier: Identifier| store.profile_by_identifier(&identifier).expect("lookup").expect("exists");
    send(json!({"type": "track", "anonymousId": "device", "event": "Product Viewed"}));
    send(json!({"type": "identify", "userId": "u", "traits": {"email": "u@example.com"}}));
    let (device, user) =
        (id_of(Identifier::new(IdKind::AnonymousId, "device")), id_of(Identifier::new(IdKind::UserId, "u")));
    assert_ne!(device, user);
    send(json!({"type": "track", "anonymousId": "device", "userId": "u", "event": "Signed In"}));
    let survivor = id_of(Identifier::new(IdKind::UserId, "u"));
    assert_eq!(id_of(Identifier::new(IdKind::AnonymousId, "device")), survivor, "the event merged the two");
    (device, user, survivor)
}

#[test]
fn merged_away_ids_resolve_to_the_survivor_in_one_batch_read() {
    let (_dir, store, clock) = setup();
    let pipeline = Pipeline::start(store.clone(), PipelineConfig::default(), Arc::new(clock.clone())).expect("start");
    let source = store.create_source("s", true, DataKind::FirstParty, clock.now()).expect("source");
    let rt = runtime();
    let (device, user, survivor) = merge_a_device_into_a_user(&pipeline, &store, &source, &rt);
    let unknown = 987_654_321;
    let live = store.live_profile_ids(&[device, user, unknown, device]).expect("batch read");
    assert_eq!(live.len(), 3, "one answer per distinct id");
    assert_eq!(live[&device], Some(survivor));
    assert_eq!(live[&user], Some(survivor));
    assert_eq!(live[&unknown], None, "an id that never existed has no live profile");
    for id in [device, user, unknown] {
        assert_eq!(store.live_profile_id(id).expect("single read"), live[&id], "batch and single reads agree");
    }
    let kinds: Vec<IdKind> =
        store.profile(survivor).expect("read").expect("profile").identities.iter().map(|i| i.kind.clone()).collect();
    for kind in [IdKind::AnonymousId, IdKind::UserId, IdKind::Email] {
        assert!(kinds.contains(&kind), "the survivor lists its {kind:?} (read through the covering index)");
    }
    pipeline.shutdown();
}

#[test]
fn an_append_follows_a_merge_made_since_the_caller_found_the_profile() {
    let (_dir, store, clock) = setup();
    let pipeline = Pipeline::start(store.clone(), PipelineConfig::default(), Arc::new(clock.clone())).expect("start");
    let source = store.create_source("s", true, DataKind::FirstParty, clock.now()).expect("source");
    let rt = runtime();
    let (device, user, survivor) = merge_a_device_into_a_user(&pipeline, &store, &source, &rt);
    let merged_away = if survivor == device { user } else { device };
    assert_ne!(merged_away, survivor);
    let internal = |name: &str| {
        let mut body = serde_json::Map::new();
        body.insert("event".into(), json!(name));
        Event::internal(kizuna_ingest::MessageType::Track, body, clock.now())
    };
    let plain = rt.block_on(pipeline.append(merged_away, &source, internal("Loyalty Points Awarded")));
    assert!(matches!(plain, Err(PipelineError::UnknownProfile(id)) if id == merged_away), "{plain:?}");
    let followed = rt.block_on(pipeline.append_to_live(merged_away, &source, internal("Loyalty Points Awarded")));
    assert_eq!(followed.expect("appended"), Some(survivor));
    let names = |profile| -> Vec<String> {
        let filter = kizuna_store::EventFilter { limit: 1000, ..Default::default() };
        let events = store.events(profile, &filter).expect("events");
        events.iter().filter_map(|e| e.body.get("event").and_then(|v| v.as_str()).map(str::to_owned)).collect()
    };
    assert_eq!(names(survivor).iter().filter(|n| *n == "Loyalty Points Awarded").count(), 1);
    let erased = rt.block_on(pipeline.erase(survivor)).expect("erase");
    assert_eq!(erased.profile, survivor);
    let after_erasure = rt.block_on(pipeline.append_to_live(merged_away, &source, internal("Loyalty Points Awarded")));
    assert_eq!(after_erasure.expect("nothing to record, no error"), None);
    pipeline.shutdown();
}

/// The store's writer with its syncs held back: each sync waits for a permit, which says whether it succeeds.
struct HeldSyncs {
    inner: Box<dyn StoreWriter>,
    permits: Option<std::sync::mpsc::Receiver<bool>>,
}

struct HeldSyncer(std::sync::mpsc::Receiver<bool>);

impl StoreWriter for HeldSyncs {
    fn begin(&mut self) -> StoreResult<Box<dyn WriteTx + '_>> {
        self.inner.begin()
    }
    fn syncer(&mut self) -> StoreResult<Option<Box<dyn Syncer>>> {
        Ok(self.permits.take().map(|permits| Box::new(HeldSyncer(permits)) as Box<dyn Syncer>))
    }
}

impl Syncer for HeldSyncer {
    fn sync(&mut self) -> StoreResult<()> {
        match self.0.recv() {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Io(std::io::Error::other("the disk refused the fsync"))),
        }
    }
}

/// A writer whose transactions each wait for a permit to begin, so a test can queue commands into one group.
struct HeldBegins {
    inner: Box<dyn StoreWriter>,
    permits: std::sync::mpsc::Receiver<()>,
    begun: Arc<std::sync::atomic::AtomicUsize>,
}

impl StoreWriter for HeldBegins {
    fn begin(&mut self) -> StoreResult<Box<dyn WriteTx + '_>> {
        self.permits.recv().map_err(|_| StoreError::Invalid("no more permits".into()))?;
        self.begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.begin()
    }
    fn syncer(&mut self) -> StoreResult<Option<Box<dyn Syncer>>> {
        self.inner.syncer()
    }
}

#[test]
fn an_event_for_a_profile_that_is_gone_is_refused_alone_not_with_its_group() {
    let (_dir, store, clock) = setup();
    let (permit, permits) = std::sync::mpsc::channel();
    let begun = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = Box::new(HeldBegins { inner: store.writer().expect("writer"), permits, begun: begun.clone() });
    let pipeline = Pipeline::start_with_writer(store.clone(), writer, PipelineConfig::default(), Arc::new(clock), None)
        .expect("start");
    let source = store.create_source("s", true, DataKind::FirstParty, chrono::Utc::now()).expect("source");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let track = |user: &str| event(json!({"type": "track", "userId": user, "event": "E"}));
    permit.send(()).expect("permit");
    rt.block_on(pipeline.ingest(&source, vec![track("gone")])).expect("ingest");
    let gone = store.profile_by_identifier(&Identifier::new(IdKind::UserId, "gone")).expect("lookup").expect("exists");
    permit.send(()).expect("permit");
    rt.block_on(pipeline.erase(gone)).expect("erase");

    // The writer holds the next transaction until both commands below are queued: they make one group.
    let first = {
        let (pipeline, source) = (pipeline.clone(), source.clone());
        rt.spawn(async move { pipeline.ingest(&source, vec![track("first")]).await })
    };
    std::thread::sleep(Duration::from_millis(100));
    let (appended, ingested) = {
        let (p1, p2, s1, s2) = (pipeline.clone(), pipeline.clone(), source.clone(), source.clone());
        let note = event(json!({"type": "track", "userId": "gone", "event": "Flow Step"}));
        let appended = rt.spawn(async move { p1.append(gone, &s1, note).await });
        let ingested = rt.spawn(async move { p2.ingest(&s2, vec![track("second")]).await });
        (appended, ingested)
    };
    std::thread::sleep(Duration::from_millis(100));
    permit.send(()).expect("permit");
    permit.send(()).expect("permit");
    assert_eq!(rt.block_on(first).expect("task").expect("first").accepted, 1);
    let appended = rt.block_on(appended).expect("task");
    assert!(matches!(appended, Err(PipelineError::UnknownProfile(p)) if p == gone), "{appended:?}");
    assert_eq!(rt.block_on(ingested).expect("task").expect("grouped with the refused append").accepted, 1);
    let stored = |user: &str| store.profile_by_identifier(&Identifier::new(IdKind::UserId, user)).expect("lookup");
    assert!(stored("second").is_some() && stored("gone").is_none());
    // One transaction each for the first ingest, the erase and `first`; one for the two grouped commands.
    assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 4, "the append and `second` shared a group");
    drop(permit);
    pipeline.shutdown();
}

#[test]
fn a_commit_is_answered_and_published_only_after_a_sync_that_follows_it() {
    let (_dir, store, clock) = setup();
    let (permit, permits) = std::sync::mpsc::channel();
    let writer = Box::new(HeldSyncs { inner: store.writer().expect("writer"), permits: Some(permits) });
    let (published_tx, published) = std::sync::mpsc::channel();
    let feed: FeedSink = Box::new(move |committed: Committed| {
        let _ = published_tx.send(committed.changes.len());
    });
    let config = PipelineConfig::default();
    let pipeline =
        Pipeline::start_with_writer(store.clone(), writer, config, Arc::new(clock.clone()), Some(feed)).expect("start");
    let source = store.create_source("s", true, DataKind::FirstParty, clock.now()).expect("source");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let order = || event(json!({"type": "track", "userId": "u", "event": "Order Completed", "messageId": "m1"}));
    let sent = {
        let (pipeline, source) = (pipeline.clone(), source.clone());
        rt.spawn(async move { pipeline.ingest(&source, vec![order()]).await })
    };
    // Committed (readers see it) but neither answered nor published while its sync is held.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.counts().expect("counts").events == 0 {
        assert!(std::time::Instant::now() < deadline, "the event was committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!sent.is_finished(), "no answer before the sync");
    assert!(published.try_recv().is_err(), "nothing published before the sync");

    // A good sync answers and publishes it.
    permit.send(true).expect("permit");
    let receipt = rt.block_on(sent).expect("task").expect("acknowledged");
    assert_eq!((receipt.accepted, receipt.duplicates), (1, 0));
    assert!(published.recv_timeout(Duration::from_secs(10)).is_ok());

    // A failed fsync acknowledges nothing, and nothing after it either (the OS reports a failed writeback once):
    // not the request whose sync failed, not a retry of it, not new work — until a restart.
    let second = || event(json!({"type": "track", "userId": "u", "event": "Order Completed", "messageId": "m2"}));
    let sent = {
        let (pipeline, source) = (pipeline.clone(), source.clone());
        rt.spawn(async move { pipeline.ingest(&source, vec![second()]).await })
    };
    permit.send(false).expect("permit");
    let failed = rt.block_on(sent).expect("task");
    assert!(matches!(failed, Err(PipelineError::NotDurable)), "{failed:?}");
    let retried = rt.block_on(pipeline.ingest(&source, vec![second()]));
    assert!(matches!(retried, Err(PipelineError::NotDurable)), "{retried:?}");
    assert!(published.try_recv().is_err(), "nothing published after the failure");
    assert_eq!(store.counts().expect("counts").events, 2, "the retry was not written");
    drop(permit);
    pipeline.shutdown();
}

/// Sends the same requests, one commit each, through a pipeline that keeps committed states and one that reads
/// every state back from the store; returns every profile as stored afterwards.
fn profiles_after(requests: &[Vec<serde_json::Value>], erase_user: &str, state_cache: usize) -> Vec<String> {
    let (_dir, store, clock) = setup();
    let config = PipelineConfig { state_cache, ..PipelineConfig::default() };
    let pipeline = Pipeline::start(store.clone(), config, Arc::new(clock.clone())).expect("start");
    let source = store.create_source("s", true, DataKind::FirstParty, clock.now()).expect("source");
    let rt = runtime();
    let user = Identifier::new(IdKind::UserId, erase_user);
    for (i, request) in requests.iter().enumerate() {
        if i == requests.len() / 2 {
            let profile = store.profile_by_identifier(&user).expect("read").expect("the user has a profile");
            rt.block_on(pipeline.erase(profile)).expect("erase");
        }
        let events = request.iter().cloned().map(event).collect();
        rt.block_on(pipeline.ingest(&source, events)).expect("ingest");
        clock.advance(chrono::Duration::seconds(1));
    }
    pipeline.shutdown();
    let mut profiles = Vec::new();
    for id in 1..=200 {
        if let Some(profile) = store.profile(id).expect("read") {
            profiles.push(format!("{profile:?}"));
        }
    }
    profiles
}

#[test]
fn states_kept_between_commits_give_the_same_profiles_as_states_read_back() {
    // Five people on two devices each, buying, browsing, identifying (merges), one erased half way and coming
    // back: every request is its own commit, so most touch a state the previous commits kept.
    let mut requests = Vec::new();
    for round in 0..12 {
        let mut request = Vec::new();
        for person in 0..5 {
            let device = format!("d{person}-{}", round % 2);
            let at = format!("2026-04-{:02}T{:02}:00:00Z", 1 + round, 8 + person);
            request.push(match (round + person) % 4 {
                0 => json!({"type": "track", "anonymousId": device, "event": "Product Viewed", "timestamp": at,
                    "properties": {"product_id": format!("p{round}"), "category": "shoes", "price": 10 + round}}),
                1 => json!({"type": "identify", "anonymousId": device, "userId": format!("u{person}"),
                    "timestamp": at, "traits": {"email": format!("u{person}@example.com"), "round": round}}),
                2 => json!({"type": "track", "userId": format!("u{person}"), "event": "Order Completed",
                    "timestamp": at, "properties": {"order_id": format!("o{person}-{round}"), "total": 5 * round}}),
                _ => json!({"type": "track", "anonymousId": device, "event": "Product Added", "timestamp": at,
                    "properties": {"product_id": format!("p{person}"), "brand": "acme", "price": 7}}),
            });
        }
        requests.push(request);
    }
    let kept = profiles_after(&requests, "u2", 4096);
    let read_back = profiles_after(&requests, "u2", 0);
    assert!(kept.len() >= 5, "{} profiles", kept.len());
    assert_eq!(kept, read_back);
}

/// A storefront's message, different in its ids, times and product for each `i`.
fn storefront_event(i: usize) -> Event {
    let product = i * 7919 % 503;
    let name = ["Product Viewed", "Product Added", "Checkout Started"][i % 3];
    event(json!({
        "type": "track",
        "anonymousId": format!("dev-{}", i % 40),
        "event": name,
        "messageId": format!("m-{i}"),
        "timestamp": format!("2026-04-{:02}T01:{:02}:43.194Z", 1 + i % 28, i % 60),
        "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"}, "locale": "ja-JP",
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"},
        "properties": {"product_id": format!("prod_{product:05}"), "price": 10 + product % 90, "currency": "USD"},
    }))
}

/// Every stored body by seq: its format tag and its JSON.
fn stored_bodies(dir: &std::path::Path) -> Vec<(u8, serde_json::Value)> {
    let conn = rusqlite::Connection::open(dir.join(SqliteStore::FILE_NAME)).expect("open");
    let mut stmt = conn.prepare("SELECT body FROM events ORDER BY seq").expect("prepare");
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).expect("query");
    rows.map(|body| {
        let body = body.expect("row");
        let json = kizuna_store::codec::decode_event_body(&body).expect("decode");
        (body[0], serde_json::from_slice(&json).expect("json"))
    })
    .collect()
}

#[test]
fn bodies_are_compressed_against_a_dictionary_trained_on_the_first_events_from_then_on() {
    let (dir, store, clock) = setup();
    let config = PipelineConfig { body_dictionary_samples: 300, ..PipelineConfig::default() };
    let pipeline = Pipeline::start(store.clone(), config.clone(), Arc::new(clock.clone())).expect("start");
    let source = store.create_source("s", true, DataKind::FirstParty, clock.now()).expect("source");
    let rt = runtime();
    assert_eq!(pipeline.body_dictionary(), None);
    let first: Vec<Event> = (0..300).map(storefront_event).collect();
    rt.block_on(pipeline.ingest(&source, first)).expect("ingest");
    pipeline.finish_body_dictionary();
    let dictionary = pipeline.body_dictionary().expect("trained on the first 300 bodies");
    assert_eq!(store.body_dictionary().expect("read"), Some(dictionary), "stored before it is used");
    let later: Vec<Event> = (300..400).map(storefront_event).collect();
    rt.block_on(pipeline.ingest(&source, later)).expect("ingest");
    pipeline.shutdown();

    let bodies = stored_bodies(dir.path());
    assert_eq!(bodies.len(), 400);
    assert!(bodies[..300].iter().all(|(tag, _)| *tag == 1), "the samples themselves went out as LZ4");
    assert!(bodies[300..].iter().all(|(tag, _)| *tag == 2), "later bodies name the dictionary");
    for (i, (_, body)) in bodies.iter().enumerate() {
        assert_eq!(body["messageId"], format!("m-{i}"));
        assert_eq!(body["properties"]["product_id"], format!("prod_{:05}", i * 7919 % 503));
    }
    // Read back through the store's API too, newest first.
    let profile =
        store.profile_by_identifier(&Identifier::new(IdKind::AnonymousId, "dev-7")).expect("lookup").expect("exists");
    let filter = kizuna_store::EventFilter { limit: 100, ..Default::default() };
    let events = store.events(profile, &filter).expect("events");
    assert_eq!(events.len(), 10);
    assert!(events.iter().all(|e| e.body["anonymousId"] == "dev-7"));

    // A pipeline started again on the store compresses against the stored dictionary from its first event.
    let again = Pipeline::start(store.clone(), config, Arc::new(clock)).expect("restart");
    assert_eq!(again.body_dictionary(), Some(dictionary));
    rt.block_on(again.ingest(&source, vec![storefront_event(400)])).expect("ingest");
    again.shutdown();
    assert_eq!(stored_bodies(dir.path()).last().map(|(tag, _)| *tag), Some(2));
}
