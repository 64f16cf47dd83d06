//! `kizuna import customers|orders|products FILE`: CSV into the data directory, idempotently.

use crate::config::Config;
use crate::node::{self, Node};
use anyhow::{Context, Result};
use kizuna_catalog::Product;
use kizuna_import::{ImportItem, ImportKind, ImportOptions, LineError};
use kizuna_ingest::Event;
use kizuna_profiles::DataKind;
use kizuna_store::Source;
use std::path::Path;

pub const IMPORT_SOURCE: &str = "csv-import";
const CHUNK: usize = 2000;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Customers,
    Orders,
    Products,
}

impl From<Kind> for ImportKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Customers => ImportKind::Customers,
            Kind::Orders => ImportKind::Orders,
            Kind::Products => ImportKind::Products,
        }
    }
}

/// The source imports go through: trusted (a brand's own export) and labelled imported data.
pub fn import_source(node: &Node) -> Result<Source> {
    if let Some(source) = node.store.source_by_name(IMPORT_SOURCE)? {
        return Ok(source);
    }
    Ok(node.store.create_source(IMPORT_SOURCE, true, DataKind::Imported, node.clock.now())?)
}

#[derive(Debug, Default)]
pub struct ImportSummary {
    pub lines_ok: usize,
    pub errors: Vec<LineError>,
    pub accepted: usize,
    pub duplicates: usize,
    pub products: usize,
}

pub fn run(config: &Config, kind: Kind, file: &Path, strict: bool, currency: &str) -> Result<()> {
    let node = node::start_node(config)?;
    let summary = import_file(&node, kind.into(), file, strict, currency);
    // Imported orders change predictions and RFM: refresh them now rather than at the next scheduled run.
    let analytics = match &summary {
        Ok(s) if s.accepted > 0 => Some(node::run_analytics_now(config, &node, "import")),
        _ => None,
    };
    let pipeline = node.pipeline.clone();
    let membership = node.membership.clone();
    drop(node);
    pipeline.shutdown();
    membership.shutdown();
    let summary = summary?;
    for error in &summary.errors {
        eprintln!("line {}: {}", error.line, error.reason);
    }
    if strict && !summary.errors.is_empty() {
        anyhow::bail!("{} bad line(s); --strict: nothing was written", summary.errors.len());
    }
    println!(
        "imported {} record(s): {} event(s) stored, {} already present, {} product(s) upserted, {} bad line(s)",
        summary.lines_ok,
        summary.accepted,
        summary.duplicates,
        summary.products,
        summary.errors.len()
    );
    match analytics {
        Some(Ok(run)) => println!(
            "analytics run {}: {} buyer(s) scored{} in {:.0} ms",
            run.run_id,
            run.scored,
            if run.models_fitted { ", models refitted" } else { " (not enough history to fit the models yet)" },
            run.duration_ms
        ),
        Some(Err(error)) => {
            eprintln!("the analytics run after the import failed (the import itself is stored): {error}")
        }
        None => {}
    }
    Ok(())
}

pub fn import_file(node: &Node, kind: ImportKind, file: &Path, strict: bool, currency: &str) -> Result<ImportSummary> {
    let handle = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = handle.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = indicatif::ProgressBar::new(size);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} [{bar:30}] {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if size < 1_000_000 {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let reader = progress.wrap_read(std::io::BufReader::new(handle));
    let importer = kizuna_import::parse_with_options(kind, reader, ImportOptions { currency: currency.to_owned() })
        .map_err(|e| anyhow::anyhow!("line {}: {}", e.line, e.reason))?;
    let source = import_source(node)?;
    let runtime = node::runtime()?;
    let mut summary = ImportSummary::default();
    let mut events: Vec<Event> = Vec::new();
    let mut products: Vec<Product> = Vec::new();
    let now = node.clock.now();
    for record in importer {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                summary.errors.push(error);
                continue;
            }
        };
        let mut record_events = Vec::new();
        let mut record_products = Vec::new();
        let mut bad = None;
        for item in record.items {
            match item {
                ImportItem::Message(message) => match kizuna_ingest::parse_message(message, now) {
                    Ok(event) => record_events.push(event),
                    Err(e) => bad = Some(e.to_string()),
                },
                ImportItem::Product(product) => record_products.push(product),
            }
        }
        if let Some(reason) = bad {
            summary.errors.push(LineError { line: record.line, reason });
            continue;
        }
        summary.lines_ok += 1;
        events.extend(record_events);
        products.extend(record_products);
        // Stream in chunks unless --strict needs to see every line before writing anything.
        if !strict && events.len() + products.len() >= CHUNK {
            flush(node, &runtime, &source, &mut events, &mut products, &mut summary)?;
        }
    }
    progress.finish_and_clear();
    if strict && !summary.errors.is_empty() {
        return Ok(summary);
    }
    flush(node, &runtime, &source, &mut events, &mut products, &mut summary)?;
    Ok(summary)
}

fn flush(
    node: &Node,
    runtime: &tokio::runtime::Runtime,
    source: &Source,
    events: &mut Vec<Event>,
    products: &mut Vec<Product>,
    summary: &mut ImportSummary,
) -> Result<()> {
    if !products.is_empty() {
        summary.products += node.store.upsert_products(products, node.clock.now())?;
        products.clear();
    }
    while !events.is_empty() {
        let chunk: Vec<Event> = events.drain(..events.len().min(CHUNK)).collect();
        let receipt = runtime.block_on(node.pipeline.ingest(source, chunk))?;
        summary.accepted += receipt.accepted;
        summary.duplicates += receipt.duplicates;
    }
    Ok(())
}
