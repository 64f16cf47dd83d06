//! Lift of a flow (or of each split arm) against its hold-out: the difference in conversion rate within the
//! goal window, with a 95% confidence interval (normal approximation of the difference of two proportions).

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub entered: u64,
    pub converted: u64,
    pub revenue: f64,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        if self.entered == 0 { 0.0 } else { self.converted as f64 / self.entered as f64 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lift {
    pub rate: f64,
    pub holdout_rate: f64,
    /// Conversion rate minus the hold-out's, in percentage points.
    pub lift_points: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// `lift_points` relative to the hold-out's rate (none when the hold-out never converted).
    pub relative: Option<f64>,
    /// The interval excludes zero.
    pub significant: bool,
}

/// The lift of `treated` over `holdout`; none without people on both sides.
pub fn lift(treated: Outcome, holdout: Outcome) -> Option<Lift> {
    if treated.entered == 0 || holdout.entered == 0 {
        return None;
    }
    let (p1, p0) = (treated.rate(), holdout.rate());
    let se = (p1 * (1.0 - p1) / treated.entered as f64 + p0 * (1.0 - p0) / holdout.entered as f64).sqrt();
    let diff = p1 - p0;
    let (low, high) = (diff - 1.96 * se, diff + 1.96 * se);
    Some(Lift {
        rate: p1,
        holdout_rate: p0,
        lift_points: diff * 100.0,
        ci95_low: low * 100.0,
        ci95_high: high * 100.0,
        relative: (p0 > 0.0).then(|| diff / p0),
        significant: low > 0.0 || high < 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lift_with_interval() {
        let treated = Outcome { entered: 1000, converted: 150, revenue: 0.0 };
        let holdout = Outcome { entered: 1000, converted: 100, revenue: 0.0 };
        let l = lift(treated, holdout).expect("both sides");
        assert!((l.lift_points - 5.0).abs() < 1e-9);
        // se = sqrt(.15*.85/1000 + .1*.9/1000) = 0.014748; ±1.96 se = ±2.89 points.
        assert!((l.ci95_low - 2.109).abs() < 0.01, "{}", l.ci95_low);
        assert!((l.ci95_high - 7.891).abs() < 0.01, "{}", l.ci95_high);
        assert!(l.significant);
        assert_eq!(l.relative.map(|r| (r * 100.0).round()), Some(50.0));
        let small = lift(
            Outcome { entered: 20, converted: 3, revenue: 0.0 },
            Outcome { entered: 20, converted: 2, revenue: 0.0 },
        )
        .expect("both sides");
        assert!(!small.significant);
        assert!(lift(treated, Outcome::default()).is_none());
    }
}
