//! Customer journey stages and the journey funnel.
//!
//! Pure computation: no I/O and no clock reads — "now" is a parameter.
//!
//! ## Stages
//! The journey is awareness → consideration → decision → purchase → post-purchase →
//! retention → advocacy. Every profile is in **exactly one** stage: the highest (last in that
//! order) whose condition it meets. The conditions, checked from the top:
//!
//! | Stage | Condition (from [`JourneyFacts`]) |
//! |---|---|
//! | Advocacy | `orders ≥ 1` and `advocacy_events ≥ 1` (wrote a review, referred someone, shared) |
//! | Retention | `orders ≥ 2` |
//! | Post-purchase | `orders = 1` and the order is **more than** `purchase_window_days` old at `now` |
//! | Purchase | `orders = 1` and the order is **at most** `purchase_window_days` old at `now` |
//! | Decision | `orders = 0` and (`cart_adds ≥ 1` or `checkouts ≥ 1`) |
//! | Consideration | `orders = 0`, no cart or checkout, and (`product_views ≥ 1` or `searches ≥ 1`) |
//! | Awareness | everyone else: known profiles with page views only, or no behaviour at all (e.g. only identified through a newsletter signup) |
//!
//! Details:
//! * The age of the single order is `now − last_order_at` (falling back to `first_order_at`),
//!   in days including fractions. An order exactly `purchase_window_days` old is still in
//!   Purchase; one millisecond later it is in Post-purchase. An order dated after `now`
//!   (clock skew) has a negative age and is in Purchase.
//! * A profile with `orders = 1` but no order timestamp is placed in Post-purchase: its
//!   purchase cannot be shown to be recent.
//! * Advocacy events of a profile that never ordered do not make it an advocate; such a
//!   profile is staged by its browsing like any other non-buyer.
//! * The rule is total: every [`JourneyFacts`] value, including the all-zero default, has a
//!   stage (the default is Awareness).
//!
//! ## Funnel
//! [`funnel`] counts the profiles per stage (`count`) and, because stages are ordered, the
//! profiles **at this stage or beyond** (`reached`, cumulative, so non-increasing along the
//! journey). `conversion_from_previous` is `reached(k) / reached(k − 1)`; it is `None` for
//! Awareness and when `reached(k − 1) = 0`. "Reached" follows the stage order, not the exact
//! path: an advocate with a single order counts as having reached Retention.
//!
//! Each stage has one KPI, computed from [`JourneyFacts`] over **all** profiles passed in
//! (not only those currently in the stage); `None` when its denominator is empty. A
//! non-finite `revenue` counts as 0.
//!
//! | Stage | KPI name | Definition |
//! |---|---|---|
//! | Awareness | `browse_rate` | profiles with `product_views ≥ 1` / all profiles |
//! | Consideration | `add_to_cart_rate` | profiles with `product_views ≥ 1` and `cart_adds ≥ 1` / profiles with `product_views ≥ 1` |
//! | Decision | `checkout_conversion` | profiles with `checkouts ≥ 1` and `orders ≥ 1` / profiles with `checkouts ≥ 1` |
//! | Purchase | `first_time_buyer_revenue` | mean net `revenue` of profiles with exactly one order (an AOV proxy for first orders) |
//! | Post-purchase | `repeat_rate` | profiles with `orders ≥ 2` / profiles with `orders ≥ 1` |
//! | Retention | `orders_per_repeat_customer` | mean `orders` of profiles with `orders ≥ 2` |
//! | Advocacy | `advocacy_rate` | profiles with `orders ≥ 1` and `advocacy_events ≥ 1` / profiles with `orders ≥ 1` |

use std::borrow::Borrow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A journey stage. Ordered along the journey (`Awareness < … < Advocacy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Known, but has not browsed products.
    Awareness,
    /// Viewed products or searched, nothing in the cart yet.
    Consideration,
    /// Added to cart or started checkout, never ordered.
    Decision,
    /// One order, placed within the purchase window.
    Purchase,
    /// One order, older than the purchase window.
    PostPurchase,
    /// Two or more orders.
    Retention,
    /// Ordered and wrote a review, referred someone or shared.
    Advocacy,
}

impl Stage {
    /// All stages in journey order.
    pub const ALL: [Stage; 7] = [
        Stage::Awareness,
        Stage::Consideration,
        Stage::Decision,
        Stage::Purchase,
        Stage::PostPurchase,
        Stage::Retention,
        Stage::Advocacy,
    ];

    /// Human-readable label, e.g. `"Post-purchase"`.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Awareness => "Awareness",
            Stage::Consideration => "Consideration",
            Stage::Decision => "Decision",
            Stage::Purchase => "Purchase",
            Stage::PostPurchase => "Post-purchase",
            Stage::Retention => "Retention",
            Stage::Advocacy => "Advocacy",
        }
    }

    /// Machine name, as serialised (snake_case), e.g. `"post_purchase"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Awareness => "awareness",
            Stage::Consideration => "consideration",
            Stage::Decision => "decision",
            Stage::Purchase => "purchase",
            Stage::PostPurchase => "post_purchase",
            Stage::Retention => "retention",
            Stage::Advocacy => "advocacy",
        }
    }

    /// Position in the journey (0 = Awareness … 6 = Advocacy).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one profile, as needed for its journey stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JourneyFacts {
    /// First event or identification.
    pub first_seen: Option<DateTime<Utc>>,
    /// Latest event.
    pub last_seen: Option<DateTime<Utc>>,
    /// Page views.
    pub page_views: u64,
    /// Searches.
    pub searches: u64,
    /// Product views.
    pub product_views: u64,
    /// Add-to-cart events.
    pub cart_adds: u64,
    /// Checkouts started.
    pub checkouts: u64,
    /// Orders that were not cancelled and not fully refunded.
    pub orders: u32,
    /// Time of the first such order.
    pub first_order_at: Option<DateTime<Utc>>,
    /// Time of the latest such order.
    pub last_order_at: Option<DateTime<Utc>>,
    /// Net revenue of those orders.
    pub revenue: f64,
    /// Reviews written, referrals, shares.
    pub advocacy_events: u64,
}

/// Parameters of the stage rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JourneyRules {
    /// A single order at most this many days old puts the profile in Purchase, an older one in
    /// Post-purchase. Default 30.
    pub purchase_window_days: f64,
}

impl Default for JourneyRules {
    fn default() -> Self {
        JourneyRules { purchase_window_days: 30.0 }
    }
}

const MS_PER_DAY: f64 = 86_400_000.0;

/// The journey stage of one profile at `now`; see the [module documentation](self) for the rule.
pub fn stage(facts: &JourneyFacts, now: DateTime<Utc>, rules: &JourneyRules) -> Stage {
    if facts.orders >= 1 && facts.advocacy_events >= 1 {
        return Stage::Advocacy;
    }
    if facts.orders >= 2 {
        return Stage::Retention;
    }
    if facts.orders == 1 {
        return match facts.last_order_at.or(facts.first_order_at) {
            Some(at) if (now - at).num_milliseconds() as f64 / MS_PER_DAY <= rules.purchase_window_days => {
                Stage::Purchase
            }
            _ => Stage::PostPurchase,
        };
    }
    if facts.cart_adds >= 1 || facts.checkouts >= 1 {
        return Stage::Decision;
    }
    if facts.product_views >= 1 || facts.searches >= 1 {
        return Stage::Consideration;
    }
    Stage::Awareness
}

/// The journey funnel over a set of profiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Funnel {
    /// Number of profiles.
    pub profiles: u64,
    /// One entry per stage, in journey order ([`Stage::ALL`]).
    pub stages: Vec<FunnelStage>,
}

/// One stage of the [`Funnel`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelStage {
    /// The stage.
    pub stage: Stage,
    /// Its label ([`Stage::label`]).
    pub label: String,
    /// Profiles currently in this stage.
    pub count: u64,
    /// Profiles at this stage or beyond.
    pub reached: u64,
    /// `reached / reached of the previous stage`; `None` for the first stage or when the previous reached 0.
    pub conversion_from_previous: Option<f64>,
    /// The stage's KPI.
    pub kpi: Kpi,
}

/// A key performance indicator of a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kpi {
    /// Machine name, e.g. `"add_to_cart_rate"`.
    pub name: String,
    /// Value; `None` when the denominator is empty.
    pub value: Option<f64>,
    /// One-line definition.
    pub definition: String,
}

/// Counts accumulated for the KPIs.
#[derive(Default)]
struct KpiCounts {
    product_viewers: u64,
    viewers_with_cart: u64,
    checkout_starters: u64,
    checkout_starters_with_order: u64,
    one_order: u64,
    one_order_revenue: f64,
    buyers: u64,
    repeat_buyers: u64,
    repeat_buyer_orders: u64,
    buyer_advocates: u64,
}

fn ratio(num: f64, den: u64) -> Option<f64> {
    (den > 0).then(|| num / den as f64)
}

/// The journey funnel of `profiles` at `now`: per stage the current count, the cumulative
/// `reached`, the conversion from the previous stage and the stage KPI (see the
/// [module documentation](self)). Accepts owned or borrowed [`JourneyFacts`].
pub fn funnel<I>(profiles: I, now: DateTime<Utc>, rules: &JourneyRules) -> Funnel
where
    I: IntoIterator,
    I::Item: Borrow<JourneyFacts>,
{
    let mut counts = [0u64; Stage::ALL.len()];
    let mut k = KpiCounts::default();
    let mut total = 0u64;
    for p in profiles {
        let f = p.borrow();
        total += 1;
        counts[stage(f, now, rules).index()] += 1;
        if f.product_views >= 1 {
            k.product_viewers += 1;
            if f.cart_adds >= 1 {
                k.viewers_with_cart += 1;
            }
        }
        if f.checkouts >= 1 {
            k.checkout_starters += 1;
            if f.orders >= 1 {
                k.checkout_starters_with_order += 1;
            }
        }
        if f.orders >= 1 {
            k.buyers += 1;
            if f.advocacy_events >= 1 {
                k.buyer_advocates += 1;
            }
        }
        if f.orders == 1 {
            k.one_order += 1;
            if f.revenue.is_finite() {
                k.one_order_revenue += f.revenue;
            }
        }
        if f.orders >= 2 {
            k.repeat_buyers += 1;
            k.repeat_buyer_orders += u64::from(f.orders);
        }
    }

    let kpis = [
        Kpi {
            name: "browse_rate".into(),
            value: ratio(k.product_viewers as f64, total),
            definition: "Share of all known profiles that viewed at least one product.".into(),
        },
        Kpi {
            name: "add_to_cart_rate".into(),
            value: ratio(k.viewers_with_cart as f64, k.product_viewers),
            definition: "Share of product viewers that added something to the cart.".into(),
        },
        Kpi {
            name: "checkout_conversion".into(),
            value: ratio(k.checkout_starters_with_order as f64, k.checkout_starters),
            definition: "Share of profiles that started a checkout and have at least one order.".into(),
        },
        Kpi {
            name: "first_time_buyer_revenue".into(),
            value: ratio(k.one_order_revenue, k.one_order),
            definition: "Mean net revenue of customers with exactly one order (AOV proxy for first orders).".into(),
        },
        Kpi {
            name: "repeat_rate".into(),
            value: ratio(k.repeat_buyers as f64, k.buyers),
            definition: "Share of customers (at least one order) with two or more orders.".into(),
        },
        Kpi {
            name: "orders_per_repeat_customer".into(),
            value: ratio(k.repeat_buyer_orders as f64, k.repeat_buyers),
            definition: "Mean number of orders of customers with two or more orders.".into(),
        },
        Kpi {
            name: "advocacy_rate".into(),
            value: ratio(k.buyer_advocates as f64, k.buyers),
            definition: "Share of customers (at least one order) with a review, referral or share.".into(),
        },
    ];

    let mut reached = [0u64; Stage::ALL.len()];
    let mut running = 0u64;
    for i in (0..Stage::ALL.len()).rev() {
        running += counts[i];
        reached[i] = running;
    }

    let stages = Stage::ALL
        .iter()
        .zip(kpis)
        .enumerate()
        .map(|(i, (&s, kpi))| FunnelStage {
            stage: s,
            label: s.label().to_string(),
            count: counts[i],
            reached: reached[i],
            conversion_from_previous: i.checked_sub(1).and_then(|p| ratio(reached[i] as f64, reached[p])),
            kpi,
        })
        .collect();
    Funnel { profiles: total, stages }
}
