//! RFM scoring: quintile scores 1–5 per dimension and the usual named segments.
//!
//! ## Scores
//! For each dimension the four quintile edges are the nearest-rank 20th, 40th, 60th and 80th
//! percentiles of the observed values: `edge_k = sorted[ceil(k·n/5) − 1]`. A value's bucket is
//! the number of edges strictly below it (0–4), so equal values always get equal scores and a
//! value equal to an edge falls in the lower bucket. Frequency and monetary score
//! `1 + bucket` (higher is better); recency — time since the last purchase — scores
//! `5 − bucket` (more recent = 5). With heavy ties (e.g. most customers bought once) some
//! scores stay empty; that is deliberate: tied customers are never split arbitrarily.
//!
//! ## Segments (from R and F; M is reported but does not change the segment)
//! | R \ F | 1 | 2 | 3 | 4 | 5 |
//! |---|---|---|---|---|---|
//! | 5 | new customers | potential loyalists | potential loyalists | champions | champions |
//! | 4 | promising | potential loyalists | potential loyalists | loyal customers | loyal customers |
//! | 3 | about to sleep | about to sleep | need attention | loyal customers | loyal customers |
//! | 2 | hibernating | hibernating | at risk | at risk | can't lose them |
//! | 1 | lost | lost | at risk | at risk | can't lose them |
//!
//! This is the widely used RF segment map, with its "hibernating" corner split into
//! hibernating (R = 2) and lost (R = 1).

use serde::{Deserialize, Serialize};

use crate::prepare::CustomerSummary;
use crate::{Error, Result};

/// Raw RFM values of one customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RfmInput {
    /// Customer identifier.
    pub customer_id: String,
    /// Time since the last purchase (smaller is better).
    pub recency: f64,
    /// Number of orders.
    pub frequency: f64,
    /// Spend (total or mean; the caller chooses).
    pub monetary: f64,
}

impl RfmInput {
    /// From a calibration summary: recency = `t − recency` (time since last purchase at the end
    /// of calibration), frequency = orders (`frequency + 1`), monetary = total calibration value.
    pub fn from_summary(c: &CustomerSummary) -> Self {
        RfmInput {
            customer_id: c.customer_id.clone(),
            recency: c.t - c.recency,
            frequency: f64::from(c.frequency) + 1.0,
            monetary: c.total_value,
        }
    }
}

/// Named RFM segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// R 5, F 4–5.
    Champions,
    /// R 3–4, F 4–5.
    LoyalCustomers,
    /// R 4–5, F 2–3.
    PotentialLoyalists,
    /// R 5, F 1.
    NewCustomers,
    /// R 4, F 1.
    Promising,
    /// R 3, F 3.
    NeedAttention,
    /// R 3, F 1–2.
    AboutToSleep,
    /// R 1–2, F 3–4.
    AtRisk,
    /// R 1–2, F 5.
    CantLoseThem,
    /// R 2, F 1–2.
    Hibernating,
    /// R 1, F 1–2.
    Lost,
}

impl Segment {
    /// Segment for an R and F score (1–5; out-of-range values are clamped).
    pub fn from_scores(r: u8, f: u8) -> Segment {
        match (r.clamp(1, 5), f.clamp(1, 5)) {
            (5, 4..=5) => Segment::Champions,
            (3..=4, 4..=5) => Segment::LoyalCustomers,
            (4..=5, 2..=3) => Segment::PotentialLoyalists,
            (5, _) => Segment::NewCustomers,
            (4, _) => Segment::Promising,
            (3, 3) => Segment::NeedAttention,
            (3, _) => Segment::AboutToSleep,
            (1..=2, 5) => Segment::CantLoseThem,
            (1..=2, 3..=4) => Segment::AtRisk,
            (2, 1..=2) => Segment::Hibernating,
            _ => Segment::Lost,
        }
    }

    /// Human-readable name, e.g. `"can't lose them"`.
    pub fn label(self) -> &'static str {
        match self {
            Segment::Champions => "champions",
            Segment::LoyalCustomers => "loyal customers",
            Segment::PotentialLoyalists => "potential loyalists",
            Segment::NewCustomers => "new customers",
            Segment::Promising => "promising",
            Segment::NeedAttention => "need attention",
            Segment::AboutToSleep => "about to sleep",
            Segment::AtRisk => "at risk",
            Segment::CantLoseThem => "can't lose them",
            Segment::Hibernating => "hibernating",
            Segment::Lost => "lost",
        }
    }
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Quintile edges of each dimension.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RfmEdges {
    /// Recency edges (ascending).
    pub recency: [f64; 4],
    /// Frequency edges (ascending).
    pub frequency: [f64; 4],
    /// Monetary edges (ascending).
    pub monetary: [f64; 4],
}

/// One customer's scores and segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RfmScore {
    /// Customer identifier.
    pub customer_id: String,
    /// Recency score (5 = most recent).
    pub r: u8,
    /// Frequency score (5 = most orders).
    pub f: u8,
    /// Monetary score (5 = highest spend).
    pub m: u8,
    /// Named segment from R and F.
    pub segment: Segment,
}

/// Nearest-rank quintile edges of `values` (must be non-empty and finite).
pub fn quintile_edges(values: &[f64]) -> Result<[f64; 4]> {
    if values.is_empty() {
        return Err(Error::NoData);
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput("RFM values must be finite".into()));
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Ok(std::array::from_fn(|i| sorted[((i + 1) * n).div_ceil(5) - 1]))
}

fn bucket(v: f64, edges: &[f64; 4]) -> u8 {
    edges.iter().filter(|&&e| v > e).count() as u8
}

/// Scores every customer against quintile edges computed on `inputs` itself.
pub fn score(inputs: &[RfmInput]) -> Result<(Vec<RfmScore>, RfmEdges)> {
    let edges = RfmEdges {
        recency: quintile_edges(&inputs.iter().map(|i| i.recency).collect::<Vec<_>>())?,
        frequency: quintile_edges(&inputs.iter().map(|i| i.frequency).collect::<Vec<_>>())?,
        monetary: quintile_edges(&inputs.iter().map(|i| i.monetary).collect::<Vec<_>>())?,
    };
    Ok((score_with_edges(inputs, &edges), edges))
}

/// Scores customers against given edges (e.g. edges of a reference population).
pub fn score_with_edges(inputs: &[RfmInput], edges: &RfmEdges) -> Vec<RfmScore> {
    inputs
        .iter()
        .map(|i| {
            let r = 5 - bucket(i.recency, &edges.recency);
            let f = 1 + bucket(i.frequency, &edges.frequency);
            let m = 1 + bucket(i.monetary, &edges.monetary);
            RfmScore { customer_id: i.customer_id.clone(), r, f, m, segment: Segment::from_scores(r, f) }
        })
        .collect()
}
