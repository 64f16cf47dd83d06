//! One round of the engine: inputs by cursor, due runs, actions, one write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use kizuna_flows::machine::{self, Action, EventEffect, PriorRuns, StepRecord, TriggerInfo};
use kizuna_flows::{FlowDefinition, Run, RunStatus, Trigger};
use kizuna_identity::ProfileId;
use kizuna_ingest::MessageType;
use kizuna_messaging_service::SendRequest;
use kizuna_segments::eval::EventFact;
use kizuna_store::flows::{FlowBatch, RunRow, StepRow, StoredFlow};
use kizuna_store::{LockWaits, SegmentTransitionRow, TransitionFilter};
use serde_json::{Map, Value, json};

use crate::person::{LivePerson, fact};
use crate::thread_cpu::ThreadCpu;
use crate::{FlowEngine, FlowsError, FlowsResult};

const EVENTS_CURSOR: &str = "events";
const PROFILE_CHANGES_PER_READ: usize = 1_000;
/// Batches of due runs a round may take before it reads new inputs.
const TIMER_ROUNDS: usize = 10;
const TRANSITIONS_CURSOR: &str = "segment_transitions";
/// Due runs this late (ms) make a round take `CATCH_UP_FACTOR` batches at once.
const CATCH_UP_AFTER_MS: i64 = 250;
const CATCH_UP_FACTOR: usize = 4;
/// People whose actions (webhooks, profile updates) a round carries out at the same time.
const EFFECTS_AT_ONCE: usize = 32;

pub(crate) fn is_live(status: &str) -> bool {
    RunStatus::parse(status).is_some_and(RunStatus::is_live)
}

pub(crate) fn from_row(row: &RunRow) -> Run {
    let trigger = serde_json::from_value(row.trigger.clone()).unwrap_or(TriggerInfo {
        seq: 0,
        name: String::new(),
        properties: Value::Null,
        at: row.entered_at,
    });
    Run {
        id: row.id,
        profile: row.profile_id,
        version: row.version,
        status: RunStatus::parse(&row.status).unwrap_or(RunStatus::Exited),
        step: row.step.clone(),
        due_at: row.due_at,
        entered_at: row.entered_at,
        trigger,
        visits: row.visits as u32,
        arm: row.arm.clone(),
        holdout: row.holdout,
        goal_until: row.goal_until,
        converted_at: row.converted_at,
        revenue: row.revenue,
        exit_reason: row.exit_reason.clone(),
        ended_at: row.ended_at,
    }
}

fn to_row(flow_id: i64, run: &Run) -> RunRow {
    RunRow {
        id: run.id,
        flow_id,
        version: run.version,
        profile_id: run.profile,
        status: run.status.as_str().into(),
        step: run.step.clone(),
        due_at: run.due_at,
        entered_at: run.entered_at,
        trigger: serde_json::to_value(&run.trigger).unwrap_or(Value::Null),
        visits: i64::from(run.visits),
        arm: run.arm.clone(),
        holdout: run.holdout,
        goal_until: run.goal_until,
        converted_at: run.converted_at,
        revenue: run.revenue,
        exit_reason: run.exit_reason.clone(),
        ended_at: run.ended_at,
    }
}

/// An active flow as a round sees it.
pub(crate) struct LiveFlow {
    pub id: i64,
    pub name: Arc<str>,
    pub version: i64,
    pub since_event_seq: i64,
    pub since_transition_seq: i64,
    pub def: Arc<FlowDefinition>,
}

struct Touched {
    flow_id: i64,
    flow: Arc<str>,
    def: Arc<FlowDefinition>,
    active: bool,
    run: Run,
}

/// An action other than a send, to carry out after the round's steps: the step it belongs to (`index` into the
/// round's steps), what it does, and its idempotency key.
struct Effect {
    index: usize,
    action: Action,
    run: Run,
    flow: Arc<str>,
    step: String,
    key: String,
}

/// What one round changed, before it is written.
pub(crate) struct Work<'a> {
    engine: &'a FlowEngine,
    now: DateTime<Utc>,
    runs: HashMap<i64, Touched>,
    order: Vec<i64>,
    prior: HashMap<(i64, ProfileId), PriorRuns>,
    new_by_profile: HashMap<ProfileId, Vec<i64>>,
    steps: Vec<(i64, i64, StepRecord)>,
    cursors: Vec<(String, i64)>,
    flow_status: HashMap<i64, Option<(Arc<str>, bool)>>,
    refused: u64,
    started: u64,
    /// Runs whose person reached a goal that exits (also after the run's last step): (flow id, run id).
    converted: Vec<(i64, i64)>,
}

impl<'a> Work<'a> {
    pub(crate) fn new(engine: &'a FlowEngine, now: DateTime<Utc>) -> Self {
        Work {
            engine,
            now,
            runs: HashMap::new(),
            order: Vec::new(),
            prior: HashMap::new(),
            new_by_profile: HashMap::new(),
            steps: Vec::new(),
            cursors: Vec::new(),
            flow_status: HashMap::new(),
            refused: 0,
            started: 0,
            converted: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.cursors.is_empty()
    }

    fn person(&self, profile: ProfileId, def: &FlowDefinition) -> LivePerson<'a> {
        let inner = &self.engine.inner;
        let with_events = def.conditions().iter().any(|c| {
            let mut reads_events = false;
            c.visit(&mut |leaf| {
                reads_events |=
                    matches!(leaf, kizuna_segments::Condition::Event(_) | kizuna_segments::Condition::Sequence(_))
            });
            reads_events
        });
        LivePerson {
            store: &inner.store,
            profile,
            with_events,
            default_zone: inner.default_zone,
            purchase_window_days: inner.settings.purchase_window_days,
            now: self.now,
            loaded: None,
        }
    }

    fn touch(&mut self, flow_id: i64, flow: Arc<str>, def: Arc<FlowDefinition>, active: bool, run: Run) {
        if !self.runs.contains_key(&run.id) {
            self.order.push(run.id);
        }
        self.runs.insert(run.id, Touched { flow_id, flow, def, active, run });
    }

    /// Advances a touched run at `now` and keeps its steps.
    fn advance(&mut self, id: i64) {
        let Some(t) = self.runs.get(&id) else { return };
        if !t.active {
            return;
        }
        let (flow, def, mut run) = (t.flow.clone(), t.def.clone(), t.run.clone());
        let was_live = run.status.is_live();
        let mut person = self.person(run.profile, &def);
        let records = machine::advance(&flow, &def, &mut run, &mut person, self.now);
        if was_live
            && !run.status.is_live()
            && let Some(prior) = self.prior.get_mut(&(self.runs[&id].flow_id, run.profile))
        {
            prior.live = prior.live.saturating_sub(1);
        }
        let flow_id = self.runs[&id].flow_id;
        self.steps.extend(records.into_iter().map(|r| (flow_id, id, r)));
        if let Some(t) = self.runs.get_mut(&id) {
            t.run = run;
        }
    }

    /// Starts a run when the entry rules allow it.
    pub(crate) fn enter(&mut self, flow: &LiveFlow, profile: ProfileId, trigger: TriggerInfo) -> FlowsResult<bool> {
        let key = (flow.id, profile);
        if !self.prior.contains_key(&key) {
            let row = self.engine.inner.store.flows().prior_runs(flow.id, profile)?;
            self.prior.insert(key, PriorRuns { live: row.live, last_entered: row.last_entered });
        }
        let prior = self.prior.get(&key).copied().unwrap_or_default();
        let refused = machine::may_enter(&flow.def, &prior, trigger.at).is_err()
            || flow
                .def
                .entry
                .filter
                .as_ref()
                .is_some_and(|f| !self.person(profile, &flow.def).holds_now(&f.0, self.now));
        if refused {
            self.refused += 1;
            return Ok(false);
        }
        let id = self.engine.inner.next_run_id.fetch_add(1, Ordering::SeqCst);
        let run = machine::start_run(&flow.def, id, profile, flow.version, trigger);
        if let Some(prior) = self.prior.get_mut(&key) {
            prior.live += 1;
            prior.last_entered = Some(run.entered_at);
        }
        self.started += 1;
        self.touch(flow.id, flow.name.clone(), flow.def.clone(), true, run);
        self.new_by_profile.entry(profile).or_default().push(id);
        self.advance(id);
        Ok(true)
    }

    fn flow_of(&mut self, flow_id: i64) -> FlowsResult<Option<(Arc<str>, bool)>> {
        if let Some(found) = self.flow_status.get(&flow_id) {
            return Ok(found.clone());
        }
        let found =
            self.engine.inner.store.flows().flow_by_id(flow_id)?.map(|f| (Arc::from(f.name), f.status == "active"));
        self.flow_status.insert(flow_id, found.clone());
        Ok(found)
    }

    /// Brings a stored run into the round (or returns the id of the copy it already holds).
    fn adopt(&mut self, row: &RunRow) -> FlowsResult<Option<i64>> {
        if self.runs.contains_key(&row.id) {
            return Ok(Some(row.id));
        }
        let Some((flow, active)) = self.flow_of(row.flow_id)? else { return Ok(None) };
        let def = self.engine.definition(row.flow_id, row.version)?;
        self.touch(row.flow_id, flow, def, active, from_row(row));
        Ok(Some(row.id))
    }

    /// An event of a person: their open runs see it (waits, goals).
    fn event(&mut self, profile: ProfileId, event: &EventFact) -> FlowsResult<()> {
        let mut ids: Vec<i64> = Vec::new();
        for row in self.engine.inner.store.flows().open_runs(profile, event.at)? {
            if let Some(id) = self.adopt(&row)? {
                ids.push(id);
            }
        }
        ids.extend(self.new_by_profile.get(&profile).cloned().unwrap_or_default());
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let Some(t) = self.runs.get_mut(&id) else { continue };
            let was_live = t.run.status.is_live();
            match machine::on_event(&t.def, &mut t.run, event, self.now) {
                EventEffect::Resumed(record) => {
                    let flow_id = t.flow_id;
                    self.steps.push((flow_id, id, record));
                    self.advance(id);
                }
                EventEffect::Converted => {
                    if t.def.goal.as_ref().is_some_and(|goal| goal.exit) {
                        self.converted.push((t.flow_id, id));
                    }
                    if was_live && !t.run.status.is_live() {
                        let key = (t.flow_id, t.run.profile);
                        if let Some(prior) = self.prior.get_mut(&key) {
                            prior.live = prior.live.saturating_sub(1);
                        }
                    }
                }
                EventEffect::None => {}
            }
        }
        Ok(())
    }

    /// Carries out the actions of the round's steps, then writes runs, steps and cursors in one transaction.
    /// Returns the milliseconds spent queueing sends and writing, and the lock waits within them.
    pub(crate) async fn finish(mut self) -> FlowsResult<(f64, f64, LockWaits, ThreadCpu)> {
        if self.is_empty() {
            return Ok((0.0, 0.0, LockWaits::ZERO, ThreadCpu::default()));
        }
        let queueing = std::time::Instant::now();
        // Per thread: queueing runs without an await, and so does the write.
        let traced = self.engine.inner.settings.record_lateness;
        let before = LockWaits::on_this_thread();
        let cpu_before = ThreadCpu::read(traced);
        self.perform_sends();
        let mut waits = LockWaits::on_this_thread().since(before);
        let mut cpu = ThreadCpu::read(traced).since(cpu_before);
        let queue_ms = queueing.elapsed().as_secs_f64() * 1e3;
        self.perform_effects().await;
        let inner = &self.engine.inner;
        if inner.crash_before_write.swap(false, Ordering::SeqCst) {
            return Err(FlowsError::Store(kizuna_store::StoreError::Invalid(
                "simulated crash before the write".into(),
            )));
        }
        let steps_executed = self.steps.len() as u64;
        let batch = FlowBatch {
            runs: self.order.iter().filter_map(|id| self.runs.get(id)).map(|t| to_row(t.flow_id, &t.run)).collect(),
            steps: self
                .steps
                .iter()
                .map(|(flow_id, run_id, r)| {
                    let row = StepRow {
                        run_id: *run_id,
                        visit: i64::from(r.visit),
                        step: r.step.clone(),
                        kind: r.kind.into(),
                        outcome: r.outcome.clone(),
                        action: r.action.as_ref().and_then(|a| serde_json::to_value(a).ok()),
                        at: r.at,
                    };
                    (*flow_id, row)
                })
                .collect(),
            cursors: std::mem::take(&mut self.cursors),
        };
        // Runs that ended early this round, whose sends still waiting should not go: the person stopped matching
        // the flow's filter, or reached its goal.
        let filtered: Vec<(i64, i64)> = self
            .order
            .iter()
            .filter_map(|id| self.runs.get(id).map(|t| (t.flow_id, *id, t)))
            .filter(|(_, _, t)| t.run.ended_at == Some(self.now) && t.run.exit_reason.as_deref() == Some("filter"))
            .map(|(flow_id, id, _)| (flow_id, id))
            .collect();
        // Before the runs' end is written: a crash in between redoes the round (its inputs' cursors did not
        // move), which ends them again, and withdrawing twice changes nothing.
        for (runs, why) in [(&filtered, "filter"), (&self.converted, "goal")] {
            self.engine.withdraw_sends(runs, why).map_err(|e| {
                FlowsError::Store(kizuna_store::StoreError::Invalid(format!("withdrawing ended runs' sends: {e}")))
            })?;
        }
        let writing = std::time::Instant::now();
        let before = LockWaits::on_this_thread();
        let cpu_before = ThreadCpu::read(traced);
        inner.store.flows().apply_flow_batch(&batch, self.now)?;
        waits.add(LockWaits::on_this_thread().since(before));
        cpu.add(ThreadCpu::read(traced).since(cpu_before));
        let write_ms = writing.elapsed().as_secs_f64() * 1e3;
        let mut stats = inner.stats.lock();
        stats.runs_started += self.started;
        stats.entries_refused += self.refused;
        stats.steps_executed += steps_executed;
        Ok((queue_ms, write_ms, waits, cpu))
    }

    fn key(run: i64, flow_id: i64, visit: u32) -> String {
        format!("{}{visit}", run_key_prefix(flow_id, run))
    }

    fn perform_sends(&mut self) {
        let mut requests = Vec::new();
        let mut at = Vec::new();
        for (i, (flow_id, run_id, record)) in self.steps.iter().enumerate() {
            let Some(Action::Send { template, priority }) = &record.action else { continue };
            let Some(t) = self.runs.get(run_id) else { continue };
            requests.push(SendRequest {
                template: template.clone(),
                profile_id: t.run.profile,
                priority: *priority,
                event: t.run.trigger.as_event(),
                idempotency_key: Some(Self::key(*run_id, *flow_id, record.visit)),
                flow: Some(t.flow.to_string()),
                campaign: None,
                send_at: None,
            });
            at.push(i);
        }
        if requests.is_empty() {
            return;
        }
        let delivery = &self.engine.inner.delivery;
        let failures: Vec<(usize, String)> = match delivery.enqueue(&requests) {
            Ok(()) => Vec::new(),
            // One bad request (a template deleted since, a person erased) must not hold back the others.
            Err(_) => requests
                .iter()
                .enumerate()
                .filter_map(|(i, r)| delivery.enqueue(std::slice::from_ref(r)).err().map(|e| (i, e)))
                .collect(),
        };
        let sent = requests.len() - failures.len();
        for (i, reason) in failures {
            tracing::warn!(reason = %reason, "a flow send could not be queued");
            self.steps[at[i]].2.outcome = format!("failed: {reason}");
        }
        self.engine.inner.stats.lock().sends_queued += sent as u64;
    }

    /// Carries out the round's actions other than sends: one person's in the order their steps ran (a tag then
    /// a trait update), different people's at the same time, at most `EFFECTS_AT_ONCE` people at once. One by
    /// one, a webhook that hangs (10 s, three attempts) held up every timer of every flow for each person
    /// reaching it.
    async fn perform_effects(&mut self) {
        let mut by_person: HashMap<ProfileId, Vec<Effect>> = HashMap::new();
        for (i, (flow_id, run_id, record)) in self.steps.iter().enumerate() {
            let Some(action) = record.action.as_ref().filter(|a| !matches!(a, Action::Send { .. })) else { continue };
            let Some(t) = self.runs.get(run_id) else { continue };
            let key = Self::key(*run_id, *flow_id, record.visit);
            by_person.entry(t.run.profile).or_default().push(Effect {
                index: i,
                action: action.clone(),
                run: t.run.clone(),
                flow: t.flow.clone(),
                step: record.step.clone(),
                key,
            });
        }
        if by_person.is_empty() {
            return;
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(EFFECTS_AT_ONCE));
        let mut tasks = tokio::task::JoinSet::new();
        for (_, effects) in by_person {
            let (engine, slots) = (self.engine.clone(), slots.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let mut failed = Vec::new();
                for e in effects {
                    if let Err(reason) = engine.act(&e.action, &e.run, &e.flow, &e.step, &e.key).await {
                        tracing::warn!(run = e.run.id, step = %e.step, reason = %reason, "a flow action failed");
                        failed.push((e.index, reason));
                    }
                }
                failed
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(failed) => {
                    for (i, reason) in failed {
                        self.steps[i].2.outcome = format!("failed: {reason}");
                    }
                }
                Err(error) => tracing::error!(%error, "a flow action task stopped"),
            }
        }
    }
}

impl LivePerson<'_> {
    fn holds_now(&mut self, condition: &kizuna_segments::Condition, now: DateTime<Utc>) -> bool {
        use kizuna_flows::PersonContext;
        self.holds(condition, now)
    }
}

impl FlowEngine {
    pub(crate) fn active_flows(&self) -> FlowsResult<Vec<LiveFlow>> {
        let mut out = Vec::new();
        for flow in self.inner.store.flows().list_flows()? {
            let (true, Some(version)) = (flow.status == "active", flow.live_version) else { continue };
            out.push(LiveFlow {
                id: flow.id,
                def: self.definition(flow.id, version)?,
                name: Arc::from(flow.name),
                version,
                since_event_seq: flow.since_event_seq,
                since_transition_seq: flow.since_transition_seq,
            });
        }
        Ok(out)
    }

    /// One round: merges and erasures, segment transitions, events, due runs. True when it did anything.
    pub async fn round(&self) -> FlowsResult<bool> {
        let _round = self.inner.round.lock().await;
        let started = std::time::Instant::now();
        self.inner.stats.lock().rounds += 1;
        // No flow at all: nobody can enter, wait or be due, so the inputs are not read — a store without flows
        // must not pay for them on every commit (each round used to write its cursors and fsync, competing with
        // ingestion for the write lock). The cursors are forgotten once; the first flow's inputs are then read
        // from where it was activated.
        if self.inner.store.flows().list_flows()?.is_empty() {
            if !self.inner.idle.swap(true, Ordering::SeqCst) {
                self.inner.store.flows().forget_flow_cursors()?;
            }
            return Ok(false);
        }
        self.inner.idle.store(false, Ordering::SeqCst);
        self.apply_profile_changes()?;
        // Timers go first and are never held back: a step runs when it is due (conditions are checked then, and
        // a send is handed to messaging, whose queue orders delivery by priority). A burst of new entrants
        // never makes the people already inside late; inputs get their turn after at most `TIMER_ROUNDS`
        // batches (they wait durably in the store meanwhile).
        let mut worked = false;
        let mut prelude_ms = started.elapsed().as_secs_f64() * 1e3;
        for _ in 0..TIMER_ROUNDS {
            if !self.run_due(prelude_ms).await? {
                break;
            }
            prelude_ms = 0.0;
            worked = true;
        }
        // Backpressure is on admission, in two steps: past `backlog_limit` messages waiting, new entrants only
        // trickle in (a tenth of a batch per round: never starved by a wave of timers); past twice that, none
        // until messaging catches up. The queue stays bounded by the people already admitted.
        let limit = self.inner.settings.backlog_limit.max(1);
        let backlog = self.inner.delivery.backlog(2 * limit);
        let admit = if backlog >= 2 * limit {
            self.inner.stats.lock().backpressure_pauses += 1;
            return Ok(worked);
        } else if backlog >= limit {
            self.inner.stats.lock().backpressure_pauses += 1;
            (self.inner.settings.batch / 10).max(1)
        } else {
            self.inner.settings.batch
        };
        let flows = self.active_flows()?;
        worked |= self.consume_transitions(&flows, admit).await?;
        worked |= self.consume_events(&flows, admit).await?;
        worked |= self.sweep_calendar(&flows).await?;
        Ok(worked)
    }

    /// Merges and erasures since the last round, read from the store's own records by cursor: a change is
    /// followed even when it was committed just before a crash.
    fn apply_profile_changes(&self) -> FlowsResult<()> {
        let mut concurrent = Vec::new();
        for flow in self.inner.store.flows().list_flows()? {
            if let Some(version) = flow.live_version
                && self.definition(flow.id, version)?.entry.concurrent
            {
                concurrent.push(flow.id);
            }
        }
        let flows = self.inner.store.flows();
        loop {
            let followed = flows.follow_profile_changes(PROFILE_CHANGES_PER_READ, &concurrent)?;
            if followed.merged_runs > 0 {
                self.inner.withdrawals_owed.store(true, Ordering::SeqCst);
            }
            self.pay_owed_withdrawals()?;
            if followed.applied < PROFILE_CHANGES_PER_READ {
                return Ok(());
            }
        }
    }

    /// Withdraws the sends of runs a merge ended, recorded with their end (also those a crash left undone: the
    /// flag starts set), and then forgets them. A failure leaves them recorded for the next round.
    fn pay_owed_withdrawals(&self) -> FlowsResult<()> {
        if !self.inner.withdrawals_owed.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        if self.inner.crash_before_withdrawal.swap(false, Ordering::SeqCst) {
            return Err(FlowsError::Store(kizuna_store::StoreError::Invalid(
                "simulated crash before withdrawing".into(),
            )));
        }
        let flows = self.inner.store.flows();
        loop {
            let owed = flows.owed_withdrawals(PROFILE_CHANGES_PER_READ)?;
            let mut by_reason: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
            for w in &owed {
                by_reason.entry(w.reason.as_str()).or_default().push((w.flow_id, w.run_id));
            }
            for (why, runs) in &by_reason {
                if let Err(error) = self.withdraw_sends(runs, why) {
                    tracing::warn!(%error, runs = runs.len(), "could not withdraw the sends of ended runs; retrying");
                    self.inner.withdrawals_owed.store(true, Ordering::SeqCst);
                    return Ok(());
                }
            }
            flows.withdrawals_done(&owed.iter().map(|w| w.run_id).collect::<Vec<_>>())?;
            if owed.len() < PROFILE_CHANGES_PER_READ {
                return Ok(());
            }
        }
    }

    /// What ended runs queued and has not gone out yet does not go: a cart reminder held by quiet hours after
    /// the person bought, a second welcome series after a merge.
    fn withdraw_sends(&self, runs: &[(i64, i64)], why: &str) -> Result<(), String> {
        if runs.is_empty() {
            return Ok(());
        }
        let prefixes: Vec<String> = runs.iter().map(|(flow_id, run)| run_key_prefix(*flow_id, *run)).collect();
        self.inner.delivery.withdraw(&prefixes, &format!("flow_run_ended: {why}")).map(|_| ())
    }

    /// Where reading an input starts without a cursor: its head, or where an activated flow began reading it if
    /// earlier (a flow activated after the cursors were forgotten, before this round).
    fn first_read(&self, head: i64, since: impl Fn(&StoredFlow) -> i64) -> FlowsResult<i64> {
        let flows = self.inner.store.flows().list_flows()?;
        Ok(flows.iter().filter(|f| f.live_version.is_some()).map(since).fold(head, i64::min))
    }

    fn cursor(&self, name: &str, head: impl FnOnce(&Self) -> FlowsResult<i64>) -> FlowsResult<(i64, bool)> {
        match self.inner.store.flows().flow_cursor(name)? {
            Some(position) => Ok((position, false)),
            // First start: history before it does not trigger anything.
            None => Ok((head(self)?, true)),
        }
    }

    async fn consume_transitions(&self, flows: &[LiveFlow], limit: usize) -> FlowsResult<bool> {
        let (after, fresh) = self.cursor(TRANSITIONS_CURSOR, |me| {
            me.first_read(me.inner.store.flows().input_heads()?.1, |f| f.since_transition_seq)
        })?;
        let filter = TransitionFilter { after_seq: after, limit, ..Default::default() };
        let transitions = self.inner.store.segment_transitions(&filter)?;
        let mut work = Work::new(self, self.now());
        let Some(last) = transitions.last().map(|t| t.seq) else {
            if fresh {
                work.cursors.push((TRANSITIONS_CURSOR.into(), after));
                work.finish().await?;
            }
            return Ok(false);
        };
        let triggers = |t: &SegmentTransitionRow, flow: &LiveFlow| {
            t.seq > flow.since_transition_seq && machine::transition_triggers(&flow.def, &t.segment, t.entered)
        };
        // A transition keeps the id its person had when it was recorded. If they merged since, and an earlier
        // round already followed that merge, nothing would move a run entered under the old id: enter the
        // person the id belongs to now (erased people enter nothing).
        let entrants: Vec<ProfileId> =
            transitions.iter().filter(|t| flows.iter().any(|f| triggers(t, f))).map(|t| t.profile_id).collect();
        let live = if entrants.is_empty() { HashMap::new() } else { self.inner.store.live_profile_ids(&entrants)? };
        for t in &transitions {
            for flow in flows {
                if triggers(t, flow) {
                    let Some(&Some(profile)) = live.get(&t.profile_id) else { continue };
                    let name = if t.entered { "Segment Entered" } else { "Segment Exited" };
                    let trigger = TriggerInfo {
                        seq: 0,
                        name: name.into(),
                        properties: json!({"segment": t.segment, "cause": t.cause}),
                        at: t.at.min(work.now),
                    };
                    work.enter(flow, profile, trigger)?;
                }
            }
        }
        work.cursors.push((TRANSITIONS_CURSOR.into(), last));
        work.finish().await?;
        Ok(true)
    }

    async fn consume_events(&self, flows: &[LiveFlow], limit: usize) -> FlowsResult<bool> {
        let (after, fresh) = self.cursor(EVENTS_CURSOR, |me| {
            me.first_read(me.inner.store.flows().input_heads()?.0, |f| f.since_event_seq)
        })?;
        // Names that matter: triggers of active flows, and what any flow's runs wait for.
        let mut triggers: HashSet<String> = HashSet::new();
        for flow in flows {
            if let Trigger::Event(m) = &flow.def.trigger {
                triggers.insert(m.name.clone());
            }
        }
        let mut awaited: HashSet<String> = HashSet::new();
        for flow in self.inner.store.flows().list_flows()? {
            for version in [flow.live_version, Some(flow.version)].into_iter().flatten() {
                if let Ok(def) = self.definition(flow.id, version) {
                    awaited.extend(def.awaited_events().into_iter().map(str::to_string));
                }
            }
        }
        let wanted = |name: &str| triggers.contains(name) || awaited.contains(name);
        let (events, last) = self.inner.store.scan_events(after, limit, &wanted)?;
        let mut work = Work::new(self, self.now());
        let Some(last) = last.filter(|l| *l > after) else {
            if fresh {
                work.cursors.push((EVENTS_CURSOR.into(), after));
                work.finish().await?;
            }
            return Ok(false);
        };
        for scanned in events {
            if !wanted(&scanned.name) {
                continue;
            }
            // Unlike a transition, an event is moved with its person in the merge's own transaction: its id is
            // live, or belongs to a merge this round did not follow yet and the next one will.
            let profile = scanned.profile_id;
            let Some(event) = fact(scanned.seq, scanned.body) else { continue };
            if awaited.contains(&*event.name) {
                work.event(profile, &event)?;
            }
            for flow in flows {
                if event.seq > flow.since_event_seq && machine::event_triggers(&flow.def, &event) {
                    let trigger = TriggerInfo {
                        seq: event.seq,
                        name: event.name.to_string(),
                        properties: event.properties.clone(),
                        at: event.at.min(work.now),
                    };
                    work.enter(flow, profile, trigger)?;
                }
            }
        }
        work.cursors.push((EVENTS_CURSOR.into(), last));
        work.finish().await?;
        Ok(true)
    }

    async fn run_due(&self, prelude_ms: f64) -> FlowsResult<bool> {
        let started = std::time::Instant::now();
        let record = self.inner.settings.record_lateness;
        let cpu_before = ThreadCpu::read(record);
        let now = self.now();
        let Some(oldest) = self.inner.store.flows().next_due()?.filter(|at| *at <= now) else {
            return Ok(false);
        };
        // Behind schedule (a wave of timers falling due as fast as people were admitted, with messaging
        // sending alongside): a bigger round costs one commit instead of several and catches up. On time, rounds
        // stay small, so the write lock that ingestion shares is never held long.
        let batch = self.inner.settings.batch.max(1);
        let late = now - oldest > chrono::Duration::milliseconds(CATCH_UP_AFTER_MS);
        let due = self.inner.store.flows().due_runs(now, if late { batch * CATCH_UP_FACTOR } else { batch })?;
        if due.is_empty() {
            return Ok(false);
        }
        let read_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut work = Work::new(self, now);
        let mut lateness = Vec::new();
        // People merged away or erased were followed at the start of the round (their runs moved or deleted);
        // one merged during it is followed next round, and messaging resolves whom a send is for when it sends.
        for row in &due {
            let Some(id) = work.adopt(row)? else { continue };
            if record && let Some(at) = row.due_at {
                lateness.push((now - at).num_milliseconds());
            }
            work.advance(id);
        }
        let advance_ms = started.elapsed().as_secs_f64() * 1e3 - read_ms;
        let mut cpu = ThreadCpu::read(record).since(cpu_before);
        let (queue_ms, write_ms, waits, finishing) = work.finish().await?;
        cpu.add(finishing);
        if record {
            self.inner.timer_rounds.lock().push(crate::TimerRound {
                at: now,
                runs: due.len(),
                oldest_late_ms: (now - oldest).num_milliseconds(),
                read_ms,
                advance_ms,
                queue_ms,
                write_ms,
                side_writer_wait_ms: waits.side_writer.as_secs_f64() * 1e3,
                sqlite_wait_ms: waits.sqlite.as_secs_f64() * 1e3,
                on_cpu_ms: cpu.on_cpu.as_secs_f64() * 1e3,
                cpu_wait_ms: cpu.waiting.as_secs_f64() * 1e3,
                total_ms: started.elapsed().as_secs_f64() * 1e3,
                prelude_ms,
            });
            self.inner.lateness_ms.lock().extend(lateness);
        }
        Ok(true)
    }

    /// Enrols people in an active flow (manual trigger, or any flow by explicit choice); returns how many
    /// entered (the others were refused by the entry rules).
    pub async fn enroll(&self, name: &str, profiles: &[ProfileId]) -> FlowsResult<usize> {
        let flow = self.stored(name)?;
        let live =
            self.active_flows()?.into_iter().find(|f| f.id == flow.id).ok_or(FlowsError::NotActive(name.into()))?;
        let _round = self.inner.round.lock().await;
        let now = self.now();
        let mut entered = 0;
        for chunk in profiles.chunks(self.inner.settings.batch.max(1)) {
            let mut work = Work::new(self, now);
            for &profile in chunk {
                let Some(live_id) = self.inner.store.live_profile_id(profile)? else {
                    return Err(FlowsError::ProfileNotFound(profile));
                };
                let trigger =
                    TriggerInfo { seq: 0, name: "Enrolled".into(), properties: json!({"flow": name}), at: now };
                if work.enter(&live, live_id, trigger)? {
                    entered += 1;
                }
            }
            work.finish().await?;
        }
        Ok(entered)
    }

    /// Carries out one non-send action.
    async fn act(&self, action: &Action, run: &Run, flow: &str, step: &str, key: &str) -> Result<(), String> {
        let effects = self.inner.effects.lock().clone();
        match action {
            Action::Send { .. } => Ok(()),
            Action::Webhook { url, body } => self.call_webhook(url, body, run, flow, step, key).await,
            other => {
                let Some((pipeline, source)) = effects else {
                    return Err("profile updates need the ingest pipeline".into());
                };
                let (kind, body) = match other {
                    Action::UpdateProfile { traits } => (MessageType::Identify, traits_body(traits.clone())),
                    Action::Tag { add, remove } => {
                        let current = self
                            .inner
                            .store
                            .profile(run.profile)
                            .map_err(|e| e.to_string())?
                            .and_then(|p| p.state.trait_values().get("tags").cloned());
                        let mut tags: Vec<String> = match current {
                            Some(Value::Array(items)) => {
                                items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                            }
                            _ => Vec::new(),
                        };
                        tags.retain(|t| !remove.contains(t));
                        for tag in add {
                            if !tags.contains(tag) {
                                tags.push(tag.clone());
                            }
                        }
                        let mut traits = Map::new();
                        traits.insert("tags".into(), json!(tags));
                        (MessageType::Identify, traits_body(traits))
                    }
                    Action::AwardPoints { points, reason } => {
                        // Recorded as an event on the person: the loyalty module's ledger reads it, and the
                        // idempotency key lets it count a re-executed step once.
                        let mut body = Map::new();
                        body.insert("event".into(), json!("Loyalty Points Awarded"));
                        body.insert(
                            "properties".into(),
                            json!({"points": points, "reason": reason, "flow": flow, "step": step, "idempotency_key": key}),
                        );
                        (MessageType::Track, body)
                    }
                    _ => return Ok(()),
                };
                let event = kizuna_ingest::Event::internal(kind, body, self.now());
                // A person merged into another since the run started: the step's event goes to the survivor.
                match pipeline.append_to_live(run.profile, &source, event).await.map_err(|e| e.to_string())? {
                    Some(_) => Ok(()),
                    None => Err(format!("profile {} was erased", run.profile)),
                }
            }
        }
    }

    async fn call_webhook(
        &self,
        url: &str,
        body: &Value,
        run: &Run,
        flow: &str,
        step: &str,
        key: &str,
    ) -> Result<(), String> {
        let traits = self
            .inner
            .store
            .profile(run.profile)
            .map_err(|e| e.to_string())?
            .map(|p| Value::Object(p.state.trait_values()))
            .unwrap_or(Value::Null);
        let payload = json!({
            "flow": flow, "step": step, "run_id": run.id.to_string(),
            "profile": {"id": run.profile.to_string(), "traits": traits},
            "trigger": run.trigger.as_event(), "data": body,
        });
        let bytes = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
        let mut last_error = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let mut request = self
                .inner
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", key)
                .body(bytes.clone());
            if let Some(secret) = &self.inner.settings.webhook_secret {
                let t = self.now().timestamp();
                let signature = kizuna_channels::webhook_signature(secret, t, &bytes);
                request = request.header("X-Kizuna-Signature", format!("t={t},v1={signature}"));
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                // A 4xx other than 429 will not improve by retrying.
                Ok(response) if response.status().is_client_error() && response.status().as_u16() != 429 => {
                    return Err(format!("webhook answered {}", response.status()));
                }
                Ok(response) => last_error = format!("webhook answered {}", response.status()),
                Err(e) => last_error = format!("webhook unreachable: {e}"),
            }
        }
        Err(last_error)
    }
}

fn traits_body(traits: Map<String, Value>) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("traits".into(), Value::Object(traits));
    body
}

/// The start of the idempotency keys of all the flow's sends (the colon: flow 1 is not flow 10).
pub(crate) fn flow_key_prefix(flow_id: i64) -> String {
    format!("flow:{flow_id}:")
}

/// The start of the idempotency keys of a run's sends (one per step visit).
fn run_key_prefix(flow_id: i64, run: i64) -> String {
    format!("{}run:{run}:", flow_key_prefix(flow_id))
}
