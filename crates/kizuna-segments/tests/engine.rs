//! The incremental engine against the definition of membership: after any sequence of events (late ones
//! included), profile changes, merges, erasures and time passing, the engine's memberships equal a full
//! evaluation from scratch over every profile's whole history at the same instant — while the engine only
//! re-evaluated what each change could affect and woke profiles from its timer queue.

use chrono::{DateTime, Duration, TimeZone, Utc};
use kizuna_segments::engine::{Cause, Change, Engine, SegmentDefinition, Transition};
use kizuna_segments::summary::{NewEvent, ProfileData};
use kizuna_segments::{EventFact, evaluate, parse};
use proptest::prelude::*;
use serde_json::{Map, json};
use std::collections::{BTreeMap, BTreeSet};

mod common;
use common::Person;

const SEGMENTS: &[(&str, &str)] = &[
    ("browse-abandoners", r#"event "Product Viewed" in last 7d and not event "Order Completed" in last 7d"#),
    ("repeat", r#"count of event "Order Completed" >= 2"#),
    ("cart-abandoners", r#"did "Checkout Started" then not "Order Completed" within 1h in last 7d"#),
    ("vip-repeat", r#"traits.vip = true and in segment "repeat""#),
    ("lapsed", r#"last of event "Order Completed" between 60d and 120d ago"#),
    ("shoe-spenders", r#"sum total of event "Order Completed" where category = "shoes" in last 30d >= 100"#),
    ("reachable", r#"has email and consent email for marketing"#),
    ("not-vip-tokyo", r#"not traits.vip = true and traits.city = "Tokyo""#),
    ("reachable-lapsed", r#"in segment "reachable" and in segment "lapsed""#),
];

/// More segments for the property test only (the other tests count transitions of the ones above).
const MORE_SEGMENTS: &[(&str, &str)] = &[
    // A settled answer (a trait, consent) next to answers time changes, in and / or / not: the evaluator skips
    // the time-dependent children's wake-ups when the settled one decides.
    ("vip-recent-viewers", r#"event "Product Viewed" in last 2d and traits.vip = true"#),
    ("tokyo-or-recent-buyers", r#"event "Order Completed" in last 1d or traits.city = "Tokyo""#),
    (
        "neither-vip-nor-abandoner",
        r#"not (did "Checkout Started" then not "Order Completed" within 1h in last 3d or traits.vip = true)"#,
    ),
    (
        "consenting-quiet-repeat",
        r#"not event "Page" in last 3h and (consent email for marketing or in segment "repeat")"#,
    ),
];

const NAMES: &[&str] = &["Product Viewed", "Order Completed", "Checkout Started", "Page"];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("time")
}

fn definitions() -> Vec<SegmentDefinition> {
    definitions_of(SEGMENTS)
}

fn definitions_of(segments: &[(&str, &str)]) -> Vec<SegmentDefinition> {
    segments
        .iter()
        .enumerate()
        .map(|(i, (name, text))| SegmentDefinition {
            id: i as i64 + 1,
            name: name.to_string(),
            condition: parse(text).unwrap_or_else(|e| panic!("{name}: {e}")),
        })
        .collect()
}

/// An engine holding every definition and no profile yet (nothing to reload).
fn engine_with_definitions() -> Engine {
    engine_with(definitions())
}

fn engine_with(definitions: Vec<SegmentDefinition>) -> Engine {
    let mut engine = Engine::new();
    for d in definitions {
        engine.widen(&d.condition);
        engine.upsert(d, start()).expect("definition");
    }
    engine
}

#[derive(Debug, Clone)]
enum Op {
    /// profile, event name, minutes relative to now (negative: a late event), category, total
    Event(u64, usize, i64, bool, u32),
    /// profile, vip, city is Tokyo, has email, consent
    Data(u64, bool, bool, bool, bool),
    /// minutes
    Advance(i64),
    Merge(u64, u64),
    Erase(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..6, 0..NAMES.len(), -150_000i64..30, any::<bool>(), 0u32..120)
            .prop_map(|(p, n, m, shoes, total)| Op::Event(p, n, m, shoes, total)),
        2 => (0u64..6, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(p, v, t, e, c)| Op::Data(p, v, t, e, c)),
        4 => prop_oneof![1i64..90, 60i64..3000, 1440i64..100_000].prop_map(Op::Advance),
        1 => (0u64..6, 0u64..6).prop_map(|(a, b)| Op::Merge(a, b)),
        1 => (0u64..6).prop_map(Op::Erase),
    ]
}

/// Everything known about one profile, whole.
#[derive(Default, Clone)]
struct Reference {
    data: ProfileData,
    events: Vec<NewEvent>,
}

impl Reference {
    fn person(&self) -> Person {
        let mut person = Person::default();
        for (k, v) in &self.data.traits {
            person.attributes.insert(format!("traits.{k}"), v.clone());
        }
        person.consent = self.data.consent.iter().cloned().collect();
        person.identifiers = self.data.identifiers.iter().cloned().collect();
        let mut events: Vec<EventFact> = self
            .events
            .iter()
            .map(|e| EventFact {
                seq: e.seq,
                name: e.name.as_str().into(),
                at: e.at,
                properties: (*e.properties).clone(),
            })
            .collect();
        events.sort_by_key(|e| (e.at, e.seq));
        person.events = events;
        person
    }
}

fn from_scratch(profile: &Reference, now: DateTime<Utc>) -> BTreeSet<String> {
    let person = profile.person();
    let mut members: BTreeSet<String> = BTreeSet::new();
    // The lists name dependencies before the segments that use them.
    for d in every_definition() {
        let known = members.clone();
        if evaluate(&d.condition, &person, now, &|name| known.contains(name)).member {
            members.insert(d.name.clone());
        }
    }
    members
}

fn every_definition() -> Vec<SegmentDefinition> {
    definitions_of(&[SEGMENTS, MORE_SEGMENTS].concat())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut engine = engine_with(every_definition());
    let mut now = start();
    let mut profiles: BTreeMap<u64, Reference> = BTreeMap::new();
    let mut seq = 0i64;
    let mut memberships: BTreeMap<(u64, String), bool> = BTreeMap::new();
    let record = |transitions: Vec<Transition>, memberships: &mut BTreeMap<(u64, String), bool>| {
        for t in transitions {
            let was = memberships.insert((t.profile, t.segment.clone()), t.entered).unwrap_or(false);
            assert_ne!(was, t.entered, "a transition changes membership: {t:?}");
        }
    };
    for op in ops {
        let changes = match op {
            Op::Event(profile, name, minutes, shoes, total) => {
                seq += 1;
                let event = NewEvent {
                    seq,
                    name: NAMES[name].to_string(),
                    at: now + Duration::minutes(minutes),
                    properties: json!({"category": if shoes { "shoes" } else { "bags" }, "total": total}).into(),
                };
                let reference = profiles.entry(profile).or_default();
                reference.events.push(event.clone());
                vec![Change::Updated { profile, data: None, events: vec![event] }]
            }
            Op::Data(profile, vip, tokyo, email, consent) => {
                let reference = profiles.entry(profile).or_default();
                let mut traits = Map::new();
                traits.insert("vip".into(), json!(vip));
                if tokyo {
                    traits.insert("city".into(), json!("Tokyo"));
                }
                reference.data.traits = traits;
                reference.data.identifiers = if email { vec!["email".into()] } else { vec![] };
                reference.data.consent = if consent { vec![("email".into(), "marketing".into())] } else { vec![] };
                reference.data.version += 1;
                vec![Change::Updated { profile, data: Some(reference.data.clone()), events: vec![] }]
            }
            Op::Advance(minutes) => {
                now += Duration::minutes(minutes);
                record(engine.tick(now), &mut memberships);
                vec![]
            }
            Op::Merge(from, into) if from != into && profiles.contains_key(&from) => {
                let absorbed = profiles.remove(&from).unwrap_or_default();
                let survivor = profiles.entry(into).or_default();
                survivor.events.extend(absorbed.events);
                // The store's merged state: the survivor's traits win, the absorbed fill gaps.
                for (k, v) in absorbed.data.traits {
                    survivor.data.traits.entry(k).or_insert(v);
                }
                survivor.data.version = survivor.data.version.max(absorbed.data.version) + 1;
                vec![
                    Change::Merged { from, into },
                    Change::Updated { profile: into, data: Some(survivor.data.clone()), events: vec![] },
                ]
            }
            Op::Merge(..) => vec![],
            Op::Erase(profile) => {
                profiles.remove(&profile);
                vec![Change::Removed { profile, erased: true }]
            }
        };
        if !changes.is_empty() {
            record(engine.apply(changes, now), &mut memberships);
        }
        for profile in 0..6u64 {
            let expected = profiles.get(&profile).map(|r| from_scratch(r, now)).unwrap_or_default();
            let actual: BTreeSet<String> =
                every_definition().into_iter().map(|d| d.name).filter(|n| engine.is_member(n, profile)).collect();
            prop_assert_eq!(&actual, &expected, "profile {} at {}", profile, now);
            let recorded: BTreeSet<String> =
                memberships.iter().filter(|((p, _), m)| *p == profile && **m).map(|((_, s), _)| s.clone()).collect();
            prop_assert_eq!(&recorded, &expected, "transitions replay to membership, profile {}", profile);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn incremental_membership_equals_a_full_recomputation(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

fn view(
    engine: &mut Engine,
    profile: u64,
    name: &str,
    at: DateTime<Utc>,
    seq: i64,
    now: DateTime<Utc>,
) -> Vec<Transition> {
    let event = NewEvent { seq, name: name.into(), at, properties: json!({}).into() };
    engine.apply(vec![Change::Updated { profile, data: None, events: vec![event] }], now)
}

#[test]
fn a_window_expires_on_the_timer_with_time_as_the_cause_and_only_due_profiles_wake() {
    let mut engine = engine_with_definitions();
    let entered = view(&mut engine, 1, "Product Viewed", start(), 1, start());
    assert_eq!(entered.len(), 1);
    assert!(entered[0].entered);
    assert_eq!(entered[0].segment, "browse-abandoners");
    assert_eq!(entered[0].cause, Cause::Events { names: vec!["Product Viewed".into()] });
    view(&mut engine, 2, "Product Viewed", start() + Duration::days(3), 2, start() + Duration::days(3));
    assert_eq!(engine.next_wake(), Some(start() + Duration::days(7)));

    assert!(engine.tick(start() + Duration::days(7) - Duration::milliseconds(1)).is_empty());
    let expired = engine.tick(start() + Duration::days(7));
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!((expired[0].profile, expired[0].entered, &expired[0].cause), (1, false, &Cause::Time));
    assert!(engine.is_member("browse-abandoners", 2));
    assert_eq!(engine.next_wake(), Some(start() + Duration::days(10)));
}

#[test]
fn a_late_event_counts_where_it_happened_and_an_old_one_changes_nothing() {
    let mut engine = engine_with_definitions();
    let now = start() + Duration::days(30);
    // Viewed 8 days ago: outside the 7-day window even though it arrives now.
    assert!(view(&mut engine, 1, "Product Viewed", now - Duration::days(8), 1, now).is_empty());
    assert!(!engine.is_member("browse-abandoners", 1));
    // Viewed 6 days ago: in, and out one day later.
    assert_eq!(view(&mut engine, 1, "Product Viewed", now - Duration::days(6), 2, now).len(), 1);
    assert_eq!(engine.next_wake(), Some(now + Duration::days(1)));
    // A late order inside the window takes them out again.
    let left = view(&mut engine, 1, "Order Completed", now - Duration::days(5), 3, now);
    assert_eq!(left.len(), 1);
    assert!(!left[0].entered);
}

#[test]
fn merging_two_profiles_in_different_segments() {
    let mut engine = engine_with_definitions();
    let now = start();
    view(&mut engine, 1, "Order Completed", now - Duration::days(200), 1, now);
    view(&mut engine, 2, "Order Completed", now - Duration::days(90), 2, now);
    assert!(engine.is_member("lapsed", 2) && !engine.is_member("lapsed", 1));
    assert!(!engine.is_member("repeat", 1) && !engine.is_member("repeat", 2));
    let transitions = engine.apply(vec![Change::Merged { from: 2, into: 1 }], now);
    let mut summary: Vec<(u64, &str, bool, Cause)> =
        transitions.iter().map(|t| (t.profile, t.segment.as_str(), t.entered, t.cause.clone())).collect();
    summary.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    assert_eq!(
        summary,
        vec![
            (1, "lapsed", true, Cause::Merged { from: vec![2] }),
            (1, "repeat", true, Cause::Merged { from: vec![2] }),
            (2, "lapsed", false, Cause::MergedInto { into: 1 }),
        ]
    );
    assert_eq!(engine.member_count("lapsed"), Some(1));
}

#[test]
fn definitions_that_read_new_data_ask_for_a_reload_and_cycles_are_named() {
    let mut engine = Engine::new();
    let d = |id: i64, name: &str, text: &str| SegmentDefinition {
        id,
        name: name.into(),
        condition: parse(text).expect("definition"),
    };
    engine.widen(&parse(r#"event "Page""#).expect("definition"));
    engine.upsert(d(1, "pages", r#"event "Page""#), start()).expect("covered");
    let needs = engine.upsert(d(2, "orders", r#"event "Order Completed""#), start());
    assert_eq!(needs, Err(kizuna_segments::engine::EngineError::NeedsReload));
    engine.upsert(d(3, "a", r#"in segment "pages""#), start()).expect("no cycle");
    let cycle = engine.upsert(d(1, "pages", r#"in segment "a""#), start());
    assert!(matches!(cycle, Err(kizuna_segments::engine::EngineError::Definition(_))), "{cycle:?}");
    assert!(engine.remove("pages").is_err(), "segment a refers to it");
}
