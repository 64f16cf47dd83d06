//! Turning stored profiles and events into what the segment engine reads.

use chrono::{DateTime, Utc};
use kizuna_pipeline::FedEvent;
use kizuna_profiles::ConsentStatus;
use kizuna_profiles::ProfileState;
use kizuna_segments::summary::{Interest, NewEvent, ProfileData};
use kizuna_store::ScannedEvent;
use serde_json::Value;

/// Whether the definitions read any computed attribute (worth computing them and reading scores).
pub fn reads_computed(interest: &Interest) -> bool {
    interest.attributes.iter().any(|a| a.starts_with("computed."))
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
    let consent = state
        .consent
        .iter()
        .flat_map(|(channel, purposes)| {
            purposes
                .iter()
                .filter(|(_, entry)| entry.status == ConsentStatus::Granted)
                .map(move |(purpose, _)| (channel.clone(), purpose.clone()))
        })
        .collect();
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
