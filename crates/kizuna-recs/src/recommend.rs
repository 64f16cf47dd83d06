use crate::model::CfModel;
use crate::strategy::{Candidate, Sources, price_band, replenish_interval};
use crate::{ItemIx, Kind, Placement, ProfileKey, Rankings, Secs, Signals};
use std::collections::{HashMap, HashSet};

/// What a person likes, from their profile's computed attributes: category and brand shares (summing to 1)
/// and price band.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Taste {
    /// Favourite first.
    pub categories: Vec<(String, f32)>,
    pub brands: Vec<(String, f32)>,
    pub price_band: Option<String>,
}

impl Taste {
    /// A taste from category and brand shares (any order) and a price band: the five largest shares of each,
    /// favourite first.
    pub fn from_shares<'a>(
        categories: impl IntoIterator<Item = (&'a str, f64)>,
        brands: impl IntoIterator<Item = (&'a str, f64)>,
        price_band: Option<&str>,
    ) -> Taste {
        fn top<'a>(shares: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<(String, f32)> {
            let mut v: Vec<(&str, f32)> = shares.into_iter().map(|(k, share)| (k, share as f32)).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            v.truncate(5);
            v.into_iter().map(|(k, share)| (k.to_owned(), share)).collect()
        }
        Taste { categories: top(categories), brands: top(brands), price_band: price_band.map(str::to_owned) }
    }

    /// Place keys of a location (empty parts count as unknown), most specific first.
    pub fn places(country: Option<&str>, region: Option<&str>, city: Option<&str>) -> Vec<String> {
        fn known(part: Option<&str>) -> Option<&str> {
            part.filter(|s| !s.is_empty())
        }
        place_keys(known(country), known(region), known(city))
    }

    fn multiplier(&self, product: &kizuna_catalog::Product, weight: f32) -> f32 {
        if weight == 0.0 {
            return 1.0;
        }
        let category: f32 =
            self.categories.iter().filter(|(c, _)| product.categories.contains(c)).map(|(_, s)| s).sum();
        let brand: f32 = self.brands.iter().filter(|(b, _)| product.brand.as_ref() == Some(b)).map(|(_, s)| s).sum();
        let band = match &self.price_band {
            Some(b) if b == price_band(product.price) => 0.5,
            _ => 0.0,
        };
        1.0 + weight * (category + brand + band)
    }
}

/// Place keys from a location, most specific first.
pub fn place_keys(country: Option<&str>, region: Option<&str>, city: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(city) = city {
        out.push(format!("city:{}", city.trim().to_lowercase()));
    }
    if let (Some(country), Some(region)) = (country, region) {
        out.push(format!("region:{}/{}", country.trim().to_lowercase(), region.trim().to_lowercase()));
    }
    if let Some(country) = country {
        out.push(format!("country:{}", country.trim().to_lowercase()));
    }
    out
}

/// One request to a placement.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The person, when known (an unknown or anonymous visitor is a cold start).
    pub profile: Option<ProfileKey>,
    /// The products the request is about: the product page's, the cart's.
    pub context: Vec<ItemIx>,
    /// Where the visitor is, most specific first (see [`place_keys`]).
    pub places: Vec<String>,
    pub taste: Option<&'a Taste>,
    pub limit: usize,
    pub now: Secs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub item: ItemIx,
    pub score: f32,
    pub reason: String,
    /// The strategy that found it (the placement's own, a fallback's, or `pinned`).
    pub strategy: &'static str,
}

/// Answers a placement: the strategy's candidates re-ranked by the person's taste and the boosts, then each
/// fallback's in turn while the list is short; every candidate passes the rules; pins go first; at most
/// `max_per_brand` per brand.
pub fn recommend(
    placement: &Placement,
    request: &Request<'_>,
    signals: &Signals,
    rankings: &Rankings,
    model: Option<&CfModel>,
) -> Vec<Recommendation> {
    let rules = &placement.rules;
    let limit = request.limit.max(1);
    let sources = Sources { signals, rankings, model };
    let history = request.profile.and_then(|p| signals.history(p));
    let purchased: HashMap<ItemIx, Vec<Secs>> = match history {
        Some(h) if rules.exclude_purchased => {
            let mut map: HashMap<ItemIx, Vec<Secs>> = HashMap::new();
            for t in h.touches().filter(|t| t.kind == Kind::Purchase) {
                map.entry(t.item).or_default().push(t.at);
            }
            map
        }
        _ => HashMap::new(),
    };
    let excluded_ids: HashSet<&str> = rules.exclude_products.iter().map(String::as_str).collect();
    let catalog_only = rules.catalog_only && signals.has_catalog();
    let allowed = |ix: ItemIx, strategy: &str| -> bool {
        let item = signals.items.item(ix);
        let product = &item.product;
        if catalog_only && !item.in_catalog {
            return false;
        }
        if rules.in_stock_only && !product.in_stock {
            return false;
        }
        if rules.exclude_context && request.context.contains(&ix) {
            return false;
        }
        if excluded_ids.contains(product.id.as_str()) {
            return false;
        }
        if !rules.include_categories.is_empty()
            && !product.categories.iter().any(|c| rules.include_categories.contains(c))
        {
            return false;
        }
        if product.categories.iter().any(|c| rules.exclude_categories.contains(c)) {
            return false;
        }
        if let Some(times) = purchased.get(&ix) {
            let rebuy = strategy == "replenishment"
                || (rules.rebuy_replenishable && replenish_interval(signals, ix, times).is_some());
            if !rebuy {
                return false;
            }
        }
        true
    };

    let mut out: Vec<Recommendation> = Vec::with_capacity(limit);
    let mut taken: HashSet<ItemIx> = HashSet::new();
    let mut per_brand: HashMap<String, usize> = HashMap::new();
    let mut push = |out: &mut Vec<Recommendation>, rec: Recommendation| {
        if out.len() >= limit || taken.contains(&rec.item) {
            return;
        }
        if let Some(cap) = rules.max_per_brand
            && let Some(brand) = &signals.items.product(rec.item).brand
        {
            let n = per_brand.entry(brand.clone()).or_default();
            if *n >= cap {
                return;
            }
            *n += 1;
        }
        taken.insert(rec.item);
        out.push(rec);
    };

    for id in &rules.pin {
        if let Some(ix) = signals.items.ix(id)
            && allowed(ix, "pinned")
        {
            push(
                &mut out,
                Recommendation { item: ix, score: f32::INFINITY, reason: "featured".into(), strategy: "pinned" },
            );
        }
    }
    let strategies = std::iter::once(&placement.strategy).chain(placement.fallback.iter());
    for strategy in strategies {
        if out.len() >= limit {
            break;
        }
        let name = strategy.name();
        let candidates: Vec<Candidate> = strategy.candidates(&sources, request, limit);
        let max = candidates.iter().map(|c| c.1).fold(0.0f32, f32::max);
        if max <= 0.0 {
            continue;
        }
        let mut scored: Vec<(f32, Candidate)> = candidates
            .into_iter()
            .filter(|c| c.1 > 0.0 && allowed(c.0, name))
            .map(|c| {
                let product = signals.items.product(c.0);
                let mut s = c.1 / max;
                if let Some(taste) = request.taste {
                    s *= taste.multiplier(product, rules.affinity_weight);
                }
                for boost in rules.boosts.iter().filter(|b| b.matches(product)) {
                    s *= boost.factor;
                }
                (s, c)
            })
            .collect();
        // Stable: equal scores keep the strategy's order (its ranking, or product order).
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (score, (item, _, reason)) in scored {
            if out.len() >= limit {
                break;
            }
            push(&mut out, Recommendation { item, score, reason, strategy: name });
        }
    }
    out
}
