//! Event bodies on their way to the store: compressed on the caller's thread, against the store's dictionary once
//! it has one. A store without one samples the bodies of its first events, trains a dictionary on them on a
//! thread of its own, stores it, and from then on compresses against it (see `kizuna_store::codec`).
//!
//! A dictionary holds pieces of the text it was trained on, and it outlives every event (an erasure cannot take
//! a person out of it), so a sample keeps a value only under keys that never name a person (an allowlist:
//! [`SHARED_KEYS`], [`SHARED_SUBTREES`]); every other string is emptied and every other number zeroed. The keys
//! stay: they are most of what messages share. A blocklist of personal keys missed too much (`externalIds`,
//! custom identifiers, URLs with queries, free-text notes).

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
        samples.extend(shared_part(json));
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

/// Keys whose string, number or boolean values a sample keeps: names of events, products and places in the
/// catalog, formats, versions. Nothing that can name, reach or locate a person.
const SHARED_KEYS: &[&str] = &[
    "type",
    "event",
    "useragent",
    "locale",
    "timezone",
    "currency",
    "category",
    "brand",
    "product_id",
    "sku",
    "variant",
    "price",
    "quantity",
    "position",
    "channel",
    "os",
    "version",
];
/// Keys whose whole value a sample keeps: the library that sent the message.
const SHARED_SUBTREES: &[&str] = &["library"];
/// Top-level fields blanked whole whatever their keys inside say: they are about the person.
const PERSONAL_FIELDS: &[&str] = &["traits", "externalIds", "userId", "anonymousId", "previousId", "groupId"];

/// A sample of a message for dictionary training: the message with every value blanked (strings emptied, numbers
/// zeroed) except under [`SHARED_KEYS`] and [`SHARED_SUBTREES`]; `None` when it is not a JSON object.
fn shared_part(json: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(json) else { return None };
    for (key, value) in message.iter_mut() {
        if PERSONAL_FIELDS.contains(&key.as_str()) {
            blank_all(value);
        } else {
            keep_shared(key, value);
        }
    }
    serde_json::to_vec(&Value::Object(message)).ok()
}

fn keep_shared(key: &str, value: &mut Value) {
    let key = key.to_ascii_lowercase();
    if SHARED_SUBTREES.contains(&key.as_str()) {
        return;
    }
    let shared = SHARED_KEYS.contains(&key.as_str());
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                keep_shared(key, value);
            }
        }
        // An array's items are under its key: each product of `products` by its own keys, each tag as `tags`.
        Value::Array(items) => {
            for item in items.iter_mut() {
                if item.is_object() || item.is_array() {
                    keep_shared(&key, item);
                } else if !shared {
                    blank_all(item);
                }
            }
        }
        _ if shared => {}
        _ => blank_all(value),
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

    #[test]
    fn a_training_sample_keeps_only_values_that_never_name_a_person() {
        let message = serde_json::json!({
            "type": "track", "event": "Order Completed", "userId": "u-1", "anonymousId": "a-1",
            "traits": {"email": "hanako@example.jp", "category": "vip"},
            "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "library": {"name": "analytics.js"},
                "externalIds": [{"type": "email", "id": "hanako@example.jp"}], "lineUserId": "U1234",
                "page": {"url": "https://shop.example/p/1?email=hanako@example.jp", "title": "Hanako's cart"},
                "location": {"city": "Sendai"}},
            "properties": {"order_id": "o-1", "total": 30, "currency": "JPY", "note": "call 090-1234-5678",
                "products": [{"name": "Beans", "sku": "B-1", "price": 12.5, "quantity": 2}], "tags": ["gift", "hanako"]},
        });
        let sample = shared_part(&serde_json::to_vec(&message).expect("json")).expect("an object");
        let sample: Value = serde_json::from_slice(&sample).expect("json");
        assert_eq!(
            sample,
            serde_json::json!({
                "type": "track", "event": "Order Completed", "userId": "", "anonymousId": "",
                "traits": {"email": "", "category": ""},
                "context": {"ip": "", "userAgent": "Mozilla/5.0", "library": {"name": "analytics.js"},
                    "externalIds": [{"type": "email", "id": ""}], "lineUserId": "",
                    "page": {"url": "", "title": ""}, "location": {"city": ""}},
                "properties": {"order_id": "", "total": 0, "currency": "JPY", "note": "",
                    "products": [{"name": "", "sku": "B-1", "price": 12.5, "quantity": 2}], "tags": ["", ""]},
            })
        );
        let text = String::from_utf8(serde_json::to_vec(&sample).expect("json")).expect("utf-8");
        for personal in ["u-1", "a-1", "hanako", "Hanako", "203.0.113", "U1234", "090-", "Sendai", "vip"] {
            assert!(!text.contains(personal), "{personal} is left in {text}");
        }
        assert!(shared_part(b"[1, 2]").is_none());
    }
}
