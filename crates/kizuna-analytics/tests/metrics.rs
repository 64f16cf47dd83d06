//! Store metrics: hand-computed fixtures and properties of the CDNOW master file.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use kizuna_analytics::metrics::{
    CustomerOrders, GAP_BUCKETS, MetricsOptions, OrderRecord, StoreMetrics, quantile_sorted, store_metrics,
};
use kizuna_analytics::prepare;

const MASTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/cdnow/CDNOW_master.txt");

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("bad test timestamp {s}: {e}")).with_timezone(&Utc)
}

fn order(at: &str, value: f64, categories: &[&str]) -> OrderRecord {
    OrderRecord { at: ts(at), net_value: value, categories: categories.iter().map(|c| c.to_string()).collect() }
}

fn customer(id: &str, orders: Vec<OrderRecord>) -> CustomerOrders {
    CustomerOrders { customer_id: id.to_string(), orders }
}

fn close(name: &str, got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("{name}: got None, want {want}"));
    assert!((got - want).abs() < 1e-9, "{name}: got {got}, want {want}");
}

fn close_vec(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length of {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{name}: got {got:?}, want {want:?}");
    }
}

const AS_OF: &str = "2024-03-15T12:00:00Z";

/// Four customers with orders, two without (as of 2024-03-15 12:00 UTC):
/// * a — cohort 2024-01, orders 01-05 (100, coffee), 03-01 (40, tea), 03-10 (60, coffee+mug), input unsorted,
///   plus one order after as_of. Gaps 56 and 9 days; coffee gap 65 days (the tea order in between is skipped).
/// * b — cohort 2024-01, orders 01-10 23:00 (20, coffee) and 01-11 01:00 (30, coffee listed twice):
///   gap 1 calendar day although only 2 hours apart; coffee gap 1.
/// * c — cohort 2024-02, one order 02-10 (50).
/// * d — cohort 2024-02, orders 02-03 09:00 and 17:00 (10 each, tea) — same day, not collapsed, gap 0 —
///   and one exactly at as_of (80): gap 41 days.
/// * e — no orders; f — only an order after as_of.
fn fixture() -> Vec<CustomerOrders> {
    vec![
        customer(
            "a",
            vec![
                order("2024-03-10T10:00:00Z", 60.0, &["coffee", "mug"]),
                order("2024-04-01T10:00:00Z", 999.0, &["coffee"]),
                order("2024-01-05T10:00:00Z", 100.0, &["coffee"]),
                order("2024-03-01T10:00:00Z", 40.0, &["tea"]),
            ],
        ),
        customer(
            "b",
            vec![
                order("2024-01-10T23:00:00Z", 20.0, &["coffee"]),
                order("2024-01-11T01:00:00Z", 30.0, &["coffee", "coffee"]),
            ],
        ),
        customer("c", vec![order("2024-02-10T08:00:00Z", 50.0, &[])]),
        customer(
            "d",
            vec![
                order("2024-02-03T17:00:00Z", 10.0, &["tea"]),
                order(AS_OF, 80.0, &[]),
                order("2024-02-03T09:00:00Z", 10.0, &["tea"]),
            ],
        ),
        customer("e", vec![]),
        customer("f", vec![order("2024-03-15T12:00:01Z", 5.0, &["coffee"])]),
    ]
}

fn opts(max_cohort_months: usize) -> MetricsOptions {
    MetricsOptions { as_of: ts(AS_OF), max_cohort_months }
}

#[test]
fn headline_figures() {
    let m = store_metrics(&fixture(), &opts(24));
    assert_eq!(m.customers, 4);
    assert_eq!(m.customers_without_orders, 2, "e has no orders, f only one after as_of");
    assert_eq!(m.orders, 9);
    assert_eq!(m.orders_after_as_of, 2);
    assert_eq!(m.non_finite_values, 0);
    close("revenue", Some(m.revenue), 400.0);
    close("aov", m.aov, 400.0 / 9.0);
    assert_eq!(m.repeat_customers, 3);
    close("repeat rate", m.repeat_purchase_rate, 0.75);
}

#[test]
fn first_vs_repeat_aov() {
    let m = store_metrics(&fixture(), &opts(24));
    let f = &m.first_vs_repeat;
    assert_eq!(f.first_orders, 4);
    // First orders: a 100 (01-05), b 20, c 50, d 10 (the 09:00 one).
    close("first AOV", f.first_order_aov, 180.0 / 4.0);
    assert_eq!(f.repeat_orders, 5);
    // Repeat: a 40 + 60, b 30, d 10 + 80.
    close("repeat AOV", f.repeat_order_aov, 220.0 / 5.0);
}

#[test]
fn cohort_retention_and_cumulative_repeat() {
    let m = store_metrics(&fixture(), &opts(24));
    assert_eq!(m.cohorts.len(), 2);

    let jan = &m.cohorts[0];
    assert_eq!(jan.month, "2024-01");
    assert_eq!(jan.size, 2);
    // January → March: 3 observed months; nobody in the cohort ordered in February.
    assert_eq!(jan.active, vec![2, 0, 1]);
    close_vec("jan retention", &jan.retention, &[1.0, 0.0, 0.5]);
    // b's 2nd order is in January (k = 0), a's in March (k = 2).
    assert_eq!(jan.repeaters, vec![1, 1, 2]);
    close_vec("jan cumulative repeat", &jan.cumulative_repeat, &[0.5, 0.5, 1.0]);

    let feb = &m.cohorts[1];
    assert_eq!(feb.month, "2024-02");
    assert_eq!(feb.size, 2);
    // d ordered in March (exactly at as_of, which counts); March is partly observed, April is not shown.
    assert_eq!(feb.active, vec![2, 1]);
    close_vec("feb retention", &feb.retention, &[1.0, 0.5]);
    // d's second order is the same day as its first.
    assert_eq!(feb.repeaters, vec![1, 1]);
    close_vec("feb cumulative repeat", &feb.cumulative_repeat, &[0.5, 0.5]);
}

#[test]
fn cohort_months_are_capped() {
    let m = store_metrics(&fixture(), &opts(1));
    assert_eq!(m.cohorts[0].active, vec![2, 0]);
    assert_eq!(m.cohorts[0].repeaters, vec![1, 1]);
    assert_eq!(m.cohorts[1].active, vec![2, 1]);
    let m = store_metrics(&fixture(), &opts(0));
    assert!(m.cohorts.iter().all(|c| c.retention == vec![1.0]));
}

#[test]
fn gaps_between_orders() {
    let m = store_metrics(&fixture(), &opts(24));
    let g = &m.order_gaps;
    // Gaps: a 56, 9; b 1; d 0, 41 → sorted [0, 1, 9, 41, 56].
    assert_eq!(g.count, 5);
    close("mean", g.mean_days, 107.0 / 5.0);
    close("p25", g.p25_days, 1.0);
    close("median", g.median_days, 9.0);
    close("p75", g.p75_days, 41.0);
    let counts: Vec<u64> = g.histogram.iter().map(|b| b.count).collect();
    assert_eq!(counts, vec![2, 1, 0, 2, 0, 0, 0, 0]);
    let bounds: Vec<(u32, Option<u32>)> = g.histogram.iter().map(|b| (b.min_days, b.max_days)).collect();
    assert_eq!(bounds, GAP_BUCKETS.to_vec());
}

#[test]
fn per_category_gaps() {
    let m = store_metrics(&fixture(), &opts(24));
    let cats: Vec<(&str, u64, f64)> =
        m.category_gaps.iter().map(|c| (c.category.as_str(), c.count, c.median_days)).collect();
    // coffee: a 01-05 → 03-10 = 65 days, b 1 day; tea: d 0 days (a's single tea order has no gap);
    // mug has no gap and is omitted; f's coffee order is after as_of.
    assert_eq!(cats, vec![("coffee", 2, 33.0), ("tea", 1, 0.0)]);
}

#[test]
fn revenue_per_customer_percentiles() {
    let m = store_metrics(&fixture(), &opts(24));
    let r = &m.revenue_per_customer;
    // Per customer: a 200, b 50, c 50, d 100 → sorted [50, 50, 100, 200], h = 3q.
    close("p10", r.p10, 50.0);
    close("p25", r.p25, 50.0);
    close("p50", r.p50, 75.0);
    close("p75", r.p75, 125.0);
    close("p90", r.p90, 170.0);
    close("p99", r.p99, 197.0);
    close("mean", r.mean, 100.0);
    close("max", r.max, 200.0);
    assert_eq!((r.top_10pct_customers, r.top_20pct_customers), (1, 1));
    close("top 10%", r.top_10pct_share, 0.5);
    close("top 20%", r.top_20pct_share, 0.5);

    // Ten customers spending 1..=10 (total 55).
    let customers: Vec<CustomerOrders> =
        (1..=10).map(|i| customer(&format!("c{i}"), vec![order("2024-01-01T00:00:00Z", f64::from(i), &[])])).collect();
    let r = store_metrics(&customers, &opts(24)).revenue_per_customer;
    close("p10", r.p10, 1.9);
    close("p25", r.p25, 3.25);
    close("p50", r.p50, 5.5);
    close("p90", r.p90, 9.1);
    close("p99", r.p99, 9.91);
    assert_eq!((r.top_10pct_customers, r.top_20pct_customers), (1, 2));
    close("top 10%", r.top_10pct_share, 10.0 / 55.0);
    close("top 20%", r.top_20pct_share, 19.0 / 55.0);
}

#[test]
fn quantile_definition() {
    let x = [10.0, 20.0, 40.0];
    close("q0.5", quantile_sorted(&x, 0.5), 20.0);
    close("q0.75", quantile_sorted(&x, 0.75), 30.0);
    assert_eq!(quantile_sorted(&[], 0.5), None);
}

#[test]
fn input_order_does_not_matter() {
    let base = store_metrics(&fixture(), &opts(24));
    let mut reversed = fixture();
    for c in &mut reversed {
        c.orders.reverse();
    }
    assert_eq!(store_metrics(&reversed, &opts(24)), base);
    let mut rotated = fixture();
    for c in &mut rotated {
        if !c.orders.is_empty() {
            c.orders.rotate_left(1);
        }
    }
    assert_eq!(store_metrics(&rotated, &opts(24)), base);
}

#[test]
fn orders_after_as_of_are_ignored() {
    let base = store_metrics(&fixture(), &opts(24));
    let mut trimmed = fixture();
    for c in &mut trimmed {
        c.orders.retain(|o| o.at <= ts(AS_OF));
    }
    let m = store_metrics(&trimmed, &opts(24));
    assert_eq!(m.orders_after_as_of, 0);
    assert_eq!(StoreMetrics { orders_after_as_of: base.orders_after_as_of, ..m }, base);

    // One second earlier, d's order at 12:00:00 is no longer counted.
    let earlier = MetricsOptions { as_of: ts("2024-03-15T11:59:59Z"), max_cohort_months: 24 };
    let m = store_metrics(&fixture(), &earlier);
    assert_eq!((m.orders, m.orders_after_as_of), (8, 3));
    assert_eq!(m.cohorts[1].active, vec![2, 0]);
}

#[test]
fn empty_input() {
    for input in [vec![], vec![customer("x", vec![]), customer("y", vec![])]] {
        let m = store_metrics(&input, &opts(24));
        assert_eq!(m.customers, 0);
        assert_eq!(m.customers_without_orders, input.len() as u64);
        assert_eq!((m.orders, m.repeat_customers), (0, 0));
        assert_eq!(m.revenue, 0.0);
        assert_eq!((m.aov, m.repeat_purchase_rate), (None, None));
        assert_eq!((m.first_vs_repeat.first_order_aov, m.first_vs_repeat.repeat_order_aov), (None, None));
        assert!(m.cohorts.is_empty() && m.category_gaps.is_empty());
        assert_eq!(m.order_gaps.count, 0);
        assert_eq!(m.order_gaps.median_days, None);
        assert!(m.order_gaps.histogram.iter().all(|b| b.count == 0));
        let r = &m.revenue_per_customer;
        assert_eq!((r.p50, r.mean, r.max, r.top_10pct_share), (None, None, None, None));
        let json = serde_json::to_string(&m).expect("serialise");
        assert!(!json.contains("NaN") && json.contains("\"aov\":null"), "{json}");
        let back: StoreMetrics = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, m);
    }
}

#[test]
fn non_finite_values_count_as_zero() {
    let input = vec![customer(
        "x",
        vec![order("2024-01-01T00:00:00Z", f64::NAN, &[]), order("2024-01-02T00:00:00Z", 10.0, &[])],
    )];
    let m = store_metrics(&input, &opts(24));
    assert_eq!((m.orders, m.non_finite_values), (2, 1));
    close("revenue", Some(m.revenue), 10.0);
    close("first AOV", m.first_vs_repeat.first_order_aov, 0.0);
    assert!(serde_json::to_string(&m).is_ok());
}

fn master_orders() -> (Vec<prepare::CdnowRecord>, Vec<CustomerOrders>) {
    let file = std::fs::File::open(MASTER).unwrap_or_else(|e| {
        panic!("CDNOW master file missing or unreadable at {MASTER}: {e} (see /work/shared/datasets/README.md)")
    });
    let records = prepare::read_cdnow(file).expect("CDNOW master parses");
    let mut by_customer: HashMap<String, Vec<OrderRecord>> = HashMap::new();
    for r in &records {
        let t = r.to_transaction();
        let at = t.date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        by_customer.entry(t.customer_id).or_default().push(OrderRecord { at, net_value: t.amount, categories: vec![] });
    }
    let customers =
        by_customer.into_iter().map(|(customer_id, orders)| CustomerOrders { customer_id, orders }).collect();
    (records, customers)
}

#[test]
fn cdnow_master_properties() {
    let (records, customers) = master_orders();
    let as_of = NaiveDate::from_ymd_opt(1998, 6, 30).expect("date").and_hms_opt(23, 59, 59).expect("time").and_utc();
    let m = store_metrics(&customers, &MetricsOptions { as_of, max_cohort_months: 24 });

    // Independent expectations from the raw records.
    let mut per_customer: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *per_customer.entry(r.customer_id.as_str()).or_default() += 1;
    }
    let expected_revenue: f64 = records.iter().map(|r| r.amount).sum();
    let expected_repeaters = per_customer.values().filter(|&&n| n >= 2).count() as u64;

    assert_eq!(m.customers, 23_570);
    assert_eq!(per_customer.len(), 23_570);
    assert_eq!(m.customers_without_orders, 0);
    assert_eq!(m.orders, records.len() as u64);
    assert_eq!(m.orders_after_as_of, 0);
    assert!(
        (m.revenue - expected_revenue).abs() <= 1e-9 * expected_revenue,
        "revenue {} vs file total {expected_revenue}",
        m.revenue
    );
    assert_eq!(m.repeat_customers, expected_repeaters);
    let rate = m.repeat_purchase_rate.expect("customers exist");
    assert!(rate > 0.0 && rate < 1.0);
    assert!((rate - expected_repeaters as f64 / 23_570.0).abs() < 1e-12);

    // All first purchases were in the first quarter of 1997; the data run to 1998-06.
    let months: Vec<&str> = m.cohorts.iter().map(|c| c.month.as_str()).collect();
    assert_eq!(months, vec!["1997-01", "1997-02", "1997-03"]);
    assert_eq!(m.cohorts.iter().map(|c| c.size).sum::<u64>(), 23_570);
    for (c, len) in m.cohorts.iter().zip([18, 17, 16]) {
        assert_eq!(c.retention.len(), len, "cohort {}", c.month);
        assert_eq!(c.retention[0], 1.0);
        assert!(c.retention.iter().all(|r| (0.0..=1.0).contains(r)));
        assert!(c.cumulative_repeat.windows(2).all(|w| w[0] <= w[1]));
        assert!(c.cumulative_repeat.iter().all(|r| (0.0..=1.0).contains(r)));
    }
    let repeaters_by_end: u64 = m.cohorts.iter().map(|c| c.repeaters.last().copied().unwrap_or(0)).sum();
    assert_eq!(repeaters_by_end, expected_repeaters);

    assert_eq!(m.order_gaps.count, m.orders - m.customers);
    assert_eq!(m.order_gaps.histogram.iter().map(|b| b.count).sum::<u64>(), m.order_gaps.count);
    assert_eq!(m.first_vs_repeat.first_orders + m.first_vs_repeat.repeat_orders, m.orders);
    let r = &m.revenue_per_customer;
    let (p10, p50, p90, max) = (r.p10.expect("p10"), r.p50.expect("p50"), r.p90.expect("p90"), r.max.expect("max"));
    assert!(p10 <= p50 && p50 <= p90 && p90 <= max);
    println!(
        "CDNOW: {} customers, {} orders, revenue {:.2}, repeat rate {:.4}, median gap {:?} days, top 10% share {:?}",
        m.customers, m.orders, m.revenue, rate, m.order_gaps.median_days, r.top_10pct_share
    );
}

/// One million customers with three orders each. Run with
/// `cargo test --release -p kizuna-analytics --test metrics -- --ignored --nocapture`.
#[test]
#[ignore = "performance check; run in release"]
fn one_million_customers() {
    let start = ts("2022-01-01T00:00:00Z");
    let categories = ["coffee", "tea", "mugs", "filters"];
    let customers: Vec<CustomerOrders> = (0..1_000_000u64)
        .map(|i| CustomerOrders {
            customer_id: format!("c{i}"),
            orders: (0..3u64)
                .map(|j| OrderRecord {
                    at: start + TimeDelta::hours(((i * 7919 + j * 104_729) % 17_000) as i64),
                    net_value: 10.0 + (i % 97) as f64 + j as f64,
                    categories: vec![categories[((i + j) % 4) as usize].to_string()],
                })
                .collect(),
        })
        .collect();
    let opts = MetricsOptions { as_of: ts("2024-01-01T00:00:00Z"), max_cohort_months: 24 };
    let t = Instant::now();
    let m = store_metrics(&customers, &opts);
    let elapsed = t.elapsed();
    println!("1M customers / {} orders: {elapsed:?}", m.orders);
    assert_eq!(m.customers, 1_000_000);
    assert!(elapsed.as_secs_f64() < 2.0, "took {elapsed:?}");
}
