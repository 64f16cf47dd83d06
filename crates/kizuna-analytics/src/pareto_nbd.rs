//! Pareto/NBD model (Schmittlein, Morrison & Colombo 1987), likelihood and conditional
//! expressions as in Fader & Hardie (2005), "A note on deriving the Pareto/NBD model and
//! related expressions".
//!
//! While alive a customer buys with Poisson rate `λ ~ Gamma(r, α)`; lifetimes are
//! exponential with rate `μ ~ Gamma(s, β)`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fit::{FitOptions, FitReport, Histories, fit_positive_params, parallel_sum};
use crate::prepare::CustomerSummary;
use crate::special::{ln_1m_exp, ln_gamma, ln_hyp2f1};
use crate::{Error, Result, TransactionModel, check_params};

/// Fitted Pareto/NBD parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParetoNbd {
    /// Shape of the purchase-rate Gamma.
    pub r: f64,
    /// Rate of the purchase-rate Gamma.
    pub alpha: f64,
    /// Shape of the dropout-rate Gamma.
    pub s: f64,
    /// Rate of the dropout-rate Gamma.
    pub beta: f64,
}

impl ParetoNbd {
    /// Model name used in reports.
    pub const NAME: &'static str = "pareto/nbd";

    /// Validated constructor (all parameters finite and positive).
    pub fn new(r: f64, alpha: f64, s: f64, beta: f64) -> Result<Self> {
        check_params(&[("r", r), ("alpha", alpha), ("s", s), ("beta", beta)])?;
        Ok(ParetoNbd { r, alpha, s, beta })
    }

    /// `ln A0` of the Fader–Hardie note (eq. 19/20 there), `-inf` when `A0 = 0` (t_x = T).
    /// `None` if the hypergeometric function cannot be evaluated.
    fn ln_a0(&self, x: f64, t_x: f64, big_t: f64) -> Option<f64> {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let big_a = r + s + x;
        let term = |t: f64| -> Option<f64> {
            let (b2, base) = if alpha >= beta { (s + 1.0, alpha) } else { (r + x, beta) };
            let z = (alpha - beta).abs() / (base + t);
            let f = ln_hyp2f1(big_a, b2, big_a + 1.0, z)?;
            if f.sign <= 0.0 {
                return None;
            }
            Some(f.ln - big_a * (base + t).ln())
        };
        let u = term(t_x)?;
        let v = term(big_t)?;
        if v >= u { Some(f64::NEG_INFINITY) } else { Some(u + ln_1m_exp(v - u)) }
    }

    /// Log-likelihood of one customer (`NaN` if it cannot be evaluated).
    pub fn log_likelihood_one(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let Some(ln_a0) = self.ln_a0(x, t_x, big_t) else { return f64::NAN };
        let head = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln();
        let l1 = -(r + x) * (alpha + big_t).ln() - s * (beta + big_t).ln();
        let l2 = s.ln() - (r + s + x).ln() + ln_a0;
        let m = l1.max(l2);
        head + m + ((l1 - m).exp() + (l2 - m).exp()).ln()
    }

    /// Total log-likelihood of a customer base.
    pub fn log_likelihood(&self, customers: &[CustomerSummary]) -> f64 {
        customers.iter().map(|c| self.log_likelihood_one(f64::from(c.frequency), c.recency, c.t)).sum()
    }

    /// P(alive | x, t_x, T) = 1 / (1 + s/(r+s+x) (α+T)^(r+x) (β+T)^s A0).
    pub fn p_alive(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let Some(ln_a0) = self.ln_a0(x, t_x, big_t) else { return f64::NAN };
        let ln_odds = s.ln() - (r + s + x).ln() + (r + x) * (alpha + big_t).ln() + s * (beta + big_t).ln() + ln_a0;
        if ln_odds > 0.0 {
            let e = (-ln_odds).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + ln_odds.exp())
        }
    }

    /// `[1 − ((β+T)/(β+T+t))^(s−1)] / (s−1)`, with the `s → 1` limit `ln((β+T+t)/(β+T))`.
    fn dropout_factor(&self, t: f64, big_t: f64) -> f64 {
        let l = (t / (self.beta + big_t)).ln_1p();
        let sm1 = self.s - 1.0;
        if sm1.abs() < 1e-12 { l } else { -(-sm1 * l).exp_m1() / sm1 }
    }

    /// Expected purchases in the next `t` units given `(x, t_x, T)`:
    /// `(r+x)(β+T)/((α+T)(s−1)) [1 − ((β+T)/(β+T+t))^(s−1)] P(alive)`.
    pub fn conditional_expected(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        (self.expected_if_alive(t, x, big_t) * self.p_alive(x, t_x, big_t)).max(0.0)
    }

    /// Expected purchases in the next `t` units for a customer alive at `T` with `x` purchases:
    /// `(r+x)(β+T)/((α+T)(s−1)) [1 − ((β+T)/(β+T+t))^(s−1)]`; [`ParetoNbd::conditional_expected`]
    /// is this times P(alive).
    pub fn expected_if_alive(&self, t: f64, x: f64, big_t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let lead = (self.r + x) * (self.beta + big_t) / (self.alpha + big_t);
        lead * self.dropout_factor(t, big_t)
    }

    /// E[X(t)] for a new customer: `rβ/(α(s−1)) [1 − (β/(β+t))^(s−1)]`.
    pub fn expected(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        (self.r * self.beta / self.alpha * self.dropout_factor(t, 0.0)).max(0.0)
    }

    /// Parameters as a report list.
    pub fn parameters(&self) -> Vec<(String, f64)> {
        vec![("r".into(), self.r), ("alpha".into(), self.alpha), ("s".into(), self.s), ("beta".into(), self.beta)]
    }
}

impl TransactionModel for ParetoNbd {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn p_alive(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        ParetoNbd::p_alive(self, x, t_x, big_t)
    }
    fn conditional_expected(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> f64 {
        ParetoNbd::conditional_expected(self, t, x, t_x, big_t)
    }
    fn expected(&self, t: f64) -> f64 {
        ParetoNbd::expected(self, t)
    }
    fn expected_if_alive(&self, t: f64, x: f64, big_t: f64) -> Option<f64> {
        Some(ParetoNbd::expected_if_alive(self, t, x, big_t))
    }
}

/// Maximum-likelihood fit (Nelder–Mead on log-parameters with restarts, bounded), evaluated on the
/// distinct `(x, t_x, T)` histories weighted by their number of customers.
pub fn fit(customers: &[CustomerSummary], opts: &FitOptions) -> Result<(ParetoNbd, FitReport)> {
    let started = Instant::now();
    if customers.is_empty() {
        return Err(Error::NoData);
    }
    for c in customers {
        crate::check_summary(c)?;
    }
    let h = Histories::new(customers);
    let objective = |p: &[f64]| -> f64 {
        let m = ParetoNbd { r: p[0].exp(), alpha: p[1].exp(), s: p[2].exp(), beta: p[3].exp() };
        let [ll] = parallel_sum::<1>(h.len(), &|range| {
            let mut ll = 0.0;
            for i in range {
                let (rec, age) = (h.recencies[h.recency_index[i] as usize], h.ages[h.age_index[i] as usize]);
                ll += h.weight[i] * m.log_likelihood_one(f64::from(h.x[i]), rec, age);
            }
            [ll]
        });
        -ll
    };
    let m = fit_positive_params("Pareto/NBD", 4, &objective, opts)?;
    let model = ParetoNbd::new(m.x[0].exp(), m.x[1].exp(), m.x[2].exp(), m.x[3].exp())?;
    let report = FitReport::from_minimum(ParetoNbd::NAME, model.parameters(), customers.len(), opts, started, &m);
    Ok((model, report))
}
