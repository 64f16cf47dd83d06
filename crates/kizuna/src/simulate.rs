//! `kizuna simulate`: a deterministic simulated D2C store as Segment NDJSON, or sent to a running server.

use anyhow::{Context, Result};
use chrono::{NaiveDate, TimeZone, Utc};
use clap::Args;
use kizuna_simulate::{SimConfig, Simulator};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 2000)]
    pub customers: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First day of the simulated period (YYYY-MM-DD)
    #[arg(long, default_value = "2025-01-01")]
    pub start: String,
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    #[arg(long, default_value_t = 300)]
    pub products: usize,
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Write NDJSON here instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the catalog as a JSON array here
    #[arg(long)]
    pub catalog_out: Option<PathBuf>,
    /// Send the messages to a running server (e.g. http://127.0.0.1:7420) in batches of 100
    #[arg(long)]
    pub send: Option<String>,
    /// Write key for --send
    #[arg(long, env = "KIZUNA_WRITE_KEY")]
    pub write_key: Option<String>,
}

impl SimulateArgs {
    pub fn sim_config(&self) -> Result<SimConfig> {
        let day = NaiveDate::parse_from_str(&self.start, "%Y-%m-%d")
            .with_context(|| format!("--start '{}' is not YYYY-MM-DD", self.start))?;
        let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).ok_or_else(|| anyhow::anyhow!("invalid start"))?);
        Ok(SimConfig {
            seed: self.seed,
            customers: self.customers,
            start,
            days: self.days,
            products: self.products,
            currency: self.currency.clone(),
        })
    }
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let simulator = Simulator::new(args.sim_config()?);
    if let Some(path) = &args.catalog_out {
        std::fs::write(path, serde_json::to_vec_pretty(simulator.products())?)?;
    }
    if let Some(url) = &args.send {
        let key = args.write_key.as_deref().ok_or_else(|| anyhow::anyhow!("--send needs --write-key"))?;
        return send(&simulator, url, key);
    }
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for message in simulator.messages() {
        serde_json::to_writer(&mut out, &message)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn send(simulator: &Simulator, url: &str, write_key: &str) -> Result<()> {
    let runtime = crate::node::runtime()?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let endpoint = format!("{}/v1/batch", url.trim_end_matches('/'));
        let mut batch = Vec::with_capacity(100);
        let mut sent = 0usize;
        let mut messages = simulator.messages().peekable();
        while let Some(message) = messages.next() {
            batch.push(message);
            if batch.len() == 100 || messages.peek().is_none() {
                let body = serde_json::json!({ "batch": batch });
                let response = client.post(&endpoint).basic_auth(write_key, Some("")).json(&body).send().await?;
                if !response.status().is_success() {
                    anyhow::bail!(
                        "server answered {}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                }
                sent += batch.len();
                batch.clear();
            }
        }
        eprintln!("sent {sent} messages to {endpoint}");
        Ok(())
    })
}
