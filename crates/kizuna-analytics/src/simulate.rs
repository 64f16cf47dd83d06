//! Synthetic customer bases drawn from the BG/NBD purchase/dropout process with Gamma–Gamma
//! spend: for benchmarks and for checking that the fits recover known parameters.
//!
//! Generative process per customer (parameters in the [`SimulationOptions::unit`] time unit):
//! * the first purchase happens at a continuous time uniform over the acquisition window
//!   (`start` plus `acquisition_days` days), so cohorts are acquired uniformly over a period;
//! * purchase rate `λ ~ Gamma(r, rate α)`, dropout probability `p ~ Beta(a, b)`;
//! * while alive, inter-purchase times are exponential with rate `λ`; after every repeat
//!   purchase the customer drops out with probability `p` (no dropout at the first purchase,
//!   as in BG/NBD);
//! * spend: `ν ~ Gamma(q, rate γ)` per customer, every purchase value `~ Gamma(p, rate ν)`;
//! * purchases are observed up to the end of `observation_end` (or `calibration_end`) and
//!   dated by the calendar day they fall on.
//!
//! [`simulate_summaries`] returns the model's sufficient statistics: `frequency` counts every
//! repeat purchase, `recency` and `t` are whole days converted to the unit, `monetary` is the
//! mean repeat purchase value — the same rules as [`crate::prepare::summarise`] except that two
//! purchases on one day stay two purchases (the model is in continuous time; collapsing them
//! would bias the fit towards fewer, more regular purchases). [`simulate_transactions`] returns
//! one transaction per purchase, so `summarise` of it collapses those same-day purchases and
//! otherwise agrees with [`simulate_summaries`].
//!
//! Deterministic: the output depends only on the models and the options (each customer has its
//! own random stream derived from `seed` and its index, so the number of threads does not
//! matter).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::bgnbd::BgNbd;
use crate::gamma_gamma::GammaGamma;
use crate::prepare::{CustomerSummary, TimeUnit, Transaction};
use crate::{Error, Result};

/// Options of the simulated customer base.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulationOptions {
    /// Number of customers.
    pub customers: usize,
    /// Seed of the random streams.
    pub seed: u64,
    /// First day of the acquisition window.
    pub start: NaiveDate,
    /// First purchases are uniform over `acquisition_days` days from `start` (at least 1).
    pub acquisition_days: u32,
    /// Last day (inclusive) of calibration.
    pub calibration_end: NaiveDate,
    /// Last day (inclusive) of the holdout, if any.
    pub observation_end: Option<NaiveDate>,
    /// Time unit of the model parameters and of the summaries.
    pub unit: TimeUnit,
}

impl Default for SimulationOptions {
    /// CDNOW-like: 10,000 customers acquired over the first 12 weeks of 1997, 39-week calibration
    /// ending 1997-09-30, no holdout, weeks.
    fn default() -> Self {
        SimulationOptions {
            customers: 10_000,
            seed: 1,
            start: NaiveDate::from_ymd_opt(1997, 1, 1).unwrap_or_default(),
            acquisition_days: 84,
            calibration_end: NaiveDate::from_ymd_opt(1997, 9, 30).unwrap_or_default(),
            observation_end: None,
            unit: TimeUnit::Weeks,
        }
    }
}

/// One simulated customer: its purchases as (day offset from `start`, value), in time order
/// (the first is the first purchase).
struct SimCustomer {
    days: Vec<(i64, f64)>,
}

impl SimulationOptions {
    fn validate(&self) -> Result<()> {
        if self.acquisition_days == 0 {
            return Err(Error::InvalidInput("acquisition_days must be at least 1".into()));
        }
        if self.calibration_end < self.start {
            return Err(Error::InvalidInput("calibration_end is before start".into()));
        }
        if self.observation_end.is_some_and(|e| e < self.calibration_end) {
            return Err(Error::InvalidInput("observation_end is before calibration_end".into()));
        }
        Ok(())
    }

    fn id_width(&self) -> usize {
        self.customers.saturating_sub(1).max(1).to_string().len()
    }

    fn customer_id(&self, i: usize) -> String {
        format!("sim{i:0width$}", width = self.id_width())
    }

    fn day_offset(&self, date: NaiveDate) -> i64 {
        (date - self.start).num_days()
    }
}

/// Simulates the customer base and returns its transactions (one per purchase, sorted by customer
/// then day; customer ids `sim0000…` sort like their index).
pub fn simulate_transactions(model: &BgNbd, spend: &GammaGamma, opts: &SimulationOptions) -> Result<Vec<Transaction>> {
    opts.validate()?;
    let customers = simulate_all(model, spend, opts);
    let mut out = Vec::with_capacity(customers.iter().map(|c| c.days.len()).sum());
    for (i, c) in customers.iter().enumerate() {
        let id = opts.customer_id(i);
        for &(day, value) in &c.days {
            out.push(Transaction::new(id.clone(), opts.start + chrono::Duration::days(day), value));
        }
    }
    Ok(out)
}

/// Simulates the customer base and returns the calibration summaries (see the module docs for
/// how they relate to `summarise` of [`simulate_transactions`]). Customers first seen after
/// `calibration_end` are excluded, as in `summarise`.
pub fn simulate_summaries(model: &BgNbd, spend: &GammaGamma, opts: &SimulationOptions) -> Result<Vec<CustomerSummary>> {
    opts.validate()?;
    let customers = simulate_all(model, spend, opts);
    let cal_end = opts.day_offset(opts.calibration_end);
    let obs_end = opts.observation_end.map(|e| opts.day_offset(e));
    let holdout_duration = opts.observation_end.map_or(0.0, |e| opts.unit.between(opts.calibration_end, e));
    let unit_days = opts.unit.days();
    let mut out = Vec::with_capacity(customers.len());
    for (i, c) in customers.iter().enumerate() {
        let first = c.days[0].0;
        if first > cal_end {
            continue;
        }
        let calib: Vec<&(i64, f64)> = c.days.iter().filter(|d| d.0 <= cal_end).collect();
        let last = calib.last().map_or(first, |d| d.0);
        let frequency = (calib.len() - 1) as u32;
        let monetary =
            if frequency > 0 { calib[1..].iter().map(|d| d.1).sum::<f64>() / f64::from(frequency) } else { 0.0 };
        let holdout_frequency = match obs_end {
            Some(end) => c.days.iter().filter(|d| d.0 > cal_end && d.0 <= end).count() as u32,
            None => 0,
        };
        out.push(CustomerSummary {
            customer_id: opts.customer_id(i),
            frequency,
            recency: (last - first) as f64 / unit_days,
            t: (cal_end - first) as f64 / unit_days,
            monetary,
            total_value: calib.iter().map(|d| d.1).sum(),
            first_purchase: opts.start + chrono::Duration::days(first),
            last_purchase: opts.start + chrono::Duration::days(last),
            holdout_frequency,
            holdout_duration,
        });
    }
    Ok(out)
}

fn simulate_all(model: &BgNbd, spend: &GammaGamma, opts: &SimulationOptions) -> Vec<SimCustomer> {
    let n = opts.customers;
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 16);
    let chunk = n.div_ceil(threads).max(1024);
    if n <= chunk {
        return (0..n).map(|i| simulate_one(model, spend, opts, i)).collect();
    }
    let ranges: Vec<(usize, usize)> = (0..n).step_by(chunk).map(|s| (s, (s + chunk).min(n))).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(s, e)| scope.spawn(move || (s..e).map(|i| simulate_one(model, spend, opts, i)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

fn simulate_one(model: &BgNbd, spend: &GammaGamma, opts: &SimulationOptions, index: usize) -> SimCustomer {
    let mut rng = Rng::new(opts.seed, index as u64);
    let unit_days = opts.unit.days();
    // Rates per day.
    let lambda = rng.gamma(model.r) / model.alpha / unit_days;
    let p = rng.beta(model.a, model.b);
    let nu = rng.gamma(spend.q) / spend.gamma;
    let value = |rng: &mut Rng| rng.gamma(spend.p) / nu;
    let horizon = (opts.day_offset(opts.observation_end.unwrap_or(opts.calibration_end)) + 1) as f64;
    let mut s = f64::from(opts.acquisition_days) * rng.unit();
    let mut days: Vec<(i64, f64)> = vec![(s.floor() as i64, value(&mut rng))];
    if lambda > 0.0 {
        loop {
            s += rng.exponential() / lambda;
            if s.is_nan() || s >= horizon {
                break;
            }
            days.push((s.floor() as i64, value(&mut rng)));
            if rng.unit() < p {
                break;
            }
        }
    }
    SimCustomer { days }
}

/// xoshiro256++ seeded through SplitMix64 from `(seed, stream)`: small, fast, and independent
/// streams per customer.
struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut state = seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let _ = splitmix64(&mut state);
        let mut s = [0u64; 4];
        for v in &mut s {
            *v = splitmix64(&mut state);
        }
        Rng { s }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1].
    fn unit_open0(&mut self) -> f64 {
        1.0 - self.unit()
    }

    /// Standard exponential.
    fn exponential(&mut self) -> f64 {
        -self.unit_open0().ln()
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.unit_open0();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape, rate 1) by Marsaglia–Tsang (with the `U^(1/shape)` boost below shape 1).
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.unit_open0();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.unit_open0();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// Beta(a, b) as a ratio of gammas.
    fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y <= 0.0 { a / (a + b) } else { x / (x + y) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::{SummaryOptions, summarise};

    #[test]
    fn sampler_moments_are_plausible() {
        let mut rng = Rng::new(3, 0);
        let n = 40_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / f64::from(n);
        assert!((mean(&mut || rng.gamma(0.243)) - 0.243).abs() < 0.015);
        assert!((mean(&mut || rng.gamma(6.25)) - 6.25).abs() < 0.06);
        assert!((mean(&mut || rng.beta(0.793, 2.426)) - 0.793 / 3.219).abs() < 0.01);
        assert!((mean(&mut || rng.exponential()) - 1.0).abs() < 0.02);
    }

    #[test]
    fn summaries_agree_with_summarised_transactions_and_are_deterministic() {
        let model = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("valid");
        let spend = GammaGamma::new(6.25, 3.74, 15.44).expect("valid");
        let opts = SimulationOptions {
            customers: 3_000,
            seed: 11,
            acquisition_days: 300, // some customers arrive after the calibration end
            observation_end: NaiveDate::from_ymd_opt(1998, 6, 30),
            ..SimulationOptions::default()
        };
        let txs = simulate_transactions(&model, &spend, &opts).expect("simulates");
        let via_transactions = summarise(
            &txs,
            &SummaryOptions {
                calibration_end: opts.calibration_end,
                observation_end: opts.observation_end,
                unit: opts.unit,
            },
        )
        .expect("summarises");
        let direct = simulate_summaries(&model, &spend, &opts).expect("simulates");
        assert!(direct.len() < 3_000 && direct.len() > 2_000, "{}", direct.len());
        assert_eq!(direct.len(), via_transactions.len());
        // Equal except for customers with two purchases on one day (summarise collapses them).
        let mut same_day = 0;
        for (d, v) in direct.iter().zip(&via_transactions) {
            assert_eq!(d.customer_id, v.customer_id);
            if d.frequency == v.frequency && d.holdout_frequency == v.holdout_frequency {
                assert_eq!(d, v);
            } else {
                assert!(d.frequency >= v.frequency && d.holdout_frequency >= v.holdout_frequency);
                same_day += 1;
            }
        }
        assert!(same_day * 50 < direct.len(), "{same_day} customers with same-day purchases");
        assert_eq!(direct, simulate_summaries(&model, &spend, &opts).expect("simulates"));
        assert!(direct.iter().any(|c| c.holdout_frequency > 0));
        let other = simulate_summaries(&model, &spend, &SimulationOptions { seed: 12, ..opts }).expect("simulates");
        assert_ne!(direct, other);
    }
}
