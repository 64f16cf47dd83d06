//! A live person for the flow machine: read from storage only when a step asks (most steps ask nothing).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kizuna_flows::machine::PersonContext;
use kizuna_flows::person::Snapshot;
use kizuna_identity::ProfileId;
use kizuna_segments::Condition;
use kizuna_segments::eval::EventFact;
use kizuna_store::{EventFilter, Store, StoreResult};
use std::sync::Arc;

/// Events read per person for event conditions (newest kept).
const MAX_EVENTS: usize = 5_000;

/// Reads a person's snapshot: attributes, computed attributes, consent, identifiers, segments and, when
/// `with_events`, their events.
pub fn load_snapshot(
    store: &dyn Store,
    profile: ProfileId,
    now: DateTime<Utc>,
    with_events: bool,
    default_zone: Tz,
    purchase_window_days: f64,
) -> StoreResult<Option<Snapshot>> {
    let Some(stored) = store.profile(profile)? else { return Ok(None) };
    let state = &stored.state;
    let traits = state.trait_values();
    let computed = kizuna_jobs::facts::computed_attributes(state, stored.scores.as_ref(), now, purchase_window_days);
    let zone_name = traits
        .get("timezone")
        .and_then(|v| v.as_str())
        .or_else(|| computed.get("timezone").and_then(|v| v.as_str()))
        .map(str::to_string);
    let consent = state.granted_consents();
    let mut identifiers: Vec<String> = stored.identities.iter().map(|i| i.kind.as_str().to_string()).collect();
    identifiers.sort();
    identifiers.dedup();
    let events = if with_events { events_of(store, profile)? } else { Vec::new() };
    let segments = store.profile_segments(profile)?.into_iter().map(|(_, name, _)| name).collect();
    Ok(Some(Snapshot {
        traits,
        computed,
        consent,
        identifiers,
        coordinates: state.computed.coordinates(),
        events,
        segments,
        zone: Some(kizuna_flows::time::zone(zone_name.as_deref(), default_zone)),
    }))
}

/// A person's events, oldest first, as conditions read them.
pub fn events_of(store: &dyn Store, profile: ProfileId) -> StoreResult<Vec<EventFact>> {
    let filter = EventFilter { limit: MAX_EVENTS, ..EventFilter::default() };
    let mut events: Vec<EventFact> =
        store.events(profile, &filter)?.into_iter().filter_map(|e| fact(e.seq, e.body)).collect();
    events.sort_by_key(|e| (e.at, e.seq));
    Ok(events)
}

/// A stored event body as an [`EventFact`].
pub fn fact(seq: i64, body: serde_json::Value) -> Option<EventFact> {
    let serde_json::Value::Object(body) = body else { return None };
    let event = kizuna_ingest::Event::from_stored(body, String::new())?;
    let fed = kizuna_pipeline::FedEvent::of(seq, &event);
    Some(EventFact {
        seq,
        name: fed.name.into(),
        at: fed.at,
        properties: std::sync::Arc::unwrap_or_clone(fed.properties),
    })
}

/// The machine's view of a live person; storage is read on the first question.
pub struct LivePerson<'a> {
    pub store: &'a Arc<dyn Store>,
    pub profile: ProfileId,
    pub with_events: bool,
    pub default_zone: Tz,
    pub purchase_window_days: f64,
    /// The instant computed attributes are read at.
    pub now: DateTime<Utc>,
    pub loaded: Option<Snapshot>,
}

impl LivePerson<'_> {
    fn snapshot(&mut self) -> &mut Snapshot {
        let now = self.now;
        if self.loaded.is_none() {
            let read = load_snapshot(
                self.store.as_ref(),
                self.profile,
                now,
                self.with_events,
                self.default_zone,
                self.purchase_window_days,
            );
            let snapshot = match read {
                Ok(found) => found.unwrap_or_default(),
                Err(e) => {
                    // A condition on an unreadable person does not hold: a failing read must not send.
                    tracing::warn!(profile = self.profile, error = %e, "could not read a person for a flow condition");
                    Snapshot::default()
                }
            };
            self.loaded = Some(snapshot);
        }
        self.loaded.get_or_insert_with(Snapshot::default)
    }
}

impl PersonContext for LivePerson<'_> {
    fn holds(&mut self, condition: &Condition, now: DateTime<Utc>) -> bool {
        self.snapshot().holds(condition, now)
    }

    fn zone(&mut self) -> Tz {
        let default = self.default_zone;
        self.snapshot().zone.unwrap_or(default)
    }
}
