//! BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy way").
//!
//! While alive a customer buys with Poisson rate `λ ~ Gamma(r, α)`; after every purchase
//! they drop out with probability `p ~ Beta(a, b)`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fit::{FitOptions, FitReport, Histories, fit_positive_params_smooth, parallel_sum};
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
        (self.expected_if_alive(t, x, big_t) * self.p_alive(x, t_x, big_t)).max(0.0)
    }

    /// Expected repeat purchases in the next `t` units for a customer alive at `T` with `x`
    /// repeat purchases: `(a+b+x−1)/(a−1) [1 − (1−z)^(r+x) 2F1(r+x, b+x; a+b+x−1; z)]`,
    /// `z = t/(α+T+t)`; [`BgNbd::conditional_expected`] is this times P(alive).
    pub fn expected_if_alive(&self, t: f64, x: f64, big_t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let z = t / (self.alpha + big_t + t);
        (self.a + self.b + x - 1.0) * self.bracket_over_a_minus_1(x, z)
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
    fn expected_if_alive(&self, t: f64, x: f64, big_t: f64) -> Option<f64> {
        Some(BgNbd::expected_if_alive(self, t, x, big_t))
    }
}

/// Maximum-likelihood fit: BFGS on log-parameters with the analytic gradient (Nelder–Mead with
/// restarts takes over if BFGS does not converge), bounded.
///
/// The likelihood is evaluated on the distinct `(x, t_x, T)` histories weighted by their number
/// of customers; `ln(α+T)`, `ln(α+t_x)` are computed once per distinct value and the
/// `x`-dependent log-gamma and digamma terms by recurrence once per distinct frequency, so an
/// evaluation costs one `exp` and one `ln_1p` per distinct history.
pub fn fit(customers: &[CustomerSummary], opts: &FitOptions) -> Result<(BgNbd, FitReport)> {
    let started = Instant::now();
    if customers.is_empty() {
        return Err(Error::NoData);
    }
    for c in customers {
        crate::check_summary(c)?;
    }
    let h = Histories::new(customers);
    let objective = |p: &[f64], grad: &mut [f64]| negative_ll_and_gradient(&h, p, grad);
    let m = fit_positive_params_smooth("BG/NBD", 4, &objective, opts)?;
    let model = BgNbd::new(m.x[0].exp(), m.x[1].exp(), m.x[2].exp(), m.x[3].exp())?;
    let report = FitReport::from_minimum(BgNbd::NAME, model.parameters(), customers.len(), opts, started, &m);
    Ok((model, report))
}

/// Negative log-likelihood at log-parameters `p = ln(r, α, a, b)`, and its gradient with respect to
/// `p` written into `grad`.
///
/// Per customer `LL = lnΓ(r+x) − lnΓ(r) + r ln α + lnΓ(a+b) + lnΓ(b+x) − lnΓ(b) − lnΓ(a+b+x) + ln D`
/// with `D = A3 + 1{x>0} A4`, `A3 = (α+T)^−(r+x)`, `A4 = a/(b+x−1) (α+t_x)^−(r+x)`; with the shares
/// `w3 = A3/D`, `w4 = A4/D`:
/// `∂r = ψ(r+x) − ψ(r) + ln α − w3 ln(α+T) − w4 ln(α+t_x)`, `∂α = r/α − (r+x)(w3/(α+T) + w4/(α+t_x))`,
/// `∂a = ψ(a+b) − ψ(a+b+x) + w4/a`, `∂b = ψ(a+b) + ψ(b+x) − ψ(b) − ψ(a+b+x) − w4/(b+x−1)`.
fn negative_ll_and_gradient(h: &Histories, p: &[f64], grad: &mut [f64]) -> f64 {
    let (r, alpha, a, b) = (p[0].exp(), p[1].exp(), p[2].exp(), p[3].exp());
    let max_x = h.max_x as usize;
    // Per-frequency terms by recurrence: lnΓ(z+x) − lnΓ(z) = Σ_{k<x} ln(z+k), ψ likewise with 1/(z+k).
    let mut weight_x = vec![0.0; max_x + 1];
    for (&x, &w) in h.x.iter().zip(&h.weight) {
        weight_x[x as usize] += w;
    }
    let n: f64 = weight_x.iter().sum();
    let (mut lg_r, mut lg_b, mut lg_ab, mut ps_r, mut ps_b, mut ps_ab) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut ll_x, mut d_r, mut d_a, mut d_b) = (0.0, 0.0, 0.0, 0.0);
    let mut ln_q = vec![0.0; max_x + 1];
    let mut inv_b = vec![0.0; max_x + 1];
    for (x, &w) in weight_x.iter().enumerate() {
        let xf = x as f64;
        if x > 0 {
            let k = xf - 1.0;
            lg_r += (r + k).ln();
            lg_b += (b + k).ln();
            lg_ab += (a + b + k).ln();
            ps_r += 1.0 / (r + k);
            ps_b += 1.0 / (b + k);
            ps_ab += 1.0 / (a + b + k);
            if w > 0.0 {
                ln_q[x] = a.ln() - (b + k).ln();
                inv_b[x] = 1.0 / (b + k);
            }
        }
        if w > 0.0 {
            ll_x += w * (lg_r + lg_b - lg_ab);
            d_r += w * ps_r;
            d_a -= w * ps_ab;
            d_b += w * (ps_b - ps_ab);
        }
    }
    let ln_age: Vec<f64> = h.ages.iter().map(|t| (alpha + t).ln()).collect();
    let inv_age: Vec<f64> = h.ages.iter().map(|t| 1.0 / (alpha + t)).collect();
    let ln_rec: Vec<f64> = h.recencies.iter().map(|t| (alpha + t).ln()).collect();
    let inv_rec: Vec<f64> = h.recencies.iter().map(|t| 1.0 / (alpha + t)).collect();
    // [Σ w ln D, Σ w (w3 ln(α+T) + w4 ln(α+t_x)), Σ w (r+x)(w3/(α+T) + w4/(α+t_x)), Σ w w4, Σ w w4/(b+x−1)]
    let sums = parallel_sum::<5>(h.len(), &|range| {
        let mut s = [0.0; 5];
        for i in range {
            let (x, w) = (h.x[i] as usize, h.weight[i]);
            let rx = r + x as f64;
            let (age, rec) = (h.age_index[i] as usize, h.recency_index[i] as usize);
            let l3 = -rx * ln_age[age];
            if x == 0 {
                s[0] += w * l3;
                s[1] += w * ln_age[age];
                s[2] += w * rx * inv_age[age];
                continue;
            }
            let l4 = ln_q[x] - rx * ln_rec[rec];
            let (ln_d, w3, w4) = if l3 >= l4 {
                let e = (l4 - l3).exp();
                let w4 = e / (1.0 + e);
                (l3 + e.ln_1p(), 1.0 - w4, w4)
            } else {
                let e = (l3 - l4).exp();
                let w3 = e / (1.0 + e);
                (l4 + e.ln_1p(), w3, 1.0 - w3)
            };
            s[0] += w * ln_d;
            s[1] += w * (w3 * ln_age[age] + w4 * ln_rec[rec]);
            s[2] += w * rx * (w3 * inv_age[age] + w4 * inv_rec[rec]);
            s[3] += w * w4;
            s[4] += w * w4 * inv_b[x];
        }
        s
    });
    let ln_alpha = alpha.ln();
    let ll = ll_x + n * r * ln_alpha + sums[0];
    grad[0] = -r * (d_r + n * ln_alpha - sums[1]);
    grad[1] = -alpha * (n * r / alpha - sums[2]);
    grad[2] = -a * (d_a + sums[3] / a);
    grad[3] = -b * (d_b - sums[4]);
    -ll
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customers() -> Vec<CustomerSummary> {
        let c = |x: u32, tx: f64, t: f64| CustomerSummary::from_stats("c", x, tx, t);
        vec![c(0, 0.0, 30.0), c(0, 0.0, 30.0), c(1, 2.0, 38.0), c(3, 20.5, 33.0), c(3, 20.5, 33.0), c(12, 30.0, 31.0)]
    }

    #[test]
    fn objective_matches_log_likelihood_and_gradient_matches_differences() {
        let s = customers();
        let h = Histories::new(&s);
        let m = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("valid");
        let p = [m.r.ln(), m.alpha.ln(), m.a.ln(), m.b.ln()];
        let mut g = [0.0; 4];
        let f = negative_ll_and_gradient(&h, &p, &mut g);
        assert!((f + m.log_likelihood(&s)).abs() < 1e-10, "{f} vs {}", m.log_likelihood(&s));
        for i in 0..4 {
            let step = 1e-6;
            let (mut up, mut down) = (p, p);
            up[i] += step;
            down[i] -= step;
            let mut scratch = [0.0; 4];
            let fd = (negative_ll_and_gradient(&h, &up, &mut scratch)
                - negative_ll_and_gradient(&h, &down, &mut scratch))
                / (2.0 * step);
            assert!((fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()), "component {i}: {} vs {fd}", g[i]);
        }
    }
}
