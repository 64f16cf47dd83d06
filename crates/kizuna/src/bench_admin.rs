//! `kizuna bench admin`: how fast the admin web app's pages get their data on a large store. Builds a store of
//! N profiles (1M by default; a third of them buyers with one to four orders over the last year), runs
//! analytics, installs the starter segments, flows and templates, then starts the real `kizuna serve` and asks
//! each page's API calls — concurrently, as the page does — many times, reporting the median and p95 wall time
//! per page, and what the app ships (its files) and each page's answer size.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Profiles in the store
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Times each page is loaded
    #[arg(long, default_value_t = 30)]
    rounds: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A deterministic order history: every third profile buys one to four times over the last year.
fn orders_of(i: usize, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    if !i.is_multiple_of(3) {
        return Vec::new();
    }
    let n = 1 + (i / 3) % 4;
    (0..n)
        .map(|k| {
            let days_ago = ((i * 7919 + k * 104_729) % 360) as i64 + 1;
            let revenue = 20.0 + ((i * 31 + k * 17) % 180) as f64;
            let category = ["Coffee", "Tea", "Skincare", "Bags", "Home"][(i + k) % 5];
            json!({"type": "track", "userId": format!("u{i}"), "event": "Order Completed",
                "timestamp": (now - chrono::Duration::days(days_ago)).to_rfc3339(),
                "messageId": format!("o{i}-{k}"),
                "properties": {"order_id": format!("o{i}-{k}"), "revenue": revenue, "total": revenue, "currency": "USD",
                    "products": [{"product_id": format!("p{}", (i + k) % 300), "category": category, "price": revenue, "quantity": 1}]}})
        })
        .collect()
}

fn build_store(config: &Config, profiles: usize) -> Result<(String, u64)> {
    let node = crate::node::start_node(config)?;
    let now = kizuna_types::Clock::now(node.clock.as_ref());
    let source = node.store.create_source("bench", true, kizuna_profiles::DataKind::FirstParty, now)?;
    let (_, admin_key) = node.store.create_api_key("bench-admin", now)?;
    let runtime = crate::node::runtime()?;
    eprintln!("loading {profiles} profiles and their orders…");
    let started = Instant::now();
    let mut chunk = Vec::with_capacity(5_000);
    let mut events = 0u64;
    let cities = ["Tokyo", "Osaka", "Fukuoka", "Seattle", "Berlin", "London"];
    for i in 0..profiles {
        let mut messages = vec![json!({"type": "identify", "userId": format!("u{i}"), "traits": {
            "email": format!("customer{i}@bench.example"), "first_name": format!("First{}", i % 997),
            "last_name": format!("Last{}", i % 1009), "city": cities[i % cities.len()]}})];
        messages.extend(orders_of(i, now));
        for message in messages {
            chunk.push(kizuna_ingest::parse_message(message, now)?);
            events += 1;
        }
        if chunk.len() >= 5_000 || i + 1 == profiles {
            runtime.block_on(node.pipeline.ingest(&source, std::mem::take(&mut chunk)))?;
        }
        if i % 100_000 == 99_999 {
            eprintln!("  {} profiles, {events} events, {:.0} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    runtime.block_on(node.membership.sync())?;
    eprintln!("loaded {events} events in {:.0} s; running analytics…", started.elapsed().as_secs_f64());
    let t = Instant::now();
    crate::node::run_analytics_now(config, &node, "bench")?;
    eprintln!("analytics in {:.0} s; starter segments, templates and flows…", t.elapsed().as_secs_f64());
    for name in ["repeat-buyers", "lapsed-90d", "high-aov", "vip-top-spenders"] {
        if let Some(template) = kizuna_segments::templates::template(name) {
            let condition = kizuna_segments::parse(template.text)?;
            runtime.block_on(node.membership.save(name, template.description, condition))?;
        }
    }
    runtime.block_on(node.membership.sync())?;
    for (name, definition) in kizuna_messaging::starters::starter_templates() {
        node.messenger.save_template(name, &definition)?;
    }
    for starter in kizuna_flows::starters::starter_flows() {
        let _ = node.flows.save(starter.name, &starter.definition);
    }
    let pipeline = node.pipeline.clone();
    let membership = node.membership.clone();
    drop(node);
    pipeline.shutdown();
    membership.shutdown();
    Ok((admin_key, events))
}

struct Page {
    name: &'static str,
    requests: Vec<(reqwest::Method, String, Option<Value>)>,
}

fn get(path: impl Into<String>) -> (reqwest::Method, String, Option<Value>) {
    (reqwest::Method::GET, path.into(), None)
}

pub fn run(config: &Config, args: AdminArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    config.data_dir = dir.path().to_path_buf();
    config.analytics_interval_minutes = 0;
    let build_started = Instant::now();
    let (key, events) = build_store(&config, args.profiles)?;
    let build_s = build_started.elapsed().as_secs_f64();

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("KIZUNA_LOG", "warn")
        .env("KIZUNA_ANALYTICS_INTERVAL_MINUTES", "0")
        .stdout(Stdio::null())
        .spawn()
        .context("start kizuna serve")?;
    let runtime = crate::node::runtime()?;
    let result = runtime.block_on(measure(&base, &key, args.rounds, args.profiles));
    let _ = server.kill();
    let _ = server.wait();
    let (rows, shipped) = result?;

    let today = chrono::Utc::now().date_naive();
    println!(
        "admin web app on {} profiles ({events} events; store built in {build_s:.0} s), {} rounds, {today}",
        args.profiles, args.rounds
    );
    println!("app files shipped once: {shipped} bytes (HTML, CSS, JS modules; no framework)");
    println!("{:<34} {:>9} {:>9} {:>10}", "page (its API calls, concurrently)", "median ms", "p95 ms", "bytes");
    for (name, median, p95, bytes) in rows {
        println!("{name:<34} {median:>9.1} {p95:>9.1} {bytes:>10}");
    }
    Ok(())
}

async fn fetch(
    http: reqwest::Client,
    url: String,
    key: String,
    method: reqwest::Method,
    body: Option<Value>,
) -> Result<bytes::Bytes> {
    let mut request = http.request(method, &url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {}", String::from_utf8_lossy(&bytes));
    Ok(bytes)
}

async fn measure(
    base: &str,
    key: &str,
    rounds: usize,
    profiles: usize,
) -> Result<(Vec<(&'static str, f64, f64, usize)>, usize)> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        fetch(http.clone(), format!("{base}{path}"), key.to_owned(), method, body)
    };
    let mut shipped = 0usize;
    for path in ["/admin/", "/admin/assets/app.css"] {
        shipped += call(reqwest::Method::GET, path.to_owned(), None).await?.len();
    }
    let modules =
        ["app", "api", "dom", "i18n", "charts", "locales/en", "locales/ja"].iter().map(|m| format!("js/{m}.js")).chain(
            [
                "home",
                "customers",
                "profile",
                "segments",
                "segment-edit",
                "flows",
                "flow",
                "messages",
                "template",
                "recommendations",
                "analytics",
                "settings",
            ]
            .iter()
            .map(|p| format!("js/pages/{p}.js")),
        );
    for module in modules {
        shipped += call(reqwest::Method::GET, format!("/admin/assets/{module}"), None).await?.len();
    }

    // A buyer (every third profile) from the middle of the store, and another customer to search for.
    let buyer = 3 * (profiles / 6);
    let profile: Value = serde_json::from_slice(
        &call(reqwest::Method::GET, format!("/api/profiles/by/email/customer{buyer}@bench.example"), None).await?,
    )?;
    let searched = format!("/api/profiles/by/email/customer{}@bench.example", profiles * 7 / 9);
    let id = profile["id"].as_str().context("profile id")?.to_owned();
    let pages = vec![
        Page { name: "home", requests: vec![get("/api/dashboard?days=30"), get("/api/settings")] },
        Page { name: "customers (first page)", requests: vec![get("/api/profiles?limit=50")] },
        Page { name: "customer search by email", requests: vec![get(searched)] },
        Page {
            name: "customer profile",
            requests: vec![
                get(format!("/api/profiles/{id}")),
                get(format!("/api/profiles/{id}/identities")),
                get(format!("/api/profiles/{id}/segments")),
                get(format!("/api/profiles/{id}/flows")),
                get(format!("/api/messages?profile_id={id}&limit=20")),
                get(format!("/api/profiles/{id}/events?limit=25")),
            ],
        },
        Page { name: "segments", requests: vec![get("/api/segments"), get("/api/segments/templates")] },
        Page {
            name: "segment (definition + members)",
            requests: vec![get("/api/segments/repeat-buyers"), get("/api/segments/repeat-buyers/members?limit=25")],
        },
        Page {
            name: "segment builder: translate",
            requests: vec![(
                reqwest::Method::POST,
                "/api/segments/translate".into(),
                Some(json!({"text": "computed.orders_count >= 2 and traits.city = \"Tokyo\""})),
            )],
        },
        Page {
            name: "segment builder: preview count",
            requests: vec![(
                reqwest::Method::POST,
                "/api/segments/preview".into(),
                Some(json!({"text": "computed.orders_count >= 2 and traits.city = \"Tokyo\"", "sample": 10})),
            )],
        },
        Page { name: "flows", requests: vec![get("/api/flows"), get("/api/flows/starters")] },
        Page {
            name: "flow",
            requests: vec![get("/api/flows/cart_abandonment"), get("/api/flows/cart_abandonment/report")],
        },
        Page {
            name: "messages",
            requests: vec![
                get("/api/templates"),
                get("/api/messages?limit=50"),
                get("/api/messaging/report?group=template&days=30"),
            ],
        },
        Page {
            name: "template preview",
            requests: vec![(
                reqwest::Method::POST,
                "/api/templates/welcome/preview".into(),
                Some(json!({"profile_id": id})),
            )],
        },
        Page {
            name: "recommendations",
            requests: vec![get("/api/recommendations/placements"), get("/api/recommendations/status")],
        },
        Page {
            name: "analytics",
            requests: vec![
                get("/api/analytics/runs?limit=1"),
                get("/api/analytics/cohorts"),
                get("/api/analytics/rfm"),
                get("/api/analytics/distributions"),
                get("/api/analytics/holdout"),
                get("/api/messaging/report?group=flow&days=90&interval=day"),
            ],
        },
        Page { name: "settings", requests: vec![get("/api/sources"), get("/api/keys"), get("/api/settings")] },
    ];
    let mut rows = Vec::new();
    for page in &pages {
        let mut times = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for round in 0..=rounds {
            let started = Instant::now();
            let tasks: Vec<_> = page
                .requests
                .iter()
                .map(|(method, path, body)| tokio::spawn(call(method.clone(), path.clone(), body.clone())))
                .collect();
            let mut answers = Vec::with_capacity(tasks.len());
            for task in tasks {
                answers.push(task.await??);
            }
            // Round 0 warms the caches (a page is rarely opened cold twice).
            if round > 0 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            bytes = answers.iter().map(|a| a.len()).sum();
        }
        times.sort_by(f64::total_cmp);
        rows.push((page.name, percentile(&times, 0.5), percentile(&times, 0.95), bytes));
    }
    Ok((rows, shipped))
}
