//! The change feed: after each commit, what it changed, in order, for the consumers downstream of the event
//! log (segment membership, recommendation counters). Published only after the commit succeeded, so a consumer
//! never sees a change that was rolled back; a consumer that falls behind or restarts rebuilds from storage.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use kizuna_ingest::Event;
use kizuna_profiles::ProfileState;
use serde_json::Value;

/// An event as consumers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct FedEvent {
    /// Position in the event log.
    pub seq: i64,
    /// Track event name, or the message type (`page`, `identify`…).
    pub name: String,
    pub at: DateTime<Utc>,
    pub properties: Value,
}

impl FedEvent {
    pub fn of(seq: i64, event: &Event) -> FedEvent {
        FedEvent {
            seq,
            name: event.name().unwrap_or(event.message_type.as_str()).to_string(),
            at: event.timestamp,
            properties: event.properties().map_or(Value::Null, |p| Value::Object(p.clone())),
        }
    }
}

/// One change, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedChange {
    /// An event was stored for a profile.
    Event { profile: ProfileId, event: FedEvent },
    /// `from` was merged into `into` (its events moved there; `from` is gone).
    Merged { from: ProfileId, into: ProfileId },
    /// A profile's events were regrouped: these are all its events now.
    Rebuilt { profile: ProfileId, events: Vec<FedEvent> },
    /// The profile is gone: erased, or left without identifiers by a regroup.
    Removed { profile: ProfileId, erased: bool },
    /// A profile's state after the commit, and the kinds of identifier it has (`email`, `phone`…).
    State { profile: ProfileId, state: Arc<ProfileState>, identifier_kinds: Vec<String>, version: i64 },
}

/// What one commit changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub at: DateTime<Utc>,
    pub changes: Vec<FeedChange>,
}

/// Receives every commit, on the writer thread: it must only hand the commit over (e.g. to a channel).
pub type FeedSink = Box<dyn Fn(Committed) + Send>;

impl Committed {
    /// A copy holding only the events `keep` accepts (by name) and every other change: what a consumer that
    /// reads few event kinds needs, without copying the properties of the rest.
    pub fn filtered(&self, keep: impl Fn(&str) -> bool) -> Committed {
        let changes = self
            .changes
            .iter()
            .filter(|c| match c {
                FeedChange::Event { event, .. } => keep(&event.name),
                _ => true,
            })
            .cloned()
            .collect();
        Committed { at: self.at, changes }
    }
}
