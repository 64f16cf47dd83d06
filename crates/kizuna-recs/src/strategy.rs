use crate::model::CfModel;
use crate::recommend::Request;
use crate::{ItemIx, Kind, Rankings, Signals};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How a placement finds candidates. The JSON form is `{"type": "bestsellers", "window_days": 30}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// Most units sold over a window; per category: the context product's, else the profile's favourite.
    Bestsellers {
        #[serde(default = "thirty")]
        window_days: u32,
        #[serde(default)]
        per_category: bool,
    },
    /// Rising activity, recent days weighing most.
    Trending {
        #[serde(default)]
        per_category: bool,
    },
    /// Newest products first (by `created_at`).
    NewArrivals {
        #[serde(default)]
        per_category: bool,
    },
    /// What this person viewed, newest first.
    RecentlyViewed,
    /// Products like the context products: categories, brand, price band, tags, and co-views.
    SimilarItems,
    /// Products bought in the same baskets as the context products (cart cross-sell, bundles).
    FrequentlyBoughtTogether {
        #[serde(default = "two")]
        min_support: u32,
    },
    /// Personalized picks from the collaborative model, learned from views, carts and purchases.
    ForYou,
    /// Products the model associates with the person's latest purchases or views.
    BecauseYou {
        #[serde(default)]
        of: BecauseOf,
    },
    /// Products this person re-buys that are due by their own interval (or the product's usual one).
    Replenishment {
        #[serde(default = "due_ratio")]
        due_ratio: f64,
    },
    /// Most bought by people in the same city, region or country.
    PopularNearYou,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BecauseOf {
    #[default]
    Bought,
    Viewed,
}

fn thirty() -> u32 {
    30
}
fn two() -> u32 {
    2
}
fn due_ratio() -> f64 {
    0.8
}

/// A candidate: item, score (higher is better), reason.
pub(crate) type Candidate = (ItemIx, f32, String);

pub(crate) struct Sources<'a> {
    pub signals: &'a Signals,
    pub rankings: &'a Rankings,
    pub model: Option<&'a CfModel>,
}

/// Context products `similar_items` looks at (each brings up to 5,000 of its categories' products).
const SIMILAR_CONTEXT: usize = 3;

/// The price band of a price, as profiles name theirs.
pub fn price_band(price: f64) -> &'static str {
    match price {
        p if p < 25.0 => "low",
        p if p < 75.0 => "mid",
        p if p < 200.0 => "high",
        _ => "premium",
    }
}

fn jaccard(a: &[String], b: &[String]) -> f32 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let shared = a.iter().filter(|x| b.contains(x)).count();
    shared as f32 / (a.len() + b.len() - shared) as f32
}

/// Most recent distinct items of a kind in a history, newest first.
fn recent_items(signals: &Signals, request: &Request<'_>, kinds: &[Kind], limit: usize) -> Vec<ItemIx> {
    let mut out = Vec::new();
    let Some(history) = request.profile.and_then(|p| signals.history(p)) else { return out };
    for touch in history.touches().rev() {
        if kinds.contains(&touch.kind) && !out.contains(&touch.item) {
            out.push(touch.item);
            if out.len() == limit {
                break;
            }
        }
    }
    out
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Bestsellers { .. } => "bestsellers",
            Strategy::Trending { .. } => "trending",
            Strategy::NewArrivals { .. } => "new_arrivals",
            Strategy::RecentlyViewed => "recently_viewed",
            Strategy::SimilarItems => "similar_items",
            Strategy::FrequentlyBoughtTogether { .. } => "frequently_bought_together",
            Strategy::ForYou => "for_you",
            Strategy::BecauseYou { .. } => "because_you",
            Strategy::Replenishment { .. } => "replenishment",
            Strategy::PopularNearYou => "popular_near_you",
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Strategy::Bestsellers { window_days, .. } if !(1..=3650).contains(window_days) => {
                Err("window_days must be between 1 and 3650".into())
            }
            Strategy::FrequentlyBoughtTogether { min_support } if *min_support == 0 => {
                Err("min_support must be at least 1".into())
            }
            Strategy::Replenishment { due_ratio }
                if !(due_ratio.is_finite() && *due_ratio > 0.0 && *due_ratio <= 10.0) =>
            {
                Err("due_ratio must be a number in (0, 10]".into())
            }
            _ => Ok(()),
        }
    }

    /// The category a per-category list uses: the first context product's, else the person's favourite.
    fn category<'r>(signals: &'r Signals, request: &'r Request<'_>) -> Option<&'r str> {
        request
            .context
            .iter()
            .find_map(|&ix| signals.items.product(ix).categories.first().map(String::as_str))
            .or_else(|| request.taste.and_then(|t| t.categories.first()).map(|(c, _)| c.as_str()))
    }

    /// Candidates, best-first for ranked lists; others in product order, so that equal scores always come out
    /// in the same order.
    pub(crate) fn candidates(&self, sources: &Sources<'_>, request: &Request<'_>, want: usize) -> Vec<Candidate> {
        let mut out = self.find(sources, request, want);
        let ranked = matches!(
            self,
            Strategy::Bestsellers { .. }
                | Strategy::Trending { .. }
                | Strategy::NewArrivals { .. }
                | Strategy::RecentlyViewed
                | Strategy::PopularNearYou
        );
        if !ranked {
            out.sort_by_key(|c| c.0);
        }
        out
    }

    fn find(&self, sources: &Sources<'_>, request: &Request<'_>, want: usize) -> Vec<Candidate> {
        let signals = sources.signals;
        let title = |ix: ItemIx| signals.items.product(ix).title.clone();
        let ranked = |list: &[(ItemIx, f32)], reason: &str| -> Vec<Candidate> {
            list.iter().map(|&(ix, s)| (ix, s, reason.to_owned())).collect()
        };
        match self {
            Strategy::Bestsellers { window_days, per_category } => {
                let category = per_category.then(|| Self::category(signals, request)).flatten();
                let reason = category.map_or("bestseller".to_owned(), |c| format!("bestseller in {c}"));
                ranked(sources.rankings.bestsellers(*window_days, category), &reason)
            }
            Strategy::Trending { per_category } => {
                let category = per_category.then(|| Self::category(signals, request)).flatten();
                let reason = category.map_or("trending now".to_owned(), |c| format!("trending in {c}"));
                ranked(sources.rankings.trending(category), &reason)
            }
            Strategy::NewArrivals { per_category } => {
                let category = per_category.then(|| Self::category(signals, request)).flatten();
                ranked(sources.rankings.new_arrivals(category), "new arrival")
            }
            Strategy::RecentlyViewed => {
                let items = recent_items(signals, request, &[Kind::View], want * 3);
                let n = items.len() as f32;
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, ix)| (ix, n - i as f32, "you viewed this recently".to_owned()))
                    .collect()
            }
            Strategy::SimilarItems => self.similar(signals, request),
            Strategy::FrequentlyBoughtTogether { min_support } => {
                // Per candidate: summed score, and the context product that contributed most (for the reason).
                let mut scores: HashMap<ItemIx, (f32, f32, ItemIx)> = HashMap::new();
                let total = signals.baskets() as f32;
                for &a in &request.context {
                    let n_a = signals.baskets_with(a) as f32;
                    for (b, n_ab) in signals.co_purchase(a) {
                        if n_ab < *min_support || b == a {
                            continue;
                        }
                        let n_b = signals.baskets_with(b) as f32;
                        let confidence = n_ab as f32 / n_a;
                        let lift = n_ab as f32 * total / (n_a * n_b);
                        if lift <= 1.0 {
                            continue;
                        }
                        // Confidence finds what goes with the product; the square root of lift discounts
                        // products that are in every basket anyway.
                        let score = confidence * lift.sqrt();
                        let slot = scores.entry(b).or_insert((0.0, 0.0, a));
                        if score > slot.1 {
                            slot.1 = score;
                            slot.2 = a;
                        }
                        slot.0 += score;
                    }
                }
                scores.into_iter().map(|(b, (s, _, a))| (b, s, format!("bought together with {}", title(a)))).collect()
            }
            Strategy::ForYou => {
                let (Some(model), Some(history)) = (sources.model, request.profile.and_then(|p| signals.history(p)))
                else {
                    return Vec::new();
                };
                let touches = history.touches().map(|t| (t.item, t.kind.weight(), t.at)).collect();
                let (scores, seen) = model.score_history(touches);
                scores
                    .into_iter()
                    .filter(|(ix, s)| *s > 0.0 && seen.binary_search(ix).is_err())
                    .map(|(ix, s)| (ix, s, "picked for you".to_owned()))
                    .collect()
            }
            Strategy::BecauseYou { of } => {
                let (kinds, verb): (&[Kind], &str) = match of {
                    BecauseOf::Bought => (&[Kind::Purchase], "bought"),
                    BecauseOf::Viewed => (&[Kind::View, Kind::Cart], "viewed"),
                };
                let anchors = recent_items(signals, request, kinds, 3);
                let mut scores: HashMap<ItemIx, (f32, ItemIx)> = HashMap::new();
                for (rank, &anchor) in anchors.iter().enumerate() {
                    let discount = 1.0 - 0.2 * rank as f32;
                    let related: Vec<(ItemIx, f32)> = match sources.model.filter(|m| m.knows(anchor)) {
                        Some(model) => model.neighbors_of(anchor),
                        None if *of == BecauseOf::Bought => {
                            signals.co_purchase(anchor).map(|(b, n)| (b, n as f32)).collect()
                        }
                        None => signals.co_views(anchor).map(|(b, n)| (b, n as f32)).collect(),
                    };
                    let max = related.iter().map(|r| r.1).fold(0.0f32, f32::max);
                    for (b, w) in related {
                        if b == anchor || anchors.contains(&b) || max <= 0.0 {
                            continue;
                        }
                        let slot = scores.entry(b).or_insert((0.0, anchor));
                        slot.0 += discount * w / max;
                    }
                }
                scores.into_iter().map(|(b, (s, a))| (b, s, format!("because you {verb} {}", title(a)))).collect()
            }
            Strategy::Replenishment { due_ratio } => {
                let Some(history) = request.profile.and_then(|p| signals.history(p)) else { return Vec::new() };
                let mut bought: HashMap<ItemIx, Vec<i64>> = HashMap::new();
                for t in history.touches().filter(|t| t.kind == Kind::Purchase) {
                    bought.entry(t.item).or_default().push(t.at);
                }
                let mut out = Vec::new();
                for (item, times) in bought {
                    let Some(interval) = replenish_interval(signals, item, &times) else { continue };
                    let Some(&last) = times.last() else { continue };
                    let ratio = (request.now - last) as f64 / (interval * crate::DAY as f64);
                    if ratio >= *due_ratio {
                        let score = 1.0 / (1.0 + (ratio - 1.0).abs());
                        out.push((
                            item,
                            score as f32,
                            format!("time to restock (about every {} days)", interval.round()),
                        ));
                    }
                }
                out
            }
            Strategy::PopularNearYou => {
                let mut out: Vec<Candidate> = Vec::new();
                for (tier, place) in request.places.iter().enumerate() {
                    let label = place.split_once(':').map_or(place.as_str(), |(_, v)| v);
                    let label = label.rsplit('/').next().unwrap_or(label);
                    let list = sources.rankings.near(place);
                    let max = list.first().map_or(1.0, |x| x.1);
                    for &(ix, s) in list {
                        if !out.iter().any(|c| c.0 == ix) {
                            // Nearer places first: each tier's scores sit above the next one's.
                            out.push((
                                ix,
                                (request.places.len() - tier) as f32 + s / max * 0.99,
                                format!("popular in {label}"),
                            ));
                        }
                    }
                }
                out
            }
        }
    }

    fn similar(&self, signals: &Signals, request: &Request<'_>) -> Vec<Candidate> {
        let mut scores: HashMap<ItemIx, (f32, ItemIx)> = HashMap::new();
        // The first few context products say enough, and bound the work of a long cart.
        for &p in request.context.iter().take(SIMILAR_CONTEXT) {
            let base = signals.items.product(p);
            let co_views: HashMap<ItemIx, u32> = signals.co_views(p).collect();
            let max_co = co_views.values().copied().max().unwrap_or(0).max(1) as f32;
            let mut pool: Vec<ItemIx> = co_views.keys().copied().collect();
            for c in &base.categories {
                pool.extend(signals.items.in_category(c).iter().take(5_000));
            }
            pool.sort_unstable();
            pool.dedup();
            let band = price_band(base.price);
            for c in pool {
                if c == p {
                    continue;
                }
                let other = signals.items.product(c);
                let mut s = 2.0 * jaccard(&base.categories, &other.categories) + jaccard(&base.tags, &other.tags);
                if base.brand.is_some() && base.brand == other.brand {
                    s += 1.0;
                }
                if price_band(other.price) == band {
                    s += 0.5;
                }
                s += 3.0 * co_views.get(&c).copied().unwrap_or(0) as f32 / max_co;
                let slot = scores.entry(c).or_insert((0.0, p));
                slot.0 += s;
            }
        }
        scores.into_iter().map(|(c, (s, p))| (c, s, format!("similar to {}", signals.items.product(p).title))).collect()
    }
}

/// Days between re-orders of a product for one person: their own mean gap when they re-bought it at least
/// twice (a day apart or more); for a product people re-buy ([`Signals::replenishable`]), their single gap or,
/// without one, the product's mean across customers.
pub(crate) fn replenish_interval(signals: &Signals, item: ItemIx, times: &[i64]) -> Option<f64> {
    let gaps: Vec<f64> =
        times.windows(2).map(|w| (w[1] - w[0]) as f64 / crate::DAY as f64).filter(|g| *g >= 1.0).collect();
    let own = (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64);
    if gaps.len() >= 2 {
        return own;
    }
    if !signals.replenishable(item) {
        return None;
    }
    own.or_else(|| signals.repeat_interval(item).map(|(mean, _)| mean))
}
