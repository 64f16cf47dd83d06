use crate::{ItemIx, Secs, Signals, day_of};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How rankings are computed from the counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankingSettings {
    /// Bestseller windows kept ready, in days; a placement asking for another window gets the nearest longer one.
    pub bestseller_windows: Vec<u32>,
    /// Trending compares the activity of the last `trending_recent_days` (each day weighing half the next)
    /// with the daily average of the `trending_baseline_days` before.
    pub trending_recent_days: u32,
    pub trending_baseline_days: u32,
    /// Products created within this many days are new arrivals.
    pub new_arrival_days: u32,
    /// Length of each ranked list kept.
    pub list_len: usize,
}

impl Default for RankingSettings {
    fn default() -> Self {
        Self {
            bestseller_windows: vec![7, 30, 90],
            trending_recent_days: 3,
            trending_baseline_days: 28,
            new_arrival_days: 30,
            list_len: 500,
        }
    }
}

pub type Ranked = Vec<(ItemIx, f32)>;

#[derive(Debug, Clone, Default)]
struct Lists {
    all: Ranked,
    by_category: HashMap<String, Ranked>,
}

/// What the counters imply at one instant, ready to serve.
#[derive(Debug, Clone, Default)]
pub struct Rankings {
    pub generation: u64,
    pub built_at: Secs,
    bestsellers: Vec<(u32, Lists)>,
    trending: Lists,
    new_arrivals: Lists,
    near: HashMap<String, Ranked>,
}

/// The best `len` by score; equal scores keep their order in `scored`.
fn top(mut scored: Vec<(ItemIx, f32)>, len: usize) -> Ranked {
    scored.retain(|(_, s)| *s > 0.0);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(len);
    scored
}

fn lists(signals: &Signals, scored: Vec<(ItemIx, f32)>, len: usize) -> Lists {
    let mut by_category: HashMap<String, Ranked> = HashMap::new();
    let all = top(scored, usize::MAX);
    for &(ix, score) in &all {
        for c in &signals.items.product(ix).categories {
            let list = by_category.entry(c.clone()).or_default();
            if list.len() < len {
                list.push((ix, score));
            }
        }
    }
    let mut all = all;
    all.truncate(len);
    Lists { all, by_category }
}

impl Rankings {
    pub fn build(signals: &Signals, settings: &RankingSettings, now: Secs) -> Rankings {
        let today = day_of(now);
        let n = signals.items.len() as ItemIx;
        let len = settings.list_len;
        let mut windows = settings.bestseller_windows.clone();
        windows.sort_unstable();
        windows.dedup();
        let recent = settings.trending_recent_days.max(1) as i32;
        let baseline = settings.trending_baseline_days.max(1) as i32;
        // One pass over each product's daily counters fills every window.
        let mut best: Vec<Vec<(ItemIx, [f32; 3])>> = vec![Vec::with_capacity(n as usize); windows.len()];
        let mut trending_scores = Vec::with_capacity(n as usize);
        for ix in 0..n {
            let mut sums = vec![[0f32; 3]; windows.len()];
            let mut weighted = 0f32;
            let mut base = 0f32;
            for (day, counts) in signals.daily(ix) {
                let back = today - day;
                if back < 0 {
                    continue;
                }
                for (w, sum) in windows.iter().zip(sums.iter_mut()) {
                    if back < *w as i32 {
                        for k in 0..3 {
                            sum[k] += counts[k];
                        }
                    }
                }
                let activity = counts[0] + 3.0 * counts[1] + 5.0 * counts[2];
                if back < recent {
                    weighted += 0.5f32.powi(back) * activity;
                } else if back < recent + baseline {
                    base += activity;
                }
            }
            for (list, counts) in best.iter_mut().zip(sums) {
                // A product nobody bought is no bestseller.
                if counts[2] > 0.0 {
                    list.push((ix, counts));
                }
            }
            let weights: f32 = (0..recent).map(|b| 0.5f32.powi(b)).sum();
            let rate = weighted / weights;
            let base = base / baseline as f32;
            if rate > base {
                trending_scores.push((ix, rate * ((rate + 1.0) / (base + 1.0)).ln()));
            }
        }
        // Units bought first; carts, then views, only break ties among equal sellers.
        let bestsellers = windows
            .iter()
            .zip(best)
            .map(|(&w, mut counts)| {
                counts.sort_by(|a, b| {
                    (b.1[2], b.1[1], b.1[0])
                        .partial_cmp(&(a.1[2], a.1[1], a.1[0]))
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then(a.0.cmp(&b.0))
                });
                (w, lists(signals, counts.into_iter().map(|(ix, c)| (ix, c[2])).collect(), len))
            })
            .collect();

        let since = now - i64::from(settings.new_arrival_days) * crate::DAY;
        let arrivals = signals
            .items
            .iter()
            .filter_map(|(ix, item)| {
                let created = item.product.created_at?.timestamp();
                // Newer first: the score is the creation time in days, offset so every score is positive.
                (created >= since && created <= now + crate::DAY)
                    .then_some((ix, (created - since) as f32 / 86_400.0 + 1.0))
            })
            .collect();

        let near = signals
            .place_units()
            .map(|(place, counts)| {
                let mut scored: Vec<(ItemIx, f32)> = counts.iter().map(|(i, c)| (*i, *c)).collect();
                scored.sort_unstable_by_key(|x| x.0);
                (place.to_owned(), top(scored, len))
            })
            .collect();

        Rankings {
            generation: signals.generation(),
            built_at: now,
            bestsellers,
            trending: lists(signals, trending_scores, len),
            new_arrivals: lists(signals, arrivals, len),
            near,
        }
    }

    fn pick<'a>(lists: &'a Lists, category: Option<&str>) -> &'a [(ItemIx, f32)] {
        match category {
            Some(c) => lists.by_category.get(c).map_or(&[], Vec::as_slice),
            None => &lists.all,
        }
    }

    /// Bestsellers over the nearest kept window at least `window_days` long (the longest if none is).
    pub fn bestsellers(&self, window_days: u32, category: Option<&str>) -> &[(ItemIx, f32)] {
        let lists = self
            .bestsellers
            .iter()
            .find(|(w, _)| *w >= window_days)
            .or_else(|| self.bestsellers.last())
            .map(|(_, l)| l);
        lists.map_or(&[], |l| Self::pick(l, category))
    }

    pub fn trending(&self, category: Option<&str>) -> &[(ItemIx, f32)] {
        Self::pick(&self.trending, category)
    }

    pub fn new_arrivals(&self, category: Option<&str>) -> &[(ItemIx, f32)] {
        Self::pick(&self.new_arrivals, category)
    }

    /// Most bought by people in a place (`city:Tokyo`, `region:JP/13`, `country:JP`).
    pub fn near(&self, place: &str) -> &[(ItemIx, f32)] {
        self.near.get(place).map_or(&[], Vec::as_slice)
    }
}
