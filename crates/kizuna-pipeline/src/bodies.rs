//! Event bodies on their way to the store: compressed on the caller's thread, against the store's dictionary once
//! it has one. A store without one samples the bodies of its first events, trains a dictionary on them on a
//! thread of its own, stores it, and from then on compresses against it (see `kizuna_store::codec`).
//!
//! A dictionary holds pieces of the text it was trained on, and it outlives every event (an erasure cannot take
//! a person out of it). So it is trained on the samples with every value (and every key) that fewer than
//! [`MIN_PEOPLE`] different people sent blanked — strings emptied, numbers zeroed, such keys dropped — and with
//! ids, traits and external ids blanked whatever they hold ([`PERSONAL_FIELDS`], [`PERSONAL_KEYS`]). What is left is what many
//! people's messages share: keys, event names, libraries, user agents, products, pages. An allowlist of keys
//! kept less (332 bytes a body against 186 on the simulated store) and a blocklist missed too much
//! (`externalIds`, custom identifiers, URLs with queries, free-text notes).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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
        samples.push(json.to_vec());
        if samples.len() < self.wanted {
            return;
        }
        // The handle's lock is held from before the sampling ends until the handle is in it, so a `finish`
        // that sees sampling over always finds the thread to wait for.
        let mut training = self.training.lock().unwrap_or_else(PoisonError::into_inner);
        self.sampling.store(false, Ordering::Relaxed);
        let samples = std::mem::take(&mut *samples);
        let encoder = Arc::clone(self);
        let spawned =
            std::thread::Builder::new().name("kizuna-dictionary".into()).spawn(move || encoder.train(&samples));
        match spawned {
            Ok(handle) => *training = Some(handle),
            Err(error) => tracing::warn!(%error, "could not start training a body dictionary; bodies stay LZ4"),
        }
    }

    fn train(&self, samples: &[Vec<u8>]) {
        let started = std::time::Instant::now();
        let samples = shared_parts(samples, MIN_PEOPLE);
        let saved = train_dictionary(&samples)
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

/// Fewest different people (by `userId`, else `anonymousId`) who must have sent a value for a sample to keep it.
const MIN_PEOPLE: usize = 10;
/// Top-level fields blanked whole however many people share their values: they are about the person.
const PERSONAL_FIELDS: &[&str] = &["traits", "externalIds", "userId", "anonymousId", "previousId", "groupId"];
/// Keys blanked whole at any depth (`context.traits`, `context.externalIds`).
const PERSONAL_KEYS: &[&str] = &["traits", "externalIds"];

/// The samples for dictionary training: each message with the values and keys fewer than `min_people` people sent
/// blanked (see the module's documentation). Messages that are not JSON objects are left out.
fn shared_parts(bodies: &[Vec<u8>], min_people: usize) -> Vec<Vec<u8>> {
    let messages: Vec<serde_json::Map<String, Value>> = bodies
        .iter()
        .filter_map(|body| match serde_json::from_slice(body) {
            Ok(Value::Object(message)) => Some(message),
            _ => None,
        })
        .collect();
    // Who sent each value and key, up to `min_people` of them: a value is a leaf's JSON text.
    let mut senders: HashMap<String, Vec<u64>> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        let person = sender(message, index);
        visit_shared(message, &mut |text| {
            let people = senders.entry(text.to_owned()).or_default();
            if people.len() < min_people && !people.contains(&person) {
                people.push(person);
            }
        });
    }
    let common = |text: &str| senders.get(text).is_some_and(|people| people.len() >= min_people);
    messages
        .into_iter()
        .filter_map(|mut message| {
            for (key, value) in message.iter_mut() {
                if PERSONAL_FIELDS.contains(&key.as_str()) {
                    blank_all(value);
                } else {
                    keep_common(value, &common);
                }
            }
            serde_json::to_vec(&Value::Object(message)).ok()
        })
        .collect()
}

/// Who sent a message, as a number: its `userId`, else its `anonymousId`, else the message alone.
fn sender(message: &serde_json::Map<String, Value>, index: usize) -> u64 {
    let id = ["userId", "anonymousId"].iter().find_map(|field| match message.get(*field) {
        Some(Value::String(id)) if !id.is_empty() => Some(format!("{field}:{id}")),
        Some(Value::Number(id)) => Some(format!("{field}:{id}")),
        _ => None,
    });
    let mut hasher = std::hash::DefaultHasher::new();
    id.unwrap_or_else(|| format!("message:{index}")).hash(&mut hasher);
    hasher.finish()
}

/// Calls `seen` with every key and every leaf value (as JSON text) outside [`PERSONAL_FIELDS`].
fn visit_shared(message: &serde_json::Map<String, Value>, seen: &mut impl FnMut(&str)) {
    fn walk(value: &Value, seen: &mut impl FnMut(&str)) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    seen(&key_text(key));
                    if !PERSONAL_KEYS.contains(&key.as_str()) {
                        walk(value, seen);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, seen)),
            leaf => seen(&leaf.to_string()),
        }
    }
    for (key, value) in message {
        if !PERSONAL_FIELDS.contains(&key.as_str()) {
            walk(value, seen);
        }
    }
}

/// Keys and values are counted in one map; a key's entry is marked so it never meets a value's.
fn key_text(key: &str) -> String {
    format!("\u{0}{key}")
}

fn keep_common(value: &mut Value, common: &impl Fn(&str) -> bool) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| common(&key_text(key)));
            for (key, value) in map.iter_mut() {
                if PERSONAL_KEYS.contains(&key.as_str()) {
                    blank_all(value);
                } else {
                    keep_common(value, common);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| keep_common(item, common)),
        leaf => {
            if !common(&leaf.to_string()) {
                blank_all(leaf);
            }
        }
    }
}

fn blank_all(value: &mut Value) {
    match value {
        Value::String(text) => text.clear(),
        Value::Number(_) => *value = Value::from(0),
        Value::Object(map) => map.values_mut().for_each(blank_all),
        Value::Array(items) => items.iter_mut().for_each(blank_all),
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One person's message: what they alone sent, beside what every shopper's messages carry.
    fn message(person: usize) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": "track", "event": "Order Completed", "userId": format!("u-{person}"),
            "traits": {"plan": "gold"},
            "context": {"ip": format!("203.0.113.{person}"), "userAgent": "Mozilla/5.0",
                "library": {"name": "analytics.js"},
                "externalIds": [{"type": "email", "id": "shared@example.jp"}],
                "page": {"url": format!("https://shop.example/p/1?email=hanako{person}@example.jp"),
                    "path": "/p/1"}},
            "properties": {"total": 30 + person, "currency": "JPY", "note": format!("call 090-1234-{person:04}"),
                format!("hanako{person}@example.jp"): true,
                "products": [{"name": "Beans", "price": 12.5}]},
        }))
        .expect("json")
    }

    #[test]
    fn a_training_sample_keeps_only_what_many_people_sent() {
        // Twelve people; person 0 sent two messages, so two messages do not make two people.
        let mut bodies: Vec<Vec<u8>> = (0..12).map(message).collect();
        bodies.push(message(0));
        bodies.push(b"[1, 2]".to_vec());
        let samples = shared_parts(&bodies, 10);
        assert_eq!(samples.len(), 13, "what is not an object is left out");
        let first: Value = serde_json::from_slice(&samples[0]).expect("json");
        assert_eq!(
            first,
            serde_json::json!({
                "type": "track", "event": "Order Completed", "userId": "",
                "traits": {"plan": ""},
                "context": {"ip": "", "userAgent": "Mozilla/5.0", "library": {"name": "analytics.js"},
                    "externalIds": [{"type": "", "id": ""}],
                    "page": {"url": "", "path": "/p/1"}},
                "properties": {"total": 0, "currency": "JPY", "note": "", "products": [{"name": "Beans", "price": 12.5}]},
            })
        );
        for sample in &samples {
            let text = String::from_utf8(sample.clone()).expect("utf-8");
            for personal in ["u-", "hanako", "203.0.113", "090-", "gold", "shared@"] {
                assert!(!text.contains(personal), "{personal} is left in {text}");
            }
        }
        // The same value from nine people is not enough.
        let few = shared_parts(&bodies[1..10], 10);
        let sample: Value = serde_json::from_slice(&few[0]).expect("json");
        assert_eq!(sample["event"], "");
        assert_eq!(sample["context"], serde_json::json!({}), "keys fewer people sent go too");
    }
}
