//! `kizuna analytics fit|predict|report`: the customer-base models on a CSV of transactions, no server needed,
//! so their numbers can be checked against the literature (e.g. the CDNOW data set).

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, Subcommand, ValueEnum};
use kizuna_analytics::clv::{ClvOptions, PredictOptions, predict};
use kizuna_analytics::fit::{CalibrationWindow, FitOptions};
use kizuna_analytics::prepare::{CustomerSummary, SummaryOptions, TimeUnit, Transaction, summarise};
use kizuna_analytics::{TransactionModel, bgnbd, gamma_gamma, pareto_nbd, rfm};
use std::io::Write;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AnalyticsCommand {
    /// Fit BG/NBD, Pareto/NBD and Gamma-Gamma; print the fit reports (parameters, log-likelihood) as JSON
    Fit(Input),
    /// Per-customer predictions as CSV: P(alive), churn risk, expected purchases, next purchase, spend, CLV, RFM
    Predict {
        #[command(flatten)]
        input: Input,
        /// Horizon for expected purchases, in --unit
        #[arg(long, default_value_t = 52.0)]
        horizon: f64,
    },
    /// Holdout diagnostics: predicted vs actual repeat purchases after the calibration period
    Report(Input),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// A header row, then customer_id,date,amount (date YYYY-MM-DD or RFC 3339; negative amounts are refunds)
    Csv,
    /// The CDNOW text files of the literature (customer id, [index,] YYYYMMDD, CDs, dollars)
    Cdnow,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Unit {
    Days,
    Weeks,
}

#[derive(Debug, Clone, Args)]
pub struct Input {
    /// Transactions file
    file: PathBuf,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Last day of the calibration period (YYYY-MM-DD); default: the last transaction day
    #[arg(long)]
    calibration_end: Option<NaiveDate>,
    /// Last day of the holdout period (YYYY-MM-DD); default: the last transaction day
    #[arg(long)]
    holdout_end: Option<NaiveDate>,
    #[arg(long, value_enum, default_value = "weeks")]
    unit: Unit,
}

fn read_transactions(input: &Input) -> Result<Vec<Transaction>> {
    let file = std::fs::File::open(&input.file).with_context(|| format!("cannot open {}", input.file.display()))?;
    match input.format {
        Format::Cdnow => Ok(kizuna_analytics::prepare::read_cdnow(std::io::BufReader::new(file))?
            .iter()
            .map(|r| r.to_transaction())
            .collect()),
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
            let mut out = Vec::new();
            for (index, row) in reader.records().enumerate() {
                let line = index + 2;
                let row = row.with_context(|| format!("line {line}: unreadable CSV"))?;
                let (Some(id), Some(date), Some(amount)) = (row.get(0), row.get(1), row.get(2)) else {
                    anyhow::bail!("line {line}: expected customer_id,date,amount");
                };
                let amount: f64 =
                    amount.parse().with_context(|| format!("line {line}: amount '{amount}' is not a number"))?;
                let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
                    .or_else(|_| chrono::DateTime::parse_from_rfc3339(date).map(|t| t.date_naive()))
                    .with_context(|| format!("line {line}: date '{date}' is not YYYY-MM-DD or RFC 3339"))?;
                out.push(Transaction::new(id, date, amount));
            }
            Ok(out)
        }
    }
}

struct Prepared {
    customers: Vec<CustomerSummary>,
    unit: TimeUnit,
    window: CalibrationWindow,
}

fn prepare(input: &Input) -> Result<Prepared> {
    let transactions = read_transactions(input)?;
    let purchases: Vec<Transaction> = transactions.iter().filter(|t| t.amount >= 0.0).cloned().collect();
    let refunds: Vec<Transaction> = transactions
        .iter()
        .filter(|t| t.amount < 0.0)
        .map(|t| Transaction { amount: -t.amount, ..t.clone() })
        .collect();
    let transactions = kizuna_analytics::prepare::with_refunds(&purchases, &refunds);
    let last = transactions.iter().map(|t| t.date).max().ok_or_else(|| anyhow::anyhow!("no transactions"))?;
    let first = transactions.iter().map(|t| t.date).min();
    let unit = match input.unit {
        Unit::Days => TimeUnit::Days,
        Unit::Weeks => TimeUnit::Weeks,
    };
    let calibration_end = input.calibration_end.unwrap_or(last);
    let options = SummaryOptions { calibration_end, observation_end: Some(input.holdout_end.unwrap_or(last)), unit };
    let customers = summarise(&transactions, &options)?;
    anyhow::ensure!(!customers.is_empty(), "no customer made a first purchase by {calibration_end}");
    Ok(Prepared { customers, unit, window: CalibrationWindow { start: first, end: calibration_end, unit } })
}

pub fn run(command: AnalyticsCommand) -> Result<()> {
    match command {
        AnalyticsCommand::Fit(input) => {
            let p = prepare(&input)?;
            let options = FitOptions { window: Some(p.window), ..FitOptions::default() };
            let (_, bg) = bgnbd::fit(&p.customers, &options)?;
            let (_, pareto) = pareto_nbd::fit(&p.customers, &options)?;
            let repeat: Vec<CustomerSummary> = p.customers.iter().filter(|c| c.frequency > 0).cloned().collect();
            let spend = gamma_gamma::fit(&repeat, &options).map(|(_, r)| r).ok();
            let report = serde_json::json!({"customers": p.customers.len(), "repeat_buyers": repeat.len(),
                "bgnbd": bg, "pareto_nbd": pareto, "gamma_gamma": spend});
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        AnalyticsCommand::Predict { input, horizon } => {
            let p = prepare(&input)?;
            let options = FitOptions { window: Some(p.window), ..FitOptions::default() };
            let (bg, _) = bgnbd::fit(&p.customers, &options)?;
            let (pareto, _) = pareto_nbd::fit(&p.customers, &options)?;
            let repeat: Vec<CustomerSummary> = p.customers.iter().filter(|c| c.frequency > 0).cloned().collect();
            let spend = gamma_gamma::fit(&repeat, &options).map(|(m, _)| m).ok();
            // A month in the chosen unit for CLV's monthly discounting.
            let month = 30.44 / p.unit.days();
            let opts = PredictOptions {
                horizon,
                next_purchase_max: 10.0 * 365.0 / p.unit.days(),
                clv: ClvOptions { period_length: month, ..ClvOptions::default() },
            };
            let predictions = predict(&p.customers, &bg, Some(&pareto), spend.as_ref(), &opts);
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
        AnalyticsCommand::Report(input) => {
            let p = prepare(&input)?;
            let options = FitOptions { window: Some(p.window), ..FitOptions::default() };
            let (bg, _) = bgnbd::fit(&p.customers, &options)?;
            let (pareto, _) = pareto_nbd::fit(&p.customers, &options)?;
            let models: [&dyn TransactionModel; 2] = [&bg, &pareto];
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "Holdout diagnostics: repeat purchases after {}", p.window.end)?;
            writeln!(stdout, "| calibration repeat purchases | customers | actual | BG/NBD | Pareto/NBD |")?;
            writeln!(stdout, "|---|---|---|---|---|")?;
            let mut totals = [0.0f64; 3];
            for bucket in 0..=7u32 {
                let members: Vec<&CustomerSummary> =
                    p.customers.iter().filter(|c| c.frequency.min(7) == bucket).collect();
                if members.is_empty() {
                    continue;
                }
                let actual: f64 = members.iter().map(|c| f64::from(c.holdout_frequency)).sum();
                let predicted: Vec<f64> = models
                    .iter()
                    .map(|m| {
                        members
                            .iter()
                            .map(|c| m.conditional_expected(c.holdout_duration, f64::from(c.frequency), c.recency, c.t))
                            .sum()
                    })
                    .collect();
                totals[0] += actual;
                totals[1] += predicted[0];
                totals[2] += predicted[1];
                let label = if bucket == 7 { "7+".to_owned() } else { bucket.to_string() };
                writeln!(
                    stdout,
                    "| {label} | {} | {actual:.0} | {:.1} | {:.1} |",
                    members.len(),
                    predicted[0],
                    predicted[1]
                )?;
            }
            writeln!(
                stdout,
                "| all | {} | {:.0} | {:.1} | {:.1} |",
                p.customers.len(),
                totals[0],
                totals[1],
                totals[2]
            )?;
        }
    }
    Ok(())
}
