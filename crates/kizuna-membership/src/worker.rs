//! The engine thread: applies commits, commands and time, records transitions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kizuna_pipeline::{Committed, FeedChange};
use kizuna_segments::engine::{Cause, Change, Engine, EngineError, SegmentDefinition, Transition};
use kizuna_segments::summary::Interest;
use kizuna_segments::{Condition, from_json, print};
use kizuna_store::{MemberChange, SegmentTransitionRow, Store, StoredSegment};
use kizuna_types::Clock;
use tokio::sync::broadcast;

use crate::data::{fed_event, profile_data, reads_scores, scanned_event};
use crate::{
    Command, Input, MembershipError, MembershipResult, MembershipSettings, Preview, SegmentInfo, TransitionBatch,
};

/// At most this many inputs are applied before their transitions are recorded together.
const BATCH: usize = 512;
/// Changes of a commit applied together (cut only between people: see `Committed::into_parts`).
const PART_CHANGES: usize = 128;
/// Transitions worth their own write while a batch of inputs is still being applied.
const RECORD_EARLY: usize = 256;
/// The longest the thread sleeps without looking at the clock (a test clock moves without waking it).
const MAX_SLEEP: Duration = Duration::from_millis(200);
/// How long membership changes gather before they are written to the stored snapshot. The history is written
/// on every commit (flows wait for it); writing the snapshot there too cost ~40% of each commit's time (two
/// random index pages per change) and most of the latency p99, while only start-up and member listings read it.
const MEMBERS_EVERY: Duration = Duration::from_secs(1);
/// Changes written to the snapshot per transaction between inputs: sorted by key, a chunk lands on few pages,
/// and the write lock the history shares is held briefly.
const MEMBERS_CHUNK: usize = 256;
/// Per transaction when everything is written at once (before commands, `sync`, erasures and shutdown).
const MEMBERS_FLUSH_CHUNK: usize = 5_000;

/// Membership changes recorded in the history and not yet in the stored snapshot.
#[derive(Default)]
struct PendingMembers {
    /// Each (segment, person)'s last change since the batch began.
    gathering: BTreeMap<(i64, u64), (bool, DateTime<Utc>)>,
    gathering_since: Option<Instant>,
    /// The history position of the latest change gathered.
    gathering_through: i64,
    /// A batch being written a chunk at a time, in descending key order (chunks come off the end).
    writing: Vec<MemberChange>,
    writing_since: Option<Instant>,
    writing_through: i64,
    /// A chunk of the batch failed: its end must not claim the history position (start-up replays from there).
    writing_failed: bool,
    /// Writes that failed, ever.
    failures: u64,
}

impl PendingMembers {
    fn note(&mut self, rows: &[SegmentTransitionRow]) {
        for row in rows {
            self.gathering.insert((row.segment_id, row.profile_id), (row.entered, row.at));
            self.gathering_through = self.gathering_through.max(row.seq);
        }
        if !self.gathering.is_empty() && self.gathering_since.is_none() {
            self.gathering_since = Some(Instant::now());
        }
    }

    /// Starts writing what gathered (only once the previous batch is written: a person's changes stay in order).
    fn start_batch(&mut self) -> bool {
        if !self.writing.is_empty() || self.gathering.is_empty() {
            return false;
        }
        self.writing = std::mem::take(&mut self.gathering)
            .into_iter()
            .rev()
            .map(|((segment_id, profile_id), (entered, at))| MemberChange { segment_id, profile_id, entered, at })
            .collect();
        self.writing_through = self.gathering_through;
        self.writing_since = Some(Instant::now());
        self.writing_failed = false;
        self.gathering_since = None;
        true
    }

    /// A batch still being written after `MEMBERS_EVERY` (more changes than chunks between inputs can take)
    /// catches up in big chunks, so the snapshot never falls further behind.
    fn chunk_size(&self) -> usize {
        if self.writing_since.is_some_and(|since| since.elapsed() >= MEMBERS_EVERY) {
            MEMBERS_FLUSH_CHUNK
        } else {
            MEMBERS_CHUNK
        }
    }

    /// Changes whose write failed go back to be written with the next batch (a newer change of the same
    /// person wins), and this batch's end does not claim its history position.
    fn retry(&mut self, failed: &[MemberChange]) {
        for c in failed {
            self.gathering.entry((c.segment_id, c.profile_id)).or_insert((c.entered, c.at));
        }
        self.gathering_since.get_or_insert_with(Instant::now);
        self.writing_failed = true;
        self.failures += 1;
    }

    fn batch_due(&self) -> bool {
        self.gathering_since.is_some_and(|since| since.elapsed() >= MEMBERS_EVERY)
    }

    /// How long the thread may sleep before it has membership to write.
    fn idle_for(&self) -> Option<Duration> {
        if !self.writing.is_empty() {
            return Some(Duration::ZERO);
        }
        self.gathering_since.map(|since| MEMBERS_EVERY.saturating_sub(since.elapsed()))
    }

    /// The next chunk of the batch being written, and the history position it completes (with its last chunk).
    fn next_chunk(&mut self, size: usize) -> Option<(Vec<MemberChange>, Option<i64>)> {
        if self.writing.is_empty() {
            return None;
        }
        let chunk = self.writing.split_off(self.writing.len().saturating_sub(size));
        Some((chunk, (self.writing.is_empty() && !self.writing_failed).then_some(self.writing_through)))
    }
}

pub(crate) struct Worker {
    engine: Engine,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: MembershipSettings,
    publish: broadcast::Sender<TransitionBatch>,
    segments: BTreeMap<String, StoredSegment>,
    /// People erased since the last record: their memberships and history are dropped after it.
    erased: Vec<u64>,
    members: PendingMembers,
}

impl Worker {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: MembershipSettings,
        publish: broadcast::Sender<TransitionBatch>,
    ) -> Worker {
        Worker {
            engine: Engine::new(),
            store,
            clock,
            settings,
            publish,
            segments: BTreeMap::new(),
            erased: Vec::new(),
            members: PendingMembers::default(),
        }
    }

    pub(crate) fn run(mut self, receiver: Receiver<Input>) {
        let started = Instant::now();
        match self.load() {
            Ok(changed) => tracing::info!(
                segments = self.segments.len(),
                profiles = self.engine.stats().profiles,
                changed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "segment membership loaded"
            ),
            Err(error) => tracing::error!(%error, "could not load segment membership; starting empty"),
        }
        loop {
            let mut sleep = self
                .engine
                .next_wake()
                .map_or(MAX_SLEEP, |at| (at - self.clock.now()).to_std().unwrap_or_default().min(MAX_SLEEP));
            if let Some(idle) = self.members.idle_for() {
                sleep = sleep.min(idle);
            }
            let first = match receiver.recv_timeout(sleep) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut transitions = Vec::new();
            let mut synced = Vec::new();
            let mut stop = false;
            let mut next = first;
            let mut taken = 0;
            while let Some(input) = next.take() {
                match input {
                    Input::Commit(committed) => {
                        // A big commit (ingest groups every call that arrived during the previous fsync) is applied
                        // a few people at a time, and what they changed is recorded as soon as there is a batch
                        // worth a write: the first people of a 1,600-transition commit were published ~35 ms
                        // after the commit reached this thread, behind everyone else's evaluation and write.
                        for part in committed.into_parts(PART_CHANGES) {
                            transitions.extend(self.apply(part));
                            if transitions.len() >= RECORD_EARLY {
                                self.record(std::mem::take(&mut transitions));
                            }
                        }
                    }
                    Input::Command(Command::Sync { reply }) => synced.push(reply),
                    Input::Command(command) => {
                        // Commands answer after what came before them is recorded, and read or change the stored
                        // membership only when it is complete (those that change it write it before answering).
                        self.record(std::mem::take(&mut transitions));
                        self.write_all_members();
                        self.command(command);
                    }
                    Input::Shutdown => stop = true,
                }
                taken += 1;
                if taken < BATCH && !stop {
                    next = receiver.try_recv().ok();
                }
            }
            transitions.extend(self.engine.tick(self.clock.now()));
            self.record(transitions);
            if stop || !synced.is_empty() {
                self.write_all_members();
            } else {
                self.write_members_chunk();
            }
            for reply in synced {
                let _ = reply.send(());
            }
            if stop {
                break;
            }
        }
        tracing::info!("segment engine stopped");
    }

    /// Loads definitions, stored membership and profile data; evaluates everything and records what changed
    /// while Kizuna was not running. Returns how many memberships changed.
    fn load(&mut self) -> MembershipResult<usize> {
        let stored = self.store.segments()?;
        let mut definitions = Vec::new();
        for segment in stored {
            match from_json(&segment.definition) {
                Ok(condition) => {
                    definitions.push(SegmentDefinition { id: segment.id, name: segment.name.clone(), condition });
                    self.segments.insert(segment.name.clone(), segment);
                }
                Err(error) => tracing::error!(segment = %segment.name, %error, "stored definition is invalid; skipped"),
            }
        }
        self.engine.install(definitions)?;
        self.store.prune_segment_members()?;
        let engine = &mut self.engine;
        self.store.load_segment_members(&mut |segment, profile| engine.restore_member(segment, profile))?;
        // With no segment defined, nothing is loaded: the first definition or preview loads what it reads.
        if !self.engine.sleep() {
            self.reload(true)?;
        }
        let transitions = self.engine.evaluate_all(self.clock.now());
        let changed = transitions.len();
        self.record(transitions);
        self.write_all_members();
        // The load parsed every profile and event it keeps: give back what that freed before waiting for work.
        kizuna_types::memory::release_free_memory();
        Ok(changed)
    }

    /// Reads profile data (and, with `events`, every event the definitions read) from storage into the
    /// engine. Harmless to repeat: events are kept once by log position, older data never replaces newer.
    fn reload(&mut self, events: bool) -> MembershipResult<()> {
        let now = self.clock.now();
        let interest = self.engine.interest().clone();
        let page = self.settings.scan_page.max(1);
        let mut after = None;
        loop {
            let profiles = self.store.scan_profile_data(after, page)?;
            let Some(last) = profiles.last().map(|p| p.id) else { break };
            for p in profiles {
                let data = profile_data(
                    &p.state,
                    p.scores.as_ref(),
                    p.identifier_kinds,
                    p.updated_ms,
                    now,
                    &interest,
                    self.settings.purchase_window_days,
                );
                self.engine.load_profile(p.id, Some(&data), &[], now);
            }
            after = Some(last);
        }
        if events && !interest.events.is_empty() {
            let wanted = |name: &str| interest.events.contains_key(name);
            let mut after_seq = 0;
            loop {
                let (found, last) = self.store.scan_events(after_seq, page * 4, &wanted)?;
                let Some(last) = last else { break };
                let mut by_profile: BTreeMap<u64, Vec<_>> = BTreeMap::new();
                for event in found {
                    let profile = event.profile_id;
                    if let Some(e) = scanned_event(event) {
                        by_profile.entry(profile).or_default().push(e);
                    }
                }
                for (profile, events) in by_profile {
                    self.engine.load_profile(profile, None, &events, now);
                }
                after_seq = last;
            }
        }
        kizuna_types::memory::release_free_memory();
        Ok(())
    }

    fn apply(&mut self, committed: Committed) -> Vec<Transition> {
        if self.engine.is_dormant() {
            // No summaries to update; an erased person's history of earlier segments is still deleted.
            for change in committed.changes {
                if let FeedChange::Removed { profile, erased: true } = change {
                    self.erased.push(profile);
                }
            }
            return Vec::new();
        }
        let now = self.clock.now();
        let interest = self.engine.interest().clone();
        let mut changes = Vec::with_capacity(committed.changes.len());
        for change in committed.changes {
            changes.push(match change {
                FeedChange::Event { profile, event } => {
                    if !interest.events.contains_key(&event.name) {
                        continue;
                    }
                    Change::Updated { profile, data: None, events: vec![fed_event(event)] }
                }
                FeedChange::Merged { from, into } => Change::Merged { from, into },
                FeedChange::Rebuilt { profile, events } => {
                    Change::Rebuilt { profile, events: events.into_iter().map(fed_event).collect() }
                }
                FeedChange::Removed { profile, erased } => {
                    if erased {
                        self.erased.push(profile);
                    }
                    Change::Removed { profile, erased }
                }
                FeedChange::State { profile, state, identifier_kinds, version } => {
                    let scores = if reads_scores(&interest) {
                        self.store.profile_scores(profile).unwrap_or_else(|error| {
                            tracing::warn!(%error, profile, "could not read scores; computed scores left out");
                            None
                        })
                    } else {
                        None
                    };
                    let data = profile_data(
                        &state,
                        scores.as_ref(),
                        identifier_kinds.to_vec(),
                        version,
                        now,
                        &interest,
                        self.settings.purchase_window_days,
                    );
                    Change::Updated { profile, data: Some(data), events: Vec::new() }
                }
            });
        }
        self.engine.apply(changes, now)
    }

    /// Records transitions in the store, then publishes them. Exits of erased people are published but not
    /// stored, and their earlier memberships and history are deleted.
    fn record(&mut self, transitions: Vec<Transition>) {
        self.record_transitions(transitions);
        if !self.erased.is_empty() {
            // Written first, or a pending entry of an erased person would come back after the deletion.
            self.write_all_members();
        }
        for profile in std::mem::take(&mut self.erased) {
            // A failure leaves rows that the next start's pruning removes.
            if let Err(error) = self.store.forget_segment_profile(profile) {
                tracing::error!(%error, profile, "could not delete an erased person's segment history");
            }
        }
    }

    fn record_transitions(&mut self, transitions: Vec<Transition>) {
        if transitions.is_empty() {
            return;
        }
        let mut rows: Vec<SegmentTransitionRow> = Vec::with_capacity(transitions.len());
        let mut erased = Vec::new();
        for t in transitions {
            let row = SegmentTransitionRow {
                seq: 0,
                segment_id: t.segment_id,
                segment: t.segment,
                profile_id: t.profile,
                entered: t.entered,
                at: t.at,
                cause: serde_json::to_value(&t.cause).unwrap_or(serde_json::Value::Null),
            };
            if t.cause == Cause::Erased {
                erased.push(row);
            } else {
                rows.push(row);
            }
        }
        // Chunks keep each write transaction short so the ingest writer never waits long.
        for chunk in rows.chunks_mut(2_000) {
            // Membership is derived data: if recording fails, the next start recomputes it.
            match self.store.record_segment_transitions(chunk) {
                Ok(()) => self.members.note(chunk),
                Err(error) => tracing::error!(%error, count = chunk.len(), "could not record segment transitions"),
            }
        }
        let batch: TransitionBatch = rows.into_iter().chain(erased).collect();
        let _ = self.publish.send(batch);
    }

    /// One chunk of the stored membership snapshot, between inputs; a new batch once the last one is written and
    /// `MEMBERS_EVERY` has passed.
    fn write_members_chunk(&mut self) {
        if self.members.batch_due() {
            self.members.start_batch();
        }
        let size = self.members.chunk_size();
        if let Some((chunk, through)) = self.members.next_chunk(size) {
            self.write_members(&chunk, through);
        }
    }

    /// Everything recorded so far into the stored snapshot.
    fn write_all_members(&mut self) {
        let failures = self.members.failures;
        loop {
            while let Some((chunk, through)) = self.members.next_chunk(MEMBERS_FLUSH_CHUNK) {
                self.write_members(&chunk, through);
            }
            // After a failed write the rest waits for the next chunk between inputs (a store that keeps
            // failing must not hold the thread here).
            if self.members.failures != failures || !self.members.start_batch() {
                break;
            }
        }
    }

    fn write_members(&mut self, chunk: &[MemberChange], through: Option<i64>) {
        // The history has these changes: if the snapshot write fails, the next start applies them from there.
        if let Err(error) = self.store.apply_segment_members(chunk, through) {
            tracing::error!(%error, count = chunk.len(), "could not write segment membership; will retry");
            self.members.retry(chunk);
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Save { name, description, condition, reply } => {
                let result = self.save(name, description, condition);
                self.write_all_members();
                let _ = reply.send(result);
            }
            Command::Delete { name, reply } => {
                let _ = reply.send(self.delete(&name));
            }
            Command::Preview { condition, sample, reply } => {
                // A preview may reload state, and record what the reload changed.
                let result = self.preview(&condition, sample);
                self.write_all_members();
                let _ = reply.send(result);
            }
            Command::List { reply } => {
                let _ = reply.send(self.segments.values().map(|s| self.info(s)).collect());
            }
            Command::Refresh { reply } if self.engine.is_dormant() => {
                let _ = reply.send(Ok(()));
            }
            Command::Refresh { reply } => {
                let result = self.reload(false).map(|()| {
                    let transitions = self.engine.evaluate_all(self.clock.now());
                    self.record(transitions);
                });
                self.write_all_members();
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.engine.stats());
            }
            Command::Sync { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn info(&self, segment: &StoredSegment) -> SegmentInfo {
        let text = self.engine.definition(&segment.name).map(|d| print(&d.condition)).unwrap_or_default();
        SegmentInfo {
            id: segment.id,
            name: segment.name.clone(),
            description: segment.description.clone(),
            definition: segment.definition.clone(),
            text,
            version: segment.version,
            members: self.engine.member_count(&segment.name).unwrap_or(0),
            created_at: segment.created_at,
            updated_at: segment.updated_at,
        }
    }

    /// Makes the in-memory state hold what `condition` reads, reloading from storage when it does not yet.
    fn cover(&mut self, condition: &Condition) -> MembershipResult<()> {
        if self.engine.covers(condition) {
            return Ok(());
        }
        let before = self.engine.interest().clone();
        self.engine.wake();
        self.engine.widen(condition);
        let needed = Interest::of(condition);
        let new_events = needed.events.iter().any(|(name, e)| {
            before.events.get(name).is_none_or(|mine| !e.paths.is_subset(&mine.paths) || e.keep > mine.keep)
        });
        let started = Instant::now();
        self.reload(new_events)?;
        // The reload may have read data whose commits are still queued here; when they arrive they change
        // nothing any more, so every answer is brought up to date with the reloaded data now.
        let transitions = self.engine.evaluate_all(self.clock.now());
        self.record(transitions);
        tracing::info!(new_events, elapsed_ms = started.elapsed().as_millis() as u64, "segment state reloaded");
        Ok(())
    }

    fn save(&mut self, name: String, description: String, condition: Condition) -> MembershipResult<SegmentInfo> {
        let id = self.segments.get(&name).map_or(0, |s| s.id);
        self.engine.check(&SegmentDefinition { id, name: name.clone(), condition: condition.clone() })?;
        self.cover(&condition)?;
        let json = serde_json::to_value(&condition).map_err(kizuna_store::StoreError::from)?;
        let saved = self.store.save_segment(&name, &description, &json, self.clock.now())?;
        let transitions =
            self.engine.upsert(SegmentDefinition { id: saved.id, name: name.clone(), condition }, self.clock.now())?;
        self.record(transitions);
        let info = self.info(&saved);
        self.segments.insert(name, saved);
        Ok(info)
    }

    fn delete(&mut self, name: &str) -> MembershipResult<()> {
        if !self.segments.contains_key(name) {
            return Err(MembershipError::NotFound(name.to_string()));
        }
        self.engine.remove(name)?;
        self.store.delete_segment(name)?;
        self.segments.remove(name);
        self.engine.sleep();
        Ok(())
    }

    fn preview(&mut self, condition: &Condition, sample: usize) -> MembershipResult<Preview> {
        for referenced in condition.referenced_segments() {
            if !self.segments.contains_key(referenced) {
                return Err(EngineError::UnknownSegment(referenced.to_string()).into());
            }
        }
        kizuna_segments::check(condition).map_err(EngineError::from)?;
        self.cover(condition)?;
        let started = Instant::now();
        let now: DateTime<Utc> = self.clock.now();
        let (count, sample) = self.engine.preview(condition, now, sample)?;
        Ok(Preview {
            count,
            sample,
            profiles: self.engine.stats().profiles,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}
