//! BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy way").
//!
//! While alive a customer buys with Poisson rate `λ ~ Gamma(r, α)`; after every purchase
//! they drop out with probability `p ~ Beta(a, b)`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fit::{FitOptions, FitReport, fit_positive_params};
use crate::prepare::CustomerSummary;
use crate::special::{ln_gamma, ln_hyp2f1};
use crate::{Error, Result, TransactionModel, check_params};

/// Fitted BG/NBD parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    /// Shape of the purchase-rate Gamma.
    pub r: f64,
    /// Rate (scale in time units) of the purchase-rate Gamma.
    pub alpha: f64,
    /// Dropout Beta `a`.
    pub a: f64,
    /// Dropout Beta `b`.
    pub b: f64,
}

impl BgNbd {
    /// Model name used in reports.
    pub const NAME: &'static str = "bg/nbd";

    /// Validated constructor (all parameters finite and positive).
    pub fn new(r: f64, alpha: f64, a: f64, b: f64) -> Result<Self> {
        check_params(&[("r", r), ("alpha", alpha), ("a", a), ("b", b)])?;
        Ok(BgNbd { r, alpha, a, b })
    }

    /// Log-likelihood of one customer with `x` repeat purchases, recency `t_x` and age `big_t`.
    pub fn log_likelihood_one(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let ln_a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let ln_a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        ln_a1 + ln_a2 + Self::ln_bracket(r, alpha, a, b, x, t_x, big_t)
    }

    /// `ln[(α+T)^-(r+x) + 1{x>0} a/(b+x-1) (α+t_x)^-(r+x)]`.
    fn ln_bracket(r: f64, alpha: f64, a: f64, b: f64, x: f64, t_x: f64, big_t: f64) -> f64 {
        let ln_a3 = -(r + x) * (alpha + big_t).ln();
        if x > 0.0 {
            let ln_a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln();
            let m = ln_a3.max(ln_a4);
            m + ((ln_a3 - m).exp() + (ln_a4 - m).exp()).ln()
        } else {
            ln_a3
        }
    }

    /// Total log-likelihood of a customer base.
    pub fn log_likelihood(&self, customers: &[CustomerSummary]) -> f64 {
        customers.iter().map(|c| self.log_likelihood_one(f64::from(c.frequency), c.recency, c.t)).sum()
    }

    /// P(alive | x, t_x, T) = 1 / (1 + 1{x>0} a/(b+x−1) ((α+T)/(α+t_x))^(r+x)). Equals 1 for
    /// `x = 0` (see the crate docs for how one-time buyers are treated).
    pub fn p_alive(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        if x <= 0.0 {
            return 1.0;
        }
        let ln_odds = self.a.ln() - (self.b + x - 1.0).ln()
            + (self.r + x) * ((self.alpha + big_t).ln() - (self.alpha + t_x).ln());
        // 1 / (1 + e^l), stable for both signs of l.
        if ln_odds > 0.0 {
            let e = (-ln_odds).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + ln_odds.exp())
        }
    }

    /// `[1 − (1−z)^(a−1) 2F1(a+b−1−r, a−1; c; z)] / (a−1)`, the Euler-transformed form of
    /// `[1 − (1−z)^(r+x) 2F1(r+x, b+x; c; z)] / (a−1)` with `c = a+b+x−1` (its parameters stay
    /// small for large `x`, so nothing overflows). Near `a = 1` the limit is taken by averaging.
    fn bracket_over_a_minus_1(&self, c_extra: f64, z: f64) -> f64 {
        let eval = |a: f64| -> f64 {
            let c = a + self.b + c_extra - 1.0;
            match ln_hyp2f1(a + self.b - 1.0 - self.r, a - 1.0, c, z) {
                Some(f) => {
                    let ln_term = f.ln + (a - 1.0) * (-z).ln_1p();
                    let numer = if f.sign > 0.0 { -ln_term.exp_m1() } else { 1.0 + ln_term.exp() };
                    numer / (a - 1.0)
                }
                None => f64::NAN,
            }
        };
        let h = 1e-4;
        if (self.a - 1.0).abs() < h { 0.5 * (eval(1.0 - h) + eval(1.0 + h)) } else { eval(self.a) }
    }

    /// Expected repeat purchases in the next `t` units for a customer with history
    /// `(x, t_x, T)` (Fader, Hardie & Lee 2005, eq. 10).
    pub fn conditional_expected(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let z = t / (self.alpha + big_t + t);
        let ratio = self.bracket_over_a_minus_1(x, z);
        ((self.a + self.b + x - 1.0) * ratio * self.p_alive(x, t_x, big_t)).max(0.0)
    }

    /// Expected purchases in `(0, t]` for a newly acquired customer, E[X(t)] (eq. 9).
    pub fn expected(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let z = t / (self.alpha + t);
        ((self.a + self.b - 1.0) * self.bracket_over_a_minus_1(0.0, z)).max(0.0)
    }

    /// Parameters as a report list.
    pub fn parameters(&self) -> Vec<(String, f64)> {
        vec![("r".into(), self.r), ("alpha".into(), self.alpha), ("a".into(), self.a), ("b".into(), self.b)]
    }
}

impl TransactionModel for BgNbd {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn p_alive(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        BgNbd::p_alive(self, x, t_x, big_t)
    }
    fn conditional_expected(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> f64 {
        BgNbd::conditional_expected(self, t, x, t_x, big_t)
    }
    fn expected(&self, t: f64) -> f64 {
        BgNbd::expected(self, t)
    }
}

/// Maximum-likelihood fit (Nelder–Mead on log-parameters with restarts, bounded).
///
/// The `x`-dependent log-gamma terms are tabulated once per distinct frequency and
/// evaluation, so a fit on tens of thousands of customers stays cheap.
pub fn fit(customers: &[CustomerSummary], opts: &FitOptions) -> Result<(BgNbd, FitReport)> {
    let started = Instant::now();
    if customers.is_empty() {
        return Err(Error::NoData);
    }
    for c in customers {
        crate::check_summary(c)?;
    }
    let max_x = customers.iter().map(|c| c.frequency).max().unwrap_or(0) as usize;
    let mut xs_seen = vec![false; max_x + 1];
    for c in customers {
        xs_seen[c.frequency as usize] = true;
    }
    let objective = |p: &[f64]| -> f64 {
        let (r, alpha, a, b) = (p[0].exp(), p[1].exp(), p[2].exp(), p[3].exp());
        let (lg_r, lg_ab, lg_b) = (ln_gamma(r), ln_gamma(a + b), ln_gamma(b));
        let table: Vec<f64> = (0..=max_x)
            .map(|x| {
                if !xs_seen[x] {
                    return 0.0;
                }
                let x = x as f64;
                ln_gamma(r + x) - lg_r + lg_ab + ln_gamma(b + x) - lg_b - ln_gamma(a + b + x)
            })
            .collect();
        let r_ln_alpha = r * alpha.ln();
        let ll: f64 = customers
            .iter()
            .map(|c| {
                let x = f64::from(c.frequency);
                table[c.frequency as usize] + r_ln_alpha + BgNbd::ln_bracket(r, alpha, a, b, x, c.recency, c.t)
            })
            .sum();
        -ll
    };
    let m = fit_positive_params("BG/NBD", 4, &objective, opts)?;
    let model = BgNbd::new(m.x[0].exp(), m.x[1].exp(), m.x[2].exp(), m.x[3].exp())?;
    let report = FitReport::from_minimum(BgNbd::NAME, model.parameters(), customers.len(), opts, started, &m);
    Ok((model, report))
}
