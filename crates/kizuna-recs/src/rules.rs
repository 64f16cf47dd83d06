use serde::{Deserialize, Serialize};

/// Business rules of a placement, applied to every strategy's candidates (fallbacks included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Only products in stock (products the catalog does not have count as in stock).
    pub in_stock_only: bool,
    /// Once the store has a catalog, only its products (not products that only events have mentioned).
    pub catalog_only: bool,
    /// Never show what the person already bought…
    pub exclude_purchased: bool,
    /// …unless it is a product people re-buy (a replenishment interval is known for it).
    pub rebuy_replenishable: bool,
    /// Never show the products the request is about (`product=`, `cart=`).
    pub exclude_context: bool,
    /// When not empty, only products in one of these categories.
    pub include_categories: Vec<String>,
    pub exclude_categories: Vec<String>,
    pub exclude_products: Vec<String>,
    /// Shown first, in this order, when they pass the other rules.
    pub pin: Vec<String>,
    /// Multiply matching products' scores.
    pub boosts: Vec<Boost>,
    /// At most this many products of one brand (diversity).
    pub max_per_brand: Option<usize>,
    /// How much the person's category/brand affinity and price band re-rank candidates (0: not at all).
    pub affinity_weight: f32,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            in_stock_only: true,
            catalog_only: true,
            exclude_purchased: true,
            rebuy_replenishable: true,
            exclude_context: true,
            include_categories: Vec::new(),
            exclude_categories: Vec::new(),
            exclude_products: Vec::new(),
            pin: Vec::new(),
            boosts: Vec::new(),
            max_per_brand: None,
            affinity_weight: 0.5,
        }
    }
}

/// `{"brand": "Acme", "factor": 1.5}`: exactly one of `product`, `category`, `brand`, `tag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub factor: f32,
}

impl Boost {
    pub fn matches(&self, product: &kizuna_catalog::Product) -> bool {
        self.product.as_ref().is_some_and(|p| *p == product.id)
            || self.category.as_ref().is_some_and(|c| product.categories.contains(c))
            || self.brand.as_ref().is_some_and(|b| product.brand.as_ref() == Some(b))
            || self.tag.as_ref().is_some_and(|t| product.tags.contains(t))
    }
}

impl Rules {
    /// Checks what serde cannot; the error names the field under `rules`.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (i, boost) in self.boosts.iter().enumerate() {
            let set =
                [&boost.product, &boost.category, &boost.brand, &boost.tag].iter().filter(|x| x.is_some()).count();
            if set != 1 {
                return Err((format!("boosts[{i}]"), "set exactly one of product, category, brand, tag".into()));
            }
            if !(boost.factor.is_finite() && boost.factor > 0.0 && boost.factor <= 100.0) {
                return Err((format!("boosts[{i}].factor"), "must be a number in (0, 100]".into()));
            }
        }
        if self.max_per_brand == Some(0) {
            return Err(("max_per_brand".into(), "must be at least 1".into()));
        }
        if !(self.affinity_weight.is_finite() && (0.0..=10.0).contains(&self.affinity_weight)) {
            return Err(("affinity_weight".into(), "must be a number between 0 and 10".into()));
        }
        if self.pin.len() > 100 {
            return Err(("pin".into(), "at most 100 pinned products".into()));
        }
        Ok(())
    }
}
