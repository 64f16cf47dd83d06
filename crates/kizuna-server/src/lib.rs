//! The HTTP edge of Kizuna. Handlers validate, authenticate and translate; the work happens in the pipeline
//! (writes) and the store (reads).

mod admin;
mod analytics;
mod error;
mod flows;
mod ingest;
mod messaging;
mod ops;
mod products;
mod recommendations;
mod segments;
pub mod session;
mod web;

pub use error::{ApiError, ApiResult};
pub use ops::ApiDoc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use kizuna_identity::IdentifierConfig;
use kizuna_ingest::Limits;
use kizuna_pipeline::Pipeline;
use kizuna_profiles::DataKind;
use kizuna_store::{Source, Store};
use kizuna_types::{Clock, Code, KizunaError, telemetry::Telemetry};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Name of the built-in source that records what the admin API does to profiles (e.g. consent changes).
pub const ADMIN_SOURCE: &str = "kizuna-admin";

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    pipeline: Pipeline,
    clock: Arc<dyn Clock>,
    limits: Limits,
    identifiers: IdentifierConfig,
    sources: RwLock<HashMap<String, Source>>,
    admin_source: Source,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    ready: AtomicBool,
    analytics: RwLock<Analytics>,
    /// Whether an analytics run started through the API is going (see `analytics::ApiRunSlot`).
    api_analytics_run: Arc<AtomicBool>,
    membership: RwLock<Option<kizuna_membership::Membership>>,
    recommender: RwLock<Option<kizuna_recs_service::Recommender>>,
    messenger: RwLock<Option<kizuna_messaging_service::Messenger>>,
    flows: RwLock<Option<kizuna_flows_service::FlowEngine>>,
    sign_ins: session::SignInGuard,
    /// Bounds handlers that read the store on blocking threads (the store keeps 8 reader connections).
    blocking_reads: tokio::sync::Semaphore,
}

/// The analytics settings the API runs with, and the background scheduler when one runs.
#[derive(Default)]
struct Analytics {
    settings: kizuna_jobs::AnalyticsSettings,
    scheduler: Option<Arc<kizuna_jobs::AnalyticsScheduler>>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        pipeline: Pipeline,
        clock: Arc<dyn Clock>,
        limits: Limits,
        identifiers: IdentifierConfig,
    ) -> Result<Self, kizuna_store::StoreError> {
        let admin_source = match store.source_by_name(ADMIN_SOURCE)? {
            Some(s) => s,
            None => match store.create_source(ADMIN_SOURCE, true, DataKind::FirstParty, clock.now()) {
                Ok(s) => s,
                Err(kizuna_store::StoreError::AlreadyExists(_)) => store
                    .source_by_name(ADMIN_SOURCE)?
                    .ok_or_else(|| kizuna_store::StoreError::Invalid("admin source missing".into()))?,
                Err(e) => return Err(e),
            },
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                pipeline,
                clock,
                limits,
                identifiers,
                sources: RwLock::new(HashMap::new()),
                admin_source,
                metrics: ops::metrics_handle(),
                ready: AtomicBool::new(true),
                analytics: RwLock::new(Analytics::default()),
                api_analytics_run: Arc::new(AtomicBool::new(false)),
                membership: RwLock::new(None),
                recommender: RwLock::new(None),
                messenger: RwLock::new(None),
                flows: RwLock::new(None),
                sign_ins: session::SignInGuard::default(),
                blocking_reads: tokio::sync::Semaphore::new(8),
            }),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// Uses these analytics settings and hands on-demand runs to this background scheduler.
    pub fn set_analytics(
        &self,
        settings: kizuna_jobs::AnalyticsSettings,
        scheduler: Option<Arc<kizuna_jobs::AnalyticsScheduler>>,
    ) {
        *self.inner.analytics.write() = Analytics { settings, scheduler };
    }

    /// Serves the segments API from this segment engine.
    pub fn set_membership(&self, membership: kizuna_membership::Membership) {
        *self.inner.membership.write() = Some(membership);
    }

    pub fn membership(&self) -> Option<kizuna_membership::Membership> {
        self.inner.membership.read().clone()
    }

    /// Serves the recommendations API from this recommender (and tells it about catalog changes).
    pub fn set_recommender(&self, recommender: kizuna_recs_service::Recommender) {
        *self.inner.recommender.write() = Some(recommender);
    }

    pub fn recommender(&self) -> Option<kizuna_recs_service::Recommender> {
        self.inner.recommender.read().clone()
    }

    /// Serves the messaging API and tracking links from this messenger.
    pub fn set_messenger(&self, messenger: kizuna_messaging_service::Messenger) {
        *self.inner.messenger.write() = Some(messenger);
    }

    pub fn messenger(&self) -> Option<kizuna_messaging_service::Messenger> {
        self.inner.messenger.read().clone()
    }

    /// Serves the flows API from this engine.
    pub fn set_flows(&self, engine: kizuna_flows_service::FlowEngine) {
        *self.inner.flows.write() = Some(engine);
    }

    pub fn flows(&self) -> Option<kizuna_flows_service::FlowEngine> {
        self.inner.flows.read().clone()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Marks the server as not ready (draining) so load balancers stop sending traffic.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Finds the source for a write key; new keys made by `kizuna source create` while the server runs are
    /// found on first use.
    pub(crate) fn source(&self, write_key: &str) -> ApiResult<Source> {
        if let Some(source) = self.inner.sources.read().get(write_key) {
            return Ok(source.clone());
        }
        match self.inner.store.source_by_write_key(write_key)? {
            Some(source) if !source.revoked => {
                self.inner.sources.write().insert(write_key.to_owned(), source.clone());
                Ok(source)
            }
            _ => Err(ApiError(KizunaError::new(Code::InvalidWriteKey, "the write key is unknown or revoked"))),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ingest::routes())
        .merge(admin::routes())
        .merge(analytics::routes())
        .merge(products::routes())
        .merge(segments::routes())
        .merge(recommendations::routes())
        .merge(messaging::routes())
        .merge(flows::routes())
        .merge(session::routes())
        .merge(web::routes())
        .merge(ops::routes())
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Store work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError(KizunaError::internal(e.to_string())))?
}

/// Records latency per route and status.
async fn observe(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    Telemetry::HttpRequest { route, status: response.status().as_u16(), elapsed: started.elapsed() }.emit();
    response
}

/// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests and flushes the pipeline.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let drain_state = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            drain_state.set_ready(false);
            tracing::info!("shutting down: finishing in-flight requests");
        })
        .await?;
    let pipeline = state.inner.pipeline.clone();
    drop(state);
    tokio::task::spawn_blocking(move || pipeline.shutdown()).await.map_err(std::io::Error::other)?;
    tracing::info!("all acknowledged events are committed; bye");
    Ok(())
}
