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
    /// Resident memory of a server holding N simulated customers' profiles
    Memory(MemoryArgs),
    /// BG/NBD + Gamma-Gamma fits and predictions on CDNOW and a simulated store, against Python lifetimes
    Analytics(crate::bench_analytics::AnalyticsArgs),
    /// Segment full build on 1M profiles / 20M events, and event-to-Segment-Entered latency under load
    Segments(crate::bench_segments::SegmentsArgs),
    /// Recommendations: EASE vs implicit's ALS on ML-100k, and serving latency on 50k products / 1M profiles
    Recs(crate::bench_recs::RecsArgs),
    /// Messaging: cart emails with a 3-product recommendation block rendered and handed to SMTP servers
    Messaging(crate::bench_messaging::MessagingArgs),
    /// Flows: 1M profiles enter a 3-step flow at once by segment entry; time to all first messages, timers
    Flows(crate::bench_flows::FlowsArgs),
    /// Admin web app: each page's API calls on a 1M-profile store (median and p95), and what the app ships
    Admin(crate::bench_admin::AdminArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Store sizes to measure, in simulated customers (profiles come out a little higher: anonymous visitors
    /// count too). With two or more sizes the marginal memory per 100k profiles is the slope between them,
    /// which separates what grows with profiles from fixed costs such as SQLite's bounded page caches.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000usize, 100_000])]
    customers: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 7430)]
    port: u16,
    /// Keep the loaded data directories (their paths are printed) to profile a server on them afterwards.
    #[arg(long)]
    keep: bool,
    /// Save the demo's seven starter segments before loading, so the server also holds what segments keep per
    /// profile, as a brand's server with segments does.
    #[arg(long)]
    segments: bool,
    /// Start the server this many times on each store and take the median reading: one start's reading moves
    /// by several MB from the next (when start-up jobs finish and what the allocator keeps), which two single
    /// readings put straight into the slope.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    starts: u32,
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
    /// Order of the events: `person` sends each customer's history in one go (a replay or an import: a batch
    /// holds one or two people); `time` sends every customer's events merged in time order, as a live store
    /// receives them (a batch holds up to a hundred people)
    #[arg(long, value_enum, default_value_t = EventOrder::Person)]
    order: EventOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventOrder {
    Person,
    Time,
}

pub fn run(config: &Config, which: Which) -> Result<()> {
    match which {
        Which::Ingest(args) => ingest(config, args),
        Which::Memory(args) => memory(config, args),
        Which::Analytics(args) => crate::bench_analytics::run(args),
        Which::Segments(args) => crate::bench_segments::run(config, args),
        Which::Recs(args) => crate::bench_recs::run(args),
        Which::Messaging(args) => crate::bench_messaging::run(config, args),
        Which::Flows(args) => crate::bench_flows::run(config, args),
        Which::Admin(args) => crate::bench_admin::run(config, args),
    }
}

/// Starts `kizuna serve` on `data_dir`, waits until ready, sends one batch and reads a profile (so the write
/// path and a reader are warm), and returns the resident memory it settles at, in KiB, with the profile count.
/// `trains`: the store has product events, so a model will train (an empty store never gets one).
fn serve_and_measure(
    data_dir: &std::path::Path,
    port: u16,
    write_key: &str,
    admin_key: &str,
    trains: bool,
    start: u32,
) -> Result<(u64, u64)> {
    let address = format!("127.0.0.1:{port}");
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", &address, "--data-dir"])
        .arg(data_dir)
        // Quiet unless asked (`KIZUNA_LOG=info` shows what each start did).
        .env("KIZUNA_LOG", std::env::var("KIZUNA_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("cannot start the server")?;
    let pid = server.id();
    let base = format!("http://{address}");
    let result = crate::node::runtime()?.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            anyhow::ensure!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // New people on every start, as a live store gets them: the first new identifier after a restart grows
        // what restore sized exactly, and a start that met only known people read 30 MB lower at 100k.
        let batch = serde_json::json!({"batch": (0..100).map(|i| serde_json::json!(
            {"type": "track", "userId": format!("warm-{start}-{i}"), "event": "Product Viewed"})).collect::<Vec<_>>()});
        client
            .post(format!("{base}/v1/batch"))
            .basic_auth(write_key, Some(""))
            .json(&batch)
            .send()
            .await?
            .error_for_status()?;
        let stats: serde_json::Value =
            client.get(format!("{base}/api/stats")).bearer_auth(admin_key).send().await?.json().await?;
        client.get(format!("{base}/api/profiles/by/user_id/cust_1")).bearer_auth(admin_key).send().await?;
        // Ready is not idle: start-up jobs (the recommendation model's first training, among others) run on after
        // it and hold memory for seconds. The first training is waited for (up to two minutes: a store too small
        // to train on never gets a model); two readings 5 s apart had agreed while it still ran, once, and put
        // 40 MB on the figure. Then the figure is what the server settles at: the first of 5-second readings
        // within 1 MB of the one before (up to a minute); the peak is printed beside it.
        let trained_by = Instant::now() + Duration::from_secs(120);
        while trains && Instant::now() < trained_by {
            let status: serde_json::Value = client
                .get(format!("{base}/api/recommendations/status"))
                .bearer_auth(admin_key)
                .send()
                .await?
                .json()
                .await?;
            if !status["model"].is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let read = || rss_kib(pid).ok_or_else(|| anyhow::anyhow!("cannot read the server's memory"));
        let (mut rss, _) = read()?;
        for waited in (5..=60).step_by(5) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (now, peak) = read()?;
            eprintln!("  {waited} s after the requests: RSS {} MB (peak so far {} MB)", now / 1024, peak / 1024);
            let settled = now.abs_diff(rss) < 1024;
            rss = now;
            if settled {
                break;
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let parts: Vec<&str> = status.lines().filter(|l| l.starts_with("Rss")).collect();
            eprintln!("  {}", parts.join("; "));
        }
        Ok((rss, stats["profiles"].as_u64().unwrap_or(0)))
    });
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = server.wait();
    result
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

/// A process's CPU time so far (user, system), from `/proc/{pid}/stat`: it counts every thread, also those that
/// have exited. Linux reports it in USER_HZ ticks, 100 a second on every architecture it exposes to programs.
fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some((ticks(11)? as f64 / 100.0, ticks(12)? as f64 / 100.0))
}

/// The server's threads, grouped by what they do, in the order they are reported.
const THREAD_GROUPS: [&str; 5] = ["writer", "request threads", "fsync", "checkpointer", "others"];

fn thread_group(name: &str) -> &'static str {
    match name {
        "kizuna-writer" => "writer",
        "kizuna-fsync" => "fsync",
        // A thread's name is cut to 15 bytes: `kizuna-checkpointer` reads `kizuna-checkpoi`.
        _ if name.starts_with("kizuna-checkpoi") => "checkpointer",
        _ if name.starts_with("tokio-rt-worker") => "request threads",
        _ => "others",
    }
}

/// One line of `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU, nanoseconds runnable but waiting for one.
fn parse_schedstat(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Per thread group, the nanoseconds on a CPU and waiting for one so far (`THREAD_GROUPS` order). Threads that exit
/// take their time with them, so only the long-lived ones are worth reading this way; none when the kernel does not
/// keep scheduler statistics.
fn thread_times(pid: u32) -> Option<[(u64, u64); THREAD_GROUPS.len()]> {
    let mut times = [(0, 0); THREAD_GROUPS.len()];
    let mut read_any = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let (Ok(name), Ok(stat)) =
            (std::fs::read_to_string(task.path().join("comm")), std::fs::read_to_string(task.path().join("schedstat")))
        else {
            continue; // the thread exited meanwhile
        };
        let Some((on_cpu, waiting)) = parse_schedstat(&stat) else { continue };
        let group = thread_group(name.trim());
        let slot = THREAD_GROUPS.iter().position(|g| *g == group).unwrap_or(THREAD_GROUPS.len() - 1);
        times[slot].0 += on_cpu;
        times[slot].1 += waiting;
        read_any = true;
    }
    read_any.then_some(times)
}

/// The whole machine's busy and total CPU time so far (all cores), from the first line of `/proc/stat`.
fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already counted in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
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
    let (payloads, total_events) = match args.order {
        EventOrder::Person => {
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
            (payloads, total_events)
        }
        EventOrder::Time => time_ordered_payloads(&simulator, args.batch)?,
    };
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
        "- load: {} clients, {} events/request, {} order, {:.1} s, durability {durability}",
        args.clients,
        args.batch,
        match args.order {
            EventOrder::Person => "person",
            EventOrder::Time => "time",
        },
        seconds
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
    if let Some((user, system)) = outcome.server_cpu {
        let per_event = |seconds: f64| seconds * 1e6 / outcome.events.max(1) as f64;
        println!(
            "- server CPU: {:.1} µs per event (user {:.1}, system {:.1}); {:.2} cores busy on average",
            per_event(user + system),
            per_event(user),
            per_event(system),
            (user + system) / seconds
        );
    }
    if let Some(threads) = &outcome.server_threads {
        // Where the serial writer stands tells how far the rate can go: on a CPU plus waiting for one near 100% of
        // the run means it is the bottleneck, whatever the other threads do.
        let per_event = |ns: u64| ns as f64 / 1000.0 / outcome.events.max(1) as f64;
        let groups: Vec<String> = THREAD_GROUPS
            .iter()
            .zip(threads)
            .map(|(group, (on_cpu, waiting))| format!("{group} {:.1} / {:.1}", per_event(*on_cpu), per_event(*waiting)))
            .collect();
        println!("- server threads, µs per event on a CPU / waiting for one: {}", groups.join(", "));
        let (writer_on, writer_waiting) = threads[0];
        let share = |ns: u64| ns as f64 / 1e9 / seconds * 100.0;
        println!(
            "- the writer thread was on a CPU {:.0}% of the run and waiting for one {:.0}%",
            share(writer_on),
            share(writer_waiting)
        );
    }
    if let Some(busy) = outcome.machine_busy {
        println!("- whole machine busy {:.0}% of its CPU time during the load", busy * 100.0);
    }
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

/// Every customer's messages merged in time order, in batches of `batch` (whole batches only, as in person
/// order). Simulated timestamps are all written alike (RFC 3339, UTC, milliseconds), so their text sorts as time.
fn time_ordered_payloads(simulator: &Simulator, batch: usize) -> Result<(Vec<bytes::Bytes>, usize)> {
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for message in simulator.messages() {
        let at = message.get("timestamp").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        messages.push((at, serde_json::to_vec(&message)?));
    }
    // Stable: one person's messages at the same instant keep their order.
    messages.sort_by(|a, b| a.0.cmp(&b.0));
    let mut payloads = Vec::with_capacity(messages.len() / batch.max(1));
    let mut total_events = 0usize;
    for chunk in messages.chunks_exact(batch.max(1)) {
        let mut body = Vec::with_capacity(chunk.iter().map(|(_, m)| m.len() + 1).sum::<usize>() + 16);
        body.extend_from_slice(b"{\"batch\":[");
        for (i, (_, message)) in chunk.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(message);
        }
        body.extend_from_slice(b"]}");
        total_events += chunk.len();
        payloads.push(body.into());
    }
    Ok((payloads, total_events))
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
    /// The server's CPU seconds (user, system) spent during the load.
    server_cpu: Option<(f64, f64)>,
    /// The share of the machine's CPU time that was busy during the load (all processes).
    machine_busy: Option<f64>,
    /// Nanoseconds each server thread group spent on a CPU and waiting for one during the load.
    server_threads: Option<[(u64, u64); THREAD_GROUPS.len()]>,
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
    let cpu_before = cpu_seconds(pid);
    let threads_before = thread_times(pid);
    let machine_before = machine_cpu_ticks();
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
        server_cpu: None,
        machine_busy: None,
        server_threads: None,
    };
    for task in tasks {
        let (latencies, events, errors) = task.await?;
        outcome.latencies_us.extend(latencies);
        outcome.events += events;
        outcome.errors += errors;
    }
    outcome.elapsed = started.elapsed();
    if let (Some(before), Some(after)) = (cpu_before, cpu_seconds(pid)) {
        outcome.server_cpu = Some((after.0 - before.0, after.1 - before.1));
    }
    if let (Some(before), Some(after)) = (threads_before, thread_times(pid)) {
        let mut spent = [(0, 0); THREAD_GROUPS.len()];
        for ((spent, before), after) in spent.iter_mut().zip(before).zip(after) {
            *spent = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
        }
        outcome.server_threads = Some(spent);
    }
    if let (Some((busy0, total0)), Some((busy1, total1))) = (machine_before, machine_cpu_ticks()) {
        outcome.machine_busy = Some((busy1 - busy0) as f64 / (total1 - total0).max(1) as f64);
    }
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

fn memory(config: &Config, args: MemoryArgs) -> Result<()> {
    let root = std::env::temp_dir().join(format!("kizuna-bench-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut points: Vec<(usize, usize, u64, u64, u64)> = Vec::new();
    // The median of `args.starts` starts on one store, with every reading printed.
    let measure = |dir: &std::path::Path, write_key: &str, admin_key: &str, trains: bool| -> Result<(u64, u64)> {
        let mut readings = Vec::new();
        for start in 1..=args.starts {
            let (rss, profiles) = serve_and_measure(dir, args.port, write_key, admin_key, trains, start)?;
            eprintln!("  start {start} of {}: settled at {} MB", args.starts, rss / 1024);
            readings.push((rss, profiles));
        }
        readings.sort_unstable();
        Ok(readings[readings.len() / 2])
    };
    let empty = load_store(config, &root.join("empty"), 0, args.seed, args.segments)?;
    let (empty_rss, _) = measure(&root.join("empty"), &empty.0, &empty.1, false)?;
    for &customers in &args.customers {
        let dir = root.join(format!("c{customers}"));
        let started = Instant::now();
        let (write_key, admin_key, events) = load_store(config, &dir, customers, args.seed, args.segments)?;
        eprintln!("loaded {customers} customers ({events} events) in {:.0}s", started.elapsed().as_secs_f64());
        let (rss, profiles) = measure(&dir, &write_key, &admin_key, customers > 0)?;
        let disk: u64 = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        if args.keep {
            eprintln!("kept {} (write key {write_key}, admin key {admin_key})", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        points.push((customers, events, profiles, rss, disk));
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&root);
    }
    let mb = |kib: u64| kib as f64 / 1024.0;
    println!("## kizuna bench memory{}", if args.segments { " (with the seven starter segments)" } else { "" });
    if args.starts > 1 {
        println!("- each reading: the median of {} starts of the server on the same store", args.starts);
    }
    println!("- empty server: RSS {:.0} MB", mb(empty_rss));
    for (customers, events, profiles, rss, disk) in &points {
        println!(
            "- {customers} customers, {events} events, {profiles} profiles: RSS {:.0} MB ({:.0} MB above empty), {:.0} MB on disk",
            mb(*rss),
            mb(rss.saturating_sub(empty_rss)),
            *disk as f64 / 1e6
        );
    }
    if let (Some(first), Some(last)) = (points.first(), points.last())
        && last.2 > first.2
    {
        let slope = (last.3 as f64 - first.3 as f64) / 1024.0 / (last.2 - first.2) as f64 * 100_000.0;
        println!("- marginal memory: {slope:.1} MB per 100k profiles (slope between the smallest and largest store)");
    }
    Ok(())
}

/// Creates a store in `dir` and loads `customers` simulated customers through the real pipeline; returns
/// (write key, admin key, events loaded). With `segments`, the demo's starter segments are saved first.
fn load_store(
    config: &Config,
    dir: &std::path::Path,
    customers: usize,
    seed: u64,
    segments: bool,
) -> Result<(String, String, usize)> {
    let now = chrono::Utc::now();
    let store = SqliteStore::open(dir, config.durability)?;
    let source = store.create_source("bench", true, kizuna_profiles::DataKind::FirstParty, now)?;
    let (_, admin) = store.create_api_key("bench", now)?;
    drop(store);
    let node = crate::node::start_node(&Config { data_dir: dir.to_path_buf(), ..config.clone() })?;
    if segments {
        crate::demo::starter_segments(&node)?;
    }
    let simulator =
        Simulator::new(SimConfig { seed, customers, start: now - chrono::Duration::days(365), ..SimConfig::default() });
    let events = crate::node::load_simulated(&node, &source, &simulator, customers, |_| {})?;
    let pipeline = node.pipeline.clone();
    let membership = node.membership.clone();
    drop(node);
    pipeline.shutdown();
    membership.shutdown();
    Ok((source.write_key, admin, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_grouped_by_name_and_their_scheduler_times_read() {
        assert_eq!(thread_group("kizuna-writer"), "writer");
        assert_eq!(thread_group("kizuna-checkpoi"), "checkpointer");
        assert_eq!(thread_group("tokio-rt-worker"), "request threads");
        assert_eq!(thread_group("recs-feed"), "others");
        assert_eq!(parse_schedstat("2140516 880123 77\n"), Some((2140516, 880123)));
        assert_eq!(parse_schedstat("garbage"), None);
        // This test's own process has at least its main thread, which has run.
        if let Some(times) = thread_times(std::process::id()) {
            assert!(times.iter().map(|(on_cpu, _)| on_cpu).sum::<u64>() > 0);
        }
    }

    #[test]
    fn time_order_merges_everyones_events_by_time_in_whole_batches() {
        let simulator = Simulator::new(SimConfig { seed: 3, customers: 40, ..SimConfig::default() });
        let all = simulator.messages().count();
        let (payloads, events) = time_ordered_payloads(&simulator, 10).expect("payloads");
        assert_eq!(events, all / 10 * 10, "every whole batch is sent");
        assert_eq!(payloads.len(), all / 10);
        let person = |message: &serde_json::Value| {
            // `sim-{seed}-{customer}-{n}`: the customer is all but the last part.
            message["messageId"].as_str().and_then(|id| id.rsplit_once('-')).map(|(who, _)| who.to_owned())
        };
        let mut last = String::new();
        let mut people_in_batches = 0;
        for payload in &payloads {
            let body: serde_json::Value = serde_json::from_slice(payload).expect("valid JSON");
            let batch = body["batch"].as_array().expect("a batch");
            assert_eq!(batch.len(), 10);
            for message in batch {
                let at = message["timestamp"].as_str().expect("timestamp").to_owned();
                assert!(at >= last, "{at} came after {last}");
                last = at;
            }
            people_in_batches += batch.iter().map(person).collect::<std::collections::HashSet<_>>().len();
        }
        // The same events in person order, as batches of 10: time order mixes more people into a batch.
        let in_person_order: Vec<serde_json::Value> = simulator.messages().collect();
        let people_in_person_batches: usize = in_person_order
            .chunks_exact(10)
            .map(|batch| batch.iter().map(person).collect::<std::collections::HashSet<_>>().len())
            .sum();
        assert!(
            people_in_batches > people_in_person_batches * 3 / 2,
            "time order {people_in_batches} people over all batches, person order {people_in_person_batches}"
        );
    }
}
