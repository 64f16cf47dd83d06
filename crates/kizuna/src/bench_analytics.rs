//! `kizuna bench analytics` (issue 4): BG/NBD and Gamma–Gamma fits and per-customer predictions on the CDNOW
//! master file and on a simulated store of a million customers, side by side with the Python `lifetimes`
//! package on the same summaries in the same run (parameters to 3 decimals, time ratio).
//!
//! The lifetimes half runs `scripts/bench/lifetimes_compare.py` with `--python` (default
//! `.venv-bench/bin/python`, which `scripts/bench-analytics` creates); without it the Kizuna half still runs.

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Args;
use kizuna_analytics::clv::{self, PredictOptions};
use kizuna_analytics::prepare::{self, CdnowRecord, CustomerSummary, SummaryOptions, TimeUnit};
use kizuna_analytics::simulate::{self, SimulationOptions};
use kizuna_analytics::{BgNbd, FitOptions, GammaGamma, bgnbd, gamma_gamma};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct AnalyticsArgs {
    /// The CDNOW master file (customer_id YYYYMMDD cds dollars)
    #[arg(long, default_value = "../shared/datasets/cdnow/CDNOW_master.txt")]
    cdnow: PathBuf,
    /// Customers in the simulated store
    #[arg(long, default_value_t = 1_000_000)]
    customers: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Timed runs on CDNOW (the median is reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Timed runs on the simulated store (the median is reported)
    #[arg(long, default_value_t = 3)]
    sim_runs: usize,
    /// Python interpreter with `lifetimes` installed (default: .venv-bench/bin/python if it exists); `none`
    /// skips the comparison
    #[arg(long)]
    python: Option<PathBuf>,
    /// The comparison script
    #[arg(long, default_value = "scripts/bench/lifetimes_compare.py")]
    script: PathBuf,
    /// Directory for the summaries CSVs (default: a new temporary directory)
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// Prediction horizon in weeks (both data sets are in weeks).
const HORIZON: f64 = 52.0;

struct Measured {
    customers: usize,
    distinct_histories: usize,
    repeat_buyers: usize,
    bg: BgNbd,
    bg_ll: f64,
    bg_fit: Vec<f64>,
    gg: GammaGamma,
    gg_fit: Vec<f64>,
    /// `clv::predict`: P(alive), E[Y(52)], next purchase, expected spend, CLV, all customers, all cores.
    predict_full: Vec<f64>,
    /// E[Y(52)] and P(alive) only (what the lifetimes side computes), one core, per-customer calls.
    predict_basic: Vec<f64>,
    sum_expected: f64,
    sum_p_alive: f64,
}

pub fn run(args: AnalyticsArgs) -> Result<()> {
    let dir = match &args.out_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("kizuna-bench-analytics-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    eprintln!("loading {}…", args.cdnow.display());
    let file = std::fs::File::open(&args.cdnow).with_context(|| format!("cannot open {}", args.cdnow.display()))?;
    let txs: Vec<_> = prepare::read_cdnow(file)?.iter().map(CdnowRecord::to_transaction).collect();
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).context("date");
    let cdnow = prepare::summarise(
        &txs,
        &SummaryOptions {
            calibration_end: date(1997, 9, 30)?,
            observation_end: Some(date(1998, 6, 30)?),
            unit: TimeUnit::Weeks,
        },
    )?;
    eprintln!("CDNOW master: {} customers (39-week calibration to 1997-09-30, weeks); timing…", cdnow.len());
    let m_cdnow = measure(&cdnow, args.runs.max(1))?;
    let cdnow_csv = dir.join("cdnow_master_summaries.csv");
    write_csv(&cdnow_csv, &cdnow)?;

    // The simulated store: CDNOW-like parameters (the published CDNOW-sample estimates), customers acquired
    // uniformly over the first 12 weeks, 39-week calibration, weeks.
    let truth = BgNbd::new(0.243, 4.414, 0.793, 2.426)?;
    let spend_truth = GammaGamma::new(6.25, 3.74, 15.44)?;
    let sim_opts = SimulationOptions { customers: args.customers, seed: args.seed, ..SimulationOptions::default() };
    eprintln!("simulating {} customers…", args.customers);
    let started = Instant::now();
    let sim = simulate::simulate_summaries(&truth, &spend_truth, &sim_opts)?;
    eprintln!("simulated in {:.2} s; timing…", started.elapsed().as_secs_f64());
    let m_sim = measure(&sim, args.sim_runs.max(1))?;
    let sim_csv = dir.join("simulated_summaries.csv");
    write_csv(&sim_csv, &sim)?;

    let python = match &args.python {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(".venv-bench/bin/python")).filter(|p| p.exists()),
    };
    let lifetimes = match &python {
        Some(python) => {
            eprintln!(
                "running lifetimes ({}) on the same summaries — minutes on a million customers…",
                python.display()
            );
            Some(run_lifetimes(python, &args, &cdnow_csv, &sim_csv)?)
        }
        None => {
            eprintln!(
                "no Python given and no .venv-bench/bin/python: lifetimes comparison skipped (scripts/bench-analytics)"
            );
            None
        }
    };

    println!();
    println!("Summaries CSVs: {} and {}", cdnow_csv.display(), sim_csv.display());
    if let Some(v) = lifetimes.as_ref().and_then(|l| l.get("versions")) {
        println!("lifetimes side: {v}");
    }
    println!("Simulated store generated with BG/NBD {truth:?} and Gamma-Gamma {spend_truth:?}");
    let mut all_agree = true;
    for (name, key, m, data) in [("CDNOW master", "cdnow", &m_cdnow, &cdnow), ("simulated", "simulated", &m_sim, &sim)]
    {
        let l = lifetimes.as_ref().and_then(|l| l.get(key));
        all_agree &= report(name, m, l, data);
    }
    if lifetimes.is_some() {
        println!(
            "\nAll fitted parameters agree to 3 decimals: {}",
            if all_agree { "yes" } else { "NO (see the log-likelihoods above)" }
        );
    }
    let bar_fit = median(&m_cdnow.bg_fit) <= 0.050;
    let bar_predict = m_sim.customers < 1_000_000 || median(&m_sim.predict_full) <= 1.0;
    println!(
        "Bar: BG/NBD fit on CDNOW master ≤ 50 ms: {} ({:.1} ms); predictions for {} customers ≤ 1 s: {} ({:.3} s)",
        if bar_fit { "met" } else { "NOT met" },
        median(&m_cdnow.bg_fit) * 1e3,
        m_sim.customers,
        if bar_predict { "met" } else { "NOT met" },
        median(&m_sim.predict_full)
    );
    Ok(())
}

fn measure(customers: &[CustomerSummary], runs: usize) -> Result<Measured> {
    let opts = FitOptions::default();
    let mut bg_fit = Vec::new();
    let mut bg = None;
    for _ in 0..runs {
        let started = Instant::now();
        bg = Some(bgnbd::fit(customers, &opts)?);
        bg_fit.push(started.elapsed().as_secs_f64());
    }
    let (bg, report) = bg.context("no run")?;
    let mut gg_fit = Vec::new();
    let mut gg = None;
    for _ in 0..runs {
        let started = Instant::now();
        gg = Some(gamma_gamma::fit(customers, &opts)?);
        gg_fit.push(started.elapsed().as_secs_f64());
    }
    let (gg, gg_report) = gg.context("no run")?;
    let predict_opts = PredictOptions { horizon: HORIZON, ..PredictOptions::default() };
    let mut predict_full = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let p = clv::predict(customers, &bg, None, Some(&gg), &predict_opts);
        predict_full.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(p.len() == customers.len(), "prediction count");
    }
    let mut predict_basic = Vec::new();
    let (mut sum_expected, mut sum_p_alive) = (0.0, 0.0);
    for _ in 0..runs {
        let started = Instant::now();
        let (mut e, mut p) = (0.0, 0.0);
        for c in customers {
            let x = f64::from(c.frequency);
            e += bg.conditional_expected(HORIZON, x, c.recency, c.t);
            p += bg.p_alive(x, c.recency, c.t);
        }
        predict_basic.push(started.elapsed().as_secs_f64());
        (sum_expected, sum_p_alive) = (e, p);
    }
    let mut triples: Vec<(u32, u64, u64)> =
        customers.iter().map(|c| (c.frequency, c.recency.to_bits(), c.t.to_bits())).collect();
    triples.sort_unstable();
    triples.dedup();
    Ok(Measured {
        customers: customers.len(),
        distinct_histories: triples.len(),
        repeat_buyers: gg_report.n_customers,
        bg,
        bg_ll: report.log_likelihood,
        bg_fit,
        gg,
        gg_fit,
        predict_full,
        predict_basic,
        sum_expected,
        sum_p_alive,
    })
}

fn write_csv(path: &Path, customers: &[CustomerSummary]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(["frequency", "recency", "T", "monetary_value"])?;
    for c in customers {
        w.write_record([c.frequency.to_string(), c.recency.to_string(), c.t.to_string(), c.monetary.to_string()])?;
    }
    w.flush()?;
    Ok(())
}

fn run_lifetimes(python: &Path, args: &AnalyticsArgs, cdnow: &Path, sim: &Path) -> Result<Value> {
    let output = std::process::Command::new(python)
        .arg(&args.script)
        .args(["--horizon", &HORIZON.to_string(), "--runs", &args.runs.max(1).to_string()])
        .arg(format!("--runs-for=simulated={}", args.sim_runs.max(1)))
        .arg(format!("cdnow={}", cdnow.display()))
        .arg(format!("simulated={}", sim.display()))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} {} failed: {}",
        python.display(),
        args.script.display(),
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).context("no JSON from the lifetimes script")?;
    Ok(serde_json::from_str(line)?)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Prints one data set's tables; returns whether all parameters agree to 3 decimals (true without lifetimes).
fn report(name: &str, m: &Measured, l: Option<&Value>, data: &[CustomerSummary]) -> bool {
    println!(
        "\n## {name}: {} customers ({} distinct (x, t_x, T) histories), {} repeat buyers",
        m.customers, m.distinct_histories, m.repeat_buyers
    );
    let num = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_f64);
    println!("\n| model | parameter | Kizuna | lifetimes | |difference| | agree to 3 decimals |");
    println!("|---|---|---|---|---|---|");
    let mut agree_all = true;
    let params = [
        ("BG/NBD", "bgnbd", "r", m.bg.r),
        ("BG/NBD", "bgnbd", "alpha", m.bg.alpha),
        ("BG/NBD", "bgnbd", "a", m.bg.a),
        ("BG/NBD", "bgnbd", "b", m.bg.b),
        ("Gamma-Gamma", "gamma_gamma", "p", m.gg.p),
        ("Gamma-Gamma", "gamma_gamma", "q", m.gg.q),
        ("Gamma-Gamma", "gamma_gamma", "v (γ)", m.gg.gamma),
    ];
    let mut lifetimes_bg = [f64::NAN; 4];
    let mut lifetimes_gg = [f64::NAN; 3];
    for (i, (model, key, param, ours)) in params.into_iter().enumerate() {
        let lkey = if param == "v (γ)" { "v" } else { param };
        let theirs = num(l.and_then(|l| l.get(key)), lkey);
        if let Some(t) = theirs {
            if i < 4 {
                lifetimes_bg[i] = t;
            } else {
                lifetimes_gg[i - 4] = t;
            }
        }
        let (theirs_s, diff_s, agree_s) = match theirs {
            Some(t) => {
                let agree = format!("{ours:.3}") == format!("{t:.3}");
                agree_all &= agree;
                let verdict = if agree {
                    "yes"
                } else if (ours - t).abs() < 5e-4 {
                    "no (within 5e-4, across a rounding boundary)"
                } else {
                    "NO"
                };
                (format!("{t:.3}"), format!("{:.1e}", (ours - t).abs()), verdict.to_string())
            }
            None => ("–".into(), "–".into(), "–".into()),
        };
        println!("| {model} | {param} | {ours:.3} | {theirs_s} | {diff_s} | {agree_s} |");
    }
    if l.is_some() {
        // Both parameter sets scored with Kizuna's log-likelihood (natural log, summed, constants included).
        if let Ok(theirs) = BgNbd::new(lifetimes_bg[0], lifetimes_bg[1], lifetimes_bg[2], lifetimes_bg[3]) {
            println!(
                "\nBG/NBD log-likelihood (Kizuna's function): at Kizuna's parameters {:.6}, at lifetimes' {:.6}",
                m.bg_ll,
                theirs.log_likelihood(data)
            );
        }
        if let Ok(theirs) = GammaGamma::new(lifetimes_gg[0], lifetimes_gg[1], lifetimes_gg[2]) {
            println!(
                "Gamma-Gamma log-likelihood (Kizuna's function): at Kizuna's parameters {:.6}, at lifetimes' {:.6}",
                m.gg.log_likelihood(data),
                theirs.log_likelihood(data)
            );
        }
    }
    println!("\n| step | Kizuna (median) | lifetimes (median) | lifetimes / Kizuna |");
    println!("|---|---|---|---|");
    let ms = |s: f64| if s < 1.0 { format!("{:.1} ms", s * 1e3) } else { format!("{s:.2} s") };
    let rows = [
        ("BG/NBD fit", median(&m.bg_fit), num(l, "bgnbd_fit_seconds")),
        ("Gamma-Gamma fit", median(&m.gg_fit), num(l, "gamma_gamma_fit_seconds")),
        ("E[Y(52)] + P(alive), all customers (Kizuna: 1 core)", median(&m.predict_basic), num(l, "predict_seconds")),
        (
            "clv::predict, all customers (+ next purchase, spend, CLV; all cores)",
            median(&m.predict_full),
            num(l, "predict_seconds"),
        ),
    ];
    for (step, ours, theirs) in rows {
        let (t, ratio) = match theirs {
            Some(t) => (ms(t), format!("{:.1}×", t / ours)),
            None => ("–".into(), "–".into()),
        };
        println!("| {step} | {} | {t} | {ratio} |", ms(ours));
    }
    println!(
        "\nKizuna runs (s): BG/NBD fit {:?}; Gamma-Gamma fit {:?}; clv::predict {:?}",
        m.bg_fit.iter().map(|s| (s * 1e4).round() / 1e4).collect::<Vec<_>>(),
        m.gg_fit.iter().map(|s| (s * 1e4).round() / 1e4).collect::<Vec<_>>(),
        m.predict_full.iter().map(|s| (s * 1e4).round() / 1e4).collect::<Vec<_>>()
    );
    let sums = match (num(l, "sum_expected_purchases"), num(l, "sum_p_alive")) {
        (Some(e), Some(p)) => format!(" (lifetimes, its parameters: {e:.3} and {p:.3})"),
        _ => String::new(),
    };
    println!("Sum of E[Y(52)] {:.3}, of P(alive) {:.3}{sums}", m.sum_expected, m.sum_p_alive);
    agree_all
}
