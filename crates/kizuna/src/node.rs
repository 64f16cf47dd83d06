//! Assembling a running node: store, pipeline, server, and the data-directory lock.

use crate::config::Config;
use anyhow::{Context, Result};
use kizuna_membership::{Membership, MembershipSettings};
use kizuna_messaging_service::Messenger;
use kizuna_pipeline::Pipeline;
use kizuna_recs_service::Recommender;
use kizuna_server::AppState;
use kizuna_store::{SqliteStore, Store};
use kizuna_types::{Clock, SystemClock};
use std::fs::File;
use std::sync::Arc;

pub fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    let store = SqliteStore::open(&config.data_dir, config.durability)
        .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Only one process may run the write path on a data directory: it holds the identity graph in memory.
pub fn lock_data_dir(config: &Config) -> Result<File> {
    std::fs::create_dir_all(&config.data_dir)?;
    let path = config.data_dir.join("kizuna.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => anyhow::bail!(
            "another kizuna process (a running server?) is writing to {}; stop it first, or send the data to it over HTTP",
            config.data_dir.display()
        ),
    }
}

pub struct Node {
    pub store: Arc<dyn Store>,
    pub pipeline: Pipeline,
    pub membership: Membership,
    pub recommender: Recommender,
    pub messenger: Messenger,
    pub flows: kizuna_flows_service::FlowEngine,
    pub clock: Arc<dyn Clock>,
    _lock: File,
}

pub fn start_node(config: &Config) -> Result<Node> {
    let lock = lock_data_dir(config)?;
    let store = open_store(config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Segments first: the pipeline publishes every commit to it from the start.
    let settings = MembershipSettings {
        purchase_window_days: config.analytics.purchase_window_days,
        ..MembershipSettings::default()
    };
    let membership =
        Membership::start(store.clone(), clock.clone(), settings).context("cannot start the segment engine")?;
    let recommender = Recommender::start(store.clone(), clock.clone(), config.recommendations.clone())
        .context("cannot start recommendations")?;
    let picker = Arc::new(RecommendedProducts(recommender.clone()));
    let messenger = Messenger::new(store.clone(), clock.clone(), config.messaging.clone(), picker)
        .context("cannot start messaging (check [messaging])")?;
    let flows = kizuna_flows_service::FlowEngine::new(
        store.clone(),
        clock.clone(),
        Arc::new(messenger.clone()),
        config.flows.clone(),
    )
    .context("cannot start the flow engine (check [flows])")?;
    let feed = kizuna_messaging_service::attribution_sink(
        &messenger,
        flows.feed_sink_then(recommender.feed_sink_then(membership.feed_sink())),
    );
    let pipeline = Pipeline::start_with_feed(store.clone(), config.pipeline(), clock.clone(), Some(feed))
        .context("cannot start the pipeline")?;
    let messaging_source = source_named(store.as_ref(), MESSAGING_SOURCE, clock.now())?;
    messenger.set_feedback(pipeline.clone(), messaging_source);
    flows.set_effects(pipeline.clone(), source_named(store.as_ref(), FLOWS_SOURCE, clock.now())?);
    // This thread restored the identity graph and loaded recommendations; what that freed goes back now.
    kizuna_types::memory::release_free_memory();
    Ok(Node { store, pipeline, membership, recommender, messenger, flows, clock, _lock: lock })
}

/// The source that records what messaging learns about people: opens, clicks, unsubscribes, bounces.
pub const MESSAGING_SOURCE: &str = "kizuna-messaging";

/// The source of what flows do to profiles: traits and tags set by a step, loyalty points awarded.
pub const FLOWS_SOURCE: &str = "kizuna-flows";

fn source_named(store: &dyn Store, name: &str, now: chrono::DateTime<chrono::Utc>) -> Result<kizuna_store::Source> {
    if let Some(source) = store.source_by_name(name)? {
        return Ok(source);
    }
    match store.create_source(name, true, kizuna_profiles::DataKind::FirstParty, now) {
        Ok(source) => Ok(source),
        Err(kizuna_store::StoreError::AlreadyExists(_)) => {
            store.source_by_name(name)?.with_context(|| format!("the {name} source vanished"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `{% recommend %}` and LINE carousels, served in-process by the recommender.
struct RecommendedProducts(Recommender);

impl kizuna_messaging::ProductPicker for RecommendedProducts {
    fn pick(&self, placement: &str, request: &kizuna_messaging::PickRequest) -> Result<Vec<serde_json::Value>, String> {
        let query = kizuna_recs_service::Query {
            profile: request.profile_id,
            products: request.products.clone(),
            places: None,
            limit: Some(request.limit),
        };
        let answer = self.0.recommend(placement, &query).map_err(|e| e.to_string())?;
        Ok(answer
            .items
            .iter()
            .map(|item| {
                let p = &item.product;
                serde_json::json!({
                    "id": p.id, "name": p.title, "price": p.price, "currency": p.currency,
                    "compare_at_price": p.compare_at_price, "url": p.url, "image_url": p.image,
                    "brand": p.brand, "category": p.categories.first(), "reason": item.reason,
                })
            })
            .collect())
    }
}

/// At most this many threads run blocking work (store reads for API calls, exports, analytics) at once; more wait
/// their turn. Each such thread keeps a Zstandard decompression context (~184 KiB with the body dictionary) for as
/// long as it lives, and each concurrent read beyond the store's 8 pooled connections opens one of its own (a page
/// cache of up to 16 MiB): tokio's default of 512 let a burst of reads hold hundreds of both.
pub const MAX_BLOCKING_THREADS: usize = 32;

fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.max_blocking_threads(MAX_BLOCKING_THREADS).enable_all();
    builder
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(runtime_builder().build()?)
}

/// The runtime a server runs on: `config.http_threads` worker threads (see `Config::http_threads`).
pub fn server_runtime(config: &Config) -> Result<tokio::runtime::Runtime> {
    Ok(runtime_builder().worker_threads(config.http_threads).build()?)
}

pub async fn serve_node(config: &Config, node: &Node, listener: tokio::net::TcpListener) -> Result<()> {
    let state = AppState::new(
        node.store.clone(),
        node.pipeline.clone(),
        node.clock.clone(),
        config.limits,
        config.identifiers.clone(),
    )?;
    let every = (config.analytics_interval_minutes > 0)
        .then(|| chrono::Duration::minutes(i64::from(config.analytics_interval_minutes)));
    let membership = node.membership.clone();
    let scheduler = Arc::new(kizuna_jobs::AnalyticsScheduler::start_with_hook(
        node.store.clone(),
        node.clock.clone(),
        config.analytics.clone(),
        kizuna_jobs::scheduler::Schedule { every, poll: std::time::Duration::from_secs(30) },
        Box::new(move || membership.request_refresh()),
    )?);
    state.set_analytics(config.analytics.clone(), Some(scheduler.clone()));
    state.set_membership(node.membership.clone());
    state.set_recommender(node.recommender.clone());
    state.set_messenger(node.messenger.clone());
    state.set_flows(node.flows.clone());
    let worker = node.messenger.spawn_worker(std::time::Duration::from_secs(1));
    let flows = node.flows.spawn();
    tracing::info!(address = %listener.local_addr()?, data_dir = %config.data_dir.display(), "kizuna listening");
    kizuna_server::serve(listener, state, shutdown_signal()).await?;
    node.flows.stop();
    let _ = flows.await;
    node.messenger.stop();
    let _ = worker.await;
    tokio::task::spawn_blocking(move || scheduler.shutdown()).await?;
    Ok(())
}

/// Runs analytics now, in this process (after an import or the demo load), and says what it did.
pub fn run_analytics_now(config: &Config, node: &Node, trigger: &str) -> Result<kizuna_jobs::RunSummary> {
    let summary = kizuna_jobs::run_analytics(node.store.as_ref(), node.clock.now(), trigger, &config.analytics)?;
    node.membership.request_refresh();
    Ok(summary)
}

pub fn run_server(config: &Config) -> Result<()> {
    let node = start_node(config)?;
    server_runtime(config)?.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        serve_node(config, &node, listener).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

/// Loads customers `0..customers` of a simulated store through the real pipeline, in commits of about 5,000
/// events; `progress` is told after each customer. Returns the number of events loaded.
pub fn load_simulated(
    node: &Node,
    source: &kizuna_store::Source,
    simulator: &kizuna_simulate::Simulator,
    customers: usize,
    progress: impl Fn(usize),
) -> Result<usize> {
    let runtime = runtime()?;
    let mut chunk = Vec::with_capacity(5000);
    let mut events = 0usize;
    for index in 0..customers {
        for message in simulator.customer_messages(index) {
            chunk.push(kizuna_ingest::parse_message(message, node.clock.now()).context("simulated message invalid")?);
        }
        if chunk.len() >= 5000 || index + 1 == customers {
            events += chunk.len();
            runtime.block_on(node.pipeline.ingest(source, std::mem::take(&mut chunk)))?;
        }
        progress(index);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_burst_of_blocking_work_runs_on_at_most_the_capped_threads() -> anyhow::Result<()> {
        let runtime = super::runtime()?;
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        runtime.block_on(async {
            let tasks: Vec<_> = (0..super::MAX_BLOCKING_THREADS * 3)
                .map(|_| {
                    let (running, most) = (running.clone(), most.clone());
                    tokio::task::spawn_blocking(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for task in tasks {
                task.await?;
            }
            anyhow::Ok(())
        })?;
        let most = most.load(Ordering::SeqCst);
        assert!(most <= super::MAX_BLOCKING_THREADS, "{most} blocking tasks ran at once");
        assert!(most > 1, "the blocking work ran in parallel");
        Ok(())
    }
}
