//! Turning stored profiles and events into what the segment engine reads.

use chrono::{DateTime, Utc};
use kizuna_pipeline::FedEvent;
use kizuna_profiles::ProfileState;
use kizuna_segments::summary::{Interest, NewEvent, ProfileData};
use kizuna_store::ScannedEvent;
use serde_json::Value;

/// Whether the definitions read any computed attribute (worth computing them).
pub fn reads_computed(interest: &Interest) -> bool {
    interest.attributes.iter().any(|a| a.starts_with("computed."))
}

/// Whether the definitions read a computed attribute that only analytics scores provide (worth reading the
/// profile's scores from storage on every change).
pub fn reads_scores(interest: &Interest) -> bool {
    static FROM_EVENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let from_events = FROM_EVENTS.get_or_init(|| {
        let mut keys: Vec<String> = match ProfileState::default().computed.summary() {
            Value::Object(map) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        keys.push("journey_stage".into());
        keys
    });
    interest
        .attributes
        .iter()
        .filter_map(|a| a.strip_prefix("computed."))
        .any(|key| !from_events.iter().any(|k| k == key))
}

pub fn profile_data(
    state: &ProfileState,
    scores: Option<&Value>,
    identifier_kinds: Vec<String>,
    version: i64,
    now: DateTime<Utc>,
    interest: &Interest,
    purchase_window_days: f64,
) -> ProfileData {
    let computed = if reads_computed(interest) {
        kizuna_jobs::facts::computed_attributes(state, scores, now, purchase_window_days)
    } else {
        serde_json::Map::new()
    };
    let consent = state.granted_consents();
    ProfileData {
        version,
        traits: state.trait_values(),
        computed,
        consent,
        identifiers: identifier_kinds,
        coordinates: state.computed.coordinates(),
    }
}

pub fn fed_event(event: FedEvent) -> NewEvent {
    NewEvent { seq: event.seq, name: event.name, at: event.at, properties: event.properties }
}

pub fn scanned_event(event: ScannedEvent) -> Option<NewEvent> {
    let Value::Object(body) = event.body else { return None };
    let message = kizuna_ingest::Event::from_stored(body, String::new())?;
    Some(fed_event(FedEvent::of(event.seq, &message)))
}
