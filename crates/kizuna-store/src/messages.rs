//! What messaging keeps: templates with their versions, the outbox that is also the delivery log, every
//! governor decision, suppressions, opens and clicks, and orders attributed to messages. Channel, state and
//! purpose travel as their lower-case names so the store knows nothing of messaging's types.

use crate::StoreResult;
use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize)]
pub struct StoredTemplate {
    pub name: String,
    pub version: i64,
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Profile ids are 64-bit: JSON readers that use doubles would round them, so they travel as text.
fn profile_id_text<S: serde::Serializer>(id: &Option<ProfileId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.serialize_str(&id.to_string()),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub profile_id: Option<ProfileId>,
    pub channel: String,
    pub purpose: String,
    pub priority: i64,
    pub template: String,
    pub template_version: i64,
    pub flow: Option<String>,
    pub campaign: Option<String>,
    pub context: serde_json::Value,
    pub recipient: Option<String>,
    pub test: bool,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    pub id: String,
    pub idempotency_key: Option<String>,
    #[serde(serialize_with = "profile_id_text")]
    pub profile_id: Option<ProfileId>,
    pub channel: String,
    pub purpose: String,
    pub priority: i64,
    pub template: String,
    pub template_version: i64,
    pub flow: Option<String>,
    pub campaign: Option<String>,
    pub context: serde_json::Value,
    pub recipient: Option<String>,
    pub state: String,
    pub reason: Option<String>,
    pub due_at: DateTime<Utc>,
    pub attempts: i64,
    pub provider_id: Option<String>,
    pub test: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    pub clicked_at: Option<DateTime<Utc>>,
    /// When the person was erased: the message is an anonymous row since.
    pub erased_at: Option<DateTime<Utc>>,
}

/// One state change of a message, recorded with its reason in the decision log.
#[derive(Debug, Clone)]
pub struct Transition {
    pub id: String,
    pub state: String,
    pub reason: String,
    /// The next attempt (deferred, retry).
    pub due_at: Option<DateTime<Utc>>,
    pub recipient: Option<String>,
    pub provider_id: Option<String>,
    /// Counts an attempt at the provider.
    pub attempted: bool,
    pub sent: bool,
    /// The person it is for now, when a merge since it was queued changed that.
    pub profile: Option<ProfileId>,
    /// The person is gone (erased, or left without identifiers): the message keeps no personal data.
    pub forget: bool,
    /// Applies only while the message is still waiting (queued or deferred): the worker's decisions, which a
    /// withdrawal or an erasure committed since the worker read the message must win over.
    pub claim: bool,
}

impl Transition {
    /// A change to `state` for `reason` and nothing else: no new due time, address, attempt or person.
    pub fn new(id: impl Into<String>, state: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            state: state.into(),
            reason: reason.into(),
            due_at: None,
            recipient: None,
            provider_id: None,
            attempted: false,
            sent: false,
            profile: None,
            forget: false,
            claim: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub state: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub profile_id: Option<ProfileId>,
    pub state: Option<String>,
    pub channel: Option<String>,
    pub template: Option<String>,
    pub flow: Option<String>,
    /// Messages created before this one (pagination, newest first).
    pub before: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Suppression {
    pub channel: String,
    pub address: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TouchRow {
    pub message_id: String,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub machine: bool,
}

#[derive(Debug, Clone)]
pub struct AttributionRow {
    pub order_id: String,
    pub profile_id: ProfileId,
    pub message_id: String,
    pub touch: String,
    pub revenue: f64,
    pub currency: Option<String>,
    pub at: DateTime<Utc>,
}

/// Sent, engaged and earned, per template, flow or channel.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportRow {
    pub key: Option<String>,
    pub sent: i64,
    pub opened: i64,
    pub machine_opened: i64,
    pub clicked: i64,
    pub orders: i64,
    pub revenue: f64,
}

pub trait MessageStore: Send + Sync {
    /// Stores a new version of a template (1 for a new one) and returns it.
    fn save_template(&self, name: &str, definition: &serde_json::Value, now: DateTime<Utc>) -> StoreResult<i64>;
    /// The current version, or the given one (also of a deleted template).
    fn template(&self, name: &str, version: Option<i64>) -> StoreResult<Option<StoredTemplate>>;
    fn templates(&self) -> StoreResult<Vec<StoredTemplate>>;
    fn delete_template(&self, name: &str) -> StoreResult<bool>;
    /// Messages waiting to go (queued or deferred and due at `now`), counted up to `cap`: how far delivery is
    /// behind, for producers that should slow down.
    fn backlog(&self, now: DateTime<Utc>, cap: usize) -> StoreResult<usize>;

    /// Queues messages durably in one transaction. A message whose idempotency key is already known is not
    /// queued again; the answer has, per message, the id that holds its key and whether it is new.
    fn enqueue(&self, messages: &[NewMessage], now: DateTime<Utc>) -> StoreResult<Vec<(String, bool)>>;
    /// Queued and deferred messages due at `now`, most urgent priority first.
    fn due_messages(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<StoredMessage>>;
    /// Messages left in `sending` (a crash between hand-off and outcome).
    fn sending_messages(&self) -> StoreResult<Vec<StoredMessage>>;
    /// Applies state changes in one transaction, each recorded in the decision log. Returns, per transition,
    /// whether it applied (a claim on a message no longer waiting, or an unknown message, does not).
    fn record(&self, transitions: &[Transition], now: DateTime<Utc>) -> StoreResult<Vec<bool>>;
    fn message(&self, id: &str) -> StoreResult<Option<StoredMessage>>;
    fn messages(&self, filter: &MessageFilter) -> StoreResult<Vec<StoredMessage>>;
    fn decisions(&self, id: &str) -> StoreResult<Vec<Decision>>;
    /// When messages of these purposes on a channel went to a person since `since` (frequency caps).
    fn sent_times(
        &self,
        profile: ProfileId,
        channel: &str,
        purpose: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DateTime<Utc>>>;

    /// [`MessageStore::sent_times`] of many people in one read, keyed by person: those with no sends since
    /// `since` are absent.
    fn sent_times_of(
        &self,
        profiles: &[ProfileId],
        channel: &str,
        purpose: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<ProfileId, Vec<DateTime<Utc>>>>;

    fn suppress(&self, channel: &str, address: &str, reason: &str, now: DateTime<Utc>) -> StoreResult<()>;
    fn unsuppress(&self, channel: &str, address: &str) -> StoreResult<bool>;
    fn suppression(&self, channel: &str, address: &str) -> StoreResult<Option<Suppression>>;
    /// [`MessageStore::suppression`] of many `(channel, address)` pairs in one read: the suppressed ones.
    fn suppressions_of(&self, keys: &[(&str, &str)]) -> StoreResult<Vec<Suppression>>;
    fn suppressions(&self, limit: usize) -> StoreResult<Vec<Suppression>>;

    /// Records an open or click; returns false when the message is unknown.
    fn record_touch(
        &self,
        message_id: &str,
        kind: &str,
        machine: bool,
        url: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Opens and clicks since `since` by `profile` and by everyone merged into it, also before messaging has
    /// moved the merged-away people's rows to it.
    fn touches(&self, profile: ProfileId, since: DateTime<Utc>) -> StoreResult<Vec<TouchRow>>;
    /// Records an order's attribution once; false when the order was already attributed.
    fn record_attribution(&self, row: &AttributionRow) -> StoreResult<bool>;
    /// `group` is `template`, `flow`, `channel` or `campaign`.
    fn report(&self, group: &str, since: DateTime<Utc>) -> StoreResult<Vec<ReportRow>>;
    /// The same figures per group and UTC day the message was created (`day` = days since 1970-01-01), for
    /// charts over time.
    fn report_by_day(&self, group: &str, since: DateTime<Utc>) -> StoreResult<Vec<(i64, ReportRow)>>;

    /// Drops the queued and deferred messages whose idempotency key starts with one of `key_prefixes` (what a
    /// flow run queued, when the run ended before they went out), recording `reason`; returns how many. Messages
    /// already handed to a channel are not touched.
    fn withdraw(&self, key_prefixes: &[String], reason: &str, now: DateTime<Utc>) -> StoreResult<usize>;

    /// Applies the merges and erasures recorded since messaging last looked (the `merges` and `erasures` tables,
    /// by cursor; the first time, none: everything queued afterwards names live people), at most `limit` of each,
    /// and returns how many it applied. A merged-away person's sent messages, touches and attributed orders move to
    /// the survivor (queued ones keep their profile: the worker follows the merge when it takes them out). An erased
    /// person's messages — also those queued for people merged into them — lose their profile, address, context and
    /// reasons but stay as anonymous rows, so delivery figures do not change; queued ones will not go out.
    fn follow_profile_changes(&self, limit: usize, now: DateTime<Utc>) -> StoreResult<usize>;

    fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Sets a value unless one exists; returns the value that holds.
    fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;
    /// Creates or replaces a setting.
    fn set_setting(&self, key: &str, value: &str) -> StoreResult<()>;
}
