//! Gamma–Gamma spend model (Fader & Hardie, note 025; Colombo & Jiang 1999).
//!
//! A customer's transaction values are Gamma(p, ν); `ν ~ Gamma(q, γ)` across customers.
//! Fitted on repeat buyers only (`frequency > 0`, `monetary > 0`), where `monetary` is the
//! mean value of the repeat purchases.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fit::{FitOptions, FitReport, fit_positive_params_smooth, parallel_sum};
use crate::prepare::CustomerSummary;
use crate::special::{digamma, ln_gamma};
use crate::{Error, Result, check_params};

/// Fitted Gamma–Gamma parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    /// Shape of the per-transaction Gamma.
    pub p: f64,
    /// Shape of the Gamma over customers' scale parameter.
    pub q: f64,
    /// Rate of the Gamma over customers' scale parameter.
    pub gamma: f64,
}

impl GammaGamma {
    /// Model name used in reports.
    pub const NAME: &'static str = "gamma-gamma";

    /// Validated constructor (all parameters finite and positive).
    pub fn new(p: f64, q: f64, gamma: f64) -> Result<Self> {
        check_params(&[("p", p), ("q", q), ("gamma", gamma)])?;
        Ok(GammaGamma { p, q, gamma })
    }

    /// Log-likelihood of one customer with `x > 0` transactions of mean value `m > 0`:
    /// `lnΓ(px+q) − lnΓ(px) − lnΓ(q) + q ln γ + (px−1) ln m + px ln x − (px+q) ln(γ + m x)`.
    pub fn log_likelihood_one(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        let px = p * x;
        ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q) + q * gamma.ln() + (px - 1.0) * m.ln() + px * x.ln()
            - (px + q) * (gamma + m * x).ln()
    }

    /// Total log-likelihood over the repeat buyers in `customers`.
    pub fn log_likelihood(&self, customers: &[CustomerSummary]) -> f64 {
        customers
            .iter()
            .filter(|c| is_repeat_buyer(c))
            .map(|c| self.log_likelihood_one(f64::from(c.frequency), c.monetary))
            .sum()
    }

    /// Conditional expected average transaction value `p(γ + x m)/(px + q − 1)`; for `x = 0`
    /// this is the population mean `pγ/(q−1)` (infinite when `q <= 1`).
    pub fn conditional_expected_spend(&self, x: f64, m: f64) -> f64 {
        let denom = self.p * x + self.q - 1.0;
        if denom <= 0.0 { f64::INFINITY } else { self.p * (self.gamma + x * m) / denom }
    }

    /// Population mean transaction value `pγ/(q−1)`.
    pub fn mean_spend(&self) -> f64 {
        self.conditional_expected_spend(0.0, 0.0)
    }

    /// Parameters as a report list.
    pub fn parameters(&self) -> Vec<(String, f64)> {
        vec![("p".into(), self.p), ("q".into(), self.q), ("gamma".into(), self.gamma)]
    }
}

/// Whether a customer enters the Gamma–Gamma fit (`frequency > 0` and `monetary > 0`).
pub fn is_repeat_buyer(c: &CustomerSummary) -> bool {
    c.frequency > 0 && c.monetary > 0.0 && c.monetary.is_finite()
}

/// Maximum-likelihood fit on the repeat buyers among `customers`: BFGS on log-parameters with the
/// analytic gradient (Nelder–Mead with restarts takes over if BFGS does not converge), bounded.
///
/// The data-only sums (`Σ x ln m`, `Σ ln m`, `Σ x ln x`) are computed once, the log-gamma and
/// digamma terms once per distinct frequency, so an evaluation costs one `ln` per distinct
/// `(x, m)` pair.
pub fn fit(customers: &[CustomerSummary], opts: &FitOptions) -> Result<(GammaGamma, FitReport)> {
    let started = Instant::now();
    let mut data: Vec<(u32, u64)> =
        customers.iter().filter(|c| is_repeat_buyer(c)).map(|c| (c.frequency, c.monetary.to_bits())).collect();
    if data.is_empty() {
        return Err(Error::NoData);
    }
    let n_customers = data.len();
    data.sort_unstable();
    let spend = SpendData::new(&data);
    let objective = |v: &[f64], grad: &mut [f64]| spend.negative_ll_and_gradient(v, grad);
    let m = fit_positive_params_smooth("Gamma-Gamma", 3, &objective, opts)?;
    let model = GammaGamma::new(m.x[0].exp(), m.x[1].exp(), m.x[2].exp())?;
    let report = FitReport::from_minimum(GammaGamma::NAME, model.parameters(), n_customers, opts, started, &m);
    Ok((model, report))
}

/// Repeat buyers reduced to what the likelihood needs.
struct SpendData {
    /// Distinct frequencies and their number of customers.
    by_x: Vec<(f64, f64)>,
    /// Distinct `(x, x·m, weight)`.
    pairs: Vec<(f64, f64, f64)>,
    n: f64,
    /// `Σ x ln m + Σ x ln x` and `Σ ln m`.
    sum_x_ln_mx: f64,
    sum_ln_m: f64,
}

impl SpendData {
    /// From `(x, monetary bits)` sorted.
    fn new(sorted: &[(u32, u64)]) -> Self {
        let mut d = SpendData { by_x: Vec::new(), pairs: Vec::new(), n: 0.0, sum_x_ln_mx: 0.0, sum_ln_m: 0.0 };
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i + 1;
            while j < sorted.len() && sorted[j] == sorted[i] {
                j += 1;
            }
            let w = (j - i) as f64;
            let x = f64::from(sorted[i].0);
            let m = f64::from_bits(sorted[i].1);
            d.pairs.push((x, m * x, w));
            match d.by_x.last_mut() {
                Some(last) if last.0 == x => last.1 += w,
                _ => d.by_x.push((x, w)),
            }
            d.n += w;
            d.sum_x_ln_mx += w * x * (m.ln() + x.ln());
            d.sum_ln_m += w * m.ln();
            i = j;
        }
        d
    }

    /// Negative log-likelihood at `v = ln(p, q, γ)` and its gradient with respect to `v`.
    /// `LL = Σ [lnΓ(px+q) − lnΓ(px)] − n lnΓ(q) + n q ln γ + p Σ x ln(m x) − Σ ln m − Σ (px+q) ln(γ+mx)`.
    fn negative_ll_and_gradient(&self, v: &[f64], grad: &mut [f64]) -> f64 {
        let (p, q, gamma) = (v[0].exp(), v[1].exp(), v[2].exp());
        let (mut ll, mut d_p, mut d_q) = (0.0, 0.0, 0.0);
        for &(x, w) in &self.by_x {
            let px = p * x;
            ll += w * (ln_gamma(px + q) - ln_gamma(px));
            let psi = digamma(px + q);
            d_p += w * x * (psi - digamma(px));
            d_q += w * psi;
        }
        // [Σ w (px+q) ln(γ+s), Σ w x ln(γ+s), Σ w ln(γ+s), Σ w (px+q)/(γ+s)]
        let sums = parallel_sum::<4>(self.pairs.len(), &|range| {
            let mut s = [0.0; 4];
            for &(x, total, w) in &self.pairs[range] {
                let l = (gamma + total).ln();
                let k = p * x + q;
                s[0] += w * k * l;
                s[1] += w * x * l;
                s[2] += w * l;
                s[3] += w * k / (gamma + total);
            }
            s
        });
        let n = self.n;
        let ln_g = gamma.ln();
        ll += -n * ln_gamma(q) + n * q * ln_g + p * self.sum_x_ln_mx - self.sum_ln_m - sums[0];
        d_p += self.sum_x_ln_mx - sums[1];
        d_q += -n * digamma(q) + n * ln_g - sums[2];
        let d_g = n * q / gamma - sums[3];
        grad[0] = -p * d_p;
        grad[1] = -q * d_q;
        grad[2] = -gamma * d_g;
        -ll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objective_matches_log_likelihood_and_gradient_matches_differences() {
        let c = |x: u32, m: f64| CustomerSummary { monetary: m, ..CustomerSummary::from_stats("c", x, 1.0, 2.0) };
        let s = vec![c(1, 20.0), c(1, 20.0), c(2, 35.5), c(7, 12.25), c(0, 0.0), c(3, 80.0)];
        let mut data: Vec<(u32, u64)> =
            s.iter().filter(|c| is_repeat_buyer(c)).map(|c| (c.frequency, c.monetary.to_bits())).collect();
        data.sort_unstable();
        let d = SpendData::new(&data);
        let g = GammaGamma::new(6.25, 3.74, 15.44).expect("valid");
        let v = [g.p.ln(), g.q.ln(), g.gamma.ln()];
        let mut grad = [0.0; 3];
        let f = d.negative_ll_and_gradient(&v, &mut grad);
        assert!((f + g.log_likelihood(&s)).abs() < 1e-10, "{f} vs {}", g.log_likelihood(&s));
        for i in 0..3 {
            let step = 1e-6;
            let (mut up, mut down) = (v, v);
            up[i] += step;
            down[i] -= step;
            let mut scratch = [0.0; 3];
            let fd = (d.negative_ll_and_gradient(&up, &mut scratch) - d.negative_ll_and_gradient(&down, &mut scratch))
                / (2.0 * step);
            assert!((fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()), "component {i}: {} vs {fd}", grad[i]);
        }
    }
}
