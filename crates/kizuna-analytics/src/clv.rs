//! Customer lifetime value and per-customer predictions.

use std::collections::HashMap;

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
///
/// The values are those of [`TransactionModel::conditional_expected`],
/// [`expected_time_to_next_purchase`] and [`customer_lifetime_value`], bit for bit, but computed
/// faster: customers are split across the available cores; for models with
/// [`TransactionModel::expected_if_alive`] the expensive part of every expectation is computed once
/// per distinct `(x, T)` and multiplied by each customer's P(alive); and the next-purchase bisection
/// is replayed against a tight bracket of the root found by Brent's method (so it evaluates the
/// model a handful of times instead of ~30), with results cached per distinct `(x, t_x, T)`.
pub fn predict(
    customers: &[CustomerSummary],
    model: &dyn TransactionModel,
    one_time_model: Option<&dyn TransactionModel>,
    spend: Option<&GammaGamma>,
    opts: &PredictOptions,
) -> Vec<CustomerPrediction> {
    let placeholder = CustomerPrediction {
        customer_id: String::new(),
        p_alive: 0.0,
        churn_risk: 0.0,
        one_time_buyer: false,
        p_alive_model: String::new(),
        expected_purchases: 0.0,
        next_purchase_in: None,
        expected_spend: None,
        clv: None,
    };
    let mut out = vec![placeholder; customers.len()];
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(customers.len() / 256).max(1);
    let chunk = customers.len().div_ceil(threads).max(1);
    let predictor = Predictor::new(model, one_time_model, spend, opts);
    if threads == 1 {
        predictor.run(customers, &mut out);
    } else {
        std::thread::scope(|scope| {
            for (input, output) in customers.chunks(chunk).zip(out.chunks_mut(chunk)) {
                let predictor = &predictor;
                scope.spawn(move || predictor.run(input, output));
            }
        });
    }
    out
}

struct Predictor<'a> {
    model: &'a dyn TransactionModel,
    one_time_model: Option<&'a dyn TransactionModel>,
    spend: Option<&'a GammaGamma>,
    opts: &'a PredictOptions,
    /// `(1 + d)^k` for the CLV periods.
    discount: Vec<f64>,
    /// Whether the model factors its conditional expectation (see `expected_if_alive`).
    factored: bool,
}

/// What customers with the same `(x, T)` share: `E[Y(t) | alive]` at the horizon, at the end of
/// every CLV period and at the next-purchase search limit, on a grid of the search range (to
/// bracket next-purchase roots), and the one-time model's P(alive) at `t_x = 0`.
struct Group {
    at_horizon: f64,
    periods: Vec<f64>,
    at_max: f64,
    grid: Vec<(f64, f64)>,
    one_time_alive: Option<f64>,
}

/// Grid points (in fractions of the search limit) used to bracket next-purchase roots.
const GRID: [f64; 14] = [
    1.0 / 4096.0,
    1.0 / 1024.0,
    1.0 / 256.0,
    1.0 / 128.0,
    1.0 / 64.0,
    1.0 / 32.0,
    3.0 / 64.0,
    1.0 / 16.0,
    3.0 / 32.0,
    1.0 / 8.0,
    3.0 / 16.0,
    1.0 / 4.0,
    3.0 / 8.0,
    1.0 / 2.0,
];

impl<'a> Predictor<'a> {
    fn new(
        model: &'a dyn TransactionModel,
        one_time_model: Option<&'a dyn TransactionModel>,
        spend: Option<&'a GammaGamma>,
        opts: &'a PredictOptions,
    ) -> Self {
        let discount = (1..=opts.clv.periods).map(|k| (1.0 + opts.clv.discount_rate).powi(k as i32)).collect();
        let factored = model.expected_if_alive(1.0, 0.0, 1.0).is_some();
        Predictor { model, one_time_model, spend, opts, discount, factored }
    }

    fn ea(&self, t: f64, x: f64, big_t: f64) -> f64 {
        self.model.expected_if_alive(t, x, big_t).unwrap_or(f64::NAN)
    }

    fn group(&self, x: f64, big_t: f64) -> Group {
        let max_t = self.opts.next_purchase_max;
        let clv = &self.opts.clv;
        Group {
            at_horizon: self.ea(self.opts.horizon, x, big_t),
            periods: if self.spend.is_some() {
                (1..=clv.periods).map(|k| self.ea(f64::from(k) * clv.period_length, x, big_t)).collect()
            } else {
                Vec::new()
            },
            at_max: self.ea(max_t, x, big_t),
            grid: Vec::new(),
            one_time_alive: match self.one_time_model {
                Some(m) if x == 0.0 => Some(m.p_alive(0.0, 0.0, big_t)),
                _ => None,
            },
        }
    }

    fn run(&self, customers: &[CustomerSummary], out: &mut [CustomerPrediction]) {
        let mut groups: HashMap<(u32, u64), Group, FastHash> = HashMap::default();
        let mut roots: HashMap<(u32, u64, u64), Option<f64>, FastHash> = HashMap::default();
        for (c, o) in customers.iter().zip(out.iter_mut()) {
            *o = if self.factored { self.predict_factored(c, &mut groups, &mut roots) } else { self.predict_one(c) };
        }
    }

    /// The definition: one customer with the public functions.
    fn predict_one(&self, c: &CustomerSummary) -> CustomerPrediction {
        let model = self.model;
        let x = f64::from(c.frequency);
        let one_time_buyer = c.frequency == 0;
        let alive_model = match self.one_time_model {
            Some(m) if one_time_buyer => m,
            _ => model,
        };
        let p_alive = alive_model.p_alive(x, c.recency, c.t).clamp(0.0, 1.0);
        let opts = self.opts;
        CustomerPrediction {
            customer_id: c.customer_id.clone(),
            p_alive,
            churn_risk: 1.0 - p_alive,
            one_time_buyer,
            p_alive_model: alive_model.name().to_string(),
            expected_purchases: model.conditional_expected(opts.horizon, x, c.recency, c.t),
            next_purchase_in: expected_time_to_next_purchase(model, x, c.recency, c.t, opts.next_purchase_max),
            expected_spend: self.spend.map(|g| g.conditional_expected_spend(x, c.monetary)),
            clv: self.spend.map(|g| customer_lifetime_value(model, g, c, &opts.clv)),
        }
    }

    /// The same values as [`Self::predict_one`] from the customer's P(alive) and its group.
    fn predict_factored(
        &self,
        c: &CustomerSummary,
        groups: &mut HashMap<(u32, u64), Group, FastHash>,
        roots: &mut HashMap<(u32, u64, u64), Option<f64>, FastHash>,
    ) -> CustomerPrediction {
        let x = f64::from(c.frequency);
        let one_time_buyer = c.frequency == 0;
        let group = groups.entry((c.frequency, c.t.to_bits())).or_insert_with(|| self.group(x, c.t));
        // Raw P(alive) of the main model: what conditional_expected multiplies by.
        let p = self.model.p_alive(x, c.recency, c.t);
        let (alive_model, reported) = match self.one_time_model {
            Some(m) if one_time_buyer => {
                let v = match group.one_time_alive {
                    Some(v) if c.recency.to_bits() == 0 => v,
                    _ => m.p_alive(x, c.recency, c.t),
                };
                (m, v)
            }
            _ => (self.model, p),
        };
        let p_alive = reported.clamp(0.0, 1.0);
        let opts = self.opts;
        let expected = |ea: f64| (ea * p).max(0.0);
        let expected_purchases = if opts.horizon <= 0.0 { 0.0 } else { expected(group.at_horizon) };
        let next_purchase_in = *roots
            .entry((c.frequency, c.recency.to_bits(), c.t.to_bits()))
            .or_insert_with(|| self.next_purchase(group, x, c.t, p));
        let clv = self.spend.map(|g| {
            let clv_opts = &opts.clv;
            let expected_spend = g.conditional_expected_spend(x, c.monetary) * clv_opts.margin;
            let mut previous = 0.0;
            let mut total = 0.0;
            for (k, (&ea, &discount)) in group.periods.iter().zip(&self.discount).enumerate() {
                let t = f64::from(k as u32 + 1) * clv_opts.period_length;
                let cumulative = if t <= 0.0 { 0.0 } else { expected(ea) };
                total += (cumulative - previous).max(0.0) / discount;
                previous = cumulative;
            }
            expected_spend * total
        });
        CustomerPrediction {
            customer_id: c.customer_id.clone(),
            p_alive,
            churn_risk: 1.0 - p_alive,
            one_time_buyer,
            p_alive_model: alive_model.name().to_string(),
            expected_purchases,
            next_purchase_in,
            expected_spend: self.spend.map(|g| g.conditional_expected_spend(x, c.monetary)),
            clv,
        }
    }

    /// [`expected_time_to_next_purchase`] for a factored model, bit for bit: the bisection there
    /// only asks whether `E[Y(mid)] >= 1`, which (`E` increasing in `t`) is known without
    /// evaluating the model when `mid` lies outside a bracket `(lo, hi)` of the crossing with
    /// `E(lo) < 1 <= E(hi)`. The bracket comes from the group's grid and Brent's method.
    fn next_purchase(&self, group: &mut Group, x: f64, big_t: f64, p: f64) -> Option<f64> {
        let max_t = self.opts.next_purchase_max;
        // phi(t) >= 0 exactly when E[Y(t)] = max(ea(t) p, 0) >= 1.
        let phi_of = |ea: f64| ea * p - 1.0;
        let reaches_one = phi_of(group.at_max) >= 0.0;
        if max_t.is_nan() || max_t <= 0.0 || !reaches_one {
            return None;
        }
        if group.grid.is_empty() {
            group.grid = GRID.iter().map(|f| (f * max_t, self.ea(f * max_t, x, big_t))).collect();
            group.grid.push((max_t, group.at_max));
        }
        let (mut lo, mut f_lo) = (0.0, -1.0);
        let (mut hi, mut f_hi) = (max_t, phi_of(group.at_max));
        for &(t, ea) in &group.grid {
            let f = phi_of(ea);
            if f >= 0.0 {
                (hi, f_hi) = (t, f);
                break;
            }
            (lo, f_lo) = (t, f);
        }
        let phi = |t: f64| phi_of(self.ea(t, x, big_t));
        (lo, hi) = brent_bracket(&phi, (lo, f_lo), (hi, f_hi));
        // Replay the bisection of expected_time_to_next_purchase.
        let (mut b_lo, mut b_hi) = (0.0, max_t);
        while b_hi - b_lo > 1e-6 * (1.0 + b_hi) {
            let mid = 0.5 * (b_lo + b_hi);
            let up = if mid >= hi {
                true
            } else if mid <= lo {
                false
            } else if phi(mid) >= 0.0 {
                hi = mid;
                true
            } else {
                lo = mid;
                false
            };
            if up { b_hi = mid } else { b_lo = mid }
        }
        Some(b_hi)
    }
}

/// Brent's method on `phi` from a bracket `phi(lo) < 0 <= phi(hi)`; returns a bracket with the same
/// property (all its ends evaluated) whose width is at most about `1e-7 (1 + t)`.
fn brent_bracket(phi: &dyn Fn(f64) -> f64, lo: (f64, f64), hi: (f64, f64)) -> (f64, f64) {
    let (mut a, mut fa) = lo;
    let (mut b, mut fb) = hi;
    if fb == 0.0 {
        // Keep going: a zero at `b` still needs a tight lower end.
        fb = f64::MIN_POSITIVE;
    }
    let (mut c, mut fc) = (a, fa);
    let (mut d, mut e) = (b - a, b - a);
    for _ in 0..100 {
        if (fb > 0.0) == (fc > 0.0) {
            (c, fc) = (a, fa);
            d = b - a;
            e = d;
        }
        if fc.abs() < fb.abs() {
            (a, fa) = (b, fb);
            (b, fb) = (c, fc);
            (c, fc) = (a, fa);
        }
        let tol = 5e-8 * (1.0 + b.abs());
        let m = 0.5 * (c - b);
        if m.abs() <= tol {
            break;
        }
        if e.abs() >= tol && fa.abs() > fb.abs() {
            let s = fb / fa;
            let (mut p, mut q) = if a == c {
                (2.0 * m * s, 1.0 - s)
            } else {
                let (q, r) = (fa / fc, fb / fc);
                (s * (2.0 * m * q * (q - r) - (b - a) * (r - 1.0)), (q - 1.0) * (r - 1.0) * (s - 1.0))
            };
            if p > 0.0 {
                q = -q;
            }
            p = p.abs();
            if 2.0 * p < (3.0 * m * q - (tol * q).abs()).min((e * q).abs()) {
                e = d;
                d = p / q;
            } else {
                d = m;
                e = m;
            }
        } else {
            d = m;
            e = m;
        }
        (a, fa) = (b, fb);
        b += if d.abs() > tol { d } else { tol.copysign(m) };
        fb = phi(b);
        if fb == 0.0 {
            fb = f64::MIN_POSITIVE;
        }
    }
    if fb >= 0.0 { (c, b) } else { (b, c) }
}

/// FxHash-style multiplicative hasher for the small integer keys of the prediction caches.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastHash = std::hash::BuildHasherDefault<FastHasher>;
