//! `kizuna flow`: check a definition, replay it over history, create flows (from a file or a starter),
//! activate, pause, list and report. Works on the data directory (stop the server first, or use the API).
//! Definitions are JSON, or YAML when the file ends in `.yaml`/`.yml`.

use crate::config::Config;
use crate::node::{self, Node};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use kizuna_flows::starters::{starter_flow, starter_flows};
use kizuna_flows_service::SimRequest;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum FlowCommand {
    /// Validate a definition file against the data directory (templates and segments must exist)
    Check {
        file: PathBuf,
    },
    /// Replay a flow (saved, or the draft in --file) over the last N days of history, sending nothing
    Simulate {
        name: String,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Runs to print in full
        #[arg(long, default_value_t = 10)]
        sample: usize,
        /// Print the whole report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Save a flow (a new version when it exists) from a file, or install a starter with its templates
    Create {
        name: String,
        #[arg(long, conflicts_with = "starter")]
        file: Option<PathBuf>,
        /// A starter flow (see `kizuna flow starters`)
        #[arg(long)]
        starter: Option<String>,
    },
    Activate {
        name: String,
    },
    /// The kill switch: nobody enters, no step runs until activated again
    Pause {
        name: String,
    },
    List,
    Report {
        name: String,
    },
    /// The starter flows
    Starters,
}

fn read_definition(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    if yaml {
        serde_norway::from_str(&text).with_context(|| format!("{}: not valid YAML", path.display()))
    } else {
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
    }
}

pub fn run(config: &Config, command: FlowCommand) -> Result<()> {
    if let FlowCommand::Starters = command {
        for s in starter_flows() {
            println!("{}\t{}", s.name, s.description);
        }
        return Ok(());
    }
    let node = node::start_node(config)?;
    let rt = node::runtime()?;
    let result = rt.block_on(run_with(&node, command));
    node.membership.shutdown();
    result
}

async fn run_with(node: &Node, command: FlowCommand) -> Result<()> {
    let engine = &node.flows;
    match command {
        FlowCommand::Starters => {}
        FlowCommand::Check { file } => {
            let def = engine.check(&read_definition(&file)?).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!("{}", serde_json::to_string_pretty(&def)?);
            eprintln!("ok: the flow is valid");
        }
        FlowCommand::Simulate { name, file, days, sample, json } => {
            let definition = file.as_deref().map(read_definition).transpose()?;
            let report =
                engine.simulate(&name, &SimRequest { days, sample, definition }).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            let s = &report.summary;
            println!(
                "replayed {} to {} ({} people, {:.0} ms): {} would enter, {} converted ({:.2} revenue)",
                report.from.format("%Y-%m-%d"),
                report.to.format("%Y-%m-%d"),
                s.people,
                report.took_ms,
                s.entered,
                s.converted,
                s.revenue
            );
            println!(
                "refused: {:?}\nexits: {:?}\nsteps: {:?}\nsends: {:?}",
                s.refused, s.by_exit_reason, s.by_step, s.sends
            );
            for run in &report.runs {
                let path: Vec<String> = run.path.iter().map(|p| format!("{}:{}", p.step, p.outcome)).collect();
                println!(
                    "  profile {} entered {} → {}",
                    run.profile,
                    run.entered_at.format("%Y-%m-%d %H:%M"),
                    path.join(" → ")
                );
            }
        }
        FlowCommand::Create { name, file, starter } => {
            let info = match (file, starter) {
                (Some(file), _) => engine.save(&name, &read_definition(&file)?).map_err(|e| anyhow::anyhow!("{e}"))?,
                (None, Some(starter)) => {
                    let starter = starter_flow(&starter).with_context(|| format!("no starter flow \"{starter}\""))?;
                    let shipped = kizuna_messaging::starters::starter_templates();
                    for template in starter.templates {
                        if node.store.messages().template(template, None)?.is_none()
                            && let Some((_, definition)) = shipped.iter().find(|(n, _)| n == template)
                        {
                            node.messenger.save_template(template, definition)?;
                        }
                    }
                    for segment in starter.segments {
                        if node.store.segment_by_name(segment)?.is_none()
                            && let Some(t) = kizuna_segments::templates::template(segment)
                        {
                            node.membership.save(segment, t.description, kizuna_segments::parse(t.text)?).await?;
                        }
                    }
                    engine.save(&name, &starter.definition).map_err(|e| anyhow::anyhow!("{e}"))?
                }
                (None, None) => bail!("give --file FILE or --starter NAME"),
            };
            println!("flow \"{}\" version {} ({})", info.name, info.version, info.status);
        }
        FlowCommand::Activate { name } => {
            let info = engine.activate(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("flow \"{}\" active at version {}", info.name, info.version);
        }
        FlowCommand::Pause { name } => {
            engine.pause(&name).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("flow \"{name}\" paused");
        }
        FlowCommand::List => {
            for flow in engine.list().map_err(|e| anyhow::anyhow!("{e}"))? {
                let report = engine.report(&flow.name).map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "{}\t{}\tv{}\t{} entered, {} in progress, {} converted",
                    flow.name, flow.status, flow.version, report.entered, report.in_progress, report.conversions
                );
            }
        }
        FlowCommand::Report { name } => {
            let report = engine.report(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}
