//! Fitting infrastructure shared by all models: options, the [`FitReport`], a bounded BFGS
//! optimiser on log-parameters for objectives with analytic gradients (BG/NBD, Gamma–Gamma), a
//! bounded Nelder–Mead optimiser with restarts (Pareto/NBD, and the fallback when BFGS does not
//! converge), and the de-duplication of customer histories into weighted distinct triples.

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
    /// Maximum optimiser iterations (BFGS iterations, or Nelder–Mead iterations per start).
    pub max_iterations: usize,
    /// Maximum number of restarts from the best point so far (a restart re-inflates the simplex,
    /// which protects against premature collapse).
    pub max_restarts: usize,
    /// Relative tolerance on the negative log-likelihood (Nelder–Mead). BFGS stops when every
    /// gradient component (with respect to the log-parameters) is at most
    /// `1e3 · tolerance · (1 + |NLL|)`.
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
    /// Whether the optimiser met its tolerance (BFGS: the gradient criterion of
    /// [`FitOptions::tolerance`]; Nelder–Mead: the simplex collapsed and a restart did not improve).
    pub converged: bool,
}

pub(crate) struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub converged: bool,
}

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
    let x0 = log_start(model, n_params, opts)?;
    finite_optimum(model, minimise_log_params(negative_ll, &x0, opts))
}

/// The starting point in log-parameters: `opts.initial` (or all ones), checked for length.
fn log_start(model: &str, n_params: usize, opts: &FitOptions) -> crate::Result<Vec<f64>> {
    let start = opts.initial.clone().unwrap_or_else(|| vec![1.0; n_params]);
    if start.len() != n_params {
        return Err(crate::Error::InvalidInput(format!("{model} needs {n_params} initial parameters")));
    }
    Ok(start.iter().map(|v| v.ln()).collect())
}

fn finite_optimum(model: &str, m: Minimum) -> crate::Result<Minimum> {
    if !m.value.is_finite() {
        return Err(crate::Error::Numerical(format!("{model} log-likelihood is not finite at the optimum")));
    }
    Ok(m)
}

/// Like [`fit_positive_params`] for an objective that also writes its gradient with respect to the
/// log-parameters into its second argument: minimised by [`minimise_smooth`].
pub(crate) fn fit_positive_params_smooth(
    model: &str,
    n_params: usize,
    negative_ll: &dyn Fn(&[f64], &mut [f64]) -> f64,
    opts: &FitOptions,
) -> crate::Result<Minimum> {
    let x0 = log_start(model, n_params, opts)?;
    finite_optimum(model, minimise_smooth(negative_ll, &x0, opts))
}

/// Minimises a smooth `f` (value and gradient) over log-parameters within the bounds: BFGS first;
/// if it does not meet its gradient criterion, Nelder–Mead with restarts continues from its best
/// point (so hard cases are as robust as before, only slower).
pub(crate) fn minimise_smooth(f: &dyn Fn(&[f64], &mut [f64]) -> f64, x0: &[f64], opts: &FitOptions) -> Minimum {
    let b = bfgs(f, x0, opts);
    if b.converged {
        return b;
    }
    let scratch = std::cell::RefCell::new(vec![0.0; x0.len()]);
    let value_only = |x: &[f64]| f(x, &mut scratch.borrow_mut());
    let m = minimise_log_params(&value_only, &b.x, opts);
    let (iterations, evaluations) = (b.iterations + m.iterations, b.evaluations + m.evaluations);
    let best = if m.value <= b.value { m } else { Minimum { converged: m.converged, ..b } };
    Minimum { iterations, evaluations, ..best }
}

/// BFGS on log-parameters with an Armijo backtracking line search (quadratic interpolation),
/// steps clamped to the bounds, the inverse Hessian initialised by the Shanno–Phua scaling and
/// updates skipped when the curvature condition fails. Points outside the bounds or with a
/// non-finite value or gradient count as `+inf`. `converged` when the largest gradient component
/// is at most `1e3 · tolerance · (1 + |f|)`.
pub(crate) fn bfgs(f: &dyn Fn(&[f64], &mut [f64]) -> f64, x0: &[f64], opts: &FitOptions) -> Minimum {
    let n = x0.len();
    let (lo, hi) = (opts.lower_bound.ln(), opts.upper_bound.ln());
    let mut evaluations = 0usize;
    let mut eval = |x: &[f64], g: &mut [f64]| -> f64 {
        evaluations += 1;
        if x.iter().any(|v| !(lo..=hi).contains(v)) {
            return f64::INFINITY;
        }
        let v = f(x, g);
        if v.is_finite() && g.iter().all(|d| d.is_finite()) { v } else { f64::INFINITY }
    };
    let gtol = |fx: f64| 1e3 * opts.tolerance * (1.0 + fx.abs());
    let max_abs = |v: &[f64]| v.iter().fold(0.0_f64, |m, d| m.max(d.abs()));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut x: Vec<f64> = x0.iter().map(|v| v.clamp(lo, hi)).collect();
    let mut g = vec![0.0; n];
    let mut fx = eval(&x, &mut g);
    let mut h = identity(n);
    let mut iterations = 0;
    let mut converged = false;
    let (mut x_new, mut g_new, mut d) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    while fx.is_finite() && iterations < opts.max_iterations {
        if max_abs(&g) <= gtol(fx) {
            converged = true;
            break;
        }
        iterations += 1;
        for (di, row) in d.iter_mut().zip(&h) {
            *di = -dot(row, &g);
        }
        let mut slope = dot(&d, &g);
        if slope >= 0.0 || !slope.is_finite() {
            h = identity(n);
            for (di, gi) in d.iter_mut().zip(&g) {
                *di = -gi;
            }
            slope = dot(&d, &g);
        }
        // At most a factor e^3 per parameter and step.
        let longest = max_abs(&d);
        if longest > 3.0 {
            for di in &mut d {
                *di *= 3.0 / longest;
            }
            slope *= 3.0 / longest;
        }
        let mut step = 1.0;
        let mut f_new = f64::INFINITY;
        let mut accepted = false;
        for _ in 0..60 {
            for ((xn, xi), di) in x_new.iter_mut().zip(&x).zip(&d) {
                *xn = (xi + step * di).clamp(lo, hi);
            }
            f_new = eval(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope {
                accepted = true;
                break;
            }
            step = if f_new.is_finite() {
                let q = -slope * step * step / (2.0 * (f_new - fx - slope * step));
                q.clamp(0.1 * step, 0.5 * step)
            } else {
                0.25 * step
            };
        }
        if !accepted {
            break;
        }
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let yy = dot(&y, &y);
        if sy > 1e-12 * dot(&s, &s).sqrt() * yy.sqrt() && yy > 0.0 {
            if iterations == 1 {
                h = identity(n);
                for (i, row) in h.iter_mut().enumerate() {
                    row[i] = sy / yy;
                }
            }
            bfgs_update(&mut h, &s, &y, sy);
        }
        let progress = fx - f_new;
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        if progress <= 1e-15 * (1.0 + fx.abs()) && max_abs(&s) <= 1e-12 {
            // No more progress possible at double precision.
            converged = max_abs(&g) <= 1e3 * gtol(fx);
            break;
        }
    }
    Minimum { x, value: fx, iterations, evaluations, converged }
}

fn identity(n: usize) -> Vec<Vec<f64>> {
    (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect()
}

/// `H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ` with `ρ = 1 / (sᵀ y)`.
fn bfgs_update(h: &mut [Vec<f64>], s: &[f64], y: &[f64], sy: f64) {
    let n = s.len();
    let rho = 1.0 / sy;
    let hy: Vec<f64> = h.iter().map(|row| row.iter().zip(y).map(|(a, b)| a * b).sum()).collect();
    let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
    for i in 0..n {
        for j in 0..n {
            h[i][j] += -rho * (s[i] * hy[j] + hy[i] * s[j]) + (rho * rho * yhy + rho) * s[i] * s[j];
        }
    }
}

/// Minimises `f` over `x` with `lower <= exp(x_i) <= upper` (the caller works in log space) by
/// Nelder–Mead with restarts. Points outside the bounds or with a non-finite objective are
/// treated as `+inf`.
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

/// Customer histories reduced to their distinct `(x, t_x, T)` triples with multiplicities, plus
/// the distinct `t_x` and `T` values each triple points into (so per-value work such as
/// `ln(α + T)` is done once per distinct value, not once per customer). Exact: the likelihood is
/// a sum over customers, so equal histories contribute `weight ×` one term.
pub(crate) struct Histories {
    /// Repeat purchases of each distinct triple.
    pub x: Vec<u32>,
    /// Index into `recencies` of each triple's `t_x`.
    pub recency_index: Vec<u32>,
    /// Index into `ages` of each triple's `T`.
    pub age_index: Vec<u32>,
    /// Number of customers with each triple.
    pub weight: Vec<f64>,
    /// Distinct `t_x` values.
    pub recencies: Vec<f64>,
    /// Distinct `T` values.
    pub ages: Vec<f64>,
    /// Largest `x`.
    pub max_x: u32,
}

impl Histories {
    pub(crate) fn new(customers: &[crate::prepare::CustomerSummary]) -> Self {
        let mut triples: Vec<(u32, u64, u64)> =
            customers.iter().map(|c| (c.frequency, (c.recency + 0.0).to_bits(), (c.t + 0.0).to_bits())).collect();
        triples.sort_unstable();
        let distinct = |bits: &mut dyn Iterator<Item = u64>| -> Vec<u64> {
            let mut v: Vec<u64> = bits.collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let recency_bits = distinct(&mut triples.iter().map(|t| t.1));
        let age_bits = distinct(&mut triples.iter().map(|t| t.2));
        let position = |v: &[u64], b: u64| v.binary_search(&b).unwrap_or_default() as u32;
        let mut h = Histories {
            x: Vec::new(),
            recency_index: Vec::new(),
            age_index: Vec::new(),
            weight: Vec::new(),
            recencies: recency_bits.iter().map(|b| f64::from_bits(*b)).collect(),
            ages: age_bits.iter().map(|b| f64::from_bits(*b)).collect(),
            max_x: triples.iter().map(|t| t.0).max().unwrap_or(0),
        };
        let mut i = 0;
        while i < triples.len() {
            let mut j = i + 1;
            while j < triples.len() && triples[j] == triples[i] {
                j += 1;
            }
            let (x, r, t) = triples[i];
            h.x.push(x);
            h.recency_index.push(position(&recency_bits, r));
            h.age_index.push(position(&age_bits, t));
            h.weight.push((j - i) as f64);
            i = j;
        }
        h
    }

    /// Number of distinct triples.
    pub(crate) fn len(&self) -> usize {
        self.x.len()
    }
}

/// Sums `term(range)` over `0..n` split into contiguous ranges, on several threads when `n` is
/// large (the partial sums are added in range order, so the result is deterministic for a
/// given `n` and machine).
pub(crate) fn parallel_sum<const K: usize>(
    n: usize,
    term: &(dyn Fn(std::ops::Range<usize>) -> [f64; K] + Sync),
) -> [f64; K] {
    const MIN_CHUNK: usize = 16_384;
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(n / MIN_CHUNK).max(1);
    if threads == 1 {
        return term(0..n);
    }
    let chunk = n.div_ceil(threads);
    let parts: Vec<[f64; K]> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n).step_by(chunk).map(|s| scope.spawn(move || term(s..(s + chunk).min(n)))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let mut total = [0.0; K];
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfgs_minimises_a_rosenbrock_valley_in_log_space() {
        let f = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (x[0] - 1.0, x[1] - x[0] * x[0]);
            g[0] = 2.0 * a - 400.0 * x[0] * b;
            g[1] = 200.0 * b;
            a * a + 100.0 * b * b + 3.0
        };
        let m = minimise_smooth(&f, &[-1.2, 1.0], &FitOptions::default());
        assert!((m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6, "{:?}", m.x);
        assert!(m.converged && m.iterations < 200, "{} iterations", m.iterations);
        assert!((m.value - 3.0).abs() < 1e-12);
    }

    #[test]
    fn smooth_minimiser_respects_bounds() {
        // The minimum is outside the box: BFGS cannot meet its gradient criterion there and
        // Nelder–Mead takes over; the answer sits on the bound.
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2.0 * (x[0] - 100.0);
            (x[0] - 100.0).powi(2)
        };
        let opts = FitOptions { upper_bound: 10.0, ..FitOptions::default() };
        let m = minimise_smooth(&f, &[0.0], &opts);
        assert!(m.x[0] <= 10.0_f64.ln() + 1e-12 && m.x[0] > 10.0_f64.ln() - 1e-3, "{:?}", m.x);
    }

    #[test]
    fn histories_deduplicate_exactly() {
        use crate::prepare::CustomerSummary;
        let c = |x: u32, tx: f64, t: f64| CustomerSummary::from_stats("c", x, tx, t);
        let h = Histories::new(&[c(0, 0.0, 5.0), c(2, 1.0, 5.0), c(0, 0.0, 5.0), c(2, 1.0, 4.0), c(0, -0.0, 5.0)]);
        assert_eq!(h.len(), 3);
        assert_eq!(h.weight.iter().sum::<f64>(), 5.0);
        assert_eq!(h.ages, vec![4.0, 5.0]);
        assert_eq!(h.recencies, vec![0.0, 1.0]);
        assert_eq!((h.x[0], h.weight[0], h.ages[h.age_index[0] as usize]), (0, 3.0, 5.0));
        assert_eq!(h.max_x, 2);
    }

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
