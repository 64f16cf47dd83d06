use chrono::{DateTime, Duration, Utc};
use kizuna_identity::{
    Identifier, IdentifierConfig, IdentityGraph, IdentityRules, Link, OrderKey, Outcome, ProfileId, extract_identifiers,
};
use kizuna_ingest::Event;
use kizuna_profiles::{Origin, ProfileState};
use kizuna_store::{IdentityRow, NewEvent, Source, Store, StoreError, StoreWriter, Syncer, WriteTx};
use kizuna_types::{Clock, telemetry::Telemetry};

use crate::bodies::BodyEncoder;
use crate::feed::{Committed, FedEvent, FeedChange, FeedSink};
use crate::state_cache::StateCache;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// How long a (source, messageId) pair is remembered for replay protection.
    pub dedup_window: Duration,
    pub identifiers: IdentifierConfig,
    pub rules: IdentityRules,
    /// Most events one commit may hold; bounds commit latency under load.
    pub max_group_events: usize,
    /// Queue length before callers wait (back-pressure).
    pub queue: usize,
    /// Profile states kept decoded after their commit for the next transaction that touches them (0: none).
    pub state_cache: usize,
    /// How many event bodies a store without a compression dictionary trains one on (0: never train).
    pub body_dictionary_samples: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::days(7),
            identifiers: IdentifierConfig::default(),
            rules: IdentityRules::default(),
            max_group_events: 20_000,
            queue: 1024,
            state_cache: 4096,
            // ~5 MB of bodies, ~1 s of training on one core: past the first few thousand, more samples made the
            // dictionary no better on the simulated store.
            body_dictionary_samples: 5_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("storage failed; nothing from this request was stored: {0}")]
    Store(#[from] StoreError),
    #[error("the pipeline is shut down")]
    Closed,
    /// An fsync failed: what was written since the last good one may or may not survive a power cut, and the
    /// operating system would not report the failure again. Nothing more is acknowledged until a restart, whose
    /// recovery settles what was kept.
    #[error(
        "the store could not make writes durable; whether this request was stored is unknown until Kizuna \
         restarts (then retry: replays are deduplicated)"
    )]
    NotDurable,
    #[error("profile {0} does not exist")]
    UnknownProfile(ProfileId),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestReceipt {
    pub accepted: usize,
    pub duplicates: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasureReceipt {
    pub profile: ProfileId,
    pub identities: usize,
    pub events: usize,
}

enum Command {
    /// The events travel back with the answer so the caller's thread frees them, not the single writer.
    /// `prepared[i]` is the stored form and the identifiers of `events[i]`, made on the caller's thread.
    Ingest {
        source: Source,
        events: Vec<Event>,
        prepared: Vec<Prepared>,
        reply: oneshot::Sender<(Result<IngestReceipt, PipelineError>, Vec<Event>)>,
    },
    Append {
        profile: ProfileId,
        source: Source,
        event: Box<Event>,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<(), PipelineError>>,
    },
    Erase {
        profile: ProfileId,
        reply: oneshot::Sender<Result<ErasureReceipt, PipelineError>>,
    },
    /// Stop accepting commands; everything queued before it is still applied.
    Shutdown,
}

impl Command {
    fn event_count(&self) -> usize {
        match self {
            Command::Ingest { events, .. } => events.len(),
            _ => 1,
        }
    }
}

/// What can be computed about an event before it reaches the single writer.
struct Prepared {
    body: Vec<u8>,
    identifiers: Vec<Identifier>,
}

enum Answer {
    Ingest(IngestReceipt),
    Append,
    Erase(ErasureReceipt),
    /// This command alone was refused; the rest of its group committed.
    Refused(PipelineError),
}

/// The handle callers use; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    sender: mpsc::Sender<Command>,
    /// To follow a merge that happened between a caller finding a profile and its append (`append_to_live`).
    store: Arc<dyn Store>,
    identifiers: Arc<IdentifierConfig>,
    bodies: Arc<BodyEncoder>,
    done: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Pipeline {
    /// Loads the identity graph from the store and starts the writer thread.
    pub fn start(store: Arc<dyn Store>, config: PipelineConfig, clock: Arc<dyn Clock>) -> Result<Self, PipelineError> {
        Self::start_with_feed(store, config, clock, None)
    }

    /// [`Pipeline::start`], publishing what every commit changed to `feed`.
    pub fn start_with_feed(
        store: Arc<dyn Store>,
        config: PipelineConfig,
        clock: Arc<dyn Clock>,
        feed: Option<FeedSink>,
    ) -> Result<Self, PipelineError> {
        let writer = store.writer()?;
        Self::start_with_writer(store, writer, config, clock, feed)
    }

    /// [`Pipeline::start_with_feed`] writing through `writer` (the store's own, e.g. wrapped by a test that
    /// holds its syncs back).
    pub fn start_with_writer(
        store: Arc<dyn Store>,
        writer: Box<dyn StoreWriter>,
        config: PipelineConfig,
        clock: Arc<dyn Clock>,
        feed: Option<FeedSink>,
    ) -> Result<Self, PipelineError> {
        let graph = load_graph(store.as_ref(), &config.rules)?;
        let origins = store.list_sources()?.into_iter().map(|s| (s.id, origin_of(&s))).collect();
        let identifiers = Arc::new(config.identifiers.clone());
        let bodies = BodyEncoder::new(store.clone(), clock.clone(), config.body_dictionary_samples)?;
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let acknowledger = Acknowledger { feed };
        let publishes = acknowledger.feed.is_some();
        let states = StateCache::new(config.state_cache);
        let mut state =
            WriterState { store: store.clone(), graph, config, clock, origins, last_prune: None, publishes, states };
        let handle = std::thread::Builder::new()
            .name("kizuna-writer".into())
            .spawn(move || state.run(writer, receiver, acknowledger))
            .map_err(|e| PipelineError::Store(StoreError::Io(e)))?;
        Ok(Self { sender, store, identifiers, bodies, done: Arc::new(std::sync::Mutex::new(Some(handle))) })
    }

    /// Stores a validated request's events; returns after they are durably committed.
    pub async fn ingest(&self, source: &Source, events: Vec<Event>) -> Result<IngestReceipt, PipelineError> {
        let (reply, answer) = oneshot::channel();
        let prepared = events
            .iter()
            .map(|e| Prepared {
                body: self.bodies.encode(e.encoded.as_bytes()),
                identifiers: extract_identifiers(e, &self.identifiers),
            })
            .collect();
        self.sender
            .send(Command::Ingest { source: source.clone(), events, prepared, reply })
            .await
            .map_err(|_| PipelineError::Closed)?;
        let (result, events) = answer.await.map_err(|_| PipelineError::Closed)?;
        drop(events);
        result
    }

    /// Records an event Kizuna makes itself about a known profile (e.g. a consent change), made with
    /// [`Event::internal`]: its fresh id needs no replay protection, and none is kept for it. A profile merged away
    /// or erased meanwhile is answered with [`PipelineError::UnknownProfile`].
    pub async fn append(&self, profile: ProfileId, source: &Source, event: Event) -> Result<(), PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Command::Append {
                profile,
                source: source.clone(),
                body: self.bodies.encode(event.encoded.as_bytes()),
                event: Box::new(event),
                reply,
            })
            .await
            .map_err(|_| PipelineError::Closed)?;
        answer.await.map_err(|_| PipelineError::Closed)?
    }

    /// [`Pipeline::append`] to the profile, or to the one it was merged into since the caller found it (a flow
    /// step, a click on a message, a preference change: what the person did stays on the person). Returns the
    /// profile the event went to; `None` when the person was erased meanwhile and nothing was recorded.
    pub async fn append_to_live(
        &self,
        profile: ProfileId,
        source: &Source,
        event: Event,
    ) -> Result<Option<ProfileId>, PipelineError> {
        match self.append(profile, source, event.clone()).await {
            Ok(()) => Ok(Some(profile)),
            Err(PipelineError::UnknownProfile(gone)) => match self.store.live_profile_id(gone)? {
                Some(live) if live != gone => self.append(live, source, event).await.map(|()| Some(live)),
                _ => Ok(None),
            },
            Err(other) => Err(other),
        }
    }

    /// Erases a person: profile, identities, events. Replays of their old messages stay deduplicated.
    pub async fn erase(&self, profile: ProfileId) -> Result<ErasureReceipt, PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Command::Erase { profile, reply }).await.map_err(|_| PipelineError::Closed)?;
        answer.await.map_err(|_| PipelineError::Closed)?
    }

    /// Stops accepting work, finishes everything queued, and waits for the writer to exit.
    /// The dictionary new event bodies are compressed against, once the store has one.
    pub fn body_dictionary(&self) -> Option<u64> {
        self.bodies.dictionary()
    }

    /// Waits until a body dictionary being trained is stored and in use.
    pub fn finish_body_dictionary(&self) {
        self.bodies.finish();
    }

    pub fn shutdown(self) {
        let Self { sender, done, bodies, .. } = self;
        bodies.finish();
        // Other handles may still exist (the server's state, a node): the writer stops on this command, not
        // when the last sender goes away.
        if sender.blocking_send(Command::Shutdown).is_err() {
            tracing::debug!("the writer had already stopped");
        }
        drop(sender);
        let handle = done.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the writer thread panicked during shutdown");
        }
    }
}

/// Rebuilds the identity graph from the store, row by row (nothing but the graph is held in memory).
fn load_graph(store: &dyn Store, rules: &IdentityRules) -> Result<IdentityGraph, StoreError> {
    let mut graph = IdentityGraph::new(rules.clone());
    let next_profile = store.load_identity(&mut |row| match row {
        IdentityRow::Owner(identifier, owner) => graph.restore_owner(&identifier, owner),
        IdentityRow::Link(link) => graph.restore_link(&link),
    })?;
    graph.finish_restore(next_profile);
    Ok(graph)
}

fn origin_of(source: &Source) -> Origin {
    Origin { source: source.name.clone(), data_kind: source.data_kind }
}

/// Where committed groups go to be acknowledged.
enum Acknowledgements {
    /// Commits are durable when they return (or durability across power loss was not asked for).
    Inline(Acknowledger),
    /// Commits return before they are on disk; the fsync thread acknowledges them after its next sync.
    Synced { sender: std_mpsc::Sender<Done>, handle: std::thread::JoinHandle<()>, broken: Arc<AtomicBool> },
}

impl Acknowledgements {
    fn commit(&mut self, done: Done) {
        match self {
            Acknowledgements::Inline(acknowledger) => acknowledger.acknowledge(done),
            Acknowledgements::Synced { sender, broken, .. } => {
                if let Err(std_mpsc::SendError(done)) = sender.send(done) {
                    // The fsync thread is gone (a feed consumer panicked on it): nothing can be made durable.
                    tracing::error!("the fsync thread stopped: nothing more is acknowledged until Kizuna restarts");
                    broken.store(true, Ordering::SeqCst);
                    refuse(done.group);
                }
            }
        }
    }

    /// Nothing written from now on could be acknowledged (a failed fsync): groups are refused unwritten.
    fn broken(&self) -> bool {
        matches!(self, Acknowledgements::Synced { broken, .. } if broken.load(Ordering::SeqCst))
    }
}

/// Expired replay-protection keys deleted per commit at most, so pruning a backlog never stalls ingestion.
const DEDUP_PRUNE_BATCH: usize = 2_000;
/// How often the writer looks for expired keys when there is no backlog.
const DEDUP_PRUNE_EVERY: Duration = Duration::seconds(10);

struct WriterState {
    store: Arc<dyn Store>,
    graph: IdentityGraph,
    config: PipelineConfig,
    clock: Arc<dyn Clock>,
    origins: HashMap<i64, Origin>,
    last_prune: Option<DateTime<Utc>>,
    /// Someone listens to what commits change.
    publishes: bool,
    /// States committed recently, so that the next transaction need not read and decode them.
    states: StateCache,
}

/// A committed group waiting to be acknowledged: its commands with their answers, and what it changed.
struct Done {
    group: Vec<Command>,
    answers: Vec<Answer>,
    committed: Option<Committed>,
}

/// Acknowledges committed groups, in commit order: publishes what each changed, then answers its callers.
struct Acknowledger {
    feed: Option<FeedSink>,
}

impl Acknowledger {
    /// Publishes what the group changed, then answers its callers.
    fn acknowledge(&self, done: Done) {
        if let (Some(sink), Some(committed)) = (&self.feed, done.committed) {
            sink(committed);
        }
        for (command, answer) in done.group.into_iter().zip(done.answers) {
            reply(command, Ok(answer));
        }
    }
}

/// Answers every command of a group that cannot be acknowledged.
fn refuse(group: Vec<Command>) {
    for command in group {
        reply(command, Err(PipelineError::NotDurable));
    }
}

/// Acknowledges commits once a sync that began after them has returned; each sync covers every commit that
/// reached it meanwhile (the writer goes on with the next groups during it). After a failed sync nothing is
/// acknowledged or published any more: Linux reports a failed writeback once and then calls the pages clean,
/// so a later "successful" fsync would not mean the earlier frames are on disk (and WAL recovery stops at the
/// first missing frame, losing everything after it).
fn acknowledge_when_durable(
    mut syncer: Box<dyn Syncer>,
    acknowledger: Acknowledger,
    receiver: std_mpsc::Receiver<Done>,
    broken: Arc<AtomicBool>,
) {
    while let Ok(first) = receiver.recv() {
        let mut ready = vec![first];
        ready.extend(receiver.try_iter());
        if !broken.load(Ordering::SeqCst) {
            let started = Instant::now();
            let result = syncer.sync();
            Telemetry::Synced { commits: ready.len() as u64, elapsed: started.elapsed() }.emit();
            if let Err(error) = result {
                tracing::error!(%error, "fsync failed: nothing more is acknowledged until Kizuna restarts");
                broken.store(true, Ordering::SeqCst);
            }
        }
        for done in ready {
            if broken.load(Ordering::SeqCst) {
                refuse(done.group);
            } else {
                acknowledger.acknowledge(done);
            }
        }
    }
}

/// Profile states touched by the current transaction, written once at its end.
#[derive(Default)]
struct Dirty {
    states: HashMap<ProfileId, ProfileState>,
    deleted: HashSet<ProfileId>,
    /// What the transaction changed, in order, when someone listens to the feed.
    feed: Option<Vec<FeedChange>>,
}

impl Dirty {
    fn publish(&mut self, change: impl FnOnce() -> FeedChange) {
        if let Some(feed) = &mut self.feed {
            feed.push(change());
        }
    }
}

impl WriterState {
    fn prune_due(&self, now: DateTime<Utc>) -> bool {
        self.last_prune.is_none_or(|last| now - last >= DEDUP_PRUNE_EVERY)
    }

    fn run(
        &mut self,
        mut writer: Box<dyn StoreWriter>,
        mut receiver: mpsc::Receiver<Command>,
        acknowledger: Acknowledger,
    ) {
        let syncer = writer.syncer().unwrap_or_else(|error| {
            // Without one the commits would never be acknowledged: fail loudly rather than hang.
            panic!("the store's writer could not hand out its syncer: {error}")
        });
        let mut acknowledgements = match syncer {
            Some(syncer) => {
                let (sender, done) = std_mpsc::channel();
                let broken = Arc::new(AtomicBool::new(false));
                let flag = broken.clone();
                let handle = std::thread::Builder::new()
                    .name("kizuna-fsync".into())
                    .spawn(move || acknowledge_when_durable(syncer, acknowledger, done, flag))
                    .expect("spawning the fsync thread");
                Acknowledgements::Synced { sender, handle, broken }
            }
            None => Acknowledgements::Inline(acknowledger),
        };
        while let Some(first) = receiver.blocking_recv() {
            let mut group = Vec::new();
            let mut events = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                if let Command::Shutdown = command {
                    // Refuse new work; what is already queued is still received and applied.
                    receiver.close();
                } else {
                    events += command.event_count();
                    group.push(command);
                }
                if events < self.config.max_group_events {
                    next = receiver.try_recv().ok();
                }
            }
            if group.is_empty() {
                continue;
            }
            if acknowledgements.broken() {
                refuse(group);
                continue;
            }
            let started = Instant::now();
            match self.apply_group(writer.as_mut(), &mut group) {
                Ok((answers, committed)) => {
                    Telemetry::Committed { events: events as u64, elapsed: started.elapsed() }.emit();
                    acknowledgements.commit(Done { group, answers, committed });
                }
                Err(error) => {
                    tracing::error!(%error, commands = group.len(), "write transaction failed; rolled back");
                    // The in-memory graph may hold changes the rollback undid: rebuild it from the store. The kept
                    // states are all committed ones (a transaction takes out those it touches), but after a failure
                    // nothing in memory is trusted.
                    self.reload_graph();
                    self.states.clear();
                    for command in group {
                        reply(command, Err(PipelineError::Store(StoreError::Invalid(error.to_string()))));
                    }
                }
            }
        }
        if let Acknowledgements::Synced { sender, handle, .. } = acknowledgements {
            drop(sender);
            if handle.join().is_err() {
                tracing::error!("the fsync thread panicked");
            }
        }
        tracing::info!("writer drained its queue and stopped");
    }

    fn reload_graph(&mut self) {
        match load_graph(self.store.as_ref(), &self.config.rules) {
            Ok(graph) => self.graph = graph,
            Err(error) => tracing::error!(%error, "could not reload the identity graph"),
        }
    }

    fn apply_group(
        &mut self,
        writer: &mut dyn kizuna_store::StoreWriter,
        group: &mut [Command],
    ) -> Result<(Vec<Answer>, Option<Committed>), StoreError> {
        let now = self.clock.now();
        let now_ms = now.timestamp_millis();
        let mut tx = writer.begin()?;
        let mut dirty = Dirty { feed: self.publishes.then(Vec::new), ..Dirty::default() };
        let mut answers = Vec::with_capacity(group.len());
        for command in group.iter_mut() {
            let answer = match command {
                Command::Ingest { source, events, prepared, .. } => {
                    Answer::Ingest(self.ingest(tx.as_mut(), &mut dirty, source, events, prepared, now)?)
                }
                Command::Append { profile, source, event, body, .. } => {
                    self.append(tx.as_mut(), &mut dirty, *profile, (source, event, body))?
                }
                Command::Erase { profile, .. } => {
                    dirty.states.remove(profile);
                    self.states.forget(*profile);
                    dirty.deleted.remove(profile);
                    dirty.publish(|| FeedChange::Removed { profile: *profile, erased: true });
                    Answer::Erase(self.erase(tx.as_mut(), *profile, now_ms)?)
                }
                // Never grouped: the run loop consumes it.
                Command::Shutdown => Answer::Append,
            };
            answers.push(answer);
        }
        for (profile, state) in &dirty.states {
            tx.save_state(*profile, state, now_ms)?;
        }
        for profile in &dirty.deleted {
            tx.delete_profile(*profile)?;
        }
        if self.prune_due(now) {
            let pruned = tx.prune_dedup(now_ms, DEDUP_PRUNE_BATCH)?;
            tracing::debug!(pruned, "pruned expired dedup entries");
            // A full batch means a backlog: take the next one at the next commit.
            self.last_prune = if pruned == DEDUP_PRUNE_BATCH { None } else { Some(now) };
        }
        tx.commit()?;
        for profile in &dirty.deleted {
            self.states.forget(*profile);
        }
        let mut changes = dirty.feed.take();
        if let Some(changes) = &mut changes {
            for profile in &dirty.deleted {
                changes.push(FeedChange::Removed { profile: *profile, erased: false });
            }
        }
        for (profile, state) in dirty.states {
            let state = Arc::new(state);
            if let Some(changes) = &mut changes {
                let mut identifier_kinds: Vec<String> =
                    self.graph.identifiers_of(profile).iter().map(|i| i.kind.as_str().to_string()).collect();
                identifier_kinds.sort();
                identifier_kinds.dedup();
                changes.push(FeedChange::State {
                    profile,
                    state: state.clone(),
                    identifier_kinds: identifier_kinds.into(),
                    version: now_ms,
                });
            }
            self.states.put(profile, state);
        }
        Ok((answers, changes.map(|changes| Committed { at: now, changes })))
    }

    fn origin(&mut self, source: &Source) -> Origin {
        self.origins.entry(source.id).or_insert_with(|| origin_of(source)).clone()
    }

    fn ingest(
        &mut self,
        tx: &mut dyn WriteTx,
        dirty: &mut Dirty,
        source: &Source,
        events: &mut [Event],
        prepared: &[Prepared],
        now: DateTime<Utc>,
    ) -> Result<IngestReceipt, StoreError> {
        let now_ms = now.timestamp_millis();
        let expires = if source.data_kind == kizuna_profiles::DataKind::Imported {
            None
        } else {
            Some((now + self.config.dedup_window).timestamp_millis())
        };
        let origin = self.origin(source);
        let mut receipt = IngestReceipt::default();
        for (event, Prepared { body, identifiers }) in events.iter_mut().zip(prepared) {
            let Some(primary) = identifiers.first().map(|i| i.key()) else {
                // Validation guarantees an id; an id that normalises to nothing is not a person. Checked before the
                // replay key is claimed, so that a corrected resend is not taken for a replay.
                receipt.duplicates += 1;
                continue;
            };
            if !tx.claim_message(source.id, &event.message_id, expires, now_ms)? {
                receipt.duplicates += 1;
                continue;
            }
            let link = Link {
                identifiers: identifiers.clone(),
                order: OrderKey { at_ms: event.timestamp.timestamp_millis(), message_id: event.message_id.clone() },
                trusted: source.trusted,
            };
            let outcome = self.graph.apply(&link);
            self.persist_identity(tx, &outcome, now_ms)?;
            let seq = tx.insert_event(&new_event(outcome.profile, source, event, &primary, body))?;
            let profile = outcome.profile;
            // Published here to keep the feed in commit order; its properties are moved in once the state has
            // read them (copying every event's properties was a tenth of the writer's time).
            let fed_at = dirty.feed.as_ref().map(Vec::len);
            dirty.publish(|| FeedChange::Event { profile, event: FedEvent::of_without_properties(seq, event) });
            if outcome.regrouped.is_empty() {
                self.state_mut(tx, dirty, outcome.profile)?.apply(event, &origin);
            } else if !outcome.merges.is_empty() && outcome.merges.iter().all(|m| !m.replayed) {
                // A plain merge: the fold is order-insensitive, so the two states combine without re-reading
                // either history.
                for merge in &outcome.merges {
                    tx.move_events(merge.from, merge.into)?;
                    let absorbed = match dirty.states.remove(&merge.from) {
                        Some(state) => state,
                        None => self.load_state(tx, merge.from)?,
                    };
                    dirty.deleted.insert(merge.from);
                    dirty.publish(|| FeedChange::Merged { from: merge.from, into: merge.into });
                    self.state_mut(tx, dirty, merge.into)?.merge(absorbed);
                }
                self.state_mut(tx, dirty, outcome.profile)?.apply(event, &origin);
            } else {
                // Merges and replays move events between profiles: refold the profiles involved from their
                // events (this one included, it is already stored).
                for merge in &outcome.merges {
                    dirty.publish(|| FeedChange::Merged { from: merge.from, into: merge.into });
                }
                self.regroup(tx, dirty, &outcome)?;
            }
            if let (Some(i), Some(feed)) = (fed_at, dirty.feed.as_mut())
                && let Some(FeedChange::Event { event: fed, .. }) = feed.get_mut(i)
            {
                *Arc::make_mut(&mut fed.properties) = event.take_properties();
            }
            receipt.accepted += 1;
        }
        Telemetry::EventsAccepted { source: &source.name, count: receipt.accepted as u64 }.emit();
        if receipt.duplicates > 0 {
            Telemetry::EventsDuplicate { source: &source.name, count: receipt.duplicates as u64 }.emit();
        }
        Ok(receipt)
    }

    fn persist_identity(&mut self, tx: &mut dyn WriteTx, outcome: &Outcome, now_ms: i64) -> Result<(), StoreError> {
        for (identifier, owner) in &outcome.owner_changes {
            tx.set_owner(identifier, *owner)?;
        }
        if let Some(link) = &outcome.store_link {
            tx.store_link(link)?;
        }
        for merge in &outcome.merges {
            tx.record_merge(merge, now_ms)?;
            Telemetry::IdentityMerged.emit();
        }
        for conflict in &outcome.conflicts {
            tx.record_conflict(conflict, now_ms)?;
            Telemetry::IdentityConflict.emit();
        }
        Ok(())
    }

    /// A profile's state as last committed: kept from its commit, or read from the store.
    fn load_state(&mut self, tx: &mut dyn WriteTx, profile: ProfileId) -> Result<ProfileState, StoreError> {
        match self.states.take(profile) {
            Some(state) => Ok(state),
            None => Ok(tx.load_state(profile)?.unwrap_or_default()),
        }
    }

    fn state_mut<'d>(
        &mut self,
        tx: &mut dyn WriteTx,
        dirty: &'d mut Dirty,
        profile: ProfileId,
    ) -> Result<&'d mut ProfileState, StoreError> {
        match dirty.states.entry(profile) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let state = self.load_state(tx, profile)?;
                dirty.deleted.remove(&profile);
                Ok(entry.insert(state))
            }
        }
    }

    fn regroup(&mut self, tx: &mut dyn WriteTx, dirty: &mut Dirty, outcome: &Outcome) -> Result<(), StoreError> {
        tx.reattribute(&outcome.regrouped)?;
        let mut involved: Vec<ProfileId> = outcome.regrouped.clone();
        involved.push(outcome.profile);
        involved.sort_unstable();
        involved.dedup();
        for profile in involved {
            dirty.states.remove(&profile);
            self.states.forget(profile);
            if self.graph.identifiers_of(profile).is_empty() {
                dirty.deleted.insert(profile);
                continue;
            }
            let mut state = ProfileState::default();
            let mut fed = Vec::new();
            for stored in tx.profile_events(profile)? {
                let origin = match self.origins.get(&stored.source_id) {
                    Some(origin) => origin.clone(),
                    None => self.lookup_origin(stored.source_id)?,
                };
                let serde_json::Value::Object(body) = stored.body else { continue };
                if let Some(event) = Event::from_stored(body, String::new()) {
                    state.apply(&event, &origin);
                    if dirty.feed.is_some() {
                        fed.push(FedEvent::of(stored.seq, &event));
                    }
                }
            }
            dirty.publish(|| FeedChange::Rebuilt { profile, events: fed });
            dirty.deleted.remove(&profile);
            dirty.states.insert(profile, state);
        }
        Ok(())
    }

    fn lookup_origin(&mut self, source_id: i64) -> Result<Origin, StoreError> {
        for source in self.store.list_sources()? {
            self.origins.insert(source.id, origin_of(&source));
        }
        Ok(self.origins.get(&source_id).cloned().unwrap_or(Origin {
            source: format!("source-{source_id}"),
            data_kind: kizuna_profiles::DataKind::FirstParty,
        }))
    }

    fn append(
        &mut self,
        tx: &mut dyn WriteTx,
        dirty: &mut Dirty,
        profile: ProfileId,
        (source, event, body): (&Source, &Event, &[u8]),
    ) -> Result<Answer, StoreError> {
        let identifiers = self.graph.identifiers_of(profile);
        let Some(primary) = identifiers.iter().min_by(|a, b| a.kind.cmp(&b.kind)).map(|i| i.key()) else {
            // Merged away or erased since the caller found it (a flow step, a delivery report, a consent change):
            // refused before anything is written, so the rest of the group commits. As an error it rolled back
            // every request grouped with it and made the next transaction reread the replay keys.
            return Ok(Answer::Refused(PipelineError::UnknownProfile(profile)));
        };
        // No replay key: Kizuna's own events get a fresh id each (`Event::internal`), so a key could never match,
        // and each one kept forever in the `dedup` B-tree (one random page per flow step or delivery report).
        let seq = tx.insert_event(&new_event(profile, source, event, &primary, body))?;
        dirty.publish(|| FeedChange::Event { profile, event: FedEvent::of(seq, event) });
        let origin = self.origin(source);
        self.state_mut(tx, dirty, profile)?.apply(event, &origin);
        Ok(Answer::Append)
    }

    fn erase(&mut self, tx: &mut dyn WriteTx, profile: ProfileId, now_ms: i64) -> Result<ErasureReceipt, StoreError> {
        let links = self.graph.link_ids_of(profile);
        self.graph.erase(profile);
        tx.delete_links(&links)?;
        let (identities, events) = tx.erase_profile(profile, now_ms)?;
        Ok(ErasureReceipt { profile, identities, events })
    }
}

/// The row for an event attributed to `profile` through its `primary` identifier.
fn new_event<'a>(
    profile: ProfileId,
    source: &Source,
    event: &'a Event,
    primary: &'a str,
    body: &'a [u8],
) -> NewEvent<'a> {
    NewEvent {
        profile_id: profile,
        source_id: source.id,
        message_id: &event.message_id,
        kind: event.message_type.as_str(),
        name: event.name(),
        ts_ms: event.timestamp.timestamp_millis(),
        received_ms: event.received_at.timestamp_millis(),
        primary_identifier: primary,
        body,
    }
}

fn reply(command: Command, result: Result<Answer, PipelineError>) {
    // A caller that went away (client disconnected) no longer needs its answer; the write stands.
    match (command, result) {
        (Command::Ingest { reply, events, .. }, Ok(Answer::Ingest(r))) => drop(reply.send((Ok(r), events))),
        (Command::Append { reply, .. }, Ok(Answer::Append)) => drop(reply.send(Ok(()))),
        (Command::Erase { reply, .. }, Ok(Answer::Erase(r))) => drop(reply.send(Ok(r))),
        (Command::Ingest { reply, events, .. }, Err(e)) => drop(reply.send((Err(e), events))),
        (Command::Append { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Command::Erase { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Command::Shutdown, _) => {}
        (command, Ok(Answer::Refused(e))) => reply(command, Err(e)),
        (command, Ok(_)) => {
            tracing::error!("answer does not match its command");
            reply(command, Err(PipelineError::Closed));
        }
    }
}
