//! Offline evaluation with the literature's protocol: hold out part of each user's interactions, rank every
//! item the user has not interacted with in training, and score the ranking against the held-out items.
//!
//! - Splits: `time` holds out each user's most recent 20% (at least one), `random` a seeded random 20% per
//!   user (the "80/20 per user" split of Liang et al. 2018 and most EASE/ALS papers). Users with fewer than two
//!   interactions stay in training only; held-out items the user also has in training are dropped (they are
//!   never recommended again, so no model could hit them).
//! - Metrics, averaged over users with held-out items: Recall@20 = hits in the top 20 / min(20, held out)
//!   (the normalised recall of Liang et al.), NDCG@10 and NDCG@100 with binary relevance, and catalog coverage =
//!   distinct items in anyone's top 20 / all items.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    pub user: u32,
    pub item: u32,
    /// Any ordered time (seconds, or an order number): only the order matters.
    pub at: i64,
    pub weight: f32,
}

/// Users and items numbered densely from 0.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub users: usize,
    pub items: usize,
    pub interactions: Vec<Interaction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    Time,
    Random,
}

impl SplitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitKind::Time => "time",
            SplitKind::Random => "random",
        }
    }
}

pub const HOLDOUT: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct Split {
    pub train: Vec<Interaction>,
    /// Per user: held-out items (distinct, not in the user's training set).
    pub test: Vec<Vec<u32>>,
    /// Per user: training items (distinct, sorted).
    pub seen: Vec<Vec<u32>>,
    pub items: usize,
}

pub fn split(dataset: &Dataset, kind: SplitKind, seed: u64) -> Split {
    let mut by_user: Vec<Vec<Interaction>> = vec![Vec::new(); dataset.users];
    for i in &dataset.interactions {
        by_user[i.user as usize].push(*i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(dataset.interactions.len());
    let mut test = vec![Vec::new(); dataset.users];
    let mut seen = vec![Vec::new(); dataset.users];
    for (user, mut list) in by_user.into_iter().enumerate() {
        let held = if list.len() < 2 { 0 } else { ((list.len() as f64 * HOLDOUT).round() as usize).max(1) };
        match kind {
            SplitKind::Time => list.sort_by_key(|i| (i.at, i.item)),
            SplitKind::Random => {
                list.sort_by_key(|i| (i.at, i.item));
                list.shuffle(&mut rng);
            }
        }
        let cut = list.len() - held;
        let mut user_seen: Vec<u32> = list[..cut].iter().map(|i| i.item).collect();
        user_seen.sort_unstable();
        user_seen.dedup();
        let mut held_items: Vec<u32> =
            list[cut..].iter().map(|i| i.item).filter(|i| user_seen.binary_search(i).is_err()).collect();
        held_items.sort_unstable();
        held_items.dedup();
        train.extend_from_slice(&list[..cut]);
        test[user] = held_items;
        seen[user] = user_seen;
    }
    Split { train, test, seen, items: dataset.items }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    #[serde(rename = "recall@20")]
    pub recall_20: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    #[serde(rename = "ndcg@100")]
    pub ndcg_100: f64,
    pub coverage: f64,
    pub users: usize,
}

fn dcg(ranked: &[u32], relevant: &[u32], k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, item)| relevant.binary_search(item).is_ok())
        .map(|(r, _)| 1.0 / ((r + 2) as f64).log2())
        .sum()
}

fn ideal_dcg(relevant: usize, k: usize) -> f64 {
    (0..relevant.min(k)).map(|r| 1.0 / ((r + 2) as f64).log2()).sum()
}

/// Scores rankings: `ranked[u]` is user u's top list (at least 100 items where possible, best first, none of
/// the user's training items); users without held-out items are skipped.
pub fn score(split: &Split, ranked: &[Vec<u32>]) -> Metrics {
    let mut recall = 0.0;
    let mut n10 = 0.0;
    let mut n100 = 0.0;
    let mut users = 0usize;
    let mut shown: HashSet<u32> = HashSet::new();
    for (user, relevant) in split.test.iter().enumerate() {
        if relevant.is_empty() {
            continue;
        }
        let list = ranked.get(user).map_or(&[][..], Vec::as_slice);
        let hits = list.iter().take(20).filter(|i| relevant.binary_search(i).is_ok()).count();
        recall += hits as f64 / relevant.len().min(20) as f64;
        n10 += dcg(list, relevant, 10) / ideal_dcg(relevant.len(), 10);
        n100 += dcg(list, relevant, 100) / ideal_dcg(relevant.len(), 100);
        shown.extend(list.iter().take(20));
        users += 1;
    }
    let d = users.max(1) as f64;
    Metrics {
        recall_20: recall / d,
        ndcg_10: n10 / d,
        ndcg_100: n100 / d,
        coverage: shown.len() as f64 / split.items.max(1) as f64,
        users,
    }
}

/// The `k` best-scored items, skipping `seen` (sorted), best first; ties by item number.
pub fn top_k(scores: &[f32], seen: &[u32], k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    let mut candidates: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u32, *s))
        .filter(|(i, _)| seen.binary_search(i).is_err())
        .collect();
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if candidates.len() > k {
        candidates.select_nth_unstable_by(k - 1, order);
        candidates.truncate(k);
    }
    candidates.sort_by(order);
    candidates.into_iter().map(|(i, _)| i).collect()
}

/// The sanity baseline: every user gets the items most users interacted with in training.
pub fn popularity(split: &Split, k: usize) -> Vec<Vec<u32>> {
    let mut counts = vec![0f32; split.items];
    for seen in &split.seen {
        for &i in seen {
            counts[i as usize] += 1.0;
        }
    }
    split.seen.iter().map(|seen| top_k(&counts, seen, k)).collect()
}

/// The top `k` of a model's scores by model position, over all items (items the model lacks rank last).
fn top_of_model(dense: &[f32], item_at: impl Fn(usize) -> u32, scores: &mut [f32], seen: &[u32], k: usize) -> Vec<u32> {
    scores.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
    for (p, s) in dense.iter().enumerate() {
        scores[item_at(p) as usize] = *s;
    }
    top_k(scores, seen, k)
}

/// Ranks every user with a trained model over all items (their training interactions as the history).
pub fn rank_with(
    split: &Split,
    model: &crate::ease::EaseModel,
    settings: &crate::ease::EaseSettings,
    k: usize,
) -> Vec<Vec<u32>> {
    let mut history: Vec<Vec<(u32, f32, i64)>> = vec![Vec::new(); split.seen.len()];
    for i in &split.train {
        history[i.user as usize].push((i.item, i.weight, i.at));
    }
    let mut dense = Vec::new();
    let mut scores = vec![0f32; split.items];
    history
        .into_iter()
        .zip(&split.seen)
        .map(|(h, seen)| {
            let input = crate::ease::history_vector(h, settings.max_value, settings.recency_half_life);
            model.score_dense(&input, &mut dense);
            top_of_model(&dense, |p| model.item_at(p), &mut scores, seen, k)
        })
        .collect()
}

/// Ranks every user with an iALS model's training vectors over all items.
pub fn rank_ials(split: &Split, model: &crate::ials::IalsModel, k: usize) -> Vec<Vec<u32>> {
    let mut dense = Vec::new();
    let mut scores = vec![0f32; split.items];
    split
        .seen
        .iter()
        .enumerate()
        .map(|(u, seen)| {
            let user = model.user_vector(u);
            if user.is_empty() {
                return Vec::new();
            }
            model.score_dense(user, &mut dense);
            top_of_model(&dense, |p| model.item_at(p), &mut scores, seen, k)
        })
        .collect()
}

/// One strategy's offline result: the metrics and how long training took.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    pub strategy: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    pub train_seconds: f64,
}

/// The popularity baseline on a split.
pub fn evaluate_popularity(split: &Split) -> StrategyResult {
    let started = std::time::Instant::now();
    let ranked = popularity(split, 100);
    StrategyResult {
        strategy: "popularity".into(),
        metrics: score(split, &ranked),
        train_seconds: started.elapsed().as_secs_f64(),
    }
}

/// EASE trained on the split's training part; the time is training alone (ranking every user is not in it).
pub fn evaluate_ease(
    split: &Split,
    settings: &crate::ease::EaseSettings,
) -> Result<StrategyResult, crate::ease::EaseError> {
    let cells: Vec<(u32, u32, f32)> = split.train.iter().map(|i| (i.user, i.item, i.weight)).collect();
    let started = std::time::Instant::now();
    let model = crate::ease::EaseModel::train(&cells, settings)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let ranked = rank_with(split, &model, settings, 100);
    Ok(StrategyResult { strategy: "ease".into(), metrics: score(split, &ranked), train_seconds })
}

/// Implicit ALS trained on the split's training part (values as given); the time is training alone.
pub fn evaluate_ials(split: &Split, settings: &crate::ials::IalsSettings) -> StrategyResult {
    let cells: Vec<(u32, u32, f32)> = split.train.iter().map(|i| (i.user, i.item, i.weight)).collect();
    let started = std::time::Instant::now();
    let model = crate::ials::IalsModel::train(&cells, settings);
    let train_seconds = started.elapsed().as_secs_f64();
    let ranked = rank_ials(split, &model, 100);
    StrategyResult { strategy: "ials".into(), metrics: score(split, &ranked), train_seconds }
}
