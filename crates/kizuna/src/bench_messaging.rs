//! `kizuna bench messaging`: emails rendered and handed to a local SMTP server per second, each with a
//! 3-product recommendation block, through the whole outbox path (durable queue, governor, render with the
//! in-process recommender, tracking links, SMTP over loopback, delivery log). The same run measures render time
//! per message and sends to two SMTP servers: aiosmtpd (Python, a real server) and a minimal SMTP sink written
//! here in Rust that does nothing but answer — so the figures show whether Kizuna or the server is the limit.

use crate::config::Config;
use anyhow::{Context, Result};
use clap::Args;
use kizuna_identity::{IdKind, Identifier};
use kizuna_messaging_service::{Messenger, SendRequest, SmtpSettings, SmtpTls};
use kizuna_simulate::{SimConfig, Simulator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Debug, Clone, Args)]
pub struct MessagingArgs {
    /// Simulated customers (each gets messages in turn)
    #[arg(long, default_value_t = 5_000)]
    customers: usize,
    /// Emails per SMTP server
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Messages rendered one at a time for the render-time percentiles
    #[arg(long, default_value_t = 5_000)]
    renders: usize,
    /// Messages the worker takes per round
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// SMTP connections kept open
    #[arg(long, default_value_t = 8)]
    pool: u32,
    /// Python with aiosmtpd (scripts/test makes .venv); `none` skips that server
    #[arg(long, default_value = ".venv/bin/python")]
    python: String,
    #[arg(long, default_value = "crates/kizuna-testkit/smtp_sink.py")]
    sink_script: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub fn run(config: &Config, args: MessagingArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    config.data_dir = dir.path().to_path_buf();
    config.analytics_interval_minutes = 0;
    // Each customer receives many emails here: caps and quiet hours would defer most of them.
    config.messaging.policy.caps.clear();
    config.messaging.policy.quiet_hours = None;
    config.messaging.batch = args.batch;
    config.messaging.concurrency = args.pool as usize;
    config.messaging.public_url = "https://crm.bench.example".into();
    let node = crate::node::start_node(&config)?;
    let now = kizuna_types::Clock::now(node.clock.as_ref());
    let source = node.store.create_source("bench", true, kizuna_profiles::DataKind::FirstParty, now)?;
    let simulator = Simulator::new(SimConfig {
        customers: args.customers,
        seed: args.seed,
        start: now - chrono::Duration::days(365),
        days: 365,
        ..SimConfig::default()
    });
    node.store.upsert_products(simulator.products(), now)?;
    node.recommender.upsert_products(simulator.products());
    eprintln!("loading {} simulated customers…", args.customers);
    crate::node::load_simulated(&node, &source, &simulator, args.customers, |_| {})?;
    // Everyone opts in to marketing email, so every message is sent.
    let runtime = crate::node::runtime()?;
    let consents: Vec<_> = (0..args.customers)
        .map(|i| {
            kizuna_ingest::parse_message(
                json!({"type": "identify", "userId": Simulator::user_id(i),
                       "traits": {"consent": {"email": {"marketing": "granted"}}}}),
                now,
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for chunk in consents.chunks(5000) {
        runtime.block_on(node.pipeline.ingest(&source, chunk.to_vec()))?;
    }
    node.recommender.sync();
    node.recommender.train().context("training")?;
    for (name, definition) in kizuna_messaging::starters::starter_templates() {
        node.messenger.save_template(name, &definition)?;
    }
    let profiles: Vec<u64> = (0..args.customers)
        .filter_map(|i| {
            node.store.profile_by_identifier(&Identifier::new(IdKind::UserId, Simulator::user_id(i))).ok()?
        })
        // Simulated shoppers who never gave an email address get nothing (suppressed as no_address).
        .filter(|id| {
            node.store.profile(*id).ok().flatten().is_some_and(|p| p.identities.iter().any(|i| i.kind == IdKind::Email))
        })
        .collect();
    anyhow::ensure!(!profiles.is_empty(), "no simulated customer has an email address");
    let products: Vec<String> = simulator.products().iter().map(|p| p.id.clone()).collect();
    let event = |i: usize| -> Value {
        let product = &products[(i * 7919) % products.len()];
        json!({"name": "Checkout Started", "properties": {"value": 98.5, "cart_url": "https://shop.example/cart",
               "products": [{"product_id": product, "name": "Cart item", "quantity": 1, "price": 98.5}]}})
    };

    // Render time per message: profile read, recommendation pick, Liquid render, plain-text part.
    let mut render_us: Vec<f64> = Vec::with_capacity(args.renders);
    let mut with_three = 0usize;
    for i in 0..args.renders {
        let profile = profiles[i % profiles.len()];
        let started = Instant::now();
        let rendered = node.messenger.preview(Ok("cart_abandonment"), Some(profile), &event(i))?;
        render_us.push(started.elapsed().as_secs_f64() * 1e6);
        if let kizuna_messaging::Rendered::Email { html, .. } = rendered {
            with_three += usize::from(html.matches("<td style=\"padding:8px").count() == 3);
        }
    }
    render_us.sort_by(f64::total_cmp);
    let total_render_s: f64 = render_us.iter().sum::<f64>() / 1e6;
    println!(
        "render (profile read + 3-product recommendation + Liquid + text part), one thread, {} messages:",
        args.renders
    );
    println!(
        "  p50 {:.0} µs  p99 {:.0} µs  → {:.0} renders/s on one core; {} of {} had a full 3-product block",
        crate::bench_segments::percentile(&render_us, 0.5),
        crate::bench_segments::percentile(&render_us, 0.99),
        args.renders as f64 / total_render_s,
        with_three,
        args.renders
    );

    let mut sinks = vec!["rust-null-sink"];
    if args.python != "none" {
        sinks.push("aiosmtpd");
    }
    for (round, name) in sinks.into_iter().enumerate() {
        let sink = match name {
            "aiosmtpd" => Sink::aiosmtpd(&args.python, &args.sink_script)?,
            _ => Sink::null(runtime.handle())?,
        };
        let smtp = kizuna_channels::SmtpChannel::new(&SmtpSettings {
            host: "127.0.0.1".into(),
            port: sink.port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Bench Store <news@bench.example>".into(),
            reply_to: None,
            pool_size: args.pool,
            rate_per_second: 0.0,
            ca_file: None,
        })
        .map_err(|e| anyhow::anyhow!(e))?;
        node.messenger.set_channel(Arc::new(smtp));
        let result = runtime.block_on(send_all(&node.messenger, &profiles, args.messages, round, &event, sink.pid))?;
        println!(
            "{name}: {} emails in {:.2}s → {:.0} emails/s end to end (queue {:.0}/s, deliver {:.0}/s); \
             CPU over the delivery: kizuna {:.0}% of a core, SMTP server {}",
            result.sent,
            result.total.as_secs_f64(),
            result.sent as f64 / result.total.as_secs_f64(),
            result.sent as f64 / result.enqueue.as_secs_f64(),
            result.sent as f64 / result.deliver.as_secs_f64(),
            result.kizuna_cpu * 100.0,
            result.sink_cpu.map(|c| format!("{:.0}% of a core", c * 100.0)).unwrap_or_else(|| "in-process".into()),
        );
    }
    node.messenger.stop();
    Ok(())
}

struct Outcome {
    sent: usize,
    enqueue: Duration,
    deliver: Duration,
    total: Duration,
    kizuna_cpu: f64,
    sink_cpu: Option<f64>,
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; after the ")" they are the 12th and 13th.
    (ticks(11) + ticks(12)) / 100.0
}

async fn send_all(
    messenger: &Messenger,
    profiles: &[u64],
    count: usize,
    round: usize,
    event: &dyn Fn(usize) -> Value,
    sink_pid: Option<u32>,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut queued = 0;
    while queued < count {
        let batch: Vec<SendRequest> = (queued..(queued + 1000).min(count))
            .map(|i| SendRequest {
                template: "cart_abandonment".into(),
                profile_id: profiles[i % profiles.len()],
                priority: kizuna_messaging::Priority::Abandonment,
                event: event(i),
                idempotency_key: Some(format!("bench:{round}:{i}")),
                flow: Some("bench".into()),
                campaign: None,
                send_at: None,
            })
            .collect();
        queued += batch.len();
        let m = messenger.clone();
        tokio::task::spawn_blocking(move || m.enqueue(&batch)).await??;
    }
    let enqueue = started.elapsed();
    let (cpu_before, sink_before) = (cpu_seconds(None), cpu_seconds(sink_pid));
    let delivering = Instant::now();
    let mut taken = 0;
    while taken < count {
        let n = messenger.process_due().await?;
        if n == 0 {
            break;
        }
        taken += n;
    }
    let deliver = delivering.elapsed();
    let kizuna_cpu = (cpu_seconds(None) - cpu_before) / deliver.as_secs_f64();
    let sink_cpu = sink_pid.map(|pid| (cpu_seconds(Some(pid)) - sink_before) / deliver.as_secs_f64());
    let sent = messenger
        .store()
        .messages()
        .report("flow", chrono::Utc::now() - chrono::Duration::days(1))?
        .iter()
        .map(|r| r.sent as usize)
        .sum::<usize>()
        .saturating_sub(round * count);
    if sent != count {
        let others = messenger.store().messages().messages(&kizuna_store::messages::MessageFilter {
            flow: Some("bench".into()),
            limit: 500,
            ..Default::default()
        })?;
        let reasons: Vec<String> = others
            .iter()
            .filter(|m| m.state != "sent")
            .map(|m| format!("{}: {:?}", m.state, m.reason))
            .take(3)
            .collect();
        anyhow::bail!("only {sent} of {count} emails were accepted by the SMTP server; failures: {reasons:?}");
    }
    Ok(Outcome { sent, enqueue, deliver, total: started.elapsed(), kizuna_cpu, sink_cpu })
}

struct Sink {
    port: u16,
    pid: Option<u32>,
    _child: Option<ChildGuard>,
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Sink {
    fn aiosmtpd(python: &str, script: &std::path::Path) -> Result<Sink> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(python)
            .arg(script)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} (run scripts/test once to make .venv)", script.display()))?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let port = line.trim().strip_prefix("READY ").and_then(|p| p.parse().ok()).context("aiosmtpd did not start")?;
        let pid = child.id();
        Ok(Sink { port, pid: Some(pid), _child: Some(ChildGuard(child)) })
    }

    /// An SMTP server that accepts everything and keeps nothing: the ceiling of what a server can take.
    fn null(runtime: &tokio::runtime::Handle) -> Result<Sink> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(null_session(socket));
            }
        });
        Ok(Sink { port, pid: None, _child: None })
    }
}

async fn null_session(socket: tokio::net::TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 null-sink ESMTP\r\n").await?;
    let mut line = Vec::new();
    let mut queued = 0u64;
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
            b"250-null-sink\r\n250 8BITMIME\r\n"
        } else if command.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            loop {
                line.clear();
                if lines.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
            }
            queued += 1;
            write.write_all(format!("250 2.0.0 Ok: queued as N{queued}\r\n").as_bytes()).await?;
            continue;
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 OK\r\n"
        };
        write.write_all(reply).await?;
    }
}
