//! Fitting infrastructure shared by all models: options, the [`FitReport`] and a bounded
//! Nelder–Mead optimiser on log-parameters with restarts.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::prepare::TimeUnit;

/// The calibration window the summaries were built from (copied into the report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationWindow {
    /// First day with data (inclusive), if known.
    pub start: Option<NaiveDate>,
    /// End of calibration (inclusive).
    pub end: NaiveDate,
    /// Time unit of `recency` and `t`.
    pub unit: TimeUnit,
}

/// Options for maximum-likelihood fitting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Maximum Nelder–Mead iterations per start.
    pub max_iterations: usize,
    /// Maximum number of restarts from the best point so far (a restart re-inflates the simplex,
    /// which protects against premature collapse).
    pub max_restarts: usize,
    /// Relative tolerance on the negative log-likelihood.
    pub tolerance: f64,
    /// Starting parameters in natural units (model order); `None` uses the model default.
    pub initial: Option<Vec<f64>>,
    /// Lower bound applied to every parameter.
    pub lower_bound: f64,
    /// Upper bound applied to every parameter.
    pub upper_bound: f64,
    /// Calibration window to record in the [`FitReport`].
    pub window: Option<CalibrationWindow>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            max_iterations: 5_000,
            max_restarts: 8,
            tolerance: 1e-12,
            initial: None,
            lower_bound: 1e-6,
            upper_bound: 1e6,
            window: None,
        }
    }
}

/// What a fit did: serialisable for logs, APIs and model registries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Model name, e.g. `"bg/nbd"`.
    pub model: String,
    /// Fitted parameters by name, in model order.
    pub parameters: Vec<(String, f64)>,
    /// Maximised log-likelihood (natural log, summed over customers, constants included).
    pub log_likelihood: f64,
    /// Customers used in the fit.
    pub n_customers: usize,
    /// Calibration window, when given in [`FitOptions::window`].
    pub window: Option<CalibrationWindow>,
    /// Wall-clock duration of the fit in seconds.
    pub duration_seconds: f64,
    /// Total optimiser iterations over all restarts.
    pub iterations: usize,
    /// Objective evaluations.
    pub evaluations: usize,
    /// Whether the optimiser met its tolerance (simplex collapsed and a restart did not improve).
    pub converged: bool,
}

pub(crate) struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub converged: bool,
}

/// Minimises `f` over `x` with `lower <= exp(x_i) <= upper` (the caller works in log space).
/// Points outside the bounds or with a non-finite objective are treated as `+inf`.
impl FitReport {
    /// The report of a fit that ended at `m`, started at `started`, on `n_customers`.
    pub(crate) fn from_minimum(
        model: &str,
        parameters: Vec<(String, f64)>,
        n_customers: usize,
        opts: &FitOptions,
        started: std::time::Instant,
        m: &Minimum,
    ) -> Self {
        FitReport {
            model: model.into(),
            parameters,
            log_likelihood: -m.value,
            n_customers,
            window: opts.window,
            duration_seconds: started.elapsed().as_secs_f64(),
            iterations: m.iterations,
            evaluations: m.evaluations,
            converged: m.converged,
        }
    }
}

/// Maximises a model's log-likelihood over positive parameters: starts from `opts.initial` (or all ones),
/// minimises `negative_ll` on log-parameters, and rejects a non-finite optimum. `model` names the model in errors.
pub(crate) fn fit_positive_params(
    model: &str,
    n_params: usize,
    negative_ll: &dyn Fn(&[f64]) -> f64,
    opts: &FitOptions,
) -> crate::Result<Minimum> {
    let start = opts.initial.clone().unwrap_or_else(|| vec![1.0; n_params]);
    if start.len() != n_params {
        return Err(crate::Error::InvalidInput(format!("{model} needs {n_params} initial parameters")));
    }
    let x0: Vec<f64> = start.iter().map(|v| v.ln()).collect();
    let m = minimise_log_params(negative_ll, &x0, opts);
    if !m.value.is_finite() {
        return Err(crate::Error::Numerical(format!("{model} log-likelihood is not finite at the optimum")));
    }
    Ok(m)
}

pub(crate) fn minimise_log_params(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], opts: &FitOptions) -> Minimum {
    let (lo, hi) = (opts.lower_bound.ln(), opts.upper_bound.ln());
    let evals = std::cell::Cell::new(0usize);
    let g = |x: &[f64]| -> f64 {
        evals.set(evals.get() + 1);
        if x.iter().any(|v| !(lo..=hi).contains(v)) {
            return f64::INFINITY;
        }
        let v = f(x);
        if v.is_finite() { v } else { f64::INFINITY }
    };
    let mut best: Vec<f64> = x0.iter().map(|v| v.clamp(lo, hi)).collect();
    let mut best_f = g(&best);
    let mut iterations = 0;
    let mut converged = false;
    for restart in 0..=opts.max_restarts {
        let step = if restart == 0 { 0.5 } else { 0.1 };
        let (x, fx, it, inner_converged) = nelder_mead(&g, &best, step, opts);
        iterations += it;
        let improvement = best_f - fx;
        if fx <= best_f {
            best = x;
            best_f = fx;
        }
        if restart > 0 && inner_converged && improvement.abs() <= 1e3 * opts.tolerance * (1.0 + best_f.abs()) {
            converged = true;
            break;
        }
    }
    Minimum { x: best, value: best_f, iterations, evaluations: evals.get(), converged }
}

/// One Nelder–Mead run with the adaptive coefficients of Gao & Han (2012).
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], step: f64, opts: &FitOptions) -> (Vec<f64>, f64, usize, bool) {
    let n = x0.len();
    let nf = n as f64;
    let (alpha, gamma, rho, sigma) = (1.0, 1.0 + 2.0 / nf, 0.75 - 1.0 / (2.0 * nf), 1.0 - 1.0 / nf);
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((x0.to_vec(), f(x0)));
    for i in 0..n {
        let mut x = x0.to_vec();
        x[i] += step;
        let mut fx = f(&x);
        if !fx.is_finite() {
            x[i] = x0[i] - step;
            fx = f(&x);
        }
        simplex.push((x, fx));
    }
    let mut iterations = 0;
    let mut converged = false;
    while iterations < opts.max_iterations {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let f_best = simplex[0].1;
        let f_worst = simplex[n].1;
        let x_spread = simplex[1..]
            .iter()
            .flat_map(|(x, _)| x.iter().zip(&simplex[0].0).map(|(a, b)| (a - b).abs()))
            .fold(0.0_f64, f64::max);
        if f_best.is_finite() && (f_worst - f_best) <= opts.tolerance * (1.0 + f_best.abs()) && x_spread <= 1e-7 {
            converged = true;
            break;
        }
        iterations += 1;
        let mut centroid = vec![0.0; n];
        for (x, _) in &simplex[..n] {
            for (c, v) in centroid.iter_mut().zip(x) {
                *c += v / nf;
            }
        }
        let along = |t: f64| -> Vec<f64> { centroid.iter().zip(&simplex[n].0).map(|(c, w)| c + t * (c - w)).collect() };
        let xr = along(alpha);
        let fr = f(&xr);
        if fr < simplex[0].1 {
            let xe = along(alpha * gamma);
            let fe = f(&xe);
            simplex[n] = if fe < fr { (xe, fe) } else { (xr, fr) };
            continue;
        }
        if fr < simplex[n - 1].1 {
            simplex[n] = (xr, fr);
            continue;
        }
        let (xc, fc) = if fr < simplex[n].1 {
            let xc = along(alpha * rho);
            let fc = f(&xc);
            (xc, fc)
        } else {
            let xc = along(-rho);
            let fc = f(&xc);
            (xc, fc)
        };
        if fc < simplex[n].1.min(fr) {
            simplex[n] = (xc, fc);
            continue;
        }
        let best = simplex[0].0.clone();
        for (x, fx) in simplex.iter_mut().skip(1) {
            for (v, b) in x.iter_mut().zip(&best) {
                *v = b + sigma * (*v - b);
            }
            *fx = f(x);
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (x, fx) = simplex.swap_remove(0);
    (x, fx, iterations, converged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_a_shifted_quadratic_in_log_space() {
        let f = |x: &[f64]| (x[0] - 1.0).powi(2) + 10.0 * (x[1] + 2.0).powi(2) + 3.0;
        let m = minimise_log_params(&f, &[0.0, 0.0], &FitOptions::default());
        assert!((m.x[0] - 1.0).abs() < 1e-5 && (m.x[1] + 2.0).abs() < 1e-5, "{:?}", m.x);
        assert!((m.value - 3.0).abs() < 1e-9);
        assert!(m.converged);
    }

    #[test]
    fn respects_bounds() {
        let f = |x: &[f64]| (x[0] - 100.0).powi(2);
        let opts = FitOptions { upper_bound: 10.0, ..FitOptions::default() };
        let m = minimise_log_params(&f, &[0.0], &opts);
        assert!(m.x[0] <= 10.0_f64.ln() + 1e-12 && m.x[0] > 10.0_f64.ln() - 1e-3, "{:?}", m.x);
    }
}
