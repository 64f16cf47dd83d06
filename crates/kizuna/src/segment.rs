//! `kizuna segment`: check a definition, preview who it matches, create segments, list them and the starter
//! templates. `preview` and `create` work on the data directory (stop the server first, or use the API).

use crate::config::Config;
use crate::node;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kizuna_membership::{Membership, MembershipSettings};
use kizuna_segments::templates::{TEMPLATES, template};
use kizuna_segments::{Condition, from_json, parse, print_pretty};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum SegmentCommand {
    /// Parse and validate a definition; print it back (text, or the JSON tree with --json)
    Check {
        #[command(flatten)]
        source: DefinitionSource,
        /// Print the JSON tree instead of the text form
        #[arg(long)]
        json: bool,
    },
    /// Count who a definition matches now in the data directory, with a sample of profile ids
    Preview {
        #[command(flatten)]
        source: DefinitionSource,
        #[arg(long, default_value_t = 10)]
        sample: usize,
    },
    /// Create or replace a segment in the data directory and build its membership
    Create {
        name: String,
        #[command(flatten)]
        source: DefinitionSource,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the segments of the data directory with their member counts
    List,
    /// The starter segments
    Templates,
}

/// Where a definition comes from: the argument (text syntax), a file (text syntax, or JSON when it starts
/// with `{`), or a starter template.
#[derive(Args)]
pub struct DefinitionSource {
    /// The definition in the text syntax, e.g. 'count of event "Order Completed" >= 2'
    definition: Option<String>,
    /// Read the definition from a file (text syntax, or the JSON tree)
    #[arg(long, conflicts_with = "definition")]
    file: Option<PathBuf>,
    /// Use a starter segment (see `kizuna segment templates`)
    #[arg(long, conflicts_with_all = ["definition", "file"])]
    template: Option<String>,
}

impl DefinitionSource {
    /// The condition, and the template's description when it came from one.
    fn load(&self) -> Result<(Condition, Option<&'static str>)> {
        let (text, origin) = match (&self.definition, &self.file, &self.template) {
            (Some(text), _, _) => (text.clone(), "definition".to_owned()),
            (_, Some(path), _) => (
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
                path.display().to_string(),
            ),
            (_, _, Some(name)) => {
                let t = template(name).with_context(|| {
                    let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
                    format!("no starter segment \"{name}\"; known: {}", names.join(", "))
                })?;
                return Ok((parse(t.text)?, Some(t.description)));
            }
            _ => bail!("give a definition, --file FILE or --template NAME"),
        };
        if text.trim_start().starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{origin}: not valid JSON"))?;
            return Ok((from_json(&value).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?, None));
        }
        let condition = parse(&text).map_err(|e| anyhow::anyhow!("{origin}:{e}"))?;
        kizuna_segments::check(&condition).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok((condition, None))
    }
}

pub fn run(config: &Config, command: SegmentCommand) -> Result<()> {
    match command {
        SegmentCommand::Check { source, json } => {
            let (condition, _) = source.load()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&condition)?);
            } else {
                println!("{}", print_pretty(&condition, 100));
            }
            eprintln!("ok: the definition is valid");
            Ok(())
        }
        SegmentCommand::Templates => {
            for t in TEMPLATES {
                println!("{}\t{}\n\t{}", t.name, t.description, t.text);
            }
            Ok(())
        }
        SegmentCommand::Preview { source, sample } => {
            let (condition, _) = source.load()?;
            with_engine(config, |rt, membership| {
                let preview = rt.block_on(membership.preview(condition, sample))?;
                println!(
                    "{} of {} profiles match ({:.1} ms); sample: {:?}",
                    preview.count, preview.profiles, preview.took_ms, preview.sample
                );
                Ok(())
            })
        }
        SegmentCommand::Create { name, source, description } => {
            let (condition, template_description) = source.load()?;
            let description = description.as_deref().or(template_description).unwrap_or_default().to_owned();
            with_engine(config, |rt, membership| {
                let saved = rt.block_on(membership.save(&name, &description, condition))?;
                rt.block_on(membership.sync())?;
                println!("segment \"{}\" version {}: {} members", saved.name, saved.version, saved.members);
                Ok(())
            })
        }
        SegmentCommand::List => with_engine(config, |rt, membership| {
            for s in rt.block_on(membership.list())? {
                println!("{}\t{} members\tv{}\t{}", s.name, s.members, s.version, s.text);
            }
            Ok(())
        }),
    }
}

/// Runs `f` with the segment engine loaded from the data directory (which this process locks meanwhile).
fn with_engine(config: &Config, f: impl FnOnce(&tokio::runtime::Runtime, &Membership) -> Result<()>) -> Result<()> {
    let _lock = node::lock_data_dir(config)?;
    let store = node::open_store(config)?;
    let settings = MembershipSettings {
        purchase_window_days: config.analytics.purchase_window_days,
        ..MembershipSettings::default()
    };
    let membership = Membership::start(store, std::sync::Arc::new(kizuna_types::SystemClock), settings)?;
    let rt = node::runtime()?;
    let result = f(&rt, &membership);
    membership.shutdown();
    result
}
