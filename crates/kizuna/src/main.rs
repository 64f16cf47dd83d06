//! `kizuna`: one binary for the whole platform. See `kizuna --help`.

/// mimalloc asks for transparent huge pages on its arenas, so the first touch of each 2 MiB region — and of
/// each region again after mimalloc returned freed memory to the OS — zeroes all of it in one page fault.
/// Measured on the segment engine's thread under ingest: 15% of its time in `clear_page_erms`, in bursts of
/// 7–9 ms whenever a buffer grew into fresh memory, most of the `Segment Entered` latency tail. With the flag
/// set (it covers the whole process and its children, from the next fault on) a fault zeroes the 4 KiB it
/// needs. `huge_pages = true` in the configuration keeps them (see `Config::huge_pages`).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "could not turn off transparent huge pages; continuing with them");
    }
}

mod analytics;
mod bench;
mod bench_admin;
mod bench_analytics;
mod bench_flows;
mod bench_messaging;
mod bench_recs;
mod bench_segments;
mod config;
mod demo;
mod flow;
mod import;
mod node;
mod recs;
mod segment;
mod simulate;

use anyhow::Result;
use clap::{Parser, Subcommand};
use config::{Config, GlobalArgs};
use kizuna_profiles::DataKind;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kizuna", version, about = "Kizuna: a self-hosted customer data platform for D2C brands")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (ingest API, admin API, metrics)
    Serve {
        /// Address to listen on (default 127.0.0.1:7420)
        #[arg(long)]
        listen: Option<String>,
    },
    /// Start a server on a fresh data directory with a simulated store loaded, and print where to look
    Demo {
        #[arg(long)]
        listen: Option<String>,
        /// Number of simulated customers
        #[arg(long, default_value_t = 3000)]
        customers: usize,
        /// Load the data, print the summary and exit instead of serving
        #[arg(long)]
        no_serve: bool,
    },
    /// Import a CSV file (Shopify export or the generic format) into the data directory
    Import {
        #[arg(value_enum)]
        kind: import::Kind,
        file: PathBuf,
        /// Abort with nothing written if any line is bad
        #[arg(long)]
        strict: bool,
        /// Currency for products without one
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Generate a deterministic simulated store as Segment NDJSON, or send it to a running server
    Simulate(simulate::SimulateArgs),
    /// Manage sources (write keys)
    Source {
        #[command(subcommand)]
        action: SourceAction,
    },
    /// Manage admin API keys
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Admins of the web app (/admin/): create one (the first admin comes from here), reset a password, list
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Customer-base models (BG/NBD, Pareto/NBD, Gamma-Gamma, CLV, RFM) on a CSV of transactions
    Analytics {
        #[command(subcommand)]
        command: analytics::AnalyticsCommand,
    },
    /// Segments: check a definition, preview it, create segments, list them and the starter templates
    Segment {
        #[command(subcommand)]
        command: segment::SegmentCommand,
    },
    /// Flows: check, replay over history, create (from a file or a starter), activate, pause, list, report
    Flow {
        #[command(subcommand)]
        command: flow::FlowCommand,
    },
    /// Recommendations: offline evaluation on a dataset folder
    Recs {
        #[command(subcommand)]
        command: recs::RecsCommand,
    },
    /// Benchmarks
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

#[derive(Subcommand)]
enum SourceAction {
    /// Create a source; prints its write key alone on the last line
    Create {
        name: String,
        /// Trusted sources (servers, imports) may merge two identified profiles
        #[arg(long)]
        trusted: bool,
        /// zero_party, first_party, second_party, third_party or imported
        #[arg(long, default_value = "first_party")]
        data_kind: String,
    },
    List,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create an admin API key; prints it alone on the last line
    Create {
        name: String,
    },
    List,
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create an admin who signs in to the web app with this email and a password
    Create {
        email: String,
        /// Read the password from the first line of stdin (otherwise from KIZUNA_ADMIN_PASSWORD, or a prompt)
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (ends the admin's sessions)
    Password {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let listen = match &cli.command {
        Command::Serve { listen } | Command::Demo { listen, .. } => listen.clone(),
        _ => None,
    };
    let config = Config::load(&cli.global, listen.as_deref())?;
    init_logging(&config.log_format);
    // The process's allocator is set in `kizuna-allocator`; threads that end a large job give back what it freed.
    kizuna_types::memory::set_free_memory_release(kizuna_allocator::release_thread_memory);
    if !config.huge_pages {
        disable_transparent_huge_pages();
    }
    match cli.command {
        Command::Serve { .. } => node::run_server(&config),
        Command::Demo { customers, no_serve, .. } => demo::run(config, customers, no_serve),
        Command::Import { kind, file, strict, currency } => import::run(&config, kind, &file, strict, &currency),
        Command::Simulate(args) => simulate::run(args),
        Command::Source { action } => source(&config, action),
        Command::Key { action } => key(&config, action),
        Command::Admin { action } => admin(&config, action),
        Command::Analytics { command } => analytics::run(command),
        Command::Segment { command } => segment::run(&config, command),
        Command::Flow { command } => flow::run(&config, command),
        Command::Recs { command } => recs::run(command),
        Command::Bench { which } => bench::run(&config, which),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KIZUNA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn source(config: &Config, action: SourceAction) -> Result<()> {
    let store = node::open_store(config)?;
    match action {
        SourceAction::Create { name, trusted, data_kind } => {
            let kind = DataKind::parse(&data_kind).ok_or_else(|| anyhow::anyhow!("unknown data kind '{data_kind}'"))?;
            let source = store.create_source(&name, trusted, kind, chrono::Utc::now())?;
            eprintln!("created source '{}' (trusted: {}, data kind: {data_kind})", source.name, source.trusted);
            println!("{}", source.write_key);
        }
        SourceAction::List => {
            for s in store.list_sources()? {
                println!(
                    "{}\t{}\ttrusted={}\t{}",
                    s.name,
                    s.write_key,
                    s.trusted,
                    if s.revoked { "revoked" } else { "active" }
                );
            }
        }
    }
    Ok(())
}

/// The password for `admin create|password`: stdin when asked, else the environment, else a prompt.
fn read_password(from_stdin: bool) -> Result<String> {
    use std::io::{BufRead, Write};
    if !from_stdin && let Ok(password) = std::env::var("KIZUNA_ADMIN_PASSWORD") {
        return Ok(password);
    }
    if !from_stdin {
        eprint!("password ({}+ characters): ", kizuna_server::session::MIN_PASSWORD_CHARS);
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn admin(config: &Config, action: AdminAction) -> Result<()> {
    use kizuna_server::session::{hash_password, normalize_email};
    let store = node::open_store(config)?;
    match action {
        AdminAction::Create { email, password_stdin } => {
            let email = normalize_email(&email).map_err(|e| anyhow::anyhow!(e.message))?;
            let hash = hash_password(&read_password(password_stdin)?).map_err(|e| anyhow::anyhow!(e.message))?;
            store.admins().create_admin(&email, &hash, chrono::Utc::now())?;
            eprintln!("created admin {email}; sign in at http://{}/admin/", config.listen);
        }
        AdminAction::Password { email, password_stdin } => {
            let email = normalize_email(&email).map_err(|e| anyhow::anyhow!(e.message))?;
            let hash = hash_password(&read_password(password_stdin)?).map_err(|e| anyhow::anyhow!(e.message))?;
            if !store.admins().set_admin_password(&email, &hash)? {
                anyhow::bail!("no admin has the email {email}");
            }
            eprintln!("password of {email} changed; their sessions ended");
        }
        AdminAction::List => {
            for admin in store.admins().list_admins()? {
                let last = admin.last_login_at.map_or_else(|| "never signed in".to_owned(), |t| t.to_rfc3339());
                println!("{}\t{}\t{last}", admin.email, admin.created_at.to_rfc3339());
            }
        }
    }
    Ok(())
}

fn key(config: &Config, action: KeyAction) -> Result<()> {
    let store = node::open_store(config)?;
    match action {
        KeyAction::Create { name } => {
            let (key, secret) = store.create_api_key(&name, chrono::Utc::now())?;
            eprintln!("created admin API key '{}'; it is shown once, store it now", key.name);
            println!("{secret}");
        }
        KeyAction::List => {
            for k in store.list_api_keys()? {
                println!("{}\t{}\t{}", k.name, k.created_at, if k.revoked { "revoked" } else { "active" });
            }
        }
    }
    Ok(())
}
