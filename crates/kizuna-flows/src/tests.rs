//! The machine under explicit time: every step type, entry and re-entry rules, goals, hold-outs, and the
//! replay.

use chrono::{DateTime, Duration, Utc};
use kizuna_segments::eval::EventFact;
use serde_json::{Value, json};

use crate::definition::FlowDefinition;
use crate::machine::{self, Action, EventEffect, PriorRuns, Run, RunStatus, TriggerInfo};
use crate::person::Snapshot;
use crate::simulate::{self, PersonHistory, SendVerdict, SimPerson};
use crate::validate::{self, Resolver};

struct Known;

impl Resolver for Known {
    fn template_exists(&self, name: &str) -> bool {
        name != "missing"
    }
    fn segment_exists(&self, name: &str) -> bool {
        name != "nowhere"
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").map(|t| t.with_timezone(&Utc)).expect("time")
}

fn flow(value: Value) -> FlowDefinition {
    let def = validate::from_json(&value).expect("parses");
    validate::check(&def, &Known).expect("valid");
    def
}

fn invalid(value: Value) -> validate::FlowError {
    match validate::from_json(&value) {
        Err(e) => e,
        Ok(def) => validate::check(&def, &Known).expect_err("invalid"),
    }
}

fn event(seq: i64, name: &str, at: DateTime<Utc>, properties: Value) -> EventFact {
    EventFact { seq, name: name.into(), at, properties }
}

fn trigger_at(at: DateTime<Utc>, properties: Value) -> TriggerInfo {
    TriggerInfo { seq: 1, name: "Checkout Started".into(), properties, at }
}

fn cart_flow() -> FlowDefinition {
    flow(json!({
        "trigger": {"event": {"name": "Checkout Started", "where": [{"path": "value", "op": "gt", "value": 50}]}},
        "goal": {"event": {"name": "Order Completed"}, "within": "5d"},
        "steps": [
            {"id": "wait", "type": "wait_for_event", "event": {"name": "Order Completed"},
             "same_as_trigger": ["cart_id"], "timeout": "1h", "on_event": null, "on_timeout": "remind"},
            {"id": "remind", "type": "send", "template": "cart_abandonment", "next": "later"},
            {"id": "later", "type": "delay", "for": "1d", "next": "again"},
            {"id": "again", "type": "send", "template": "cart_abandonment_2"}
        ]
    }))
}

fn sends(records: &[machine::StepRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.action {
            Some(Action::Send { template, .. }) => Some(template.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn validation_names_the_field() {
    let base = |steps: Value| json!({"trigger": {"event": {"name": "Signed Up"}}, "steps": steps});
    let e = invalid(base(json!([{"id": "a", "type": "send", "template": "t", "next": "b"}])));
    assert_eq!((e.field.as_str(), e.message.as_str()), ("steps[0].next", "unknown step \"b\""));
    let e = invalid(base(json!([{"id": "a", "type": "teleport"}])));
    assert_eq!(e.field, "steps[0].type");
    assert!(e.message.contains("unknown variant `teleport`"), "{}", e.message);
    let e = invalid(base(json!([{"id": "a", "type": "send", "template": "t"}, {"id": "b", "type": "exit"}])));
    assert_eq!(e.field, "steps[1]");
    assert!(e.message.contains("unreachable"), "{}", e.message);
    let e = invalid(base(json!([
        {"id": "a", "type": "condition", "if": "traits.vip = true", "then": "b", "else": null},
        {"id": "b", "type": "send", "template": "t", "next": "a"}
    ])));
    assert!(e.message.contains("cycle without a wait: a → b → a"), "{}", e.message);
    // The same cycle with a delay in it is fine.
    flow(base(json!([
        {"id": "a", "type": "condition", "if": "traits.vip = true", "then": "b", "else": null},
        {"id": "b", "type": "delay", "for": "7d", "next": "a"}
    ])));
    let e = invalid(base(json!([{"id": "a", "type": "condition", "if": "traits.vip = true", "then": null}])));
    assert!(e.message.contains("missing field `else`"), "{}", e.message);
    let e = invalid(base(json!([{"id": "a", "type": "send", "template": "missing"}])));
    assert_eq!((e.field.as_str(), e.message.as_str()), ("steps[0].template", "unknown template \"missing\""));
    let e = invalid(json!({"trigger": {"segment_entered": "nowhere"}, "steps": [{"id": "a", "type": "exit"}]}));
    assert_eq!(e.field, "trigger.segment_entered");
    let e = invalid(base(json!([{"id": "a", "type": "condition", "if": "traits.vip = ", "then": null, "else": null}])));
    assert_eq!(e.field, "steps[0].if");
    assert!(e.message.contains("1:"), "{}", e.message);
    let e =
        invalid(base(json!([{"id": "a", "type": "split", "branches": [{"name": "A", "weight": 1, "next": null}]}])));
    assert_eq!(e.field, "steps[0].branches");
    let e = invalid(base(json!([{"id": "a", "type": "delay", "next": null}])));
    assert_eq!(e.field, "steps[0].for");
    let e = invalid(base(json!([{"id": "a", "type": "delay", "for": "3x", "next": null}])));
    assert_eq!(e.field, "steps[0].for");
    let e = invalid(json!({"trigger": {"event": {"name": "x"}}, "stepz": []}));
    assert!(e.message.contains("unknown field `stepz`"), "{}", e.message);
}

#[test]
fn cart_abandonment_path_under_a_clock() {
    let def = cart_flow();
    let trigger = event(1, "Checkout Started", t0(), json!({"value": 80, "cart_id": "c1"}));
    assert!(machine::event_triggers(&def, &trigger));
    assert!(!machine::event_triggers(&def, &event(1, "Checkout Started", t0(), json!({"value": 20}))));
    let mut person = Snapshot::default();
    let mut run = machine::start_run(&def, 7, 42, 1, trigger_at(t0(), json!({"value": 80, "cart_id": "c1"})));
    let records = machine::advance("cart", &def, &mut run, &mut person, t0());
    assert_eq!(run.status, RunStatus::Waiting);
    assert_eq!(run.due_at, Some(t0() + Duration::hours(1)));
    assert!(sends(&records).is_empty());
    // Not due yet: nothing happens.
    assert!(machine::advance("cart", &def, &mut run, &mut person, t0() + Duration::minutes(59)).is_empty());
    // An order for another cart neither resumes the wait nor... it does count as the goal (any order converts).
    let mut other = run.clone();
    let effect = machine::on_event(&def, &mut other, &event(2, "Product Viewed", t0(), json!({})), t0());
    assert_eq!(effect, EventEffect::None);
    // Timeout: the reminder goes, then a day's delay, then the second reminder.
    let records = machine::advance("cart", &def, &mut run, &mut person, t0() + Duration::hours(1));
    assert_eq!(sends(&records), vec!["cart_abandonment"]);
    assert_eq!(records[0].outcome, "timeout");
    assert_eq!(run.due_at, Some(t0() + Duration::hours(25)));
    let keys: Vec<String> = records.iter().map(|r| r.idempotency_key(run.id)).collect();
    assert_eq!(keys, vec!["flow-run:7:2", "flow-run:7:3", "flow-run:7:4"]);
    let records = machine::advance("cart", &def, &mut run, &mut person, t0() + Duration::hours(25));
    assert_eq!(sends(&records), vec!["cart_abandonment_2"]);
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.exit_reason, None);
}

#[test]
fn awaited_event_must_match_the_trigger() {
    let def = flow(json!({
        "trigger": {"event": {"name": "Checkout Started"}},
        "steps": [
            {"id": "wait", "type": "wait_for_event", "event": {"name": "Order Completed"},
             "same_as_trigger": ["cart_id"], "timeout": "1h", "on_event": "thanks", "on_timeout": null},
            {"id": "thanks", "type": "send", "template": "thanks"}
        ]
    }));
    let mut person = Snapshot::default();
    let mut run = machine::start_run(&def, 1, 42, 1, trigger_at(t0(), json!({"cart_id": "c1"})));
    machine::advance("f", &def, &mut run, &mut person, t0());
    let later = t0() + Duration::minutes(10);
    let wrong_cart = event(5, "Order Completed", later, json!({"cart_id": "c2"}));
    assert_eq!(machine::on_event(&def, &mut run, &wrong_cart, later), EventEffect::None);
    let right = event(6, "Order Completed", later, json!({"cart_id": "c1"}));
    assert!(matches!(machine::on_event(&def, &mut run, &right, later), EventEffect::Resumed(_)));
    let records = machine::advance("f", &def, &mut run, &mut person, later);
    assert_eq!(sends(&records), vec!["thanks"]);
    // An event after the deadline does not count.
    let mut late = machine::start_run(&def, 2, 42, 1, trigger_at(t0(), json!({"cart_id": "c1"})));
    machine::advance("f", &def, &mut late, &mut person, t0());
    let after = t0() + Duration::minutes(61);
    let too_late = event(7, "Order Completed", after, json!({"cart_id": "c1"}));
    assert_eq!(machine::on_event(&def, &mut late, &too_late, after), EventEffect::None);
}

#[test]
fn goal_exits_and_counts_revenue_but_not_the_trigger() {
    let def = flow(json!({
        "trigger": {"event": {"name": "Order Completed"}},
        "goal": {"event": {"name": "Order Completed"}, "within": "5d"},
        "steps": [
            {"id": "wait", "type": "delay", "for": "2d", "next": "cross"},
            {"id": "cross", "type": "send", "template": "cross_sell"}
        ]
    }));
    let mut person = Snapshot::default();
    let info = TriggerInfo { seq: 10, name: "Order Completed".into(), properties: json!({"revenue": 30}), at: t0() };
    let mut run = machine::start_run(&def, 1, 42, 1, info);
    machine::advance("f", &def, &mut run, &mut person, t0());
    let own = event(10, "Order Completed", t0(), json!({"revenue": 30}));
    assert_eq!(machine::on_event(&def, &mut run, &own, t0()), EventEffect::None);
    let day = t0() + Duration::days(1);
    let second = event(11, "Order Completed", day, json!({"revenue": "45.5"}));
    assert_eq!(machine::on_event(&def, &mut run, &second, day), EventEffect::Converted);
    assert_eq!((run.status, run.exit_reason.as_deref()), (RunStatus::Exited, Some("goal")));
    assert_eq!(run.revenue, 45.5);
    // Outside the window: no conversion.
    let mut late =
        machine::start_run(&def, 2, 42, 1, TriggerInfo { seq: 10, name: "x".into(), properties: json!({}), at: t0() });
    let six = t0() + Duration::days(6);
    assert_eq!(
        machine::on_event(&def, &mut late, &event(12, "Order Completed", six, json!({})), six),
        EventEffect::None
    );
}

#[test]
fn filter_exits_a_person_who_bought() {
    let def = flow(json!({
        "trigger": {"event": {"name": "Checkout Started"}},
        "filter": "not event \"Order Completed\" in last 7d",
        "steps": [
            {"id": "wait", "type": "delay", "for": "1h", "next": "remind"},
            {"id": "remind", "type": "send", "template": "cart_abandonment"}
        ]
    }));
    let mut buyer = Snapshot::default();
    buyer.events.push(event(3, "Order Completed", t0() + Duration::minutes(30), json!({})));
    let mut run = machine::start_run(&def, 1, 42, 1, trigger_at(t0(), json!({})));
    machine::advance("f", &def, &mut run, &mut buyer, t0());
    let records = machine::advance("f", &def, &mut run, &mut buyer, t0() + Duration::hours(1));
    assert!(sends(&records).is_empty());
    assert_eq!(run.exit_reason.as_deref(), Some("filter"));
    let mut browser = Snapshot::default();
    let mut run = machine::start_run(&def, 2, 43, 1, trigger_at(t0(), json!({})));
    machine::advance("f", &def, &mut run, &mut browser, t0());
    let records = machine::advance("f", &def, &mut run, &mut browser, t0() + Duration::hours(1));
    assert_eq!(sends(&records), vec!["cart_abandonment"]);
}

#[test]
fn conditions_splits_actions_and_exit() {
    let def = flow(json!({
        "trigger": {"segment_entered": "vip"},
        "steps": [
            {"id": "is_jp", "type": "condition", "if": "traits.country = \"JP\"", "then": "line", "else": "ab"},
            {"id": "line", "type": "award_points", "points": 500, "reason": "VIP", "next": "tag"},
            {"id": "ab", "type": "split", "branches": [
                {"name": "A", "weight": 1, "next": "tag"}, {"name": "B", "weight": 1, "next": "hook"}]},
            {"id": "hook", "type": "webhook", "url": "http://127.0.0.1:9/task", "body": {"kind": "vip"}, "next": "tag"},
            {"id": "tag", "type": "tag", "add": ["vip"], "next": "set"},
            {"id": "set", "type": "update_profile", "traits": {"tier": "gold"}, "next": "done"},
            {"id": "done", "type": "exit"}
        ]
    }));
    let info = TriggerInfo { seq: 0, name: "Segment Entered".into(), properties: json!({"segment": "vip"}), at: t0() };
    let mut jp = Snapshot::default();
    jp.traits.insert("country".into(), json!("JP"));
    let mut run = machine::start_run(&def, 1, 42, 1, info.clone());
    let records = machine::advance("vip", &def, &mut run, &mut jp, t0());
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["then", "awarded", "tagged", "updated", "exit"]);
    assert_eq!(run.exit_reason.as_deref(), Some("exit_step"));
    assert!(matches!(records[1].action, Some(Action::AwardPoints { points: 500, .. })));
    // The split: stable for a person and close to the weights over many.
    let mut counts = [0u32; 2];
    for profile in 0..4000u64 {
        let mut person = Snapshot::default();
        let mut run = machine::start_run(&def, 1, profile, 1, info.clone());
        let records = machine::advance("vip", &def, &mut run, &mut person, t0());
        let mut again = machine::start_run(&def, 1, profile, 1, info.clone());
        machine::advance("vip", &def, &mut again, &mut person, t0());
        assert_eq!(run.arm, again.arm);
        counts[usize::from(run.arm.as_deref() == Some("B"))] += 1;
        assert_eq!(records.iter().any(|r| r.step == "hook"), run.arm.as_deref() == Some("B"));
    }
    assert!((1850..=2150).contains(&counts[0]), "{counts:?}");
}

#[test]
fn holdout_is_stable_and_waits_out_the_goal_window() {
    let def = flow(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "goal": {"event": {"name": "Order Completed"}, "within": "7d"},
        "steps": [
            {"id": "hold", "type": "holdout", "percent": 10, "next": "hello"},
            {"id": "hello", "type": "send", "template": "welcome"}
        ]
    }));
    let info = |at| TriggerInfo { seq: 1, name: "Signed Up".into(), properties: json!({}), at };
    let mut held = 0;
    for profile in 0..5000u64 {
        let mut person = Snapshot::default();
        let mut run = machine::start_run(&def, 1, profile, 1, info(t0()));
        let records = machine::advance("welcome", &def, &mut run, &mut person, t0());
        // The same person is held out on every entry.
        let mut again = machine::start_run(&def, 2, profile, 1, info(t0() + Duration::days(30)));
        machine::advance("welcome", &def, &mut again, &mut person, t0() + Duration::days(30));
        assert_eq!(run.holdout, again.holdout);
        if run.holdout {
            held += 1;
            assert!(sends(&records).is_empty());
            assert_eq!((run.status, run.due_at), (RunStatus::Holdout, Some(t0() + Duration::days(7))));
            // Conversions count in the hold-out, and it leaves when the window ends.
            let day = t0() + Duration::days(2);
            assert_eq!(
                machine::on_event(&def, &mut run, &event(9, "Order Completed", day, json!({})), day),
                EventEffect::Converted
            );
            assert_eq!(run.status, RunStatus::Holdout);
            machine::advance("welcome", &def, &mut run, &mut person, t0() + Duration::days(7));
            assert_eq!(run.exit_reason.as_deref(), Some("holdout"));
        } else {
            assert_eq!(sends(&records), vec!["welcome"]);
        }
    }
    assert!((400..=600).contains(&held), "{held}");
}

#[test]
fn delay_until_local_time_on_weekdays() {
    let def = flow(json!({
        "trigger": {"event": {"name": "Signed Up"}},
        "steps": [
            {"id": "morning", "type": "delay", "for": "1h", "until": {"at": "10:00", "weekdays": ["mon", "tue", "wed", "thu", "fri"]}, "next": "hello"},
            {"id": "hello", "type": "send", "template": "welcome"}
        ]
    }));
    let mut tokyo = Snapshot { zone: Some(chrono_tz::Asia::Tokyo), ..Snapshot::default() };
    // Friday 2026-12-04 10:30 JST → Monday 10:00 JST.
    let at = DateTime::parse_from_rfc3339("2026-12-04T01:30:00Z").map(|t| t.with_timezone(&Utc)).expect("time");
    let mut run =
        machine::start_run(&def, 1, 42, 1, TriggerInfo { seq: 1, name: "Signed Up".into(), properties: json!({}), at });
    machine::advance("f", &def, &mut run, &mut tokyo, at);
    let monday = DateTime::parse_from_rfc3339("2026-12-07T01:00:00Z").map(|t| t.with_timezone(&Utc)).expect("time");
    assert_eq!(run.due_at, Some(monday));
}

#[test]
fn reentry_rules() {
    let mut def = cart_flow();
    let never_entered = PriorRuns::default();
    let active = PriorRuns { live: 1, last_entered: Some(t0()) };
    let ended = PriorRuns { live: 0, last_entered: Some(t0()) };
    assert_eq!(machine::may_enter(&def, &never_entered, t0()), Ok(()));
    assert_eq!(machine::may_enter(&def, &active, t0()), Err("already_in_flow"));
    assert_eq!(machine::may_enter(&def, &ended, t0()), Ok(()));
    def.entry.reentry = crate::definition::Reentry::Never;
    assert_eq!(machine::may_enter(&def, &ended, t0() + Duration::days(400)), Err("entered_before"));
    def.entry.reentry = crate::definition::Reentry::Cooldown(kizuna_segments::Span::parse_compact("7d").expect("span"));
    assert_eq!(machine::may_enter(&def, &ended, t0() + Duration::days(6)), Err("cooldown"));
    assert_eq!(machine::may_enter(&def, &ended, t0() + Duration::days(7)), Ok(()));
    def.entry.concurrent = true;
    def.entry.reentry = crate::definition::Reentry::AfterExit;
    assert_eq!(machine::may_enter(&def, &active, t0()), Ok(()));
}

struct Replayed {
    snapshot: Snapshot,
    sent: Vec<DateTime<Utc>>,
}

impl machine::PersonContext for Replayed {
    fn holds(&mut self, condition: &kizuna_segments::Condition, now: DateTime<Utc>) -> bool {
        self.snapshot.holds(condition, now)
    }
    fn zone(&mut self) -> chrono_tz::Tz {
        chrono_tz::UTC
    }
}

impl SimPerson for Replayed {
    fn send(&mut self, _template: &str, at: DateTime<Utc>) -> SendVerdict {
        // A cap of one message a day, to see deferrals reported.
        let verdict = match self.sent.iter().find(|t| at - **t < Duration::days(1)) {
            Some(t) => {
                SendVerdict { decision: "defer".into(), reason: "cap".into(), until: Some(*t + Duration::days(1)) }
            }
            None => SendVerdict { decision: "send".into(), reason: "allowed".into(), until: None },
        };
        self.sent.push(at);
        verdict
    }
}

#[test]
fn replay_follows_each_person_through_history() {
    let def = cart_flow();
    let h = |m: i64| t0() + Duration::minutes(m);
    let events = vec![
        event(1, "Checkout Started", h(0), json!({"value": 80, "cart_id": "c1"})),
        // Bought the same cart within the hour: leaves by the goal.
        event(2, "Order Completed", h(30), json!({"cart_id": "c1", "revenue": 80})),
        event(3, "Checkout Started", h(600), json!({"value": 90, "cart_id": "c2"})),
        // A second checkout while in the flow is refused (one run at a time).
        event(4, "Checkout Started", h(610), json!({"value": 95, "cart_id": "c2"})),
    ];
    let history = PersonHistory { profile: 42, events: events.clone(), ..PersonHistory::default() };
    let mut person = Replayed { snapshot: Snapshot { events, ..Snapshot::default() }, sent: Vec::new() };
    let mut refusals = simulate::Refusals::new();
    let runs =
        simulate::replay_person("cart", &def, &history, &mut person, t0(), t0() + Duration::days(3), &mut refusals);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].exit_reason.as_deref(), Some("goal"));
    assert_eq!(runs[0].revenue, 80.0);
    assert!(runs[0].sends.is_empty());
    assert_eq!(runs[1].status, RunStatus::Completed);
    let at: Vec<DateTime<Utc>> = runs[1].sends.iter().map(|s| s.at).collect();
    assert_eq!(at, vec![h(660), h(660 + 24 * 60)]);
    assert_eq!(refusals.get("already_in_flow"), Some(&1));
    let decisions: Vec<&str> = runs[1].sends.iter().map(|s| s.verdict.decision.as_str()).collect();
    assert_eq!(decisions, vec!["send", "send"]);
}

#[test]
fn replay_withdraws_a_held_send_when_the_person_converts_as_live_does() {
    let def = cart_flow();
    let h = |m: i64| t0() + Duration::minutes(m);
    let events = vec![
        event(1, "Checkout Started", h(0), json!({"value": 80, "cart_id": "c1"})),
        // Another cart bought two hours later: the wait is over, the goal still counts and exits.
        event(2, "Order Completed", h(120), json!({"cart_id": "c9", "revenue": 40})),
    ];
    let history = PersonHistory { profile: 7, events: events.clone(), ..PersonHistory::default() };
    // A message sent at 00:30 holds the reminder (due at 01:00) for a day under the cap.
    let mut person = Replayed { snapshot: Snapshot { events, ..Snapshot::default() }, sent: vec![h(30)] };
    let mut refusals = simulate::Refusals::new();
    let runs =
        simulate::replay_person("cart", &def, &history, &mut person, t0(), t0() + Duration::days(3), &mut refusals);
    assert_eq!((runs[0].exit_reason.as_deref(), runs[0].revenue), (Some("goal"), 40.0));
    let sends: Vec<(&str, &str)> =
        runs[0].sends.iter().map(|s| (s.verdict.decision.as_str(), s.verdict.reason.as_str())).collect();
    assert_eq!(sends, vec![("drop", "flow_run_ended: goal")]);
}

#[test]
fn replay_matches_stepping_the_machine_by_hand() {
    // The replay drives the same machine: its path equals advancing a run at each due time.
    let def = cart_flow();
    let trigger = event(1, "Checkout Started", t0(), json!({"value": 80, "cart_id": "c1"}));
    let history = PersonHistory { profile: 9, events: vec![trigger], ..PersonHistory::default() };
    let mut person = Replayed { snapshot: Snapshot::default(), sent: Vec::new() };
    let mut refusals = simulate::Refusals::new();
    let runs =
        simulate::replay_person("cart", &def, &history, &mut person, t0(), t0() + Duration::days(3), &mut refusals);
    let mut run: Run = machine::start_run(&def, 1, 9, 0, trigger_at(t0(), json!({"value": 80, "cart_id": "c1"})));
    let mut by_hand = Vec::new();
    let mut snapshot = Snapshot::default();
    while let Some(due) = run.due_at {
        by_hand.extend(machine::advance("cart", &def, &mut run, &mut snapshot, due));
    }
    assert_eq!(runs[0].path, by_hand);
}
