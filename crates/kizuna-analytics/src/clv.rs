//! Customer lifetime value and per-customer predictions.

use serde::{Deserialize, Serialize};

use crate::TransactionModel;
use crate::gamma_gamma::GammaGamma;
use crate::prepare::CustomerSummary;

/// Options for [`customer_lifetime_value`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClvOptions {
    /// Number of discounting periods in the horizon (e.g. 12 months).
    pub periods: u32,
    /// Length of one period in model time units (e.g. 4.345 weeks or 30 days for a month).
    pub period_length: f64,
    /// Discount rate per period (e.g. 0.01 per month).
    pub discount_rate: f64,
    /// Multiplier applied to expected spend (profit margin; 1.0 for revenue).
    pub margin: f64,
}

impl Default for ClvOptions {
    /// 12 months of 4.345 weeks, 1 % monthly discount, revenue (margin 1).
    fn default() -> Self {
        ClvOptions { periods: 12, period_length: 4.345, discount_rate: 0.01, margin: 1.0 }
    }
}

/// Discounted CLV over the horizon:
///
/// `CLV = margin · E[M] · Σ_{k=1..K} (E[Y(k·L)] − E[Y((k−1)·L)]) / (1 + d)^k`
///
/// where `E[Y(t)]` is the transaction model's conditional expected purchase count,
/// `E[M]` the Gamma–Gamma conditional expected spend, `L` the period length, `K` the number
/// of periods and `d` the per-period discount rate (the lifetimes `customer_lifetime_value`
/// scheme). Purchases expected in period `k` are discounted by a full period `k`.
pub fn customer_lifetime_value(
    model: &dyn TransactionModel,
    spend: &GammaGamma,
    customer: &CustomerSummary,
    opts: &ClvOptions,
) -> f64 {
    let x = f64::from(customer.frequency);
    let expected_spend = spend.conditional_expected_spend(x, customer.monetary) * opts.margin;
    let mut previous = 0.0;
    let mut total = 0.0;
    for k in 1..=opts.periods {
        let cumulative = model.conditional_expected(f64::from(k) * opts.period_length, x, customer.recency, customer.t);
        total += (cumulative - previous).max(0.0) / (1.0 + opts.discount_rate).powi(k as i32);
        previous = cumulative;
    }
    expected_spend * total
}

/// The time until the conditional expected purchase count reaches 1, i.e. the smallest `t`
/// with `E[Y(t) | x, t_x, T] >= 1`, found by bisection to 1e-6 units. `None` if the expected
/// count stays below one up to `max_t` (the model expects less than one more purchase).
pub fn expected_time_to_next_purchase(
    model: &dyn TransactionModel,
    x: f64,
    t_x: f64,
    big_t: f64,
    max_t: f64,
) -> Option<f64> {
    let e = |t: f64| model.conditional_expected(t, x, t_x, big_t);
    let reaches_one = e(max_t) >= 1.0;
    if max_t.is_nan() || max_t <= 0.0 || !reaches_one {
        return None;
    }
    let (mut lo, mut hi) = (0.0, max_t);
    while hi - lo > 1e-6 * (1.0 + hi) {
        let mid = 0.5 * (lo + hi);
        if e(mid) >= 1.0 { hi = mid } else { lo = mid }
    }
    Some(hi)
}

/// Options for [`predict`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictOptions {
    /// Horizon for `expected_purchases`, in model time units.
    pub horizon: f64,
    /// Search limit for the next purchase time, in model time units.
    pub next_purchase_max: f64,
    /// CLV settings (used when a spend model is given).
    pub clv: ClvOptions,
}

impl Default for PredictOptions {
    /// 52-unit horizon (a year in weeks), next-purchase search up to 520 units, default CLV.
    fn default() -> Self {
        PredictOptions { horizon: 52.0, next_purchase_max: 520.0, clv: ClvOptions::default() }
    }
}

/// Everything Kizuna shows per customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerPrediction {
    /// Customer identifier.
    pub customer_id: String,
    /// Probability the customer is still active.
    pub p_alive: f64,
    /// `1 − p_alive`.
    pub churn_risk: f64,
    /// No repeat purchase in calibration (`frequency == 0`).
    pub one_time_buyer: bool,
    /// Name of the model `p_alive` came from (differs from the main model for one-time buyers
    /// when a fallback is given).
    pub p_alive_model: String,
    /// Conditional expected purchases within `horizon`.
    pub expected_purchases: f64,
    /// Units after the end of calibration until one more purchase is expected (see
    /// [`expected_time_to_next_purchase`]).
    pub next_purchase_in: Option<f64>,
    /// Gamma–Gamma conditional expected average order value (with a spend model).
    pub expected_spend: Option<f64>,
    /// Discounted CLV (with a spend model).
    pub clv: Option<f64>,
}

/// Per-customer predictions. For one-time buyers `p_alive` comes from `one_time_model` when
/// given (Kizuna passes its Pareto/NBD fit) and from `model` otherwise (for BG/NBD that is
/// exactly 1 — the flag `one_time_buyer` tells consumers not to read it as a churn signal).
pub fn predict(
    customers: &[CustomerSummary],
    model: &dyn TransactionModel,
    one_time_model: Option<&dyn TransactionModel>,
    spend: Option<&GammaGamma>,
    opts: &PredictOptions,
) -> Vec<CustomerPrediction> {
    customers
        .iter()
        .map(|c| {
            let x = f64::from(c.frequency);
            let one_time_buyer = c.frequency == 0;
            let alive_model = match one_time_model {
                Some(m) if one_time_buyer => m,
                _ => model,
            };
            let p_alive = alive_model.p_alive(x, c.recency, c.t).clamp(0.0, 1.0);
            CustomerPrediction {
                customer_id: c.customer_id.clone(),
                p_alive,
                churn_risk: 1.0 - p_alive,
                one_time_buyer,
                p_alive_model: alive_model.name().to_string(),
                expected_purchases: model.conditional_expected(opts.horizon, x, c.recency, c.t),
                next_purchase_in: expected_time_to_next_purchase(model, x, c.recency, c.t, opts.next_purchase_max),
                expected_spend: spend.map(|g| g.conditional_expected_spend(x, c.monetary)),
                clv: spend.map(|g| customer_lifetime_value(model, g, c, &opts.clv)),
            }
        })
        .collect()
}
