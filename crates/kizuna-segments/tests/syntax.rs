//! The text syntax: parse / print round trips, the JSON form, error positions, and validation.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use kizuna_segments::*;
use proptest::prelude::*;
use serde_json::{Value, json};

#[track_caller]
fn parsed(text: &str) -> Condition {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

/// `text` is canonical: it parses, prints back as itself, and the JSON form round-trips too.
#[track_caller]
fn canonical(text: &str) -> Condition {
    let c = parsed(text);
    assert_eq!(print(&c), text);
    let json = serde_json::to_string(&c).expect("serialises");
    assert_eq!(serde_json::from_str::<Condition>(&json).expect("deserialises"), c, "JSON round trip of {json}");
    c
}

/// `text` parses and prints as `expected` (which is canonical).
#[track_caller]
fn normalises(text: &str, expected: &str) {
    let c = parsed(text);
    assert_eq!(print(&c), expected, "printing the parse of {text:?}");
    assert_eq!(parsed(expected), c);
}

#[track_caller]
fn error(text: &str) -> ParseError {
    match parse(text) {
        Ok(c) => panic!("{text:?} should not parse, got {c:?}"),
        Err(e) => e,
    }
}

/// The error is at `line:column` and its message contains every fragment.
#[track_caller]
fn error_at(text: &str, line: usize, column: usize, fragments: &[&str]) {
    let e = error(text);
    assert_eq!((e.line, e.column), (line, column), "position of {e} in {text:?}");
    for fragment in fragments {
        assert!(e.message.contains(fragment), "{e} should contain {fragment:?} (in {text:?})");
    }
}

fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().expect("valid date")
}

fn days(n: u32) -> Span {
    Span::new(n, SpanUnit::Days)
}

fn has_done(name: &str, window: Window) -> Condition {
    Condition::Event(EventCondition {
        matches: EventMatch { name: name.into(), filters: vec![] },
        window,
        measure: Measure::Count,
        comparison: Comparison::Gte(1.0),
    })
}

// ---------------------------------------------------------------------------------------------------------
// The examples

#[test]
fn viewed_shoes_in_the_last_7_days_and_did_not_order() {
    let c = canonical(
        "event \"Product Viewed\" where category = \"shoes\" in last 7d and not event \"Order Completed\" in last 7d",
    );
    let Condition::And(items) = &c else { panic!("an and: {c:?}") };
    assert_eq!(items.len(), 2);
    assert_eq!(items[1], Condition::Not(Box::new(has_done("Order Completed", Window::Last(days(7))))));
    normalises(
        "EVENT \"Product Viewed\"\n  WHERE category = \"shoes\"\n  IN LAST 7 days   # browsed\nAND NOT event \"Order Completed\" in last 1 week",
        "event \"Product Viewed\" where category = \"shoes\" in last 7d and not event \"Order Completed\" in last 1w",
    );
}

#[test]
fn two_plus_orders_the_last_one_60_to_120_days_ago() {
    let c = canonical(
        "count of event \"Order Completed\" >= 2 and last of event \"Order Completed\" between 60d and 120d ago",
    );
    let Condition::And(items) = &c else { panic!("an and: {c:?}") };
    let Condition::Event(last) = &items[1] else { panic!("an event") };
    assert_eq!(last.window, Window::Ever);
    assert_eq!(last.measure, Measure::Last);
    assert_eq!(last.comparison, Comparison::BetweenAgo(days(60), days(120)));
    check(&c).expect("valid");
    // "between 60 and 120 days ago" reads naturally too.
    normalises(
        "count of event \"Order Completed\" >= 2 and last of event \"Order Completed\" between 60 and 120 days ago",
        "count of event \"Order Completed\" >= 2 and last of event \"Order Completed\" between 60d and 120d ago",
    );
}

#[test]
fn vip_in_tokyo_who_accepts_line() {
    let c = canonical("traits.vip = true and computed.city = \"Tokyo\" and consent line for marketing");
    assert_eq!(
        c,
        Condition::And(vec![
            Condition::Attribute(AttributeCondition {
                path: "traits.vip".into(),
                comparison: Comparison::Equals(json!(true))
            }),
            Condition::Attribute(AttributeCondition {
                path: "computed.city".into(),
                comparison: Comparison::Equals(json!("Tokyo"))
            }),
            Condition::Consent(ConsentCondition { channel: "line".into(), purpose: "marketing".into() }),
        ])
    );
    normalises(
        "traits.vip = TRUE AND computed.city == \"Tokyo\" and consent \"line\" for \"marketing\"",
        "traits.vip = true and computed.city = \"Tokyo\" and consent line for marketing",
    );
}

#[test]
fn cart_abandonment() {
    let c = canonical(
        "did \"Product Added\" where price >= 50 then not \"Order Completed\" within 1h in last 7d and consent email for marketing",
    );
    let Condition::And(items) = &c else { panic!("an and") };
    assert_eq!(
        items[0],
        Condition::Sequence(SequenceCondition {
            first: EventMatch {
                name: "Product Added".into(),
                filters: vec![PropertyFilter { path: "price".into(), comparison: Comparison::Gte(50.0) }],
            },
            then_not: EventMatch { name: "Order Completed".into(), filters: vec![] },
            within: Span::new(1, SpanUnit::Hours),
            window: Window::Last(days(7)),
        })
    );
    normalises(
        "did \"Checkout Started\" then not \"Order Completed\" within 30 minutes",
        "did \"Checkout Started\" then not \"Order Completed\" within 30m",
    );
}

#[test]
fn birthday_near_and_membership() {
    canonical("traits.birthday anniversary within 7d and has line_user_id");
    let near = canonical("near 35.6812, 139.7671 within 5 km");
    assert_eq!(near, Condition::Near(NearCondition { lat: 35.6812, lon: 139.7671, km: 5.0 }));
    normalises("near -33.87,151.21 within 2.5km", "near -33.87, 151.21 within 2.5 km");
    let membership = canonical("in segment \"vip\" and not in segment \"churned\"");
    assert_eq!(membership.referenced_segments(), vec!["vip", "churned"]);
}

#[test]
fn every_comparison() {
    for text in [
        "traits.vip = true",
        "traits.vip != false",
        "computed.orders_count >= 2",
        "computed.orders_count > 2.5",
        "computed.orders_count < -1",
        "computed.orders_count <= 1e20",
        "computed.ltv between 100 and 500.5",
        "computed.city = \"Tokyo\"",
        "traits.email exists",
        "traits.name contains \"an\"",
        "traits.tags contains [\"a\", 1]",
        "traits.name starts with \"Ta\"",
        "computed.country in (\"JP\", \"KR\")",
        "computed.country in ()",
        "traits.meta = {\"a\": [1, 2.0, null], \"b\": {}}",
        "traits.score = 2.0",
        "traits.score = -7",
        "traits.score = 18446744073709551615",
        "traits.score = null",
        "traits.signup_at before 2026-01-01",
        "traits.signup_at after 2026-01-01T09:00:00Z",
        "traits.signup_at after 2026-01-01T09:00:00.250Z",
        "computed.last_order_at within last 7d",
        "computed.last_order_at more than 90d ago",
        "computed.last_order_at between 60d and 120d ago",
        "traits.birthday anniversary within 2w",
        "traits.\"first name\" = \"Taro\"",
        "computed.address.city = \"Osaka\"",
        "traits.a.\"\".b exists",
        "\"profile\".x exists",
        "\"traits\" exists",
        "traits.名前 = \"太郎\"",
        "traits.x = \"quote \\\" backslash \\\\ newline \\n tab \\t nul \\u0000 emoji 🍣\"",
    ] {
        canonical(text);
    }
    // Values keep integer and float apart, f64s come back as written.
    assert_eq!(parsed("traits.x = 2"), parsed("traits.x = 2"));
    assert_ne!(parsed("traits.x = 2"), parsed("traits.x = 2.0"));
    normalises("traits.x >= 2.0", "traits.x >= 2");
    normalises("traits.x > 0.1e1", "traits.x > 1");
    normalises("traits.signup_at before 2026-01-01T00:00:00+09:00", "traits.signup_at before 2025-12-31T15:00:00Z");
    normalises("traits.signup_at before 2026-01-01T00:00:00Z", "traits.signup_at before 2026-01-01");
    assert_eq!(
        parsed("traits.signup_at before 2026-01-01"),
        Condition::Attribute(AttributeCondition {
            path: "traits.signup_at".into(),
            comparison: Comparison::Before(day(2026, 1, 1))
        })
    );
    normalises("traits.signup_at before \"2026-01-01\"", "traits.signup_at before 2026-01-01");
    normalises("traits.x = \"\\u00e9\\ud83c\\udf63\\/\"", "traits.x = \"é🍣/\"");
    normalises("TRAITS.vip EXISTS", "traits.vip exists");
    normalises("computed.last_order_at within the last 30 days", "computed.last_order_at within last 30d");
    normalises("event \"Product Viewed\" in the last 2 weeks", "event \"Product Viewed\" in last 2w");
    normalises("traits.name STARTS WITH \"Ta\"", "traits.name starts with \"Ta\"");
}

#[test]
fn spans_long_and_compact() {
    for (text, span) in [
        ("30m", Span::new(30, SpanUnit::Minutes)),
        ("30 minutes", Span::new(30, SpanUnit::Minutes)),
        ("1 minute", Span::new(1, SpanUnit::Minutes)),
        ("24h", Span::new(24, SpanUnit::Hours)),
        ("1 hour", Span::new(1, SpanUnit::Hours)),
        ("7d", days(7)),
        ("7 days", days(7)),
        ("1 DAY", days(1)),
        ("2w", Span::new(2, SpanUnit::Weeks)),
        ("2 weeks", Span::new(2, SpanUnit::Weeks)),
        ("1 week", Span::new(1, SpanUnit::Weeks)),
    ] {
        let c = parsed(&format!("computed.t within last {text}"));
        assert_eq!(
            c,
            Condition::Attribute(AttributeCondition {
                path: "computed.t".into(),
                comparison: Comparison::WithinLast(span)
            }),
            "{text}"
        );
        assert_eq!(print(&c), format!("computed.t within last {span}"));
    }
}

#[test]
fn events() {
    for text in [
        "count of event \"Order Completed\" in last 90d >= 2",
        "sum total of event \"Order Completed\" in last 30d > 100",
        "avg products.price of event \"Order Completed\" < 20",
        "min \"unit price\" of event \"Order Completed\" = 3",
        "max total of event \"Order Completed\" between 10 and 20",
        "last of event \"Order Completed\" more than 90d ago",
        "first of event \"Order Completed\" before 2025-01-01",
        "event \"Product Viewed\" where category = \"shoes\", price >= 50 in last 7d",
        "not event \"Order Completed\" in last 7d",
        "event \"Order Completed\"",
        "event \"page\" where path starts with \"/sale\" between 7d and 14d ago",
        "event \"Order Completed\" from 2026-01-01 to 2026-02-01",
        "count of event \"Order Completed\" between 7d and 14d ago >= 1.5",
        "count of event \"Order Completed\" between 7d and 14d ago between 2 and 5",
        "last of event \"Order Completed\" between 7d and 14d ago between 60d and 120d ago",
        "count of event \"Order Completed\" where country in (\"JP\") in last 7d = 0",
        "count of event \"Order Completed\" in (1, 2)",
    ] {
        canonical(text);
    }
    // "has done" is count >= 1 and prints short.
    assert_eq!(parsed("event \"Product Viewed\" in last 7d"), has_done("Product Viewed", Window::Last(days(7))));
    normalises("count of event \"X\" in last 7d >= 1", "event \"X\" in last 7d");
    normalises("event page", "event \"page\"");
    let c = parsed("count of event \"Order Completed\" between 7d and 14d ago between 2 and 5");
    let Condition::Event(e) = c else { panic!("event") };
    assert_eq!(e.window, Window::BetweenAgo(days(7), days(14)));
    assert_eq!(e.comparison, Comparison::Between(2.0, 5.0));
    let Condition::Event(e) = parsed("max total of event \"Order Completed\" between 10 and 20") else { panic!() };
    assert_eq!((e.window, e.comparison), (Window::Ever, Comparison::Between(10.0, 20.0)));
}

#[test]
fn and_or_not_nesting() {
    let a = || parsed("traits.a exists");
    let b = || parsed("traits.b exists");
    let c = || parsed("traits.c exists");
    assert_eq!(parsed("traits.a exists and traits.b exists and traits.c exists"), Condition::And(vec![a(), b(), c()]));
    assert_eq!(
        parsed("traits.a exists or traits.b exists and traits.c exists"),
        Condition::Or(vec![a(), Condition::And(vec![b(), c()])])
    );
    assert_eq!(
        parsed("(traits.a exists or traits.b exists) and traits.c exists"),
        Condition::And(vec![Condition::Or(vec![a(), b()]), c()])
    );
    assert_eq!(
        parsed("not traits.a exists and traits.b exists"),
        Condition::And(vec![Condition::Not(Box::new(a())), b()])
    );
    assert_eq!(parsed("((traits.a exists))"), a());
    // Parentheses keep a nested chain a node of its own.
    let nested = Condition::And(vec![Condition::And(vec![a(), b()]), c()]);
    assert_eq!(print(&nested), "(traits.a exists and traits.b exists) and traits.c exists");
    assert_eq!(parsed(&print(&nested)), nested);
    canonical("traits.a exists and traits.b exists or traits.c exists");
    canonical("not (traits.a exists or traits.b exists)");
    canonical("not not traits.a exists");
    canonical("(traits.a exists or traits.b exists) or traits.c exists");
    // Empty and one-element lists.
    assert_eq!(canonical("all()"), Condition::And(vec![]));
    assert_eq!(canonical("any()"), Condition::Or(vec![]));
    assert_eq!(canonical("all(traits.a exists)"), Condition::And(vec![a()]));
    assert_eq!(
        canonical("any(traits.a exists and traits.b exists)"),
        Condition::Or(vec![Condition::And(vec![a(), b()])])
    );
    canonical("not all() or any()");
}

#[test]
fn comments_and_layout() {
    normalises(
        "# VIPs\n\ttraits.vip = true # flagged by CS\n\n  and # and\n computed.orders_count >= 2 #",
        "traits.vip = true and computed.orders_count >= 2",
    );
    normalises("traits.x = \"# not a comment\"", "traits.x = \"# not a comment\"");
}

#[test]
fn pretty_printing_breaks_long_chains() {
    let c = parsed(
        "traits.vip = true and (computed.city = \"Tokyo\" or computed.city = \"Osaka\") and not (event \"Order Completed\" in last 7d or event \"Refund Requested\" in last 30d)",
    );
    let pretty = print_pretty(&c, 60);
    assert_eq!(
        pretty,
        "traits.vip = true\nand (computed.city = \"Tokyo\" or computed.city = \"Osaka\")\nand not (\n    event \"Order Completed\" in last 7d\n    or event \"Refund Requested\" in last 30d\n)"
    );
    assert_eq!(parsed(&pretty), c);
    assert_eq!(print_pretty(&c, 1000), print(&c));
}

// ---------------------------------------------------------------------------------------------------------
// The JSON form

#[test]
fn json_form_of_parsed_definitions() {
    let c = parsed(
        "computed.orders_count >= 2 and event \"Product Viewed\" where category = \"shoes\" in last 7d and not event \"Order Completed\" in last 7d",
    );
    assert_eq!(
        serde_json::to_value(&c).expect("serialises"),
        json!({"and": [
            {"attribute": {"path": "computed.orders_count", "op": "gte", "value": 2.0}},
            {"event": {"name": "Product Viewed", "where": [{"path": "category", "op": "equals", "value": "shoes"}],
                       "window": {"last": "7d"}, "measure": "count", "op": "gte", "value": 1.0}},
            {"not": {"event": {"name": "Order Completed", "window": {"last": "7d"}, "measure": "count", "op": "gte",
                               "value": 1.0}}}
        ]})
    );

    let c = parsed(
        "sum total of event \"Order Completed\" between 7d and 14d ago > 100 or last of event \"Order Completed\" between 60d and 120d ago",
    );
    assert_eq!(
        serde_json::to_value(&c).expect("serialises"),
        json!({"or": [
            {"event": {"name": "Order Completed", "window": {"between_ago": ["7d", "14d"]}, "measure": {"sum": "total"},
                       "op": "gt", "value": 100.0}},
            {"event": {"name": "Order Completed", "window": "ever", "measure": "last", "op": "between_ago",
                       "value": ["60d", "120d"]}}
        ]})
    );

    let c = parsed(
        "did \"Product Added\" then not \"Order Completed\" within 1h from 2026-01-01 to 2026-02-01T12:00:00Z and consent line for marketing and has email and near 35.68, 139.76 within 5 km and in segment \"vip\" and traits.email exists and computed.country in (\"JP\", 81) and traits.birthday anniversary within 7d",
    );
    assert_eq!(
        serde_json::to_value(&c).expect("serialises"),
        json!({"and": [
            {"sequence": {"first": {"name": "Product Added"}, "then_not": {"name": "Order Completed"}, "within": "1h",
                          "window": {"range": ["2026-01-01T00:00:00Z", "2026-02-01T12:00:00Z"]}}},
            {"consent": {"channel": "line", "purpose": "marketing"}},
            {"has_identifier": "email"},
            {"near": {"lat": 35.68, "lon": 139.76, "km": 5.0}},
            {"in_segment": "vip"},
            {"attribute": {"path": "traits.email", "op": "exists"}},
            {"attribute": {"path": "computed.country", "op": "in", "value": ["JP", 81]}},
            {"attribute": {"path": "traits.birthday", "op": "anniversary_within", "value": "7d"}}
        ]})
    );
    // And back: the JSON form deserialises (integers where f64s are expected too) to the same tree.
    let from = from_json(&json!({"and": [
        {"attribute": {"path": "computed.orders_count", "op": "gte", "value": 2}},
        {"event": {"name": "Product Viewed", "window": {"last": "7d"}, "measure": "count", "op": "gte", "value": 1}}
    ]}))
    .expect("valid");
    assert_eq!(print(&from), "computed.orders_count >= 2 and event \"Product Viewed\" in last 7d");
    assert_eq!(parsed(&print(&from)), from);
    assert_eq!(from_json(&json!({"and": []})), Ok(Condition::And(vec![])));
}

#[test]
fn json_errors_point_into_the_definition() {
    let e = from_json(&json!({"and": [
        {"attribute": {"path": "traits.vip", "op": "equals", "value": true}},
        {"event": {"name": "X", "where": [{"path": "a", "op": "equals", "value": 1}, {"path": "b", "op": "bigger"}],
                   "measure": "count", "op": "gte", "value": 1}}
    ]}))
    .expect_err("bad op");
    let DefinitionError::Json { path, reason } = &e else { panic!("{e:?}") };
    assert_eq!(path, "/and/1/event/where/1");
    assert!(reason.contains("bigger"), "{reason}");
    assert!(e.to_string().starts_with("invalid definition JSON at /and/1/event/where/1: "), "{e}");

    let e = from_json(&json!({"not": {"event": {"name": "X", "window": {"last": "7x"}, "measure": "count", "op": "gte", "value": 1}}}))
        .expect_err("bad span");
    let DefinitionError::Json { path, reason } = &e else { panic!("{e:?}") };
    assert_eq!(path, "/not/event/window");
    assert!(reason.contains("7x"), "{reason}");

    let e = from_json(&json!({"attribute": {"op": "exists"}})).expect_err("no path");
    let DefinitionError::Json { path, reason } = &e else { panic!("{e:?}") };
    assert_eq!(path, "/attribute");
    assert!(reason.contains("path"), "{reason}");

    let e = from_json(&json!("everyone")).expect_err("not an object");
    assert!(matches!(&e, DefinitionError::Json { path, .. } if path == "/"), "{e:?}");

    // Deserialises, but does not check.
    let e = from_json(
        &json!({"or": [{"in_segment": "a"}, {"attribute": {"path": "traits.x", "op": "within_last", "value": "0d"}}]}),
    )
    .expect_err("zero span");
    assert_eq!(e.to_string(), "the span 0d must be longer than zero (at /or/1/attribute)");
}

// ---------------------------------------------------------------------------------------------------------
// Errors

#[test]
fn error_positions() {
    error_at(
        "traits.vip foo",
        1,
        12,
        &[
            "expected a comparison (=, !=, >, >=, <, <=, between, contains, starts with, in, exists, before, after, within last, more than … ago, anniversary within) after traits.vip, found \"foo\"",
        ],
    );
    error_at("traits.name = \"abc", 1, 15, &["unterminated string"]);
    error_at("traits.name = \"abc\ntraits.x exists", 1, 15, &["unterminated string"]);
    error_at("computed.x > 1.", 1, 14, &["bad number \"1.\""]);
    error_at("computed.x > 12abc", 1, 14, &["bad number \"12abc\""]);
    error_at("computed.x > 1e999", 1, 14, &["out of range"]);
    error_at(
        "computed.last_order_at within last 7x",
        1,
        36,
        &["unknown span unit \"x\" in \"7x\"", "m (minutes), h (hours), d (days) or w (weeks)"],
    );
    error_at("computed.last_order_at within last 7 fortnights", 1, 38, &["a unit after 7", "found \"fortnights\""]);
    error_at("traits.vip = true traits.x = 1", 1, 19, &["expected and, or or the end, found \"traits\""]);
    error_at("", 1, 1, &["expected a condition", "empty", "found the end"]);
    error_at("  # just a comment\n", 2, 1, &["expected a condition", "found the end"]);
    error_at("(traits.vip = true and traits.x exists", 1, 1, &["this ( is never closed"]);
    error_at("traits.a exists and ((traits.vip = true)", 1, 21, &["this ( is never closed"]);
    error_at(
        "(traits.vip = true traits.x exists)",
        1,
        20,
        &["expected and, or or ) (closing the ( at 1:1), found \"traits\""],
    );
    error_at("traits.vip = true)", 1, 18, &["no ( to close"]);
    error_at("event \"Order Completed\" >= 2", 1, 25, &["a comparison needs a measure, e.g. `count of event …`"]);
    error_at("event \"Order Completed\" between 1 and 2", 1, 25, &["needs a measure"]);
    error_at(
        "count of event \"Order Completed\" in last 7d",
        1,
        44,
        &["expected a comparison for the measure", "found the end"],
    );
    error_at("last of event \"Order Completed\" and traits.x exists", 1, 33, &["a date comparison", "found \"and\""]);
    error_at(
        "traits.vip = true\nand\n  computed.city = Tokyo",
        3,
        19,
        &["a value after =", "double quotes", "found \"Tokyo\""],
    );
    error_at("traits.x = \"a\\qb\"", 1, 14, &["bad escape \\q"]);
    error_at("traits.x = \"\\ud800\"", 1, 13, &["surrogate"]);
    error_at("vip = true", 1, 1, &["expected a condition", "found \"vip\"", "traits. or computed."]);
    error_at("near 35.6, 139.7 within 5 miles", 1, 27, &["km after the distance", "found \"miles\""]);
    error_at("traits.signup_at before 2026-13-01", 1, 25, &["invalid date \"2026-13-01\""]);
    error_at("traits.signup_at before tomorrow", 1, 25, &["expected a date", "found \"tomorrow\""]);
    error_at("did \"A\" then \"B\" within 1h", 1, 14, &["not after then"]);
    error_at("did \"A\" then not \"B\"", 1, 21, &["within SPAN", "found the end"]);
    error_at("computed.country in (\"JP\", \"KR\"", 1, 21, &["this ( is never closed", "\",\" or )"]);
    error_at(
        "computed.country in (\"JP\" \"KR\")",
        1,
        27,
        &["\",\" or ) (closing the ( at 1:21)", "found the text \"KR\""],
    );
    error_at("traits.x between 5d and 7 ago", 1, 25, &["expected a span (as in 120d) after and"]);
    error_at("traits.x between 1 and", 1, 23, &["a number or a span after and", "found the end"]);
    error_at("traits.x within last 99999999999d", 1, 22, &["too large"]);
    error_at("traits.x within last 1.5d", 1, 22, &["whole number"]);
    error_at("traits. = 1", 1, 9, &["a name after \".\"", "found \"=\""]);
    error_at("traits = 1", 1, 8, &["expected . and a name after traits"]);
    error_at("traits.x ! 1", 1, 10, &["unexpected \"!\""]);
    error_at("traits.x = 1 ;", 1, 14, &["unexpected character ';'"]);
    error_at("sum of event \"X\" > 1", 1, 8, &["of after sum of"]);
    error_at("count event \"X\" > 1", 1, 7, &["of after count", "found \"event\""]);
    error_at("traits.x = 1 and", 1, 17, &["expected a condition", "found the end"]);
    error_at("not", 1, 4, &["expected a condition"]);
    error_at("in \"vip\"", 1, 4, &["segment after in"]);
    error_at("traits.x in 1", 1, 13, &["( after in"]);
    error_at("traits.signup = 2026-01-01", 1, 17, &["expected a value after =", "quote it", "found \"2026-01-01\""]);
    error_at("traits.x = [1, 2", 1, 17, &["\",\" or ] (closing the [ at 1:12)"]);
    error_at(&format!("{}traits.x exists{}", "(".repeat(200), ")".repeat(200)), 1, 129, &["nested more than 128"]);
    // Positions count characters, not bytes.
    error_at("traits.名前 = 太郎", 1, 13, &["found \"太郎\""]);
    // The message starts with the position when displayed.
    assert_eq!(error("traits.x =").to_string(), "1:11: expected a value after =, found the end");
}

// ---------------------------------------------------------------------------------------------------------
// Validation

fn definitions(entries: &[(&str, &str)]) -> BTreeMap<String, Condition> {
    entries.iter().map(|(name, text)| (name.to_string(), parsed(text))).collect()
}

#[test]
fn segment_cycles_are_named() {
    let defs = definitions(&[
        ("a", "in segment \"b\" and traits.x exists"),
        ("b", "traits.y exists or in segment \"c\""),
        ("c", "not in segment \"a\""),
        ("d", "in segment \"a\""),
    ]);
    let e = check_definitions(&defs).expect_err("cycle");
    assert_eq!(e, DefinitionError::Cycle { cycle: vec!["a".into(), "b".into(), "c".into(), "a".into()] });
    assert_eq!(e.to_string(), "segment cycle: a → b → c → a");

    let e = check_definitions(&definitions(&[("self", "in segment \"self\"")])).expect_err("self cycle");
    assert_eq!(e.to_string(), "segment cycle: self → self");

    let e = check_definitions(&definitions(&[
        ("x", "traits.a exists"),
        ("y", "in segment \"x\" and in segment \"z\""),
        ("z", "any(in segment \"y\")"),
    ]))
    .expect_err("cycle further in");
    assert_eq!(e.to_string(), "segment cycle: y → z → y");

    // A diamond is not a cycle.
    check_definitions(&definitions(&[
        ("top", "in segment \"left\" and in segment \"right\""),
        ("left", "in segment \"base\""),
        ("right", "in segment \"base\""),
        ("base", "traits.vip = true"),
    ]))
    .expect("a diamond is fine");
}

#[test]
fn unknown_segments_are_named() {
    let e = check_definitions(&definitions(&[("vip", "traits.vip = true"), ("tokyo_vip", "in segment \"vips\"")]))
        .expect_err("unknown");
    assert_eq!(e, DefinitionError::UnknownSegment { segment: "tokyo_vip".into(), unknown: "vips".into() });
    assert_eq!(e.to_string(), "segment \"tokyo_vip\" refers to unknown segment \"vips\"");
    let e = check_definitions(&definitions(&[("bad", "computed.x within last 0d")])).expect_err("invalid");
    assert_eq!(e.to_string(), "segment \"bad\": the span 0d must be longer than zero (at /attribute)");
}

#[test]
fn measures_need_comparisons_of_their_kind() {
    let e = check(&parsed("last of event \"Order Completed\" >= 2")).expect_err("incompatible");
    assert!(matches!(&e, DefinitionError::IncompatibleMeasure { measure, .. } if measure == "last"), "{e:?}");
    assert_eq!(
        e.to_string(),
        "`last` of events needs a date comparison (before, after, within last, more than … ago, between … ago), not `>= 2` (at /event)"
    );
    let e = check(&parsed("traits.x exists and count of event \"X\" within last 7d")).expect_err("incompatible");
    assert_eq!(
        e.to_string(),
        "`count` of events needs a numeric comparison (>, >=, <, <=, between, or = / != a number), not `within last 7d` (at /and/1/event)"
    );
    assert!(check(&parsed("count of event \"X\" = \"two\"")).is_err());
    assert!(check(&parsed("sum total of event \"X\" in (1, 2)")).is_err());
    check(&parsed("count of event \"X\" = 0")).expect("numeric equals");
    check(&parsed("sum total of event \"X\" between 1 and 2")).expect("numeric");
    for ok in [
        "first of event \"X\" before 2026-01-01",
        "first of event \"X\" after 2026-01-01",
        "last of event \"X\" within last 7d",
        "last of event \"X\" more than 7d ago",
        "last of event \"X\" between 7d and 14d ago",
    ] {
        check(&parsed(ok)).expect(ok);
    }
}

#[test]
fn single_definition_checks() {
    for (text, fragment) in [
        ("computed.x within last 0d", "the span 0d must be longer than zero (at /attribute)"),
        ("event \"X\" in last 0h", "longer than zero (at /event/window)"),
        ("did \"A\" then not \"B\" within 0m", "longer than zero (at /sequence)"),
        ("computed.x between 5 and 2", "between 5 and 2: the low end must not be above the high end"),
        ("computed.x between 14d and 7d ago", "the nearer span must come first"),
        ("event \"X\" between 2w and 1w ago", "(at /event/window)"),
        ("event \"X\" from 2026-02-01 to 2026-01-01", "the start must come before the end"),
        ("event \"X\" from 2026-01-01 to 2026-01-01", "is empty"),
        ("near 95, 10 within 5 km", "latitude 95"),
        ("near 35, 190 within 5 km", "longitude 190"),
        ("near 35, 139 within 0 km", "more than 0 km"),
        ("event \"\" in last 7d", "the event name is empty"),
        ("did \"A\" then not \" \" within 1h", "the event name is empty (at /sequence/then_not)"),
        ("event \"X\" where a.\"\".b = 1", "has an empty part (at /event/where/0)"),
        ("event \"X\" where \"\" = 1", "has an empty part"),
        ("sum \"\" of event \"X\" > 1", "needs an event property, as in sum total (at /event/measure)"),
        ("\"profile\".x exists", "must start with traits. or computed."),
        ("traits.\"\" exists", "has an empty part"),
        ("computed.x in ()", "at least one value"),
        ("in segment \"\"", "segment name is empty"),
        ("consent \"\" for marketing", "consent channel is empty"),
        ("has \"\"", "identifier kind is empty"),
        ("not (traits.a exists or event \"X\" where p within last 0d)", "(at /not/or/1/event/where/0)"),
    ] {
        let e = check(&parsed(text)).expect_err(text);
        assert!(e.to_string().contains(fragment), "{text}: {e}");
    }
    check(&parsed("computed.x between 1w and 7d ago")).expect("equal ends are fine");
    check(&parsed("computed.x between 1w and 8d ago")).expect("compared as durations");
    check(&parsed("all() and any()")).expect("empty lists are fine");
}

// ---------------------------------------------------------------------------------------------------------
// Properties

/// Numbers whose decimal text is short, so that serde_json (without its float_roundtrip feature) reads them
/// back exactly; the text syntax itself round-trips every finite f64 (see `every_finite_f64_round_trips`).
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1_000_000i64..1_000_000).prop_map(|n| n as f64),
        (-100_000_000i64..100_000_000, 1u32..6).prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z_]{0,8}",
        "[ -~]{0,12}",
        any::<String>(),
        Just(String::new()),
        Just("quote\" back\\slash\n\u{0}\u{7f}🍣 名前".to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "(traits|computed)\\.[a-z_]{1,10}(\\.[a-z0-9_-]{1,5}){0,2}",
        "(traits|computed)\\.[a-z .\"-]{0,10}",
        "[a-z_]{1,8}(\\.[a-z0-9_]{1,5}){0,2}",
        text(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        number().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn span() -> impl Strategy<Value = Span> {
    let unit = prop_oneof![Just(SpanUnit::Minutes), Just(SpanUnit::Hours), Just(SpanUnit::Days), Just(SpanUnit::Weeks)];
    (prop_oneof![0u32..400, any::<u32>()], unit).prop_map(|(amount, unit)| Span::new(amount, unit))
}

fn date() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        (0i64..80_000).prop_map(|d| DateTime::from_timestamp(d * 86_400, 0)),
        (-62_135_596_800i64..253_402_300_799).prop_map(|s| DateTime::from_timestamp(s, 0)),
        (0i64..4_102_444_800, 0u32..1_000_000_000).prop_map(|(s, n)| DateTime::from_timestamp(s, n)),
    ]
    .prop_map(|d| d.unwrap_or_default())
}

fn comparison() -> impl Strategy<Value = Comparison> {
    prop_oneof![
        json_value().prop_map(Comparison::Equals),
        json_value().prop_map(Comparison::NotEquals),
        number().prop_map(Comparison::Gt),
        number().prop_map(Comparison::Gte),
        number().prop_map(Comparison::Lt),
        number().prop_map(Comparison::Lte),
        (number(), number()).prop_map(|(a, b)| Comparison::Between(a, b)),
        json_value().prop_map(Comparison::Contains),
        text().prop_map(Comparison::StartsWith),
        prop::collection::vec(json_value(), 0..3).prop_map(Comparison::In),
        Just(Comparison::Exists),
        date().prop_map(Comparison::Before),
        date().prop_map(Comparison::After),
        span().prop_map(Comparison::WithinLast),
        span().prop_map(Comparison::MoreThanAgo),
        (span(), span()).prop_map(|(a, b)| Comparison::BetweenAgo(a, b)),
        span().prop_map(Comparison::AnniversaryWithin),
    ]
}

fn window() -> impl Strategy<Value = Window> {
    prop_oneof![
        Just(Window::Ever),
        span().prop_map(Window::Last),
        (span(), span()).prop_map(|(a, b)| Window::BetweenAgo(a, b)),
        (date(), date()).prop_map(|(a, b)| Window::Range(a, b)),
    ]
}

fn event_match() -> impl Strategy<Value = EventMatch> {
    let filter = (path(), comparison()).prop_map(|(path, comparison)| PropertyFilter { path, comparison });
    (text(), prop::collection::vec(filter, 0..3)).prop_map(|(name, filters)| EventMatch { name, filters })
}

fn measure() -> impl Strategy<Value = Measure> {
    prop_oneof![
        Just(Measure::Count),
        Just(Measure::First),
        Just(Measure::Last),
        path().prop_map(Measure::Sum),
        path().prop_map(Measure::Avg),
        path().prop_map(Measure::Min),
        path().prop_map(Measure::Max),
    ]
}

fn atom() -> impl Strategy<Value = Condition> {
    prop_oneof![
        (path(), comparison())
            .prop_map(|(path, comparison)| Condition::Attribute(AttributeCondition { path, comparison })),
        (event_match(), window(), measure(), prop_oneof![Just(Comparison::Gte(1.0)), comparison()]).prop_map(
            |(matches, window, measure, comparison)| Condition::Event(EventCondition {
                matches,
                window,
                measure,
                comparison
            })
        ),
        (event_match(), event_match(), span(), window()).prop_map(|(first, then_not, within, window)| {
            Condition::Sequence(SequenceCondition { first, then_not, within, window })
        }),
        (text(), text()).prop_map(|(channel, purpose)| Condition::Consent(ConsentCondition { channel, purpose })),
        prop_oneof![text(), Just("for".to_string()), Just("AND".to_string())].prop_map(Condition::HasIdentifier),
        (number(), number(), number()).prop_map(|(lat, lon, km)| Condition::Near(NearCondition { lat, lon, km })),
        text().prop_map(Condition::InSegment),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    atom().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::And),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::Or),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn text_and_json_round_trip(c in condition()) {
        let text = print(&c);
        prop_assert_eq!(parse(&text), Ok(c.clone()), "text: {}", text);
        for width in [0, 40, 100] {
            let pretty = print_pretty(&c, width);
            prop_assert_eq!(parse(&pretty), Ok(c.clone()), "pretty: {}", pretty);
        }
        let json = serde_json::to_string(&c).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<Condition>(&json).expect("deserialises"), c, "json: {}", json);
    }

    #[test]
    fn every_finite_f64_round_trips(
        n in prop::num::f64::POSITIVE | prop::num::f64::NEGATIVE | prop::num::f64::NORMAL
            | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        m in prop::num::f64::POSITIVE | prop::num::f64::NEGATIVE | prop::num::f64::NORMAL
            | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
    ) {
        let c = Condition::And(vec![
            Condition::Attribute(AttributeCondition { path: "computed.x".into(), comparison: Comparison::Between(n, m) }),
            Condition::Attribute(AttributeCondition { path: "computed.x".into(), comparison: Comparison::Equals(Value::from(n)) }),
            Condition::Near(NearCondition { lat: n, lon: m, km: n }),
        ]);
        prop_assert_eq!(parse(&print(&c)), Ok(c.clone()), "{}", print(&c));
    }

    #[test]
    fn parsing_never_panics(s in "[a-z\"().,=<>!# 0-9\n-]{0,40}") {
        let _ = parse(&s);
    }
}
