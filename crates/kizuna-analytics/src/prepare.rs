//! Data preparation: transactions → per-customer calibration/holdout summaries, and a
//! loader for the CDNOW text format.
//!
//! See the crate documentation for the exact rules (same-day collapse, refund netting,
//! calibration/holdout split, exclusion of customers first seen after calibration).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The unit in which `recency`, `t` and prediction horizons are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Calendar days.
    Days,
    /// Weeks of seven days (fractional, e.g. 30.43).
    #[default]
    Weeks,
}

impl TimeUnit {
    /// Length of one unit in days.
    pub fn days(self) -> f64 {
        match self {
            TimeUnit::Days => 1.0,
            TimeUnit::Weeks => 7.0,
        }
    }

    /// The span `to - from` expressed in this unit.
    pub fn between(self, from: NaiveDate, to: NaiveDate) -> f64 {
        (to - from).num_days() as f64 / self.days()
    }
}

/// One purchase (positive or zero amount) or refund (negative amount).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// Customer (profile) identifier.
    pub customer_id: String,
    /// Calendar day of the transaction (UTC for timestamps).
    pub date: NaiveDate,
    /// Order value; negative for refunds.
    pub amount: f64,
}

impl Transaction {
    /// A transaction on a calendar day.
    pub fn new(customer_id: impl Into<String>, date: NaiveDate, amount: f64) -> Self {
        Transaction { customer_id: customer_id.into(), date, amount }
    }

    /// A transaction from a UTC timestamp (collapsed to its UTC calendar day).
    pub fn from_datetime(customer_id: impl Into<String>, at: DateTime<Utc>, amount: f64) -> Self {
        Transaction::new(customer_id, at.date_naive(), amount)
    }
}

/// Merges purchases with a separate list of refunds: every refund is turned into a negative
/// amount (whatever sign it was given with) and appended.
pub fn with_refunds(purchases: &[Transaction], refunds: &[Transaction]) -> Vec<Transaction> {
    purchases
        .iter()
        .cloned()
        .chain(refunds.iter().map(|r| Transaction { amount: -r.amount.abs(), ..r.clone() }))
        .collect()
}

/// Options for [`summarise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryOptions {
    /// Last day (inclusive) of the calibration period.
    pub calibration_end: NaiveDate,
    /// Last day (inclusive) of the holdout period; `None` means no holdout (counts are zero).
    pub observation_end: Option<NaiveDate>,
    /// Unit for `recency`, `t` and `holdout_duration`.
    pub unit: TimeUnit,
}

/// One customer's calibration-period summary (the sufficient statistics of the models).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerSummary {
    /// Customer identifier.
    pub customer_id: String,
    /// Repeat purchases in calibration: distinct purchase days − 1 (`x`).
    pub frequency: u32,
    /// Time from first to last calibration purchase, in units (`t_x`).
    pub recency: f64,
    /// Age: time from first purchase to the end of calibration, in units (`T`).
    pub t: f64,
    /// Mean net value of the repeat purchase days (first purchase excluded); 0 when `frequency == 0`.
    pub monetary: f64,
    /// Total net value of all calibration purchase days (first purchase included).
    pub total_value: f64,
    /// First purchase day.
    pub first_purchase: NaiveDate,
    /// Last purchase day within calibration.
    pub last_purchase: NaiveDate,
    /// Distinct purchase days in the holdout period (all are repeat purchases).
    pub holdout_frequency: u32,
    /// Holdout length in units (0 without a holdout).
    pub holdout_duration: f64,
}

impl CustomerSummary {
    /// A summary from the bare sufficient statistics (dates set to a placeholder).
    pub fn from_stats(customer_id: impl Into<String>, frequency: u32, recency: f64, t: f64) -> Self {
        CustomerSummary {
            customer_id: customer_id.into(),
            frequency,
            recency,
            t,
            monetary: 0.0,
            total_value: 0.0,
            first_purchase: NaiveDate::MIN,
            last_purchase: NaiveDate::MIN,
            holdout_frequency: 0,
            holdout_duration: 0.0,
        }
    }
}

/// A purchase day after same-day collapse and refund netting.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PurchaseDay {
    /// The day.
    pub date: NaiveDate,
    /// Net value of that day (sum of its purchases minus refunds attributed to it).
    pub value: f64,
}

/// Collapses transactions into purchase days per customer (sorted by customer id, then day).
///
/// Same-day transactions become one purchase day whose value is their sum. Each refund
/// (negative amount) is attributed to the customer's latest purchase day on or before the
/// refund date; a day whose net value falls to zero or below through refunds is dropped
/// (a fully refunded order is not a purchase). Refunds with no earlier purchase are ignored.
/// With `cutoff`, a refund dated after `cutoff` is never attributed to a day on or before
/// `cutoff` (no information leaks from the holdout into calibration).
pub fn purchase_days(
    transactions: &[Transaction],
    cutoff: Option<NaiveDate>,
) -> Result<BTreeMap<String, Vec<PurchaseDay>>> {
    let mut by_customer: BTreeMap<&str, Vec<&Transaction>> = BTreeMap::new();
    for tx in transactions {
        if !tx.amount.is_finite() {
            return Err(Error::InvalidInput(format!("non-finite amount for customer {}", tx.customer_id)));
        }
        by_customer.entry(tx.customer_id.as_str()).or_default().push(tx);
    }
    let mut out = BTreeMap::new();
    for (id, txs) in by_customer {
        // day -> (net value, refunded?)
        let mut days: BTreeMap<NaiveDate, (f64, bool)> = BTreeMap::new();
        for tx in txs.iter().filter(|t| t.amount >= 0.0) {
            days.entry(tx.date).or_insert((0.0, false)).0 += tx.amount;
        }
        for tx in txs.iter().filter(|t| t.amount < 0.0) {
            let target = days.range(..=tx.date).next_back().map(|(d, _)| *d);
            let Some(day) = target else { continue };
            if let Some(c) = cutoff
                && tx.date > c
                && day <= c
            {
                continue;
            }
            if let Some(entry) = days.get_mut(&day) {
                entry.0 += tx.amount;
                entry.1 = true;
            }
        }
        let list: Vec<PurchaseDay> = days
            .into_iter()
            .filter(|(_, (v, refunded))| !(*refunded && *v <= 0.0))
            .map(|(date, (value, _))| PurchaseDay { date, value })
            .collect();
        if !list.is_empty() {
            out.insert(id.to_string(), list);
        }
    }
    Ok(out)
}

/// Builds the per-customer calibration summaries (sorted by customer id).
///
/// Customers whose first purchase is after `calibration_end` are excluded: they have no
/// calibration history and a negative age, and the models are fitted on and predict for
/// customers acquired before the end of calibration only.
pub fn summarise(transactions: &[Transaction], opts: &SummaryOptions) -> Result<Vec<CustomerSummary>> {
    if let Some(end) = opts.observation_end
        && end < opts.calibration_end
    {
        return Err(Error::InvalidInput("observation_end is before calibration_end".into()));
    }
    let cal_end = opts.calibration_end;
    let holdout_duration = opts.observation_end.map_or(0.0, |e| opts.unit.between(cal_end, e));
    let days = purchase_days(transactions, Some(cal_end))?;
    let mut out = Vec::with_capacity(days.len());
    for (id, list) in days {
        let first = list[0].date;
        if first > cal_end {
            continue;
        }
        let calib: Vec<&PurchaseDay> = list.iter().filter(|d| d.date <= cal_end).collect();
        let last = calib.last().map_or(first, |d| d.date);
        let frequency = (calib.len() - 1) as u32;
        let monetary =
            if frequency > 0 { calib[1..].iter().map(|d| d.value).sum::<f64>() / f64::from(frequency) } else { 0.0 };
        let holdout_frequency = match opts.observation_end {
            Some(end) => list.iter().filter(|d| d.date > cal_end && d.date <= end).count() as u32,
            None => 0,
        };
        out.push(CustomerSummary {
            customer_id: id,
            frequency,
            recency: opts.unit.between(first, last),
            t: opts.unit.between(first, cal_end),
            monetary,
            total_value: calib.iter().map(|d| d.value).sum(),
            first_purchase: first,
            last_purchase: last,
            holdout_frequency,
            holdout_duration,
        });
    }
    Ok(out)
}

/// One line of a CDNOW file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdnowRecord {
    /// Master customer id (first column, e.g. `"00004"`).
    pub customer_id: String,
    /// Index within the 1/10 sample (second column of `CDNOW_sample.txt`), if present.
    pub customer_index: Option<u32>,
    /// Purchase day.
    pub date: NaiveDate,
    /// Number of CDs.
    pub quantity: u32,
    /// Dollar value.
    pub amount: f64,
}

impl CdnowRecord {
    /// The record as a [`Transaction`] keyed by the master customer id.
    pub fn to_transaction(&self) -> Transaction {
        Transaction::new(self.customer_id.clone(), self.date, self.amount)
    }
}

/// Reads the whitespace-separated CDNOW format: `customer_id [customer_index] YYYYMMDD
/// number_of_cds dollar_value` (5 columns in `CDNOW_sample.txt`, 4 in `CDNOW_master.txt`).
/// Blank lines and a leading header line are skipped.
pub fn read_cdnow(reader: impl Read) -> Result<Vec<CdnowRecord>> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line?;
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        let parse_err = |message: String| Error::Parse { line: i + 1, message };
        if out.is_empty() && cols[0].parse::<u64>().is_err() {
            continue; // header
        }
        let (index, rest) = match cols.len() {
            5 => (Some(cols[1].parse::<u32>().map_err(|e| parse_err(format!("customer index: {e}")))?), &cols[2..]),
            4 => (None, &cols[1..]),
            n => return Err(parse_err(format!("expected 4 or 5 columns, found {n}"))),
        };
        let date =
            NaiveDate::parse_from_str(rest[0], "%Y%m%d").map_err(|e| parse_err(format!("date {:?}: {e}", rest[0])))?;
        let quantity = rest[1].parse::<u32>().map_err(|e| parse_err(format!("number_of_cds: {e}")))?;
        let amount = rest[2].parse::<f64>().map_err(|e| parse_err(format!("dollar_value: {e}")))?;
        out.push(CdnowRecord { customer_id: cols[0].to_string(), customer_index: index, date, quantity, amount });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("valid test date")
    }

    #[test]
    fn collapses_same_day_nets_refunds_and_splits() {
        let txs = vec![
            Transaction::new("a", d("2024-01-01"), 10.0),
            Transaction::new("a", d("2024-01-01"), 5.0),
            Transaction::new("a", d("2024-01-08"), 20.0),
            Transaction::new("a", d("2024-01-10"), -20.0), // fully refunds 01-08
            Transaction::new("a", d("2024-01-15"), 30.0),
            Transaction::new("a", d("2024-01-16"), -10.0), // partial refund of 01-15
            Transaction::new("a", d("2024-01-29"), 7.0),   // holdout
            Transaction::new("a", d("2024-02-20"), -7.0),  // after cutoff: may not touch calibration
            Transaction::new("b", d("2024-01-20"), 3.0),
            Transaction::new("c", d("2024-01-25"), 3.0), // first purchase after calibration: excluded
        ];
        let opts = SummaryOptions {
            calibration_end: d("2024-01-22"),
            observation_end: Some(d("2024-02-05")),
            unit: TimeUnit::Weeks,
        };
        let s = summarise(&txs, &opts).expect("valid input");
        assert_eq!(s.len(), 2);
        let a = &s[0];
        assert_eq!(a.customer_id, "a");
        assert_eq!(a.frequency, 1);
        assert!((a.recency - 2.0).abs() < 1e-12);
        assert!((a.t - 3.0).abs() < 1e-12);
        assert!((a.monetary - 20.0).abs() < 1e-12);
        assert_eq!(a.holdout_frequency, 0, "holdout day fully refunded");
        assert!((a.holdout_duration - 2.0).abs() < 1e-12);
        let b = &s[1];
        assert_eq!((b.frequency, b.monetary), (0, 0.0));
        assert!((b.t - 2.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn separate_refund_list_is_netted() {
        let p = vec![Transaction::new("a", d("2024-01-01"), 10.0), Transaction::new("a", d("2024-01-02"), 10.0)];
        let r = vec![Transaction::new("a", d("2024-01-03"), 10.0)];
        let days = purchase_days(&with_refunds(&p, &r), None).expect("valid");
        assert_eq!(days["a"].len(), 1);
    }

    #[test]
    fn reads_both_cdnow_layouts() {
        let text = "customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n\n";
        let r = read_cdnow(text.as_bytes()).expect("parses");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].customer_index, None);
        let r = read_cdnow(" 00004 0001 19970101  2   29.33\n".as_bytes()).expect("parses");
        assert_eq!(r[0].customer_index, Some(1));
        assert!((r[0].amount - 29.33).abs() < 1e-12);
        assert!(read_cdnow(" 00004 0001 1997010x  2   29.33\n".as_bytes()).is_err());
    }
}
