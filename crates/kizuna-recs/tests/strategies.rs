//! Each strategy and each rule on small hand-made catalogs, with the exact lists expected.

use chrono::{TimeZone, Utc};
use kizuna_catalog::Product;
use kizuna_recs::ease::{EaseModel, EaseSettings};
use kizuna_recs::ials::IalsSettings;
use kizuna_recs::model::{CfModel, ModelChoice};
use kizuna_recs::{
    BecauseOf, Boost, Placement, RankingSettings, Rankings, Request, Rules, Signals, Strategy, Taste, recommend,
};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000; // a fixed "now" (2027-01-15)
const DAY: i64 = 86_400;

fn product(id: &str, category: &str, brand: &str, price: f64) -> Product {
    serde_json::from_value(json!({"id": id, "title": format!("Title {id}"), "price": price,
        "categories": [category], "brand": brand}))
    .expect("product")
}

fn catalog() -> Signals {
    let mut s = Signals::default();
    for (id, cat, brand, price) in [
        ("p1", "shoes", "acme", 50.0),
        ("p2", "shoes", "acme", 55.0),
        ("p3", "shoes", "bolt", 60.0),
        ("p4", "bags", "bolt", 150.0),
        ("p5", "bags", "acme", 20.0),
        ("p6", "socks", "cozy", 10.0),
    ] {
        s.upsert_product(product(id, cat, brand, price));
    }
    s
}

fn order(s: &mut Signals, profile: u64, at: i64, items: &[&str]) {
    let products: Vec<Value> = items.iter().map(|id| json!({"product_id": id, "quantity": 1})).collect();
    assert!(s.apply_event(
        profile,
        "Order Completed",
        at,
        &json!({"order_id": format!("o{profile}-{at}"), "products": products})
    ));
}

fn view(s: &mut Signals, profile: u64, at: i64, id: &str) {
    assert!(s.apply_event(profile, "Product Viewed", at, &json!({"product_id": id})));
}

fn placement(strategy: Strategy, rules: Rules, fallback: Vec<Strategy>) -> Placement {
    Placement { name: "t".into(), description: String::new(), strategy, rules, fallback, limit: 10 }
}

fn ids(s: &Signals, recs: &[kizuna_recs::Recommendation]) -> Vec<String> {
    recs.iter().map(|r| s.items.product(r.item).id.clone()).collect()
}

fn run(s: &Signals, p: &Placement, req: &Request<'_>, model: Option<&CfModel>) -> Vec<String> {
    let rankings = Rankings::build(s, &RankingSettings::default(), NOW);
    ids(s, &recommend(p, req, s, &rankings, model))
}

fn req(profile: Option<u64>) -> Request<'static> {
    Request { profile, limit: 10, now: NOW, ..Request::default() }
}

fn no_rules() -> Rules {
    Rules { affinity_weight: 0.0, ..Rules::default() }
}

#[test]
fn bestsellers_count_units_in_the_window() {
    let mut s = catalog();
    for i in 0..5 {
        order(&mut s, 100 + i, NOW - DAY, &["p2"]);
    }
    for i in 0..3 {
        order(&mut s, 200 + i, NOW - 2 * DAY, &["p1"]);
    }
    order(&mut s, 300, NOW - 3 * DAY, &["p3"]);
    for i in 0..10 {
        order(&mut s, 400 + i, NOW - 40 * DAY, &["p4"]);
    }
    let p30 = placement(Strategy::Bestsellers { window_days: 30, per_category: false }, no_rules(), vec![]);
    assert_eq!(run(&s, &p30, &req(None), None), ["p2", "p1", "p3"]);
    let p90 = placement(Strategy::Bestsellers { window_days: 90, per_category: false }, no_rules(), vec![]);
    assert_eq!(run(&s, &p90, &req(None), None), ["p4", "p2", "p1", "p3"]);
    // Per category: the context product's category.
    let per = placement(Strategy::Bestsellers { window_days: 90, per_category: true }, no_rules(), vec![]);
    let ix = s.items.ix("p5").expect("p5");
    let r = Request { context: vec![ix], ..req(None) };
    assert_eq!(run(&s, &per, &r, None), ["p4"]);
}

#[test]
fn trending_finds_rising_products_not_steady_ones() {
    let mut s = catalog();
    // p6 is steady: one view a day for 30 days. p5 jumps today.
    for d in 0..31 {
        view(&mut s, 1, NOW - d * DAY, "p6");
    }
    for i in 0..8 {
        view(&mut s, 10 + i, NOW - 3600, "p5");
    }
    view(&mut s, 30, NOW - 20 * DAY, "p5");
    let p = placement(Strategy::Trending { per_category: false }, no_rules(), vec![]);
    assert_eq!(run(&s, &p, &req(None), None), ["p5"]);
}

#[test]
fn new_arrivals_newest_first_within_the_window() {
    let mut s = catalog();
    for (id, days_ago) in [("n1", 2), ("n2", 1), ("n3", 45)] {
        let mut p = product(id, "shoes", "acme", 40.0);
        p.created_at = Some(Utc.timestamp_opt(NOW - days_ago * DAY, 0).single().expect("time"));
        s.upsert_product(p);
    }
    let p = placement(Strategy::NewArrivals { per_category: false }, no_rules(), vec![]);
    assert_eq!(run(&s, &p, &req(None), None), ["n2", "n1"]);
}

#[test]
fn recently_viewed_newest_first_without_the_context_product() {
    let mut s = catalog();
    view(&mut s, 7, NOW - 300, "p1");
    view(&mut s, 7, NOW - 200, "p4");
    view(&mut s, 7, NOW - 100, "p3");
    view(&mut s, 7, NOW - 50, "p1");
    let p = placement(Strategy::RecentlyViewed, no_rules(), vec![]);
    assert_eq!(run(&s, &p, &req(Some(7)), None), ["p1", "p3", "p4"]);
    let ctx = Request { context: vec![s.items.ix("p3").expect("p3")], ..req(Some(7)) };
    assert_eq!(run(&s, &p, &ctx, None), ["p1", "p4"]);
    // A stranger has no history: nothing, and no fallback configured.
    assert!(run(&s, &p, &req(Some(99)), None).is_empty());
}

#[test]
fn similar_items_by_category_brand_price_and_co_views() {
    let mut s = catalog();
    let p = placement(Strategy::SimilarItems, no_rules(), vec![]);
    let ctx = Request { context: vec![s.items.ix("p1").expect("p1")], ..req(None) };
    // p2: same category, brand and price band; p3: same category and band, other brand.
    assert_eq!(run(&s, &p, &ctx, None), ["p2", "p3"]);
    // Co-views bring p4 in and up: viewed together with p1 by three people.
    for person in 0..3 {
        view(&mut s, 50 + person, NOW - 600, "p1");
        view(&mut s, 50 + person, NOW - 500, "p4");
    }
    assert_eq!(run(&s, &p, &ctx, None), ["p2", "p4", "p3"]);
}

#[test]
fn frequently_bought_together_needs_support_and_lift() {
    let mut s = catalog();
    for i in 0..3 {
        order(&mut s, i, NOW - DAY, &["p1", "p6"]);
    }
    order(&mut s, 10, NOW - DAY, &["p1", "p5"]);
    for i in 0..4 {
        order(&mut s, 20 + i, NOW - DAY, &["p2"]);
    }
    let p = placement(Strategy::FrequentlyBoughtTogether { min_support: 2 }, no_rules(), vec![]);
    let ctx = Request { context: vec![s.items.ix("p1").expect("p1")], ..req(None) };
    let recs = {
        let rankings = Rankings::build(&s, &RankingSettings::default(), NOW);
        recommend(&p, &ctx, &s, &rankings, None)
    };
    assert_eq!(ids(&s, &recs), ["p6"]);
    assert_eq!(recs[0].reason, "bought together with Title p1");
    let p1 = placement(Strategy::FrequentlyBoughtTogether { min_support: 1 }, no_rules(), vec![]);
    assert_eq!(run(&s, &p1, &ctx, None), ["p6", "p5"]);
}

fn cells(s: &Signals) -> Vec<(u32, u32, f32)> {
    let mut cells = Vec::new();
    for (profile, history) in s.profiles() {
        for t in history.touches() {
            cells.push((profile as u32, t.item, t.kind.weight()));
        }
    }
    cells
}

fn trained(s: &Signals) -> CfModel {
    CfModel::Ease(EaseModel::train(&cells(s), &EaseSettings { lambda: 1.0, ..EaseSettings::default() }).expect("train"))
}

#[test]
fn for_you_and_because_you_bought_follow_the_model() {
    let mut s = catalog();
    // Whoever buys p1 also buys p4; p2 buyers also buy p6.
    for i in 0..6 {
        order(&mut s, i, NOW - 10 * DAY, &["p1", "p4"]);
        order(&mut s, 100 + i, NOW - 10 * DAY, &["p2", "p6"]);
    }
    order(&mut s, 500, NOW - DAY, &["p1"]);
    let model = trained(&s);
    let p = placement(Strategy::ForYou, no_rules(), vec![]);
    let got = run(&s, &p, &req(Some(500)), Some(&model));
    assert_eq!(got.first().map(String::as_str), Some("p4"));
    assert!(!got.contains(&"p1".to_owned()), "never the history itself: {got:?}");
    let because = placement(Strategy::BecauseYou { of: BecauseOf::Bought }, no_rules(), vec![]);
    let rankings = Rankings::build(&s, &RankingSettings::default(), NOW);
    let recs = recommend(&because, &req(Some(500)), &s, &rankings, Some(&model));
    assert_eq!(ids(&s, &recs).first().map(String::as_str), Some("p4"));
    assert_eq!(recs[0].reason, "because you bought Title p1");
}

#[test]
fn replenishment_is_due_by_the_persons_own_interval() {
    let mut s = catalog();
    for d in [88, 58, 28] {
        order(&mut s, 9, NOW - d * DAY, &["p6"]);
    }
    order(&mut s, 9, NOW - 2 * DAY, &["p1"]);
    let p = placement(Strategy::Replenishment { due_ratio: 0.8 }, no_rules(), vec![]);
    let recs = {
        let rankings = Rankings::build(&s, &RankingSettings::default(), NOW);
        recommend(&p, &req(Some(9)), &s, &rankings, None)
    };
    assert_eq!(ids(&s, &recs), ["p6"]);
    assert_eq!(recs[0].reason, "time to restock (about every 30 days)");
    // Ten days after the last order it is not due yet.
    let early = Request { now: NOW - 18 * DAY, ..req(Some(9)) };
    assert!(run(&s, &p, &early, None).is_empty());
    // Bestsellers exclude what the person bought, except the product they re-buy.
    let best = placement(Strategy::Bestsellers { window_days: 90, per_category: false }, no_rules(), vec![]);
    assert_eq!(run(&s, &best, &req(Some(9)), None), ["p6"]);
    let strict = Rules { rebuy_replenishable: false, ..no_rules() };
    let best = placement(Strategy::Bestsellers { window_days: 90, per_category: false }, strict, vec![]);
    assert!(run(&s, &best, &req(Some(9)), None).is_empty());
}

#[test]
fn popular_near_you_prefers_the_nearest_place() {
    let mut s = catalog();
    let tokyo = kizuna_recs::place_keys(Some("JP"), Some("13"), Some("Tokyo"));
    let osaka = kizuna_recs::place_keys(Some("JP"), Some("27"), Some("Osaka"));
    for i in 0..3 {
        s.set_places(i, tokyo.clone());
        order(&mut s, i, NOW - DAY, &["p3"]);
        s.set_places(10 + i, osaka.clone());
        order(&mut s, 10 + i, NOW - DAY, &["p5"]);
    }
    order(&mut s, 10, NOW - DAY, &["p5"]);
    let p = placement(Strategy::PopularNearYou, no_rules(), vec![]);
    let r = Request { places: tokyo, ..req(None) };
    let rankings = Rankings::build(&s, &RankingSettings::default(), NOW);
    let recs = recommend(&p, &r, &s, &rankings, None);
    // Tokyo's own first, then Japan's.
    assert_eq!(ids(&s, &recs), ["p3", "p5"]);
    assert_eq!(recs[0].reason, "popular in tokyo");
    assert_eq!(recs[1].reason, "popular in jp");
    // Moving a buyer moves their purchases.
    for person in [10, 11, 12] {
        s.set_places(person, tokyo_again());
    }
    let rankings = Rankings::build(&s, &RankingSettings::default(), NOW);
    let recs = recommend(&p, &r, &s, &rankings, None);
    assert_eq!(ids(&s, &recs), ["p5", "p3"]);
}

fn tokyo_again() -> Vec<String> {
    kizuna_recs::place_keys(Some("JP"), Some("13"), Some("Tokyo"))
}

#[test]
fn rules_filter_pin_boost_and_diversify() {
    let mut s = catalog();
    // Sales: p1 6, p2 5, p3 4, p4 3, p5 2, p6 1.
    for (id, n) in [("p1", 6), ("p2", 5), ("p3", 4), ("p4", 3), ("p5", 2), ("p6", 1)] {
        for i in 0..n {
            order(&mut s, 1000 + i, NOW - DAY, &[id]);
        }
    }
    let best = Strategy::Bestsellers { window_days: 30, per_category: false };
    let base = placement(best.clone(), no_rules(), vec![]);
    assert_eq!(run(&s, &base, &req(None), None), ["p1", "p2", "p3", "p4", "p5", "p6"]);

    let mut out_of_stock = product("p2", "shoes", "acme", 55.0);
    out_of_stock.in_stock = false;
    let mut s2 = s.clone();
    s2.upsert_product(out_of_stock);
    assert_eq!(run(&s2, &base, &req(None), None), ["p1", "p3", "p4", "p5", "p6"]);

    let cats = Rules { include_categories: vec!["bags".into(), "socks".into()], ..no_rules() };
    assert_eq!(run(&s, &placement(best.clone(), cats, vec![]), &req(None), None), ["p4", "p5", "p6"]);
    let cats = Rules { exclude_categories: vec!["shoes".into()], exclude_products: vec!["p6".into()], ..no_rules() };
    assert_eq!(run(&s, &placement(best.clone(), cats, vec![]), &req(None), None), ["p4", "p5"]);

    let pinned = Rules { pin: vec!["p6".into(), "nope".into()], ..no_rules() };
    assert_eq!(
        run(&s, &placement(best.clone(), pinned, vec![]), &req(None), None),
        ["p6", "p1", "p2", "p3", "p4", "p5"]
    );

    let boosted = Rules {
        boosts: vec![Boost { product: None, category: None, brand: Some("bolt".into()), tag: None, factor: 3.0 }],
        ..no_rules()
    };
    assert_eq!(
        run(&s, &placement(best.clone(), boosted, vec![]), &req(None), None),
        ["p3", "p4", "p1", "p2", "p5", "p6"]
    );

    let diverse = Rules { max_per_brand: Some(1), ..no_rules() };
    assert_eq!(run(&s, &placement(best.clone(), diverse, vec![]), &req(None), None), ["p1", "p3", "p6"]);

    // Purchased products are excluded for the buyer (profile 1000 bought p1..p6 once each).
    assert!(run(&s, &base, &req(Some(1000)), None).is_empty());
    let keep = Rules { exclude_purchased: false, ..no_rules() };
    assert_eq!(run(&s, &placement(best.clone(), keep, vec![]), &req(Some(1000)), None).len(), 6);

    // Affinity re-ranks: someone who loves bags sees bags higher.
    let taste = Taste { categories: vec![("bags".into(), 1.0)], brands: vec![], price_band: None };
    let by_taste = placement(best, Rules { affinity_weight: 1.2, ..Rules::default() }, vec![]);
    let r = Request { taste: Some(&taste), ..req(None) };
    assert_eq!(run(&s, &by_taste, &r, None), ["p4", "p1", "p2", "p5", "p3", "p6"]);
}

#[test]
fn cold_start_falls_back_in_order() {
    let mut s = catalog();
    order(&mut s, 1, NOW - 20 * DAY, &["p4"]);
    order(&mut s, 2, NOW - 20 * DAY, &["p4"]);
    view(&mut s, 3, NOW - 60, "p6");
    let p = placement(
        Strategy::ForYou,
        no_rules(),
        vec![
            Strategy::Trending { per_category: false },
            Strategy::Bestsellers { window_days: 30, per_category: false },
        ],
    );
    let rankings = Rankings::build(&s, &RankingSettings::default(), NOW);
    let recs = recommend(&p, &req(Some(404)), &s, &rankings, None);
    assert_eq!(ids(&s, &recs), ["p6", "p4"]);
    assert_eq!([recs[0].strategy, recs[1].strategy], ["trending", "bestsellers"]);
}

#[test]
fn placements_are_validated_with_field_paths() {
    let bad = |v: Value| serde_json::from_value::<Placement>(v).expect("parses").validate().expect_err("invalid").field;
    assert_eq!(bad(json!({"name": "Bad Name", "strategy": {"type": "trending"}})), "name");
    assert_eq!(bad(json!({"name": "x", "strategy": {"type": "trending"}, "limit": 0})), "limit");
    assert_eq!(bad(json!({"name": "x", "strategy": {"type": "bestsellers", "window_days": 0}})), "strategy");
    assert_eq!(
        bad(
            json!({"name": "x", "strategy": {"type": "trending"}, "rules": {"boosts": [{"brand": "a", "factor": -1}]}})
        ),
        "rules.boosts[0].factor"
    );
    assert_eq!(
        bad(
            json!({"name": "x", "strategy": {"type": "trending"}, "fallback": [{"type": "replenishment", "due_ratio": 0}]})
        ),
        "fallback[0]"
    );
    assert!(serde_json::from_value::<Placement>(json!({"name": "x", "strategy": {"type": "telepathy"}})).is_err());
    assert_eq!(bad(json!({"name": "status", "strategy": {"type": "trending"}})), "name");
    for p in kizuna_recs::starter_placements() {
        p.validate().expect("starter placements are valid");
    }
}

#[test]
fn merges_and_erasure_move_and_drop_histories() {
    let mut s = catalog();
    view(&mut s, 1, NOW - 100, "p1");
    view(&mut s, 2, NOW - 50, "p2");
    s.merge(2, 1);
    let items: Vec<u32> = s.history(1).expect("history").touches().map(|t| t.item).collect();
    assert_eq!(items, [s.items.ix("p1").expect("p1"), s.items.ix("p2").expect("p2")]);
    assert!(s.history(2).is_none());
    s.remove(1);
    assert!(s.history(1).is_none());
}

#[test]
fn replenishment_needs_a_product_people_rebuy_or_a_habit() {
    let mut s = catalog();
    // Shoes bought twice by one person: chance, not a habit — nothing to restock.
    order(&mut s, 1, NOW - 100 * DAY, &["p1"]);
    order(&mut s, 1, NOW - 50 * DAY, &["p1"]);
    let p = placement(Strategy::Replenishment { due_ratio: 0.8 }, no_rules(), vec![]);
    assert!(run(&s, &p, &req(Some(1)), None).is_empty());
    // Socks re-bought by three of four buyers every ~20 days: a newcomer's one purchase is due on that clock.
    for person in 10..13 {
        order(&mut s, person, NOW - 60 * DAY, &["p6"]);
        order(&mut s, person, NOW - 40 * DAY, &["p6"]);
    }
    order(&mut s, 13, NOW - 70 * DAY, &["p6"]);
    order(&mut s, 20, NOW - 19 * DAY, &["p6"]);
    let recs = {
        let rankings = Rankings::build(&s, &RankingSettings::default(), NOW);
        recommend(&p, &req(Some(20)), &s, &rankings, None)
    };
    assert_eq!(ids(&s, &recs), ["p6"]);
    assert_eq!(recs[0].reason, "time to restock (about every 20 days)");
    // A product tagged replenishable counts from the person's single re-order.
    let mut tagged = product("p4", "bags", "bolt", 150.0);
    tagged.tags = vec!["replenishable".into()];
    s.upsert_product(tagged);
    order(&mut s, 30, NOW - 20 * DAY, &["p4"]);
    order(&mut s, 30, NOW - 10 * DAY, &["p4"]);
    assert_eq!(run(&s, &p, &req(Some(30)), None), ["p4"]);
}

#[test]
fn implicit_als_serves_for_you_when_the_catalog_outgrows_ease() {
    let mut s = catalog();
    for i in 0..20 {
        order(&mut s, i, NOW - 10 * DAY, &["p1", "p4"]);
        order(&mut s, 100 + i, NOW - 10 * DAY, &["p2", "p6"]);
    }
    order(&mut s, 500, NOW - DAY, &["p1"]);
    // Four products have interactions; an EASE limit of three makes `auto` choose iALS.
    let ease = EaseSettings { max_items: 3, ..EaseSettings::default() };
    let ials = IalsSettings { factors: 8, regularization: 0.1, iterations: 10, ..IalsSettings::default() };
    let model = kizuna_recs::model::train(&cells(&s), ModelChoice::Auto, &ease, &ials).expect("train");
    assert_eq!(model.name(), "ials");
    let p = placement(Strategy::ForYou, no_rules(), vec![]);
    let got = run(&s, &p, &req(Some(500)), Some(&model));
    assert_eq!(got.first().map(String::as_str), Some("p4"), "{got:?}");
    let p4 = s.items.ix("p4").expect("p4");
    let p1 = s.items.ix("p1").expect("p1");
    assert_eq!(model.neighbors_of(p1).first().map(|n| n.0), Some(p4));
    let within =
        kizuna_recs::model::train(&cells(&s), ModelChoice::Auto, &EaseSettings::default(), &ials).expect("train");
    assert_eq!(within.name(), "ease");
}

#[test]
fn merges_move_place_counters_with_the_purchases() {
    let mut s = catalog();
    let us = kizuna_recs::place_keys(Some("US"), None, None);
    let jp = kizuna_recs::place_keys(Some("JP"), None, None);
    let fr = kizuna_recs::place_keys(Some("FR"), None, None);
    s.set_places(1, us.clone());
    order(&mut s, 1, NOW - DAY, &["p3"]);
    s.set_places(2, jp.clone());
    order(&mut s, 2, NOW - DAY, &["p5"]);
    s.merge(1, 2);
    let p = placement(Strategy::PopularNearYou, no_rules(), vec![]);
    let near = |s: &Signals, places: &[String]| run(s, &p, &Request { places: places.to_vec(), ..req(None) }, None);
    assert!(near(&s, &us).is_empty(), "the buyer lives in JP now");
    // One unit each: equal, in product order.
    assert_eq!(near(&s, &jp), ["p3", "p5"]);
    s.set_places(2, fr.clone());
    assert!(near(&s, &jp).is_empty());
    assert_eq!(near(&s, &fr), ["p3", "p5"]);
}

#[test]
fn co_views_count_a_pair_once_per_person_and_window() {
    let mut s = catalog();
    for (t, id) in [(0, "p1"), (60, "p2"), (120, "p1"), (180, "p2")] {
        view(&mut s, 1, NOW - 1000 + t, id);
    }
    let p1 = s.items.ix("p1").expect("p1");
    let p2 = s.items.ix("p2").expect("p2");
    assert_eq!(s.co_views(p1).collect::<Vec<_>>(), [(p2, 1)]);
}

#[test]
fn products_only_events_mention_are_not_served_once_a_catalog_exists() {
    let mut s = Signals::default();
    for i in 0..3 {
        s.apply_event(i, "Order Completed", NOW - DAY, &json!({"order_id": format!("o{i}"), "products": [{"product_id": "ghost", "name": "Phish", "url": "https://phish"}]}));
    }
    let best = placement(Strategy::Bestsellers { window_days: 30, per_category: false }, no_rules(), vec![]);
    // No catalog at all: what events describe is all there is.
    assert_eq!(run(&s, &best, &req(None), None), ["ghost"]);
    s.upsert_product(product("p1", "shoes", "acme", 10.0));
    order(&mut s, 9, NOW - DAY, &["p1"]);
    assert_eq!(run(&s, &best, &req(None), None), ["p1"]);
    let open = Rules { catalog_only: false, ..no_rules() };
    assert_eq!(
        run(
            &s,
            &placement(Strategy::Bestsellers { window_days: 30, per_category: false }, open, vec![]),
            &req(None),
            None
        ),
        ["ghost", "p1"]
    );
}

#[test]
fn bestseller_ties_break_on_carts_and_never_beat_units() {
    let mut s = catalog();
    for i in 0..5 {
        order(&mut s, i, NOW - DAY, &["p1"]);
    }
    for i in 0..6 {
        order(&mut s, 10 + i, NOW - DAY, &["p2"]);
    }
    for i in 0..5 {
        order(&mut s, 20 + i, NOW - DAY, &["p3"]);
    }
    // Many carts cannot lift five units above six; they do break the tie between p1 and p3.
    for i in 0..1500 {
        s.apply_event(100 + i, "Product Added", NOW - DAY, &json!({"product_id": "p3"}));
    }
    let best = placement(Strategy::Bestsellers { window_days: 30, per_category: false }, no_rules(), vec![]);
    assert_eq!(run(&s, &best, &req(None), None), ["p2", "p3", "p1"]);
}
