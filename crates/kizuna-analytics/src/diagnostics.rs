//! Holdout diagnostics: how well a fitted purchase model predicts the repeat purchases customers actually made
//! after the calibration period, in total and per calibration-frequency group (0, 1, …, 7+), the table of
//! Fader, Hardie & Lee (2005, figure 3) — as data, as a Markdown table and as an SVG chart.

use serde::{Deserialize, Serialize};

use crate::{CustomerSummary, TransactionModel};

/// Customers with this many calibration repeat purchases or more share the last group ("7+").
pub const LAST_GROUP: u32 = 7;

/// One calibration-frequency group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldoutGroup {
    /// "0", "1", …, "7+".
    pub label: String,
    /// Customers in the group.
    pub customers: usize,
    /// Repeat purchases they made in the holdout period.
    pub actual: f64,
    /// Expected holdout purchases per model, in [`HoldoutReport::models`] order.
    pub predicted: Vec<f64>,
}

/// Predicted vs actual holdout purchases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldoutReport {
    /// Model names, in the order of every `predicted` vector.
    pub models: Vec<String>,
    /// Groups 0..=7+ (empty groups omitted).
    pub groups: Vec<HoldoutGroup>,
    /// Sums over all customers.
    pub total: HoldoutGroup,
}

/// Sums actual and expected holdout purchases per calibration-frequency group. Each customer's expectation is
/// over their own holdout length (`holdout_duration`).
pub fn holdout_report(customers: &[CustomerSummary], models: &[&dyn TransactionModel]) -> HoldoutReport {
    let empty = |label: String| HoldoutGroup { label, customers: 0, actual: 0.0, predicted: vec![0.0; models.len()] };
    let mut groups: Vec<HoldoutGroup> = (0..=LAST_GROUP)
        .map(|g| empty(if g == LAST_GROUP { format!("{LAST_GROUP}+") } else { g.to_string() }))
        .collect();
    let mut total = empty("all".to_owned());
    for c in customers {
        let group = &mut groups[c.frequency.min(LAST_GROUP) as usize];
        let actual = f64::from(c.holdout_frequency);
        for target in [&mut *group, &mut total] {
            target.customers += 1;
            target.actual += actual;
        }
        for (i, model) in models.iter().enumerate() {
            let expected = model.conditional_expected(c.holdout_duration, f64::from(c.frequency), c.recency, c.t);
            group.predicted[i] += expected;
            total.predicted[i] += expected;
        }
    }
    groups.retain(|g| g.customers > 0);
    HoldoutReport { models: models.iter().map(|m| m.name().to_owned()).collect(), groups, total }
}

impl HoldoutReport {
    /// The report as a Markdown table: customers, actual and predicted purchases per group, then the total.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("| calibration repeat purchases | customers | actual |");
        for m in &self.models {
            out.push_str(&format!(" {m} |"));
        }
        out.push_str("\n|---|---|---|");
        out.push_str(&"---|".repeat(self.models.len()));
        out.push('\n');
        for g in self.groups.iter().chain(std::iter::once(&self.total)) {
            out.push_str(&format!("| {} | {} | {:.0} |", g.label, g.customers, g.actual));
            for p in &g.predicted {
                out.push_str(&format!(" {p:.1} |"));
            }
            out.push('\n');
        }
        out
    }

    /// A self-contained SVG line chart of the mean holdout purchases per customer in each group: actual and
    /// one line per model (the usual "calibration vs holdout purchases" plot).
    pub fn to_svg(&self, title: &str) -> String {
        const WIDTH: f64 = 720.0;
        const HEIGHT: f64 = 420.0;
        const LEFT: f64 = 60.0;
        const RIGHT: f64 = 170.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 50.0;
        let per_customer = |v: f64, g: &HoldoutGroup| if g.customers == 0 { 0.0 } else { v / g.customers as f64 };
        let mut series: Vec<(String, Vec<f64>)> =
            vec![("actual".to_owned(), self.groups.iter().map(|g| per_customer(g.actual, g)).collect())];
        for (i, m) in self.models.iter().enumerate() {
            series.push((m.clone(), self.groups.iter().map(|g| per_customer(g.predicted[i], g)).collect()));
        }
        let max = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max);
        let y_max = nice_ceiling(max);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let n = self.groups.len().max(1);
        let x_of = |i: usize| LEFT + if n == 1 { plot_w / 2.0 } else { plot_w * i as f64 / (n - 1) as f64 };
        let y_of = |v: f64| TOP + plot_h * (1.0 - v / y_max);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{LEFT}\" y=\"24\" font-size=\"15\">{}</text>\n",
            escape(title)
        );
        for tick in 0..=4 {
            let v = y_max * f64::from(tick) / 4.0;
            let y = y_of(v);
            svg.push_str(&format!(
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n",
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0
            ));
        }
        for (i, g) in self.groups.iter().enumerate() {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                x_of(i),
                TOP + plot_h + 18.0,
                escape(&g.label)
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">repeat purchases in calibration</text>\n\
             <text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">mean purchases in holdout</text>\n",
            LEFT + plot_w / 2.0,
            HEIGHT - 10.0,
            TOP + plot_h / 2.0
        ));
        const COLOURS: [&str; 4] = ["#111111", "#d62728", "#1f77b4", "#2ca02c"];
        for (s, (name, values)) in series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let dash = if s == 0 { "" } else { " stroke-dasharray=\"6 4\"" };
            let points: Vec<String> =
                values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(*v))).collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"><title>{}</title></polyline>\n",
                points.join(" "),
                escape(name)
            ));
            let legend_y = TOP + 10.0 + 20.0 * s as f64;
            svg.push_str(&format!(
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{legend_y:.1}\" y2=\"{legend_y:.1}\" stroke=\"{colour}\" \
                 stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                LEFT + plot_w + 16.0,
                LEFT + plot_w + 46.0,
                LEFT + plot_w + 52.0,
                legend_y + 4.0,
                escape(name)
            ));
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (at least 0.1), for a readable axis.
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.1) {
        return 0.1f64.max(if v.is_finite() { v } else { 0.1 });
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|c| *c >= v).unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Constant(f64);
    impl TransactionModel for Constant {
        fn name(&self) -> &'static str {
            "constant"
        }
        fn p_alive(&self, _: f64, _: f64, _: f64) -> f64 {
            1.0
        }
        fn conditional_expected(&self, t: f64, _: f64, _: f64, _: f64) -> f64 {
            self.0 * t
        }
        fn expected(&self, t: f64) -> f64 {
            self.0 * t
        }
    }

    fn customer(frequency: u32, holdout: u32) -> CustomerSummary {
        CustomerSummary {
            holdout_frequency: holdout,
            holdout_duration: 10.0,
            ..CustomerSummary::from_stats("c", frequency, 1.0, 2.0)
        }
    }

    #[test]
    fn groups_by_calibration_frequency_with_a_last_open_group() {
        let customers = [customer(0, 1), customer(0, 0), customer(2, 3), customer(9, 4), customer(7, 2)];
        let report = holdout_report(&customers, &[&Constant(0.5)]);
        let labels: Vec<&str> = report.groups.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(labels, ["0", "2", "7+"]);
        assert_eq!((report.groups[2].customers, report.groups[2].actual), (2, 6.0));
        assert_eq!(report.total.customers, 5);
        assert_eq!(report.total.actual, 10.0);
        assert!((report.total.predicted[0] - 25.0).abs() < 1e-12);
        let table = report.to_markdown();
        assert!(table.contains("| 7+ | 2 | 6 | 10.0 |"), "{table}");
        assert!(table.contains("| all | 5 | 10 | 25.0 |"), "{table}");
        let svg = report.to_svg("CDNOW <sample>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("CDNOW &lt;sample&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2, "actual and one model");
    }

    #[test]
    fn axis_ceiling_is_round() {
        assert_eq!(nice_ceiling(0.73), 1.0);
        assert_eq!(nice_ceiling(1.7), 2.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(0.0), 0.1);
    }
}
