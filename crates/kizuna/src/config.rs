//! One configuration struct, read from a TOML file, then `KIZUNA_*` environment variables, then flags
//! (later wins). Every default is documented here and in the README.

use anyhow::{Context, Result};
use clap::Args;
use kizuna_identity::{IdentifierConfig, IdentityRules};
use kizuna_ingest::Limits;
use kizuna_store::Durability;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "./kizuna-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// Options every subcommand accepts, before or after the subcommand name.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Data directory (default ./kizuna-data)
    #[arg(long, global = true, env = "KIZUNA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file
    #[arg(long, global = true, env = "KIZUNA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, global = true, env = "KIZUNA_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The configuration file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub log_format: Option<String>,
    /// Largest single event in bytes (default 32768).
    pub max_event_bytes: Option<usize>,
    /// Largest batch request in bytes (default 512000).
    pub max_batch_bytes: Option<usize>,
    /// How long (source, messageId) pairs are remembered for deduplication (default 7 days).
    pub dedup_window_days: Option<u32>,
    /// "full" (fsync every commit, the default) or "process" (survives a killed process, not a power cut).
    pub durability: Option<String>,
    /// Profile states the writer keeps decoded between commits (default 4096; ~5 KB of memory each).
    pub state_cache: Option<usize>,
    /// Event bodies a store without a compression dictionary trains one on (default 5000; 0: never).
    pub body_dictionary_samples: Option<usize>,
    /// Custom identifier types, e.g. ["shopify_customer_id"].
    pub custom_identifiers: Option<Vec<String>>,
    /// Country for phone numbers without a country code, e.g. "JP".
    pub default_country: Option<String>,
    /// Most identifiers of a kind per profile, e.g. { anonymous_id = 100, email = 5 }.
    pub identity_limits: Option<HashMap<String, usize>>,
    /// Let the allocator back its memory with transparent huge pages (default false; see `Config::huge_pages`).
    pub huge_pages: Option<bool>,
    /// Threads that serve HTTP (default: one fewer than the machine's cores, at least one).
    pub http_threads: Option<usize>,
    /// Minutes between background analytics runs (default 360; 0 = only on request and after imports).
    pub analytics_interval_minutes: Option<u32>,
    /// The analytics settings (time unit, CLV horizon and discount rate, journey window, holdout length).
    pub analytics: Option<kizuna_jobs::AnalyticsSettings>,
    /// Recommendations: ranking windows, the EASE model's settings, retraining interval (`[recommendations]`).
    pub recommendations: Option<kizuna_recs_service::RecsSettings>,
    /// Messaging: the public URL for tracking links, store settings, governor policy, attribution windows and
    /// the channels' providers (`[messaging]`, `[messaging.email]`, `[messaging.sms]`, `[messaging.line]`…).
    pub messaging: Option<kizuna_messaging_service::MessagingSettings>,
    /// Flows: round size, backpressure, the default time zone, the webhook signing secret (`[flows]`).
    pub flows: Option<kizuna_flows_service::FlowSettings>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub log_format: String,
    pub limits: Limits,
    pub dedup_window_days: u32,
    pub durability: Durability,
    /// Profile states the writer keeps decoded between commits: each one kept is a read and a decode saved
    /// when the person's next event comes, at ~5 KB of memory (BENCHMARKS.md, 2026-12-05 19:08).
    pub state_cache: usize,
    /// Event bodies sampled to train the store's compression dictionary (0: never train, bodies stay LZ4).
    pub body_dictionary_samples: usize,
    pub identifiers: IdentifierConfig,
    pub rules: IdentityRules,
    /// Transparent huge pages for the allocator's memory. Off by default: with them every first touch of a
    /// 2 MiB region zeroes all of it in one page fault, which put 7–9 ms stalls into the segment engine's
    /// thread under ingest (`Segment Entered` p99 two to three times higher), and small stores' RSS is rounded
    /// up (87 vs 133 MB at 20,000 customers). On: fewer TLB misses over large in-memory state — a full
    /// segment build over 1M profiles is ~25% faster (see BENCHMARKS.md).
    pub huge_pages: bool,
    /// Threads that serve HTTP: parsing, validating and compressing ingest requests, and the API. By default one
    /// fewer than the machine's cores, at least one: the single writer thread is what ingest waits for, and with
    /// as many HTTP threads as cores it waited for a core while they ran. On two cores, one HTTP thread instead of
    /// two raised live-traffic ingest by ~10% (BENCHMARKS.md, 2026-12-06 17:10).
    pub http_threads: usize,
    pub analytics_interval_minutes: u32,
    pub analytics: kizuna_jobs::AnalyticsSettings,
    pub recommendations: kizuna_recs_service::RecsSettings,
    pub messaging: kizuna_messaging_service::MessagingSettings,
    pub flows: kizuna_flows_service::FlowSettings,
}

/// One fewer than the machine's cores, at least one (see `Config::http_threads`).
pub fn default_http_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1)).max(1)
}

fn env<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| anyhow::anyhow!("{name}='{v}' is not valid")),
        _ => Ok(None),
    }
}

impl Config {
    /// Resolves the configuration: defaults < file < environment < flags.
    pub fn load(global: &GlobalArgs, listen_flag: Option<&str>) -> Result<Self> {
        let file = match &global.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = global.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let listen_text = listen_flag
            .map(str::to_owned)
            .or(env::<String>("KIZUNA_LISTEN")?)
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr =
            listen_text.parse().with_context(|| format!("listen address '{listen_text}' is not ADDR:PORT"))?;
        let defaults = Limits::default();
        let limits = Limits {
            max_event_bytes: env("KIZUNA_MAX_EVENT_BYTES")?
                .or(file.max_event_bytes)
                .unwrap_or(defaults.max_event_bytes),
            max_batch_bytes: env("KIZUNA_MAX_BATCH_BYTES")?
                .or(file.max_batch_bytes)
                .unwrap_or(defaults.max_batch_bytes),
        };
        let durability = match env::<String>("KIZUNA_DURABILITY")?.or(file.durability).as_deref() {
            None | Some("full") => Durability::Full,
            Some("process") => Durability::Process,
            Some(other) => anyhow::bail!("durability '{other}' is not 'full' or 'process'"),
        };
        let mut rules = IdentityRules::default();
        for (kind, limit) in file.identity_limits.unwrap_or_default() {
            rules.max_per_kind.insert(kind, limit);
        }
        let custom_types = match env::<String>("KIZUNA_CUSTOM_IDENTIFIERS")? {
            Some(list) => list.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            None => file.custom_identifiers.unwrap_or_default(),
        };
        let flows_explicit = file.flows.as_ref().is_some_and(|f| f.default_timezone != "UTC");
        let mut flows = file.flows.clone().unwrap_or_default();
        if let Some(analytics) = &file.analytics {
            flows.purchase_window_days = analytics.purchase_window_days;
        }
        Ok(Self {
            data_dir,
            listen,
            log_format: global.log_format.clone().or(file.log_format).unwrap_or_else(|| "text".to_owned()),
            limits,
            dedup_window_days: env("KIZUNA_DEDUP_WINDOW_DAYS")?.or(file.dedup_window_days).unwrap_or(7),
            durability,
            state_cache: env("KIZUNA_STATE_CACHE")?
                .or(file.state_cache)
                .unwrap_or(kizuna_pipeline::PipelineConfig::default().state_cache),
            body_dictionary_samples: env("KIZUNA_BODY_DICTIONARY_SAMPLES")?
                .or(file.body_dictionary_samples)
                .unwrap_or(kizuna_pipeline::PipelineConfig::default().body_dictionary_samples),
            identifiers: IdentifierConfig {
                custom_types,
                default_country: env::<String>("KIZUNA_DEFAULT_COUNTRY")?.or(file.default_country),
            },
            rules,
            huge_pages: env("KIZUNA_HUGE_PAGES")?.or(file.huge_pages).unwrap_or(false),
            http_threads: match env("KIZUNA_HTTP_THREADS")?.or(file.http_threads) {
                Some(0) => anyhow::bail!("http_threads must be at least 1"),
                Some(threads) => threads,
                None => default_http_threads(),
            },
            analytics_interval_minutes: env("KIZUNA_ANALYTICS_INTERVAL_MINUTES")?
                .or(file.analytics_interval_minutes)
                .unwrap_or(360),
            analytics: file.analytics.unwrap_or_default(),
            recommendations: file.recommendations.unwrap_or_default(),
            messaging: {
                let public_url = env::<String>("KIZUNA_PUBLIC_URL")?;
                let explicit = file.messaging.is_some();
                let mut messaging = file.messaging.unwrap_or_default();
                if let Some(url) = public_url {
                    messaging.public_url = url;
                } else if !explicit {
                    messaging.public_url = format!("http://{listen}");
                }
                if !flows_explicit {
                    // People without a zone of their own are in the store's.
                    flows.default_timezone = messaging.policy.default_timezone.clone();
                }
                messaging
            },
            flows,
        })
    }

    pub fn pipeline(&self) -> kizuna_pipeline::PipelineConfig {
        kizuna_pipeline::PipelineConfig {
            dedup_window: chrono::Duration::days(i64::from(self.dedup_window_days)),
            identifiers: self.identifiers.clone(),
            rules: self.rules.clone(),
            state_cache: self.state_cache,
            body_dictionary_samples: self.body_dictionary_samples,
            ..kizuna_pipeline::PipelineConfig::default()
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with_file(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("kizuna.toml");
        std::fs::write(&path, text)?;
        let global = GlobalArgs { data_dir: None, config: Some(path), log_format: None };
        Config::load(&global, None)
    }

    #[test]
    fn huge_pages_are_off_unless_the_file_asks_for_them() -> Result<()> {
        if std::env::var_os("KIZUNA_HUGE_PAGES").is_some() {
            return Ok(()); // the environment wins over the file; nothing to check here
        }
        assert!(!load_with_file("")?.huge_pages);
        assert!(load_with_file("huge_pages = true")?.huge_pages);
        assert!(load_with_file("huge_pages = \"yes\"").is_err(), "a non-boolean is rejected");
        Ok(())
    }

    #[test]
    fn http_threads_leave_a_core_for_the_writer_unless_the_file_says() -> Result<()> {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        assert_eq!(load_with_file("")?.http_threads, cores.saturating_sub(1).max(1));
        assert_eq!(load_with_file("http_threads = 3")?.http_threads, 3);
        assert!(load_with_file("http_threads = 0").is_err(), "no HTTP thread at all is rejected");
        Ok(())
    }

    #[test]
    fn the_writers_state_cache_is_sized_by_the_file() -> Result<()> {
        if std::env::var_os("KIZUNA_STATE_CACHE").is_some() {
            return Ok(()); // the environment wins over the file; nothing to check here
        }
        assert_eq!(load_with_file("")?.pipeline().state_cache, kizuna_pipeline::PipelineConfig::default().state_cache);
        assert_eq!(load_with_file("state_cache = 16384")?.pipeline().state_cache, 16384);
        assert!(load_with_file("state_cache = -1").is_err(), "a negative size is rejected");
        Ok(())
    }

    #[test]
    fn the_body_dictionary_sample_count_comes_from_the_file() -> Result<()> {
        if std::env::var_os("KIZUNA_BODY_DICTIONARY_SAMPLES").is_some() {
            return Ok(()); // the environment wins over the file; nothing to check here
        }
        let default = kizuna_pipeline::PipelineConfig::default().body_dictionary_samples;
        assert_eq!(load_with_file("")?.pipeline().body_dictionary_samples, default);
        assert_eq!(load_with_file("body_dictionary_samples = 0")?.pipeline().body_dictionary_samples, 0);
        assert!(load_with_file("body_dictionary_samples = \"many\"").is_err(), "not a number");
        Ok(())
    }
}
