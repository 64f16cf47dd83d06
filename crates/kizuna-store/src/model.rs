use chrono::{DateTime, Utc};
use kizuna_identity::{Identifier, ProfileId, StoredLink};
use kizuna_profiles::{DataKind, ProfileState};
use serde::Serialize;

/// Where events come from: a website, an app, a server, an import. The write key authenticates it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub id: i64,
    pub name: String,
    pub write_key: String,
    /// Trusted sources (servers, imports) may merge two identified profiles; browsers may not.
    pub trusted: bool,
    pub data_kind: DataKind,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent<'a> {
    pub profile_id: ProfileId,
    pub source_id: i64,
    pub message_id: &'a str,
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub ts_ms: i64,
    pub received_ms: i64,
    pub primary_identifier: &'a str,
    /// The stored form of the message, from [`crate::codec::encode_event_body`].
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub profile_id: ProfileId,
    pub source_id: i64,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Message types (`track`, `page`…) or track event names (`Order Completed`); empty = all.
    pub kinds: Vec<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredProfile {
    pub id: ProfileId,
    pub state: ProfileState,
    /// What the latest analytics run computed for this profile (predictions, RFM), if it scored it.
    pub scores: Option<serde_json::Value>,
    pub identities: Vec<Identifier>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub profiles: u64,
    pub events: u64,
    pub identities: u64,
    pub products: u64,
}

/// One persisted fact of the identity graph, streamed to the resolver at start-up.
#[derive(Debug, Clone)]
pub enum IdentityRow {
    Owner(Identifier, Option<ProfileId>),
    Link(StoredLink),
}

/// One analytics run: a refit of the customer-base models and a rescoring of every buyer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalyticsRun {
    pub id: i64,
    /// What started it: `schedule`, `import`, `api`, `startup`…
    pub trigger: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// The run's report (fits, metrics, funnel…); loaded only when asked for one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

/// How an analytics run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Succeeded(serde_json::Value),
    Failed(String),
}

/// A saved recommendation placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPlacement {
    pub name: String,
    pub definition: serde_json::Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A saved segment definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSegment {
    pub id: i64,
    pub name: String,
    pub description: String,
    /// The definition's JSON tree.
    pub definition: serde_json::Value,
    /// Starts at 1, bumped by every update.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One `Segment Entered` (`entered`) or `Segment Exited` record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentTransitionRow {
    /// Position in the history (assigned when recorded; 0 before).
    pub seq: i64,
    pub segment_id: i64,
    pub segment: String,
    pub profile_id: ProfileId,
    pub entered: bool,
    pub at: DateTime<Utc>,
    pub cause: serde_json::Value,
}

/// A change to current membership, applied after its transition is in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberChange {
    pub segment_id: i64,
    pub profile_id: ProfileId,
    pub entered: bool,
    /// When the person entered (the membership's `since`); unused for an exit.
    pub at: DateTime<Utc>,
}

/// Which transitions to read, oldest first after the `after_seq` cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransitionFilter {
    pub profile: Option<ProfileId>,
    pub segment_id: Option<i64>,
    pub after_seq: i64,
    pub limit: usize,
}

/// A profile as batch readers see it: state, analytics scores, identifier kinds and when it last changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedProfile {
    pub id: ProfileId,
    pub state: ProfileState,
    pub scores: Option<serde_json::Value>,
    pub identifier_kinds: Vec<String>,
    pub updated_ms: i64,
}

/// An event as batch readers see it. `name` is the track event name or the message type.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedEvent {
    pub seq: i64,
    pub profile_id: ProfileId,
    pub name: String,
    pub body: serde_json::Value,
}
