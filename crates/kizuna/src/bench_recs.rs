//! `kizuna bench recs` (issue 5).
//!
//! Part `accuracy`: on ML-100k, for the random 80/20 and the time split, Kizuna's EASE against the Python
//! `implicit` library's ALS with the same split and the same metric code (ours: the peer only trains and
//! ranks; `scripts/bench/implicit_als.py`). Each side's hyperparameters are chosen on a validation split carved
//! out of the training part (20% of each user's training interactions, same kind of split), then trained on
//! the whole training part and scored on the test part. implicit's library defaults are reported too.
//! Training time is the median of `--runs` trainings (implicit times `fit()` inside Python).
//!
//! Part `serving`: a simulated catalog of 50,000 products and 1,000,000 profiles with histories (views, carts,
//! orders) loaded into the counters, the model trained, then requests over a mix of placements at a fixed rate
//! in-process and over loopback HTTP to the real server, with latency percentiles and memory.

use crate::bench_segments::{median, percentile, rss_mib};
use crate::recs::{StrategyResult, evaluate_ease, evaluate_ials, evaluate_popularity, load_dataset};
use anyhow::{Context, Result, bail};
use clap::Args;
use kizuna_recs::ease::EaseSettings;
use kizuna_recs::eval::{self, Dataset, Split, SplitKind};
use kizuna_recs::ials::IalsSettings;
use kizuna_recs::{Signals, Taste};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct RecsArgs {
    /// accuracy, serving or all
    #[arg(long, default_value = "all")]
    part: String,
    #[arg(long, default_value = "../shared/datasets/ml-100k")]
    dataset: PathBuf,
    /// Python with `implicit` installed (scripts/bench-recs makes .venv-bench-recs); `none` skips the peer
    #[arg(long)]
    python: Option<PathBuf>,
    #[arg(long, default_value = "scripts/bench/implicit_als.py")]
    script: PathBuf,
    /// Timed trainings per model (median reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 50_000)]
    products: usize,
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Requests per second offered in the serving part
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of load per serving measurement
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

pub fn run(args: RecsArgs) -> Result<()> {
    if args.rate == 0 || args.seconds == 0 || args.products == 0 || args.profiles == 0 || args.runs == 0 {
        bail!("--rate, --seconds, --products, --profiles and --runs must be at least 1");
    }
    if args.part == "accuracy" || args.part == "all" {
        accuracy(&args)?;
    }
    if args.part == "serving" || args.part == "all" {
        serving(&args)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Accuracy against implicit's ALS

const LAMBDAS: &[f64] = &[50.0, 100.0, 200.0, 500.0, 1000.0];
const HALF_LIVES: &[Option<f32>] = &[None, Some(5.0), Some(10.0), Some(20.0), Some(50.0)];
const ALS_FACTORS: &[u32] = &[32, 64, 128];
const ALS_REGULARIZATION: &[f64] = &[0.1, 1.0, 10.0, 50.0];
const ALS_ALPHA: &[f64] = &[1.0, 5.0, 20.0];

#[derive(Debug, Clone, Copy)]
struct AlsParams {
    factors: u32,
    regularization: f64,
    alpha: f64,
}

fn as_dataset(split: &Split, name: &str) -> Dataset {
    Dataset { name: name.into(), users: split.seen.len(), items: split.items, interactions: split.train.clone() }
}

fn accuracy(args: &RecsArgs) -> Result<()> {
    let data = load_dataset(&args.dataset)?;
    let python = match &args.python {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(".venv-bench-recs/bin/python")).filter(|p| p.exists()),
    };
    let work = tempfile::tempdir()?;
    println!(
        "accuracy: {} ({} users, {} items, {} interactions), 20% held out per user; hyperparameters chosen on a validation split of the training part",
        data.name,
        data.users,
        data.items,
        data.interactions.len()
    );
    let mut report = Vec::new();
    for kind in [SplitKind::Random, SplitKind::Time] {
        let split = eval::split(&data, kind, 42);
        let validation = eval::split(&as_dataset(&split, "train"), kind, 43);
        // EASE: λ and the recency half-life by validation NDCG@10.
        let mut best = (0.0, EaseSettings { neighbors: 0, ..EaseSettings::default() });
        for &lambda in LAMBDAS {
            for &recency_half_life in HALF_LIVES {
                let settings = EaseSettings { lambda, neighbors: 0, recency_half_life, ..EaseSettings::default() };
                let r = evaluate_ease(&validation, &settings)?;
                if r.metrics.ndcg_10 > best.0 {
                    best = (r.metrics.ndcg_10, settings);
                }
            }
        }
        let settings = best.1;
        let mut runs = Vec::new();
        let mut ease = evaluate_ease(&split, &settings)?;
        for _ in 0..args.runs {
            runs.push(evaluate_ease(&split, &settings)?.train_seconds);
        }
        ease.train_seconds = median(&runs);
        ease.strategy = match settings.recency_half_life {
            Some(h) => format!("kizuna EASE (λ={}, recency half-life {h})", settings.lambda),
            None => format!("kizuna EASE (λ={})", settings.lambda),
        };
        // Our iALS: the same grid as the peer's, chosen the same way.
        let mut best_ials: Option<(f64, IalsSettings)> = None;
        for &factors in ALS_FACTORS {
            for &regularization in ALS_REGULARIZATION {
                for &alpha in ALS_ALPHA {
                    let settings = IalsSettings {
                        factors: factors as usize,
                        regularization: regularization as f32,
                        alpha: alpha as f32,
                        ..IalsSettings::default()
                    };
                    let r = evaluate_ials(&validation, &settings);
                    if best_ials.as_ref().is_none_or(|(b, _)| r.metrics.ndcg_10 > *b) {
                        best_ials = Some((r.metrics.ndcg_10, settings));
                    }
                }
            }
        }
        let ials_settings = best_ials.map(|b| b.1).unwrap_or_default();
        let mut runs = Vec::new();
        let mut ials = evaluate_ials(&split, &ials_settings);
        for _ in 0..args.runs {
            runs.push(evaluate_ials(&split, &ials_settings).train_seconds);
        }
        ials.train_seconds = median(&runs);
        ials.strategy = format!(
            "kizuna iALS (factors={}, reg={}, alpha={})",
            ials_settings.factors, ials_settings.regularization, ials_settings.alpha
        );
        let popularity = evaluate_popularity(&split);
        let mut rows = vec![popularity, ease, ials];
        if let Some(python) = &python {
            let mut best: Option<(f64, AlsParams)> = None;
            for &factors in ALS_FACTORS {
                for &regularization in ALS_REGULARIZATION {
                    for &alpha in ALS_ALPHA {
                        let params = AlsParams { factors, regularization, alpha };
                        let (r, _) = run_implicit(python, &args.script, work.path(), &validation, params)?;
                        if best.is_none_or(|(b, _)| r.metrics.ndcg_10 > b) {
                            best = Some((r.metrics.ndcg_10, params));
                        }
                    }
                }
            }
            let params = best.context("no ALS run")?.1;
            let mut runs = Vec::new();
            let mut tuned = None;
            for _ in 0..args.runs {
                let (r, _) = run_implicit(python, &args.script, work.path(), &split, params)?;
                runs.push(r.train_seconds);
                tuned = Some(r);
            }
            let mut tuned = tuned.context("no ALS run")?;
            tuned.train_seconds = median(&runs);
            tuned.strategy = format!(
                "implicit ALS (factors={}, reg={}, alpha={})",
                params.factors, params.regularization, params.alpha
            );
            let defaults = AlsParams { factors: 100, regularization: 0.01, alpha: 1.0 };
            let (mut default_run, version) = run_implicit(python, &args.script, work.path(), &split, defaults)?;
            default_run.strategy = format!("implicit {version} ALS, library defaults (factors=100, reg=0.01, alpha=1)");
            rows.push(tuned);
            rows.push(default_run);
        } else {
            println!("  (no Python with implicit: the peer is skipped; run scripts/bench-recs)");
        }
        println!("\n{} split", kind.as_str());
        println!("| model | Recall@20 | NDCG@10 | NDCG@100 | coverage | training (median of {}) |", args.runs);
        println!("|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} s |",
                r.strategy,
                r.metrics.recall_20,
                r.metrics.ndcg_10,
                r.metrics.ndcg_100,
                r.metrics.coverage,
                r.train_seconds
            );
        }
        report.push(json!({"split": kind.as_str(), "results": rows}));
    }
    println!("\n{}", serde_json::to_string(&json!({"dataset": data.name, "accuracy": report}))?);
    Ok(())
}

/// Trains implicit's ALS on the split's training part in Python, reads its top 100 and scores them here.
fn run_implicit(
    python: &Path,
    script: &Path,
    dir: &Path,
    split: &Split,
    p: AlsParams,
) -> Result<(StrategyResult, String)> {
    let train = dir.join("train.tsv");
    let recs = dir.join("recs.tsv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&train)?);
    for i in &split.train {
        writeln!(file, "{}\t{}\t{}", i.user, i.item, i.weight)?;
    }
    file.flush()?;
    drop(file);
    let out = std::process::Command::new(python)
        .arg(script)
        .arg("--train")
        .arg(&train)
        .args(["--users", &split.seen.len().to_string(), "--items", &split.items.to_string()])
        .arg("--out")
        .arg(&recs)
        .args(["--k", "100", "--factors", &p.factors.to_string()])
        .args(["--regularization", &p.regularization.to_string(), "--alpha", &p.alpha.to_string()])
        .args(["--iterations", "15", "--threads", "2"])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!("implicit_als.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let summary: Value = serde_json::from_slice(&out.stdout).context("implicit_als.py did not print its JSON line")?;
    let mut ranked = vec![Vec::new(); split.seen.len()];
    for line in std::fs::read_to_string(&recs)?.lines() {
        let Some((user, items)) = line.split_once('\t') else { continue };
        let user: usize = user.parse()?;
        ranked[user] = items.split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<Vec<u32>, _>>()?;
    }
    let result = StrategyResult {
        strategy: "implicit ALS".into(),
        metrics: eval::score(split, &ranked),
        train_seconds: summary["train_seconds"].as_f64().context("train_seconds")?,
    };
    Ok((result, summary["implicit_version"].as_str().unwrap_or("?").to_owned()))
}

// ---------------------------------------------------------------------------------------------------------
// Serving latency on a large simulated store

const CATEGORIES: usize = 200;
const CITIES: &[(&str, &str, &str)] = &[
    ("JP", "13", "Tokyo"),
    ("JP", "27", "Osaka"),
    ("JP", "01", "Sapporo"),
    ("US", "CA", "Los Angeles"),
    ("US", "NY", "New York"),
    ("US", "WA", "Seattle"),
    ("FR", "IDF", "Paris"),
    ("DE", "BE", "Berlin"),
    ("GB", "ENG", "London"),
    ("KR", "11", "Seoul"),
];

/// A skewed pick in 0..n (few products sell most).
fn skewed(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let u: f64 = rng.random();
    ((n as f64) * u.powf(3.0)) as usize % n
}

fn build_store(products: usize, profiles: usize, now: i64) -> (Signals, usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut signals = Signals::default();
    let per_category = products.div_ceil(CATEGORIES);
    for i in 0..products {
        let category = i % CATEGORIES;
        let product: kizuna_catalog::Product = serde_json::from_value(json!({
            "id": format!("sku-{i}"),
            "title": format!("Product {i}"),
            "price": 5.0 + (i % 97) as f64 * 3.0,
            "categories": [format!("cat-{category}")],
            "brand": format!("brand-{}", i % 500),
            "in_stock": i % 50 != 0,
            "created_at": chrono::DateTime::from_timestamp(now - (i as i64 % 365) * 86_400, 0),
        }))
        .unwrap_or_else(|_| unreachable!("valid product json"));
        signals.upsert_product(product);
    }
    let mut events = 0usize;
    for profile in 1..=profiles as u64 {
        let favourite = skewed(&mut rng, CATEGORIES);
        let (country, region, city) = CITIES[rng.random_range(0..CITIES.len())];
        signals.set_places(profile, kizuna_recs::place_keys(Some(country), Some(region), Some(city)));
        signals.set_taste(
            profile,
            &Taste {
                categories: vec![(format!("cat-{favourite}"), 0.7)],
                brands: vec![],
                price_band: Some("mid".into()),
            },
        );
        let touches = rng.random_range(3..13);
        let mut basket = Vec::new();
        for _ in 0..touches {
            let item = if rng.random_bool(0.7) {
                // cat-c holds products c, c+200, c+400…: pick within the favourite category.
                favourite + CATEGORIES * skewed(&mut rng, per_category)
            } else {
                skewed(&mut rng, products)
            }
            .min(products - 1);
            let at = now - rng.random_range(0..90 * 86_400);
            let id = format!("sku-{item}");
            let roll: f64 = rng.random();
            let name = if roll < 0.7 {
                "Product Viewed"
            } else if roll < 0.85 {
                "Product Added"
            } else {
                basket.push(json!({"product_id": id}));
                continue;
            };
            signals.apply_event(profile, name, at, &json!({"product_id": id}));
            events += 1;
        }
        if !basket.is_empty() {
            let at = now - rng.random_range(0..90 * 86_400);
            signals.apply_event(
                profile,
                "Order Completed",
                at,
                &json!({"order_id": format!("o{profile}"), "products": basket}),
            );
            events += 1;
        }
    }
    (signals, events)
}

/// A request mix like a storefront's: home, product page, cart, account page, emails.
fn request(rng: &mut ChaCha8Rng, products: usize, profiles: usize) -> (&'static str, kizuna_recs_service::Query) {
    let profile = Some(rng.random_range(1..=profiles as u64));
    let product = format!("sku-{}", skewed(rng, products));
    let q =
        |profile, products: Vec<String>| kizuna_recs_service::Query { profile, products, places: None, limit: None };
    match rng.random_range(0..8) {
        0 => ("home_trending", q(None, vec![])),
        1 => ("product_similar", q(profile, vec![product])),
        2 => ("cart_cross_sell", q(profile, vec![product, format!("sku-{}", skewed(rng, products))])),
        3 | 4 => ("for_you", q(profile, vec![])),
        5 => ("post_purchase", q(profile, vec![])),
        6 => ("recently_viewed", q(profile, vec![])),
        _ => ("near_you", q(profile, vec![])),
    }
}

fn serving(args: &RecsArgs) -> Result<()> {
    let now = chrono::Utc::now();
    let (rss_before, _) = rss_mib();
    let started = Instant::now();
    let (signals, events) = build_store(args.products, args.profiles, now.timestamp());
    let (rss_loaded, _) = rss_mib();
    println!(
        "serving: {} products, {} profiles, {} events applied to the counters in {:.1} s; counters and histories: {:.0} MiB",
        args.products,
        args.profiles,
        events,
        started.elapsed().as_secs_f64(),
        rss_loaded - rss_before
    );
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn kizuna_store::Store> =
        Arc::new(kizuna_store::SqliteStore::open(dir.path(), kizuna_store::Durability::Process)?);
    // The HTTP edge resolves profile ids through the store: give it the profiles (empty states).
    {
        let mut writer = store.writer()?;
        let mut tx = writer.begin()?;
        let empty = kizuna_profiles::ProfileState::default();
        for id in 1..=args.profiles as u64 {
            tx.save_state(id, &empty, now.timestamp_millis())?;
        }
        tx.commit()?;
    }
    let clock: Arc<dyn kizuna_types::Clock> = Arc::new(kizuna_types::SystemClock);
    let settings = kizuna_recs_service::RecsSettings { retrain_minutes: 0, ..Default::default() };
    let recs = kizuna_recs_service::Recommender::start_from(store.clone(), clock.clone(), settings, signals)?;
    let mut builds = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        recs.rebuild_rankings();
        builds.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "rankings rebuild from the counters (bestsellers ×3 windows, trending, new arrivals, 10 places): {:.0} ms median of 5",
        median(&builds)
    );
    let model = recs.train()?;
    let (rss_model, _) = rss_mib();
    println!(
        "model: {} on the {} most interacted products from {} profiles ({} touches; {:.1}% of {} profile–product pairs on modelled products) trained in {:.1} s; process RSS {:.0} MiB",
        model.kind,
        model.items,
        model.users,
        model.interactions,
        100.0 * model.pairs_covered as f64 / model.pairs.max(1) as f64,
        model.pairs,
        model.train_seconds,
        rss_model
    );

    // In-process, paced at the offered rate.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let total = (args.rate * args.seconds) as usize;
    let mut latencies: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut all = Vec::with_capacity(total);
    let mut empty = 0usize;
    let start = Instant::now();
    for n in 0..total {
        let due = start + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (placement, query) = request(&mut rng, args.products, args.profiles);
        let t = Instant::now();
        let answer = recs.recommend(placement, &query)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if answer.items.is_empty() {
            empty += 1;
        }
        latencies.entry(placement).or_default().push(ms);
        all.push(ms);
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    println!("\nin-process: {total} requests at {achieved:.0}/s offered {}/s ({empty} empty answers)", args.rate);
    println!("| placement | requests | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let mut names: Vec<_> = latencies.keys().copied().collect();
    names.sort_unstable();
    for name in names {
        let mut v = latencies.get_mut(name).map(std::mem::take).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        latency_row(name, &v);
    }
    latency_row("**all**", &all);

    // Over loopback HTTP to the real server.
    let runtime = crate::node::runtime()?;
    runtime.block_on(http_load(args, store, clock, recs))?;
    Ok(())
}

/// One latency table row from sorted milliseconds.
fn latency_row(label: &str, sorted: &[f64]) {
    println!(
        "| {label} | {} | {:.3} ms | {:.3} ms | {:.3} ms |",
        sorted.len(),
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        sorted.last().copied().unwrap_or(0.0)
    );
}

async fn http_load(
    args: &RecsArgs,
    store: Arc<dyn kizuna_store::Store>,
    clock: Arc<dyn kizuna_types::Clock>,
    recs: kizuna_recs_service::Recommender,
) -> Result<()> {
    let now = clock.now();
    let source = store.create_source("storefront", false, kizuna_profiles::DataKind::FirstParty, now)?;
    let pipeline =
        kizuna_pipeline::Pipeline::start(store.clone(), kizuna_pipeline::PipelineConfig::default(), clock.clone())?;
    let state = kizuna_server::AppState::new(
        store,
        pipeline,
        clock,
        kizuna_ingest::Limits::default(),
        kizuna_identity::IdentifierConfig::default(),
    )?;
    state.set_recommender(recs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kizuna_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    // The first second opens the client's connections and the server's threads: run 2 s of warm-up at the
    // same rate, reported apart, then measure.
    let warm_up = (args.rate * 2) as usize;
    let total = (args.rate * args.seconds) as usize + warm_up;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    let start = Instant::now();
    for _ in 0..total {
        ticker.tick().await;
        let (placement, query) = request(&mut rng, args.products, args.profiles);
        let mut url = format!("{base}/api/recommendations/{placement}?key={}", source.write_key);
        if let Some(p) = query.profile {
            url.push_str(&format!("&profile_id={p}"));
        }
        if !query.products.is_empty() {
            url.push_str(&format!("&cart={}", query.products.join(",")));
        }
        let client = client.clone();
        let sent_at = start.elapsed().as_secs_f64();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = match client.get(url).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (t.elapsed().as_secs_f64() * 1e3, ok, sent_at)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut warm = Vec::with_capacity(warm_up);
    let mut failed = 0;
    let mut slow = Vec::new();
    for (n, task) in tasks.into_iter().enumerate() {
        let (ms, ok, sent_at) = task.await?;
        if n < warm_up {
            warm.push(ms);
            continue;
        }
        if ms > 20.0 {
            slow.push((sent_at, ms));
        }
        if !ok {
            failed += 1;
        }
        latencies.push(ms);
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    warm.sort_by(f64::total_cmp);
    println!(
        "\nloopback HTTP (load generator in the same process, on the same 2 cores): {} requests measured after {warm_up} of warm-up, {achieved:.0}/s, {failed} failed",
        latencies.len()
    );
    latency_row("warm-up (not counted)", &warm);
    latency_row("all", &latencies);
    if let (Some(first), Some(last)) = (slow.first(), slow.last()) {
        println!("{} measured requests took over 20 ms, sent between {:.1} s and {:.1} s", slow.len(), first.0, last.0);
    }

    let (rss, hwm) = rss_mib();
    println!("process memory after serving: RSS {rss:.0} MiB, peak {hwm:.0} MiB");
    let _ = stop.send(());
    server.await??;
    Ok(())
}
