//! The product catalog: what a store sells. Pure data and validation; storage lives in `kizuna-store`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One product (or variant) as the store sells it. `id` is the store's own product id and the upsert key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Price in major units of `currency` (e.g. 19.99).
    pub price: f64,
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_at_price: Option<f64>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_in_stock")]
    pub in_stock: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

fn default_currency() -> String {
    "USD".to_owned()
}

fn default_in_stock() -> bool {
    true
}

/// Why a product was rejected; `field` names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ProductError {
    pub field: &'static str,
    pub message: String,
}

impl Product {
    /// Checks the invariants that serde cannot express.
    pub fn validate(&self) -> Result<(), ProductError> {
        let err = |field, message: &str| Err(ProductError { field, message: message.to_owned() });
        if self.id.trim().is_empty() {
            return err("id", "must not be empty");
        }
        if self.id.len() > 256 {
            return err("id", "must be at most 256 characters");
        }
        if self.title.trim().is_empty() {
            return err("title", "must not be empty");
        }
        if !self.price.is_finite() || self.price < 0.0 {
            return err("price", "must be a finite number >= 0");
        }
        if let Some(p) = self.compare_at_price
            && (!p.is_finite() || p < 0.0)
        {
            return err("compare_at_price", "must be a finite number >= 0");
        }
        let currency_ok = self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            return err("currency", "must be an ISO 4217 code such as USD or JPY");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        serde_json::from_value(serde_json::json!({"id": "p1", "title": "Tee", "price": 20.0}))
            .expect("valid product json")
    }

    #[test]
    fn defaults_apply() {
        let p = product();
        assert_eq!(p.currency, "USD");
        assert!(p.in_stock);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn rejects_bad_fields() {
        let mut p = product();
        p.price = -1.0;
        assert_eq!(p.validate().expect_err("invalid product").field, "price");
        let mut p = product();
        p.currency = "usd".into();
        assert_eq!(p.validate().expect_err("invalid product").field, "currency");
        let mut p = product();
        p.id = " ".into();
        assert_eq!(p.validate().expect_err("invalid product").field, "id");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<Product, _> =
            serde_json::from_value(serde_json::json!({"id": "p1", "title": "T", "price": 1.0, "colour": "red"}));
        assert!(r.is_err());
    }
}
