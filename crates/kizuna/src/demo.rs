//! `kizuna demo`: a fresh data directory, a simulated store loaded through the real pipeline, and a server.

use crate::config::Config;
use crate::node;
use anyhow::{Context, Result};
use kizuna_identity::{IdKind, Identifier};
use kizuna_profiles::DataKind;
use kizuna_simulate::{SimConfig, Simulator};
use std::path::PathBuf;

const MARKER: &str = "KIZUNA_DEMO";

pub fn run(mut config: Config, customers: usize, no_serve: bool) -> Result<()> {
    if config.data_dir.as_path() == std::path::Path::new(crate::config::DEFAULT_DATA_DIR) {
        config.data_dir = PathBuf::from("./kizuna-demo-data");
    }
    fresh_dir(&config.data_dir)?;
    let node = node::start_node(&config)?;
    let now = node.clock.now();
    let source = node.store.create_source("demo-storefront", true, DataKind::FirstParty, now)?;
    let (_, admin_key) = node.store.create_api_key("demo-admin", now)?;
    let admin_password = demo_admin_password();
    let hash = kizuna_server::session::hash_password(&admin_password).map_err(|e| anyhow::anyhow!(e.message))?;
    node.store.admins().create_admin(DEMO_ADMIN_EMAIL, &hash, now)?;

    let days = 365;
    let start = now - chrono::Duration::days(days);
    let simulator = Simulator::new(SimConfig { customers, start, days: days as u32, ..SimConfig::default() });
    node.store.upsert_products(simulator.products(), now)?;
    node.recommender.upsert_products(simulator.products());
    let progress = indicatif::ProgressBar::new(customers as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("loading simulated store {bar:30} {pos}/{len} customers {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let events = node::load_simulated(&node, &source, &simulator, customers, |_| progress.inc(1))?;
    progress.finish_and_clear();
    let analytics = node::run_analytics_now(&config, &node, "demo")?;
    let segments = starter_segments(&node)?;
    node.recommender.sync();
    let model = node.recommender.train().context("recommendation model training failed")?;
    for (name, definition) in kizuna_messaging::starters::starter_templates() {
        node.messenger.save_template(name, &definition).with_context(|| format!("starter template {name}"))?;
    }
    // Every starter flow as a draft (its templates and segments are installed above); nothing runs until it is
    // activated, but each can be replayed over the simulated history.
    let mut flows = Vec::new();
    for starter in kizuna_flows::starters::starter_flows() {
        match node.flows.save(starter.name, &starter.definition) {
            Ok(_) => flows.push(starter.name),
            Err(e) => tracing::warn!(flow = starter.name, error = %e, "starter flow not installed"),
        }
    }
    let replay = node
        .flows
        .simulate("cart_abandonment", &kizuna_flows_service::SimRequest { days: 30, sample: 0, definition: None })
        .map_err(|e| anyhow::anyhow!("replaying the cart flow: {e}"))?;
    let counts = node.store.counts()?;
    let example = (0..customers)
        .filter_map(|i| {
            let id =
                node.store.profile_by_identifier(&Identifier::new(IdKind::UserId, Simulator::user_id(i))).ok()??;
            let profile = node.store.profile(id).ok()??;
            (profile.state.computed.orders_count() >= 2).then_some(profile)
        })
        .next();
    let base = format!("http://{}", config.listen);
    println!();
    println!(
        "Kizuna demo: {events} simulated events from {customers} customers loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("  profiles: {}  events: {}  products: {}", counts.profiles, counts.events, counts.products);
    println!(
        "  analytics: {} buyers scored (P(alive), churn risk, CLV, RFM) in {:.1}s",
        analytics.scored,
        analytics.duration_ms / 1e3
    );
    println!("  segments (from the starter templates, kept current on every event):");
    for (name, members) in &segments {
        println!("    {name:<24} {members:>6} members");
    }
    println!(
        "  recommendations: {} placements; personalized model on {} products from {} shoppers trained in {:.2}s",
        node.recommender.placements().len(),
        model.items,
        model.users,
        model.train_seconds
    );
    println!("  data directory: {}", config.data_dir.display());
    println!();
    println!("API base:       {base}");
    println!("write key:      {}", source.write_key);
    println!("admin API key:  {admin_key}");
    println!("web app:        {base}/admin/  (sign in as {DEMO_ADMIN_EMAIL} / {admin_password})");
    println!();
    println!("Try:");
    if let Some(p) = &example {
        let user = p.identities.iter().find(|i| i.kind == IdKind::UserId).map(|i| i.value.clone()).unwrap_or_default();
        println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/profiles/by/user_id/{user}");
        println!("  curl -H 'Authorization: Bearer {admin_key}' '{base}/api/profiles/{}/events?limit=5'", p.id);
        println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/profiles/{}/identities", p.id);
        println!("  curl '{base}/api/recommendations/for_you?key={}&profile_id={}'", source.write_key, p.id);
        println!("  curl '{base}/api/recommendations/post_purchase?key={}&profile_id={}'", source.write_key, p.id);
    }
    if let Some(product) = simulator.products().first() {
        println!("  curl '{base}/api/recommendations/cart_cross_sell?key={}&cart={}'", source.write_key, product.id);
        println!("  curl '{base}/api/recommendations/product_similar?key={}&product={}'", source.write_key, product.id);
    }
    println!("  curl '{base}/api/recommendations/home_trending?key={}&country=JP'", source.write_key);
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/recommendations/placements");
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/segments");
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/segments/repeat-buyers/members");
    println!(
        "  curl -H 'Authorization: Bearer {admin_key}' {base}/api/segments/preview -d '{{\"text\": \"computed.city = \\\"Tokyo\\\" and count of event \\\"Order Completed\\\" >= 2\"}}'"
    );
    println!("  curl -u '{}:' -H 'Content-Type: application/json' {base}/v1/track \\", source.write_key);
    println!(
        "       -d '{{\"userId\":\"cust_0\",\"event\":\"Product Viewed\",\"properties\":{{\"product_id\":\"p1\"}}}}'"
    );
    if let Some(p) = &example {
        let cart = simulator.products().first().map(|product| product.id.clone()).unwrap_or_default();
        let event = serde_json::json!({"name": "Checkout Started",
            "properties": {"value": 120, "products": [{"product_id": cart, "name": "the item in the cart", "quantity": 1}]}});
        if let Ok(kizuna_messaging::Rendered::Email { subject, text, .. }) =
            node.messenger.preview(Ok("cart_abandonment"), Some(p.id), &event)
        {
            println!();
            println!(
                "  messaging: {} starter templates; the cart-abandonment email for profile {}:",
                kizuna_messaging::starters::starter_templates().len(),
                p.id
            );
            println!("    Subject: {subject}");
            for line in text.lines().filter(|l| !l.trim().is_empty()).take(8) {
                println!("    | {line}");
            }
        }
        println!(
            "  curl -H 'Authorization: Bearer {admin_key}' -H 'Content-Type: application/json' {base}/api/templates/cart_abandonment/preview -d '{{\"profile_id\":\"{}\"}}'",
            p.id
        );
    }
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/templates");
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/messages");
    println!();
    let s = &replay.summary;
    println!("  flows: {} starter flows installed as drafts ({})", flows.len(), flows.join(", "));
    println!(
        "  cart_abandonment replayed over the last 30 days of history ({:.0} ms, nothing sent): {} would enter, \
         {} emails would go, {} held back by the governor (most simulated customers never opted in to marketing \
         email), {} converted within 5 days ({:.2} revenue)",
        replay.took_ms,
        s.entered,
        s.sends.get("send").copied().unwrap_or(0),
        s.sends.iter().filter(|(k, _)| k.as_str() != "send").map(|(_, v)| v).sum::<u64>(),
        s.converted,
        s.revenue
    );
    println!(
        "  curl -H 'Authorization: Bearer {admin_key}' -H 'Content-Type: application/json' {base}/api/flows/cart_abandonment/simulate -d '{{\"days\":30,\"sample\":3}}'"
    );
    println!("  curl -X POST -H 'Authorization: Bearer {admin_key}' {base}/api/flows/cart_abandonment/activate");
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/flows");
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/analytics/rfm");
    println!("  curl -H 'Authorization: Bearer {admin_key}' {base}/api/analytics/journey");
    println!("  curl {base}/openapi.json   curl {base}/metrics");
    println!();
    if no_serve {
        let pipeline = node.pipeline.clone();
        let membership = node.membership.clone();
        drop(node);
        pipeline.shutdown();
        membership.shutdown();
        return Ok(());
    }
    println!("Serving on {base} — press Ctrl-C to stop.");
    node::server_runtime(&config)?.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        node::serve_node(&config, &node, listener).await
    })
}

const DEMO_ADMIN_EMAIL: &str = "admin@demo.kizuna.dev";

/// KIZUNA_ADMIN_PASSWORD when set (scripts and tests sign in with it), otherwise a fresh random one.
fn demo_admin_password() -> String {
    std::env::var("KIZUNA_ADMIN_PASSWORD").ok().filter(|p| p.chars().count() >= 10).unwrap_or_else(|| {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyz23456789";
        let mut rng = rand::rng();
        (0..16).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
    })
}

/// The demo always starts from nothing, but never wipes a directory it did not create.
fn fresh_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists() {
        let is_demo = dir.join(MARKER).exists();
        let is_empty = std::fs::read_dir(dir)?.next().is_none();
        if !is_demo && !is_empty {
            anyhow::bail!("{} holds data that is not a previous demo; choose an empty --data-dir", dir.display());
        }
        if is_demo {
            std::fs::remove_dir_all(dir)?;
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(MARKER), "created by `kizuna demo`; deleted and recreated by the next demo\n")?;
    Ok(())
}

/// Starter segments the demo creates, so the segments API has something to show.
const DEMO_SEGMENTS: &[&str] = &[
    "repeat-buyers",
    "one-and-done-at-risk",
    "lapsed-90d",
    "cart-abandoners-24h",
    "browse-abandoners",
    "vip-top-spenders",
    "at-risk-by-churn",
];

pub(crate) fn starter_segments(node: &node::Node) -> Result<Vec<(String, usize)>> {
    let runtime = node::runtime()?;
    let mut out = Vec::new();
    for name in DEMO_SEGMENTS {
        let template = kizuna_segments::templates::template(name).context("starter template exists")?;
        let condition = kizuna_segments::parse(template.text)?;
        let saved = runtime.block_on(node.membership.save(name, template.description, condition))?;
        out.push((saved.name, saved.members));
    }
    Ok(out)
}
