//! Evaluation of definitions against profiles under an explicit "now", and the next-change instant.

use chrono::{DateTime, Duration, TimeZone, Utc};
use kizuna_segments::ast::*;
use kizuna_segments::evaluate;
use proptest::prelude::*;
use serde_json::json;

mod common;
use common::Person;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).single().expect("time")
}

fn days(n: u32) -> Span {
    Span::new(n, SpanUnit::Days)
}

fn has_done(name: &str, filters: Vec<PropertyFilter>, window: Window) -> Condition {
    Condition::Event(EventCondition {
        matches: EventMatch { name: name.into(), filters },
        window,
        measure: Measure::Count,
        comparison: Comparison::Gte(1.0),
    })
}

fn attr(path: &str, comparison: Comparison) -> Condition {
    Condition::Attribute(AttributeCondition { path: path.into(), comparison })
}

fn no_segments(_: &str) -> bool {
    false
}

#[test]
fn viewed_shoes_in_the_last_7_days_and_did_not_order_expires_exactly_when_the_view_leaves_the_window() {
    let shoes = vec![PropertyFilter { path: "category".into(), comparison: Comparison::Equals(json!("shoes")) }];
    let definition = Condition::And(vec![
        has_done("Product Viewed", shoes, Window::Last(days(7))),
        Condition::Not(Box::new(has_done("Order Completed", vec![], Window::Last(days(7))))),
    ]);
    let viewed = now() - Duration::days(2);
    let person = Person::default().did("Product Viewed", viewed, json!({"category": "shoes"}));
    let result = evaluate(&definition, &person, now(), &no_segments);
    assert!(result.member);
    assert_eq!(result.next_change, Some(viewed + Duration::days(7)));
    assert!(!evaluate(&definition, &person, viewed + Duration::days(7), &no_segments).member);
    assert!(evaluate(&definition, &person, viewed + Duration::days(7) - Duration::seconds(1), &no_segments).member);

    let other_category = Person::default().did("Product Viewed", viewed, json!({"category": "bags"}));
    assert!(!evaluate(&definition, &other_category, now(), &no_segments).member);
    let ordered = person.did("Order Completed", now() - Duration::days(1), json!({}));
    assert!(!evaluate(&definition, &ordered, now(), &no_segments).member);
}

#[test]
fn two_orders_the_last_one_60_to_120_days_ago() {
    let definition = Condition::And(vec![
        attr("computed.orders_count", Comparison::Gte(2.0)),
        Condition::Event(EventCondition {
            matches: EventMatch { name: "Order Completed".into(), filters: vec![] },
            window: Window::Ever,
            measure: Measure::Last,
            comparison: Comparison::BetweenAgo(days(60), days(120)),
        }),
    ]);
    let last = now() - Duration::days(90);
    let person = Person::default()
        .with("computed.orders_count", json!(2))
        .did("Order Completed", now() - Duration::days(200), json!({}))
        .did("Order Completed", last, json!({}));
    let result = evaluate(&definition, &person, now(), &no_segments);
    assert!(result.member);
    assert_eq!(result.next_change, Some(last + Duration::days(120) + Duration::milliseconds(1)));
    assert!(!evaluate(&definition, &person, last + Duration::days(121), &no_segments).member);
    assert!(!evaluate(&definition, &person, last + Duration::days(59), &no_segments).member);
    let one_order = Person::default().with("computed.orders_count", json!("1")).did("Order Completed", last, json!({}));
    assert!(!evaluate(&definition, &one_order, now(), &no_segments).member, "numbers in strings compare as numbers");
}

#[test]
fn vip_in_tokyo_who_accepts_line_and_missing_attributes_fail_comparisons() {
    let definition = Condition::And(vec![
        attr("traits.vip", Comparison::Equals(json!(true))),
        attr("computed.city", Comparison::Equals(json!("Tokyo"))),
        Condition::Consent(ConsentCondition { channel: "line".into(), purpose: "marketing".into() }),
        Condition::HasIdentifier("line_user_id".into()),
    ]);
    let mut person = Person::default().with("traits.vip", json!(true)).with("computed.city", json!("Tokyo"));
    person.identifiers.insert("line_user_id".into());
    assert!(!evaluate(&definition, &person, now(), &no_segments).member, "no LINE consent yet");
    person.consent.insert(("line".into(), "marketing".into()));
    let result = evaluate(&definition, &person, now(), &no_segments);
    assert!(result.member);
    assert_eq!(result.next_change, None, "nothing here depends on time");

    let nobody = Person::default();
    assert!(
        !evaluate(&attr("computed.city", Comparison::NotEquals(json!("Tokyo"))), &nobody, now(), &no_segments).member
    );
    let not_tokyo = Condition::Not(Box::new(attr("computed.city", Comparison::Equals(json!("Tokyo")))));
    assert!(evaluate(&not_tokyo, &nobody, now(), &no_segments).member);
    let tags = Person::default().with("traits.tags", json!(["vip", "wholesale"]));
    assert!(evaluate(&attr("traits.tags", Comparison::Equals(json!("vip"))), &tags, now(), &no_segments).member);
    assert!(
        evaluate(&attr("traits.tags", Comparison::Contains(json!("wholesale"))), &tags, now(), &no_segments).member
    );
    let options = Comparison::In(vec![json!("JP"), json!("KR")]);
    let jp = Person::default().with("computed.country", json!("JP"));
    assert!(evaluate(&attr("computed.country", options), &jp, now(), &no_segments).member);
}

#[test]
fn cart_abandonment_holds_once_the_wait_passes_without_an_order() {
    let definition = Condition::Sequence(SequenceCondition {
        first: EventMatch { name: "Product Added".into(), filters: vec![] },
        then_not: EventMatch { name: "Order Completed".into(), filters: vec![] },
        within: Span::new(1, SpanUnit::Hours),
        window: Window::Last(days(1)),
    });
    let added = now() - Duration::minutes(20);
    let pending = Person::default().did("Product Added", added, json!({"product_id": "p1"}));
    let result = evaluate(&definition, &pending, now(), &no_segments);
    assert!(!result.member, "still inside the hour");
    assert_eq!(result.next_change, Some(added + Duration::hours(1)));
    let later = evaluate(&definition, &pending, added + Duration::hours(1), &no_segments);
    assert!(later.member, "an hour passed without an order");
    assert_eq!(later.next_change, Some(added + Duration::days(1)), "then the cart leaves the 1-day window");
    assert!(!evaluate(&definition, &pending, added + Duration::days(1), &no_segments).member);

    let bought = pending.did("Order Completed", added + Duration::minutes(30), json!({}));
    assert!(!evaluate(&definition, &bought, added + Duration::hours(2), &no_segments).member);
    let bought_late = Person::default().did("Product Added", added, json!({})).did(
        "Order Completed",
        added + Duration::hours(2),
        json!({}),
    );
    assert!(evaluate(&definition, &bought_late, added + Duration::hours(3), &no_segments).member, "too late to count");
}

#[test]
fn birthdays_aggregates_geography_and_other_segments() {
    let soon = attr("traits.birthday", Comparison::AnniversaryWithin(days(7)));
    let birthday = |date: &str| Person::default().with("traits.birthday", json!(date));
    assert!(evaluate(&soon, &birthday("1990-11-25"), now(), &no_segments).member);
    assert!(evaluate(&soon, &birthday("1990-11-23"), now(), &no_segments).member, "today counts");
    assert!(!evaluate(&soon, &birthday("1990-11-30"), now(), &no_segments).member, "7 days away is outside 7d");
    assert!(!evaluate(&soon, &birthday("1990-11-22"), now(), &no_segments).member, "yesterday's is a year away");
    let new_year = Utc.with_ymd_and_hms(2026, 12, 29, 0, 0, 0).single().expect("time");
    assert!(evaluate(&soon, &birthday("2000-01-02"), new_year, &no_segments).member, "across the new year");
    let leap_eve = Utc.with_ymd_and_hms(2027, 2, 27, 0, 0, 0).single().expect("time");
    assert!(
        evaluate(
            &attr("traits.birthday", Comparison::AnniversaryWithin(days(2))),
            &birthday("2000-02-29"),
            leap_eve,
            &no_segments
        )
        .member
    );

    let spend = |measure: Measure, comparison: Comparison| {
        Condition::Event(EventCondition {
            matches: EventMatch { name: "Order Completed".into(), filters: vec![] },
            window: Window::Last(days(90)),
            measure,
            comparison,
        })
    };
    let buyer = Person::default()
        .did(
            "Order Completed",
            now() - Duration::days(10),
            json!({"total": 120, "products": [{"price": 70}, {"price": 50}]}),
        )
        .did("Order Completed", now() - Duration::days(40), json!({"total": "30.5", "products": [{"price": 30.5}]}))
        .did("Order Completed", now() - Duration::days(100), json!({"total": 1000}));
    let check = |c: Condition| evaluate(&c, &buyer, now(), &no_segments).member;
    assert!(check(spend(Measure::Sum("total".into()), Comparison::Between(150.5, 150.5))));
    assert!(check(spend(Measure::Avg("total".into()), Comparison::Equals(json!(75.25)))));
    assert!(check(spend(Measure::Min("products.price".into()), Comparison::Equals(json!(30.5)))));
    assert!(check(spend(Measure::Max("products.price".into()), Comparison::Gt(69.0))));
    assert!(check(spend(Measure::Count, Comparison::Equals(json!(2)))));
    assert!(!check(spend(Measure::Avg("missing".into()), Comparison::Gte(0.0))), "no values: no average");
    let by_product = has_done(
        "Order Completed",
        vec![PropertyFilter { path: "products.price".into(), comparison: Comparison::Gte(60.0) }],
        Window::Last(days(30)),
    );
    assert!(check(by_product), "a filter through a list matches any element");

    let shinjuku = Person { coordinates: Some((35.6938, 139.7034)), ..Person::default() };
    let near_tokyo_station = Condition::Near(NearCondition { lat: 35.6812, lon: 139.7671, km: 10.0 });
    assert!(evaluate(&near_tokyo_station, &shinjuku, now(), &no_segments).member);
    let osaka = Person { coordinates: Some((34.6937, 135.5023)), ..Person::default() };
    assert!(!evaluate(&near_tokyo_station, &osaka, now(), &no_segments).member);
    assert!(!evaluate(&near_tokyo_station, &Person::default(), now(), &no_segments).member);

    let member_of_vip = Condition::InSegment("vip".into());
    assert!(evaluate(&member_of_vip, &Person::default(), now(), &|name| name == "vip").member);
}

#[test]
fn future_events_count_only_once_their_time_comes() {
    let definition = has_done("Product Viewed", vec![], Window::Last(days(7)));
    let ahead = now() + Duration::hours(2);
    let person = Person::default().did("Product Viewed", ahead, json!({}));
    let result = evaluate(&definition, &person, now(), &no_segments);
    assert!(!result.member);
    assert_eq!(result.next_change, Some(ahead));
    assert!(evaluate(&definition, &person, ahead, &no_segments).member);
}

fn arbitrary_condition() -> impl Strategy<Value = Condition> {
    let span = (1u32..72, prop_oneof![Just(SpanUnit::Hours), Just(SpanUnit::Days)]).prop_map(|(n, u)| Span::new(n, u));
    let window = prop_oneof![
        Just(Window::Ever),
        span.clone().prop_map(Window::Last),
        (span.clone(), span.clone()).prop_map(|(a, b)| {
            if a.duration() <= b.duration() { Window::BetweenAgo(a, b) } else { Window::BetweenAgo(b, a) }
        }),
    ];
    let name = prop_oneof![Just("A".to_owned()), Just("B".to_owned())];
    let leaf = prop_oneof![
        (name.clone(), window.clone(), 1u32..3).prop_map(|(name, window, k)| Condition::Event(EventCondition {
            matches: EventMatch { name, filters: vec![] },
            window,
            measure: Measure::Count,
            comparison: Comparison::Gte(f64::from(k)),
        })),
        (name.clone(), window.clone(), span.clone()).prop_map(|(name, window, span)| Condition::Event(
            EventCondition {
                matches: EventMatch { name, filters: vec![] },
                window,
                measure: Measure::Last,
                comparison: Comparison::WithinLast(span),
            }
        )),
        (span.clone(), window).prop_map(|(within, window)| Condition::Sequence(SequenceCondition {
            first: EventMatch { name: "A".into(), filters: vec![] },
            then_not: EventMatch { name: "B".into(), filters: vec![] },
            within,
            window,
        })),
        span.prop_map(|s| attr("traits.seen_at", Comparison::MoreThanAgo(s))),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(Condition::And),
            prop::collection::vec(inner.clone(), 1..3).prop_map(Condition::Or),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

proptest! {
    /// Nothing changes before the reported next change: a scheduler that wakes the profile then misses nothing.
    #[test]
    fn membership_is_constant_until_the_next_change(
        condition in arbitrary_condition(),
        events in prop::collection::vec((prop_oneof![Just("A"), Just("B")], 0i64..(20 * 24 * 60)), 0..8),
        probes in prop::collection::vec(0.0f64..1.0, 1..6),
    ) {
        let start = now() - Duration::days(10);
        let mut person = Person::default().with("traits.seen_at", json!((start + Duration::days(3)).to_rfc3339()));
        for (name, minute) in &events {
            person = person.did(name, start + Duration::minutes(*minute), json!({}));
        }
        let mut t = now();
        for _ in 0..4 {
            let result = evaluate(&condition, &person, t, &no_segments);
            let horizon = result.next_change.unwrap_or(t + Duration::days(40));
            prop_assert!(horizon > t);
            for p in &probes {
                let span_ms = (horizon - t).num_milliseconds() - 1;
                let probe = t + Duration::milliseconds((span_ms as f64 * p) as i64);
                prop_assert_eq!(evaluate(&condition, &person, probe, &no_segments).member, result.member,
                    "changed at {} before the reported next change {:?} (evaluated at {})", probe, result.next_change, t);
            }
            match result.next_change { Some(next) => t = next, None => break }
        }
    }
}

#[test]
fn a_date_in_an_event_filter_reports_when_it_leaves_its_window() {
    // "Started a trial that ended in the last 14 days", or a Tokyo resident: the trial answers now and stops
    // answering when its end date is 14 days old; a settled "no" from the city must not hide that.
    let ended = now() - Duration::days(3);
    let recent_end = vec![PropertyFilter { path: "ends_at".into(), comparison: Comparison::WithinLast(days(14)) }];
    let definition = Condition::Or(vec![
        has_done("Trial Started", recent_end, Window::Ever),
        attr("traits.city", Comparison::Equals(json!("Tokyo"))),
    ]);
    let person = Person::default().with("traits.city", json!("Osaka")).did(
        "Trial Started",
        now() - Duration::days(20),
        json!({"ends_at": ended.to_rfc3339()}),
    );
    let result = evaluate(&definition, &person, now(), &no_segments);
    assert!(result.member);
    let flips = ended + Duration::days(14) + Duration::milliseconds(1);
    assert_eq!(result.next_change, Some(flips));
    assert!(!evaluate(&definition, &person, flips, &no_segments).member);
}
