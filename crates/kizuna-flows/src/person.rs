//! A person as conditions see them: attributes, consent, identifiers, events and segment memberships. The
//! live engine fills one from storage before it runs a person's steps; the replay keeps one per person (event
//! conditions ignore events after "now", so the whole history can be loaded at once).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kizuna_segments::Condition;
use kizuna_segments::eval::{EventFact, ProfileView, evaluate};
use serde_json::{Map, Value};

use crate::machine::PersonContext;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub traits: Map<String, Value>,
    pub computed: Map<String, Value>,
    /// Granted (channel, purpose) pairs.
    pub consent: Vec<(String, String)>,
    pub identifiers: Vec<String>,
    pub coordinates: Option<(f64, f64)>,
    /// Oldest first.
    pub events: Vec<EventFact>,
    /// Segments the person is in.
    pub segments: Vec<String>,
    pub zone: Option<Tz>,
}

impl ProfileView for Snapshot {
    fn attribute(&self, path: &str) -> Option<&Value> {
        let (root, rest) = path.split_once('.')?;
        let map = match root {
            "traits" => &self.traits,
            "computed" => &self.computed,
            _ => return None,
        };
        let mut parts = rest.split('.');
        let mut value = map.get(parts.next()?)?;
        for part in parts {
            value = value.get(part)?;
        }
        Some(value)
    }

    fn events(&self) -> &[EventFact] {
        &self.events
    }

    fn consent_granted(&self, channel: &str, purpose: &str) -> bool {
        self.consent.iter().any(|(c, p)| c == channel && p == purpose)
    }

    fn has_identifier(&self, kind: &str) -> bool {
        self.identifiers.iter().any(|k| k == kind)
    }

    fn coordinates(&self) -> Option<(f64, f64)> {
        self.coordinates
    }
}

impl PersonContext for Snapshot {
    fn holds(&mut self, condition: &Condition, now: DateTime<Utc>) -> bool {
        let segments = &self.segments;
        evaluate(condition, self, now, &|s| segments.iter().any(|m| m == s)).member
    }

    fn zone(&mut self) -> Tz {
        self.zone.unwrap_or(chrono_tz::UTC)
    }
}
