//! A profile as a plain struct with its whole history: the reference the evaluator and the engine are checked
//! against.

use chrono::{DateTime, Utc};
use kizuna_segments::{EventFact, ProfileView};
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Default)]
pub struct Person {
    pub attributes: serde_json::Map<String, Value>,
    pub events: Vec<EventFact>,
    pub consent: BTreeSet<(String, String)>,
    pub identifiers: BTreeSet<String>,
    pub coordinates: Option<(f64, f64)>,
}

impl ProfileView for Person {
    fn attribute(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut current = self.attributes.get(&format!("{}.{}", parts.next()?, parts.next()?))?;
        for part in parts {
            current = current.get(part)?;
        }
        Some(current)
    }
    fn events(&self) -> &[EventFact] {
        &self.events
    }
    fn consent_granted(&self, channel: &str, purpose: &str) -> bool {
        self.consent.contains(&(channel.to_owned(), purpose.to_owned()))
    }
    fn has_identifier(&self, kind: &str) -> bool {
        self.identifiers.contains(kind)
    }
    fn coordinates(&self) -> Option<(f64, f64)> {
        self.coordinates
    }
}

#[allow(dead_code)] // each test file uses a different part
impl Person {
    pub fn with(mut self, path: &str, value: Value) -> Self {
        self.attributes.insert(path.to_owned(), value);
        self
    }
    pub fn did(mut self, name: &str, at: DateTime<Utc>, properties: Value) -> Self {
        let seq = self.events.len() as i64;
        self.events.push(EventFact { seq, name: name.into(), at, properties });
        self.events.sort_by_key(|e| e.at);
        self
    }
}
