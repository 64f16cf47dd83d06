//! Gamma–Gamma spend model (Fader & Hardie, note 025; Colombo & Jiang 1999).
//!
//! A customer's transaction values are Gamma(p, ν); `ν ~ Gamma(q, γ)` across customers.
//! Fitted on repeat buyers only (`frequency > 0`, `monetary > 0`), where `monetary` is the
//! mean value of the repeat purchases.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fit::{FitOptions, FitReport, fit_positive_params};
use crate::prepare::CustomerSummary;
use crate::special::ln_gamma;
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

/// Maximum-likelihood fit on the repeat buyers among `customers`.
pub fn fit(customers: &[CustomerSummary], opts: &FitOptions) -> Result<(GammaGamma, FitReport)> {
    let started = Instant::now();
    let data: Vec<(f64, f64)> =
        customers.iter().filter(|c| is_repeat_buyer(c)).map(|c| (f64::from(c.frequency), c.monetary)).collect();
    if data.is_empty() {
        return Err(Error::NoData);
    }
    let objective = |v: &[f64]| -> f64 {
        let m = GammaGamma { p: v[0].exp(), q: v[1].exp(), gamma: v[2].exp() };
        -data.iter().map(|&(x, mx)| m.log_likelihood_one(x, mx)).sum::<f64>()
    };
    let m = fit_positive_params("Gamma-Gamma", 3, &objective, opts)?;
    let model = GammaGamma::new(m.x[0].exp(), m.x[1].exp(), m.x[2].exp())?;
    let report = FitReport::from_minimum(GammaGamma::NAME, model.parameters(), data.len(), opts, started, &m);
    Ok((model, report))
}
