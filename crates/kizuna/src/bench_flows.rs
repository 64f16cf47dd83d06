//! `kizuna bench flows`: N profiles (1,000,000 by default) enter a 3-step flow at once — send, wait a
//! minute, send — because a segment that matches all of them is created. The whole node runs as in
//! production (segment engine, flow engine, messaging outbox and worker, full durability); only the email
//! channel is an in-process sink that counts what it is handed. Reports the time until every first message
//! reached the channel, step executions per second, the lateness of the delay timers (actual − scheduled),
//! store growth per run and peak memory.

use crate::config::Config;
use anyhow::{Context, Result};
use clap::Args;
use kizuna_channels::{Channel, Outgoing, Receipt, SendFuture};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct FlowsArgs {
    /// Profiles that enter the flow
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Minutes of the flow's delay step
    #[arg(long, default_value_t = 5)]
    delay_minutes: u32,
    /// Runs, transitions and events the flow engine takes per round (`[flows] batch`)
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
}

/// Counts first and second messages by subject; sends nothing anywhere.
#[derive(Default)]
struct CountingSink {
    first: AtomicUsize,
    second: AtomicUsize,
}

impl Channel for CountingSink {
    fn kind(&self) -> kizuna_messaging::Channel {
        kizuna_messaging::Channel::Email
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            if let kizuna_messaging::Rendered::Email { subject, .. } = &message.rendered {
                let counter = if subject.starts_with("First") { &self.first } else { &self.second };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Receipt { provider_id: None })
        })
    }
}

/// Bytes of a database file and of its WAL, apart: the WAL is reset by checkpoints, the file only grows.
fn db_bytes(dir: &std::path::Path, name: &str) -> (u64, u64) {
    let size = |file: String| std::fs::metadata(dir.join(file)).map(|m| m.len()).unwrap_or(0);
    (size(name.to_owned()), size(format!("{name}-wal")))
}

fn peak_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The process's CPU time so far (user + system), in seconds; 0 where `/proc` is missing.
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which may hold spaces: state is the first, utime the 12th, stime the 13th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    ticks as f64 / 100.0
}

/// Where late timers' time went: the rounds that started latest, with the gap since the round before.
fn print_timer_rounds(rounds: &[kizuna_flows_service::TimerRound]) {
    if rounds.is_empty() {
        return;
    }
    let mut took: Vec<i64> = rounds.iter().map(|r| r.total_ms as i64).collect();
    took.sort_unstable();
    println!(
        "  timer rounds: {} (runs per round up to {}), round time p50 {} ms, p99 {} ms, max {} ms",
        rounds.len(),
        rounds.iter().map(|r| r.runs).max().unwrap_or(0),
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().copied().unwrap_or(0)
    );
    let mut worst: Vec<usize> = (0..rounds.len()).collect();
    worst.sort_by_key(|&i| std::cmp::Reverse(rounds[i].oldest_late_ms));
    worst.truncate(5);
    // The slowest round makes the rounds after it late; it need not be one of the latest itself.
    if let Some(slowest) = (0..rounds.len()).max_by(|&a, &b| rounds[a].total_ms.total_cmp(&rounds[b].total_ms))
        && !worst.contains(&slowest)
    {
        worst.push(slowest);
    }
    for &i in &worst {
        let r = &rounds[i];
        let (gap, before_took) =
            i.checked_sub(1).map_or((0, 0.0), |p| ((r.at - rounds[p].at).num_milliseconds(), rounds[p].total_ms));
        println!(
            "    round: oldest run {} ms late, {} runs, took {:.0} ms (reading {:.0}, advancing {:.0}, queueing sends {:.0}, writing {:.0}; of those two, waiting for messaging's turn at the writer {:.0} and for SQLite's lock {:.0}; of all four, on a CPU {:.0} and waiting for one {:.0}); {} ms after the round before, which took {:.0} ms; {:.0} ms of its own round before it (following merges, listing flows)",
            r.oldest_late_ms,
            r.runs,
            r.total_ms,
            r.read_ms,
            r.advance_ms,
            r.queue_ms,
            r.write_ms,
            r.side_writer_wait_ms,
            r.sqlite_wait_ms,
            r.on_cpu_ms,
            r.cpu_wait_ms,
            gap,
            before_took,
            r.prelude_ms
        );
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(config: &Config, args: FlowsArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    config.data_dir = dir.path().to_path_buf();
    config.analytics_interval_minutes = 0;
    // Two marketing emails within minutes: caps and quiet hours would hold the second back.
    config.messaging.policy.caps.clear();
    config.messaging.policy.quiet_hours = None;
    config.flows.record_lateness = true;
    config.flows.batch = args.batch;
    let node = crate::node::start_node(&config)?;
    let sink = Arc::new(CountingSink::default());
    node.messenger.set_channel(sink.clone());
    let now = kizuna_types::Clock::now(node.clock.as_ref());
    let source = node.store.create_source("bench", true, kizuna_profiles::DataKind::FirstParty, now)?;
    let runtime = crate::node::runtime()?;

    eprintln!("loading {} profiles…", args.profiles);
    let started = Instant::now();
    let mut chunk = Vec::with_capacity(5_000);
    for i in 0..args.profiles {
        chunk.push(kizuna_ingest::parse_message(
            json!({"type": "identify", "userId": format!("b{i}"), "traits": {
                "email": format!("b{i}@bench.example"), "first_name": "Bench", "bench": true,
                "consent": {"email": {"marketing": "granted"}}}}),
            now,
        )?);
        if chunk.len() == 5_000 || i + 1 == args.profiles {
            runtime.block_on(node.pipeline.ingest(&source, std::mem::take(&mut chunk)))?;
        }
    }
    runtime.block_on(node.membership.sync())?;
    let load_s = started.elapsed().as_secs_f64();
    eprintln!("loaded in {load_s:.1} s");

    for (name, subject) in
        [("bench_first", "First {{ profile.first_name }}"), ("bench_second", "Second {{ profile.first_name }}")]
    {
        let template: kizuna_messaging::TemplateDefinition = serde_json::from_value(json!({
            "channel": "email", "purpose": "marketing", "subject": subject,
            "html": "<p>Hello {{ profile.first_name }}, segment {{ event.properties.segment }}</p>"}))?;
        node.messenger.save_template(name, &template)?;
    }
    node.store.save_segment("bench", "", &json!({"attribute": {"path": "traits.nobody", "op": "exists"}}), now)?;
    let flow = json!({
        "trigger": {"segment_entered": "bench"},
        "steps": [
            {"id": "first", "type": "send", "template": "bench_first", "next": "wait"},
            {"id": "wait", "type": "delay", "for": format!("{}m", args.delay_minutes), "next": "second"},
            {"id": "second", "type": "send", "template": "bench_second"}
        ]
    });
    node.flows.save("bench_flow", &flow).map_err(|e| anyhow::anyhow!("{e}"))?;
    node.flows.activate("bench_flow").map_err(|e| anyhow::anyhow!("{e}"))?;
    let before_main = db_bytes(dir.path(), "kizuna.db");
    let before_derived = db_bytes(dir.path(), "derived.db");

    let (flows_task, worker) =
        runtime.block_on(async { (node.flows.spawn(), node.messenger.spawn_worker(Duration::from_millis(200))) });
    eprintln!("creating the segment: all {} profiles enter it…", args.profiles);
    let t0 = Instant::now();
    let condition = kizuna_segments::parse("traits.bench = true")?;
    let saved = runtime.block_on(node.membership.save("bench", "everyone in the benchmark", condition))?;
    runtime.block_on(node.membership.sync())?;
    let segment_s = t0.elapsed().as_secs_f64();
    eprintln!("segment built with {} members in {segment_s:.1} s", saved.members);
    node.flows.wake();
    let wave_one_cpu_from = process_cpu_s();

    let target = args.profiles;
    // CPU seconds of the whole process in each wave: the second must not cost more per person than the first,
    // or its timers, which fall due as fast as the first wave was admitted, fall behind.
    let mut wave_one_cpu = None;
    let mut wave_two_cpu_from = None;
    let mut first_done = None;
    let mut entered_done = None;
    let mut last_report = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let (first, second) = (sink.first.load(Ordering::Relaxed), sink.second.load(Ordering::Relaxed));
        if first_done.is_none() && first >= target {
            first_done = Some(t0.elapsed().as_secs_f64());
            wave_one_cpu = Some(process_cpu_s() - wave_one_cpu_from);
        }
        if wave_two_cpu_from.is_none() && second > 0 {
            wave_two_cpu_from = Some((process_cpu_s(), second));
        }
        if entered_done.is_none() && node.flows.stats().runs_started >= target as u64 {
            entered_done = Some((t0.elapsed().as_secs_f64(), node.flows.stats().steps_executed));
        }
        if first >= target && second >= target {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let stats = node.flows.stats();
            eprintln!(
                "{:>6.0} s: first {first}, second {second}; runs started {}, steps {}, backpressure pauses {}",
                t0.elapsed().as_secs_f64(),
                stats.runs_started,
                stats.steps_executed,
                stats.backpressure_pauses
            );
            last_report = Instant::now();
        }
        anyhow::ensure!(Instant::now() < deadline, "the flow did not finish within an hour");
    }
    let all_s = t0.elapsed().as_secs_f64();
    let wave_two_cpu = wave_two_cpu_from.map(|(from, already)| (process_cpu_s() - from, target - already));
    let stats = node.flows.stats();
    node.flows.stop();
    node.messenger.stop();
    runtime.block_on(async {
        let _ = flows_task.await;
        let _ = worker.await;
    });
    let mut lateness = node.flows.take_lateness();
    lateness.sort_unstable();
    let rounds = node.flows.take_timer_rounds();
    let (main, main_wal) = db_bytes(dir.path(), "kizuna.db");
    let (derived, derived_wal) = db_bytes(dir.path(), "derived.db");
    let grown_main = main.saturating_sub(before_main.0);
    let grown_derived = derived.saturating_sub(before_derived.0);
    let (rss, hwm) = peak_kib();
    let first_s = first_done.context("first messages never completed")?;
    let flow_s = all_s;
    println!(
        "flows benchmark: {} profiles enter a 3-step flow (send, {} min delay, send) by segment entry",
        args.profiles, args.delay_minutes
    );
    println!("  load (identify {} profiles through the pipeline): {load_s:.1} s", args.profiles);
    println!("  segment built, {} Segment Entered recorded: {segment_s:.1} s after creation", saved.members);
    println!("  all first messages handed to the channel: {first_s:.1} s after the segment was created (bar ≤ 300 s)");
    println!("  all second messages: {all_s:.1} s");
    let (entered_s, entry_steps) = entered_done.unwrap_or((flow_s, stats.steps_executed));
    println!(
        "  all {} runs started (entry + first send step each) {entered_s:.1} s after the segment was created: {:.0} step executions/s while messaging sent alongside",
        stats.runs_started,
        entry_steps as f64 / entered_s.max(1e-9),
    );
    println!(
        "  step executions in total: {} in {flow_s:.1} s, including the {} min wait (backpressure pauses {})",
        stats.steps_executed, args.delay_minutes, stats.backpressure_pauses
    );
    println!(
        "  delay timer lateness (actual − scheduled, {} timers): p50 {} ms, p99 {} ms, max {} ms (bar p99 ≤ 1000 ms)",
        lateness.len(),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
    print_timer_rounds(&rounds);
    if let (Some(one), Some((two, people_two))) = (wave_one_cpu, wave_two_cpu) {
        println!(
            "  process CPU per 1,000 people: first wave (entry, first send) {:.0} ms, second wave (timer, second send) {:.0} ms",
            one * 1e6 / target.max(1) as f64,
            two * 1e6 / people_two.max(1) as f64,
        );
    }
    println!(
        "  store growth, main database: {:.0} MB, {:.0} bytes per run (the run, its 3 steps, the two messages it queued with their decision log); its WAL at the end {:.0} MB (at the start {:.0} MB)",
        grown_main as f64 / 1e6,
        grown_main as f64 / args.profiles as f64,
        main_wal as f64 / 1e6,
        before_main.1 as f64 / 1e6,
    );
    println!(
        "  store growth, derived database (segment membership and the Segment Entered history): {:.0} MB; its WAL at the end {:.0} MB (at the start {:.0} MB)",
        grown_derived as f64 / 1e6,
        derived_wal as f64 / 1e6,
        before_derived.1 as f64 / 1e6,
    );
    println!("  memory: peak RSS {:.0} MB, RSS at the end {:.0} MB", hwm as f64 / 1024.0, rss as f64 / 1024.0);
    node.membership.shutdown();
    Ok(())
}
