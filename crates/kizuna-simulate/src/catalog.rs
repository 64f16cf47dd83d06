//! Catalog generation and the per-category indexes used to pick products quickly.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kizuna_catalog::Product;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use crate::data::{BRANDS, CATEGORIES};
use crate::dist::{chance, lognormal, mix, pick, uniform, unit};

pub(crate) const STORE_URL: &str = "https://shop.example.com";
const IMAGE_URL: &str = "https://cdn.shop.example.com/products";
const STREAM_CATALOG: u64 = 0xCA7A_1065;
pub(crate) const DAY_MS: i64 = 86_400_000;

const STYLES: [&str; 10] =
    ["Everyday", "Classic", "Studio", "Field", "Daily", "Essential", "Heritage", "Weekend", "Signature", "Travel"];

/// How a currency is represented: minor units per major unit and an approximate rate from USD.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Currency {
    pub factor: i64,
    pub usd_rate: f64,
}

impl Currency {
    pub(crate) fn of(code: &str) -> Currency {
        let (factor, usd_rate) = match code {
            "JPY" => (1, 150.0),
            "KRW" => (1, 1350.0),
            "EUR" => (100, 0.92),
            "GBP" => (100, 0.79),
            "CAD" => (100, 1.37),
            "AUD" => (100, 1.52),
            "SGD" => (100, 1.34),
            "TWD" => (100, 32.0),
            _ => (100, 1.0),
        };
        Currency { factor, usd_rate }
    }

    /// Converts minor units to major units.
    #[inline]
    pub(crate) fn major(&self, minor: i64) -> f64 {
        minor as f64 / self.factor as f64
    }

    /// The JSON number a browser would send for `minor` units: whole amounts as integers (`25`, not
    /// `25.0`), others as decimals (`24.99`).
    #[inline]
    pub(crate) fn json(&self, minor: i64) -> Value {
        if minor % self.factor == 0 { Value::from(minor / self.factor) } else { Value::from(self.major(minor)) }
    }

    /// Converts a USD amount to minor units of this currency, rounded to a "shelf price".
    pub(crate) fn shelf_price(&self, usd: f64, charm: bool) -> i64 {
        let local = usd * self.usd_rate;
        if self.factor == 1 {
            // Yen-style: round to 100 and sometimes end in 80 (3,980 style).
            let step = if local >= 1000.0 { 100.0 } else { 10.0 };
            let p = ((local / step).round() * step) as i64;
            let p = p.max(step as i64);
            if charm && p >= 1000 { p - 20 } else { p }
        } else {
            let whole = local.round().max(1.0) as i64;
            if charm && whole >= 2 { whole * 100 - 1 } else { whole * 100 }
        }
    }

    /// Converts a USD amount to minor units without shelf rounding (shipping fees, thresholds).
    pub(crate) fn amount(&self, usd: f64) -> i64 {
        let local = usd * self.usd_rate * self.factor as f64;
        if self.factor == 1 { ((local / 10.0).round() * 10.0) as i64 } else { local.round() as i64 }
    }
}

/// Pre-computed per-product data the generator needs on the hot path.
pub(crate) struct ProductInfo {
    pub cat: usize,
    pub brand: usize,
    pub price_minor: i64,
    pub created_ms: i64,
    pub in_stock: bool,
    pub path: String,
    pub url: String,
    pub image: String,
    pub title: String,
    /// `{product_id, sku, name, category, brand, price}`: the shape used inside `products` arrays.
    pub item: Map<String, Value>,
}

/// Products of one category sorted by creation time with cumulative popularity weights, so that "a popular
/// product that existed at time t" is two binary searches.
pub(crate) struct CategoryIndex {
    pub products: Vec<usize>,
    pub created: Vec<i64>,
    pub cum_weight: Vec<f64>,
    pub median_minor: f64,
    pub queries: Vec<String>,
}

pub(crate) struct Catalog {
    pub products: Vec<Product>,
    pub info: Vec<ProductInfo>,
    pub cats: Vec<CategoryIndex>,
    pub currency: Currency,
}

fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn to_datetime(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

impl Catalog {
    pub(crate) fn build(seed: u64, count: usize, currency_code: &str, start_ms: i64, end_ms: i64) -> Catalog {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, STREAM_CATALOG, 0));
        let currency = Currency::of(currency_code);
        let period_days = ((end_ms - start_ms) as f64 / DAY_MS as f64).max(0.0);
        let mut handles: HashMap<String, u32> = HashMap::new();
        let mut products = Vec::with_capacity(count);
        let mut info = Vec::with_capacity(count);
        let mut popularity = Vec::with_capacity(count);

        for n in 0..count {
            let cat_i = n % CATEGORIES.len();
            let cat = &CATEGORIES[cat_i];
            let sub = pick(&mut rng, cat.subs);
            let brand = *pick(&mut rng, cat.brands);
            let noun = pick(&mut rng, sub.nouns);
            let desc = pick(&mut rng, cat.descriptors);
            let title = if chance(&mut rng, 0.6) {
                format!("{} {desc} {noun}", pick(&mut rng, &STYLES))
            } else {
                format!("{desc} {noun}")
            };
            let base = slug(&title);
            let seen = handles.entry(base.clone()).or_insert(0);
            *seen += 1;
            let handle = if *seen == 1 { base } else { format!("{base}-{seen}") };

            let id = format!("prod_{:05}", n + 1);
            let sku = format!("{}-{}-{:05}", cat.code, sub.code, n + 1);
            let usd = lognormal(&mut rng, cat.median_usd * sub.price_mult, cat.sigma);
            let charm = chance(&mut rng, 0.7);
            let price_minor = currency.shelf_price(usd, charm);
            let compare_at_minor = if chance(&mut rng, 0.18) {
                Some(currency.shelf_price(usd * uniform(&mut rng, 1.15, 1.5), charm).max(price_minor + 1))
            } else {
                None
            };
            let in_stock = !chance(&mut rng, 0.05);
            // First product of each category always predates the period so every category is browsable.
            let r = unit(&mut rng);
            let created_ms = if n < CATEGORIES.len() || r < 0.6 {
                start_ms - (uniform(&mut rng, 30.0, 730.0) * DAY_MS as f64) as i64
            } else if r < 0.9 {
                start_ms + (uniform(&mut rng, 0.0, period_days) * DAY_MS as f64) as i64
            } else {
                // New arrivals in the last tenth of the period.
                start_ms + (uniform(&mut rng, 0.9 * period_days, period_days) * DAY_MS as f64) as i64
            };
            let pop = lognormal(&mut rng, 1.0, 1.1);
            popularity.push(pop);

            let mut tags = vec![slug(sub.name)];
            if chance(&mut rng, 0.5) {
                tags.push((*pick(&mut rng, cat.tags)).to_owned());
            }
            if compare_at_minor.is_some() {
                tags.push("sale".to_owned());
            }
            if pop > 4.5 {
                tags.push("bestseller".to_owned());
            }
            if created_ms >= end_ms - 30 * DAY_MS {
                tags.push("new-arrival".to_owned());
            }
            let path = format!("/products/{handle}");
            let url = format!("{STORE_URL}{path}");
            let image = format!("{IMAGE_URL}/{handle}.jpg");
            let price = currency.major(price_minor);

            let mut item = Map::new();
            item.insert("product_id".into(), Value::from(id.as_str()));
            item.insert("sku".into(), Value::from(sku.as_str()));
            item.insert("name".into(), Value::from(title.as_str()));
            item.insert("category".into(), Value::from(cat.name));
            item.insert("brand".into(), Value::from(BRANDS[brand]));
            item.insert("price".into(), currency.json(price_minor));

            products.push(Product {
                id,
                sku: Some(sku),
                title: title.clone(),
                url: Some(url.clone()),
                image: Some(image.clone()),
                price,
                currency: currency_code.to_owned(),
                compare_at_price: compare_at_minor.map(|m| currency.major(m)),
                categories: vec![cat.name.to_owned(), sub.name.to_owned()],
                brand: Some(BRANDS[brand].to_owned()),
                tags,
                in_stock,
                created_at: to_datetime(created_ms),
            });
            info.push(ProductInfo {
                cat: cat_i,
                brand,
                price_minor,
                created_ms,
                in_stock,
                path,
                url,
                image,
                title,
                item,
            });
        }

        let cats = (0..CATEGORIES.len())
            .map(|c| {
                let mut members: Vec<usize> = (0..count).filter(|&i| info[i].cat == c).collect();
                members.sort_by_key(|&i| (info[i].created_ms, i));
                let created = members.iter().map(|&i| info[i].created_ms).collect();
                let mut acc = 0.0;
                let cum_weight = members
                    .iter()
                    .map(|&i| {
                        acc += popularity[i];
                        acc
                    })
                    .collect();
                let mut prices: Vec<i64> = members.iter().map(|&i| info[i].price_minor).collect();
                prices.sort_unstable();
                let median_minor = prices.get(prices.len() / 2).copied().unwrap_or(1).max(1) as f64;
                let def = &CATEGORIES[c];
                let mut queries: Vec<String> = Vec::new();
                for sub in def.subs {
                    queries.push(sub.name.to_lowercase());
                    for noun in sub.nouns {
                        queries.push(noun.to_lowercase());
                    }
                }
                for d in def.descriptors {
                    queries.push(d.to_lowercase());
                }
                for &b in def.brands {
                    queries.push(BRANDS[b].to_lowercase());
                }
                queries.push(def.name.to_lowercase());
                CategoryIndex { products: members, created, cum_weight, median_minor, queries }
            })
            .collect();
        Catalog { products, info, cats, currency }
    }

    /// A product of category `cat` that existed at `t_ms`, weighted by popularity.
    pub(crate) fn pick_in(&self, rng: &mut ChaCha8Rng, cat: usize, t_ms: i64) -> Option<usize> {
        let ci = self.cats.get(cat)?;
        let k = ci.created.partition_point(|&c| c <= t_ms);
        if k == 0 {
            return None;
        }
        let x = unit(rng) * ci.cum_weight[k - 1];
        let j = ci.cum_weight[..k].partition_point(|&c| c <= x).min(k - 1);
        Some(ci.products[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("Everyday Sunscreen SPF50"), "everyday-sunscreen-spf50");
        assert_eq!(slug("Drip Bags x10 "), "drip-bags-x10");
        assert_eq!(slug("Sumi & Co."), "sumi-co");
    }

    #[test]
    fn yen_prices_are_whole() {
        let c = Currency::of("JPY");
        let p = c.shelf_price(32.0, true);
        assert_eq!(p % 10, 0);
        assert!(p > 3000 && p < 6000, "{p}");
        let usd = Currency::of("USD");
        assert_eq!(usd.shelf_price(24.6, true), 2499);
        assert_eq!(usd.shelf_price(24.4, false), 2400);
    }

    #[test]
    fn catalog_products_validate() {
        let start = 1_735_689_600_000; // 2025-01-01
        let cat = Catalog::build(42, 300, "USD", start, start + 365 * DAY_MS);
        assert_eq!(cat.products.len(), 300);
        let mut ids = std::collections::HashSet::new();
        for p in &cat.products {
            p.validate().expect("generated product is valid");
            assert!(ids.insert(p.id.clone()));
            assert!(p.url.as_deref().is_some_and(|u| u.starts_with("https://shop.example.com/products/")));
        }
        let oos = cat.products.iter().filter(|p| !p.in_stock).count();
        assert!(oos > 3 && oos < 35, "out of stock {oos}");
        let new = cat.products.iter().filter(|p| p.tags.iter().any(|t| t == "new-arrival")).count();
        assert!(new > 5, "new arrivals {new}");
        let cats: std::collections::HashSet<_> = cat.products.iter().map(|p| p.categories[0].clone()).collect();
        assert_eq!(cats.len(), 8);
        let brands: std::collections::HashSet<_> = cat.products.iter().filter_map(|p| p.brand.clone()).collect();
        assert!(brands.len() >= 18, "brands {}", brands.len());
    }
}
