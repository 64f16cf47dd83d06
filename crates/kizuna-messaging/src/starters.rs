//! Starter templates for the messages every D2C brand sends first; flows start from them and brands edit them.
//! Each reads the Segment e-commerce event that triggers it and degrades gracefully when data is missing.

use crate::template::TemplateDefinition;
use serde_json::json;

const FOOTER: &str = "<hr><p style=\"font-size:12px;color:#777\">{{ store.name | default: \"Our store\" }} · \
<a href=\"{{ message.preferences_url }}\">Email preferences</a> · <a href=\"{{ message.unsubscribe_url }}\">Unsubscribe</a></p>";

fn email(
    purpose: &str,
    topic: Option<&str>,
    description: &str,
    subject: &str,
    preheader: &str,
    body: &str,
) -> TemplateDefinition {
    let html = format!(
        "<html><body style=\"font-family:sans-serif;max-width:600px;margin:auto\">{body}{FOOTER}</body></html>"
    );
    let value = json!({"channel": "email", "purpose": purpose, "topic": topic, "description": description,
                       "subject": subject, "preheader": preheader, "html": html});
    serde_json::from_value(value).unwrap_or_else(|e| panic!("starter template {description} is invalid: {e}"))
}

const PRODUCT_GRID: &str = "{% for p in recommendations %}<td style=\"padding:8px;text-align:center\">\
{% if p.image_url %}<img src=\"{{ p.image_url }}\" width=\"160\" alt=\"\">{% endif %}\
<p><a href=\"{{ p.url | default: store.url }}\">{{ p.name }}</a><br>{{ p.price | money }}</p></td>{% endfor %}";

/// `(name, definition)` for every starter.
pub fn starter_templates() -> Vec<(&'static str, TemplateDefinition)> {
    vec![
        (
            "welcome",
            email(
                "marketing",
                Some("newsletter"),
                "Welcome series, first email: who we are and what sells best",
                "Welcome to {{ store.name | default: \"our store\" }}, {{ profile.first_name | default: \"friend\" }}",
                "Here is what our customers love most",
                &format!("<h1>Welcome{{% if profile.first_name %}}, {{{{ profile.first_name }}}}{{% endif %}}!</h1>\
                 <p>Thanks for joining us. These are what our customers love most:</p>\
                 {{% recommend placement: \"home_bestsellers\", limit: 3 %}}<table><tr>{PRODUCT_GRID}</tr></table>"),
            ),
        ),
        (
            "cart_abandonment",
            email(
                "marketing",
                None,
                "Cart abandonment: the cart's products, and what goes with them",
                "{{ profile.first_name | default: \"Hi\" }}, you left something in your cart",
                "Your cart is saved for you",
                &format!("<h1>Still thinking it over?</h1>\
                 <p>Your cart{{% if event.properties.value %}} ({{{{ event.properties.value | money }}}}){{% endif %}} is waiting:</p>\
                 <ul>{{% for item in event.properties.products %}}<li>{{{{ item.name }}}} × {{{{ item.quantity | default: 1 }}}}</li>{{% endfor %}}</ul>\
                 <p><a href=\"{{{{ event.properties.cart_url | default: store.url }}}}\">Return to your cart</a></p>\
                 {{% recommend placement: \"cart_cross_sell\", limit: 3 %}}{{% if recommendations.size > 0 %}}\
                 <h2>Goes well with</h2><table><tr>{PRODUCT_GRID}</tr></table>{{% endif %}}"),
            ),
        ),
        (
            "browse_abandonment",
            email(
                "marketing",
                None,
                "Browse abandonment: the product they looked at, and similar ones",
                "Still looking at {{ event.properties.name | default: \"this\" }}?",
                "A few more you might like",
                &format!("<h1>{{{{ event.properties.name | default: \"It caught your eye\" }}}}</h1>\
                 <p><a href=\"{{{{ event.properties.url | default: store.url }}}}\">Take another look</a></p>\
                 {{% recommend placement: \"product_similar\", limit: 3 %}}<table><tr>{PRODUCT_GRID}</tr></table>"),
            ),
        ),
        (
            "post_purchase_review",
            email(
                "transactional",
                None,
                "After delivery: ask for a review of what they bought",
                "How are you liking your order, {{ profile.first_name | default: \"there\" }}?",
                "Tell us in one minute",
                "<h1>Thank you for your order{% if event.properties.order_id %} #{{ event.properties.order_id }}{% endif %}</h1>\
                 <p>How did we do? Your review helps other shoppers.</p>\
                 <ul>{% for item in event.properties.products %}<li>{{ item.name }}</li>{% endfor %}</ul>",
            ),
        ),
        (
            "win_back",
            email(
                "marketing",
                Some("offers"),
                "Win-back: a customer whose next order is overdue",
                "We miss you, {{ profile.first_name | default: \"friend\" }}",
                "Something new since your last visit",
                &format!("<h1>It has been a while</h1><p>Here is what is new since your last order:</p>\
                 {{% recommend placement: \"for_you\", limit: 3 %}}<table><tr>{PRODUCT_GRID}</tr></table>"),
            ),
        ),
        (
            "welcome_2",
            email(
                "marketing",
                Some("newsletter"),
                "Welcome series, second email: our bestsellers",
                "Our bestsellers, picked for you",
                "What customers come back for",
                &format!("<h1>The ones people come back for</h1>\
                 {{% recommend placement: \"home_bestsellers\", limit: 3 %}}<table><tr>{PRODUCT_GRID}</tr></table>"),
            ),
        ),
        (
            "welcome_3",
            email(
                "marketing",
                Some("offers"),
                "Welcome series, third email: a first-order offer",
                "{{ profile.first_name | default: \"Hi\" }}, a welcome gift for your first order",
                "Use it this week",
                "<h1>A gift for your first order</h1><p>Use code <strong>WELCOME10</strong> at checkout this week.</p>\
                 <p><a href=\"{{ store.url }}\">Shop now</a></p>",
            ),
        ),
        (
            "cart_abandonment_2",
            email(
                "marketing",
                None,
                "Cart abandonment, second reminder",
                "Your cart is still saved",
                "The items may not stay in stock",
                "<h1>Your cart is still here</h1>\
                 <ul>{% for item in event.properties.products %}<li>{{ item.name }}</li>{% endfor %}</ul>\
                 <p><a href=\"{{ event.properties.cart_url | default: store.url }}\">Complete your order</a></p>",
            ),
        ),
        (
            "post_purchase_education",
            email(
                "marketing",
                Some("tips"),
                "After an order: how to get the most from what they bought",
                "Getting the most from your order",
                "Tips from our team",
                "<h1>Tips for your new things</h1>\
                 <ul>{% for item in event.properties.products %}<li>{{ item.name }}: how to use and care for it</li>{% endfor %}</ul>",
            ),
        ),
        (
            "cross_sell",
            email(
                "marketing",
                Some("offers"),
                "After an order: what goes well with it",
                "Goes well with your last order",
                "Picked to match",
                &format!("<h1>Picked to go with your order</h1>\
                 {{% recommend placement: \"cart_cross_sell\", limit: 3 %}}<table><tr>{PRODUCT_GRID}</tr></table>"),
            ),
        ),
        (
            "birthday_offer",
            email(
                "marketing",
                Some("offers"),
                "Birthday offer",
                "Happy birthday, {{ profile.first_name | default: \"friend\" }}!",
                "A little gift from us",
                "<h1>Happy birthday!</h1><p>We added a gift to your account: use <strong>BIRTHDAY</strong> this month.</p>",
            ),
        ),
        (
            "vip_welcome",
            email(
                "marketing",
                None,
                "VIP tier reached",
                "Welcome to VIP, {{ profile.first_name | default: \"friend\" }}",
                "Your new perks",
                "<h1>You are one of our VIPs</h1><p>Free shipping on every order and early access to new arrivals.</p>",
            ),
        ),
        (
            "replenishment_reminder",
            email(
                "marketing",
                None,
                "Replenishment: time to restock what they bought",
                "Running low?",
                "Restock in one click",
                "<h1>Time to restock?</h1>\
                 <ul>{% for item in event.properties.products %}<li>{{ item.name }}</li>{% endfor %}</ul>\
                 <p><a href=\"{{ store.url }}\">Order again</a></p>",
            ),
        ),
        (
            "line_cart_reminder",
            serde_json::from_value(json!({
                "channel": "line", "purpose": "marketing",
                "description": "Cart reminder on LINE with a carousel of cart companions",
                "text": "{{ profile.first_name | default: \"\" }}さん、カートに商品が残っています。{{ event.properties.cart_url | default: store.url }}",
                "carousel": {"placement": "cart_cross_sell", "limit": 5, "button": "見る", "alt_text": "おすすめ商品"}
            }))
            .unwrap_or_else(|e| panic!("starter line_cart_reminder is invalid: {e}")),
        ),
        (
            "sms_shipping_update",
            serde_json::from_value(json!({
                "channel": "sms", "purpose": "transactional",
                "description": "Shipping update by SMS",
                "body": "{{ store.name | default: \"Your order\" }}: order {{ event.properties.order_id }} has shipped. {{ event.properties.tracking_url }}"
            }))
            .unwrap_or_else(|e| panic!("starter sms_shipping_update is invalid: {e}")),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::starter_templates;
    use crate::{NoProducts, Renderer};
    use std::sync::Arc;

    #[test]
    fn every_starter_compiles_and_renders_with_no_data() {
        let renderer = Renderer::new(Arc::new(NoProducts));
        for (name, definition) in starter_templates() {
            let compiled = renderer.compile(&definition).unwrap_or_else(|e| panic!("{name}: {e}"));
            renderer.render(&compiled, Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
