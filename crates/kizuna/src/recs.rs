//! `kizuna recs eval`: offline evaluation of the recommenders on a dataset folder, no server needed.
//!
//! Formats, recognised from the folder's files:
//! - a RecBole atomic `.inter` file (MovieLens 100k as distributed with RecBole): `user_id:token`,
//!   `item_id:token` and optional `timestamp:float` columns; every rating is one interaction of weight 1;
//! - Instacart's `orders.csv` + `order_products__prior.csv`: every basket line is an interaction, ordered by
//!   order number then add-to-cart order.

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use kizuna_recs::ease::EaseSettings;
use kizuna_recs::eval::{self, Dataset, Interaction, Split, SplitKind};
pub use kizuna_recs::eval::{StrategyResult, evaluate_ials, evaluate_popularity};
use kizuna_recs::ials::IalsSettings;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum RecsCommand {
    /// Evaluate popularity and the personalized models (EASE, iALS) on a dataset folder
    Eval {
        /// A dataset folder, e.g. ../shared/datasets/ml-100k
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long, value_enum, default_value_t = SplitArg::Time)]
        split: SplitArg,
        /// Seed of the random split
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// EASE regularisation
        #[arg(long, default_value_t = EaseSettings::default().lambda)]
        lambda: f64,
        /// Weigh each history interaction half as much every N newer ones when scoring (0: all the same).
        /// Default: the product's setting on the time split; 0 on the random split, whose held-out part has no
        /// order
        #[arg(long)]
        recency_half_life: Option<f32>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, Debug)]
pub enum SplitArg {
    Time,
    Random,
}

impl From<SplitArg> for SplitKind {
    fn from(s: SplitArg) -> SplitKind {
        match s {
            SplitArg::Time => SplitKind::Time,
            SplitArg::Random => SplitKind::Random,
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    dataset: String,
    split: &'static str,
    users: usize,
    items: usize,
    interactions: usize,
    results: Vec<StrategyResult>,
}

pub fn run(command: RecsCommand) -> Result<()> {
    match command {
        RecsCommand::Eval { dataset, split, seed, lambda, recency_half_life, json } => {
            let data = load_dataset(&dataset)?;
            let kind = SplitKind::from(split);
            let parts = eval::split(&data, kind, seed);
            let settings = EaseSettings {
                lambda,
                neighbors: 0,
                recency_half_life: match (recency_half_life, kind) {
                    (Some(h), _) => (h > 0.0).then_some(h),
                    (None, SplitKind::Time) => EaseSettings::default().recency_half_life,
                    (None, SplitKind::Random) => None,
                },
                ..EaseSettings::default()
            };
            let results = vec![
                evaluate_popularity(&parts),
                evaluate_ease(&parts, &settings)?,
                evaluate_ials(&parts, &IalsSettings::default()),
            ];
            let report = Report {
                dataset: data.name.clone(),
                split: kind.as_str(),
                users: data.users,
                items: data.items,
                interactions: data.interactions.len(),
                results,
            };
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{}: {} users, {} items, {} interactions; {} split (20% held out per user)",
                    report.dataset, report.users, report.items, report.interactions, report.split
                );
                println!(
                    "{:<12} {:>10} {:>9} {:>9} {:>9} {:>10}",
                    "strategy", "recall@20", "ndcg@10", "ndcg@100", "coverage", "train s"
                );
                for r in &report.results {
                    println!(
                        "{:<12} {:>10.4} {:>9.4} {:>9.4} {:>9.4} {:>10.3}",
                        r.strategy,
                        r.metrics.recall_20,
                        r.metrics.ndcg_10,
                        r.metrics.ndcg_100,
                        r.metrics.coverage,
                        r.train_seconds
                    );
                }
            }
            Ok(())
        }
    }
}

/// EASE on a split, with the CLI's error type.
pub fn evaluate_ease(split: &Split, settings: &EaseSettings) -> Result<StrategyResult> {
    eval::evaluate_ease(split, settings).context("EASE training failed")
}

/// Reads a dataset folder (see the module docs for the formats).
pub fn load_dataset(dir: &Path) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("dataset folder {} does not exist", dir.display());
    }
    let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut inter = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "inter") {
            inter = Some(path);
        }
    }
    if let Some(path) = inter {
        return load_recbole(&name, &path);
    }
    if dir.join("orders.csv").exists() && dir.join("order_products__prior.csv").exists() {
        return load_instacart(&name, dir);
    }
    bail!(
        "{}: no recognised dataset (expected a RecBole .inter file, or Instacart's orders.csv and order_products__prior.csv)",
        dir.display()
    )
}

#[derive(Default)]
struct Ids {
    users: HashMap<String, u32>,
    items: HashMap<String, u32>,
}

impl Ids {
    fn user(&mut self, id: &str) -> u32 {
        let n = self.users.len() as u32;
        *self.users.entry(id.to_owned()).or_insert(n)
    }
    fn item(&mut self, id: &str) -> u32 {
        let n = self.items.len() as u32;
        *self.items.entry(id.to_owned()).or_insert(n)
    }
}

fn load_recbole(name: &str, path: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty .inter file")?.split('\t').collect();
    let column = |prefix: &str| header.iter().position(|h| h.split(':').next() == Some(prefix));
    let user_col = column("user_id").context(".inter file has no user_id column")?;
    let item_col = column("item_id").context(".inter file has no item_id column")?;
    let time_col = column("timestamp");
    let mut ids = Ids::default();
    let mut interactions = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let get =
            |c: usize| fields.get(c).copied().with_context(|| format!("{}:{}: too few columns", path.display(), n + 2));
        let at = match time_col {
            Some(c) => {
                get(c)?.trim().parse::<f64>().with_context(|| format!("{}:{}: bad timestamp", path.display(), n + 2))?
                    as i64
            }
            None => n as i64,
        };
        let user = ids.user(get(user_col)?);
        let item = ids.item(get(item_col)?);
        interactions.push(Interaction { user, item, at, weight: 1.0 });
    }
    Ok(Dataset { name: name.to_owned(), users: ids.users.len(), items: ids.items.len(), interactions })
}

fn load_instacart(name: &str, dir: &Path) -> Result<Dataset> {
    let mut orders: HashMap<String, (String, i64)> = HashMap::new();
    let path = dir.join("orders.csv");
    let mut reader = csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    for (n, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}:{}", path.display(), n + 2))?;
        let number: i64 = row
            .get(3)
            .unwrap_or("")
            .parse()
            .with_context(|| format!("{}:{}: bad order_number", path.display(), n + 2))?;
        orders.insert(row.get(0).unwrap_or("").to_owned(), (row.get(1).unwrap_or("").to_owned(), number));
    }
    let path = dir.join("order_products__prior.csv");
    let mut reader = csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut ids = Ids::default();
    let mut interactions = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}:{}", path.display(), n + 2))?;
        let Some((user, number)) = orders.get(row.get(0).unwrap_or("")) else { continue };
        let position: i64 = row.get(2).unwrap_or("0").parse().unwrap_or(0);
        let user = ids.user(user);
        let item = ids.item(row.get(1).unwrap_or(""));
        interactions.push(Interaction { user, item, at: number * 10_000 + position, weight: 1.0 });
    }
    Ok(Dataset { name: name.to_owned(), users: ids.users.len(), items: ids.items.len(), interactions })
}
