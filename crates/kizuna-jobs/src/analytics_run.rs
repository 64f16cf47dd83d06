//! One analytics run: read every profile, refit the customer-base models, score every buyer (P(alive), churn
//! risk, expected orders, next order date, CLV, RFM), compute the store metrics and the journey funnel, write
//! the scores back in small transactions and record the run with its report.
//!
//! Reads go through reader connections and writes are chunked, so a run never holds the store's write lock for
//! long: ingestion keeps flowing while a run works.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use kizuna_analytics::clv::{ClvOptions, PredictOptions, predict};
use kizuna_analytics::diagnostics::{HoldoutReport, holdout_report};
use kizuna_analytics::fit::{CalibrationWindow, FitOptions, FitReport};
use kizuna_analytics::journey::{self, JourneyFacts, JourneyRules};
use kizuna_analytics::metrics::{CustomerOrders, MetricsOptions, quantile_sorted, store_metrics};
use kizuna_analytics::prepare::{SummaryOptions, summarise};
use kizuna_analytics::{BgNbd, CustomerSummary, GammaGamma, ParetoNbd, TimeUnit, Transaction, TransactionModel};
use kizuna_analytics::{bgnbd, gamma_gamma, pareto_nbd, rfm};
use kizuna_store::{RunOutcome, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::facts::{journey_facts, net_orders, transactions};
use crate::{JobError, JobResult};

/// Settings of the analytics run (the `[analytics]` part of the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyticsSettings {
    /// Time unit of the models (weeks, as in the literature, or days).
    pub unit: TimeUnit,
    /// CLV horizon in months.
    pub clv_months: u32,
    /// Discount rate per month for CLV.
    pub monthly_discount_rate: f64,
    /// Journey: a single order younger than this is "purchase", older "post-purchase".
    pub purchase_window_days: f64,
    /// Length of the holdout used to validate the models on the store's own data.
    pub holdout_days: i64,
    /// At least this many buyers and one repeat purchase are needed to fit the models; below it, the run still
    /// computes RFM, metrics and the funnel and says why the models were skipped.
    pub min_buyers_to_fit: usize,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings {
            unit: TimeUnit::Weeks,
            clv_months: 12,
            monthly_discount_rate: 0.01,
            purchase_window_days: 30.0,
            holdout_days: 91,
            min_buyers_to_fit: 20,
        }
    }
}

static RUNNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How many scores go into one write transaction.
const SCORE_CHUNK: usize = 2_000;
/// Profiles read per page.
const SCAN_PAGE: usize = 5_000;
/// Days in a month, for CLV periods and the 30-day horizon naming.
const DAYS_PER_MONTH: f64 = 30.44;

/// What a finished run reports back to its caller (the full report is stored with the run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: i64,
    pub profiles: usize,
    pub buyers: usize,
    pub scored: usize,
    pub models_fitted: bool,
    pub duration_ms: f64,
}

/// Runs one analytics pass and records it (also when it fails). `trigger` says why it ran.
pub fn run_analytics(
    store: &dyn Store,
    now: DateTime<Utc>,
    trigger: &str,
    settings: &AnalyticsSettings,
) -> JobResult<RunSummary> {
    // One run at a time per process: a run drops the scores it did not write, which must not be a concurrent run's.
    let _one_at_a_time = RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let run_id = store.start_analytics_run(trigger, now)?;
    let started = Instant::now();
    tracing::info!(run_id, trigger, "analytics run started");
    match compute_and_score(store, now, run_id, settings, started) {
        Ok((report, summary)) => {
            store.finish_analytics_run(run_id, &RunOutcome::Succeeded(report), now)?;
            tracing::info!(run_id, buyers = summary.buyers, ms = summary.duration_ms, "analytics run finished");
            Ok(summary)
        }
        Err(error) => {
            tracing::warn!(run_id, %error, "analytics run failed");
            store.finish_analytics_run(run_id, &RunOutcome::Failed(error.to_string()), now)?;
            Err(error)
        }
    }
}

fn compute_and_score(
    store: &dyn Store,
    now: DateTime<Utc>,
    run_id: i64,
    settings: &AnalyticsSettings,
    started: Instant,
) -> JobResult<(Value, RunSummary)> {
    let mut buyers: Vec<CustomerOrders> = Vec::new();
    let mut facts: Vec<JourneyFacts> = Vec::new();
    let mut without_orders = 0usize;
    let mut after = None;
    loop {
        let page = store.scan_profiles(after, SCAN_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        for (id, state) in page {
            let orders = net_orders(&state);
            facts.push(journey_facts(&state, &orders));
            if orders.is_empty() {
                without_orders += 1;
            } else {
                buyers.push(CustomerOrders { customer_id: id.to_string(), orders });
            }
        }
    }
    let profiles = facts.len();
    let today = now.date_naive();
    let unit = settings.unit;

    let metrics = store_metrics(&buyers, &MetricsOptions { as_of: now, max_cohort_months: 24 });
    let kpis = kizuna_analytics::kpis::period_kpis(&buyers, now, &kizuna_analytics::kpis::PERIODS);
    let rules = JourneyRules { purchase_window_days: settings.purchase_window_days };
    let funnel = journey::funnel(&facts, now, &rules);
    drop(facts);

    let tx: Vec<Transaction> = buyers.iter().flat_map(|b| transactions(&b.customer_id, &b.orders, today)).collect();
    let customers = if tx.is_empty() {
        Vec::new()
    } else {
        summarise(&tx, &SummaryOptions { calibration_end: today, observation_end: None, unit })?
    };
    let first_order = tx.iter().map(|t| t.date).min();
    let mut models = fit_models(&customers, first_order, today, settings);
    if models.fitted.is_some() {
        models.holdout = holdout_validation(&tx, today, settings).map(|(report, calibration_end)| {
            json!({"calibration_end": calibration_end, "holdout_days": settings.holdout_days, "report": report})
        });
    }
    drop(tx);

    let month = DAYS_PER_MONTH / unit.days();
    let predictions = models.fitted.as_ref().map(|m| {
        let opts = PredictOptions {
            horizon: 365.0 / unit.days(),
            next_purchase_max: 3.0 * 365.0 / unit.days(),
            clv: ClvOptions {
                periods: settings.clv_months,
                period_length: month,
                discount_rate: settings.monthly_discount_rate,
                ..ClvOptions::default()
            },
        };
        predict(&customers, &m.bg, m.pareto.as_ref().map(|p| p as &dyn TransactionModel), m.spend.as_ref(), &opts)
    });

    let rfm_inputs: Vec<rfm::RfmInput> = customers.iter().map(rfm::RfmInput::from_summary).collect();
    let rfm = if rfm_inputs.is_empty() { None } else { Some(rfm::score(&rfm_inputs)?) };

    // Scores, written in chunks; `customers` is in the order summarise produced, keyed by profile id.
    let mut chunk: Vec<(u64, Value)> = Vec::with_capacity(SCORE_CHUNK);
    let mut scored = 0usize;
    let scored_at = now.to_rfc3339();
    for (i, c) in customers.iter().enumerate() {
        let profile_id: u64 = c
            .customer_id
            .parse()
            .map_err(|_| JobError::Invalid(format!("customer id {} is not a profile id", c.customer_id)))?;
        let mut doc = serde_json::Map::new();
        if let Some((scores, _)) = &rfm {
            let s = &scores[i];
            doc.insert("rfm_recency".into(), json!(s.r));
            doc.insert("rfm_frequency".into(), json!(s.f));
            doc.insert("rfm_monetary".into(), json!(s.m));
            doc.insert("rfm_score".into(), json!(format!("{}{}{}", s.r, s.f, s.m)));
            doc.insert("rfm_segment".into(), json!(s.segment));
        }
        if let (Some(models), Some(predictions)) = (&models.fitted, &predictions) {
            let p = &predictions[i];
            let x = f64::from(c.frequency);
            let expect = |days: f64| round4(models.bg.conditional_expected(days / unit.days(), x, c.recency, c.t));
            // BG/NBD says P(alive) = 1 for every one-time buyer; publish it only from a model that can tell.
            if !p.one_time_buyer || models.pareto.is_some() {
                doc.insert("p_alive".into(), json!(round4(p.p_alive)));
                doc.insert("churn_risk".into(), json!(round4(p.churn_risk)));
            }
            doc.insert("one_time_buyer".into(), json!(p.one_time_buyer));
            doc.insert("expected_orders_30d".into(), json!(expect(30.0)));
            doc.insert("expected_orders_90d".into(), json!(expect(90.0)));
            doc.insert("expected_orders_365d".into(), json!(round4(p.expected_purchases)));
            let next = p.next_purchase_in.map(|t| today + Duration::days((t * unit.days()).ceil() as i64));
            doc.insert("next_order_expected_at".into(), json!(next.map(|d| d.to_string())));
            doc.insert("expected_order_value".into(), json!(p.expected_spend.map(round2)));
            doc.insert("predicted_clv".into(), json!(p.clv.map(round2)));
        }
        doc.insert("orders_net".into(), json!(c.frequency + 1));
        doc.insert("scored_at".into(), json!(scored_at));
        doc.insert("analytics_run".into(), json!(run_id));
        chunk.push((profile_id, Value::Object(doc)));
        if chunk.len() == SCORE_CHUNK {
            store.save_profile_scores(run_id, &chunk)?;
            scored += chunk.len();
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        store.save_profile_scores(run_id, &chunk)?;
        scored += chunk.len();
    }

    let mut report = serde_json::Map::new();
    report.insert("as_of".into(), json!(now));
    report.insert("profiles".into(), json!(profiles));
    report.insert("buyers".into(), json!(buyers.len()));
    report.insert("profiles_without_orders".into(), json!(without_orders));
    report.insert("scored".into(), json!(scored));
    report.insert("settings".into(), json!(settings));
    report.insert(
        "models".into(),
        json!({
            "bgnbd": models.reports.get("bgnbd"),
            "paretonbd": models.reports.get("paretonbd"),
            "gammagamma": models.reports.get("gammagamma"),
            "skipped": models.skipped,
        }),
    );
    report.insert("holdout".into(), json!(models.holdout));
    report.insert("rfm".into(), rfm_report(rfm.as_ref()));
    report.insert("distributions".into(), distributions(predictions.as_deref()));
    report.insert("metrics".into(), json!(metrics));
    report.insert("journey".into(), json!(funnel));
    report.insert("kpis".into(), json!(kpis));
    let duration_ms = started.elapsed().as_secs_f64() * 1e3;
    report.insert("duration_ms".into(), json!(duration_ms));
    let summary = RunSummary {
        run_id,
        profiles,
        buyers: buyers.len(),
        scored,
        models_fitted: models.fitted.is_some(),
        duration_ms,
    };
    Ok((Value::Object(report), summary))
}

struct FittedModels {
    bg: BgNbd,
    pareto: Option<ParetoNbd>,
    spend: Option<GammaGamma>,
}

struct Models {
    fitted: Option<FittedModels>,
    reports: BTreeMap<&'static str, FitReport>,
    /// Why models (or some of them) were not fitted or not used.
    skipped: Vec<String>,
    holdout: Option<Value>,
}

/// Why the purchase models cannot be fitted on these customers, if they cannot.
fn not_fittable(customers: &[CustomerSummary], settings: &AnalyticsSettings) -> Option<String> {
    if customers.len() < settings.min_buyers_to_fit {
        return Some(format!("{} buyers; the models need at least {}", customers.len(), settings.min_buyers_to_fit));
    }
    if customers.iter().all(|c| c.frequency == 0) {
        return Some("no customer has made a repeat purchase yet; the purchase process cannot be estimated".into());
    }
    None
}

/// The optimiser budget of in-store fits. A young store's data can put the optimum on a parameter bound (no
/// dropout seen yet), where Pareto/NBD's hypergeometric terms get expensive; a bounded budget keeps a run short
/// and a fit that does not settle within it is reported as not converged instead of holding the run up.
fn store_fit_options(window: Option<CalibrationWindow>) -> FitOptions {
    FitOptions { max_iterations: 1_500, max_restarts: 2, upper_bound: 1e4, window, ..FitOptions::default() }
}

fn fit_models(
    customers: &[CustomerSummary],
    first_order: Option<NaiveDate>,
    today: NaiveDate,
    settings: &AnalyticsSettings,
) -> Models {
    let mut reports = BTreeMap::new();
    if let Some(reason) = not_fittable(customers, settings) {
        return Models { fitted: None, reports, skipped: vec![reason], holdout: None };
    }
    let options = store_fit_options(Some(CalibrationWindow { start: first_order, end: today, unit: settings.unit }));
    let mut skipped = Vec::new();
    let Some(bg) = accept(bgnbd::fit(customers, &options), "bgnbd", "BG/NBD", &mut reports, &mut skipped) else {
        return Models { fitted: None, reports, skipped, holdout: None };
    };
    // Pareto/NBD only supplies P(alive) for one-time buyers; without it they get no P(alive) (BG/NBD's is 1).
    let pareto = accept(pareto_nbd::fit(customers, &options), "paretonbd", "Pareto/NBD", &mut reports, &mut skipped);
    let repeat: Vec<CustomerSummary> = customers.iter().filter(|c| c.frequency > 0).cloned().collect();
    let spend = accept(gamma_gamma::fit(&repeat, &options), "gammagamma", "Gamma-Gamma", &mut reports, &mut skipped);
    Models { fitted: Some(FittedModels { bg, pareto, spend }), reports, skipped, holdout: None }
}

/// Keeps a fit's report under `key` and returns the model if it converged; otherwise notes why in `skipped`.
fn accept<M>(
    fit: kizuna_analytics::Result<(M, FitReport)>,
    key: &'static str,
    label: &str,
    reports: &mut BTreeMap<&'static str, FitReport>,
    skipped: &mut Vec<String>,
) -> Option<M> {
    match fit {
        Ok((model, report)) => {
            let outcome = converged(&report);
            reports.insert(key, report);
            match outcome {
                Ok(()) => Some(model),
                Err(reason) => {
                    skipped.push(reason);
                    None
                }
            }
        }
        Err(error) => {
            skipped.push(format!("{label}: {error}"));
            None
        }
    }
}

fn converged(report: &FitReport) -> Result<(), String> {
    if report.converged && report.log_likelihood.is_finite() {
        Ok(())
    } else {
        Err(format!("the {} fit did not converge ({} iterations)", report.model, report.iterations))
    }
}

/// Validates the models on the store's own history: fit on everything up to `today − holdout_days`, predict the
/// holdout, compare with what happened. Needs a calibration period at least as long as the holdout.
pub fn holdout_validation(
    tx: &[Transaction],
    today: NaiveDate,
    settings: &AnalyticsSettings,
) -> Option<(HoldoutReport, NaiveDate)> {
    let calibration_end = today - Duration::days(settings.holdout_days);
    let first = tx.iter().map(|t| t.date).min()?;
    if (calibration_end - first).num_days() < settings.holdout_days {
        return None;
    }
    let opts = SummaryOptions { calibration_end, observation_end: Some(today), unit: settings.unit };
    let customers = summarise(tx, &opts).ok()?;
    if not_fittable(&customers, settings).is_some() {
        return None;
    }
    let options = store_fit_options(None);
    let (bg, report) = bgnbd::fit(&customers, &options).ok()?;
    converged(&report).ok()?;
    let pareto = pareto_nbd::fit(&customers, &options).ok().filter(|(_, r)| converged(r).is_ok()).map(|(m, _)| m);
    let mut models: Vec<&dyn TransactionModel> = vec![&bg];
    if let Some(pareto) = &pareto {
        models.push(pareto);
    }
    Some((holdout_report(&customers, &models), calibration_end))
}

fn rfm_report(rfm: Option<&(Vec<rfm::RfmScore>, rfm::RfmEdges)>) -> Value {
    let Some((scores, edges)) = rfm else { return Value::Null };
    let mut segments: BTreeMap<String, usize> = BTreeMap::new();
    // grid[r-1][f-1]: customers with recency score r and frequency score f (the usual RFM heat map).
    let mut grid = [[0usize; 5]; 5];
    for s in scores {
        *segments.entry(s.segment.label().to_owned()).or_default() += 1;
        grid[usize::from(s.r.clamp(1, 5) - 1)][usize::from(s.f.clamp(1, 5) - 1)] += 1;
    }
    json!({"customers": scores.len(), "edges": edges, "segments": segments, "grid_recency_by_frequency": grid})
}

/// Percentiles and a histogram of a score over all scored customers.
fn distribution(mut values: Vec<f64>, buckets: &[f64]) -> Value {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let mut counts = vec![0usize; buckets.len() + 1];
    for v in &values {
        counts[buckets.iter().filter(|edge| *v >= **edge).count()] += 1;
    }
    let q = |p: f64| quantile_sorted(&values, p);
    json!({
        "count": values.len(),
        "mean": (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
        "p10": q(0.1), "p25": q(0.25), "p50": q(0.5), "p75": q(0.75), "p90": q(0.9), "p99": q(0.99),
        "histogram": {"edges": buckets, "counts": counts},
    })
}

fn distributions(predictions: Option<&[kizuna_analytics::clv::CustomerPrediction]>) -> Value {
    let Some(predictions) = predictions else { return Value::Null };
    let tenths: Vec<f64> = (1..10).map(|i| f64::from(i) / 10.0).collect();
    let clv: Vec<f64> = predictions.iter().filter_map(|p| p.clv).collect();
    let mut clv_edges: Vec<f64> = Vec::new();
    if let Some(max) = clv.iter().copied().filter(|v| v.is_finite()).reduce(f64::max) {
        // Ten equal-width buckets up to the 99th percentile keep one whale from flattening the chart.
        let mut sorted = clv.clone();
        sorted.sort_by(f64::total_cmp);
        let top = quantile_sorted(&sorted, 0.99).unwrap_or(max).max(1.0);
        clv_edges = (1..10).map(|i| round2(top * f64::from(i) / 10.0)).collect();
    }
    json!({
        "churn_risk": distribution(predictions.iter().map(|p| p.churn_risk).collect(), &tenths),
        "p_alive": distribution(predictions.iter().map(|p| p.p_alive).collect(), &tenths),
        "predicted_clv": distribution(clv, &clv_edges),
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}
