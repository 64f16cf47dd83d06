//! Storage behind one trait. [`Store`] is everything the rest of Kizuna may ask of storage; [`SqliteStore`] is
//! the embedded default (a data directory, no other service). A PostgreSQL backend will implement the same
//! traits and pass the same conformance tests (`tests/conformance.rs`).
//!
//! Writes go through a single [`StoreWriter`] whose transactions the ingest pipeline groups: many requests
//! commit together with one fsync, and nothing is acknowledged before its transaction committed.

pub mod admins;
pub mod codec;
pub mod flows;
pub mod messages;
mod model;
mod sqlite;

pub use model::*;
pub use sqlite::{Durability, LockWaits, SqliteStore};

use chrono::{DateTime, Utc};
use kizuna_catalog::Product;
use kizuna_identity::{ConflictRecord, Identifier, LinkId, MergeRecord, ProfileId, StoredLink};
use kizuna_profiles::{DataKind, ProfileState};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("corrupt stored document: {0}")]
    Document(#[from] serde_json::Error),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A stored event body names a compression dictionary this process has not loaded.
    #[error("event body dictionary {0:016x} is not loaded")]
    MissingDictionary(u64),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Kizuna reads and administers in storage. Ingestion writes go through [`Store::writer`].
pub trait Store: Send + Sync + 'static {
    fn create_source(&self, name: &str, trusted: bool, data_kind: DataKind, now: DateTime<Utc>) -> StoreResult<Source>;
    fn list_sources(&self) -> StoreResult<Vec<Source>>;
    fn source_by_write_key(&self, write_key: &str) -> StoreResult<Option<Source>>;
    fn source_by_name(&self, name: &str) -> StoreResult<Option<Source>>;

    /// Creates an admin API key and returns it in clear once; only its hash is stored.
    fn create_api_key(&self, name: &str, now: DateTime<Utc>) -> StoreResult<(ApiKey, String)>;
    fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    fn api_key_is_valid(&self, key: &str) -> StoreResult<bool>;

    fn profile(&self, id: ProfileId) -> StoreResult<Option<StoredProfile>>;
    /// [`Store::profile`] of many ids in one read, keyed by id; ids without a profile (merged away, erased)
    /// are absent. For a round of sends, which otherwise pays a read transaction per person.
    fn profiles(&self, ids: &[ProfileId]) -> StoreResult<HashMap<ProfileId, StoredProfile>>;
    /// Follows merges: the live profile an old (merged-away) profile id now lives in.
    fn live_profile_id(&self, id: ProfileId) -> StoreResult<Option<ProfileId>>;
    /// [`Store::live_profile_id`] of many ids in one read (a flow round or a batch of sends checks thousands).
    fn live_profile_ids(&self, ids: &[ProfileId]) -> StoreResult<HashMap<ProfileId, Option<ProfileId>>>;
    fn profile_by_identifier(&self, identifier: &Identifier) -> StoreResult<Option<ProfileId>>;
    /// Newest first, paginated by the `before` cursor (an event `seq`).
    fn events(&self, profile: ProfileId, filter: &EventFilter) -> StoreResult<Vec<StoredEvent>>;
    fn merges(&self, profile: ProfileId) -> StoreResult<Vec<MergeRecord>>;
    fn conflicts(&self, profile: ProfileId) -> StoreResult<Vec<ConflictRecord>>;
    /// Profiles whose trait `name` equals `value` (string comparison of the JSON value).
    fn search_profiles(&self, name: &str, value: &str, limit: usize) -> StoreResult<Vec<ProfileId>>;
    fn counts(&self) -> StoreResult<Counts>;
    /// The newest dictionary event bodies are compressed against (see [`codec`]), loaded for this process.
    fn body_dictionary(&self) -> StoreResult<Option<u64>>;
    /// Stores a dictionary trained on `samples` bodies and loads it; returns its id. New bodies may name it
    /// once this returns.
    fn save_body_dictionary(&self, dictionary: &[u8], samples: usize, now: DateTime<Utc>) -> StoreResult<u64>;

    fn upsert_products(&self, products: &[Product], now: DateTime<Utc>) -> StoreResult<usize>;
    fn product(&self, id: &str) -> StoreResult<Option<Product>>;
    fn list_products(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Product>>;

    /// Profiles in id order after `after` (exclusive), at most `limit`: a full scan in pages for batch jobs.
    fn scan_profiles(&self, after: Option<ProfileId>, limit: usize) -> StoreResult<Vec<(ProfileId, ProfileState)>>;
    /// Records the start of an analytics run; returns its id.
    fn start_analytics_run(&self, trigger: &str, now: DateTime<Utc>) -> StoreResult<i64>;
    /// Writes (replaces) the scores of these profiles, in one transaction; callers keep chunks small so the
    /// ingest writer never waits long.
    fn save_profile_scores(&self, run_id: i64, scores: &[(ProfileId, serde_json::Value)]) -> StoreResult<()>;
    /// Records how a run ended; a successful run also drops the scores it did not rewrite.
    fn finish_analytics_run(&self, run_id: i64, outcome: &RunOutcome, now: DateTime<Utc>) -> StoreResult<()>;
    /// The latest runs, newest first, without their reports.
    fn analytics_runs(&self, limit: usize) -> StoreResult<Vec<AnalyticsRun>>;
    /// One run with its report: by id, or the latest successful one.
    fn analytics_run(&self, run_id: Option<i64>) -> StoreResult<Option<AnalyticsRun>>;

    /// Segment definitions, oldest first.
    fn segments(&self) -> StoreResult<Vec<StoredSegment>>;
    fn segment_by_name(&self, name: &str) -> StoreResult<Option<StoredSegment>>;
    /// Creates a segment or replaces its definition (bumping its version).
    fn save_segment(
        &self,
        name: &str,
        description: &str,
        definition: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> StoreResult<StoredSegment>;
    /// Deletes a definition and its membership (the transition history stays); false when there was none.
    fn delete_segment(&self, name: &str) -> StoreResult<bool>;
    /// Appends transitions to the history (setting each one's `seq`), in one transaction. Current membership is
    /// a snapshot of that history kept by [`Store::apply_segment_members`]: the engine batches it, since the
    /// history is what flows wait for and the snapshot only what start-up and member listings read.
    fn record_segment_transitions(&self, transitions: &mut [SegmentTransitionRow]) -> StoreResult<()>;
    /// Applies membership changes (an entry sets `since`, an exit deletes) in one transaction; with
    /// `through_seq`, records that every transition up to that history position is now applied.
    fn apply_segment_members(&self, changes: &[MemberChange], through_seq: Option<i64>) -> StoreResult<()>;
    /// Drops an erased person's memberships and transition history.
    fn forget_segment_profile(&self, profile: ProfileId) -> StoreResult<()>;
    /// Members of a segment in profile order after `after`, with the time they entered.
    fn segment_members(
        &self,
        segment_id: i64,
        after: Option<ProfileId>,
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, DateTime<Utc>)>>;
    /// Streams every stored membership of an existing profile (segment id, profile), for start-up.
    fn load_segment_members(&self, visit: &mut dyn FnMut(i64, ProfileId)) -> StoreResult<()>;
    /// Brings membership up to date for start-up: applies the history recorded after the last applied position
    /// (a crash can come between the two), then deletes memberships of segments and profiles that no longer
    /// exist and the history of erased people (left behind when a crash came between an erasure or a deletion
    /// and the engine's clean-up); returns how many memberships the deletions removed.
    fn prune_segment_members(&self) -> StoreResult<usize>;
    /// The segments a profile is in now: (segment id, name, since).
    fn profile_segments(&self, profile: ProfileId) -> StoreResult<Vec<(i64, String, DateTime<Utc>)>>;
    fn segment_transitions(&self, filter: &TransitionFilter) -> StoreResult<Vec<SegmentTransitionRow>>;
    /// Profiles in id order with scores and identifier kinds, for rebuilding derived state.
    fn scan_profile_data(&self, after: Option<ProfileId>, limit: usize) -> StoreResult<Vec<ScannedProfile>>;
    /// Events in log order after `after_seq` (at most `limit` rows read); bodies are decoded only for names
    /// `wanted` accepts. Also returns the last seq read, to continue from.
    fn scan_events(
        &self,
        after_seq: i64,
        limit: usize,
        wanted: &dyn Fn(&str) -> bool,
    ) -> StoreResult<(Vec<ScannedEvent>, Option<i64>)>;
    /// Recommendation placements saved through the API, by name.
    fn placements(&self) -> StoreResult<Vec<StoredPlacement>>;
    /// Creates or replaces a placement (bumping its version).
    fn save_placement(&self, name: &str, definition: &serde_json::Value, now: DateTime<Utc>) -> StoreResult<()>;
    /// False when there was none.
    fn delete_placement(&self, name: &str) -> StoreResult<bool>;

    /// The latest analytics scores of one profile.
    fn profile_scores(&self, profile: ProfileId) -> StoreResult<Option<serde_json::Value>>;

    /// Streams what the identity resolver needs to rebuild itself at start-up (all owners, then all links);
    /// returns the next unused profile id.
    fn load_identity(&self, visit: &mut dyn FnMut(IdentityRow)) -> StoreResult<ProfileId>;
    /// The single writer. Call once; the pipeline owns it.
    fn writer(&self) -> StoreResult<Box<dyn StoreWriter>>;

    /// Messaging's tables: templates, the outbox and delivery log, suppressions, touches, attribution.
    fn messages(&self) -> &dyn messages::MessageStore;

    /// Flows' tables: definitions and versions, runs with their timers, the steps they took, cursors.
    fn flows(&self) -> &dyn flows::FlowStore;

    /// The admin web app's tables: people who sign in and their sessions.
    fn admins(&self) -> &dyn admins::AdminStore;
}

pub trait StoreWriter: Send {
    fn begin(&mut self) -> StoreResult<Box<dyn WriteTx + '_>>;
    /// `Some` when this writer's commits return before they are on disk, so that the caller can go on with the
    /// next transaction while another thread makes the last ones durable; the caller must not acknowledge a
    /// commit until a [`Syncer::sync`] that began after it has returned. `None` when every commit is durable
    /// when it returns, or durability across power loss was not asked for.
    fn syncer(&mut self) -> StoreResult<Option<Box<dyn Syncer>>>;
}

/// Makes commits durable after the fact (see [`StoreWriter::syncer`]).
pub trait Syncer: Send {
    /// Returns once every transaction committed before the call began is durable.
    fn sync(&mut self) -> StoreResult<()>;
}

/// One write transaction: all or nothing.
pub trait WriteTx {
    /// Claims `(source, message_id)` for replay protection; false when already claimed and not expired.
    fn claim_message(
        &mut self,
        source_id: i64,
        message_id: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Stores an event; returns its position in the log (`seq`).
    fn insert_event(&mut self, event: &NewEvent<'_>) -> StoreResult<i64>;
    fn load_state(&mut self, profile: ProfileId) -> StoreResult<Option<ProfileState>>;
    fn save_state(&mut self, profile: ProfileId, state: &ProfileState, now_ms: i64) -> StoreResult<()>;
    fn delete_profile(&mut self, profile: ProfileId) -> StoreResult<()>;
    fn set_owner(&mut self, identifier: &Identifier, owner: Option<ProfileId>) -> StoreResult<()>;
    /// Writes a new link, or moves a stored one (same id) to the time given: the resolver decides which is
    /// earlier (its order breaks ties on a hash of the message id, which SQL could not repeat).
    fn store_link(&mut self, link: &StoredLink) -> StoreResult<()>;
    fn delete_links(&mut self, ids: &[LinkId]) -> StoreResult<()>;
    fn record_merge(&mut self, merge: &MergeRecord, now_ms: i64) -> StoreResult<()>;
    fn record_conflict(&mut self, conflict: &ConflictRecord, now_ms: i64) -> StoreResult<()>;
    /// Moves every event of `from` to `into` (a plain merge).
    fn move_events(&mut self, from: ProfileId, into: ProfileId) -> StoreResult<()>;
    /// Moves the events of these profiles to whoever now owns each event's primary identifier.
    fn reattribute(&mut self, profiles: &[ProfileId]) -> StoreResult<()>;
    /// A profile's events in time order, for refolding its state.
    fn profile_events(&mut self, profile: ProfileId) -> StoreResult<Vec<StoredEvent>>;
    /// Deletes a person's events and identities; returns (identities, events) removed.
    fn erase_profile(&mut self, profile: ProfileId, now_ms: i64) -> StoreResult<(usize, usize)>;
    /// Deletes up to `limit` expired replay-protection keys, oldest first; returns how many went. Bounded so that
    /// a backlog of expired keys never holds the write transaction for long.
    fn prune_dedup(&mut self, now_ms: i64, limit: usize) -> StoreResult<usize>;
    fn commit(self: Box<Self>) -> StoreResult<()>;
}
