//! Starts the real server on 127.0.0.1:0 with its own temporary data directory, and talks HTTP to it.
#![allow(dead_code)]

use kizuna_pipeline::{Pipeline, PipelineConfig};
use kizuna_profiles::DataKind;
use kizuna_server::AppState;
use kizuna_store::{Durability, SqliteStore, Store};
use kizuna_types::{Clock, SystemClock};
use serde_json::Value;
use std::sync::Arc;

pub struct TestServer {
    pub base: String,
    /// A browser-like source: may not merge two identified profiles.
    pub web_key: String,
    /// A server-side source.
    pub server_key: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub membership: kizuna_membership::Membership,
    pub recommender: kizuna_recs_service::Recommender,
    pub messenger: kizuna_messaging_service::Messenger,
    pub flows: kizuna_flows_service::FlowEngine,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(kizuna_ingest::Limits::default()).await
    }

    pub async fn start_with(limits: kizuna_ingest::Limits) -> Self {
        Self::start_full(limits, kizuna_messaging_service::MessagingSettings::default()).await
    }

    /// With messaging configured (its worker runs every 50 ms).
    pub async fn start_messaging(settings: kizuna_messaging_service::MessagingSettings) -> Self {
        Self::start_full(kizuna_ingest::Limits::default(), settings).await
    }

    pub async fn start_full(
        limits: kizuna_ingest::Limits,
        messaging: kizuna_messaging_service::MessagingSettings,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), Durability::Process).expect("open store"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now();
        let web = store.create_source("web", false, DataKind::FirstParty, now).expect("web source");
        let server = store.create_source("backend", true, DataKind::FirstParty, now).expect("server source");
        let (_, admin_key) = store.create_api_key("tests", now).expect("admin key");
        let identifiers = kizuna_identity::IdentifierConfig {
            custom_types: vec!["shopify_customer_id".into()],
            default_country: Some("JP".into()),
        };
        let config = PipelineConfig { identifiers: identifiers.clone(), ..PipelineConfig::default() };
        let membership =
            kizuna_membership::Membership::start(store.clone(), clock.clone(), Default::default()).expect("segments");
        let recommender = kizuna_recs_service::Recommender::start(
            store.clone(),
            clock.clone(),
            kizuna_recs_service::RecsSettings { rebuild_ms: 50, retrain_minutes: 0, ..Default::default() },
        )
        .expect("recommendations");
        let messenger = kizuna_messaging_service::Messenger::new(
            store.clone(),
            clock.clone(),
            messaging,
            Arc::new(kizuna_messaging::NoProducts),
        )
        .expect("messaging");
        let flows = kizuna_flows_service::FlowEngine::new(
            store.clone(),
            clock.clone(),
            Arc::new(messenger.clone()),
            kizuna_flows_service::FlowSettings { idle_ms: 50, ..Default::default() },
        )
        .expect("flows");
        let feed = kizuna_messaging_service::attribution_sink(
            &messenger,
            flows.feed_sink_then(recommender.feed_sink_then(membership.feed_sink())),
        );
        let pipeline = Pipeline::start_with_feed(store.clone(), config, clock.clone(), Some(feed)).expect("pipeline");
        let messaging_source =
            store.create_source("kizuna-messaging", true, DataKind::FirstParty, now).expect("messaging source");
        messenger.set_feedback(pipeline.clone(), messaging_source);
        let flows_source = store.create_source("kizuna-flows", true, DataKind::FirstParty, now).expect("flows source");
        flows.set_effects(pipeline.clone(), flows_source);
        let state = AppState::new(store.clone(), pipeline, clock, limits, identifiers).expect("state");
        state.set_membership(membership.clone());
        state.set_recommender(recommender.clone());
        state.set_messenger(messenger.clone());
        state.set_flows(flows.clone());
        flows.spawn();
        messenger.spawn_worker(std::time::Duration::from_millis(50));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(kizuna_server::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            web_key: web.write_key,
            server_key: server.write_key,
            admin_key,
            client: reqwest::Client::new(),
            store,
            membership,
            recommender,
            messenger,
            flows,
            shutdown: Some(tx),
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn answer(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// POSTs JSON with the given write key as HTTP Basic username.
    pub async fn send(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let response =
            self.client.post(self.url(path)).basic_auth(key, Some("")).json(body).send().await.expect("request");
        Self::answer(response).await
    }

    pub async fn web(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(&self.web_key.clone(), path, &body).await
    }

    pub async fn backend(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(&self.server_key.clone(), path, &body).await
    }

    pub async fn raw(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        Self::answer(request.send().await.expect("request")).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).bearer_auth(&self.admin_key).send().await.expect("request");
        Self::answer(response).await
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(&self.admin_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request.send().await.expect("request")).await
    }

    /// The profile that holds this identifier, or panics with the answer.
    pub async fn profile(&self, kind: &str, value: &str) -> Value {
        let (status, body) = self.admin_get(&format!("/api/profiles/by/{kind}/{value}")).await;
        assert_eq!(status, 200, "profile by {kind}/{value}: {body}");
        body
    }

    pub async fn event_count(&self) -> u64 {
        let (_, stats) = self.admin_get("/api/stats").await;
        stats["events"].as_u64().expect("events count")
    }

    pub async fn stop(mut self) {
        self.flows.stop();
        self.messenger.stop();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

/// Asserts the one error shape.
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got_status, body) = answer;
    assert_eq!(*got_status, status, "status for {body}");
    assert_eq!(body["code"], code, "code in {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
    match field {
        Some(f) => assert_eq!(body["field"], f, "field in {body}"),
        None => assert!(body.get("field").is_some(), "field key present in {body}"),
    }
}
