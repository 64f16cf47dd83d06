//! # kizuna-analytics — customer-base models for Kizuna
//!
//! Pure-Rust, dependency-light implementations of the probabilistic customer-base models
//! used for churn risk, next-order prediction and customer lifetime value (CLV), plus RFM
//! scoring. No I/O except [`prepare::read_cdnow`], which parses any `impl Read`.
//!
//! ## Pipeline
//! 1. [`prepare::summarise`] turns transactions into one [`CustomerSummary`] per customer.
//! 2. [`bgnbd::fit`] (and/or [`pareto_nbd::fit`]) fits the purchase/dropout process,
//!    [`gamma_gamma::fit`] the spend process. Each fit returns the model and a [`FitReport`].
//! 3. [`clv::predict`] produces per-customer P(alive), churn risk, expected purchases,
//!    the next-purchase time, expected spend and CLV. [`rfm::score`] adds RFM segments.
//!
//! ## Data preparation ([`prepare`])
//! * Transactions are `(customer_id, day, amount)`; timestamps are reduced to their UTC day.
//! * **Same-day collapse**: all purchases of a customer on one day form one purchase whose
//!   value is their sum (the convention of Fader, Hardie & Lee and of `lifetimes`).
//! * **Refunds** are negative amounts (or a separate list merged with
//!   [`prepare::with_refunds`]). A refund is netted against the customer's latest purchase
//!   day on or before the refund date; a day fully refunded (net ≤ 0) is no longer a purchase.
//!   Refunds dated after the calibration end never change calibration days.
//! * **Calibration/holdout**: purchases on or before `calibration_end` are calibration,
//!   those in `(calibration_end, observation_end]` holdout. Per customer:
//!   `frequency` x = distinct calibration purchase days − 1 (repeat purchases);
//!   `recency` t_x = last − first calibration purchase; `t` (T) = calibration end − first
//!   purchase; all in the chosen [`TimeUnit`] (days or 7-day weeks, fractional);
//!   `monetary` = mean net value of the repeat purchase days (first purchase excluded, as in
//!   `lifetimes`; 0 for one-time buyers); `holdout_frequency` = purchase days in the holdout.
//! * **Customers first seen after the calibration end are excluded** from the summaries:
//!   they have no calibration history (negative T), so they can be neither fitted nor scored
//!   by these models; they enter the next calibration.
//!
//! ## Models
//! * **BG/NBD** ([`bgnbd`], Fader, Hardie & Lee 2005): Poisson purchasing with rate
//!   λ ~ Gamma(r, α); after each purchase the customer drops out with probability
//!   p ~ Beta(a, b). Log-likelihood, P(alive), conditional expectation `E[Y(t) | x, t_x, T]`
//!   and E[X(t)] for a new customer. The Gaussian hypergeometric function in the
//!   expectations is evaluated after an Euler transformation,
//!   `(1−z)^(r+x) 2F1(r+x, b+x; c; z) = (1−z)^(a−1) 2F1(a+b−1−r, a−1; c; z)`, which keeps
//!   its parameters small for large x (the classic overflow in the untransformed form).
//! * **Pareto/NBD** ([`pareto_nbd`], Schmittlein et al. 1987): Poisson purchasing with
//!   λ ~ Gamma(r, α), exponential lifetimes with μ ~ Gamma(s, β); likelihood in the
//!   Fader–Hardie (2005 note) formulation with 2F1, evaluated in log space.
//! * **Gamma–Gamma** ([`gamma_gamma`], Fader & Hardie note 025): transaction values are
//!   Gamma(p, ν), ν ~ Gamma(q, γ); fitted on repeat buyers (frequency > 0). The conditional
//!   expected average spend is `p(γ + x·m_x)/(p·x + q − 1)`.
//! * Special functions ([`special`]): Lanczos log-gamma, 2F1 by power series with rescaling
//!   and a tail-bound stopping rule, the Pfaff transformation for z < 0 and the z → 1−z
//!   transformation for z > 0.75.
//! * Fitting ([`fit`]): maximum likelihood on log-parameters (so parameters stay positive),
//!   bounded to `[1e-6, 1e6]` by default, over the distinct `(x, t_x, T)` histories weighted by
//!   their number of customers. BG/NBD and Gamma–Gamma use BFGS with analytic gradients (and
//!   fall back to Nelder–Mead if it does not converge); Pareto/NBD uses Nelder–Mead, restarted
//!   from the best point until a restart no longer improves the log-likelihood.
//! * Simulation ([`simulate`]): deterministic synthetic customer bases from the BG/NBD and
//!   Gamma–Gamma generative processes (benchmarks, parameter-recovery tests).
//!
//! ## One-time buyers
//! BG/NBD customers can only drop out right after a purchase, so with x = 0 the model says
//! P(alive) = 1 however long ago the single purchase was. Kizuna keeps the model's value in
//! [`BgNbd::p_alive`] (it is the correct model quantity and is what the expectations use),
//! but [`clv::predict`] flags such customers `one_time_buyer = true` and, when a Pareto/NBD
//! fit is passed as the `one_time_model`, reports **the Pareto/NBD P(alive) for one-time
//! buyers** (that model lets them die unobserved, so their P(alive) decays with T).
//! The report field `p_alive_model` names the model used. Without a Pareto/NBD fit the
//! BG/NBD value (1.0) is reported and consumers must use the flag, not the churn risk.
//!
//! ## Next purchase date
//! [`clv::expected_time_to_next_purchase`] is the smallest t after the end of calibration
//! at which the conditional expected number of purchases `E[Y(t) | x, t_x, T]` reaches 1
//! (not a median of a waiting-time distribution). It is `None` when the model expects fewer
//! than one further purchase within the search limit — typical for customers who are
//! probably gone. The next order date is `calibration_end + t` (in the model's time unit).
//!
//! ## CLV
//! [`clv::customer_lifetime_value`] uses the `lifetimes` month-by-month scheme:
//! `CLV = margin · E[M | x, m_x] · Σ_{k=1..K} (E[Y(k·L)] − E[Y((k−1)·L)]) / (1 + d)^k`,
//! with `L` the period length in model units (4.345 weeks = one month by default), `K` the
//! number of periods and `d` the per-period discount rate.
//!
//! ## RFM
//! See [`rfm`] for the quintile rule and the segment table.
//!
//! ## Validation
//! The tests reproduce the published CDNOW figures (BG/NBD, Pareto/NBD, Gamma–Gamma
//! parameters and log-likelihoods, the worked example and the 1,882 holdout purchases).

pub mod bgnbd;
pub mod clv;
pub mod diagnostics;
pub mod fit;
pub mod gamma_gamma;
pub mod journey;
pub mod kpis;
pub mod metrics;
pub mod pareto_nbd;
pub mod prepare;
pub mod rfm;
pub mod simulate;
pub mod special;

pub use bgnbd::BgNbd;
pub use fit::{CalibrationWindow, FitOptions, FitReport};
pub use gamma_gamma::GammaGamma;
pub use pareto_nbd::ParetoNbd;
pub use prepare::{CustomerSummary, SummaryOptions, TimeUnit, Transaction};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing to fit or score.
    #[error("no data: nothing to fit or score")]
    NoData,
    /// Invalid parameters or input records.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The optimiser or a special function failed.
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// A malformed line in a CDNOW file.
    #[error("parse error on line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// Reading the input failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A purchase-count model that can score customers (BG/NBD, Pareto/NBD). `Sync` so that
/// [`clv::predict`] can score customers on several threads.
pub trait TransactionModel: Sync {
    /// Model name, as in [`FitReport::model`].
    fn name(&self) -> &'static str;
    /// P(alive | x, t_x, T).
    fn p_alive(&self, x: f64, t_x: f64, big_t: f64) -> f64;
    /// Expected purchases in the next `t` units given `(x, t_x, T)`.
    fn conditional_expected(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> f64;
    /// Expected purchases in `(0, t]` for a newly acquired customer.
    fn expected(&self, t: f64) -> f64;
    /// `E[Y(t) | x, T, alive at T]`, for models whose conditional expectation factors bit for bit as
    /// `conditional_expected(t, x, t_x, T) == max(expected_if_alive(t, x, T) · p_alive(x, t_x, T), 0)`
    /// (both built-in models do); `None` otherwise (the default). [`clv::predict`] uses it to share
    /// the expensive part among customers with the same `(x, T)`.
    fn expected_if_alive(&self, _t: f64, _x: f64, _big_t: f64) -> Option<f64> {
        None
    }
}

pub(crate) fn check_params(params: &[(&str, f64)]) -> Result<()> {
    for (name, v) in params {
        if !(v.is_finite() && *v > 0.0) {
            return Err(Error::InvalidInput(format!("parameter {name} must be finite and positive, got {v}")));
        }
    }
    Ok(())
}

pub(crate) fn check_summary(c: &CustomerSummary) -> Result<()> {
    let ok = c.recency.is_finite() && c.t.is_finite() && c.recency >= 0.0 && c.recency <= c.t && c.t >= 0.0;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "customer {}: need 0 <= recency <= t, got recency {} and t {}",
            c.customer_id, c.recency, c.t
        )))
    }
}
