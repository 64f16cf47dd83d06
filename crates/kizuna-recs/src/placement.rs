use crate::{BecauseOf, Rules, Strategy};
use serde::{Deserialize, Serialize};

/// A named slot of the storefront, a template or a flow: a strategy, rules, and what fills the rest when the
/// strategy has too little (an anonymous visitor has no history: trending, then bestsellers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub strategy: Strategy,
    #[serde(default)]
    pub rules: Rules,
    #[serde(default = "default_fallback")]
    pub fallback: Vec<Strategy>,
    /// How many products a request gets unless it asks for a number.
    #[serde(default = "ten")]
    pub limit: usize,
}

fn ten() -> usize {
    10
}

pub fn default_fallback() -> Vec<Strategy> {
    vec![Strategy::Trending { per_category: false }, Strategy::Bestsellers { window_days: 30, per_category: false }]
}

/// Why a placement was refused; `field` is a path such as `rules.boosts[0].factor`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PlacementError {
    pub field: String,
    pub message: String,
}

pub const MAX_LIMIT: usize = 100;

/// Names the API uses beside placement names under `/api/recommendations/`.
const RESERVED_NAMES: &[&str] = &["status", "train", "placements"];

impl Placement {
    pub fn validate(&self) -> Result<(), PlacementError> {
        let err = |field: &str, message: &str| Err(PlacementError { field: field.into(), message: message.into() });
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return err("name", "use 1 to 64 characters of a-z, 0-9, _ and -");
        }
        if RESERVED_NAMES.contains(&self.name.as_str()) {
            return err("name", "status, train and placements are API paths; choose another name");
        }
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return err("limit", "must be between 1 and 100");
        }
        if self.fallback.len() > 5 {
            return err("fallback", "at most 5 fallback strategies");
        }
        if let Err(message) = self.strategy.validate() {
            return err("strategy", &message);
        }
        for (i, s) in self.fallback.iter().enumerate() {
            if let Err(message) = s.validate() {
                return err(&format!("fallback[{i}]"), &message);
            }
        }
        if let Err((field, message)) = self.rules.validate() {
            return err(&format!("rules.{field}"), &message);
        }
        Ok(())
    }
}

/// The placements every D2C store starts with (created by `kizuna demo` and on request; never forced).
pub fn starter_placements() -> Vec<Placement> {
    let p = |name: &str, description: &str, strategy: Strategy, fallback: Vec<Strategy>, rules: Rules| Placement {
        name: name.into(),
        description: description.into(),
        strategy,
        rules,
        fallback,
        limit: 10,
    };
    let bestsellers = Strategy::Bestsellers { window_days: 30, per_category: false };
    let trending = Strategy::Trending { per_category: false };
    let cold = default_fallback();
    let diverse = Rules { max_per_brand: Some(3), ..Rules::default() };
    vec![
        p(
            "home_trending",
            "Home page: what is rising now",
            trending.clone(),
            vec![bestsellers.clone()],
            diverse.clone(),
        ),
        p(
            "home_bestsellers",
            "Home page: bestsellers of the last 30 days",
            bestsellers.clone(),
            vec![],
            diverse.clone(),
        ),
        p("new_arrivals", "New in", Strategy::NewArrivals { per_category: false }, vec![], Rules::default()),
        p("recently_viewed", "Pick up where you left off", Strategy::RecentlyViewed, vec![], Rules::default()),
        p("product_similar", "Product page: similar items", Strategy::SimilarItems, cold.clone(), Rules::default()),
        p(
            "cart_cross_sell",
            "Cart: frequently bought together",
            Strategy::FrequentlyBoughtTogether { min_support: 2 },
            vec![Strategy::SimilarItems, bestsellers.clone()],
            Rules::default(),
        ),
        p(
            "post_purchase",
            "After an order: because you bought…",
            Strategy::BecauseYou { of: BecauseOf::Bought },
            vec![Strategy::ForYou, bestsellers.clone()],
            Rules::default(),
        ),
        p("for_you", "Picked for you (the weekly discover list)", Strategy::ForYou, cold.clone(), diverse),
        p("replenishment", "Time to restock", Strategy::Replenishment { due_ratio: 0.8 }, vec![], Rules::default()),
        p("near_you", "Popular near you", Strategy::PopularNearYou, cold, Rules::default()),
    ]
}
