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
    /// Shared, not copied, by every consumer the commit is handed to: the hand-over runs on the thread that
    /// acknowledges commits, before their callers hear back (a deep copy there for recommendations was ~3% of
    /// the server's CPU per live event, most of it the allocator reclaiming what other threads freed).
    pub properties: Arc<Value>,
}

impl FedEvent {
    pub fn of(seq: i64, event: &Event) -> FedEvent {
        Self::with_properties(seq, event, event.properties().map_or(Value::Null, |p| Value::Object(p.clone())))
    }

    /// The event with `Null` properties, for a caller that moves them in afterwards (the `Arc` is not shared
    /// yet, so [`Arc::make_mut`] reaches them without allocating again).
    pub fn of_without_properties(seq: i64, event: &Event) -> FedEvent {
        Self::with_properties(seq, event, Value::Null)
    }

    fn with_properties(seq: i64, event: &Event, properties: Value) -> FedEvent {
        FedEvent {
            seq,
            name: event.name().unwrap_or(event.message_type.as_str()).to_string(),
            at: event.timestamp,
            properties: Arc::new(properties),
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
    State { profile: ProfileId, state: Arc<ProfileState>, identifier_kinds: Arc<[String]>, version: i64 },
}

/// What one commit changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub at: DateTime<Utc>,
    pub changes: Vec<FeedChange>,
}

/// Receives every commit, on the thread that acknowledges commits (the fsync thread, or the writer when commits
/// sync themselves) and before their callers hear back: it must only hand the commit over (e.g. to a channel).
pub type FeedSink = Box<dyn Fn(Committed) + Send>;

impl Committed {
    /// A commit holding only the events `keep` accepts (by name) and every other change: what a consumer that
    /// reads few event kinds needs. Properties and states are shared with `self`, not copied.
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

    /// The commit cut into consecutive parts of at least `min_len` changes (the last may be shorter) such that
    /// no profile appears in two parts — a merge counts for both its profiles. A consumer can apply the parts
    /// one after the other and act on each before the next, and never sees a person half updated.
    pub fn into_parts(self, min_len: usize) -> Vec<Committed> {
        let profiles = |change: &FeedChange| -> [Option<ProfileId>; 2] {
            match change {
                FeedChange::Merged { from, into } => [Some(*from), Some(*into)],
                FeedChange::Event { profile, .. }
                | FeedChange::Rebuilt { profile, .. }
                | FeedChange::Removed { profile, .. }
                | FeedChange::State { profile, .. } => [Some(*profile), None],
            }
        };
        if self.changes.len() <= min_len {
            return vec![self];
        }
        let mut last = std::collections::HashMap::new();
        for (i, change) in self.changes.iter().enumerate() {
            for p in profiles(change).into_iter().flatten() {
                last.insert(p, i);
            }
        }
        let mut parts = Vec::new();
        let mut current = Vec::new();
        let mut reach = 0;
        for (i, change) in self.changes.into_iter().enumerate() {
            for p in profiles(&change).into_iter().flatten() {
                reach = reach.max(last[&p]);
            }
            current.push(change);
            if reach == i && current.len() >= min_len {
                parts.push(Committed { at: self.at, changes: std::mem::take(&mut current) });
            }
        }
        if !current.is_empty() {
            parts.push(Committed { at: self.at, changes: current });
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(profile: ProfileId) -> FeedChange {
        FeedChange::Removed { profile, erased: false }
    }

    fn shape(parts: &[Committed]) -> Vec<Vec<String>> {
        parts
            .iter()
            .map(|p| {
                p.changes
                    .iter()
                    .map(|c| match c {
                        FeedChange::Removed { profile, .. } => profile.to_string(),
                        FeedChange::Merged { from, into } => format!("{from}>{into}"),
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn parts_never_split_a_person_and_a_merge_joins_two() {
        let commit = Committed {
            at: Utc::now(),
            changes: vec![removed(1), removed(2), removed(1), removed(3), removed(4), removed(5), removed(3)],
        };
        // 1 spans 0..=2; 3 spans 3..=6, so 4 and 5 stay with it.
        assert_eq!(shape(&commit.clone().into_parts(1)), vec![vec!["1", "2", "1"], vec!["3", "4", "5", "3"]]);
        // Parts grow to the minimum length before a cut.
        assert_eq!(shape(&commit.clone().into_parts(7)), vec![vec!["1", "2", "1", "3", "4", "5", "3"]]);

        let merged = Committed {
            at: Utc::now(),
            changes: vec![removed(7), removed(8), FeedChange::Merged { from: 9, into: 7 }, removed(9), removed(10)],
        };
        assert_eq!(shape(&merged.into_parts(1)), vec![vec!["7", "8", "9>7", "9"], vec!["10"]]);
    }
}
