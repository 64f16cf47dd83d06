use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{SimConfig, Simulator};

/// The default configuration (2000 customers, 365 days), generated once and shared by the tests.
fn full_run() -> &'static (Simulator, Vec<Vec<Value>>) {
    static RUN: OnceLock<(Simulator, Vec<Vec<Value>>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let sim = Simulator::new(SimConfig::default());
        let per_customer = (0..sim.config().customers).map(|i| sim.customer_messages(i)).collect();
        (sim, per_customer)
    })
}

fn all_messages() -> impl Iterator<Item = &'static Value> {
    full_run().1.iter().flatten()
}

fn events<'a>(msgs: &'a [Value], name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    msgs.iter().filter(move |m| m["type"] == "track" && m["event"] == name)
}

fn ts(m: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(m["timestamp"].as_str().expect("timestamp is a string"))
        .expect("timestamp parses as RFC 3339")
        .with_timezone(&Utc)
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

#[test]
fn deterministic_and_seed_sensitive() {
    let cfg = SimConfig { customers: 150, ..SimConfig::default() };
    let a: Vec<String> = Simulator::new(cfg.clone()).messages().map(|m| m.to_string()).collect();
    let b: Vec<String> = Simulator::new(cfg.clone()).messages().map(|m| m.to_string()).collect();
    assert!(!a.is_empty());
    assert_eq!(a, b, "same config must give byte-identical output");

    let c: Vec<String> = Simulator::new(SimConfig { seed: 7, ..cfg }).messages().map(|m| m.to_string()).collect();
    assert_ne!(a, c, "a different seed gives different data");
}

#[test]
fn customers_are_independent_of_run_order() {
    let (sim, per_customer) = full_run();
    for i in [0, 17, 999, 1999] {
        assert_eq!(sim.customer_messages(i), per_customer[i]);
    }
    let small = Simulator::new(SimConfig { customers: 20, ..SimConfig::default() });
    let lazily: Vec<Value> = small.messages().collect();
    let flat: Vec<Value> = per_customer[..20].iter().flatten().cloned().collect();
    assert_eq!(lazily, flat, "customer i does not depend on how many customers are simulated");
}

#[test]
fn message_envelope_is_valid() {
    let (sim, per_customer) = full_run();
    let start = sim.config().start;
    let end = start + chrono::Duration::days(i64::from(sim.config().days));
    let mut ids = HashSet::new();
    let mut total = 0usize;
    for msgs in per_customer {
        let mut prev = start;
        for m in msgs {
            total += 1;
            let id = m["messageId"].as_str().expect("messageId");
            assert!(ids.insert(id.to_owned()), "duplicate messageId {id}");
            assert!(m["userId"].is_string() || m["anonymousId"].is_string(), "no identity: {m}");
            let t = ts(m);
            assert!(t >= start && t < end, "timestamp {t} outside the period");
            assert!(t >= prev, "out of order: {t} after {prev}");
            prev = t;
            let ctx = &m["context"];
            let ip = ctx["ip"].as_str().expect("context.ip");
            assert!(ip.starts_with("203.0.113.") || ip.starts_with("198.51.100."), "{ip}");
            assert!(ctx["userAgent"].as_str().is_some_and(|u| u.starts_with("Mozilla/5.0")));
            assert!(ctx["locale"].is_string() && ctx["timezone"].is_string());
            assert!(ctx["location"]["country"].is_string() && ctx["location"]["city"].is_string());
            assert!(ctx["library"]["name"].is_string() && ctx["library"]["version"].is_string());
            match m["type"].as_str().expect("type") {
                "track" => {
                    assert!(m["event"].is_string() && m["properties"].is_object());
                }
                "page" => {
                    assert!(m["name"].is_string());
                    assert!(
                        m["properties"]["url"].as_str().is_some_and(|u| u.starts_with("https://shop.example.com/"))
                    );
                }
                "identify" => {
                    assert!(m["userId"].is_string() && m["traits"]["email"].is_string());
                }
                other => panic!("unexpected type {other}"),
            }
        }
    }
    // Plenty of data, but not absurd amounts: roughly 20–150 messages per person.
    assert!(total > 40_000 && total < 300_000, "{total} messages");
}

#[test]
fn buyer_mix_is_plausible() {
    let (_, per_customer) = full_run();
    let orders: Vec<usize> = per_customer.iter().map(|m| events(m, "Order Completed").count()).collect();
    let people = orders.len() as f64;
    let buyers = orders.iter().filter(|&&n| n > 0).count() as f64;
    let one_time = orders.iter().filter(|&&n| n == 1).count() as f64;
    let repeat = orders.iter().filter(|&&n| n >= 2).count() as f64;
    let loyal = orders.iter().filter(|&&n| n >= 5).count() as f64;
    assert!(buyers / people > 0.35 && buyers / people < 0.65, "buyers {buyers} of {people}");
    assert!(repeat / buyers >= 0.15 && repeat / buyers <= 0.6, "repeat {repeat} of {buyers}");
    assert!(one_time / buyers >= 0.4, "one-time {one_time} of {buyers}");
    assert!(loyal >= 10.0, "loyal {loyal}");

    // Browsers who never buy but still browse.
    let browsers = per_customer.iter().filter(|m| !m.is_empty() && events(m, "Order Completed").count() == 0).count();
    assert!(browsers as f64 / people > 0.3, "browsers {browsers}");
}

#[test]
fn orders_are_consistent() {
    let (sim, per_customer) = full_run();
    let product_ids: HashSet<&str> = sim.products().iter().map(|p| p.id.as_str()).collect();
    let prices: HashMap<&str, f64> = sim.products().iter().map(|p| (p.id.as_str(), p.price)).collect();
    let mut order_ids = HashSet::new();
    let mut n_orders = 0;
    let mut n_coupons = 0;
    let mut n_refunds = 0;
    let mut n_checkouts = 0;
    for msgs in per_customer {
        let completed: HashSet<&str> =
            events(msgs, "Order Completed").filter_map(|m| m["properties"]["order_id"].as_str()).collect();
        n_checkouts += events(msgs, "Checkout Started").count();
        for m in events(msgs, "Order Completed") {
            n_orders += 1;
            let p = &m["properties"];
            assert!(m["userId"].is_string(), "orders come from identified devices");
            assert!(order_ids.insert(p["order_id"].as_str().expect("order_id").to_owned()));
            assert_eq!(p["currency"], "USD");
            let products = p["products"].as_array().expect("products");
            assert!(!products.is_empty());
            let mut subtotal = 0.0;
            for item in products {
                let id = item["product_id"].as_str().expect("product_id");
                assert!(product_ids.contains(id), "unknown product {id}");
                assert!((num(&item["price"]) - prices[id]).abs() < 1e-9);
                let qty = item["quantity"].as_u64().expect("quantity");
                assert!(qty >= 1);
                subtotal += num(&item["price"]) * qty as f64;
            }
            let (total, revenue, sub) = (num(&p["total"]), num(&p["revenue"]), num(&p["subtotal"]));
            let (shipping, tax, discount) = (num(&p["shipping"]), num(&p["tax"]), num(&p["discount"]));
            assert!((sub - subtotal).abs() < 0.005, "subtotal {sub} vs {subtotal}");
            assert!((revenue - (subtotal - discount)).abs() < 0.005, "revenue {revenue}");
            assert!((total - (subtotal - discount + shipping + tax)).abs() < 0.005, "total {total}");
            assert!(discount >= 0.0 && shipping >= 0.0 && tax >= 0.0);
            if p["coupon"].is_string() {
                n_coupons += 1;
            }
        }
        for m in events(msgs, "Order Refunded") {
            n_refunds += 1;
            assert!(m["anonymousId"].is_null() && m["userId"].is_string());
            assert_eq!(m["context"]["library"]["name"], "analytics-node");
            let id = m["properties"]["order_id"].as_str().expect("order_id");
            assert!(completed.contains(id), "refund of unknown order {id}");
        }
    }
    assert!(n_orders > 1000, "{n_orders} orders");
    let refund_share = n_refunds as f64 / n_orders as f64;
    assert!(refund_share > 0.02 && refund_share < 0.09, "refunds {refund_share}");
    let coupon_share = n_coupons as f64 / n_orders as f64;
    assert!(coupon_share > 0.1 && coupon_share < 0.5, "coupons {coupon_share}");
    let abandoned = 1.0 - n_orders as f64 / n_checkouts as f64;
    assert!(abandoned > 0.1 && abandoned < 0.6, "checkout abandonment {abandoned}");
}

#[test]
fn devices_are_stitched_by_user_id() {
    let (_, per_customer) = full_run();
    let mut stitched = 0;
    let mut never_identified = 0;
    for msgs in per_customer {
        let mut anon_by_user: HashMap<&str, HashSet<&str>> = HashMap::new();
        for m in msgs.iter().filter(|m| m["type"] == "identify") {
            let user = m["userId"].as_str().expect("userId");
            let anon = m["anonymousId"].as_str().expect("browser identify has anonymousId");
            anon_by_user.entry(user).or_default().insert(anon);
        }
        assert!(anon_by_user.len() <= 1, "one person, one userId");
        if anon_by_user.values().any(|a| a.len() >= 2) {
            stitched += 1;
        }
        if !msgs.is_empty() && anon_by_user.is_empty() {
            never_identified += 1;
        }
    }
    assert!(stitched >= 50, "{stitched} people identified on 2+ devices");
    assert!(never_identified >= 300, "{never_identified} never-identified visitors");
}

#[test]
fn behaviour_follows_preferences_and_replenishment() {
    let (sim, per_customer) = full_run();
    let category: HashMap<&str, &str> =
        sim.products().iter().map(|p| (p.id.as_str(), p.categories[0].as_str())).collect();
    // Most people concentrate their product views on few categories.
    let mut concentrated = 0;
    let mut viewers = 0;
    // Consumable re-buys: the same coffee/skincare product in 2+ orders of one person.
    let mut rebuyers = 0;
    for msgs in per_customer {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in events(msgs, "Product Viewed") {
            *counts.entry(m["properties"]["category"].as_str().expect("category")).or_default() += 1;
        }
        let views: usize = counts.values().sum();
        if views >= 10 {
            viewers += 1;
            let mut c: Vec<usize> = counts.values().copied().collect();
            c.sort_unstable_by(|a, b| b.cmp(a));
            if c.iter().take(3).sum::<usize>() as f64 >= 0.8 * views as f64 {
                concentrated += 1;
            }
        }
        let mut bought: HashMap<&str, usize> = HashMap::new();
        for m in events(msgs, "Order Completed") {
            let ids: HashSet<&str> = m["properties"]["products"]
                .as_array()
                .expect("products")
                .iter()
                .filter_map(|p| p["product_id"].as_str())
                .collect();
            for id in ids {
                *bought.entry(id).or_default() += 1;
            }
        }
        if bought.iter().any(|(id, n)| *n >= 2 && matches!(category[id], "Coffee" | "Skincare")) {
            rebuyers += 1;
        }
    }
    assert!(concentrated as f64 >= 0.7 * viewers as f64, "{concentrated} of {viewers}");
    assert!(rebuyers >= 30, "{rebuyers} replenishing customers");
}

#[test]
fn traits_exercise_normalisation() {
    let mut emails = 0;
    let mut messy_emails = 0;
    let mut national_jp = 0;
    let mut e164 = 0;
    let mut countries = HashSet::new();
    for m in all_messages().filter(|m| m["type"] == "identify") {
        let t = &m["traits"];
        let email = t["email"].as_str().expect("email");
        emails += 1;
        if email.trim() != email || email.chars().any(|c| c.is_ascii_uppercase()) {
            messy_emails += 1;
        }
        let domain = email.trim().to_ascii_lowercase();
        let domain = domain.rsplit('@').next().expect("domain");
        assert!(
            domain.ends_with("example.com")
                || domain.ends_with("example.org")
                || domain.ends_with("example.net")
                || domain.ends_with("example.jp"),
            "{domain}"
        );
        if let Some(phone) = t["phone"].as_str() {
            if phone.starts_with("090-") || phone.starts_with("080-") || phone.starts_with("070-") {
                national_jp += 1;
            }
            if phone.starts_with('+') {
                e164 += 1;
            }
        }
        if let Some(c) = t["address"]["country"].as_str() {
            countries.insert(c.to_owned());
        }
        if let Some(b) = t["birthday"].as_str() {
            assert!(chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").is_ok(), "{b}");
        }
    }
    assert!(emails > 500);
    assert!(messy_emails > 20 && messy_emails < emails / 3, "{messy_emails} of {emails}");
    assert!(national_jp > 20 && e164 > 20, "{national_jp} national, {e164} e164");
    assert!(countries.contains("JP") && countries.contains("US") && countries.len() >= 5, "{countries:?}");
}

#[test]
fn event_vocabulary_is_segment_ecommerce() {
    let known = [
        "Products Searched",
        "Product List Viewed",
        "Product Viewed",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
        "Coupon Applied",
        "Order Completed",
        "Order Refunded",
        "Email Opened",
        "Email Link Clicked",
    ];
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut campaigns = 0;
    for m in all_messages() {
        if m["context"]["campaign"].is_object() {
            campaigns += 1;
        }
        if m["type"] == "track" {
            let e = m["event"].as_str().expect("event");
            assert!(known.contains(&e), "unknown event {e}");
            *seen.entry(e).or_default() += 1;
        }
    }
    for e in known {
        assert!(seen.get(e).copied().unwrap_or(0) > 0, "never saw {e}");
    }
    assert!(seen["Product Viewed"] > seen["Product Added"] && seen["Product Added"] > seen["Order Completed"]);
    assert!(campaigns > 1000, "{campaigns} campaign-attributed messages");
}

#[test]
fn catalog_matches_config() {
    let sim = Simulator::new(SimConfig { products: 40, currency: "JPY".into(), customers: 30, ..SimConfig::default() });
    assert_eq!(sim.products().len(), 40);
    for p in sim.products() {
        assert_eq!(p.currency, "JPY");
        assert_eq!(p.price.fract(), 0.0, "yen prices are whole");
        p.validate().expect("valid product");
    }
    let msgs: Vec<Value> = sim.messages().collect();
    assert!(events(&msgs, "Product Viewed").all(|m| m["properties"]["currency"] == "JPY"));
}

#[test]
fn degenerate_configs_do_not_panic() {
    let none = Simulator::new(SimConfig { customers: 0, ..SimConfig::default() });
    assert_eq!(none.messages().count(), 0);
    let no_days = Simulator::new(SimConfig { customers: 20, days: 0, ..SimConfig::default() });
    assert_eq!(no_days.messages().count(), 0);
    let no_products = Simulator::new(SimConfig { customers: 50, products: 0, ..SimConfig::default() });
    let msgs: Vec<Value> = no_products.messages().collect();
    assert!(events(&msgs, "Order Completed").next().is_none());
    let tiny = Simulator::new(SimConfig { customers: 50, products: 3, days: 30, ..SimConfig::default() });
    assert!(tiny.messages().count() > 0);
}

#[test]
fn households_share_a_phone_but_never_an_email() {
    let digits = |s: &str| -> String {
        let d: String = s.chars().filter(char::is_ascii_digit).collect();
        // Fold Japanese national numbers ("03-…", "090-…") and E.164 ("+813…") onto one key.
        match d.strip_prefix("81") {
            Some(rest) if s.starts_with('+') => rest.to_owned(),
            _ => d.trim_start_matches('0').to_owned(),
        }
    };
    let mut users_by_phone: HashMap<String, HashSet<&str>> = HashMap::new();
    let mut users_by_email: HashMap<String, HashSet<&str>> = HashMap::new();
    for m in all_messages().filter(|m| m["type"] == "identify") {
        let user = m["userId"].as_str().expect("userId");
        let email = m["traits"]["email"].as_str().expect("email").trim().to_ascii_lowercase();
        users_by_email.entry(email).or_default().insert(user);
        if let Some(phone) = m["traits"]["phone"].as_str() {
            users_by_phone.entry(digits(phone)).or_default().insert(user);
        }
    }
    assert!(users_by_email.values().all(|u| u.len() == 1), "an email is never shared");
    let shared = users_by_phone.values().filter(|u| u.len() == 2).count();
    assert!(shared >= 5, "{shared} household phones");
    assert!(users_by_phone.values().all(|u| u.len() <= 2));
}

#[test]
fn simulator_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Simulator>();
}
