//! # kizuna-flows-service — the durable flow engine
//!
//! Every person's run is a row in the store with its timer (`due_at`, indexed). The engine works in rounds;
//! each round reads new segment transitions and new events **by cursor** from the store (so nothing that was
//! acknowledged is missed across a restart), wakes the runs that are due (an index range, never a scan of all
//! runs), moves each through the pure machine (`kizuna-flows`), carries out the actions the steps asked for,
//! and then writes the runs, their steps and the cursors in one transaction.
//!
//! Actions happen before the write, and each carries an idempotency key made of the run and the step visit: a
//! crash between the two re-executes the same steps from the last written state, and messaging (which keeps
//! the keys) queues each message once. That is at-least-once execution made effectively-once.
//!
//! Backpressure: when messaging has more than `backlog_limit` messages due and not yet handed to a channel,
//! the engine stops starting and advancing runs until it drains; the inputs wait in the store.

mod delivery;
mod engine;
pub mod person;
mod replay;
mod report;
mod thread_cpu;
mod timed;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kizuna_flows::validate::{self, FlowError, Resolver};
use kizuna_flows::{FlowDefinition, Run};
use kizuna_identity::ProfileId;
use kizuna_pipeline::{Committed, FeedChange, FeedSink, Pipeline};
use kizuna_store::flows::StoredFlow;
use kizuna_store::{Source, Store, StoreError};
use kizuna_types::Clock;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use delivery::{Delivery, verdict};
pub use replay::{SimReport, SimRequest};
pub use report::FlowReport;

/// `[flows]` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowSettings {
    /// Inputs (transitions, events) and due runs handled per round, each round one transaction (and one fsync)
    /// for flows and one for the messages it queues. Larger rounds keep timers on time under a burst (measured:
    /// 1,000 → p99 1.5 s late, 4,000 → 0.6 s, for 50k timers due within 4 s) but hold SQLite's write lock
    /// longer, which ingestion shares.
    pub batch: usize,
    /// The longest sleep between rounds when nothing wakes the engine, in milliseconds.
    pub idle_ms: u64,
    /// Admit no new entrants while messaging has this many messages due and not yet handed to a channel
    /// (a few seconds of its work: enough to keep it busy, little to lose in priority to later sends).
    pub backlog_limit: usize,
    /// The zone of people whose own is unknown (the store's).
    pub default_timezone: String,
    /// For computed attributes in conditions (`computed.journey_stage`).
    pub purchase_window_days: f64,
    /// Signs webhook steps' requests (`X-Kizuna-Signature: t=…,v1=…`).
    pub webhook_secret: Option<String>,
    /// How often date triggers (birthdays) are swept, in minutes: a firing starts at most this late.
    pub date_sweep_minutes: u32,
    /// Keep each due run's lateness (actual − scheduled) for the benchmark.
    #[serde(skip)]
    pub record_lateness: bool,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            batch: 2_000,
            idle_ms: 1_000,
            backlog_limit: 10_000,
            default_timezone: "UTC".into(),
            purchase_window_days: 30.0,
            webhook_secret: None,
            date_sweep_minutes: 15,
            record_lateness: false,
        }
    }
}

/// One round of due runs, as the benchmark traces it.
#[derive(Debug, Clone, Copy)]
pub struct TimerRound {
    /// The round's clock.
    pub at: DateTime<Utc>,
    pub runs: usize,
    /// How late the oldest run of the round was when it started.
    pub oldest_late_ms: i64,
    /// Finding the due runs (the next due time, then the batch).
    pub read_ms: f64,
    /// Advancing each run through its steps.
    pub advance_ms: f64,
    /// Queueing its sends with messaging (one transaction).
    pub queue_ms: f64,
    /// Writing its runs and steps (one transaction).
    pub write_ms: f64,
    /// Of queueing and writing: waiting for the flows-and-messaging writer while messaging held it, and for
    /// SQLite's write lock (the ingest writer, a checkpoint restarting the WAL).
    pub side_writer_wait_ms: f64,
    pub sqlite_wait_ms: f64,
    /// Of reading, advancing, queueing and writing: the engine's thread on a CPU, and runnable but waiting for
    /// one (Linux only; 0 elsewhere).
    pub on_cpu_ms: f64,
    pub cpu_wait_ms: f64,
    pub total_ms: f64,
    /// For a round's first batch: the time its round spent before it (listing flows, following merges and
    /// erasures); 0 for the batches after.
    pub prelude_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowsError {
    #[error(transparent)]
    Invalid(#[from] FlowError),
    #[error("flow \"{0}\" does not exist")]
    NotFound(String),
    #[error("flow run {0} does not exist")]
    RunNotFound(i64),
    #[error("flow \"{0}\" is not active")]
    NotActive(String),
    #[error("profile {0} not found")]
    ProfileNotFound(ProfileId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type FlowsResult<T> = Result<T, FlowsError>;

/// A flow as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowInfo {
    pub name: String,
    pub status: String,
    /// The latest saved version.
    pub version: i64,
    /// The version new entrants get (none until activated).
    pub live_version: Option<i64>,
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Engine counters since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    pub rounds: u64,
    pub runs_started: u64,
    pub steps_executed: u64,
    pub sends_queued: u64,
    pub entries_refused: u64,
    pub backpressure_pauses: u64,
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    delivery: Arc<dyn Delivery>,
    settings: FlowSettings,
    default_zone: Tz,
    effects: Mutex<Option<(Pipeline, Source)>>,
    http: reqwest::Client,
    definitions: Mutex<HashMap<(i64, i64), Arc<FlowDefinition>>>,
    /// One round at a time; API enrolment takes it too.
    round: tokio::sync::Mutex<()>,
    /// Runs ended by a merge may have sends to withdraw (see `FlowStore::owed_withdrawals`); set at start, so
    /// what a crash left undone is done in the first round.
    withdrawals_owed: AtomicBool,
    next_run_id: AtomicI64,
    wake: Notify,
    stopped: AtomicBool,
    stats: Mutex<EngineStats>,
    lateness_ms: Mutex<Vec<i64>>,
    timer_rounds: Mutex<Vec<TimerRound>>,
    /// Test hook: the next round stops after its actions and before its write, as a kill would.
    crash_before_write: AtomicBool,
    crash_before_withdrawal: AtomicBool,
    /// No flow exists and the input cursors are forgotten: rounds read nothing.
    idle: AtomicBool,
}

/// The handle to the flow engine; cheap to clone.
#[derive(Clone)]
pub struct FlowEngine {
    inner: Arc<Inner>,
}

struct StoreResolver<'a> {
    store: &'a dyn Store,
    delivery: &'a dyn Delivery,
}

impl Resolver for StoreResolver<'_> {
    fn template_exists(&self, name: &str) -> bool {
        self.delivery.template_exists(name)
    }

    fn segment_exists(&self, name: &str) -> bool {
        self.store.segment_by_name(name).ok().flatten().is_some()
    }
}

impl FlowEngine {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        delivery: Arc<dyn Delivery>,
        settings: FlowSettings,
    ) -> FlowsResult<FlowEngine> {
        let default_zone = settings.default_timezone.parse::<Tz>().map_err(|_| FlowError {
            field: "default_timezone".into(),
            message: format!("unknown zone {}", settings.default_timezone),
        })?;
        let next = store.flows().max_run_id()? + 1;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| StoreError::Invalid(format!("HTTP client: {e}")))?;
        Ok(FlowEngine {
            inner: Arc::new(Inner {
                store,
                clock,
                delivery,
                settings,
                default_zone,
                effects: Mutex::new(None),
                http,
                definitions: Mutex::new(HashMap::new()),
                round: tokio::sync::Mutex::new(()),
                withdrawals_owed: AtomicBool::new(true),
                next_run_id: AtomicI64::new(next),
                wake: Notify::new(),
                stopped: AtomicBool::new(false),
                stats: Mutex::new(EngineStats::default()),
                lateness_ms: Mutex::new(Vec::new()),
                timer_rounds: Mutex::new(Vec::new()),
                crash_before_write: AtomicBool::new(false),
                crash_before_withdrawal: AtomicBool::new(false),
                idle: AtomicBool::new(false),
            }),
        })
    }

    /// Where profile updates, tags and points are recorded (as events of this source).
    pub fn set_effects(&self, pipeline: Pipeline, source: Source) {
        *self.inner.effects.lock() = Some((pipeline, source));
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Wakes the engine (new events or transitions are waiting).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub fn stats(&self) -> EngineStats {
        self.inner.stats.lock().clone()
    }

    /// The lateness of every due run executed since the last call, in milliseconds (with `record_lateness`).
    pub fn take_lateness(&self) -> Vec<i64> {
        std::mem::take(&mut *self.inner.lateness_ms.lock())
    }

    /// Every round of due runs since the last call (with `record_lateness`): where a late timer's time went.
    pub fn take_timer_rounds(&self) -> Vec<TimerRound> {
        std::mem::take(&mut *self.inner.timer_rounds.lock())
    }

    /// Passes every commit on to `next`, waking the engine when it holds events (merges and erasures it reads
    /// from the store by cursor at the start of every round).
    pub fn feed_sink_then(&self, next: FeedSink) -> FeedSink {
        let me = self.clone();
        Box::new(move |committed: Committed| {
            if committed.changes.iter().any(|c| matches!(c, FeedChange::Event { .. })) {
                me.wake();
            }
            next(committed)
        })
    }

    // ---- definitions -------------------------------------------------------------------------------------

    /// Reads and checks a definition without saving it.
    pub fn check(&self, definition: &serde_json::Value) -> FlowsResult<FlowDefinition> {
        let def = validate::from_json(definition)?;
        let resolver = StoreResolver { store: self.inner.store.as_ref(), delivery: self.inner.delivery.as_ref() };
        validate::check(&def, &resolver)?;
        Ok(def)
    }

    /// Saves a new version. A draft stays a draft; an active flow gives new entrants the new version, while
    /// people inside finish on the version they entered ([`FlowEngine::migrate`] moves them explicitly).
    pub fn save(&self, name: &str, definition: &serde_json::Value) -> FlowsResult<FlowInfo> {
        check_name(name)?;
        let def = self.check(definition)?;
        let normalized = serde_json::to_value(&def).map_err(StoreError::from)?;
        let now = self.now();
        let stored = self.inner.store.flows().save_flow(name, &normalized, now)?;
        if stored.status == "active" {
            self.inner.store.flows().set_flow_status(stored.id, "active", Some(stored.version), now)?;
        }
        self.info(name)
    }

    pub fn info(&self, name: &str) -> FlowsResult<FlowInfo> {
        let flow = self.stored(name)?;
        let version = self
            .inner
            .store
            .flows()
            .flow_version(flow.id, flow.version)?
            .ok_or_else(|| FlowsError::NotFound(name.into()))?;
        Ok(FlowInfo {
            name: flow.name,
            status: flow.status,
            version: flow.version,
            live_version: flow.live_version,
            definition: version.definition,
            created_at: flow.created_at,
            updated_at: flow.updated_at,
        })
    }

    pub fn list(&self) -> FlowsResult<Vec<FlowInfo>> {
        let names: Vec<String> = self.inner.store.flows().list_flows()?.into_iter().map(|f| f.name).collect();
        names.iter().map(|n| self.info(n)).collect()
    }

    /// One saved version's definition.
    pub fn version(&self, name: &str, version: i64) -> FlowsResult<serde_json::Value> {
        let flow = self.stored(name)?;
        let found = self.inner.store.flows().flow_version(flow.id, version)?;
        found.map(|v| v.definition).ok_or_else(|| FlowsError::NotFound(format!("{name} version {version}")))
    }

    pub fn versions(&self, name: &str) -> FlowsResult<Vec<(i64, DateTime<Utc>)>> {
        let flow = self.stored(name)?;
        Ok(self.inner.store.flows().flow_versions(flow.id)?)
    }

    pub(crate) fn stored(&self, name: &str) -> FlowsResult<StoredFlow> {
        self.inner.store.flows().flow(name)?.ok_or_else(|| FlowsError::NotFound(name.into()))
    }

    /// Starts the flow: new triggers (from now on) enter the latest version; paused runs continue.
    pub fn activate(&self, name: &str) -> FlowsResult<FlowInfo> {
        let flow = self.stored(name)?;
        // References may have gone since the flow was saved (a deleted template).
        let definition = self.version(name, flow.version)?;
        self.check(&definition)?;
        self.inner.store.flows().set_flow_status(flow.id, "active", Some(flow.version), self.now())?;
        self.wake();
        self.info(name)
    }

    /// The kill switch: nobody enters, no step runs, timers wait; [`FlowEngine::activate`] resumes. What the
    /// flow's runs handed to messaging and has not gone out yet (a reminder deferred to the morning by quiet
    /// hours) is withdrawn: a kill switch that let queued sends go on would not stop a flow sending the wrong
    /// thing. Runs resume after their send steps; those sends are not queued again.
    pub async fn pause(&self, name: &str) -> FlowsResult<FlowInfo> {
        let flow = self.stored(name)?;
        // Held across both writes: no round of this engine queues a send of the flow in between.
        let _round = self.inner.round.lock().await;
        self.inner.store.flows().set_flow_status(flow.id, "paused", None, self.now())?;
        self.withdraw_flow_sends(flow.id, "flow_paused")?;
        self.info(name)
    }

    /// Deletes the flow with its runs and their history, and withdraws what its runs queued and has not gone out
    /// yet (first: a crash in between leaves the flow there to be deleted again, never its sends without it).
    pub async fn delete(&self, name: &str) -> FlowsResult<()> {
        let flow = self.stored(name)?;
        let _round = self.inner.round.lock().await;
        self.withdraw_flow_sends(flow.id, "flow_deleted")?;
        self.inner.store.flows().delete_flow(flow.id)?;
        Ok(())
    }

    fn withdraw_flow_sends(&self, flow_id: i64, reason: &str) -> FlowsResult<()> {
        let withdrawn = self
            .inner
            .delivery
            .withdraw(&[engine::flow_key_prefix(flow_id)], reason)
            .map_err(|e| FlowsError::Store(kizuna_store::StoreError::Invalid(format!("withdrawing sends: {e}"))))?;
        if withdrawn > 0 {
            tracing::info!(flow_id, withdrawn, reason, "withdrew the flow's sends still waiting to go");
        }
        Ok(())
    }

    pub(crate) fn definition(&self, flow_id: i64, version: i64) -> FlowsResult<Arc<FlowDefinition>> {
        if let Some(def) = self.inner.definitions.lock().get(&(flow_id, version)) {
            return Ok(def.clone());
        }
        let stored = self
            .inner
            .store
            .flows()
            .flow_version(flow_id, version)?
            .ok_or_else(|| FlowsError::NotFound(format!("flow {flow_id} version {version}")))?;
        let def = Arc::new(validate::from_json(&stored.definition)?);
        self.inner.definitions.lock().insert((flow_id, version), def.clone());
        Ok(def)
    }

    /// Runs of other versions move to the live one — the version new entrants get, not a draft saved while the
    /// flow was paused — when their current step is still there and still the same kind of step: a run waiting
    /// for an event keeps that wait's state, which a delay of the same name would misread.
    pub async fn migrate(&self, name: &str) -> FlowsResult<usize> {
        let flow = self.stored(name)?;
        let target_version = flow.live_version.unwrap_or(flow.version);
        let target = self.definition(flow.id, target_version)?;
        let _round = self.inner.round.lock().await;
        let mut moved = Vec::new();
        let mut after = None;
        loop {
            let page = self.inner.store.flows().runs(Some(flow.id), None, None, after, 1_000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for row in page {
                if row.version == target_version || !engine::is_live(&row.status) {
                    continue;
                }
                let keeps_step = match row.step.as_deref() {
                    None => true,
                    Some(id) => {
                        let current = self.definition(flow.id, row.version)?;
                        match (current.step(id), target.step(id)) {
                            (Some(now), Some(then)) => {
                                std::mem::discriminant(&now.kind) == std::mem::discriminant(&then.kind)
                            }
                            _ => false,
                        }
                    }
                };
                if keeps_step {
                    let mut row = row;
                    row.version = target_version;
                    moved.push(row);
                }
            }
        }
        let batch = kizuna_store::flows::FlowBatch { runs: moved, ..Default::default() };
        let count = batch.runs.len();
        self.inner.store.flows().apply_flow_batch(&batch, self.now())?;
        Ok(count)
    }

    // ---- runs ---------------------------------------------------------------------------------------------

    pub fn run(&self, id: i64) -> FlowsResult<(Run, String, Vec<kizuna_store::flows::StepRow>)> {
        let row = self.inner.store.flows().run(id)?.ok_or(FlowsError::RunNotFound(id))?;
        let flow = self.inner.store.flows().flow_by_id(row.flow_id)?.map(|f| f.name).unwrap_or_default();
        let steps = self.inner.store.flows().run_steps(id)?;
        Ok((engine::from_row(&row), flow, steps))
    }

    /// A flow's runs (optionally of one status), or a person's runs in every flow.
    pub fn runs(
        &self,
        flow: Option<&str>,
        profile: Option<ProfileId>,
        status: Option<&str>,
        after: Option<i64>,
        limit: usize,
    ) -> FlowsResult<Vec<(Run, String)>> {
        let flow_id = flow.map(|name| self.stored(name).map(|f| f.id)).transpose()?;
        let rows = self.inner.store.flows().runs(flow_id, profile, status, after, limit)?;
        let mut names: HashMap<i64, String> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(row.flow_id) {
                slot.insert(self.inner.store.flows().flow_by_id(row.flow_id)?.map(|f| f.name).unwrap_or_default());
            }
            out.push((engine::from_row(&row), names.get(&row.flow_id).cloned().unwrap_or_default()));
        }
        Ok(out)
    }

    // ---- the loop -----------------------------------------------------------------------------------------

    /// Runs rounds until [`FlowEngine::stop`]: at once when woken, when the next timer is due, and at least
    /// every `idle`.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while !me.inner.stopped.load(Ordering::SeqCst) {
                let worked = match me.round().await {
                    Ok(worked) => worked,
                    Err(e) => {
                        tracing::error!(error = %e, "flow round failed; retrying");
                        false
                    }
                };
                if worked {
                    tokio::task::yield_now().await;
                    continue;
                }
                let mut sleep = std::time::Duration::from_millis(me.inner.settings.idle_ms.max(1));
                if let Ok(Some(due)) = me.inner.store.flows().next_due() {
                    let until = (due - me.now()).to_std().unwrap_or_default();
                    sleep = sleep.min(until.max(std::time::Duration::from_millis(1)));
                }
                let _ = tokio::time::timeout(sleep, me.inner.wake.notified()).await;
            }
        })
    }

    /// For crash tests: the next round carries out its actions and then fails before it writes, leaving the
    /// store as a `kill -9` at the worst moment would.
    #[doc(hidden)]
    pub fn crash_before_next_write(&self) {
        self.inner.crash_before_write.store(true, Ordering::SeqCst);
    }

    /// For crash tests: the next round that ends runs in a merge fails after writing their end and before
    /// withdrawing their sends, as a `kill -9` between the two would.
    #[doc(hidden)]
    pub fn crash_before_next_withdrawal(&self) {
        self.inner.crash_before_withdrawal.store(true, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }
}

fn check_name(name: &str) -> FlowsResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(FlowError { field: "name".into(), message: "a flow name is 1–100 letters, digits, '_' or '-'".into() }
            .into())
    }
}
