//! Starter flows: the journeys every D2C brand runs first, with the message templates (from messaging's
//! starters) and segments (from the segment starters) they use. Installing one creates what is missing and
//! saves the flow as a draft; nothing runs until it is activated.

use serde_json::{Value, json};

pub struct StarterFlow {
    pub name: &'static str,
    pub description: &'static str,
    /// Messaging starter templates it sends.
    pub templates: &'static [&'static str],
    /// Segment starters it reads.
    pub segments: &'static [&'static str],
    pub definition: Value,
}

const WEEKDAYS: [&str; 5] = ["mon", "tue", "wed", "thu", "fri"];

pub fn starter_flows() -> Vec<StarterFlow> {
    vec![
        StarterFlow {
            name: "welcome_series",
            description: "Welcome series: three emails over a week to a new subscriber, with a 10% hold-out",
            templates: &["welcome", "welcome_2", "welcome_3"],
            segments: &[],
            definition: json!({
                "description": "Welcome series (3 emails); leaves at the first order",
                "trigger": {"event": {"name": "Signed Up"}},
                "entry": {"reentry": "never"},
                "goal": {"event": {"name": "Order Completed"}, "within": "14d"},
                "steps": [
                    {"id": "holdout", "type": "holdout", "percent": 10, "next": "welcome"},
                    {"id": "welcome", "type": "send", "template": "welcome", "next": "wait_2d"},
                    {"id": "wait_2d", "type": "delay", "for": "2d", "until": {"at": "10:00"}, "next": "bestsellers"},
                    {"id": "bestsellers", "type": "send", "template": "welcome_2", "next": "wait_3d"},
                    {"id": "wait_3d", "type": "delay", "for": "3d", "until": {"at": "10:00"}, "next": "offer"},
                    {"id": "offer", "type": "send", "template": "welcome_3"}
                ]
            }),
        },
        StarterFlow {
            name: "browse_abandonment",
            description: "Browse abandonment: viewed a product, added nothing within an hour",
            templates: &["browse_abandonment"],
            segments: &[],
            definition: json!({
                "description": "Viewed a product and did not add to cart within an hour",
                "trigger": {"event": {"name": "Product Viewed"}},
                "entry": {"reentry": {"cooldown": "7d"}},
                "filter": "not event \"Order Completed\" in last 1d",
                "goal": {"event": {"name": "Order Completed"}, "within": "3d"},
                "steps": [
                    {"id": "wait_for_cart", "type": "wait_for_event", "event": {"name": "Product Added"},
                     "timeout": "1h", "on_event": null, "on_timeout": "nudge"},
                    {"id": "nudge", "type": "send", "template": "browse_abandonment"}
                ]
            }),
        },
        StarterFlow {
            name: "cart_abandonment",
            description: "Cart abandonment: started checkout, no order for that cart within an hour; two reminders",
            templates: &["cart_abandonment", "cart_abandonment_2", "line_cart_reminder"],
            segments: &[],
            definition: json!({
                "description": "Checkout started, no order for the same cart: email after 1 hour, again after a day",
                "trigger": {"event": {"name": "Checkout Started"}},
                "entry": {"reentry": {"cooldown": "1d"}},
                "goal": {"event": {"name": "Order Completed"}, "within": "5d"},
                "steps": [
                    {"id": "wait_for_order", "type": "wait_for_event", "event": {"name": "Order Completed"},
                     "same_as_trigger": ["cart_id"], "timeout": "1h", "on_event": null, "on_timeout": "first_reminder"},
                    {"id": "first_reminder", "type": "send", "template": "cart_abandonment", "next": "wait_a_day"},
                    {"id": "wait_a_day", "type": "wait_for_event", "event": {"name": "Order Completed"},
                     "same_as_trigger": ["cart_id"], "timeout": "23h", "on_event": null, "on_timeout": "on_line"},
                    {"id": "on_line", "type": "condition", "if": "has line_user_id", "then": "line_reminder", "else": "second_reminder"},
                    {"id": "line_reminder", "type": "send", "template": "line_cart_reminder"},
                    {"id": "second_reminder", "type": "send", "template": "cart_abandonment_2"}
                ]
            }),
        },
        StarterFlow {
            name: "post_purchase",
            description: "Post-purchase: care tips after three days, then what goes with it a week later",
            templates: &["post_purchase_education", "cross_sell"],
            segments: &[],
            definition: json!({
                "description": "Education three days after an order, cross-sell a week later",
                "trigger": {"event": {"name": "Order Completed"}},
                "entry": {"concurrent": true},
                "steps": [
                    {"id": "wait_3d", "type": "delay", "for": "3d", "until": {"at": "10:00"}, "next": "tips"},
                    {"id": "tips", "type": "send", "template": "post_purchase_education", "next": "wait_7d"},
                    {"id": "wait_7d", "type": "delay", "for": "7d", "until": {"at": "10:00", "weekdays": WEEKDAYS}, "next": "cross_sell"},
                    {"id": "cross_sell", "type": "send", "template": "cross_sell"}
                ]
            }),
        },
        StarterFlow {
            name: "review_request",
            description: "Review request five days after delivery",
            templates: &["post_purchase_review"],
            segments: &[],
            definition: json!({
                "description": "Asks for a review five days after the order was delivered",
                "trigger": {"event": {"name": "Order Delivered"}},
                "entry": {"concurrent": true},
                "steps": [
                    {"id": "wait_5d", "type": "delay", "for": "5d", "until": {"at": "10:00"}, "next": "ask"},
                    {"id": "ask", "type": "send", "template": "post_purchase_review"}
                ]
            }),
        },
        StarterFlow {
            name: "win_back",
            description: "Win-back: a lapsed customer (90+ days) gets a 'we miss you', then an offer",
            templates: &["win_back", "welcome_3"],
            segments: &["lapsed-90d"],
            definition: json!({
                "description": "Lapsed 90 days: we miss you, then an offer a week later if still no order",
                "trigger": {"segment_entered": "lapsed-90d"},
                "entry": {"reentry": {"cooldown": "90d"}},
                "goal": {"event": {"name": "Order Completed"}, "within": "14d"},
                "steps": [
                    {"id": "holdout", "type": "holdout", "percent": 10, "next": "miss_you"},
                    {"id": "miss_you", "type": "send", "template": "win_back", "next": "wait_for_order"},
                    {"id": "wait_for_order", "type": "wait_for_event", "event": {"name": "Order Completed"},
                     "timeout": "7d", "on_event": null, "on_timeout": "offer"},
                    {"id": "offer", "type": "send", "template": "welcome_3", "next": "tag"},
                    {"id": "tag", "type": "tag", "add": ["win_back_offered"]}
                ]
            }),
        },
        StarterFlow {
            name: "birthday_offer",
            description: "Birthday: an offer and 100 points at 9:00 on the day, in the customer's time zone",
            templates: &["birthday_offer"],
            segments: &[],
            definition: json!({
                "description": "Birthday offer and points, every year",
                "trigger": {"date": {"attribute": "traits.birthday", "at": "09:00"}},
                "entry": {"reentry": {"cooldown": "300d"}},
                "steps": [
                    {"id": "gift", "type": "send", "template": "birthday_offer", "next": "points"},
                    {"id": "points", "type": "award_points", "points": 100, "reason": "birthday"}
                ]
            }),
        },
        StarterFlow {
            name: "vip_tier",
            description: "VIP tier reached: tag, 500 points and a welcome to the perks",
            templates: &["vip_welcome"],
            segments: &["vip-top-spenders"],
            definition: json!({
                "description": "Entered the VIP segment",
                "trigger": {"segment_entered": "vip-top-spenders"},
                "entry": {"reentry": "never"},
                "steps": [
                    {"id": "tag", "type": "tag", "add": ["vip"], "next": "points"},
                    {"id": "points", "type": "award_points", "points": 500, "reason": "VIP tier reached", "next": "welcome"},
                    {"id": "welcome", "type": "send", "template": "vip_welcome"}
                ]
            }),
        },
        StarterFlow {
            name: "replenishment",
            description: "Replenishment: a reminder 25 days after an order if they have not reordered",
            templates: &["replenishment_reminder"],
            segments: &[],
            definition: json!({
                "description": "Restock reminder for consumables",
                "trigger": {"event": {"name": "Order Completed"}},
                "goal": {"event": {"name": "Order Completed"}, "within": "35d"},
                "steps": [
                    {"id": "wait", "type": "delay", "for": "25d", "until": {"at": "10:00"}, "next": "reminder"},
                    {"id": "reminder", "type": "send", "template": "replenishment_reminder"}
                ]
            }),
        },
        StarterFlow {
            name: "unhappy_review_follow_up",
            description: "A review of 1 or 2 stars becomes a task for a person (webhook) and a tag",
            templates: &[],
            segments: &[],
            definition: json!({
                "description": "Low rating: hand to customer care",
                "trigger": {"event": {"name": "Review Submitted", "where": [{"path": "rating", "op": "lte", "value": 2}]}},
                "entry": {"concurrent": true},
                "steps": [
                    {"id": "tag", "type": "tag", "add": ["unhappy"], "next": "task"},
                    {"id": "task", "type": "webhook", "url": "https://helpdesk.example/hooks/kizuna",
                     "body": {"task": "Call back a customer who left a low rating", "priority": "high"}}
                ]
            }),
        },
        StarterFlow {
            name: "nps_detractor_follow_up",
            description: "An NPS score of 0–6 becomes a task for a person (webhook) and a tag",
            templates: &[],
            segments: &[],
            definition: json!({
                "description": "NPS detractor: hand to customer care",
                "trigger": {"event": {"name": "NPS Submitted", "where": [{"path": "score", "op": "lte", "value": 6}]}},
                "entry": {"reentry": {"cooldown": "30d"}},
                "steps": [
                    {"id": "tag", "type": "tag", "add": ["nps_detractor"], "next": "task"},
                    {"id": "task", "type": "webhook", "url": "https://helpdesk.example/hooks/kizuna",
                     "body": {"task": "Follow up with an NPS detractor", "priority": "normal"}}
                ]
            }),
        },
    ]
}

pub fn starter_flow(name: &str) -> Option<StarterFlow> {
    starter_flows().into_iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{self, Resolver};

    struct Starters;

    impl Resolver for Starters {
        fn template_exists(&self, name: &str) -> bool {
            kizuna_messaging::starters::starter_templates().iter().any(|(n, _)| *n == name)
        }
        fn segment_exists(&self, name: &str) -> bool {
            kizuna_segments::templates::template(name).is_some()
        }
    }

    #[test]
    fn every_starter_is_valid_and_declares_what_it_uses() {
        let starters = starter_flows();
        assert!(starters.len() >= 10);
        for starter in starters {
            let def = validate::from_json(&starter.definition).unwrap_or_else(|e| panic!("{}: {e}", starter.name));
            validate::check(&def, &Starters).unwrap_or_else(|e| panic!("{}: {e}", starter.name));
            let mut used: Vec<&str> = def.templates();
            used.sort_unstable();
            used.dedup();
            let mut declared = starter.templates.to_vec();
            declared.sort_unstable();
            assert_eq!(used, declared, "{}", starter.name);
            for segment in def.segments() {
                assert!(starter.segments.contains(&segment), "{} reads {segment}", starter.name);
            }
        }
    }
}
