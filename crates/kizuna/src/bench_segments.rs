//! `kizuna bench segments`: full build of a segment over a large simulated store, and the latency from event
//! acknowledgement to `Segment Entered` under sustained ingest with many active segments.

use crate::config::Config;
use anyhow::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct SegmentsArgs {}

pub fn run(_config: &Config, _args: SegmentsArgs) -> Result<()> {
    anyhow::bail!("not built yet")
}
