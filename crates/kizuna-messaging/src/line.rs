//! LINE product carousels as Flex messages: one bubble per product with its picture, name, price and a button.

use crate::money::format_money;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Carousel {
    pub placement: String,
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// The button label.
    #[serde(default = "default_button")]
    pub button: String,
    /// Shown by LINE in notifications and chat lists.
    #[serde(default = "default_alt")]
    pub alt_text: String,
}

fn default_limit() -> usize {
    5
}

fn default_button() -> String {
    "View".into()
}

fn default_alt() -> String {
    "Picked for you".into()
}

fn text_of(product: &Json, key: &str) -> Option<String> {
    match product.get(key)? {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The carousel for these products, or nothing when there are none (LINE rejects an empty carousel). Products
/// without an https link are left out: LINE only opens https URIs.
pub fn carousel_message(carousel: &Carousel, products: &[Json], store: &Json, recipient: &Json) -> Option<Json> {
    let currency = store.get("currency").and_then(Json::as_str).unwrap_or("USD");
    let locale = recipient
        .get("locale")
        .and_then(Json::as_str)
        .or_else(|| store.get("locale").and_then(Json::as_str))
        .unwrap_or("en");
    let bubbles: Vec<Json> = products
        .iter()
        .filter_map(|p| {
            let url = text_of(p, "url").filter(|u| u.starts_with("https://"))?;
            let name: String = text_of(p, "name").unwrap_or_else(|| "Product".into()).chars().take(60).collect();
            let mut body = vec![json!({"type": "text", "text": name, "weight": "bold", "wrap": true, "size": "md"})];
            if let Some(price) = p.get("price").and_then(Json::as_f64) {
                let currency = text_of(p, "currency").unwrap_or_else(|| currency.to_owned());
                body.push(json!({"type": "text", "text": format_money(price, &currency, locale), "size": "sm", "color": "#555555"}));
            }
            let mut bubble = json!({
                "type": "bubble",
                "size": "kilo",
                "body": {"type": "box", "layout": "vertical", "spacing": "sm", "contents": body},
                "footer": {"type": "box", "layout": "vertical", "contents": [
                    {"type": "button", "style": "primary", "height": "sm",
                     "action": {"type": "uri", "label": carousel.button.chars().take(20).collect::<String>(), "uri": url}}
                ]}
            });
            if let Some(image) = text_of(p, "image_url").filter(|u| u.starts_with("https://")) {
                bubble["hero"] = json!({"type": "image", "url": image, "size": "full", "aspectRatio": "1:1", "aspectMode": "cover"});
            }
            Some(bubble)
        })
        .take(carousel.limit.min(10))
        .collect();
    if bubbles.is_empty() {
        return None;
    }
    Some(json!({
        "type": "flex",
        "altText": carousel.alt_text.chars().take(400).collect::<String>(),
        "contents": {"type": "carousel", "contents": bubbles}
    }))
}
