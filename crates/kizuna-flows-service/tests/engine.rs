//! The flow engine below HTTP: the real store, ingest pipeline and messaging pipeline under a test clock, with
//! messaging's channel replaced by an in-process recorder (the "test channel"). Rounds are driven by hand so
//! every timer fires exactly when the clock says.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use kizuna_channels::{Channel, Outgoing, Receipt, SendFuture};
use kizuna_flows::RunStatus;
use kizuna_flows_service::{FlowEngine, FlowSettings, SimRequest};
use kizuna_identity::{IdKind, Identifier};
use kizuna_ingest::parse_message;
use kizuna_messaging::{PickRequest, ProductPicker, Rendered, TemplateDefinition};
use kizuna_messaging_service::{MessagingSettings, Messenger};
use kizuna_pipeline::{Pipeline, PipelineConfig};
use kizuna_profiles::DataKind;
use kizuna_store::{Durability, Source, SqliteStore, Store};
use kizuna_types::{Clock, TestClock};
use serde_json::{Value, json};

struct NoProducts;

impl ProductPicker for NoProducts {
    fn pick(&self, _placement: &str, _request: &PickRequest) -> Result<Vec<Value>, String> {
        Ok(Vec::new())
    }
}

/// Messaging's test channel: keeps (address, subject) of every email handed to it.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, String)>>,
}

impl Channel for Recorder {
    fn kind(&self) -> kizuna_messaging::Channel {
        kizuna_messaging::Channel::Email
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            let subject = match &message.rendered {
                Rendered::Email { subject, .. } => subject.clone(),
                _ => String::new(),
            };
            self.sent
                .lock()
                .map_err(|_| kizuna_channels::SendError::Permanent("poisoned".into()))?
                .push((message.to.clone(), subject));
            Ok(Receipt { provider_id: None })
        })
    }
}

impl Recorder {
    fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

struct Node {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: TestClock,
    pipeline: Pipeline,
    source: Source,
    messenger: Messenger,
    recorder: Arc<Recorder>,
    engine: FlowEngine,
    membership: kizuna_membership::Membership,
}

/// 2026-12-01 03:00 UTC: noon in Tokyo, outside quiet hours.
fn noon_tokyo() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).single().expect("time")
}

fn no_caps() -> MessagingSettings {
    let mut settings = MessagingSettings::default();
    settings.policy.caps.clear();
    settings
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = TestClock::at(noon_tokyo());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), Durability::Process).expect("store"));
        let source = store.create_source("web", true, DataKind::FirstParty, clock.now()).expect("source");
        Self::open(dir, store, clock, source)
    }

    fn open(dir: tempfile::TempDir, store: Arc<dyn Store>, clock: TestClock, source: Source) -> Node {
        let messenger =
            Messenger::new(store.clone(), Arc::new(clock.clone()), no_caps(), Arc::new(NoProducts)).expect("messenger");
        let recorder = Arc::new(Recorder::default());
        messenger.set_channel(recorder.clone());
        let engine = FlowEngine::new(
            store.clone(),
            Arc::new(clock.clone()),
            Arc::new(messenger.clone()),
            FlowSettings::default(),
        )
        .expect("engine");
        let membership = kizuna_membership::Membership::start(
            store.clone(),
            Arc::new(clock.clone()),
            kizuna_membership::MembershipSettings::default(),
        )
        .expect("segments");
        let pipeline = Pipeline::start_with_feed(
            store.clone(),
            PipelineConfig::default(),
            Arc::new(clock.clone()),
            Some(engine.feed_sink_then(membership.feed_sink())),
        )
        .expect("pipeline");
        engine.set_effects(pipeline.clone(), source.clone());
        Node { dir, store, clock, pipeline, source, messenger, recorder, engine, membership }
    }

    /// Stops everything and starts again on the same data directory: what a restart after a crash sees.
    fn restart(self) -> Node {
        let Node { dir, pipeline, clock, source, membership, .. } = self;
        tokio::task::block_in_place(|| {
            pipeline.shutdown();
            membership.shutdown();
        });
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), Durability::Process).expect("store"));
        Self::open(dir, store, clock, source)
    }

    async fn send(&self, message: Value) {
        let event = parse_message(message, self.clock.now()).expect("valid message");
        self.pipeline.ingest(&self.source, vec![event]).await.expect("ingest");
    }

    async fn customer(&self, user: &str) -> u64 {
        self.send(json!({"type": "identify", "userId": user, "traits": {
            "email": format!("{user}@example.com"), "first_name": user, "timezone": "Asia/Tokyo",
            "consent": {"email": {"marketing": "granted"}}}}))
            .await;
        self.store.profile_by_identifier(&Identifier::new(IdKind::UserId, user)).expect("lookup").expect("profile")
    }

    async fn track(&self, user: &str, event: &str, properties: Value) {
        self.send(json!({"type": "track", "userId": user, "event": event, "properties": properties})).await;
    }

    fn template(&self, name: &str, subject: &str) {
        let definition: TemplateDefinition = serde_json::from_value(json!({
            "channel": "email", "purpose": "marketing", "subject": subject,
            "html": "<p>{{ event.properties.cart_id }}</p>"}))
        .expect("definition");
        self.messenger.save_template(name, &definition).expect("saved");
    }

    /// Rounds until the engine has nothing left to do now, then lets messaging hand out what was queued.
    async fn settle(&self) {
        self.membership.sync().await.expect("segments");
        while self.engine.round().await.expect("round") {}
        while self.messenger.process_due().await.expect("messaging") > 0 {}
    }

    async fn at(&self, t: DateTime<Utc>) {
        self.clock.set(t);
        self.settle().await;
    }
}

fn cart_flow() -> Value {
    json!({
        "trigger": {"event": {"name": "Checkout Started", "where": [{"path": "value", "op": "gt", "value": 50}]}},
        "goal": {"event": {"name": "Order Completed"}, "within": "5d"},
        "steps": [
            {"id": "wait", "type": "wait_for_event", "event": {"name": "Order Completed"},
             "same_as_trigger": ["cart_id"], "timeout": "1h", "on_event": null, "on_timeout": "remind"},
            {"id": "remind", "type": "send", "template": "cart_1"}
        ]
    })
}

/// A node with the cart-abandonment flow active.
async fn cart_node() -> Node {
    let node = Node::start();
    node.template("cart_1", "{{ profile.first_name }}, your cart is waiting");
    node.engine.save("cart", &cart_flow()).expect("saved");
    node.engine.activate("cart").expect("active");
    node.settle().await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_abandonment_end_to_end() {
    let node = cart_node().await;
    node.customer("aiko").await;
    node.customer("ben").await;
    node.customer("chie").await;
    let t0 = node.clock.now();
    node.track("aiko", "Checkout Started", json!({"value": 80, "cart_id": "a1"})).await;
    node.track("ben", "Checkout Started", json!({"value": 90, "cart_id": "b1"})).await;
    // Below the trigger's filter: never enters.
    node.track("chie", "Checkout Started", json!({"value": 20, "cart_id": "c1"})).await;
    node.settle().await;
    node.clock.set(t0 + Duration::minutes(20));
    node.track("ben", "Order Completed", json!({"cart_id": "b1", "revenue": 90})).await;
    node.settle().await;
    assert!(node.recorder.sent().is_empty(), "nothing before the hour is up");
    node.at(t0 + Duration::minutes(59)).await;
    assert!(node.recorder.sent().is_empty());
    node.at(t0 + Duration::hours(1)).await;
    assert_eq!(node.recorder.sent(), vec![("aiko@example.com".to_string(), "aiko, your cart is waiting".to_string())]);
    // Nothing more, however long we wait.
    node.at(t0 + Duration::days(3)).await;
    assert_eq!(node.recorder.sent().len(), 1);

    let report = node.engine.report("cart").expect("report");
    assert_eq!((report.entered, report.in_progress, report.messages_queued), (2, 0, 1));
    assert_eq!(report.exited_by_reason.get("goal"), Some(&1));
    assert_eq!((report.conversions, report.revenue), (1, 90.0));
    let runs = node.engine.runs(Some("cart"), None, None, None, 10).expect("runs");
    let (aiko, _) = runs.iter().find(|(r, _)| r.trigger.properties["cart_id"] == "a1").expect("aiko's run");
    let (_, _, steps) = node.engine.run(aiko.id).expect("run");
    let path: Vec<(&str, &str)> = steps.iter().map(|s| (s.step.as_str(), s.outcome.as_str())).collect();
    assert_eq!(path, vec![("wait", "waiting"), ("wait", "timeout"), ("remind", "sent")]);
    // The message carries the flow's name for messaging's report and attribution.
    let messages = node
        .store
        .messages()
        .messages(&kizuna_store::messages::MessageFilter { flow: Some("cart".into()), limit: 10, ..Default::default() })
        .expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].state, "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_held_by_quiet_hours_does_not_go_once_the_person_has_bought() {
    let node = cart_node().await;
    let aiko = node.customer("aiko").await;
    let ben = node.customer("ben").await;
    // 20:30 in Tokyo: the reminders fall due at 21:30, in quiet hours, and wait for the morning.
    let t0 = noon_tokyo() + Duration::hours(8) + Duration::minutes(30);
    node.at(t0).await;
    node.track("aiko", "Checkout Started", json!({"value": 80, "cart_id": "a1"})).await;
    node.track("ben", "Checkout Started", json!({"value": 90, "cart_id": "b1"})).await;
    node.settle().await;
    node.at(t0 + Duration::hours(1)).await;
    let reminder = |profile: u64| {
        node.store
            .messages()
            .messages(&kizuna_store::messages::MessageFilter {
                profile_id: Some(profile),
                flow: Some("cart".into()),
                limit: 10,
                ..Default::default()
            })
            .expect("messages")
            .into_iter()
            .next()
            .expect("a reminder")
    };
    assert_eq!((reminder(aiko).state.as_str(), reminder(ben).state.as_str()), ("deferred", "deferred"));
    // Aiko buys that night, after her run's last step: the goal still counts, and ends what it queued.
    node.clock.set(t0 + Duration::hours(2));
    node.track("aiko", "Order Completed", json!({"cart_id": "a1", "revenue": 80})).await;
    node.settle().await;
    node.at(t0 + Duration::hours(12)).await;
    assert_eq!(node.recorder.sent(), vec![("ben@example.com".to_string(), "ben, your cart is waiting".to_string())]);
    let withdrawn = reminder(aiko);
    assert_eq!((withdrawn.state.as_str(), withdrawn.reason.as_deref()), ("dropped", Some("flow_run_ended: goal")));
    let report = node.engine.report("cart").expect("report");
    assert_eq!((report.conversions, report.revenue), (1, 80.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_or_deleting_a_flow_withdraws_its_sends_still_waiting() {
    let node = cart_node().await;
    for (flow, template) in [("cart_deleted", "cart_2"), ("cart_kept", "cart_3")] {
        node.template(template, &format!("{{{{ profile.first_name }}}}, {flow}"));
        let mut definition = cart_flow();
        definition["steps"][1]["template"] = json!(template);
        node.engine.save(flow, &definition).expect("saved");
        node.engine.activate(flow).expect("active");
    }
    let aiko = node.customer("aiko").await;
    // 20:30 in Tokyo: the three reminders fall due at 21:30, in quiet hours, and wait for the morning.
    let t0 = noon_tokyo() + Duration::hours(8) + Duration::minutes(30);
    node.at(t0).await;
    node.track("aiko", "Checkout Started", json!({"value": 80, "cart_id": "a1"})).await;
    node.settle().await;
    node.at(t0 + Duration::hours(1)).await;
    let reminder = |flow: &str| {
        node.store
            .messages()
            .messages(&kizuna_store::messages::MessageFilter {
                profile_id: Some(aiko),
                flow: Some(flow.into()),
                limit: 10,
                ..Default::default()
            })
            .expect("messages")
    };
    for flow in ["cart", "cart_deleted", "cart_kept"] {
        let states: Vec<String> = reminder(flow).into_iter().map(|m| m.state).collect();
        assert_eq!(states, vec!["deferred"], "{flow}");
    }
    node.engine.pause("cart").await.expect("paused");
    node.engine.delete("cart_deleted").await.expect("deleted");
    node.at(t0 + Duration::hours(12)).await;
    assert_eq!(node.recorder.sent(), vec![("aiko@example.com".to_string(), "aiko, cart_kept".to_string())]);
    for (flow, reason) in [("cart", "flow_paused"), ("cart_deleted", "flow_deleted")] {
        let messages = reminder(flow);
        let outcome: Vec<(&str, Option<&str>)> =
            messages.iter().map(|m| (m.state.as_str(), m.reason.as_deref())).collect();
        assert_eq!(outcome, vec![("dropped", Some(reason))], "{flow}");
    }
    // Activated again, the paused flow goes on from after its send: the withdrawn reminder is not queued again.
    node.engine.activate("cart").expect("active");
    node.at(t0 + Duration::days(1)).await;
    assert_eq!(node.recorder.sent().len(), 1);
    assert!(node.engine.report("cart_deleted").is_err(), "the deleted flow is gone");
}

fn series() -> Value {
    json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [
            {"id": "one", "type": "send", "template": "w1", "next": "d1"},
            {"id": "d1", "type": "delay", "for": "1d", "next": "two"},
            {"id": "two", "type": "send", "template": "w2", "next": "d2"},
            {"id": "d2", "type": "delay", "for": "1d", "next": "three"},
            {"id": "three", "type": "send", "template": "w3"}
        ]
    })
}

/// A node with the welcome series active.
async fn series_node() -> Node {
    let node = Node::start();
    for (name, subject) in [("w1", "one"), ("w2", "two"), ("w3", "three")] {
        node.template(name, subject);
    }
    node.engine.save("welcome", &series()).expect("saved");
    node.engine.activate("welcome").expect("active");
    node.settle().await;
    node
}

async fn welcome_node() -> (Node, Vec<String>) {
    let node = series_node().await;
    let mut users = Vec::new();
    for i in 0..20 {
        let user = format!("u{i}");
        node.customer(&user).await;
        node.track(&user, "Signed Up", json!({})).await;
        users.push(user);
    }
    (node, users)
}

fn by_person(sent: &[(String, String)]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (to, subject) in sent {
        out.entry(to.clone()).or_default().push(subject.clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_actions_and_write_neither_loses_nor_repeats_a_step() {
    // Reference: no crash.
    let (reference, users) = welcome_node().await;
    let t0 = reference.clock.now();
    for day in 0..3 {
        reference.at(t0 + Duration::days(day)).await;
    }
    let expected = by_person(&reference.recorder.sent());
    assert_eq!(expected.len(), users.len());
    assert!(expected.values().all(|s| s == &["one", "two", "three"]), "{expected:?}");

    // The same, with a crash in the middle of each day's round: actions done, write lost.
    let (mut node, _) = welcome_node().await;
    let mut delivered = Vec::new();
    for day in 0..3 {
        node.clock.set(t0 + Duration::days(day));
        node.engine.crash_before_next_write();
        let crashed = loop {
            match node.engine.round().await {
                Ok(true) => continue,
                Ok(false) => break false,
                Err(_) => break true,
            }
        };
        assert!(crashed, "day {day}: the round crashed");
        // Messaging keeps what was queued before the crash; the restarted engine repeats the steps.
        while node.messenger.process_due().await.expect("messaging") > 0 {}
        delivered.extend(node.recorder.sent());
        node = node.restart();
        node.settle().await;
        delivered.extend(node.recorder.sent());
    }
    let got = by_person(&delivered);
    assert_eq!(got, expected);
    let report = node.engine.report("welcome").expect("report");
    assert_eq!(report.by_status.get("completed"), Some(&20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_follow_merges_and_erasures_even_across_a_restart() {
    let (node, _) = welcome_node().await;
    let t0 = node.clock.now();
    node.settle().await;
    // A visitor who signed up on a device, then logs in as u1: the two profiles merge. The engine does not run
    // between the merge and the restart — what a crash right after the merge's commit leaves.
    node.send(json!({"type": "identify", "anonymousId": "device-9", "traits": {
        "email": "device9@example.com", "consent": {"email": {"marketing": "granted"}}}}))
        .await;
    node.send(json!({"type": "track", "anonymousId": "device-9", "event": "Signed Up", "properties": {}})).await;
    node.settle().await;
    let device = node.store.profile_by_identifier(&Identifier::new(IdKind::AnonymousId, "device-9")).expect("lookup");
    let device = device.expect("the device's profile");
    assert_eq!(node.engine.runs(Some("welcome"), Some(device), None, None, 10).expect("runs").len(), 1);
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "device-9"})).await;
    let survivor = node.store.profile_by_identifier(&Identifier::new(IdKind::UserId, "u1")).expect("lookup");
    let survivor = survivor.expect("u1's profile");
    let gone = if survivor == device {
        node.store.profile_by_identifier(&Identifier::new(IdKind::Email, "u1@example.com")).expect("lookup")
    } else {
        Some(device)
    };
    // u2 asks to be forgotten.
    let u2 = node.store.profile_by_identifier(&Identifier::new(IdKind::UserId, "u2")).expect("lookup");
    node.pipeline.erase(u2.expect("u2's profile")).await.expect("erased");
    let node = node.restart();
    node.settle().await;

    let runs = node.engine.runs(Some("welcome"), Some(survivor), None, None, 10).expect("runs");
    assert_eq!(runs.len(), 2, "both sign-ups' runs belong to the survivor: {runs:?}");
    // One person, one welcome series: the run that entered first goes on, the device's exits as merged.
    let mut runs: Vec<_> = runs.into_iter().map(|(run, _)| run).collect();
    runs.sort_by_key(|run| (run.entered_at, run.id));
    assert_eq!(runs[0].exit_reason, None, "{runs:?}");
    assert_eq!((runs[1].status, runs[1].exit_reason.as_deref()), (RunStatus::Exited, Some("merged")), "{runs:?}");
    assert_eq!((runs[1].due_at, runs[1].step.as_deref(), runs[1].goal_until), (None, None, None));
    if let Some(gone) = gone.filter(|g| *g != survivor) {
        assert!(node.engine.runs(Some("welcome"), Some(gone), None, None, 10).expect("runs").is_empty());
    }
    let all = node.engine.runs(Some("welcome"), None, None, None, 100).expect("runs");
    assert_eq!(all.len(), 20, "19 people's runs and the device's: u2's were deleted");
    node.at(t0 + Duration::days(1)).await;
    let seconds = node.recorder.sent().iter().filter(|(_, subject)| subject == "two").count();
    assert_eq!(seconds, 19, "the survivor gets one second message; u2 none");
    assert!(!node.recorder.sent().iter().any(|(to, subject)| to == "u2@example.com" && subject == "two"));
    let filter =
        kizuna_store::messages::MessageFilter { flow: Some("welcome".into()), limit: 100, ..Default::default() };
    let messages = node.store.messages().messages(&filter).expect("messages");
    let to_survivor =
        messages.iter().filter(|m| m.profile_id == Some(survivor) && m.template == "w2" && m.state == "sent").count();
    assert_eq!(to_survivor, 1, "{messages:?}");
    let report = node.engine.report("welcome").expect("report");
    assert_eq!(report.exited_by_reason.get("merged"), Some(&1), "{report:?}");
    // The arms count people: the merged person once.
    assert_eq!(report.arms.iter().map(|a| a.entered).sum::<u64>(), 19, "{report:?}");
}

/// Aiko signs up at noon (welcomed at once), then again on another device at 22:00 Tokyo: that welcome is held
/// till 08:00. Returns the node and the held message's id.
async fn welcome_held_on_a_second_device() -> (Node, String) {
    let node = series_node().await;
    node.customer("u1").await;
    node.track("u1", "Signed Up", json!({})).await;
    node.settle().await;
    node.at(noon_tokyo() + Duration::hours(10)).await;
    node.send(json!({"type": "identify", "anonymousId": "device-9", "traits": {"timezone": "Asia/Tokyo",
        "email": "device9@example.com", "consent": {"email": {"marketing": "granted"}}}}))
        .await;
    node.send(json!({"type": "track", "anonymousId": "device-9", "event": "Signed Up", "properties": {}})).await;
    node.settle().await;
    let filter =
        kizuna_store::messages::MessageFilter { flow: Some("welcome".into()), limit: 10, ..Default::default() };
    let held = node.store.messages().messages(&filter).expect("messages");
    assert_eq!(held.iter().map(|m| m.state.as_str()).collect::<Vec<_>>(), vec!["deferred", "sent"]);
    (node, held[0].id.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_merge_ending_a_run_and_withdrawing_its_sends_does_not_let_them_go() {
    let (node, held) = welcome_held_on_a_second_device().await;
    // The merge ends the device's run; the process dies before messaging hears of it.
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "device-9"})).await;
    node.membership.sync().await.expect("segments");
    node.engine.crash_before_next_withdrawal();
    assert!(node.engine.round().await.is_err(), "the round crashed");
    let runs = node.engine.runs(Some("welcome"), None, None, None, 10).expect("runs");
    assert!(runs.iter().any(|(r, _)| r.exit_reason.as_deref() == Some("merged")), "the run's end was written");
    assert_eq!(node.store.messages().message(&held).expect("read").expect("message").state, "deferred");
    assert_eq!(node.recorder.sent(), vec![("u1@example.com".to_string(), "one".to_string())]);
    let node = node.restart();
    node.at(noon_tokyo() + Duration::hours(21)).await;
    assert!(node.recorder.sent().is_empty(), "no second welcome after the restart: {:?}", node.recorder.sent());
    let withdrawn = node.store.messages().message(&held).expect("read").expect("message");
    assert_eq!((withdrawn.state.as_str(), withdrawn.reason.as_deref()), ("dropped", Some("flow_run_ended: merged")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_allows_several_runs_keeps_both_after_a_merge() {
    let node = Node::start();
    node.template("w1", "one");
    let flow = json!({"trigger": {"event": {"name": "Checkout Started"}}, "entry": {"concurrent": true}, "steps": [
        {"id": "wait", "type": "delay", "for": "1h", "next": "hello"},
        {"id": "hello", "type": "send", "template": "w1"}]});
    node.engine.save("carts", &flow).expect("saved");
    node.engine.activate("carts").expect("active");
    node.settle().await;
    node.send(json!({"type": "track", "anonymousId": "device-1", "event": "Checkout Started", "properties": {}})).await;
    let user = node.customer("u1").await;
    node.track("u1", "Checkout Started", json!({})).await;
    node.settle().await;
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "device-1"})).await;
    node.settle().await;
    let survivor = node.store.profile_by_identifier(&Identifier::new(IdKind::UserId, "u1")).expect("lookup");
    assert_eq!(survivor, Some(user));
    let runs = node.engine.runs(Some("carts"), Some(user), None, None, 10).expect("runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|(run, _)| run.exit_reason.is_none() && run.due_at.is_some()), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_entry_read_after_its_person_merged_starts_the_run_on_the_survivor() {
    let node = Node::start();
    node.template("vip_welcome", "welcome to VIP");
    let vip = kizuna_segments::parse("traits.spend >= 1000").expect("condition");
    node.membership.save("vip", "", vip).await.expect("segment");
    let flow = json!({"trigger": {"segment_entered": "vip"}, "steps": [
        {"id": "wait", "type": "delay", "for": "1d", "next": "hello"},
        {"id": "hello", "type": "send", "template": "vip_welcome"}]});
    node.engine.save("vip_tier", &flow).expect("saved");
    node.engine.activate("vip_tier").expect("active");
    node.settle().await;
    let user = node.customer("u1").await;
    node.settle().await;
    // A device spends enough to be a VIP: the entry is recorded, and the engine has not read it yet.
    node.send(json!({"type": "identify", "anonymousId": "device-7", "traits": {"spend": 1500}})).await;
    node.membership.sync().await.expect("segments");
    let device = node.store.profile_by_identifier(&Identifier::new(IdKind::AnonymousId, "device-7")).expect("lookup");
    let device = device.expect("the device's profile");
    // Then u1 logs in on it: one person. The round follows the merge before it reads the entry.
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "device-7"})).await;
    let survivor = node.store.profile_by_identifier(&Identifier::new(IdKind::UserId, "u1")).expect("lookup");
    let survivor = survivor.expect("u1's profile");
    assert!([user, device].contains(&survivor));
    node.settle().await;

    let runs = node.engine.runs(Some("vip_tier"), None, None, None, 10).expect("runs");
    assert_eq!(runs.len(), 1, "one person, one run: {runs:?}");
    assert_eq!(runs[0].0.profile, survivor, "the run belongs to the person the device became: {runs:?}");
    // After the day's delay: one welcome, to u1.
    node.at(noon_tokyo() + Duration::days(1)).await;
    assert_eq!(node.recorder.sent(), vec![("u1@example.com".to_string(), "welcome to VIP".to_string())]);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_held_by_quiet_hours_does_not_go_when_its_run_ends_in_a_merge() {
    let (node, held) = welcome_held_on_a_second_device().await;
    // She logs in on the device: one person, one welcome series; the device's run exits as merged.
    node.send(json!({"type": "identify", "userId": "u1", "anonymousId": "device-9"})).await;
    node.settle().await;
    node.at(noon_tokyo() + Duration::hours(21)).await;
    assert_eq!(node.recorder.sent(), vec![("u1@example.com".to_string(), "one".to_string())], "no second welcome");
    let withdrawn = node.store.messages().message(&held).expect("read").expect("message");
    assert_eq!((withdrawn.state.as_str(), withdrawn.reason.as_deref()), ("dropped", Some("flow_run_ended: merged")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_the_kill_switch() {
    let node = Node::start();
    node.template("w1", "first version");
    node.template("w2", "second version");
    let flow = |template: &str| {
        json!({"trigger": {"event": {"name": "Signed Up"}}, "steps": [
            {"id": "wait", "type": "delay", "for": "1h", "next": "hello"},
            {"id": "hello", "type": "send", "template": template}]})
    };
    node.engine.save("hello", &flow("w1")).expect("saved");
    // A draft does not run.
    node.customer("early").await;
    node.track("early", "Signed Up", json!({})).await;
    node.settle().await;
    assert!(node.engine.runs(Some("hello"), None, None, None, 10).expect("runs").is_empty());
    node.engine.activate("hello").expect("active");
    node.customer("a").await;
    node.track("a", "Signed Up", json!({})).await;
    node.settle().await;
    // Editing the live flow: new entrants get version 2, "a" finishes on version 1.
    let info = node.engine.save("hello", &flow("w2")).expect("saved");
    assert_eq!((info.version, info.live_version), (2, Some(2)));
    node.customer("b").await;
    node.track("b", "Signed Up", json!({})).await;
    node.settle().await;
    // The kill switch holds both timers.
    node.engine.pause("hello").await.expect("paused");
    let t0 = node.clock.now();
    node.at(t0 + Duration::hours(2)).await;
    assert!(node.recorder.sent().is_empty());
    node.customer("c").await;
    node.track("c", "Signed Up", json!({})).await;
    node.engine.activate("hello").expect("active");
    node.settle().await;
    let mut sent = node.recorder.sent();
    sent.sort();
    assert_eq!(
        sent,
        vec![
            ("a@example.com".to_string(), "first version".to_string()),
            ("b@example.com".to_string(), "second version".to_string())
        ]
    );
    // "c" signed up while the flow was paused: not entered.
    assert_eq!(node.engine.runs(Some("hello"), None, None, None, 10).expect("runs").len(), 2);
    // Invalid saves are refused with the field.
    let err = node.engine.save(
        "hello",
        &json!({"trigger": {"event": {"name": "x"}}, "steps": [
        {"id": "s", "type": "send", "template": "nope"}]}),
    );
    match err {
        Err(kizuna_flows_service::FlowsError::Invalid(e)) => assert_eq!(e.field, "steps[0].template"),
        other => panic!("expected an invalid flow, got {other:?}"),
    }
}

/// `migrate` moves the people inside an older version to the live one, where they go on from the step they are
/// at; a run whose step the live version lacks, or has as another kind of step, stays on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_moves_runs_to_the_live_version() {
    let node = Node::start();
    node.template("w1", "first version");
    node.template("w2", "second version");
    let flow = |send: &str, template: &str| {
        json!({"trigger": {"event": {"name": "Signed Up"}}, "steps": [
            {"id": "wait", "type": "delay", "for": "1h", "next": send},
            {"id": send, "type": "send", "template": template}]})
    };
    node.engine.save("hello", &flow("hello", "w1")).expect("saved");
    node.engine.activate("hello").expect("active");
    node.customer("a").await;
    node.track("a", "Signed Up", json!({})).await;
    node.settle().await;
    // Version 2 renames the step "a" goes to next: "a" cannot move to it.
    node.engine.save("hello", &flow("greet", "w2")).expect("saved");
    assert_eq!(node.engine.migrate("hello").await.expect("migrated"), 0);
    // Version 3 has that step again, with the other message.
    let info = node.engine.save("hello", &flow("hello", "w2")).expect("saved");
    assert_eq!(info.version, 3);
    assert_eq!(node.engine.migrate("hello").await.expect("migrated"), 1);
    let runs = node.engine.runs(Some("hello"), None, None, None, 10).expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0.version, 3);
    // Nothing left to move.
    assert_eq!(node.engine.migrate("hello").await.expect("migrated"), 0);
    // Version 4 keeps the name "hello" for a delay: a run due to send cannot become a run due to wait.
    let renamed = json!({"trigger": {"event": {"name": "Signed Up"}}, "steps": [
        {"id": "wait", "type": "delay", "for": "1h", "next": "hello"},
        {"id": "hello", "type": "delay", "for": "1h", "next": "send"},
        {"id": "send", "type": "send", "template": "w1"}]});
    node.engine.save("hello", &renamed).expect("saved");
    assert_eq!(node.engine.migrate("hello").await.expect("migrated"), 0);
    // A draft saved while the flow is paused is not live: nobody moves to it.
    node.engine.pause("hello").await.expect("paused");
    node.engine.save("hello", &flow("hello", "w1")).expect("saved");
    assert_eq!(node.engine.migrate("hello").await.expect("migrated"), 0);
    let runs = node.engine.runs(Some("hello"), None, None, None, 10).expect("runs");
    assert_eq!(runs[0].0.version, 3);
    // Activated, version 5 is live: the run moves to it.
    node.engine.activate("hello").expect("active");
    assert_eq!(node.engine.migrate("hello").await.expect("migrated"), 1);
    let runs = node.engine.runs(Some("hello"), None, None, None, 10).expect("runs");
    assert_eq!(runs[0].0.version, 5);
    node.at(node.clock.now() + Duration::hours(2)).await;
    assert_eq!(node.recorder.sent(), vec![("a@example.com".to_string(), "first version".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_predicts_live_execution() {
    // Live: three people through the cart flow, the clock stepped to each timer.
    let node = Node::start();
    node.template("cart_1", "cart");
    node.engine.save("cart", &cart_flow()).expect("saved");
    node.engine.activate("cart").expect("active");
    node.settle().await;
    for user in ["a", "b", "c"] {
        node.customer(user).await;
    }
    let t0 = node.clock.now();
    node.track("a", "Checkout Started", json!({"value": 80, "cart_id": "a1"})).await;
    node.track("b", "Checkout Started", json!({"value": 80, "cart_id": "b1"})).await;
    node.settle().await;
    node.clock.set(t0 + Duration::minutes(10));
    node.track("b", "Order Completed", json!({"cart_id": "b1", "revenue": 80})).await;
    node.track("c", "Checkout Started", json!({"value": 99, "cart_id": "c1"})).await;
    node.settle().await;
    node.at(t0 + Duration::hours(1)).await;
    node.at(t0 + Duration::minutes(70)).await;
    node.at(t0 + Duration::days(1)).await;
    let mut live = std::collections::BTreeMap::new();
    for (run, _) in node.engine.runs(Some("cart"), None, None, None, 10).expect("runs") {
        let (_, _, steps) = node.engine.run(run.id).expect("run");
        let path: Vec<(String, String, DateTime<Utc>)> = steps.into_iter().map(|s| (s.step, s.outcome, s.at)).collect();
        live.insert(run.profile, (path, run.exit_reason.clone()));
    }
    // Replay the same flow over the same history.
    let report = node.engine.simulate("cart", &SimRequest { days: 7, sample: 100, definition: None }).expect("replay");
    let mut replayed = std::collections::BTreeMap::new();
    for run in &report.runs {
        let path: Vec<(String, String, DateTime<Utc>)> =
            run.path.iter().map(|s| (s.step.clone(), s.outcome.clone(), s.at)).collect();
        replayed.insert(run.profile, (path, run.exit_reason.clone()));
    }
    assert_eq!(replayed, live);
    assert_eq!(report.summary.entered, 3);
    assert_eq!(report.summary.sends.get("send"), Some(&2));
    // Nothing was sent by the replay.
    assert_eq!(node.recorder.sent().len(), 2);
}

#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<(String, Value)>>>);

async fn hook_server() -> (String, Hooks) {
    use axum::routing::post;
    let hooks = Hooks::default();
    let recorded = hooks.clone();
    let app = axum::Router::new().route(
        "/task",
        post(move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
            let recorded = recorded.clone();
            async move {
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                if let Ok(mut hooks) = recorded.0.lock() {
                    hooks.push((key, body.0));
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/task"), hooks)
}

/// A webhook receiver that answers no call until `together` calls are in flight at once, or fails them after
/// 3 s: it succeeds only for a caller that does not wait for one person's call before making the next.
async fn hook_answering_only_calls_made_together(together: usize) -> String {
    use axum::routing::post;
    let (arrived, _) = tokio::sync::watch::channel(0usize);
    let arrived = Arc::new(arrived);
    let app = axum::Router::new().route(
        "/task",
        post(move || {
            let arrived = arrived.clone();
            async move {
                arrived.send_modify(|n| *n += 1);
                let mut seen = arrived.subscribe();
                let all_in = tokio::time::timeout(std::time::Duration::from_secs(3), seen.wait_for(|n| *n >= together));
                match all_in.await {
                    Ok(Ok(_)) => axum::http::StatusCode::NO_CONTENT,
                    _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_calls_different_peoples_webhooks_at_the_same_time() {
    let node = Node::start();
    let url = hook_answering_only_calls_made_together(4).await;
    node.engine
        .save(
            "signup_task",
            &json!({"trigger": {"event": {"name": "Signed Up"}}, "steps": [
            {"id": "task", "type": "webhook", "url": url, "body": {"task": "call"}}]}),
        )
        .expect("saved");
    node.engine.activate("signup_task").expect("active");
    node.settle().await;
    for user in ["a", "b", "c", "d"] {
        node.customer(user).await;
        node.track(user, "Signed Up", json!({})).await;
    }
    node.settle().await;
    let runs = node.engine.runs(Some("signup_task"), None, None, None, 10).expect("runs");
    assert_eq!(runs.len(), 4);
    for (run, _) in runs {
        let (_, _, steps) = node.engine.run(run.id).expect("run");
        let outcomes: Vec<&str> = steps.iter().map(|s| s.outcome.as_str()).collect();
        assert_eq!(outcomes, vec!["called"], "run {}", run.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_date_schedule_triggers_and_profile_actions() {
    let node = Node::start();
    node.template("vip_welcome", "welcome to VIP");
    node.template("birthday", "happy birthday");
    node.template("news", "this week");
    let (url, hooks) = hook_server().await;
    let vip = kizuna_segments::parse("traits.spend >= 1000").expect("condition");
    node.membership.save("vip", "", vip).await.expect("segment");
    node.engine
        .save(
            "vip_tier",
            &json!({"trigger": {"segment_entered": "vip"}, "entry": {"reentry": "never"}, "steps": [
            {"id": "tag", "type": "tag", "add": ["vip", "gold"], "next": "untag"},
            {"id": "untag", "type": "tag", "remove": ["gold"], "next": "tier"},
            {"id": "tier", "type": "update_profile", "traits": {"tier": "vip"}, "next": "points"},
            {"id": "points", "type": "award_points", "points": 500, "reason": "vip", "next": "task"},
            {"id": "task", "type": "webhook", "url": url, "body": {"task": "call"}, "next": "hello"},
            {"id": "hello", "type": "send", "template": "vip_welcome"}]}),
        )
        .expect("saved");
    node.engine.activate("vip_tier").expect("active");
    node.engine
        .save(
            "birthday",
            &json!({"trigger": {"date": {"attribute": "traits.birthday", "offset": "-1d", "at": "09:00"}},
            "steps": [{"id": "gift", "type": "send", "template": "birthday"}]}),
        )
        .expect("saved");
    node.engine.activate("birthday").expect("active");
    node.engine
        .save(
            "newsletter",
            &json!({"trigger": {"schedule": {"at": "04:00", "segment": "vip"}},
            "steps": [{"id": "send", "type": "send", "template": "news"}]}),
        )
        .expect("saved");
    node.engine.activate("newsletter").expect("active");
    node.settle().await;

    let aiko = node.customer("aiko").await;
    node.customer("ben").await;
    node.send(json!({"type": "identify", "userId": "aiko", "traits": {"spend": 1500, "birthday": "1990-12-03"}})).await;
    node.send(json!({"type": "identify", "userId": "ben", "traits": {"spend": 10, "birthday": "1985-06-01"}})).await;
    node.settle().await;
    // The segment entry ran the VIP steps: tags, trait, points as events through the pipeline, the webhook.
    node.settle().await;
    let profile = node.store.profile(aiko).expect("read").expect("profile");
    let traits = profile.state.trait_values();
    assert_eq!(traits.get("tags"), Some(&json!(["vip"])));
    assert_eq!(traits.get("tier"), Some(&json!("vip")));
    let events = node
        .store
        .events(
            aiko,
            &kizuna_store::EventFilter {
                kinds: vec!["Loyalty Points Awarded".into()],
                limit: 10,
                ..Default::default()
            },
        )
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["properties"]["points"], json!(500));
    let calls = hooks.0.lock().map(|h| h.clone()).unwrap_or_default();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].0.starts_with("flow:"), "idempotency key {}", calls[0].0);
    assert_eq!(calls[0].1["data"], json!({"task": "call"}));
    assert_eq!(calls[0].1["profile"]["traits"]["spend"], json!(1500));
    assert_eq!(node.recorder.sent(), vec![("aiko@example.com".to_string(), "welcome to VIP".to_string())]);

    // 2026-12-01 12:00 JST now. Aiko's birthday is 12-03: the flow fires 12-02 09:00 Tokyo (00:00 UTC), once a
    // sweep runs after it; the schedule fires at 04:00 in the store's zone (UTC) every day for VIP members.
    let t0 = node.clock.now();
    node.at(t0 + Duration::minutes(70)).await; // 04:10 UTC (13:10 in Tokyo): the newsletter
    assert_eq!(node.recorder.sent().len(), 2);
    assert_eq!(node.recorder.sent()[1].1, "this week");
    node.at(Utc.with_ymd_and_hms(2026, 12, 2, 0, 20, 0).single().expect("time")).await;
    let sent = node.recorder.sent();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2], ("aiko@example.com".to_string(), "happy birthday".to_string()));
    let runs = node.engine.runs(Some("birthday"), None, None, None, 10).expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0.entered_at, Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).single().expect("time"));
    // Leaving and re-entering VIP does not start the once-only flow again.
    node.send(json!({"type": "identify", "userId": "aiko", "traits": {"spend": 1}})).await;
    node.settle().await;
    node.send(json!({"type": "identify", "userId": "aiko", "traits": {"spend": 2000}})).await;
    node.settle().await;
    assert_eq!(node.engine.runs(Some("vip_tier"), None, None, None, 10).expect("runs").len(), 1);
}

/// A messaging stand-in whose backlog the test sets.
#[derive(Default)]
struct SlowDelivery {
    backlog: std::sync::atomic::AtomicUsize,
    queued: Mutex<Vec<(u64, String)>>,
}

impl kizuna_flows_service::Delivery for SlowDelivery {
    fn enqueue(&self, sends: &[kizuna_messaging_service::SendRequest]) -> Result<(), String> {
        let mut queued = self.queued.lock().map_err(|_| "poisoned".to_string())?;
        queued.extend(sends.iter().map(|s| (s.profile_id, s.template.clone())));
        Ok(())
    }
    fn withdraw(&self, _key_prefixes: &[String], _reason: &str) -> Result<usize, String> {
        Ok(0)
    }
    fn backlog(&self, cap: usize) -> usize {
        self.backlog.load(std::sync::atomic::Ordering::SeqCst).min(cap)
    }
    fn template_exists(&self, _name: &str) -> bool {
        true
    }
    fn dry_run(
        &self,
        _template: &str,
        _profile: u64,
        _at: DateTime<Utc>,
        _earlier: &[DateTime<Utc>],
    ) -> kizuna_flows::simulate::SendVerdict {
        kizuna_flows::simulate::SendVerdict { decision: "send".into(), reason: "allowed".into(), until: None }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_slows_and_then_stops_new_entrants_but_never_timers() {
    use std::sync::atomic::Ordering::SeqCst;
    let node = Node::start();
    let delivery = Arc::new(SlowDelivery::default());
    let settings = FlowSettings { backlog_limit: 10, batch: 10, ..FlowSettings::default() };
    let engine =
        FlowEngine::new(node.store.clone(), Arc::new(node.clock.clone()), delivery.clone(), settings).expect("engine");
    engine.save("hello", &series()).expect("saved");
    engine.activate("hello").expect("active");
    let settle = || async {
        node.membership.sync().await.expect("segments");
        while engine.round().await.expect("round") {}
    };
    let runs = || engine.runs(Some("hello"), None, None, None, 100).expect("runs").len();
    let queued = |p: u64| delivery.queued.lock().map(|q| q.iter().filter(|(who, _)| *who == p).count()).unwrap_or(0);
    settle().await;
    let a = node.customer("a").await;
    node.track("a", "Signed Up", json!({})).await;
    settle().await;
    assert_eq!((runs(), queued(a)), (1, 1));
    // Over the limit: new entrants trickle in, one (a tenth of a batch of 10) per round.
    delivery.backlog.store(15, SeqCst);
    for user in ["b", "c", "d"] {
        node.customer(user).await;
        node.track(user, "Signed Up", json!({})).await;
    }
    node.membership.sync().await.expect("segments");
    // Inputs are read a tenth of a batch (one row of the event log here) per round.
    let mut rounds = 0;
    while runs() < 2 && rounds < 20 {
        engine.round().await.expect("round");
        rounds += 1;
    }
    assert_eq!(runs(), 2, "one more entrant after {rounds} rounds");
    assert!(rounds > 1, "not all inputs at once");
    assert!(engine.stats().backpressure_pauses > 0);
    // Past twice the limit nobody new enters, but the person inside keeps their timing.
    delivery.backlog.store(25, SeqCst);
    node.clock.set(node.clock.now() + Duration::days(1));
    settle().await;
    assert_eq!((runs(), queued(a)), (2, 2));
    // Caught up: everyone waiting is admitted.
    delivery.backlog.store(0, SeqCst);
    settle().await;
    assert_eq!(runs(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flows_rounds_read_nothing_and_the_first_flow_misses_nothing_after_its_activation() {
    let node = Node::start();
    node.template("cart_1", "{{ profile.first_name }}, your cart is waiting");
    node.customer("aiko").await;
    node.customer("ben").await;
    node.track("aiko", "Checkout Started", json!({"value": 80, "cart_id": "before"})).await;
    node.settle().await;
    assert!(!node.engine.round().await.expect("round"), "no flow: nothing to do");
    for cursor in ["events", "segment_transitions", "merges", "erasures"] {
        assert_eq!(node.store.flows().flow_cursor(cursor).expect("cursor"), None, "{cursor} is not kept");
    }
    // Activated, then an event before the engine's next round: it must still trigger the flow, while the
    // checkout from before the activation does not.
    node.engine.save("cart", &cart_flow()).expect("saved");
    node.engine.activate("cart").expect("active");
    node.track("ben", "Checkout Started", json!({"value": 90, "cart_id": "after"})).await;
    node.settle().await;
    node.at(node.clock.now() + Duration::hours(2)).await;
    assert_eq!(node.recorder.sent(), vec![("ben@example.com".to_string(), "ben, your cart is waiting".to_string())]);
    assert!(node.store.flows().flow_cursor("events").expect("cursor").is_some(), "kept again once a flow exists");
}
