//! `kizuna bench segments`: full build of a segment over a large simulated store, and the latency from event
//! acknowledgement to `Segment Entered` under sustained ingest with many active segments.
//!
//! * Part A (pure engine, in memory): N profiles (default 1,000,000) with exactly N × `--events-per-profile`
//!   commerce events (default 20 → 20,000,000) generated from a seed, loaded into a `kizuna-segments` engine
//!   whose interest covers the 50 benchmark segments. Times the full build (`Engine::upsert`) of a segment of six
//!   mixed conditions at ¼, ½ and all of the profiles, the same condition's parallel evaluation alone
//!   (`Engine::preview`), recomputing 1, 10 and 50 segments (`Engine::evaluate_all`), building each of the 50 in
//!   turn, and the cost of applying new events with 1, 10 and 50 segments; reports segment-state memory.
//! * Part B (real node, in-process): the durable SQLite store (`Durability::Full`) in a fresh directory, the
//!   ingest pipeline and the segment thread wired as in `kizuna serve`, 50 active segments, a warm-up store,
//!   then open-loop ingest at a target rate. Latency of each `Segment Entered` record = the instant a
//!   subscriber received it − the instant the `Pipeline::ingest` call that carried its causing event returned.

use crate::config::Config;
use anyhow::{Context, Result};
use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::{Args, ValueEnum};
use kizuna_identity::{IdKind, Identifier};
use kizuna_membership::{Membership, MembershipSettings};
use kizuna_pipeline::{Pipeline, PipelineConfig};
use kizuna_profiles::DataKind;
use kizuna_segments::engine::{Change, Engine, SegmentDefinition};
use kizuna_segments::summary::{NewEvent, ProfileData};
use kizuna_segments::{Condition, parse};
use kizuna_store::{Durability, SegmentTransitionRow, SqliteStore, Store};
use kizuna_types::{Clock, SystemClock};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Both,
    /// Full build on the in-memory engine only
    Build,
    /// Latency under load only
    Latency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreSync {
    /// fsync before every acknowledgement and every recorded transition (the bar is measured with this)
    Full,
    /// no fsync (survives a killed process, not a power cut): shows what fsync costs
    Process,
}

#[derive(Debug, Clone, Args)]
pub struct SegmentsArgs {
    /// Which part to run
    #[arg(long, value_enum, default_value_t = Part::Both)]
    part: Part,
    /// Part A: profiles in the simulated store (built at ¼, ½ and all of them)
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Part A: mean events per profile; counts vary from 3 to 60 (×mean/20) and total exactly profiles × mean
    #[arg(long, default_value_t = 20)]
    events_per_profile: usize,
    /// Part A: timed full builds at each store size (the median is reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Part A: new events applied to measure the incremental cost at 1, 10 and 50 segments
    #[arg(long, default_value_t = 50_000)]
    probe_events: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Part B: target ingest rate, events per second
    #[arg(long, default_value_t = 10_000)]
    rate: usize,
    /// Part B: seconds of sustained ingest
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Part B: events per ingest call (whole sessions, so a call may carry a few more)
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Part B: users already in the store before the run (some come back during it)
    #[arg(long, default_value_t = 20_000)]
    warm_users: usize,
    /// Part B: active segments (the first N of the 50)
    #[arg(long, default_value_t = 50)]
    segments: usize,
    /// Part B: store durability
    #[arg(long, value_enum, default_value_t = StoreSync::Full)]
    durability: StoreSync,
    /// Part B: share of sessions in the run from returning users (the rest are new users)
    #[arg(long, default_value_t = 0.2)]
    returning: f64,
    /// Part B: data directory (default: a new directory under the system temp dir, removed afterwards)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the figures as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------------------
// The segments

const SIX_NAME: &str = "six-conditions";

/// Traits, an event count in a window, a sequence, geography, consent and a computed attribute.
const SIX: &str = r#"traits.country = "JP"
  and count of event "Order Completed" in last 180d >= 2
  and did "Checkout Started" then not "Order Completed" within 1h in last 90d
  and near 35.68, 139.76 within 50 km
  and consent email for marketing
  and computed.price_band in ("mid", "high", "premium")"#;

/// The 50 active segments (the six-condition one first). Segments referred to come before those that refer.
const SEGMENTS: &[(&str, &str)] = &[
    (SIX_NAME, SIX),
    ("browse-abandoners", r#"event "Product Viewed" in last 7d and not event "Order Completed" in last 7d"#),
    ("cart-abandoners-1h", r#"did "Checkout Started" then not "Order Completed" within 1h in last 7d"#),
    ("add-no-checkout-30m", r#"did "Product Added" then not "Checkout Started" within 30m in last 3d"#),
    ("repeat-buyers", r#"count of event "Order Completed" in last 90d >= 2"#),
    ("first-time-buyers", r#"count of event "Order Completed" in last 365d = 1"#),
    ("big-spenders-30d", r#"sum total of event "Order Completed" in last 30d >= 200"#),
    ("shoe-spenders", r#"sum total of event "Order Completed" where category = "shoes" in last 30d >= 100"#),
    ("bag-browsers", r#"count of event "Product Viewed" where category = "bags" in last 14d >= 2"#),
    ("high-intent", r#"count of event "Product Added" in last 7d >= 2 and not event "Order Completed" in last 7d"#),
    ("active-7d", r#"event "page" in last 7d"#),
    ("active-30d", r#"count of event "page" in last 30d >= 3"#),
    ("lapsed", r#"last of event "Order Completed" between 60d and 120d ago"#),
    ("recent-buyers", r#"event "Order Completed" in last 14d"#),
    ("premium-viewers", r#"event "Product Viewed" where price >= 150 in last 30d"#),
    ("aov-100", r#"avg total of event "Order Completed" in last 180d >= 100"#),
    ("max-order-300", r#"max total of event "Order Completed" in last 365d >= 300"#),
    ("vip", "traits.vip = true"),
    ("tokyo", r#"traits.city = "Tokyo""#),
    ("osaka-area", "near 34.69, 135.50 within 30 km"),
    ("tokyo-area", "near 35.68, 139.76 within 50 km"),
    ("japan", r#"computed.country = "JP""#),
    ("overseas", r#"traits.country in ("US", "KR", "TW", "GB")"#),
    ("reachable-email", "has email and consent email for marketing"),
    ("reachable-sms", "has phone and consent sms for marketing"),
    ("reachable-line", "has line_user_id and consent line for marketing"),
    ("vip-repeat", r#"traits.vip = true and in segment "repeat-buyers""#),
    ("reachable-lapsed", r#"in segment "reachable-email" and in segment "lapsed""#),
    ("winback-tokyo", r#"in segment "tokyo-area" and in segment "lapsed""#),
    ("cart-rescue-email", r#"in segment "cart-abandoners-1h" and in segment "reachable-email""#),
    ("browse-rescue-line", r#"in segment "browse-abandoners" and in segment "reachable-line""#),
    ("vip-browsers", r#"traits.vip = true and event "Product Viewed" in last 7d"#),
    ("new-customers", r#"first of event "Order Completed" within last 30d"#),
    ("kids-carts", r#"event "Product Added" where category = "kids" in last 30d"#),
    ("beauty-buyers", r#"event "Order Completed" where category = "beauty" in last 90d"#),
    ("outdoor-fans", r#"count of event "Product Viewed" where category = "outdoor" in last 30d >= 3"#),
    (
        "apparel-no-buy",
        r#"event "Product Viewed" where category = "apparel" in last 14d
           and not event "Order Completed" where category = "apparel" in last 14d"#,
    ),
    ("decision-stage", r#"computed.journey_stage in ("decision", "consideration")"#),
    ("many-orders", "computed.orders_count >= 3"),
    ("mid-band", r#"computed.price_band = "mid""#),
    ("us-vip", r#"traits.vip = true and traits.country = "US""#),
    ("korea-reachable", r#"traits.country = "KR" and consent email for marketing"#),
    ("checkout-no-order-24h", r#"did "Checkout Started" then not "Order Completed" within 24h in last 14d"#),
    ("viewed-not-added-30m", r#"did "Product Viewed" then not "Product Added" within 30m in last 2d"#),
    (
        "engaged-non-buyers",
        r#"count of event "Product Viewed" in last 30d >= 5 and not event "Order Completed" in last 90d"#,
    ),
    ("big-cart", r#"max total of event "Checkout Started" in last 7d >= 150"#),
    ("promo-audience", r#"(in segment "vip" or in segment "repeat-buyers") and in segment "reachable-email""#),
    ("dormant-buyers", r#"not event "page" in last 60d and event "Order Completed" in last 365d"#),
    ("japan-reachable", r#"computed.country = "JP" and (consent email for marketing or consent line for marketing)"#),
    ("osaka-vip", r#"traits.vip = true and traits.city = "Osaka""#),
];

fn definitions() -> Result<Vec<(String, Condition)>> {
    SEGMENTS
        .iter()
        .map(|(name, text)| Ok((name.to_string(), parse(text).with_context(|| format!("segment {name}"))?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Simulated commerce data

/// SplitMix64: fast, seedable per profile, good enough for simulated data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed.wrapping_mul(0xA076_1D64_78BD_642F) ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
}

struct Place {
    city: &'static str,
    country: &'static str,
    lat: f64,
    lon: f64,
    weight: f64,
}

const PLACES: &[Place] = &[
    Place { city: "Tokyo", country: "JP", lat: 35.68, lon: 139.76, weight: 0.24 },
    Place { city: "Yokohama", country: "JP", lat: 35.44, lon: 139.64, weight: 0.06 },
    Place { city: "Osaka", country: "JP", lat: 34.69, lon: 135.50, weight: 0.12 },
    Place { city: "Nagoya", country: "JP", lat: 35.18, lon: 136.91, weight: 0.06 },
    Place { city: "Fukuoka", country: "JP", lat: 33.59, lon: 130.40, weight: 0.06 },
    Place { city: "Sapporo", country: "JP", lat: 43.06, lon: 141.35, weight: 0.06 },
    Place { city: "New York", country: "US", lat: 40.71, lon: -74.01, weight: 0.06 },
    Place { city: "Los Angeles", country: "US", lat: 34.05, lon: -118.24, weight: 0.05 },
    Place { city: "Seattle", country: "US", lat: 47.61, lon: -122.33, weight: 0.04 },
    Place { city: "Seoul", country: "KR", lat: 37.57, lon: 126.98, weight: 0.08 },
    Place { city: "Busan", country: "KR", lat: 35.18, lon: 129.08, weight: 0.02 },
    Place { city: "Taipei", country: "TW", lat: 25.03, lon: 121.57, weight: 0.08 },
    Place { city: "London", country: "GB", lat: 51.51, lon: -0.13, weight: 0.07 },
];

fn place(rng: &mut Rng) -> &'static Place {
    let mut x = rng.f64();
    for p in PLACES {
        if x < p.weight {
            return p;
        }
        x -= p.weight;
    }
    &PLACES[0]
}

/// Category, price range.
const CATEGORIES: &[(&str, f64, f64)] = &[
    ("shoes", 40.0, 220.0),
    ("bags", 30.0, 400.0),
    ("apparel", 15.0, 150.0),
    ("accessories", 10.0, 120.0),
    ("beauty", 8.0, 80.0),
    ("home", 12.0, 250.0),
    ("kids", 8.0, 90.0),
    ("outdoor", 20.0, 350.0),
];

/// Events per profile at mean 20 (each block of ten profiles gets each count once, so the total is exact).
const COUNTS: [usize; 10] = [3, 5, 8, 10, 12, 15, 20, 27, 40, 60];
const COUNT_ORDER: [usize; 10] = [6, 2, 9, 0, 4, 7, 1, 8, 3, 5];

fn event_count(index: usize, mean: usize) -> usize {
    let base = COUNTS[COUNT_ORDER[index % 10]];
    (base * mean).div_ceil(20).max(1)
}

/// One simulated event before it gets its time: name, seconds after the session start, properties.
struct Planned {
    name: &'static str,
    offset: i64,
    properties: Value,
}

/// A shopping session: a page, product views, maybe a cart, a checkout and an order (placed 1–20 minutes
/// after the checkout started; an abandoned checkout has no order).
fn session(rng: &mut Rng, max: usize, serial: &mut u64) -> Vec<Planned> {
    let (category, lo, hi) = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
    let mut out = Vec::with_capacity(6);
    let mut t = 0i64;
    out.push(Planned {
        name: "page",
        offset: t,
        properties: json!({"path": format!("/collections/{category}"), "title": category}),
    });
    let views = 1 + rng.below(3);
    let mut price = 0.0;
    for _ in 0..views {
        t += 20 + rng.below(100) as i64;
        price = (rng.range(lo, hi) * 100.0).round() / 100.0;
        out.push(Planned {
            name: "Product Viewed",
            offset: t,
            properties: json!({"product_id": format!("p{}", rng.below(5_000)), "category": category, "price": price}),
        });
    }
    if rng.chance(0.35) {
        t += 20 + rng.below(100) as i64;
        let quantity = 1 + rng.below(2);
        out.push(Planned {
            name: "Product Added",
            offset: t,
            properties: json!({"product_id": format!("p{}", rng.below(5_000)), "category": category,
                               "price": price, "quantity": quantity}),
        });
        if rng.chance(0.5) {
            t += 30 + rng.below(200) as i64;
            *serial += 1;
            let total = (price * quantity as f64 * 100.0).round() / 100.0;
            out.push(Planned {
                name: "Checkout Started",
                offset: t,
                properties: json!({"checkout_id": format!("c{serial}"), "category": category, "total": total}),
            });
            if rng.chance(0.6) {
                t += 60 + rng.below(1_140) as i64;
                out.push(Planned {
                    name: "Order Completed",
                    offset: t,
                    properties: json!({"order_id": format!("o{serial}"), "category": category, "total": total,
                                       "currency": "JPY"}),
                });
            }
        }
    }
    out.truncate(max);
    out
}

/// Profile `index` of the simulated store, with its events (about a year of history).
fn simulated_profile(seed: u64, index: usize, mean: usize, now: DateTime<Utc>) -> (ProfileData, Vec<NewEvent>) {
    let mut rng = Rng::new(seed, index as u64);
    let count = event_count(index, mean);
    let mut serial = 0u64;
    let mut sessions = Vec::new();
    let mut planned = 0;
    while planned < count {
        let s = session(&mut rng, count - planned, &mut serial);
        planned += s.len();
        sessions.push(s);
    }
    // Active from `first` to `last`; a third of profiles stopped coming some time ago.
    let age = rng.range(1.0, 365.0) * 86_400.0;
    let first = now - Duration::seconds(age as i64);
    let quiet = if rng.chance(0.33) { rng.f64() * age * 0.8 } else { 0.0 };
    let span = ((age - quiet) as i64 - 3_600).max(60);
    let mut starts: Vec<i64> = sessions.iter().map(|_| rng.below(span as u64) as i64).collect();
    starts.sort_unstable();
    let mut events = Vec::with_capacity(count);
    let (mut orders, mut revenue, mut last_order, mut checkouts, mut adds) = (0usize, 0.0f64, None, 0usize, 0usize);
    let base_seq = index as i64 * 8_192;
    for (session, start) in sessions.into_iter().zip(starts) {
        for p in session {
            let at = first + Duration::seconds(start + p.offset);
            match p.name {
                "Order Completed" => {
                    orders += 1;
                    revenue += p.properties["total"].as_f64().unwrap_or(0.0);
                    last_order = Some(at);
                }
                "Checkout Started" => checkouts += 1,
                "Product Added" => adds += 1,
                _ => {}
            }
            let seq = base_seq + events.len() as i64;
            events.push(NewEvent { seq, name: p.name.to_string(), at, properties: p.properties.into() });
        }
    }
    let home = place(&mut rng);
    let vip = rng.chance(0.08) || orders >= 6;
    let mut traits = Map::new();
    traits.insert("vip".into(), json!(vip));
    traits.insert("city".into(), json!(home.city));
    traits.insert("country".into(), json!(home.country));
    traits.insert("points".into(), json!(rng.below(5_000)));
    let mut identifiers = vec!["user_id".to_string()];
    let mut consent = Vec::new();
    if rng.chance(0.8) {
        traits.insert("email".into(), json!(format!("user{index}@example.com")));
        identifiers.push("email".into());
        if rng.chance(0.55) {
            consent.push(("email".to_string(), "marketing".to_string()));
        }
    }
    if rng.chance(0.3) {
        identifiers.push("phone".into());
        if rng.chance(0.4) {
            consent.push(("sms".to_string(), "marketing".to_string()));
        }
    }
    if home.country == "JP" && rng.chance(0.4) {
        identifiers.push("line_user_id".into());
        if rng.chance(0.5) {
            consent.push(("line".to_string(), "marketing".to_string()));
        }
    }
    let coordinates = rng.chance(0.75).then(|| (home.lat + rng.range(-0.25, 0.25), home.lon + rng.range(-0.25, 0.25)));
    let mut computed = Map::new();
    computed.insert("orders_count".into(), json!(orders));
    computed.insert("revenue".into(), json!((revenue * 100.0).round() / 100.0));
    computed.insert("country".into(), json!(home.country));
    if orders > 0 {
        let aov = revenue / orders as f64;
        let band = match aov {
            a if a < 25.0 => "low",
            a if a < 75.0 => "mid",
            a if a < 200.0 => "high",
            _ => "premium",
        };
        computed.insert("price_band".into(), json!(band));
    }
    let recent = last_order.is_some_and(|t| now - t <= Duration::days(30));
    let stage = match (orders, recent) {
        (0, _) if checkouts > 0 => "decision",
        (0, _) if adds > 0 => "consideration",
        (0, _) => "awareness",
        (1, true) => "purchase",
        (_, true) => "retention",
        _ => "post_purchase",
    };
    computed.insert("journey_stage".into(), json!(stage));
    (ProfileData { version: 1, traits, computed, consent, identifiers, coordinates }, events)
}

// ---------------------------------------------------------------------------------------------------------
// Measuring helpers

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

/// Percentile of sorted values (nearest rank).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// This process's resident and peak memory, MiB.
pub(crate) fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds used so far by this process's threads, summed by thread name.
fn thread_cpu() -> BTreeMap<String, f64> {
    // Linux reports utime and stime in clock ticks of USER_HZ, 100 on every mainstream architecture.
    const TICKS: f64 = 100.0;
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state is field 3 of stat(5), utime 14 and stime 15.
        let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)).filter_map(|v| v.parse::<f64>().ok()).sum();
        *out.entry(name).or_insert(0.0) += ticks / TICKS;
    }
    out
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |m| m.trim().to_string())
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

pub fn run(_config: &Config, args: SegmentsArgs) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = json!({
        "cpu": cpu_model(),
        "cores": threads,
        "memory_gib": (memory_gib() * 10.0).round() / 10.0,
    });
    eprintln!("machine: {} × {threads} cores, {:.1} GiB", cpu_model(), memory_gib());
    let mut report = json!({"machine": machine, "date": Utc::now().to_rfc3339()});
    if args.part != Part::Latency {
        let a = build_benchmark(&args)?;
        print_build(&a);
        report["build"] = a;
    }
    if args.part != Part::Build {
        let b = latency_benchmark(&args)?;
        print_latency(&b, &args);
        report["latency"] = b;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nFigures written to {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Part A: full build on the engine

struct Loaded {
    events: usize,
    by_name: BTreeMap<&'static str, usize>,
}

/// Generates profiles `range` on every core and loads them into `engine` on this thread.
fn load_range(
    engine: &mut Engine,
    range: std::ops::Range<usize>,
    args: &SegmentsArgs,
    now: DateTime<Utc>,
) -> Result<Loaded> {
    const CHUNK: usize = 2_000;
    type Generated = Vec<(u64, ProfileData, Vec<NewEvent>)>;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let starts: Vec<usize> = range.clone().step_by(CHUNK).collect();
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Generated>(threads * 2);
    let mut loaded = Loaded { events: 0, by_name: BTreeMap::new() };
    let mut profiles = 0;
    let names = ["page", "Product Viewed", "Product Added", "Checkout Started", "Order Completed"];
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (starts, next, end) = (&starts, &next, range.end);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&from) = starts.get(k) else { break };
                    let chunk: Generated = (from..(from + CHUNK).min(end))
                        .map(|i| {
                            let (data, events) = simulated_profile(args.seed, i, args.events_per_profile, now);
                            (i as u64 + 1, data, events)
                        })
                        .collect();
                    if tx.send(chunk).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for chunk in rx {
            for (id, data, events) in chunk {
                profiles += 1;
                loaded.events += events.len();
                for e in &events {
                    if let Some(n) = names.iter().find(|n| **n == e.name) {
                        *loaded.by_name.entry(*n).or_insert(0) += 1;
                    }
                }
                engine.load_profile(id, Some(&data), &events, now);
            }
        }
    });
    anyhow::ensure!(profiles == range.len(), "not every profile was loaded");
    Ok(loaded)
}

fn definition(id: i64, name: &str, condition: Condition) -> SegmentDefinition {
    SegmentDefinition { id, name: name.to_string(), condition }
}

/// Times `runs` full builds of the six-condition segment (each after emptying it, so every member enters
/// each time) and its parallel evaluation alone.
fn time_builds(engine: &mut Engine, six: &Condition, runs: usize, now: DateTime<Utc>) -> Result<Value> {
    let nobody = parse("any()").context("any()")?;
    let (mut build, mut preview, mut members) = (Vec::new(), Vec::new(), 0);
    for run in 0..runs.max(1) {
        engine.upsert(definition(1, SIX_NAME, nobody.clone()), now)?;
        let started = Instant::now();
        let transitions = engine.upsert(definition(1, SIX_NAME, six.clone()), now)?;
        build.push(started.elapsed().as_secs_f64());
        members = transitions.iter().filter(|t| t.entered).count();
        drop(transitions);
        let started = Instant::now();
        let (count, _) = engine.preview(six, now, 10)?;
        preview.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(count == members, "preview and build disagree ({count} vs {members})");
        eprintln!(
            "  run {}: build {:.0} ms, evaluation alone {:.0} ms, {members} members",
            run + 1,
            build[run] * 1e3,
            preview[run] * 1e3
        );
    }
    let (lo, hi) = min_max(&build);
    let profiles = engine.stats().profiles;
    Ok(json!({
        "profiles": profiles,
        "members": members,
        "runs": build.len(),
        "build_s": {"median": median(&build), "min": lo, "max": hi, "all": build},
        "evaluation_only_s": {"median": median(&preview), "all": preview},
        "ns_per_profile": median(&build) * 1e9 / profiles.max(1) as f64,
    }))
}

/// Applies `n` new events (commits of 100, like ingest) to random existing profiles; returns µs per event.
fn apply_probe(engine: &mut Engine, n: usize, profiles: usize, seed: u64, now: DateTime<Utc>, round: i64) -> f64 {
    let mut rng = Rng::new(seed ^ 0x5EED, round as u64);
    let mut changes = Vec::with_capacity(n);
    for k in 0..n {
        let profile = 1 + rng.below(profiles as u64);
        let (category, lo, hi) = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
        let price = (rng.range(lo, hi) * 100.0).round() / 100.0;
        let (name, properties) = match rng.below(10) {
            0..=3 => ("page", json!({"path": format!("/collections/{category}"), "title": category})),
            4..=7 => ("Product Viewed", json!({"product_id": "p1", "category": category, "price": price})),
            8 => ("Product Added", json!({"product_id": "p1", "category": category, "price": price, "quantity": 1})),
            _ => (
                "Order Completed",
                json!({"order_id": format!("probe{round}-{k}"), "category": category,
                                             "total": price}),
            ),
        };
        // Sequence numbers above any generated one.
        let seq = (1i64 << 50) + round * 10_000_000 + k as i64;
        let event = NewEvent { seq, name: name.to_string(), at: now, properties: properties.into() };
        changes.push(Change::Updated { profile, data: None, events: vec![event] });
    }
    let started = Instant::now();
    let mut transitions = 0;
    let mut changes = changes.into_iter().peekable();
    while changes.peek().is_some() {
        let commit: Vec<Change> = changes.by_ref().take(100).collect();
        transitions += engine.apply(commit, now).len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("  applied {n} events in {:.0} ms ({transitions} transitions)", elapsed * 1e3);
    elapsed * 1e6 / n.max(1) as f64
}

fn build_benchmark(args: &SegmentsArgs) -> Result<Value> {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).single().context("time")?;
    let definitions = definitions()?;
    let six = definitions[0].1.clone();
    let mut engine = Engine::new();
    for (_, condition) in &definitions {
        engine.widen(condition);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let total = args.profiles.max(4);
    let steps = [total / 4, total / 2, total];
    let (rss_start, _) = rss_mib();
    eprintln!(
        "Part A: {total} profiles, {} events each on average; the engine's interest covers {} segments; \
         {threads} threads",
        args.events_per_profile,
        definitions.len()
    );
    let mut loaded_events = 0;
    let mut by_name: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut load_s = 0.0;
    let mut scaling = Vec::new();
    let mut from = 0;
    for step in steps {
        let started = Instant::now();
        eprintln!("generating and loading profiles {}..{step}…", from + 1);
        let loaded = load_range(&mut engine, from..step, args, now)?;
        load_s += started.elapsed().as_secs_f64();
        loaded_events += loaded.events;
        for (name, count) in loaded.by_name {
            *by_name.entry(name).or_insert(0) += count;
        }
        from = step;
        eprintln!("full builds of {SIX_NAME} over {step} profiles:");
        let mut measured = time_builds(&mut engine, &six, args.runs, now)?;
        measured["events_generated"] = json!(loaded_events);
        measured["events_retained"] = json!(engine.stats().events);
        scaling.push(measured);
    }
    let after_load = engine.stats();
    let (rss_loaded, _) = rss_mib();
    let full = scaling.last().cloned().unwrap_or(Value::Null);

    // Segments: recompute 1, 10 and 50 (start-up, refresh); build each new one; apply new events.
    eprintln!("segments: recomputing and applying events with 1, 10 and 50 segments…");
    let mut recompute = Vec::new();
    let mut per_event = Vec::new();
    let mut each = Vec::new();
    let measure = |engine: &mut Engine, round: i64, recompute: &mut Vec<Value>, per_event: &mut Vec<Value>| {
        let segments = engine.stats().segments;
        let started = Instant::now();
        let changed = engine.evaluate_all(now).len();
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!("  recompute {segments} segments: {:.0} ms ({changed} changes)", elapsed * 1e3);
        recompute.push(json!({"segments": segments, "s": elapsed}));
        let us = apply_probe(engine, args.probe_events, total, args.seed, now, round);
        per_event.push(json!({"segments": segments, "us_per_event": us}));
    };
    measure(&mut engine, 1, &mut recompute, &mut per_event);
    for (k, (name, condition)) in definitions.iter().enumerate().skip(1) {
        let started = Instant::now();
        let transitions = engine.upsert(definition(k as i64 + 1, name, condition.clone()), now)?;
        let elapsed = started.elapsed().as_secs_f64();
        let members = engine.member_count(name).unwrap_or(0);
        each.push(json!({"segment": name, "s": elapsed, "members": members, "transitions": transitions.len()}));
        if k + 1 == 10 || k + 1 == definitions.len() {
            measure(&mut engine, k as i64 + 1, &mut recompute, &mut per_event);
        }
    }
    let each_s: Vec<f64> = each.iter().filter_map(|e| e["s"].as_f64()).collect();
    let (each_min, each_max) = min_max(&each_s);
    let slowest = each.iter().max_by(|a, b| a["s"].as_f64().unwrap_or(0.0).total_cmp(&b["s"].as_f64().unwrap_or(0.0)));
    let stats = engine.stats();
    let (rss_end, hwm) = rss_mib();
    Ok(json!({
        "threads": threads,
        "profiles": stats.profiles,
        "events_generated": loaded_events,
        "events_generated_by_name": by_name,
        "events_retained": after_load.events,
        "generate_and_load_s": load_s,
        "state_bytes_after_load": after_load.state_bytes,
        "state_bytes_with_50_segments": stats.state_bytes,
        "events_retained_with_50_segments": stats.events,
        "timers_with_50_segments": stats.timers,
        "rss_mib": {"start": rss_start, "loaded": rss_loaded, "end": rss_end, "peak": hwm},
        "six_conditions": {"text": SIX, "at_full_size": full, "by_profiles": scaling},
        "recompute_all": recompute,
        "apply_events": per_event,
        "build_each_segment": {
            "count": each.len(),
            "median_s": median(&each_s),
            "min_s": each_min,
            "max_s": each_max,
            "sum_s": each_s.iter().sum::<f64>(),
            "slowest": slowest,
            "all": each,
        },
    }))
}

fn print_build(a: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    println!("\n== Part A: full build on the in-memory segment engine ({} threads)", u(&a["threads"]));
    println!(
        "store: {} profiles, {} events generated ({} kept in segment state: only names the definitions read, \
         and no older than the longest window that needs them); generated and loaded in {:.1} s",
        u(&a["profiles"]),
        u(&a["events_generated"]),
        u(&a["events_retained"]),
        f(&a["generate_and_load_s"])
    );
    println!(
        "segment state: {:.1} MiB estimated after loading, {:.1} MiB with 50 segments built; \
         process RSS {:.0} MiB before generating, {:.0} MiB loaded, {:.0} MiB at the end (peak {:.0} MiB)",
        f(&a["state_bytes_after_load"]) / 1048576.0,
        f(&a["state_bytes_with_50_segments"]) / 1048576.0,
        f(&a["rss_mib"]["start"]),
        f(&a["rss_mib"]["loaded"]),
        f(&a["rss_mib"]["end"]),
        f(&a["rss_mib"]["peak"])
    );
    println!("\nfull build of the six-condition segment (median of runs; evaluation alone = parallel preview):");
    println!("| profiles | events kept | members | build median | min | max | evaluation alone | per profile |");
    println!("|---|---|---|---|---|---|---|---|");
    if let Some(rows) = a["six_conditions"]["by_profiles"].as_array() {
        for r in rows {
            println!(
                "| {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} µs |",
                u(&r["profiles"]),
                u(&r["events_retained"]),
                u(&r["members"]),
                f(&r["build_s"]["median"]) * 1e3,
                f(&r["build_s"]["min"]) * 1e3,
                f(&r["build_s"]["max"]) * 1e3,
                f(&r["evaluation_only_s"]["median"]) * 1e3,
                f(&r["ns_per_profile"]) / 1e3
            );
        }
    }
    let full = &a["six_conditions"]["at_full_size"];
    let bar = f(&full["build_s"]["median"]) <= 1.0;
    println!(
        "Bar: full build ≤ 1 s on {} profiles: {} ({:.0} ms)",
        u(&full["profiles"]),
        if bar { "met" } else { "NOT met" },
        f(&full["build_s"]["median"]) * 1e3
    );
    println!("\nsegments (all profiles):");
    println!("| segments | recompute all | apply one new event |");
    println!("|---|---|---|");
    if let (Some(r), Some(p)) = (a["recompute_all"].as_array(), a["apply_events"].as_array()) {
        for (r, p) in r.iter().zip(p) {
            println!("| {} | {:.0} ms | {:.1} µs |", u(&r["segments"]), f(&r["s"]) * 1e3, f(&p["us_per_event"]));
        }
    }
    let each = &a["build_each_segment"];
    println!(
        "building each of the other {} segments: median {:.0} ms, min {:.0} ms, max {:.0} ms ({}), {:.1} s in all",
        u(&each["count"]),
        f(&each["median_s"]) * 1e3,
        f(&each["min_s"]) * 1e3,
        f(&each["max_s"]) * 1e3,
        each["slowest"]["segment"].as_str().unwrap_or("?"),
        f(&each["sum_s"])
    );
}

// ---------------------------------------------------------------------------------------------------------
// Part B: latency under load on a real node

fn message(kind: &str, user: &str, id: &str, at: DateTime<Utc>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("userId".into(), json!(user));
    m.insert("messageId".into(), json!(id));
    m.insert("timestamp".into(), json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    m
}

fn track(user: &str, id: &str, name: &str, at: DateTime<Utc>, properties: Value) -> Value {
    let mut m = message("track", user, id, at);
    m.insert("event".into(), json!(name));
    m.insert("properties".into(), properties);
    Value::Object(m)
}

/// Who a user is: an identify with traits, consent and (mostly) a located device.
fn identify(rng: &mut Rng, user: &str, id: &str, at: DateTime<Utc>) -> Value {
    let home = place(rng);
    let mut traits = json!({"vip": rng.chance(0.08), "city": home.city, "country": home.country});
    let mut consent = Map::new();
    if rng.chance(0.8) {
        traits["email"] = json!(format!("{user}@example.com"));
        if rng.chance(0.55) {
            consent.insert("email".into(), json!({"marketing": "granted"}));
        }
    }
    if home.country == "JP" && rng.chance(0.4) {
        traits["line_user_id"] = json!(format!("U{user}"));
        if rng.chance(0.5) {
            consent.insert("line".into(), json!({"marketing": "granted"}));
        }
    }
    if !consent.is_empty() {
        traits["consent"] = Value::Object(consent);
    }
    let mut m = message("identify", user, id, at);
    m.insert("traits".into(), traits);
    if rng.chance(0.75) {
        let location = json!({"city": home.city, "country": home.country,
                              "latitude": home.lat + rng.range(-0.2, 0.2),
                              "longitude": home.lon + rng.range(-0.2, 0.2)});
        m.insert("context".into(), json!({"location": location}));
    }
    Value::Object(m)
}

/// A session's messages from `start`: page, product views, maybe a cart, a checkout and an order.
fn shop(rng: &mut Rng, user: &str, tag: &str, start: DateTime<Utc>, order: bool) -> Vec<Value> {
    let mut serial = 0;
    let planned = session(rng, 8, &mut serial);
    let mut out = Vec::with_capacity(planned.len() + 2);
    let mut last = 0;
    for (k, mut p) in planned.into_iter().enumerate() {
        let id = format!("{user}-{tag}-{k}");
        last = p.offset;
        if let Value::Object(props) = &mut p.properties {
            for key in ["order_id", "checkout_id"] {
                if let Some(v) = props.get_mut(key) {
                    *v = json!(format!("{}-{user}-{tag}", v.as_str().unwrap_or("")));
                }
            }
        }
        if p.name == "page" {
            let mut m = message("page", user, &id, start + Duration::seconds(p.offset));
            m.insert("name".into(), p.properties["title"].clone());
            m.insert("properties".into(), p.properties);
            out.push(Value::Object(m));
        } else {
            out.push(track(user, &id, p.name, start + Duration::seconds(p.offset), p.properties));
        }
    }
    let has_order = out.iter().any(|m| m["event"] == "Order Completed");
    if order && !has_order {
        let (category, lo, hi) = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
        let total = (rng.range(lo, hi) * 100.0).round() / 100.0;
        let at = start + Duration::seconds(last + 90);
        let id = format!("{user}-{tag}-order");
        out.push(track(
            user,
            &id,
            "Order Completed",
            at,
            json!({"order_id": id, "category": category, "total": total, "currency": "JPY"}),
        ));
    }
    out
}

/// A warm-up user: identified a month or two ago, ordered once 10–60 days ago, browsed since.
fn warm_user(rng: &mut Rng, user: &str, now: DateTime<Utc>) -> Vec<Value> {
    let days = |d: f64| Duration::seconds((d * 86_400.0) as i64);
    let (identified, ordered, browsed) = (rng.range(30.0, 60.0), rng.range(10.0, 60.0), rng.range(1.0, 9.0));
    let mut out = vec![identify(rng, user, &format!("{user}-w-id"), now - days(identified))];
    let order = rng.chance(0.7);
    out.extend(shop(rng, user, "w1", now - days(ordered), order));
    out.extend(shop(rng, user, "w2", now - days(browsed), false));
    out
}

/// One user's messages in the run: a new user identifies and shops; a returning one shops, often orders.
/// A quarter of sessions arrive late (a phone flushing its queue).
fn run_session(rng: &mut Rng, user: &str, new: bool, now: DateTime<Utc>) -> Vec<Value> {
    // Sessions span up to ~35 minutes: an on-time one started 40 minutes ago (its last event is not in the
    // future); a late one 100–180 minutes ago (an unanswered checkout's hour has passed when it arrives).
    let late = rng.chance(0.25);
    let start = now - Duration::seconds(if late { rng.range(6_000.0, 10_800.0) as i64 } else { 2_400 });
    let mut out = Vec::new();
    if new {
        out.push(identify(rng, user, &format!("{user}-id"), start));
    }
    let order = !new && rng.chance(0.5);
    out.extend(shop(rng, user, "r", start, order));
    out
}

struct Sent {
    users: Vec<String>,
    events: usize,
}

/// A record as the subscriber saw it: when (monotonic and wall clock), and the row.
type Received = (Instant, DateTime<Utc>, SegmentTransitionRow);

fn latency_benchmark(args: &SegmentsArgs) -> Result<Value> {
    let own_dir = args.data_dir.is_none();
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kizuna-bench-segments-{}", std::process::id())));
    if own_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let result = latency_on(&dir, args);
    if own_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn latency_on(dir: &std::path::Path, args: &SegmentsArgs) -> Result<Value> {
    let durability = match args.durability {
        StoreSync::Full => Durability::Full,
        StoreSync::Process => Durability::Process,
    };
    eprintln!("\nPart B: store with durability {:?} in {}", args.durability, dir.display());
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir, durability).with_context(|| format!("cannot open {}", dir.display()))?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = store.create_source("bench", true, DataKind::FirstParty, clock.now())?;
    let membership = Membership::start(store.clone(), clock.clone(), MembershipSettings::default())
        .context("cannot start the segment engine")?;
    let pipeline = Pipeline::start_with_feed(
        store.clone(),
        PipelineConfig::default(),
        clock.clone(),
        Some(membership.feed_sink()),
    )
    .context("cannot start the pipeline")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let result = runtime.block_on(drive(args, store.clone(), &membership, &pipeline, &source, clock.as_ref()));
    pipeline.shutdown();
    membership.shutdown();
    result
}

async fn drive(
    args: &SegmentsArgs,
    store: Arc<dyn Store>,
    membership: &Membership,
    pipeline: &Pipeline,
    source: &kizuna_store::Source,
    clock: &dyn Clock,
) -> Result<Value> {
    let started = Instant::now();
    let active = args.segments.clamp(1, SEGMENTS.len());
    for (name, condition) in definitions()?.into_iter().take(active) {
        membership.save(&name, "benchmark segment", condition).await?;
    }
    eprintln!("{active} segments saved in {:.2} s", started.elapsed().as_secs_f64());

    // Warm-up: users with some history, loaded through the same pipeline (the segments follow along).
    let started = Instant::now();
    let mut rng = Rng::new(args.seed, u64::MAX);
    let now = clock.now();
    let mut chunk = Vec::new();
    let mut warm_events = 0;
    for i in 0..args.warm_users {
        for m in warm_user(&mut rng, &format!("w{i}"), now) {
            chunk.push(kizuna_ingest::parse_message(m, now).context("warm-up message invalid")?);
        }
        if chunk.len() >= 2_000 || i + 1 == args.warm_users {
            warm_events += chunk.len();
            pipeline.ingest(source, std::mem::take(&mut chunk)).await?;
        }
    }
    membership.sync().await?;
    eprintln!(
        "warm-up: {} users, {warm_events} events ingested and segmented in {:.1} s",
        args.warm_users,
        started.elapsed().as_secs_f64()
    );

    // The subscriber: its own thread, so a record is timed the moment it is published.
    let stop = Arc::new(AtomicBool::new(false));
    let mut feed = membership.subscribe();
    let stopping = stop.clone();
    let subscriber = std::thread::Builder::new().name("bench-subscriber".into()).spawn(
        move || -> Result<(Vec<Received>, u64)> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
            Ok(rt.block_on(async move {
                let mut rows = Vec::with_capacity(1 << 20);
                let mut lagged = 0;
                loop {
                    match tokio::time::timeout(std::time::Duration::from_millis(50), feed.recv()).await {
                        Ok(Ok(batch)) => {
                            let (at, wall) = (Instant::now(), Utc::now());
                            rows.extend(batch.iter().map(|row| (at, wall, row.clone())));
                        }
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => lagged += n,
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
                        Err(_) if stopping.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
                (rows, lagged)
            }))
        },
    )?;

    // The run: open loop. Each ingest call is its own task, sent when the schedule says, whether or not the
    // earlier ones have returned (so a slow commit does not slow the offered load).
    let cpu_before = thread_cpu();
    let mut warm_order: Vec<usize> = (0..args.warm_users).collect();
    for i in (1..warm_order.len()).rev() {
        warm_order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut warm_next = warm_order.into_iter();
    let mut batches: Vec<Sent> = Vec::new();
    let mut tasks = Vec::new();
    let rate = args.rate.max(1) as f64;
    let run_for = std::time::Duration::from_secs(args.duration.max(1));
    let begin = tokio::time::Instant::now();
    let begin_std = Instant::now();
    let mut scheduled = 0usize;
    let mut new_users = 0usize;
    while begin.elapsed() < run_for {
        let due = begin + std::time::Duration::from_secs_f64(scheduled as f64 / rate);
        tokio::time::sleep_until(due).await;
        let now = clock.now();
        let mut messages = Vec::with_capacity(args.batch + 8);
        let mut users = Vec::new();
        while messages.len() < args.batch {
            let returning = if rng.chance(args.returning) { warm_next.next() } else { None };
            let (user, new) = match returning {
                Some(i) => (format!("w{i}"), false),
                None => {
                    new_users += 1;
                    (format!("n{new_users}"), true)
                }
            };
            messages.extend(run_session(&mut rng, &user, new, now));
            users.push(user);
        }
        let index = batches.len();
        let events = messages.len();
        scheduled += events;
        batches.push(Sent { users, events });
        let (pipeline, source) = (pipeline.clone(), source.clone());
        tasks.push(tokio::spawn(async move {
            let received = Utc::now();
            let parsed: Result<Vec<_>, _> =
                messages.into_iter().map(|m| kizuna_ingest::parse_message(m, received)).collect();
            let sent = Instant::now();
            let result = match parsed {
                Ok(events) => pipeline.ingest(&source, events).await.map_err(anyhow::Error::from),
                Err(e) => Err(anyhow::Error::from(e)),
            };
            let acked = (Instant::now(), Utc::now());
            (index, sent, acked, result)
        }));
    }
    let offered_s = begin_std.elapsed().as_secs_f64();
    let mut acks: Vec<Option<(Instant, DateTime<Utc>)>> = vec![None; batches.len()];
    let mut call_ms = Vec::with_capacity(batches.len());
    let (mut accepted, mut failed) = (0usize, 0usize);
    let mut last_ack = begin_std;
    for task in tasks {
        let (index, sent, acked, result) = task.await?;
        match result {
            Ok(receipt) => {
                accepted += receipt.accepted;
                acks[index] = Some(acked);
                call_ms.push(ms(acked.0 - sent));
                last_ack = last_ack.max(acked.0);
            }
            Err(error) => {
                failed += 1;
                eprintln!("ingest failed: {error:#}");
            }
        }
    }
    let ingest_s = (last_ack - begin_std).as_secs_f64();
    membership.sync().await?;
    let drained = Instant::now();
    let cpu_after = thread_cpu();
    stop.store(true, Ordering::Relaxed);
    let (rows, lagged) = subscriber.join().map_err(|_| anyhow::anyhow!("the subscriber thread panicked"))??;
    let stats = membership.stats().await?;

    // Attribution: every user of the run is in exactly one ingest call; its profile's records are timed from
    // that call's acknowledgement.
    let mut ack_of_profile: HashMap<u64, (Instant, DateTime<Utc>)> = HashMap::new();
    for (index, batch) in batches.iter().enumerate() {
        let Some(ack) = acks[index] else { continue };
        for user in &batch.users {
            if let Some(profile) = store.profile_by_identifier(&Identifier::new(IdKind::UserId, user.as_str()))? {
                ack_of_profile.insert(profile, ack);
            }
        }
    }
    let (mut entered, mut exited, mut by_time, mut unattributed, mut early) = (0, 0, 0, 0, 0);
    let mut latencies = Vec::with_capacity(rows.len());
    // The record's time is the segment thread's clock when it began applying the commit: it splits the
    // latency into waiting for the segment thread and applying + recording (wall clock, so approximate).
    let (mut to_apply, mut to_publish) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
    let mut by_segment: BTreeMap<String, usize> = BTreeMap::new();
    for (at, wall, row) in &rows {
        if !row.entered {
            exited += 1;
            continue;
        }
        entered += 1;
        if row.cause["kind"] == "time" {
            by_time += 1;
            continue;
        }
        let Some((ack, ack_wall)) = ack_of_profile.get(&row.profile_id) else {
            unattributed += 1;
            continue;
        };
        *by_segment.entry(row.segment.clone()).or_insert(0) += 1;
        to_apply.push((row.at - *ack_wall).as_seconds_f64() * 1e3);
        to_publish.push((*wall - row.at).as_seconds_f64() * 1e3);
        match at.checked_duration_since(*ack) {
            Some(d) => latencies.push(ms(d)),
            None => {
                early += 1;
                latencies.push(0.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    call_ms.sort_by(f64::total_cmp);
    to_apply.sort_by(f64::total_cmp);
    to_publish.sort_by(f64::total_cmp);
    let window_s = (drained - begin_std).as_secs_f64();
    let mut cpu: BTreeMap<String, f64> = BTreeMap::new();
    for (name, after) in &cpu_after {
        let used = after - cpu_before.get(name).copied().unwrap_or(0.0);
        if used > 0.005 {
            *cpu.entry(name.clone()).or_insert(0.0) += used / window_s * 100.0;
        }
    }
    let sent_events: usize = batches.iter().map(|b| b.events).sum();
    let (rss, hwm) = rss_mib();
    Ok(json!({
        "durability": format!("{:?}", args.durability).to_lowercase(),
        "target_rate": args.rate,
        "duration_s": args.duration,
        "batch_events": args.batch,
        "segments": active,
        "warm_users": args.warm_users,
        "warm_events": warm_events,
        "new_users": new_users,
        "returning_share": args.returning,
        "calls": batches.len(),
        "failed_calls": failed,
        "events_sent": sent_events,
        "events_accepted": accepted,
        "offered_rate": sent_events as f64 / offered_s,
        "achieved_rate": accepted as f64 / ingest_s,
        "ingest_call_ms": {
            "p50": percentile(&call_ms, 0.5), "p90": percentile(&call_ms, 0.9),
            "p99": percentile(&call_ms, 0.99), "max": call_ms.last().copied().unwrap_or(0.0),
        },
        "records": {
            "received": rows.len(), "entered": entered, "exited": exited, "time_caused": by_time,
            "unattributed": unattributed, "lagged": lagged, "measured": latencies.len(),
            "published_before_ack": early,
        },
        "entered_by_segment": by_segment,
        "latency_ms": {
            "p50": percentile(&latencies, 0.5), "p90": percentile(&latencies, 0.9),
            "p99": percentile(&latencies, 0.99), "p999": percentile(&latencies, 0.999),
            "max": latencies.last().copied().unwrap_or(0.0),
        },
        "split_ms": {
            "ack_to_apply": {"p50": percentile(&to_apply, 0.5), "p99": percentile(&to_apply, 0.99)},
            "apply_to_published": {"p50": percentile(&to_publish, 0.5), "p99": percentile(&to_publish, 0.99)},
        },
        "cpu_percent_by_thread": cpu,
        "engine": {"profiles": stats.profiles, "events": stats.events, "timers": stats.timers,
                   "state_bytes": stats.state_bytes},
        "rss_mib": {"end": rss, "peak": hwm},
    }))
}

fn print_latency(b: &Value, args: &SegmentsArgs) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    println!(
        "\n== Part B: event acknowledged → Segment Entered recorded, {} active segments, durability {}",
        u(&b["segments"]),
        b["durability"].as_str().unwrap_or("?")
    );
    println!(
        "store before the run: {} users, {} events; run: {} s, target {} events/s in calls of ~{} events",
        u(&b["warm_users"]),
        u(&b["warm_events"]),
        u(&b["duration_s"]),
        u(&b["target_rate"]),
        u(&b["batch_events"])
    );
    println!(
        "ingest: {} events accepted in {} calls ({} failed); offered {:.0}/s, achieved {:.0}/s; \
         ingest call p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        u(&b["events_accepted"]),
        u(&b["calls"]),
        u(&b["failed_calls"]),
        f(&b["offered_rate"]),
        f(&b["achieved_rate"]),
        f(&b["ingest_call_ms"]["p50"]),
        f(&b["ingest_call_ms"]["p99"]),
        f(&b["ingest_call_ms"]["max"])
    );
    let r = &b["records"];
    println!(
        "records: {} received ({} entered, {} exited; {} entered by time passing, {} not from this run), \
         {} lost to lag; {} Entered measured, {} published before the caller saw its ack (counted as 0 ms)",
        u(&r["received"]),
        u(&r["entered"]),
        u(&r["exited"]),
        u(&r["time_caused"]),
        u(&r["unattributed"]),
        u(&r["lagged"]),
        u(&r["measured"]),
        u(&r["published_before_ack"])
    );
    let l = &b["latency_ms"];
    println!("| p50 | p90 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} ms |",
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["p999"]),
        f(&l["max"])
    );
    let bar = f(&l["p99"]) <= 5.0 && f(&b["achieved_rate"]) >= args.rate as f64 * 0.95;
    println!(
        "Bar: p99 ≤ 5 ms at {} events/s with {} segments: {} (p99 {:.2} ms at {:.0} events/s)",
        args.rate,
        u(&b["segments"]),
        if bar { "met" } else { "NOT met" },
        f(&l["p99"]),
        f(&b["achieved_rate"])
    );
    let split = &b["split_ms"];
    println!(
        "of which (wall clock): ack → segment thread starts applying the commit p50 {:.2} ms, p99 {:.2} ms \
         (negative: it had the commit before the caller had the ack); applying → record published \
         (evaluation, the SQLite write of the transitions, its fsync) p50 {:.2} ms, p99 {:.2} ms",
        f(&split["ack_to_apply"]["p50"]),
        f(&split["ack_to_apply"]["p99"]),
        f(&split["apply_to_published"]["p50"]),
        f(&split["apply_to_published"]["p99"])
    );
    let e = &b["engine"];
    println!(
        "segment state: {} profiles, {} events kept, {:.1} MiB estimated; process RSS {:.0} MiB",
        u(&e["profiles"]),
        u(&e["events"]),
        f(&e["state_bytes"]) / 1048576.0,
        f(&b["rss_mib"]["end"])
    );
    if let Some(cpu) = b["cpu_percent_by_thread"].as_object() {
        let parts: Vec<String> = cpu.iter().map(|(k, v)| format!("{k} {:.0}%", f(v))).collect();
        println!("CPU during the run (% of one core): {}", parts.join(", "));
    }
}
