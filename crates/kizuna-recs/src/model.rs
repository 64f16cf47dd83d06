//! The personalized model behind `for_you` and `because_you`: EASE while the catalog's interacted products fit
//! its dense inverse, iALS beyond (see [`ModelChoice`]).

use crate::ItemIx;
use crate::ease::{EaseModel, EaseSettings, history_vector};
use crate::ials::{IalsModel, IalsSettings};
use serde::{Deserialize, Serialize};

/// One value per (user, item): the sum of its weights, capped at `cap`; sorted by user, then item.
pub fn sum_cells(cells: &[(u32, ItemIx, f32)], cap: f32) -> Vec<(u32, ItemIx, f32)> {
    let mut sorted = cells.to_vec();
    sorted.sort_unstable_by_key(|&(u, i, _)| (u, i));
    let mut merged: Vec<(u32, ItemIx, f32)> = Vec::with_capacity(sorted.len());
    for (u, i, w) in sorted {
        match merged.last_mut() {
            Some(last) if last.0 == u && last.1 == i => last.2 += w,
            _ => merged.push((u, i, w)),
        }
    }
    for cell in &mut merged {
        cell.2 = cell.2.min(cap);
    }
    merged
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelChoice {
    /// EASE when at most `ease.max_items` products have interactions, iALS when more do.
    #[default]
    Auto,
    /// EASE on the `ease.max_items` most interacted products (the rest only through other strategies).
    Ease,
    Ials,
}

#[derive(Debug, Clone)]
pub enum CfModel {
    Ease(EaseModel),
    Ials(IalsModel),
}

/// What training needs: `(user, item, weight)` cells and the settings.
pub fn train(
    cells: &[(u32, ItemIx, f32)],
    choice: ModelChoice,
    ease: &EaseSettings,
    ials: &IalsSettings,
) -> Result<CfModel, crate::ease::EaseError> {
    let use_ials = match choice {
        ModelChoice::Ease => false,
        ModelChoice::Ials => true,
        ModelChoice::Auto => {
            let mut items: Vec<ItemIx> = cells.iter().map(|c| c.1).collect();
            items.sort_unstable();
            items.dedup();
            items.len() > ease.max_items
        }
    };
    if !use_ials {
        return EaseModel::train(cells, ease).map(CfModel::Ease);
    }
    if cells.is_empty() {
        return Err(crate::ease::EaseError::Empty);
    }
    // iALS values: the same capped sums as EASE's input.
    let merged = sum_cells(cells, ease.max_value);
    let mut model = IalsModel::train(&merged, ials).without_training_vectors();
    model.max_value = ease.max_value;
    model.recency_half_life = ease.recency_half_life;
    Ok(CfModel::Ials(model))
}

impl CfModel {
    pub fn name(&self) -> &'static str {
        match self {
            CfModel::Ease(_) => "ease",
            CfModel::Ials(_) => "ials",
        }
    }

    pub fn item_count(&self) -> usize {
        match self {
            CfModel::Ease(m) => m.item_count(),
            CfModel::Ials(m) => m.item_count(),
        }
    }

    pub fn knows(&self, item: ItemIx) -> bool {
        match self {
            CfModel::Ease(m) => m.knows(item),
            CfModel::Ials(m) => m.knows(item),
        }
    }

    /// Scores for a history of `(item, weight, time)`; history items included (callers filter).
    pub fn score_history(&self, touches: Vec<(ItemIx, f32, i64)>) -> (Vec<(ItemIx, f32)>, Vec<ItemIx>) {
        let (max_value, half_life) = match self {
            CfModel::Ease(m) => (m.settings.max_value, m.settings.recency_half_life),
            CfModel::Ials(m) => (m.max_value, m.recency_half_life),
        };
        let input = history_vector(touches, max_value, half_life);
        let seen: Vec<ItemIx> = input.iter().map(|x| x.0).collect();
        let scores = match self {
            CfModel::Ease(m) => m.score(&input),
            CfModel::Ials(m) => {
                let user = m.fold_in(&input);
                m.score_candidates(&user, &input)
            }
        };
        (scores, seen)
    }

    /// Products the model associates with one product, best first.
    pub fn neighbors_of(&self, item: ItemIx) -> Vec<(ItemIx, f32)> {
        match self {
            CfModel::Ease(m) => m.neighbors_of(item).collect(),
            CfModel::Ials(m) => m.similar(item, 200),
        }
    }
}
