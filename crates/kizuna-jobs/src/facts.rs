//! What analytics reads from a profile: its net orders and the behaviour counts the journey rule needs.

use chrono::NaiveDate;
use kizuna_analytics::Transaction;
use kizuna_analytics::journey::JourneyFacts;
use kizuna_analytics::metrics::OrderRecord;
use kizuna_ingest::{EcommerceEvent, classify};
use kizuna_profiles::ProfileState;

/// The profile's orders as analytics counts them: cancelled orders dropped, refunds netted out, orders whose
/// net value is zero or less dropped (a fully refunded order is not a purchase), oldest first.
pub fn net_orders(state: &ProfileState) -> Vec<OrderRecord> {
    let mut orders: Vec<OrderRecord> = state
        .computed
        .orders()
        .filter(|o| !o.cancelled && o.value > 0.0)
        .map(|o| OrderRecord { at: o.at, net_value: o.value - o.refunded, categories: o.categories.to_vec() })
        .filter(|o| o.net_value > 0.0)
        .collect();
    orders.sort_by_key(|o| o.at);
    orders
}

/// The net orders as model transactions (one per order; the models collapse same-day orders themselves).
pub fn transactions(customer_id: &str, orders: &[OrderRecord], until: NaiveDate) -> Vec<Transaction> {
    orders
        .iter()
        .filter(|o| o.at.date_naive() <= until)
        .map(|o| Transaction::from_datetime(customer_id, o.at, o.net_value))
        .collect()
}

/// Behaviour counts for [`kizuna_analytics::journey::stage`], from the profile's per-event-name counts (names
/// are matched the way ingestion classifies them, so "order completed" counts as "Order Completed").
pub fn journey_facts(state: &ProfileState, orders: &[OrderRecord]) -> JourneyFacts {
    let computed = &state.computed;
    let mut facts = JourneyFacts {
        first_seen: computed.first_seen(),
        last_seen: computed.last_seen(),
        orders: u32::try_from(orders.len()).unwrap_or(u32::MAX),
        first_order_at: orders.first().map(|o| o.at),
        last_order_at: orders.last().map(|o| o.at),
        revenue: orders.iter().map(|o| o.net_value).sum(),
        ..JourneyFacts::default()
    };
    for (name, count) in computed.event_counts() {
        match name.as_str() {
            "page" | "screen" => facts.page_views += count,
            _ => match classify(name) {
                Some(EcommerceEvent::ProductsSearched) => facts.searches += count,
                Some(EcommerceEvent::ProductViewed | EcommerceEvent::ProductClicked) => facts.product_views += count,
                Some(EcommerceEvent::ProductAdded) => facts.cart_adds += count,
                Some(EcommerceEvent::CheckoutStarted) => facts.checkouts += count,
                Some(EcommerceEvent::ProductReviewed | EcommerceEvent::ProductShared | EcommerceEvent::CartShared) => {
                    facts.advocacy_events += count
                }
                _ if is_referral(name) => facts.advocacy_events += count,
                _ => {}
            },
        }
    }
    facts
}

/// Referral programmes name their events freely ("Referral Sent", "Friend Referred"); any event naming a
/// referral is advocacy.
fn is_referral(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("referral") || lower.contains("referred")
}

/// A profile's computed attributes as the API, segments and templates see them: what the events say
/// (orders, revenue, affinities, location…), the latest analytics scores, and the journey stage at `now`.
pub fn computed_attributes(
    state: &ProfileState,
    scores: Option<&serde_json::Value>,
    now: chrono::DateTime<chrono::Utc>,
    purchase_window_days: f64,
) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(mut fields) = state.computed.summary() else { return serde_json::Map::new() };
    if let Some(serde_json::Value::Object(scores)) = scores {
        for (key, value) in scores {
            fields.insert(key.clone(), value.clone());
        }
    }
    let orders = net_orders(state);
    let facts = journey_facts(state, &orders);
    let rules = kizuna_analytics::journey::JourneyRules { purchase_window_days };
    let stage = kizuna_analytics::journey::stage(&facts, now, &rules);
    fields.insert("journey_stage".into(), serde_json::json!(stage));
    fields
}
