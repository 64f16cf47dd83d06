//! `kizuna analytics fit|predict|report`: the customer-base models on a CSV of transactions, no server needed,
//! so their numbers can be checked against the literature (e.g. the CDNOW data set).

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, Subcommand, ValueEnum};
use kizuna_analytics::clv::{ClvOptions, PredictOptions, predict};
use kizuna_analytics::diagnostics::holdout_report;
use kizuna_analytics::fit::{CalibrationWindow, FitOptions, FitReport};
use kizuna_analytics::prepare::{CustomerSummary, SummaryOptions, TimeUnit, Transaction, summarise};
use kizuna_analytics::{TransactionModel, bgnbd, gamma_gamma, pareto_nbd, rfm};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AnalyticsCommand {
    /// Fit BG/NBD, Pareto/NBD and Gamma-Gamma and print their parameters and log-likelihoods
    Fit {
        #[command(flatten)]
        input: Input,
        /// One JSON object: {"customers", "bgnbd", "paretonbd", "gammagamma"}
        #[arg(long)]
        json: bool,
    },
    /// Per-customer predictions as CSV: P(alive), churn risk, expected purchases, next purchase, spend, CLV, RFM
    Predict {
        #[command(flatten)]
        input: Input,
        /// Horizon for expected purchases, in --unit
        #[arg(long, default_value_t = 52.0)]
        horizon: f64,
    },
    /// Holdout diagnostics: predicted vs actual repeat purchases after the calibration period, per calibration
    /// frequency group (0, 1, … 7+), as a table and optionally an SVG chart
    Report {
        #[command(flatten)]
        input: Input,
        /// Also write the chart as SVG to this file
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Print the report as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// A header row naming the columns customer_id, date, amount (date YYYY-MM-DD or RFC 3339)
    Csv,
    /// The CDNOW text files of the literature (customer id, [index,] YYYYMMDD, CDs, dollars)
    Cdnow,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Unit {
    #[value(alias = "days")]
    Day,
    #[value(alias = "weeks")]
    Week,
}

#[derive(Debug, Clone, Args)]
pub struct Input {
    /// Transactions file
    #[arg(long, value_name = "FILE")]
    transactions: PathBuf,
    /// Refunds in the same format (positive amounts), netted against each customer's purchases
    #[arg(long, value_name = "FILE")]
    refunds: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Last day of the calibration period (YYYY-MM-DD); default: the last transaction day
    #[arg(long)]
    calibration_end: Option<NaiveDate>,
    /// Last day of the holdout period (YYYY-MM-DD); default: the last transaction day
    #[arg(long)]
    holdout_end: Option<NaiveDate>,
    #[arg(long, value_enum, default_value = "week")]
    unit: Unit,
}

fn read_transactions(path: &Path, format: Format) -> Result<Vec<Transaction>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    match format {
        Format::Cdnow => Ok(kizuna_analytics::prepare::read_cdnow(std::io::BufReader::new(file))
            .with_context(|| format!("{} is not a CDNOW file", path.display()))?
            .iter()
            .map(|r| r.to_transaction())
            .collect()),
        Format::Csv => read_csv(file).with_context(|| format!("{} is not a valid transactions CSV", path.display())),
    }
}

/// Reads `customer_id,date,amount` (columns found by name in the header, any order, extra columns ignored).
/// Every malformed row is an error naming its line: a bad date, a non-numeric, negative or non-finite amount,
/// an empty customer id or a missing column.
fn read_csv(file: std::fs::File) -> Result<Vec<Transaction>> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(file);
    let header = reader.headers().context("line 1: unreadable header")?.clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .with_context(|| format!("line 1: missing column '{name}' (need customer_id,date,amount)"))
    };
    let (id_at, date_at, amount_at) = (column("customer_id")?, column("date")?, column("amount")?);
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| {
            let line = e.position().map(|p| p.line().to_string()).unwrap_or_else(|| "?".into());
            anyhow::anyhow!("line {line}: unreadable CSV: {e}")
        })?;
        let line = row.position().map(|p| p.line()).unwrap_or_default();
        let field = |at: usize, name: &str| {
            row.get(at).with_context(|| format!("line {line}: missing column '{name}' ({} fields)", row.len()))
        };
        let (id, date, amount) = (field(id_at, "customer_id")?, field(date_at, "date")?, field(amount_at, "amount")?);
        anyhow::ensure!(!id.is_empty(), "line {line}: customer_id is empty");
        let amount: f64 = amount
            .parse()
            .ok()
            .filter(|a: &f64| a.is_finite())
            .with_context(|| format!("line {line}: amount '{amount}' is not a number"))?;
        anyhow::ensure!(amount >= 0.0, "line {line}: amount {amount} is negative (put refunds in --refunds FILE)");
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(date).map(|t| t.date_naive()))
            .map_err(|_| anyhow::anyhow!("line {line}: date '{date}' is not YYYY-MM-DD or RFC 3339"))?;
        out.push(Transaction::new(id, date, amount));
    }
    Ok(out)
}

struct Prepared {
    customers: Vec<CustomerSummary>,
    unit: TimeUnit,
    window: CalibrationWindow,
}

fn prepare(input: &Input) -> Result<Prepared> {
    let transactions = read_transactions(&input.transactions, input.format)?;
    // CDNOW files carry refunds as negative amounts; CSV refunds come from --refunds.
    let (purchases, mut refunds): (Vec<Transaction>, Vec<Transaction>) =
        transactions.into_iter().partition(|t| t.amount >= 0.0);
    if let Some(path) = &input.refunds {
        refunds.extend(read_transactions(path, input.format)?);
    }
    let transactions = kizuna_analytics::prepare::with_refunds(&purchases, &refunds);
    let last = transactions.iter().map(|t| t.date).max().ok_or_else(|| anyhow::anyhow!("no transactions"))?;
    let first = transactions.iter().map(|t| t.date).min();
    let unit = match input.unit {
        Unit::Day => TimeUnit::Days,
        Unit::Week => TimeUnit::Weeks,
    };
    let calibration_end = input.calibration_end.unwrap_or(last);
    // Without --holdout-end the holdout runs to the last transaction; there is none when calibration ends later.
    let observation_end = input.holdout_end.or((last > calibration_end).then_some(last));
    let options = SummaryOptions { calibration_end, observation_end, unit };
    let customers = summarise(&transactions, &options)?;
    anyhow::ensure!(!customers.is_empty(), "no customer made a first purchase by {calibration_end}");
    Ok(Prepared { customers, unit, window: CalibrationWindow { start: first, end: calibration_end, unit } })
}

/// The models fitted on one data set. A fit that did not converge is an error naming the model, never a set of
/// parameters someone might act on.
struct Fitted {
    bg: (bgnbd::BgNbd, FitReport),
    pareto: (pareto_nbd::ParetoNbd, FitReport),
    /// `None` when no customer made a repeat purchase (nothing to fit the spend model on).
    spend: Option<(gamma_gamma::GammaGamma, FitReport)>,
    repeat_buyers: usize,
}

fn fit_all(p: &Prepared) -> Result<Fitted> {
    let options = FitOptions { window: Some(p.window), ..FitOptions::default() };
    let bg = converged(bgnbd::fit(&p.customers, &options)?)?;
    let pareto = converged(pareto_nbd::fit(&p.customers, &options)?)?;
    let repeat: Vec<CustomerSummary> = p.customers.iter().filter(|c| c.frequency > 0).cloned().collect();
    let spend = if repeat.is_empty() { None } else { Some(converged(gamma_gamma::fit(&repeat, &options)?)?) };
    Ok(Fitted { bg, pareto, spend, repeat_buyers: repeat.len() })
}

fn converged<M>((model, report): (M, FitReport)) -> Result<(M, FitReport)> {
    anyhow::ensure!(
        report.converged && report.log_likelihood.is_finite(),
        "the {} fit did not converge ({} iterations, best log-likelihood {}); no parameters to report — check the \
         data (enough repeat buyers? a calibration end after the first purchases?)",
        report.model,
        report.iterations,
        report.log_likelihood
    );
    Ok((model, report))
}

/// `{"r": …, "alpha": …, "loglik": …, …}`: the parameters by name, then the fit's log-likelihood and bookkeeping.
fn model_json(report: &FitReport) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (name, value) in &report.parameters {
        object.insert(name.clone(), serde_json::json!(value));
    }
    object.insert("loglik".into(), serde_json::json!(report.log_likelihood));
    object.insert("customers".into(), serde_json::json!(report.n_customers));
    object.insert("iterations".into(), serde_json::json!(report.iterations));
    object.insert("duration_ms".into(), serde_json::json!(report.duration_seconds * 1e3));
    serde_json::Value::Object(object)
}

pub fn run(command: AnalyticsCommand) -> Result<()> {
    match command {
        AnalyticsCommand::Fit { input, json } => {
            let p = prepare(&input)?;
            let fitted = fit_all(&p)?;
            if json {
                let report = serde_json::json!({
                    "customers": p.customers.len(),
                    "repeat_buyers": fitted.repeat_buyers,
                    "calibration": p.window,
                    "bgnbd": model_json(&fitted.bg.1),
                    "paretonbd": model_json(&fitted.pareto.1),
                    "gammagamma": fitted.spend.as_ref().map(|(_, r)| model_json(r)),
                });
                println!("{report}");
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "{} customers ({} repeat buyers), calibration {} to {}",
                    p.customers.len(),
                    fitted.repeat_buyers,
                    p.window.start.map(|d| d.to_string()).unwrap_or_default(),
                    p.window.end
                )?;
                let reports = [Some(&fitted.bg.1), Some(&fitted.pareto.1), fitted.spend.as_ref().map(|(_, r)| r)];
                for report in reports.into_iter().flatten() {
                    let params: Vec<String> = report.parameters.iter().map(|(n, v)| format!("{n} = {v:.4}")).collect();
                    writeln!(
                        out,
                        "{:<12} {}   log-likelihood {:.2}",
                        report.model,
                        params.join(", "),
                        report.log_likelihood
                    )?;
                }
                if fitted.spend.is_none() {
                    writeln!(out, "gamma-gamma  not fitted: no customer made a repeat purchase")?;
                }
            }
        }
        AnalyticsCommand::Predict { input, horizon } => {
            let p = prepare(&input)?;
            let fitted = fit_all(&p)?;
            // A month in the chosen unit for CLV's monthly discounting.
            let month = 30.44 / p.unit.days();
            let opts = PredictOptions {
                horizon,
                next_purchase_max: 10.0 * 365.0 / p.unit.days(),
                clv: ClvOptions { period_length: month, ..ClvOptions::default() },
            };
            let spend = fitted.spend.as_ref().map(|(m, _)| m);
            let predictions = predict(&p.customers, &fitted.bg.0, Some(&fitted.pareto.0), spend, &opts);
            let inputs: Vec<rfm::RfmInput> = p.customers.iter().map(rfm::RfmInput::from_summary).collect();
            let (scores, _) = rfm::score(&inputs)?;
            let mut out = csv::Writer::from_writer(std::io::stdout().lock());
            out.write_record([
                "customer_id",
                "frequency",
                "recency",
                "t",
                "p_alive",
                "churn_risk",
                "one_time_buyer",
                "expected_purchases",
                "next_purchase_in",
                "expected_spend",
                "clv",
                "rfm",
                "rfm_segment",
            ])?;
            for ((c, pr), score) in p.customers.iter().zip(&predictions).zip(&scores) {
                let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
                out.write_record([
                    c.customer_id.clone(),
                    c.frequency.to_string(),
                    format!("{:.4}", c.recency),
                    format!("{:.4}", c.t),
                    format!("{:.6}", pr.p_alive),
                    format!("{:.6}", pr.churn_risk),
                    pr.one_time_buyer.to_string(),
                    format!("{:.4}", pr.expected_purchases),
                    opt(pr.next_purchase_in),
                    opt(pr.expected_spend),
                    opt(pr.clv),
                    format!("{}{}{}", score.r, score.f, score.m),
                    score.segment.label().to_owned(),
                ])?;
            }
            out.flush()?;
        }
        AnalyticsCommand::Report { input, svg, json } => {
            let p = prepare(&input)?;
            anyhow::ensure!(
                p.customers.iter().any(|c| c.holdout_duration > 0.0),
                "no holdout period: pass a --calibration-end before the last transaction day"
            );
            let fitted = fit_all(&p)?;
            let models: [&dyn TransactionModel; 2] = [&fitted.bg.0, &fitted.pareto.0];
            let report = holdout_report(&p.customers, &models);
            if let Some(path) = &svg {
                let title = format!("Holdout purchases after {}: actual vs predicted", p.window.end);
                std::fs::write(path, report.to_svg(&title))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            let mut stdout = std::io::stdout().lock();
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                writeln!(stdout, "Holdout diagnostics: repeat purchases after {}", p.window.end)?;
                write!(stdout, "{}", report.to_markdown())?;
            }
        }
    }
    Ok(())
}
