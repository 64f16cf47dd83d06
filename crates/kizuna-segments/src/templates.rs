//! Starter segments: definitions a brand can copy and adjust, never installed on its own. Thresholds (AOV,
//! predicted CLV) are starting points in the store's currency; edit them to the brand's numbers.

/// A starter segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Template {
    pub name: &'static str,
    pub description: &'static str,
    /// The definition in the text syntax.
    pub text: &'static str,
}

pub const TEMPLATES: &[Template] = &[
    Template {
        name: "new-subscribers",
        description: "Gave an email address in the last 30 days and has not ordered yet",
        text: "has email and computed.first_seen within last 30d and not computed.orders_count >= 1",
    },
    Template { name: "first-time-buyers", description: "Exactly one order so far", text: "computed.orders_count = 1" },
    Template { name: "repeat-buyers", description: "Two or more orders", text: "computed.orders_count >= 2" },
    Template {
        name: "lapsed-90d",
        description: "Has ordered, but not in the last 90 days",
        text: "computed.orders_count >= 1 and computed.last_order_at more than 90d ago",
    },
    Template {
        name: "cart-abandoners-24h",
        description: "Added to cart in the last 24 hours and did not order within an hour",
        text: r#"did "Product Added" then not "Order Completed" within 1h in last 24h"#,
    },
    Template {
        name: "browse-abandoners",
        description: "Viewed a product in the last 3 days, did not add it to the cart within an hour, no order since",
        text: r#"did "Product Viewed" then not "Product Added" within 1h in last 3d and not event "Order Completed" in last 3d"#,
    },
    Template {
        name: "birthday-next-30-days",
        description: "Birthday (trait `birthday`, YYYY-MM-DD) within the next 30 days, today included",
        text: "traits.birthday anniversary within 30d",
    },
    Template { name: "high-aov", description: "Average order value of 100 or more", text: "computed.aov >= 100" },
    Template {
        name: "one-and-done-at-risk",
        description: "One order, placed 45 to 120 days ago: the window to win a second order",
        text: "computed.orders_count = 1 and computed.last_order_at between 45d and 120d ago",
    },
    Template {
        name: "vip-top-spenders",
        description: "Top 20 % by spend (RFM monetary score 5) with two or more orders; needs an analytics run",
        text: "computed.rfm_monetary = 5 and computed.orders_count >= 2",
    },
    Template {
        name: "predicted-vip",
        description: "Predicted 12-month CLV of 300 or more; needs an analytics run",
        text: "computed.predicted_clv >= 300",
    },
    Template {
        name: "at-risk-by-churn",
        description: "Repeat buyers the model thinks have probably stopped buying (churn risk 70 % or more)",
        text: "computed.churn_risk >= 0.7 and computed.orders_count >= 2",
    },
];

/// A starter segment by name.
pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_validates_and_round_trips() {
        for t in TEMPLATES {
            let condition = crate::parse(t.text).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            crate::check(&condition).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            assert_eq!(crate::parse(&crate::print(&condition)), Ok(condition), "{}", t.name);
        }
        let mut names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TEMPLATES.len());
    }
}
