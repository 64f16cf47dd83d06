//! Prints throughput and summary statistics of a simulated run:
//! `cargo run --release -p kizuna-simulate --example stats -- [customers] [--ndjson]`
//! With `--ndjson` the messages are written to stdout (one JSON object per line) instead; with `--gen-only`
//! only generation throughput is measured.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use kizuna_simulate::{SimConfig, Simulator};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let customers = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2000);
    let sim = Simulator::new(SimConfig { customers, ..SimConfig::default() });

    if args.iter().any(|a| a == "--ndjson") {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for m in sim.messages() {
            writeln!(out, "{m}")?;
        }
        return out.flush();
    }

    if args.iter().any(|a| a == "--gen-only") {
        let started = Instant::now();
        let n = sim.messages().count();
        println!("{n} messages, {:.0} msg/s", n as f64 / started.elapsed().as_secs_f64());
        return Ok(());
    }

    let started = Instant::now();
    let mut total = 0usize;
    let mut bytes = 0usize;
    let mut by_event: HashMap<String, usize> = HashMap::new();
    let mut orders_per_customer: Vec<usize> = Vec::with_capacity(customers);
    let mut revenue = 0.0;
    for i in 0..customers {
        let msgs = sim.customer_messages(i);
        total += msgs.len();
        let mut orders = 0;
        for m in &msgs {
            bytes += m.to_string().len();
            let key = match m["type"].as_str() {
                Some("track") => m["event"].as_str().unwrap_or("?").to_owned(),
                Some(t) => format!("<{t}>"),
                None => "?".to_owned(),
            };
            if key == "Order Completed" {
                orders += 1;
                revenue += m["properties"]["revenue"].as_f64().unwrap_or(0.0);
            }
            *by_event.entry(key).or_default() += 1;
        }
        orders_per_customer.push(orders);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{total} messages, {:.1} MB JSON, {:.0} msg/s (incl. serialisation)",
        bytes as f64 / 1e6,
        total as f64 / secs
    );

    let gen_started = Instant::now();
    let n = sim.messages().count();
    println!("generation only: {:.0} msg/s", n as f64 / gen_started.elapsed().as_secs_f64());

    let buyers = orders_per_customer.iter().filter(|&&o| o > 0).count();
    let repeat = orders_per_customer.iter().filter(|&&o| o > 1).count();
    let max = orders_per_customer.iter().max().copied().unwrap_or(0);
    println!(
        "buyers {buyers}/{customers} ({:.0}%), repeat {repeat} ({:.0}% of buyers), max orders {max}, AOV {:.2}",
        100.0 * buyers as f64 / customers as f64,
        100.0 * repeat as f64 / buyers.max(1) as f64,
        revenue / orders_per_customer.iter().sum::<usize>().max(1) as f64
    );
    let mut hist: Vec<(usize, usize)> = Vec::new();
    for o in &orders_per_customer {
        match hist.iter_mut().find(|(k, _)| k == o) {
            Some(e) => e.1 += 1,
            None => hist.push((*o, 1)),
        }
    }
    hist.sort_unstable();
    println!("orders histogram: {hist:?}");
    let mut events: Vec<_> = by_event.into_iter().collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (e, c) in events {
        println!("{c:>9}  {e}");
    }
    Ok(())
}
