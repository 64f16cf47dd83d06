//! Event bodies on their way to the store: compressed on the caller's thread, against the store's dictionary once
//! it has one. A store without one samples the bodies of its first events, trains a dictionary on them on a
//! thread of its own, stores it, and from then on compresses against it (see `kizuna_store::codec`).
//!
//! A dictionary holds pieces of the text it was trained on, and it outlives every event (an erasure cannot take
//! a person out of it), so the samples blank out what names a person (its keys stay): ids, traits, IP addresses, and properties
//! whose names say they hold contact details (see [`PERSONAL_KEYS`], [`PERSONAL_KEY_PARTS`]). What is left — keys, event names,
//! libraries, user agents, pages, products — is what most messages share, which is what a dictionary is for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kizuna_store::Store;
use kizuna_store::codec::{encode_event_body_with, train_dictionary};
use kizuna_types::Clock;
use serde_json::Value;

pub(crate) struct BodyEncoder {
    /// The dictionary's id; 0 while there is none.
    dictionary: AtomicU64,
    /// Still collecting samples (false once a training has started, or when none is wanted).
    sampling: AtomicBool,
    samples: Mutex<Vec<Vec<u8>>>,
    wanted: usize,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    training: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl BodyEncoder {
    /// `wanted`: how many bodies to train a dictionary on (0: never train; a dictionary the store has is used).
    pub(crate) fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        wanted: usize,
    ) -> Result<Arc<Self>, kizuna_store::StoreError> {
        let dictionary = store.body_dictionary()?;
        Ok(Arc::new(Self {
            dictionary: AtomicU64::new(dictionary.unwrap_or(0)),
            sampling: AtomicBool::new(dictionary.is_none() && wanted > 0),
            samples: Mutex::new(Vec::new()),
            wanted,
            store,
            clock,
            training: Mutex::new(None),
        }))
    }

    /// The stored form of a message's JSON.
    pub(crate) fn encode(self: &Arc<Self>, json: &[u8]) -> Vec<u8> {
        if self.sampling.load(Ordering::Relaxed) {
            self.sample(json);
        }
        let dictionary = self.dictionary.load(Ordering::Acquire);
        encode_event_body_with(json, (dictionary != 0).then_some(dictionary))
    }

    fn sample(self: &Arc<Self>, json: &[u8]) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.sampling.load(Ordering::Relaxed) {
            return;
        }
        samples.extend(without_personal_data(json));
        if samples.len() < self.wanted {
            return;
        }
        self.sampling.store(false, Ordering::Relaxed);
        let samples = std::mem::take(&mut *samples);
        let encoder = Arc::clone(self);
        let spawned =
            std::thread::Builder::new().name("kizuna-dictionary".into()).spawn(move || encoder.train(&samples));
        match spawned {
            Ok(handle) => *self.training.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle),
            Err(error) => tracing::warn!(%error, "could not start training a body dictionary; bodies stay LZ4"),
        }
    }

    fn train(&self, samples: &[Vec<u8>]) {
        let started = std::time::Instant::now();
        let saved = train_dictionary(samples)
            .and_then(|dictionary| self.store.save_body_dictionary(&dictionary, samples.len(), self.clock.now()));
        match saved {
            Ok(id) => {
                self.dictionary.store(id, Ordering::Release);
                tracing::info!(
                    samples = samples.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "event bodies are now compressed against a dictionary trained on this store's events"
                );
            }
            Err(error) => tracing::warn!(%error, "could not train a body dictionary; bodies stay LZ4"),
        }
    }

    /// Waits for a training under way (shutdown, tests).
    pub(crate) fn finish(&self) {
        let handle = self.training.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the body dictionary training panicked");
        }
    }

    /// The dictionary bodies are compressed against now, if any.
    pub(crate) fn dictionary(&self) -> Option<u64> {
        Some(self.dictionary.load(Ordering::Acquire)).filter(|id| *id != 0)
    }
}

/// Top-level fields of a message that name or describe a person.
const PERSONAL_FIELDS: &[&str] = &["userId", "anonymousId", "previousId", "groupId", "traits", "writeKey"];
/// Keys, at any depth of `context` and `properties`, that hold a person's details: these names exactly, or
/// any name with one of [`PERSONAL_KEY_PARTS`] in it.
const PERSONAL_KEYS: &[&str] = &["ip", "traits", "user", "user_id", "userid", "line_user_id"];
const PERSONAL_KEY_PARTS: &[&str] =
    &["email", "phone", "address", "first_name", "last_name", "firstname", "lastname", "birthday", "customer"];

/// A sample of a message for dictionary training: the message with what names a person blanked (strings
/// emptied, numbers zeroed; the keys stay, as every message has them); `None` when it is not a JSON object.
fn without_personal_data(json: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(json) else { return None };
    for (key, value) in message.iter_mut() {
        if PERSONAL_FIELDS.contains(&key.as_str()) {
            blank(value);
        } else if key == "context" || key == "properties" {
            blank_personal_keys(value);
        }
    }
    serde_json::to_vec(&Value::Object(message)).ok()
}

fn blank_personal_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if PERSONAL_KEYS.contains(&key.as_str()) || PERSONAL_KEY_PARTS.iter().any(|part| key.contains(part)) {
                    blank(value);
                } else {
                    blank_personal_keys(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_personal_keys),
        _ => {}
    }
}

fn blank(value: &mut Value) {
    match value {
        Value::String(text) => text.clear(),
        Value::Number(_) => *value = Value::from(0),
        Value::Object(map) => map.values_mut().for_each(blank),
        Value::Array(items) => items.iter_mut().for_each(blank),
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_sample_keeps_what_messages_share_and_drops_what_names_a_person() {
        let message = serde_json::json!({
            "type": "track", "event": "Order Completed", "userId": "u-1", "anonymousId": "a-1",
            "traits": {"email": "hanako@example.jp"},
            "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "library": {"name": "analytics.js"},
                "traits": {"phone": "+819012345678"}, "page": {"url": "https://shop.example/p/1"}},
            "properties": {"order_id": "o-1", "total": 30, "Email": "hanako@example.jp",
                "shipping_address": {"city": "Sendai"}, "products": [{"name": "Beans", "customer_note": "x"}]},
        });
        let sample = without_personal_data(&serde_json::to_vec(&message).expect("json")).expect("an object");
        let sample: Value = serde_json::from_slice(&sample).expect("json");
        assert_eq!(
            sample,
            serde_json::json!({
                "type": "track", "event": "Order Completed", "userId": "", "anonymousId": "",
                "traits": {"email": ""},
                "context": {"ip": "", "userAgent": "Mozilla/5.0", "library": {"name": "analytics.js"},
                    "traits": {"phone": ""}, "page": {"url": "https://shop.example/p/1"}},
                "properties": {"order_id": "o-1", "total": 30, "Email": "",
                    "shipping_address": {"city": ""}, "products": [{"name": "Beans", "customer_note": ""}]},
            })
        );
        let text = String::from_utf8(serde_json::to_vec(&sample).expect("json")).expect("utf-8");
        for personal in ["u-1", "a-1", "hanako", "203.0.113", "+8190", "Sendai"] {
            assert!(!text.contains(personal), "{personal} is left in {text}");
        }
        assert!(without_personal_data(b"[1, 2]").is_none());
    }
}
