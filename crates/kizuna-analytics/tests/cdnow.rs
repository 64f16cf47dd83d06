//! Reproduces the published CDNOW figures (see /work/shared/datasets/README.md).

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::NaiveDate;
use kizuna_analytics::prepare::{self, CdnowRecord, CustomerSummary, SummaryOptions, TimeUnit};
use kizuna_analytics::{BgNbd, CalibrationWindow, FitOptions, bgnbd, clv, gamma_gamma, pareto_nbd};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/cdnow/CDNOW_sample.txt");
const SUMMARY_CSV: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/cdnow/cdnow_customers_summary.csv");

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn open(path: &str) -> std::fs::File {
    std::fs::File::open(path).unwrap_or_else(|e| panic!("dataset missing or unreadable: {path}: {e}"))
}

fn records() -> &'static Vec<CdnowRecord> {
    static R: OnceLock<Vec<CdnowRecord>> = OnceLock::new();
    R.get_or_init(|| prepare::read_cdnow(open(SAMPLE)).expect("CDNOW sample parses"))
}

/// Calibration = 39 weeks from 1997-01-01 (ends 1997-09-30), holdout to 1998-06-30 (week 78).
fn options() -> SummaryOptions {
    SummaryOptions {
        calibration_end: date(1997, 9, 30),
        observation_end: Some(date(1998, 6, 30)),
        unit: TimeUnit::Weeks,
    }
}

fn summaries() -> &'static Vec<CustomerSummary> {
    static S: OnceLock<Vec<CustomerSummary>> = OnceLock::new();
    S.get_or_init(|| {
        let txs: Vec<_> = records().iter().map(CdnowRecord::to_transaction).collect();
        prepare::summarise(&txs, &options()).expect("summarise CDNOW")
    })
}

fn fit_options() -> FitOptions {
    FitOptions {
        window: Some(CalibrationWindow {
            start: Some(date(1997, 1, 1)),
            end: date(1997, 9, 30),
            unit: TimeUnit::Weeks,
        }),
        ..FitOptions::default()
    }
}

fn bgnbd_fit() -> &'static (BgNbd, kizuna_analytics::FitReport) {
    static F: OnceLock<(BgNbd, kizuna_analytics::FitReport)> = OnceLock::new();
    F.get_or_init(|| bgnbd::fit(summaries(), &fit_options()).expect("BG/NBD fit"))
}

fn assert_rel(name: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs(), "{name}: got {got}, published {want} (tolerance {rel} relative)");
}

fn assert_abs(name: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol, "{name}: got {got}, published {want} (tolerance ±{tol})");
}

#[test]
fn prepared_summary_matches_published_csv() {
    let mut reader = csv::Reader::from_reader(open(SUMMARY_CSV));
    let mut expected: HashMap<u32, (u32, f64, f64)> = HashMap::new();
    for row in reader.records() {
        let row = row.expect("csv row");
        let id: u32 = row[0].parse().expect("ID");
        let freq: u32 = row[1].parse().expect("frequency");
        expected.insert(id, (freq, row[2].parse().expect("recency"), row[3].parse().expect("T")));
    }
    let index: HashMap<&str, u32> =
        records().iter().map(|r| (r.customer_id.as_str(), r.customer_index.expect("sample has an index"))).collect();
    let s = summaries();
    assert_eq!(s.len(), 2357);
    assert_eq!(expected.len(), s.len());
    for c in s {
        let idx = index[c.customer_id.as_str()];
        let &(f, r, t) = expected.get(&idx).unwrap_or_else(|| panic!("customer index {idx} not in CSV"));
        assert_eq!(c.frequency, f, "frequency of {idx}");
        // The CSV rounds recency and T to 2 decimals.
        assert!((c.recency - r).abs() <= 0.005 + 1e-9, "recency of {idx}: {} vs {r}", c.recency);
        assert!((c.t - t).abs() <= 0.005 + 1e-9, "T of {idx}: {} vs {t}", c.t);
    }
    assert_eq!(s.iter().filter(|c| c.frequency > 0).count(), 946);
}

#[test]
fn bgnbd_reproduces_published_fit() {
    let (m, report) = bgnbd_fit();
    println!("BG/NBD fit: {}", serde_json::to_string(report).expect("serialise"));
    assert_rel("r", m.r, 0.243, 0.01);
    assert_rel("alpha", m.alpha, 4.414, 0.01);
    assert_rel("a", m.a, 0.793, 0.01);
    assert_rel("b", m.b, 2.426, 0.01);
    assert_abs("log-likelihood", report.log_likelihood, -9582.4, 0.5);
    assert!((m.log_likelihood(summaries()) - report.log_likelihood).abs() < 1e-6);
    assert!(report.converged);
    assert_eq!(report.n_customers, 2357);
    assert_eq!(report.model, "bg/nbd");
}

#[test]
fn bgnbd_worked_example() {
    let m = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("valid");
    let e = m.conditional_expected(39.0, 2.0, 30.43, 38.86);
    let p = m.p_alive(2.0, 30.43, 38.86);
    println!("worked example: E[Y(39)] = {e:.4}, P(alive) = {p:.4}");
    assert_abs("E[Y(39) | 2, 30.43, 38.86]", e, 1.226, 0.002);
    assert_abs("P(alive | 2, 30.43, 38.86)", p, 0.727, 0.002);
}

#[test]
fn bgnbd_holdout_prediction() {
    let (m, _) = bgnbd_fit();
    let s = summaries();
    let actual: u32 = s.iter().map(|c| c.holdout_frequency).sum();
    let predicted: f64 =
        s.iter().map(|c| m.conditional_expected(c.holdout_duration, f64::from(c.frequency), c.recency, c.t)).sum();
    println!("holdout weeks 40-78: actual {actual}, BG/NBD predicted {predicted:.1}");
    assert_eq!(actual, 1882);
    // The sum of conditional expectations over the 39-week holdout, with the published
    // parameters and an independent mpmath evaluation of FHL (2005) eq. 10 on the CSV summary, is
    // 1653.95: the BG/NBD under-forecasts this holdout by ~12 % (it under-predicts the x = 1..2
    // groups, as the paper's conditional-expectation plot shows). We pin our value to that
    // reference and bound the error against the actual count at 15 %.
    let published = BgNbd::new(0.243, 4.414, 0.793, 2.426).expect("valid");
    let with_published: f64 = s
        .iter()
        .map(|c| published.conditional_expected(c.holdout_duration, f64::from(c.frequency), c.recency, c.t))
        .sum();
    println!("holdout: with the published parameters {with_published:.2} (mpmath reference 1653.95)");
    assert_abs("holdout prediction with published parameters", with_published, 1653.95, 1.0);
    assert_abs("holdout prediction with fitted parameters", predicted, with_published, 5.0);
    assert!((predicted - 1882.0).abs() <= 0.15 * 1882.0, "prediction {predicted} not within 15% of 1882");
    // E[X(t)] for a new customer (FHL eq. 9), mpmath references with the published parameters;
    // t = 1000 exercises the z -> 1-z transformation of 2F1.
    for (t, want) in [(39.0, 1.196_723_193_320_814), (78.0, 1.860_519_057_942_765), (1000.0, 6.580_391_613_738_319)] {
        assert_abs(&format!("E[X({t})]"), published.expected(t), want, 1e-9 * want);
    }
}

#[test]
fn gamma_gamma_reproduces_published_fit() {
    let (g, report) = gamma_gamma::fit(summaries(), &fit_options()).expect("Gamma-Gamma fit");
    println!("Gamma-Gamma fit: {}", serde_json::to_string(&report).expect("serialise"));
    assert_eq!(report.n_customers, 946);
    assert_rel("p", g.p, 6.25, 0.02);
    assert_rel("q", g.q, 3.74, 0.02);
    assert_rel("gamma", g.gamma, 15.44, 0.02);
    assert_abs("log-likelihood", report.log_likelihood, -4055.9, 1.0);
    assert!(report.converged);

    // CLV is finite, non-negative, and larger for a better customer.
    let (m, _) = bgnbd_fit();
    let opts = clv::ClvOptions::default();
    let s = summaries();
    let values: Vec<f64> = s.iter().map(|c| clv::customer_lifetime_value(m, &g, c, &opts)).collect();
    assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0));
    let best = s.iter().zip(&values).max_by(|a, b| a.1.total_cmp(b.1)).expect("non-empty");
    assert!(best.0.frequency > 5, "top CLV customer should be a frequent buyer");
}

#[test]
fn pareto_nbd_reproduces_published_fit() {
    let (m, report) = pareto_nbd::fit(summaries(), &fit_options()).expect("Pareto/NBD fit");
    println!("Pareto/NBD fit: {}", serde_json::to_string(&report).expect("serialise"));
    assert_rel("r", m.r, 0.553, 0.01);
    assert_rel("alpha", m.alpha, 10.578, 0.01);
    assert_rel("s", m.s, 0.606, 0.01);
    assert_rel("beta", m.beta, 11.669, 0.01);
    assert_abs("log-likelihood", report.log_likelihood, -9595.0, 0.5);
    assert!(report.converged);
    // Conditional expectation over the holdout is in the same ballpark as the actual count.
    let predicted: f64 = summaries()
        .iter()
        .map(|c| m.conditional_expected(c.holdout_duration, f64::from(c.frequency), c.recency, c.t))
        .sum();
    println!("holdout: Pareto/NBD predicted {predicted:.1} vs actual 1882");
    assert!((predicted - 1882.0).abs() <= 0.15 * 1882.0, "Pareto/NBD holdout prediction {predicted}");
    assert!((predicted - 1665.5).abs() <= 5.0, "Pareto/NBD holdout prediction {predicted}");
}

#[test]
fn predictions_use_pareto_nbd_for_one_time_buyers() {
    let (bg, _) = bgnbd_fit();
    let pnbd = kizuna_analytics::ParetoNbd::new(0.553, 10.578, 0.606, 11.669).expect("valid");
    let g = kizuna_analytics::GammaGamma::new(6.25, 3.74, 15.44).expect("valid");
    let preds = clv::predict(summaries(), bg, Some(&pnbd), Some(&g), &clv::PredictOptions::default());
    assert_eq!(preds.len(), 2357);
    for (p, c) in preds.iter().zip(summaries()) {
        assert_eq!(p.one_time_buyer, c.frequency == 0);
        assert!((0.0..=1.0).contains(&p.p_alive));
        assert!((p.churn_risk - (1.0 - p.p_alive)).abs() < 1e-12);
        if p.one_time_buyer {
            assert_eq!(p.p_alive_model, "pareto/nbd");
            assert!(p.p_alive < 1.0);
        } else {
            assert_eq!(p.p_alive_model, "bg/nbd");
        }
        if let Some(t) = p.next_purchase_in {
            let e = bg.conditional_expected(t, f64::from(c.frequency), c.recency, c.t);
            assert!((e - 1.0).abs() < 1e-4, "E[Y(next)] = {e}");
        }
        assert!(p.clv.is_some_and(|v| v.is_finite() && v >= 0.0));
    }
    assert!(preds.iter().any(|p| p.next_purchase_in.is_some()));
}

#[test]
fn predictions_equal_the_per_customer_definitions_bit_for_bit() {
    // clv::predict shares work between customers and threads; its values must be exactly those of
    // the public per-customer functions.
    let (bg, _) = bgnbd_fit();
    let pnbd = kizuna_analytics::ParetoNbd::new(0.553, 10.578, 0.606, 11.669).expect("valid");
    let g = kizuna_analytics::GammaGamma::new(6.25, 3.74, 15.44).expect("valid");
    let opts = clv::PredictOptions::default();
    let models: [(&dyn kizuna_analytics::TransactionModel, Option<&dyn kizuna_analytics::TransactionModel>); 3] =
        [(bg, Some(&pnbd)), (bg, None), (&pnbd, None)];
    for (model, one_time) in models {
        let preds = clv::predict(summaries(), model, one_time, Some(&g), &opts);
        for (p, c) in preds.iter().zip(summaries()) {
            let x = f64::from(c.frequency);
            let alive = match one_time {
                Some(m) if c.frequency == 0 => m,
                _ => model,
            };
            assert_eq!(p.customer_id, c.customer_id);
            assert_eq!(p.p_alive.to_bits(), alive.p_alive(x, c.recency, c.t).clamp(0.0, 1.0).to_bits());
            assert_eq!(p.p_alive_model, alive.name());
            let e = model.conditional_expected(opts.horizon, x, c.recency, c.t);
            assert_eq!(p.expected_purchases.to_bits(), e.to_bits(), "{}", c.customer_id);
            let next = clv::expected_time_to_next_purchase(model, x, c.recency, c.t, opts.next_purchase_max);
            assert_eq!(p.next_purchase_in.map(f64::to_bits), next.map(f64::to_bits), "{}", c.customer_id);
            let value = clv::customer_lifetime_value(model, &g, c, &opts.clv);
            assert_eq!(p.clv.map(f64::to_bits), Some(value.to_bits()), "{}", c.customer_id);
            assert_eq!(p.expected_spend, Some(g.conditional_expected_spend(x, c.monetary)));
        }
    }
}

/// The per-customer log-likelihood values the issue quotes (as in the `lifetimes` test suite): r = 0.25,
/// alpha = 4, a = 0.8, b = 2.5, T = 40, at (x = 0, t_x = 0) and at the large-x case (x = 200, t_x = 38).
#[test]
fn per_customer_log_likelihood_matches_the_reference_values_including_large_x() {
    let model = kizuna_analytics::BgNbd::new(0.25, 4.0, 0.8, 2.5).expect("model");
    let at_zero = model.log_likelihood_one(0.0, 0.0, 40.0);
    assert!((at_zero - -0.599_473_82).abs() < 1e-8, "ll(0, 0, 40) = {at_zero}");
    let large_x = model.log_likelihood_one(200.0, 38.0, 40.0);
    assert!((large_x - 100.7957).abs() < 1e-4, "ll(200, 38, 40) = {large_x}");
}
