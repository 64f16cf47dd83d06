//! Implicit ALS (Hu, Koren & Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008),
//! solved by a few conjugate-gradient steps per row (Takács, Pilászy & Tikk 2011), as the Python `implicit`
//! library does. Confidence `1 + alpha·value` on observed pairs, 1 elsewhere; preference 1 on observed pairs.
//! Unlike EASE its cost grows linearly with the catalog, so it serves catalogs too large for a dense item–item
//! inverse (the neighbour lists that make serving fast are quadratic, and kept up to
//! [`MAX_NEIGHBOR_PRODUCTS`]); a person's vector is folded in at request time from their history.

use crate::ItemIx;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IalsSettings {
    pub factors: usize,
    pub regularization: f32,
    pub alpha: f32,
    pub iterations: usize,
    pub cg_steps: usize,
    pub seed: u64,
    /// Closest products kept per product: candidates for a person's picks and "because you…" (0: none kept;
    /// then every product is scored, which is slow on large catalogs).
    pub neighbors: usize,
}

impl Default for IalsSettings {
    fn default() -> Self {
        Self { factors: 64, regularization: 10.0, alpha: 1.0, iterations: 15, cg_steps: 3, seed: 1, neighbors: 100 }
    }
}

/// Item vectors (and the user vectors of training, for evaluation).
#[derive(Debug, Clone, Default)]
pub struct IalsModel {
    pub factors: usize,
    items: Vec<ItemIx>,
    position: HashMap<ItemIx, u32>,
    /// Row-major, one row of `factors` per model position.
    item_vectors: Vec<f32>,
    /// YᵀY + λI, for folding in.
    gram: Vec<f32>,
    user_vectors: Vec<f32>,
    settings: IalsSettings,
    /// Per model position: the closest products by cosine of item vectors (position, similarity), best first.
    neighbors: Vec<Vec<(u32, f32)>>,
    /// How a history becomes input values (set by whoever trains it; see `ease::history_vector`).
    pub max_value: f32,
    pub recency_half_life: Option<f32>,
}

/// Eight independent accumulators, so the compiler can keep them in one vector register (a plain sum is a
/// chain it may not reorder).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len().min(b.len()));
    for (ca, cb) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// `Yᵀ Y + λI` (k×k, row-major).
fn gram(vectors: &[f32], k: usize, lambda: f32) -> Vec<f32> {
    let mut g = vec![0f32; k * k];
    for row in vectors.chunks_exact(k) {
        for a in 0..k {
            let ra = row[a];
            if ra == 0.0 {
                continue;
            }
            axpy(&mut g[a * k..(a + 1) * k], ra, row);
        }
    }
    for d in 0..k {
        g[d * k + d] += lambda;
    }
    g
}

/// A few CG steps on `(G + Σ (c−1) y yᵀ) x = Σ c y` for one row, from `x`'s current value.
fn solve_row(x: &mut [f32], g: &[f32], others: &[f32], k: usize, row: &[(u32, f32)], alpha: f32, steps: usize) {
    let apply = |v: &[f32], out: &mut [f32]| {
        for a in 0..k {
            out[a] = dot(&g[a * k..(a + 1) * k], v);
        }
        for &(j, value) in row {
            let y = &others[j as usize * k..(j as usize + 1) * k];
            let c1 = alpha * value;
            let s = c1 * dot(y, v);
            axpy(out, s, y);
        }
    };
    let mut r = vec![0f32; k];
    for &(j, value) in row {
        axpy(&mut r, 1.0 + alpha * value, &others[j as usize * k..(j as usize + 1) * k]);
    }
    let mut ax = vec![0f32; k];
    apply(x, &mut ax);
    for a in 0..k {
        r[a] -= ax[a];
    }
    let mut p = r.clone();
    let mut rs = dot(&r, &r);
    let mut ap = vec![0f32; k];
    for _ in 0..steps {
        if rs < 1e-20 {
            break;
        }
        apply(&p, &mut ap);
        let denom = dot(&p, &ap);
        if denom <= 0.0 {
            break;
        }
        let step = rs / denom;
        axpy(x, step, &p);
        axpy(&mut r, -step, &ap);
        let next = dot(&r, &r);
        let beta = next / rs;
        for a in 0..k {
            p[a] = r[a] + beta * p[a];
        }
        rs = next;
    }
}

/// Solves every row of `targets` against `others`, on all cores.
fn half_step(targets: &mut [f32], others: &[f32], rows: &[Vec<(u32, f32)>], k: usize, s: &IalsSettings) {
    let g = gram(others, k, s.regularization);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
    let per = rows.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (chunk, rows) in targets.chunks_mut(per * k).zip(rows.chunks(per)) {
            let g = &g;
            scope.spawn(move || {
                for (x, row) in chunk.chunks_exact_mut(k).zip(rows) {
                    solve_row(x, g, others, k, row, s.alpha, s.cg_steps);
                }
            });
        }
    });
}

/// Products beyond which no neighbour lists are kept (their cost is products² × factors).
pub const MAX_NEIGHBOR_PRODUCTS: usize = 200_000;

/// Each item's `keep` nearest items by cosine, from blocked dense products of the normalised item vectors.
fn neighbors(vectors: &[f32], k: usize, keep: usize) -> Vec<Vec<(u32, f32)>> {
    let n = vectors.len() / k.max(1);
    // Quadratic in products: past this many, requests score every product instead (slower, still exact).
    if keep == 0 || n == 0 || n > MAX_NEIGHBOR_PRODUCTS {
        return vec![Vec::new(); n];
    }
    let norms: Vec<f32> = vectors.chunks_exact(k).map(|y| dot(y, y).sqrt().max(1e-12)).collect();
    let normed = faer::Mat::<f32>::from_fn(n, k, |i, j| vectors[i * k + j] / norms[i]);
    let transposed = normed.transpose().to_owned();
    // About 64 MB of similarities at a time.
    let block = (16_000_000 / n).clamp(16, 256);
    let mut out = Vec::with_capacity(n);
    let mut sims = faer::Mat::<f32>::zeros(block.min(n), n);
    let mut line: Vec<(u32, f32)> = Vec::with_capacity(n);
    for start in (0..n).step_by(block) {
        let rows = block.min(n - start);
        let mut dst = sims.as_mut().subrows_mut(0, rows);
        faer::linalg::matmul::matmul(
            dst.as_mut(),
            faer::Accum::Replace,
            normed.as_ref().subrows(start, rows),
            transposed.as_ref(),
            1.0f32,
            faer::get_global_parallelism(),
        );
        for r in 0..rows {
            line.clear();
            let me = start + r;
            line.extend((0..n).filter(|&q| q != me).map(|q| (q as u32, dst[(r, q)])));
            let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if line.len() > keep {
                line.select_nth_unstable_by(keep - 1, order);
                line.truncate(keep);
            }
            line.sort_by(order);
            out.push(line.clone());
        }
    }
    out
}

impl IalsModel {
    /// Trains on `(user, item, value)` (values of the same pair are summed); users are numbered densely from 0.
    pub fn train(interactions: &[(u32, ItemIx, f32)], settings: &IalsSettings) -> IalsModel {
        let k = settings.factors.max(1);
        let mut items: Vec<ItemIx> = interactions.iter().map(|c| c.1).collect();
        items.sort_unstable();
        items.dedup();
        let position: HashMap<ItemIx, u32> = items.iter().enumerate().map(|(p, i)| (*i, p as u32)).collect();
        let users = interactions.iter().map(|c| c.0 as usize + 1).max().unwrap_or(0);
        let mut by_user: Vec<Vec<(u32, f32)>> = vec![Vec::new(); users];
        let mut by_item: Vec<Vec<(u32, f32)>> = vec![Vec::new(); items.len()];
        for (u, i, v) in crate::model::sum_cells(interactions, f32::INFINITY) {
            let p = position[&i];
            by_user[u as usize].push((p, v));
            by_item[p as usize].push((u, v));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let scale = 0.01;
        let mut user_vectors: Vec<f32> = (0..users * k).map(|_| rng.random::<f32>() * scale).collect();
        let mut item_vectors: Vec<f32> = (0..items.len() * k).map(|_| rng.random::<f32>() * scale).collect();
        for _ in 0..settings.iterations {
            half_step(&mut user_vectors, &item_vectors, &by_user, k, settings);
            half_step(&mut item_vectors, &user_vectors, &by_item, k, settings);
        }
        let gram = gram(&item_vectors, k, settings.regularization);
        let neighbors = neighbors(&item_vectors, k, settings.neighbors);
        IalsModel {
            neighbors,
            factors: k,
            items,
            position,
            item_vectors,
            gram,
            user_vectors,
            settings: settings.clone(),
            max_value: f32::INFINITY,
            recency_half_life: None,
        }
    }

    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    pub fn knows(&self, item: ItemIx) -> bool {
        self.position.contains_key(&item)
    }

    pub fn item_at(&self, position: usize) -> ItemIx {
        self.items[position]
    }

    /// A person's vector from their history (values as in training), by the same solve as training.
    pub fn fold_in(&self, history: &[(ItemIx, f32)]) -> Vec<f32> {
        let k = self.factors;
        let row: Vec<(u32, f32)> = history.iter().filter_map(|(i, v)| self.position.get(i).map(|p| (*p, *v))).collect();
        let mut x = vec![0f32; k];
        solve_row(
            &mut x,
            &self.gram,
            &self.item_vectors,
            k,
            &row,
            self.settings.alpha,
            self.settings.cg_steps.max(k.min(16)),
        );
        x
    }

    /// Scores for a user vector of the neighbours of the history's products (two-stage retrieval: candidates
    /// from the kept neighbours, then the exact score), or of every product when no neighbours are kept.
    pub fn score_candidates(&self, user: &[f32], history: &[(ItemIx, f32)]) -> Vec<(ItemIx, f32)> {
        let k = self.factors;
        let mut candidates: Vec<u32> = history
            .iter()
            .filter_map(|(i, _)| self.position.get(i))
            .flat_map(|&p| self.neighbors.get(p as usize).into_iter().flatten().map(|&(q, _)| q))
            .collect();
        if candidates.is_empty() {
            let mut dense = Vec::new();
            self.score_dense(user, &mut dense);
            return dense.iter().enumerate().map(|(p, s)| (self.items[p], *s)).collect();
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .map(|q| (self.items[q as usize], dot(user, &self.item_vectors[q as usize * k..(q as usize + 1) * k])))
            .collect()
    }

    /// Scores of every modelled product for a user vector, by model position.
    pub fn score_dense(&self, user: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend(self.item_vectors.chunks_exact(self.factors).map(|y| dot(user, y)));
    }

    /// Drops the training users' vectors: serving folds people in from their histories and never reads them.
    pub fn without_training_vectors(mut self) -> Self {
        self.user_vectors = Vec::new();
        self
    }

    /// The training vector of user `u` (evaluation).
    pub fn user_vector(&self, u: usize) -> &[f32] {
        let k = self.factors;
        self.user_vectors.get(u * k..(u + 1) * k).unwrap_or(&[])
    }

    /// Products closest to one product (cosine of item vectors), best first.
    pub fn similar(&self, item: ItemIx, limit: usize) -> Vec<(ItemIx, f32)> {
        let Some(&p) = self.position.get(&item) else { return Vec::new() };
        if let Some(list) = self.neighbors.get(p as usize).filter(|l| !l.is_empty()) {
            return list.iter().take(limit).map(|&(q, s)| (self.items[q as usize], s)).collect();
        }
        let k = self.factors;
        let anchor = &self.item_vectors[p as usize * k..(p as usize + 1) * k];
        let mut scored: Vec<(ItemIx, f32)> = self
            .item_vectors
            .chunks_exact(k)
            .enumerate()
            .filter(|(q, _)| *q != p as usize)
            .map(|(q, y)| (self.items[q], dot(anchor, y)))
            .collect();
        let order = |a: &(ItemIx, f32), b: &(ItemIx, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if scored.len() > limit && limit > 0 {
            scored.select_nth_unstable_by(limit - 1, order);
            scored.truncate(limit);
        }
        scored.sort_by(order);
        scored
    }
}
