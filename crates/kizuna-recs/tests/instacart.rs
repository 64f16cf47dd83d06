//! Frequently bought together on real baskets (../shared/datasets/instacart-sample).

use kizuna_catalog::Product;
use kizuna_recs::{Placement, RankingSettings, Rankings, Request, Rules, Signals, Strategy, recommend};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;

fn dataset() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/instacart-sample");
    assert!(dir.join("order_products__prior.csv").exists(), "dataset missing: {}", dir.display());
    dir
}

fn rows(path: PathBuf) -> Vec<csv::StringRecord> {
    let mut reader = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    reader.records().map(|r| r.expect("csv row")).collect()
}

#[test]
fn bought_together_on_instacart_baskets_has_lift_and_never_the_product_itself() {
    let dir = dataset();
    let mut signals = Signals::default();
    let mut department: HashMap<String, String> = HashMap::new();
    for r in rows(dir.join("products.csv")) {
        let product: Product = serde_json::from_value(json!({
            "id": &r[0], "title": &r[1], "price": 1.0, "categories": [format!("aisle-{}", &r[2])],
        }))
        .expect("product");
        department.insert(r[0].to_owned(), r[3].to_owned());
        signals.upsert_product(product);
    }
    let mut baskets: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows(dir.join("order_products__prior.csv")) {
        baskets.entry(r[0].to_owned()).or_default().push(r[1].to_owned());
    }
    let mut orders: Vec<_> = baskets.into_iter().collect();
    orders.sort();
    for (n, (order, items)) in orders.iter().enumerate() {
        let products: Vec<_> = items.iter().map(|id| json!({"product_id": id})).collect();
        signals.apply_event(
            n as u64,
            "Order Completed",
            1_500_000_000,
            &json!({"order_id": order, "products": products}),
        );
    }
    assert!(signals.baskets() > 3000, "{} baskets", signals.baskets());

    // The 20 products in most baskets.
    let mut popular: Vec<(u32, u32)> = signals.items.iter().map(|(ix, _)| (signals.baskets_with(ix), ix)).collect();
    popular.sort_by(|a, b| b.cmp(a));
    let placement = Placement {
        name: "fbt".into(),
        description: String::new(),
        strategy: Strategy::FrequentlyBoughtTogether { min_support: 3 },
        rules: Rules { affinity_weight: 0.0, ..Rules::default() },
        fallback: vec![],
        limit: 5,
    };
    let rankings = Rankings::build(&signals, &RankingSettings::default(), 1_500_000_000);
    let total = signals.baskets() as f64;
    let mut with_answers = 0;
    let mut same_department = 0;
    let mut answers = 0;
    for &(_, ix) in popular.iter().take(20) {
        let request = Request { context: vec![ix], limit: 5, now: 1_500_000_000, ..Request::default() };
        let recs = recommend(&placement, &request, &signals, &rankings, None);
        let name = &signals.items.product(ix).title;
        if !recs.is_empty() {
            with_answers += 1;
        }
        for rec in &recs {
            assert_ne!(rec.item, ix, "{name} recommended with itself");
            let n_ab = signals.co_purchase(ix).find(|(b, _)| *b == rec.item).map_or(0, |(_, n)| n);
            assert!(n_ab >= 3, "support {n_ab} below the minimum");
            let lift = f64::from(n_ab) * total
                / (f64::from(signals.baskets_with(ix)) * f64::from(signals.baskets_with(rec.item)));
            assert!(lift > 1.0, "{name} → {}: lift {lift}", signals.items.product(rec.item).title);
            let a = &department[&signals.items.product(ix).id];
            let b = &department[&signals.items.product(rec.item).id];
            answers += 1;
            if a == b {
                same_department += 1;
            }
            println!("{name} → {} (support {n_ab}, lift {lift:.2})", signals.items.product(rec.item).title);
        }
    }
    assert!(with_answers >= 15, "only {with_answers} of the 20 most bought products have complements");
    // Plausible: complements come from the same shopping context far more often than chance would put them
    // there (the sample spans 21 departments; produce alone is ~30% of lines).
    assert!(same_department * 10 >= answers * 4, "{same_department} of {answers} in the same department");
}
