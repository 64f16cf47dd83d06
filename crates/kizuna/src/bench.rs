//! `kizuna bench ingest`: the ingest benchmark. Simulated events go over loopback HTTP in batches to a
//! separate `kizuna serve` process (this binary), from concurrent clients, for a fixed time. In the same run
//! it measures JSON parsing alone on the same payloads, the ceiling any ingest path is bounded by.

use crate::config::Config;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kizuna_simulate::{SimConfig, Simulator};
use kizuna_store::{SqliteStore, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum Which {
    /// Sustained durable ingest throughput and latency over loopback HTTP
    Ingest(IngestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Seconds of sustained load
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Concurrent HTTP clients
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per request
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Simulated customers to generate payloads from (about 50 events each)
    #[arg(long, default_value_t = 60_000)]
    customers: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Port for the benchmarked server on 127.0.0.1
    #[arg(long, default_value_t = 7429)]
    port: u16,
}

pub fn run(config: &Config, which: Which) -> Result<()> {
    match which {
        Which::Ingest(args) => ingest(config, args),
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn ingest(config: &Config, args: IngestArgs) -> Result<()> {
    let data_dir = std::env::temp_dir().join(format!("kizuna-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let store = SqliteStore::open(&data_dir, config.durability)?;
    let now = chrono::Utc::now();
    let source = store.create_source("bench", true, kizuna_profiles::DataKind::FirstParty, now)?;
    let (_, admin_key) = store.create_api_key("bench", now)?;
    drop(store);

    eprintln!("generating payloads from {} simulated customers…", args.customers);
    let started = Instant::now();
    let simulator = Simulator::new(SimConfig {
        seed: args.seed,
        customers: args.customers,
        start: now - chrono::Duration::days(365),
        ..SimConfig::default()
    });
    let mut payloads: Vec<bytes::Bytes> = Vec::new();
    let mut batch = Vec::with_capacity(args.batch);
    let mut total_events = 0usize;
    for message in simulator.messages() {
        batch.push(message);
        if batch.len() == args.batch {
            total_events += batch.len();
            payloads.push(serde_json::to_vec(&serde_json::json!({ "batch": batch }))?.into());
            batch.clear();
        }
    }
    let payload_bytes: usize = payloads.iter().map(|p| p.len()).sum();
    eprintln!(
        "{} requests, {} events, {:.0} MB in {:.1}s",
        payloads.len(),
        total_events,
        payload_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let payloads = Arc::new(payloads);

    let ceiling = json_ceiling(&payloads, args.batch)?;
    eprintln!("JSON parse ceiling: {:.0} events/s; parse+validate: {:.0} events/s", ceiling.0, ceiling.1);

    let address = format!("127.0.0.1:{}", args.port);
    let exe = std::env::current_exe()?;
    let durability = match config.durability {
        kizuna_store::Durability::Full => "full",
        kizuna_store::Durability::Process => "process",
    };
    let mut server = std::process::Command::new(exe)
        .args(["serve", "--listen", &address, "--data-dir"])
        .arg(&data_dir)
        .env("KIZUNA_DURABILITY", durability)
        .env("KIZUNA_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("cannot start the server")?;
    let pid = server.id();
    let runtime = crate::node::runtime()?;
    let base = format!("http://{address}");
    let result = runtime.block_on(drive(&base, &source.write_key, &admin_key, payloads.clone(), &args, pid));
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data_dir);
    let outcome = result?;

    let seconds = outcome.elapsed.as_secs_f64();
    let rate = outcome.events as f64 / seconds;
    let mut latencies = outcome.latencies_us;
    latencies.sort_unstable();
    let per_100k = |kib: u64| kib as f64 / 1024.0 / (outcome.profiles.max(1) as f64) * 100_000.0;
    println!("## kizuna bench ingest");
    println!(
        "- load: {} clients, {} events/request, {:.1} s, durability {durability}",
        args.clients, args.batch, seconds
    );
    println!(
        "- sustained: {:.0} events/s ({} events, {} requests, {} errors)",
        rate,
        outcome.events,
        latencies.len(),
        outcome.errors
    );
    println!(
        "- latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "- ceiling (JSON parse only, 2 threads, same payloads): {:.0} events/s; ingest/ceiling = {:.3}",
        ceiling.0,
        rate / ceiling.0
    );
    println!(
        "- parse + Segment validation (2 threads): {:.0} events/s; ingest/that = {:.3}",
        ceiling.1,
        rate / ceiling.1
    );
    println!(
        "- server memory: RSS {:.0} MB (peak {:.0} MB) with {} profiles = {:.1} MB per 100k profiles (peak {:.1})",
        outcome.rss_kib as f64 / 1024.0,
        outcome.peak_kib as f64 / 1024.0,
        outcome.profiles,
        per_100k(outcome.rss_kib),
        per_100k(outcome.peak_kib)
    );
    Ok(())
}

/// Parses every payload once with serde_json (the ceiling) and once through the full Segment validation.
fn json_ceiling(payloads: &[bytes::Bytes], batch: usize) -> Result<(f64, f64)> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let sample = &payloads[..payloads.len().min(20_000)];
    let measure = |validate: bool| -> f64 {
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = sample.get(i) else { break };
                        if validate {
                            let _ = kizuna_ingest::parse_request(
                                kizuna_ingest::Endpoint::Batch,
                                body,
                                chrono::Utc::now(),
                                &kizuna_ingest::Limits::default(),
                            );
                        } else {
                            let _ = serde_json::from_slice::<serde_json::Value>(body);
                        }
                    }
                });
            }
        });
        (sample.len() * batch) as f64 / started.elapsed().as_secs_f64()
    };
    Ok((measure(false), measure(true)))
}

struct Outcome {
    events: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    profiles: u64,
    rss_kib: u64,
    peak_kib: u64,
}

async fn drive(
    base: &str,
    write_key: &str,
    admin_key: &str,
    payloads: Arc<Vec<bytes::Bytes>>,
    args: &IngestArgs,
    pid: u32,
) -> Result<Outcome> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let ready = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(&ready).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("the server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{base}/v1/batch");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (client, url, key, payloads, next, stop) =
            (client.clone(), url.clone(), write_key.to_owned(), payloads.clone(), next.clone(), stop.clone());
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut events, mut errors) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = payloads.get(i) else { break };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .basic_auth(&key, Some(""))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(sent.elapsed().as_micros() as u64);
                        events += batch;
                    }
                    _ => errors += 1,
                }
            }
            (latencies, events, errors)
        }));
    }
    let duration = Duration::from_secs(args.duration);
    let mut peak = (0u64, 0u64);
    while started.elapsed() < duration && next.load(Ordering::Relaxed) < payloads.len() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(rss) = rss_kib(pid) {
            peak = (rss.0, peak.1.max(rss.1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut outcome = Outcome {
        events: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        profiles: 0,
        rss_kib: 0,
        peak_kib: 0,
    };
    for task in tasks {
        let (latencies, events, errors) = task.await?;
        outcome.latencies_us.extend(latencies);
        outcome.events += events;
        outcome.errors += errors;
    }
    outcome.elapsed = started.elapsed();
    if next.load(Ordering::Relaxed) >= payloads.len() {
        eprintln!(
            "note: every generated payload was sent before the duration ended; raise --customers for longer runs"
        );
    }
    let stats: serde_json::Value =
        client.get(format!("{base}/api/stats")).bearer_auth(admin_key).send().await?.json().await?;
    outcome.profiles = stats["profiles"].as_u64().unwrap_or(0);
    let (rss, hwm) = rss_kib(pid).unwrap_or(peak);
    outcome.rss_kib = rss;
    outcome.peak_kib = hwm.max(peak.1);
    Ok(outcome)
}
