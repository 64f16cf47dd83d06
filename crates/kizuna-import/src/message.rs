//! Building Segment-format messages: identity fields, deterministic messageIds, the library context.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::fields::{rfc3339, short_hash};

/// Name reported in `context.library.name` of every imported message.
pub const LIBRARY_NAME: &str = "kizuna-import";

/// Who a message is about. At least one of the three is set (checked by [`Identity::new`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    user_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

impl Identity {
    /// `missing` is the error reason used when nothing identifies the person.
    pub(crate) fn new(
        user_id: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        missing: impl FnOnce() -> String,
    ) -> Result<Self, String> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let id = Identity { user_id: nonempty(user_id), email: nonempty(email), phone: nonempty(phone) };
        if id.user_id.is_none() && id.email.is_none() && id.phone.is_none() { Err(missing()) } else { Ok(id) }
    }

    pub(crate) fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    pub(crate) fn phone(&self) -> Option<&str> {
        self.phone.as_deref()
    }

    /// The stable identity used inside messageIds.
    fn key(&self) -> String {
        match (&self.user_id, &self.email, &self.phone) {
            (Some(u), _, _) => u.clone(),
            (None, Some(e), _) => e.clone(),
            (None, None, Some(p)) => phone_key(p),
            (None, None, None) => String::new(),
        }
    }

    /// Sets `userId` (or, without one, a deterministic `anonymousId`, since Segment requires one of the two)
    /// and `context.traits.email` / `context.traits.phone`, which the ingest pipeline identifies by.
    fn apply(&self, msg: &mut Map<String, Value>) {
        match &self.user_id {
            Some(u) => {
                msg.insert("userId".into(), json!(u));
            }
            None => {
                let anon = match (&self.email, &self.phone) {
                    (Some(e), _) => format!("import:email:{e}"),
                    (None, Some(p)) => format!("import:phone:{}", phone_key(p)),
                    (None, None) => String::new(),
                };
                msg.insert("anonymousId".into(), json!(anon));
            }
        }
        let mut traits = Map::new();
        if let Some(e) = &self.email {
            traits.insert("email".into(), json!(e));
        }
        if let Some(p) = &self.phone {
            traits.insert("phone".into(), json!(p));
        }
        if !traits.is_empty() {
            msg.insert("context".into(), json!({ "traits": traits }));
        }
    }
}

/// Phone number reduced to `+` and digits, so formatting differences don't split identities.
fn phone_key(p: &str) -> String {
    p.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect()
}

/// Adds `context.library` (kept out of content hashes so a version bump never changes a messageId).
fn finish(mut msg: Map<String, Value>) -> Value {
    let library = json!({ "name": LIBRARY_NAME, "version": env!("CARGO_PKG_VERSION") });
    match msg.get_mut("context") {
        Some(Value::Object(ctx)) => {
            ctx.insert("library".into(), library);
        }
        _ => {
            msg.insert("context".into(), json!({ "library": library }));
        }
    }
    Value::Object(msg)
}

/// Longest messageId the ingest pipeline accepts.
const MAX_MESSAGE_ID_CHARS: usize = 256;

/// `import:<what>:<key>:<suffix>`; a key so long that the id would be rejected is replaced by its hash.
pub(crate) fn message_id(what: &str, key: &str, suffix: &str) -> String {
    let id = format!("import:{what}:{key}:{suffix}");
    if id.chars().count() <= MAX_MESSAGE_ID_CHARS {
        id
    } else {
        format!("import:{what}:sha256-{}:{suffix}", short_hash(&json!(key)))
    }
}

/// An `identify` whose messageId is `import:customer:<identity>:<hash of the message content>`: re-importing the
/// same line adds nothing, an edited line becomes a new message.
pub(crate) fn identify(identity: &Identity, traits: Map<String, Value>) -> Value {
    let mut msg = Map::new();
    msg.insert("type".into(), json!("identify"));
    identity.apply(&mut msg);
    msg.insert("traits".into(), Value::Object(traits));
    let hash = short_hash(&Value::Object(msg.clone()));
    msg.insert("messageId".into(), json!(message_id("customer", &identity.key(), &hash)));
    finish(msg)
}

/// A `track` message with a caller-chosen deterministic messageId (see [`message_id`]).
pub(crate) fn track(
    identity: &Identity,
    event: &str,
    message_id: String,
    timestamp: DateTime<Utc>,
    properties: Map<String, Value>,
) -> Value {
    let mut msg = Map::new();
    msg.insert("type".into(), json!("track"));
    msg.insert("event".into(), json!(event));
    msg.insert("messageId".into(), json!(message_id));
    identity.apply(&mut msg);
    msg.insert("timestamp".into(), json!(rfc3339(timestamp)));
    msg.insert("properties".into(), Value::Object(properties));
    finish(msg)
}
