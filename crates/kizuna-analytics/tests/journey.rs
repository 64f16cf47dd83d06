//! Journey stages and funnel: every stage, the purchase-window boundary, hand-computed funnel.

use chrono::{DateTime, TimeDelta, Utc};
use kizuna_analytics::journey::{Funnel, JourneyFacts, JourneyRules, Stage, funnel, stage};
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z").expect("valid timestamp").with_timezone(&Utc)
}

fn days_ago(days: i64) -> Option<DateTime<Utc>> {
    Some(now() - TimeDelta::days(days))
}

fn buyer(orders: u32, last_order_days_ago: i64, revenue: f64) -> JourneyFacts {
    JourneyFacts {
        orders,
        first_order_at: days_ago(last_order_days_ago + 10 * i64::from(orders.saturating_sub(1))),
        last_order_at: days_ago(last_order_days_ago),
        revenue,
        ..JourneyFacts::default()
    }
}

/// (name, facts, expected stage); see `funnel_matches_hand_counts` for the funnel over them.
fn fixtures() -> Vec<(&'static str, JourneyFacts, Stage)> {
    let d = JourneyFacts::default;
    vec![
        ("page views only", JourneyFacts { page_views: 3, first_seen: days_ago(5), ..d() }, Stage::Awareness),
        ("identified only (newsletter)", d(), Stage::Awareness),
        ("searched", JourneyFacts { searches: 1, ..d() }, Stage::Consideration),
        ("viewed products", JourneyFacts { page_views: 5, product_views: 2, ..d() }, Stage::Consideration),
        ("advocacy without order", JourneyFacts { product_views: 1, advocacy_events: 2, ..d() }, Stage::Consideration),
        ("added to cart", JourneyFacts { product_views: 1, cart_adds: 1, ..d() }, Stage::Decision),
        ("started checkout", JourneyFacts { checkouts: 1, ..d() }, Stage::Decision),
        (
            "one recent order",
            JourneyFacts { product_views: 1, cart_adds: 1, checkouts: 1, ..buyer(1, 10, 50.0) },
            Stage::Purchase,
        ),
        ("one old order", buyer(1, 45, 30.0), Stage::PostPurchase),
        ("three orders", JourneyFacts { checkouts: 2, ..buyer(3, 5, 120.0) }, Stage::Retention),
        ("one order and a review", JourneyFacts { advocacy_events: 1, ..buyer(1, 100, 20.0) }, Stage::Advocacy),
    ]
}

#[test]
fn every_stage_is_reachable() {
    let rules = JourneyRules::default();
    let mut seen = Vec::new();
    for (name, facts, want) in fixtures() {
        assert_eq!(stage(&facts, now(), &rules), want, "{name}");
        seen.push(want);
    }
    for s in Stage::ALL {
        assert!(seen.contains(&s), "no fixture reaches {s:?}");
    }
}

#[test]
fn advocacy_and_retention_take_precedence() {
    let rules = JourneyRules::default();
    let repeat_advocate = JourneyFacts { advocacy_events: 3, ..buyer(4, 1, 10.0) };
    assert_eq!(stage(&repeat_advocate, now(), &rules), Stage::Advocacy);
    // Orders outrank browsing: a buyer with cart adds is not in Decision.
    let old_buyer_with_cart = JourneyFacts { cart_adds: 5, ..buyer(1, 200, 10.0) };
    assert_eq!(stage(&old_buyer_with_cart, now(), &rules), Stage::PostPurchase);
    let recent_repeat = buyer(2, 0, 10.0);
    assert_eq!(stage(&recent_repeat, now(), &rules), Stage::Retention);
}

#[test]
fn purchase_window_boundary() {
    let rules = JourneyRules::default();
    assert_eq!(rules.purchase_window_days, 30.0);
    let at = |delta: TimeDelta| JourneyFacts { orders: 1, last_order_at: Some(now() - delta), ..Default::default() };
    assert_eq!(stage(&at(TimeDelta::days(30)), now(), &rules), Stage::Purchase, "exactly 30 days");
    let just_over = TimeDelta::days(30) + TimeDelta::milliseconds(1);
    assert_eq!(stage(&at(just_over), now(), &rules), Stage::PostPurchase, "30 days + 1 ms");
    assert_eq!(stage(&at(TimeDelta::hours(29 * 24 + 12)), now(), &rules), Stage::Purchase);
    assert_eq!(stage(&at(TimeDelta::zero()), now(), &rules), Stage::Purchase);
    assert_eq!(stage(&at(-TimeDelta::days(1)), now(), &rules), Stage::Purchase, "order after now (clock skew)");

    let week = JourneyRules { purchase_window_days: 7.0 };
    assert_eq!(stage(&at(TimeDelta::days(7)), now(), &week), Stage::Purchase);
    assert_eq!(stage(&at(TimeDelta::days(8)), now(), &week), Stage::PostPurchase);
    let half_day = JourneyRules { purchase_window_days: 0.5 };
    assert_eq!(stage(&at(TimeDelta::hours(12)), now(), &half_day), Stage::Purchase);
    assert_eq!(stage(&at(TimeDelta::hours(13)), now(), &half_day), Stage::PostPurchase);

    // first_order_at is used when last_order_at is missing; no timestamp at all → Post-purchase.
    let first_only = JourneyFacts { orders: 1, first_order_at: days_ago(3), ..Default::default() };
    assert_eq!(stage(&first_only, now(), &rules), Stage::Purchase);
    let undated = JourneyFacts { orders: 1, ..Default::default() };
    assert_eq!(stage(&undated, now(), &rules), Stage::PostPurchase);
}

fn close(name: &str, got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("{name}: got None, want {want}"));
    assert!((got - want).abs() < 1e-12, "{name}: got {got}, want {want}");
}

#[test]
fn funnel_matches_hand_counts() {
    let profiles: Vec<JourneyFacts> = fixtures().into_iter().map(|(_, f, _)| f).collect();
    let f = funnel(&profiles, now(), &JourneyRules::default());
    assert_eq!(f.profiles, 11);
    let stages: Vec<Stage> = f.stages.iter().map(|s| s.stage).collect();
    assert_eq!(stages, Stage::ALL.to_vec());
    let counts: Vec<u64> = f.stages.iter().map(|s| s.count).collect();
    assert_eq!(counts, vec![2, 3, 2, 1, 1, 1, 1]);
    let reached: Vec<u64> = f.stages.iter().map(|s| s.reached).collect();
    assert_eq!(reached, vec![11, 9, 6, 4, 3, 2, 1]);

    assert_eq!(f.stages[0].conversion_from_previous, None);
    for (i, want) in [(1, 9.0 / 11.0), (2, 6.0 / 9.0), (3, 4.0 / 6.0), (4, 3.0 / 4.0), (5, 2.0 / 3.0), (6, 1.0 / 2.0)] {
        close(f.stages[i].stage.as_str(), f.stages[i].conversion_from_previous, want);
    }

    let kpi = |s: Stage| &f.stages[s.index()].kpi;
    assert_eq!(kpi(Stage::Awareness).name, "browse_rate");
    // Product viewers: viewed products, advocacy without order, added to cart, one recent order.
    close("browse rate", kpi(Stage::Awareness).value, 4.0 / 11.0);
    // Of those four, two added to cart.
    close("add-to-cart rate", kpi(Stage::Consideration).value, 2.0 / 4.0);
    // Checkout starters: started checkout, one recent order, three orders; two of them ordered.
    close("checkout conversion", kpi(Stage::Decision).value, 2.0 / 3.0);
    // One-order profiles: 50, 30, 20.
    close("first-time buyer revenue", kpi(Stage::Purchase).value, 100.0 / 3.0);
    // Buyers: 4, of which 1 has ≥ 2 orders.
    close("repeat rate", kpi(Stage::PostPurchase).value, 1.0 / 4.0);
    close("orders per repeat customer", kpi(Stage::Retention).value, 3.0);
    close("advocacy rate", kpi(Stage::Advocacy).value, 1.0 / 4.0);
    assert!(f.stages.iter().all(|s| !s.kpi.definition.is_empty() && s.label == s.stage.label()));

    // Owned and borrowed input give the same funnel.
    assert_eq!(funnel(profiles.clone(), now(), &JourneyRules::default()), f);
}

#[test]
fn empty_funnel() {
    let f = funnel(Vec::<JourneyFacts>::new(), now(), &JourneyRules::default());
    assert_eq!(f.profiles, 0);
    assert_eq!(f.stages.len(), 7);
    for s in &f.stages {
        assert_eq!((s.count, s.reached, s.conversion_from_previous, s.kpi.value), (0, 0, None, None));
    }
    let json = serde_json::to_string(&f).expect("serialise");
    assert!(!json.contains("NaN"));
    let back: Funnel = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, f);
}

#[test]
fn stage_names_and_order() {
    assert!(Stage::ALL.windows(2).all(|w| w[0] < w[1]));
    for (i, s) in Stage::ALL.iter().enumerate() {
        assert_eq!(s.index(), i);
        assert_eq!(serde_json::to_string(s).expect("serialise"), format!("\"{}\"", s.as_str()));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert_eq!(Stage::PostPurchase.as_str(), "post_purchase");
    assert_eq!(Stage::PostPurchase.label(), "Post-purchase");
    let rules: JourneyRules = serde_json::from_str("{}").expect("defaults");
    assert_eq!(rules, JourneyRules::default());
}

fn arb_facts() -> impl Strategy<Value = JourneyFacts> {
    ((0u64..3, 0u64..3, 0u64..3, 0u64..3, 0u64..3), 0u32..4, proptest::option::of(-5i64..90), 0u64..3, -10.0f64..500.0)
        .prop_map(
            |((page_views, searches, product_views, cart_adds, checkouts), orders, age, advocacy_events, revenue)| {
                let at = age.map(|d| now() - TimeDelta::hours(d * 12));
                JourneyFacts {
                    page_views,
                    searches,
                    product_views,
                    cart_adds,
                    checkouts,
                    orders,
                    first_order_at: at,
                    last_order_at: at,
                    revenue,
                    advocacy_events,
                    ..JourneyFacts::default()
                }
            },
        )
}

proptest! {
    #[test]
    fn funnel_is_consistent(profiles in proptest::collection::vec(arb_facts(), 0..60), window in 0.0f64..60.0) {
        let rules = JourneyRules { purchase_window_days: window };
        let f = funnel(&profiles, now(), &rules);
        prop_assert_eq!(f.profiles, profiles.len() as u64);
        prop_assert_eq!(f.stages.iter().map(|s| s.count).sum::<u64>(), f.profiles);
        prop_assert_eq!(f.stages[0].reached, f.profiles);
        for w in f.stages.windows(2) {
            prop_assert!(w[0].reached >= w[1].reached);
            prop_assert_eq!(w[0].reached, w[0].count + w[1].reached);
        }
        for s in &f.stages {
            if let Some(c) = s.conversion_from_previous {
                prop_assert!((0.0..=1.0).contains(&c));
            }
            let in_stage = profiles.iter().filter(|p| stage(p, now(), &rules) == s.stage).count() as u64;
            prop_assert_eq!(s.count, in_stage);
        }
    }

    #[test]
    fn stage_is_total_and_monotone_in_orders(facts in arb_facts()) {
        let rules = JourneyRules::default();
        let s = stage(&facts, now(), &rules);
        if facts.orders >= 1 {
            prop_assert!(s >= Stage::Purchase);
        } else {
            prop_assert!(s <= Stage::Decision);
        }
        let more = JourneyFacts { orders: facts.orders + 1, ..facts.clone() };
        prop_assert!(stage(&more, now(), &rules) >= s);
    }
}
