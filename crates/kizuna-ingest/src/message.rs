use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use kizuna_types::{Code, KizunaError};
use serde_json::{Map, Value};

/// Identifier values that broken clients send and that must never link two people.
pub const JUNK_IDS: &[&str] = &["null", "undefined", "0", "[object Object]", "nil", "none", "-1", "NaN", "anonymous"];

const MAX_ID_CHARS: usize = 256;
/// What storing a batch message may add to it besides the batch's shared keys: `receivedAt`, a normalised
/// `timestamp`, `originalTimestamp` and `sentAt` (milliseconds, `Z`), a generated `messageId` (~190 bytes in all).
const ADDED_FIELDS_BYTES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Identify => "identify",
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "identify" => MessageType::Identify,
            "track" => MessageType::Track,
            "page" => MessageType::Page,
            "screen" => MessageType::Screen,
            "group" => MessageType::Group,
            "alias" => MessageType::Alias,
            _ => return None,
        })
    }
}

/// Which endpoint a request arrived on; a single-message endpoint implies the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Single(MessageType),
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_event_bytes: 32 * 1024, max_batch_bytes: 500 * 1024 }
    }
}

/// A validated, normalised message. `body` is what is stored: the client's message with corrected
/// `timestamp`, `receivedAt`, string ids, and without the write key.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub message_id: String,
    pub message_type: MessageType,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub body: Map<String, Value>,
    /// `body` as JSON text, encoded once where the message was parsed so the single writer does not have to.
    pub encoded: String,
}

impl Event {
    /// The `event` of a track call, or the `name` of a page/screen call.
    pub fn name(&self) -> Option<&str> {
        let key = if self.message_type == MessageType::Track { "event" } else { "name" };
        self.body.get(key).and_then(Value::as_str)
    }

    /// Traits the message carries about the person: `traits` of identify/group, `context.traits` otherwise.
    pub fn traits(&self) -> Option<&Map<String, Value>> {
        match self.message_type {
            MessageType::Identify => self.body.get("traits").and_then(Value::as_object),
            _ => self.context().and_then(|c| c.get("traits")).and_then(Value::as_object),
        }
    }

    pub fn properties(&self) -> Option<&Map<String, Value>> {
        self.body.get("properties").and_then(Value::as_object)
    }

    /// Moves the properties out (an object, or `Null` when there were none): for a consumer that needs them
    /// after the event itself is done with.
    pub fn take_properties(&mut self) -> Value {
        match self.body.remove("properties") {
            Some(properties @ Value::Object(_)) => properties,
            _ => Value::Null,
        }
    }

    pub fn context(&self) -> Option<&Map<String, Value>> {
        self.body.get("context").and_then(Value::as_object)
    }

    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }

    /// Rebuilds an event from its stored body (already validated when it was ingested).
    pub fn from_stored(body: Map<String, Value>, encoded: String) -> Option<Event> {
        let time = |key: &str| body.get(key).and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        Some(Event {
            message_id: body.get("messageId")?.as_str()?.to_owned(),
            message_type: MessageType::parse(body.get("type")?.as_str()?)?,
            timestamp: time("timestamp")?.with_timezone(&Utc),
            received_at: time("receivedAt")?.with_timezone(&Utc),
            user_id: body.get("userId").and_then(Value::as_str).map(str::to_owned),
            anonymous_id: body.get("anonymousId").and_then(Value::as_str).map(str::to_owned),
            body,
            encoded,
        })
    }

    /// Builds an event that Kizuna itself records about a known profile (consent changes made through the
    /// admin API), so that it lives in the event history like any other fact.
    pub fn internal(message_type: MessageType, mut body: Map<String, Value>, at: DateTime<Utc>) -> Event {
        let message_id = format!("kz-{}", uuid::Uuid::new_v4());
        body.insert("type".into(), Value::String(message_type.as_str().into()));
        body.insert("messageId".into(), Value::String(message_id.clone()));
        body.insert("timestamp".into(), format_time(at));
        body.insert("receivedAt".into(), format_time(at));
        let encoded = Value::Object(body.clone()).to_string();
        Event {
            message_id,
            message_type,
            timestamp: at,
            received_at: at,
            user_id: None,
            anonymous_id: None,
            body,
            encoded,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    /// `writeKey` from the body, when the client sent it there instead of HTTP Basic auth.
    pub write_key: Option<String>,
    pub events: Vec<Event>,
}

/// Parses and validates one request body. All-or-nothing: the first invalid message fails the whole request,
/// with `field` naming it (`batch[3].timestamp`).
pub fn parse_request(
    endpoint: Endpoint,
    body: &[u8],
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<ParsedRequest, KizunaError> {
    let cap = match endpoint {
        Endpoint::Batch => limits.max_batch_bytes,
        Endpoint::Single(_) => limits.max_event_bytes,
    };
    if body.len() > cap {
        let code = if endpoint == Endpoint::Batch { Code::BatchTooLarge } else { Code::EventTooLarge };
        return Err(KizunaError::new(code, format!("the body is {} bytes; the limit is {cap} bytes", body.len())));
    }
    match endpoint {
        Endpoint::Single(kind) => {
            let mut object: Map<String, Value> = parse_object(body)?;
            let write_key = take_write_key(&mut object)?;
            let event = normalise(object, Some(kind), None, &Shared::default(), received_at)?;
            Ok(ParsedRequest { write_key, events: vec![event] })
        }
        Endpoint::Batch => parse_batch(body, received_at, limits),
    }
}

/// Validates one message that did not arrive over HTTP (CSV import, the simulator): the same rules as a
/// batch item, except the size limit, which protects the network edge.
pub fn parse_message(value: Value, received_at: DateTime<Utc>) -> Result<Event, KizunaError> {
    match value {
        Value::Object(object) => normalise(object, None, None, &Shared::default(), received_at),
        _ => Err(invalid("message", "must be a JSON object")),
    }
}

/// The batch is read in one pass, each message straight into its tree: reading it first as raw text per message
/// (to measure each one's bytes) scanned every byte twice, 3% of the server's instructions per event.
#[derive(serde::Deserialize)]
struct BatchEnvelope {
    batch: Option<Value>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    context: Option<Value>,
    integrations: Option<Value>,
}

/// What a batch says for all its messages; a message's own keys win.
#[derive(Default)]
struct Shared {
    context: Option<Map<String, Value>>,
    integrations: Option<Map<String, Value>>,
}

fn shared_object(value: Option<Value>, key: &str) -> Result<Option<Map<String, Value>>, KizunaError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(invalid(key, "must be an object")),
    }
}

fn parse_batch(body: &[u8], received_at: DateTime<Utc>, limits: &Limits) -> Result<ParsedRequest, KizunaError> {
    let envelope: BatchEnvelope = serde_json::from_str(utf8(body)?).map_err(json_error)?;
    let mut write_key = match envelope.write_key {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(invalid("writeKey", "must be a string")),
    };
    let envelope_has_key = write_key.is_some();
    let sent_at = match &envelope.sent_at {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_time(v).map_err(|m| invalid("sentAt", &m))?),
    };
    let shared = Shared {
        context: shared_object(envelope.context, "context")?,
        integrations: shared_object(envelope.integrations, "integrations")?,
    };
    let messages = match envelope.batch {
        Some(Value::Array(messages)) => messages,
        None | Some(Value::Null) => {
            return Err(KizunaError::new(Code::MissingField, "a batch needs a `batch` array").with_field("batch"));
        }
        Some(_) => return Err(invalid("batch", "must be an array of messages")),
    };
    // The limit is on each message as the client sent it, as the SDKs check it before sending: a message just
    // under it must not fail its whole batch (which SDKs do not retry) because of what is added to it here. It is
    // checked on the message as stored, known without a second pass over the client's text, with an allowance
    // for what storing adds: the batch's shared context and integrations, and the fields Kizuna sets.
    let shared_bytes = [&shared.context, &shared.integrations]
        .into_iter()
        .flatten()
        .map(|map| serde_json::to_string(map).map_or(0, |text| text.len()))
        .sum::<usize>();
    let allowed = limits.max_event_bytes + shared_bytes + ADDED_FIELDS_BYTES;
    let mut events = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        let at = || format!("batch[{index}]");
        let Value::Object(mut object) = message else {
            return Err(invalid(&at(), "each batch item must be an object"));
        };
        // Clients built on single calls may put the key in each message instead of the envelope: then the
        // messages must agree on it, since the batch is stored under one source.
        let item_key = take_write_key(&mut object).map_err(|e| e.within(&at()))?;
        if let (false, Some(item_key)) = (envelope_has_key, item_key) {
            match &write_key {
                None => write_key = Some(item_key),
                Some(first) if *first == item_key => {}
                Some(_) => {
                    return Err(invalid(&format!("{}.writeKey", at()), "differs from an earlier message's write key"));
                }
            }
        }
        let event = normalise(object, None, sent_at, &shared, received_at).map_err(|e| e.within(&at()))?;
        if event.encoded.len() > allowed {
            return Err(KizunaError::new(
                Code::EventTooLarge,
                format!(
                    "the message is {} bytes as stored; the limit is {} bytes per message, plus {} for the batch's \
                     shared context and the fields Kizuna adds",
                    event.encoded.len(),
                    limits.max_event_bytes,
                    allowed - limits.max_event_bytes
                ),
            )
            .with_field(at()));
        }
        events.push(event);
    }
    Ok(ParsedRequest { write_key, events })
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, KizunaError> {
    match serde_json::from_str(utf8(body)?).map_err(json_error)? {
        Value::Object(map) => Ok(map),
        _ => Err(KizunaError::new(Code::MalformedJson, "the body must be a JSON object")),
    }
}

/// The whole body checked as UTF-8 at once: parsing from bytes checked every string on its own, which cost more
/// (4% of the server's instructions per event).
fn utf8(body: &[u8]) -> Result<&str, KizunaError> {
    std::str::from_utf8(body).map_err(|e| {
        KizunaError::new(
            Code::MalformedJson,
            format!("the body is not UTF-8: invalid bytes at offset {}", e.valid_up_to()),
        )
    })
}

fn json_error(e: serde_json::Error) -> KizunaError {
    KizunaError::new(Code::MalformedJson, format!("invalid JSON at line {} column {}: {e}", e.line(), e.column()))
}

fn invalid(field: &str, message: &str) -> KizunaError {
    KizunaError::new(Code::InvalidField, message).with_field(field)
}

fn take_write_key(object: &mut Map<String, Value>) -> Result<Option<String>, KizunaError> {
    match object.remove("writeKey") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid("writeKey", "must be a string")),
    }
}

/// Accepts RFC 3339, and ISO 8601 without an offset (read as UTC), as Segment libraries send both.
fn parse_time(value: &Value) -> Result<DateTime<Utc>, String> {
    let text = value.as_str().ok_or_else(|| "must be an ISO 8601 date-time string".to_owned())?;
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    Err(format!("'{text}' is not an ISO 8601 date-time"))
}

/// Sets a normalised string field. Most messages already hold it as normalised, and then nothing is allocated:
/// inserting afresh made a new key and value and dropped the old pair, for each of several fields per event.
fn set_string(object: &mut Map<String, Value>, key: &str, value: &str) {
    if object.get(key).and_then(Value::as_str) != Some(value) {
        set_value(object, key, Value::String(value.to_owned()));
    }
}

/// Sets a field, keeping the key it already has.
fn set_value(object: &mut Map<String, Value>, key: &str, value: Value) {
    match object.get_mut(key) {
        Some(slot) => *slot = value,
        None => drop(object.insert(key.to_owned(), value)),
    }
}

fn format_time(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// An identifier as a trimmed string; numbers are accepted because Segment libraries allow numeric ids.
/// Junk values are treated as absent.
fn take_id(object: &Map<String, Value>, key: &str) -> Result<Option<String>, KizunaError> {
    let text = match object.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(invalid(key, "must be a string or a number")),
    };
    if text.chars().count() > MAX_ID_CHARS {
        return Err(invalid(key, "must be at most 256 characters"));
    }
    if text.is_empty() || JUNK_IDS.iter().any(|junk| junk.eq_ignore_ascii_case(&text)) {
        return Ok(None);
    }
    Ok(Some(text))
}

fn check_object(object: &Map<String, Value>, key: &str) -> Result<(), KizunaError> {
    match object.get(key) {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(invalid(key, "must be an object")),
    }
}

fn required_string(object: &Map<String, Value>, key: &str) -> Result<(), KizunaError> {
    match object.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_ID_CHARS => Ok(()),
        Some(Value::String(s)) if !s.trim().is_empty() => Err(invalid(key, "must be at most 256 characters")),
        None | Some(Value::Null) => {
            Err(KizunaError::new(Code::MissingField, format!("`{key}` is required")).with_field(key))
        }
        Some(_) => Err(invalid(key, "must be a non-empty string")),
    }
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Result<(), KizunaError> {
    match object.get(key) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

fn normalise(
    mut object: Map<String, Value>,
    implied_type: Option<MessageType>,
    batch_sent_at: Option<DateTime<Utc>>,
    shared: &Shared,
    received_at: DateTime<Utc>,
) -> Result<Event, KizunaError> {
    object.remove("writeKey");
    let message_type = match implied_type {
        Some(kind) => kind,
        None => match object.get("type") {
            Some(Value::String(s)) => MessageType::parse(s).ok_or_else(|| {
                invalid("type", &format!("unknown type '{s}'; expected identify, track, page, screen, group or alias"))
            })?,
            None | Some(Value::Null) => {
                return Err(KizunaError::new(Code::MissingField, "`type` is required").with_field("type"));
            }
            Some(_) => return Err(invalid("type", "must be a string")),
        },
    };
    set_string(&mut object, "type", message_type.as_str());

    let message_id = match object.get("messageId") {
        None | Some(Value::Null) => format!("kz-{}", uuid::Uuid::new_v4()),
        Some(Value::String(s)) if !s.trim().is_empty() && s.trim().chars().count() <= MAX_ID_CHARS => {
            s.trim().to_owned()
        }
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(invalid("messageId", "must be a non-empty string of at most 256 characters")),
    };
    set_string(&mut object, "messageId", &message_id);

    let user_id = take_id(&object, "userId")?;
    let anonymous_id = take_id(&object, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(KizunaError::new(
            Code::MissingIdentity,
            "a message needs a usable userId or anonymousId (empty and placeholder values such as 'null' do not count)",
        )
        .with_field("userId"));
    }
    for (key, id) in [("userId", &user_id), ("anonymousId", &anonymous_id)] {
        match id {
            Some(id) => set_string(&mut object, key, id),
            None => drop(object.remove(key)),
        }
    }

    for key in ["traits", "properties", "context", "integrations"] {
        check_object(&object, key)?;
    }
    for (key, shared) in [("context", &shared.context), ("integrations", &shared.integrations)] {
        let Some(shared) = shared else { continue };
        let own = object.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(own) = own {
            for (k, v) in shared {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        } else {
            *own = Value::Object(shared.clone());
        }
    }
    if let Some(Value::Object(context)) = object.get("context") {
        check_object(context, "traits").map_err(|e| e.within("context"))?;
        optional_string(context, "timezone").map_err(|e| e.within("context"))?;
        optional_string(context, "locale").map_err(|e| e.within("context"))?;
        optional_string(context, "ip").map_err(|e| e.within("context"))?;
    }
    match message_type {
        MessageType::Track => required_string(&object, "event")?,
        MessageType::Page | MessageType::Screen => {
            optional_string(&object, "name")?;
            optional_string(&object, "category")?;
        }
        MessageType::Group => {
            // Stored as text, as the identity resolver and readers expect (SDKs may send numbers).
            let Some(group_id) = take_id(&object, "groupId")? else {
                return Err(KizunaError::new(Code::MissingField, "`groupId` is required").with_field("groupId"));
            };
            set_string(&mut object, "groupId", &group_id);
        }
        MessageType::Alias => {
            let Some(previous_id) = take_id(&object, "previousId")? else {
                return Err(KizunaError::new(Code::MissingField, "`previousId` is required").with_field("previousId"));
            };
            set_string(&mut object, "previousId", &previous_id);
            if user_id.is_none() {
                return Err(KizunaError::new(Code::MissingField, "an alias needs a `userId`").with_field("userId"));
            }
        }
        MessageType::Identify => {}
    }

    let time_field = |object: &Map<String, Value>, key: &str| -> Result<Option<DateTime<Utc>>, KizunaError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_time(v).map(Some).map_err(|m| invalid(key, &m)),
        }
    };
    let original = match time_field(&object, "originalTimestamp")? {
        Some(t) => Some(t),
        None => time_field(&object, "timestamp")?,
    };
    let sent_at = time_field(&object, "sentAt")?.or(batch_sent_at);
    // Segment's clock-skew correction: the client's clock may be wrong, but the delay it measured between
    // creating and sending the message is right, so anchor that delay on our own receive time.
    let timestamp = match (original, sent_at) {
        (Some(original), Some(sent)) => received_at - (sent - original),
        (Some(original), None) => original,
        (None, _) => received_at,
    };
    if let Some(original) = original {
        set_value(&mut object, "originalTimestamp", format_time(original));
    }
    if let Some(sent) = sent_at {
        set_value(&mut object, "sentAt", format_time(sent));
    }
    set_value(&mut object, "timestamp", format_time(timestamp));
    set_value(&mut object, "receivedAt", format_time(received_at));

    let encoded = serde_json::to_string(&object).map_err(|e| KizunaError::internal(e.to_string()))?;
    Ok(Event { message_id, message_type, timestamp, received_at, user_id, anonymous_id, body: object, encoded })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().expect("valid time")
    }

    fn single(kind: MessageType, body: Value) -> Result<ParsedRequest, KizunaError> {
        parse_request(Endpoint::Single(kind), body.to_string().as_bytes(), now(), &Limits::default())
    }

    fn batch(body: Value) -> Result<ParsedRequest, KizunaError> {
        parse_request(Endpoint::Batch, body.to_string().as_bytes(), now(), &Limits::default())
    }

    #[test]
    fn track_is_normalised_and_write_key_removed() {
        let parsed = single(
            MessageType::Track,
            json!({"writeKey": "wk", "userId": 42, "event": "Order Completed", "messageId": "m1",
                   "properties": {"total": 10}}),
        )
        .expect("valid");
        assert_eq!(parsed.write_key.as_deref(), Some("wk"));
        let event = &parsed.events[0];
        assert_eq!(event.user_id.as_deref(), Some("42"));
        assert_eq!(event.name(), Some("Order Completed"));
        assert!(!event.body.contains_key("writeKey"));
        assert_eq!(event.timestamp, now());
        assert_eq!(event.body["receivedAt"], json!("2026-01-01T12:00:00.000Z"));
    }

    #[test]
    fn clock_skew_is_corrected_from_sent_at() {
        // The client's clock is 1 hour fast; it created the event 5 s before sending it.
        let parsed = single(
            MessageType::Track,
            json!({"anonymousId": "a", "event": "X", "timestamp": "2026-01-01T12:59:55Z",
                   "sentAt": "2026-01-01T13:00:00Z"}),
        )
        .expect("valid");
        assert_eq!(parsed.events[0].timestamp, now() - chrono::Duration::seconds(5));
    }

    #[test]
    fn historical_timestamp_without_sent_at_is_kept() {
        let parsed =
            single(MessageType::Track, json!({"userId": "u", "event": "X", "timestamp": "2020-05-01T00:00:00+09:00"}))
                .expect("valid");
        assert_eq!(parsed.events[0].timestamp, Utc.with_ymd_and_hms(2020, 4, 30, 15, 0, 0).single().expect("t"));
    }

    #[test]
    fn missing_or_junk_identity_is_rejected() {
        let err = single(MessageType::Track, json!({"event": "X"})).expect_err("no id");
        assert_eq!(err.code, Code::MissingIdentity);
        let err = single(MessageType::Track, json!({"event": "X", "userId": "undefined", "anonymousId": ""}))
            .expect_err("junk id");
        assert_eq!(err.code, Code::MissingIdentity);
    }

    #[test]
    fn batch_errors_name_the_index_and_field() {
        let err = batch(json!({"batch": [
            {"type": "track", "userId": "u", "event": "A"},
            {"type": "track", "userId": "u", "event": "B", "timestamp": "yesterday"}
        ]}))
        .expect_err("bad timestamp");
        assert_eq!(err.code, Code::InvalidField);
        assert_eq!(err.field.as_deref(), Some("batch[1].timestamp"));

        let err = batch(json!({"batch": [{"type": "track", "userId": "u"}]})).expect_err("no event");
        assert_eq!((err.code, err.field.as_deref()), (Code::MissingField, Some("batch[0].event")));

        let err = batch(json!({"batch": [{"type": "bogus", "userId": "u"}]})).expect_err("bad type");
        assert_eq!(err.field.as_deref(), Some("batch[0].type"));

        let err = batch(json!({"batch": [{"type": "identify", "userId": "u", "traits": [1]}]})).expect_err("traits");
        assert_eq!(err.field.as_deref(), Some("batch[0].traits"));
    }

    #[test]
    fn batch_applies_shared_sent_at_and_context() {
        let parsed = batch(json!({
            "sentAt": "2026-01-01T12:00:10Z",
            "context": {"library": {"name": "analytics-node"}},
            "batch": [{"type": "page", "anonymousId": "a", "timestamp": "2026-01-01T12:00:00Z", "name": "Home"}]
        }))
        .expect("valid");
        let event = &parsed.events[0];
        assert_eq!(event.timestamp, now() - chrono::Duration::seconds(10));
        assert_eq!(event.context().and_then(|c| c.get("library")), Some(&json!({"name": "analytics-node"})));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits { max_event_bytes: 100, max_batch_bytes: 1_000 };
        let big = "x".repeat(100 + ADDED_FIELDS_BYTES);
        let body =
            json!({"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"pad": big}}]}).to_string();
        let err = parse_request(Endpoint::Batch, body.as_bytes(), now(), &limits).expect_err("event too big");
        assert_eq!((err.code, err.field.as_deref()), (Code::EventTooLarge, Some("batch[0]")));
        let body = json!({"batch": vec![json!({"type": "track", "userId": "u", "event": "e"}); 30]}).to_string();
        let err = parse_request(Endpoint::Batch, body.as_bytes(), now(), &limits).expect_err("batch too big");
        assert_eq!(err.code, Code::BatchTooLarge);
    }

    #[test]
    fn a_batch_message_is_measured_as_the_client_sent_it_and_named_by_its_index() {
        let limits = Limits { max_event_bytes: 400, max_batch_bytes: 10_000 };
        let small = json!({"type": "track", "userId": "u", "event": "e"});
        // Pretty-printed padding does not count: the message is stored compact.
        let padded =
            format!(r#"{{"batch": [{}]}}"#, serde_json::to_string_pretty(&small).expect("json") + &" ".repeat(500));
        assert_eq!(parse_request(Endpoint::Batch, padded.as_bytes(), now(), &limits).expect("fits").events.len(), 1);
        // A message just under the limit as the client sent it fits, though the batch's shared context, its sentAt
        // and the fields Kizuna adds make it bigger as stored.
        let mut near = json!({"type": "track", "userId": "u", "event": "e", "messageId": "m"});
        let room = 400 - near.to_string().len() - r#","properties":{"p":""}"#.len();
        near["properties"] = json!({"p": "p".repeat(room)});
        assert_eq!(near.to_string().len(), 400);
        let shared = json!({"sentAt": "2026-01-01T12:00:00Z", "context": {"note": "n".repeat(300)},
                            "integrations": {"All": true}, "batch": [near.clone()]})
        .to_string();
        let parsed = parse_request(Endpoint::Batch, shared.as_bytes(), now(), &limits).expect("fits as sent");
        assert!(parsed.events[0].encoded.len() > 400 + 300, "stored bigger: {}", parsed.events[0].encoded.len());
        // A message over the limit by itself does not fit, with or without a shared context.
        let mut over = near.clone();
        over["properties"]["q"] = json!("q".repeat(ADDED_FIELDS_BYTES));
        for body in [json!({"batch": [small.clone(), over.clone()]}), json!({"context": {"n": 1}, "batch": [over]})] {
            let err = parse_request(Endpoint::Batch, body.to_string().as_bytes(), now(), &limits).expect_err("over");
            assert_eq!(err.code, Code::EventTooLarge);
            assert!(err.field.as_deref().is_some_and(|f| f.starts_with("batch[")), "{:?}", err.field);
        }
        // A message that is not an object is named by its index, and nothing of the batch is returned.
        let err = batch(json!({"batch": [small, 7]})).expect_err("not an object");
        assert_eq!((err.code, err.field.as_deref()), (Code::InvalidField, Some("batch[1]")));
    }

    #[test]
    fn normalised_fields_are_what_is_stored() {
        let parsed = single(
            MessageType::Track,
            json!({"type": "page", "userId": 42, "anonymousId": " a-1 ", "messageId": " m1 ", "event": "E",
                   "timestamp": "2026-01-01T11:00:00Z"}),
        )
        .expect("valid");
        let event = &parsed.events[0];
        let stored: Value = serde_json::from_str(&event.encoded).expect("stored JSON");
        assert_eq!(stored["type"], json!("track"), "the endpoint decides the type");
        assert_eq!(
            (&stored["userId"], &stored["anonymousId"], &stored["messageId"]),
            (&json!("42"), &json!("a-1"), &json!("m1"))
        );
        assert_eq!(stored["timestamp"], json!("2026-01-01T11:00:00.000Z"));
        assert_eq!(stored["receivedAt"], json!("2026-01-01T12:00:00.000Z"));
        assert_eq!(Value::Object(event.body.clone()), stored);
        // Already normalised fields stay as they are; a junk id is dropped.
        let parsed = batch(json!({"batch": [{"type": "track", "userId": "u", "anonymousId": "null", "messageId": "m2", "event": "E"}]}))
            .expect("valid");
        let stored: Value = serde_json::from_str(&parsed.events[0].encoded).expect("stored JSON");
        assert_eq!(
            (&stored["type"], &stored["userId"], &stored["messageId"]),
            (&json!("track"), &json!("u"), &json!("m2"))
        );
        assert!(stored.get("anonymousId").is_none());
    }

    #[test]
    fn a_body_that_is_not_utf8_is_malformed() {
        let mut body = br#"{"batch": [{"type": "track", "userId": "u", "event": "caf"#.to_vec();
        body.extend_from_slice(&[0xe9, b'"', b'}', b']', b'}']);
        for endpoint in [Endpoint::Batch, Endpoint::Single(MessageType::Track)] {
            let err = parse_request(endpoint, &body, now(), &Limits::default()).expect_err("latin-1 byte");
            assert_eq!(err.code, Code::MalformedJson);
            assert!(err.message.contains(&format!("offset {}", body.len() - 5)), "{}", err.message);
        }
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = parse_request(Endpoint::Batch, b"{\"batch\": [", now(), &Limits::default()).expect_err("bad");
        assert_eq!(err.code, Code::MalformedJson);
    }

    #[test]
    fn a_batch_shares_its_integrations_like_its_context_and_its_messages_keep_their_own() {
        let parsed = batch(json!({
            "integrations": {"All": false, "Mixpanel": true},
            "batch": [
                {"type": "track", "userId": "u", "event": "A"},
                {"type": "track", "userId": "u", "event": "B", "integrations": {"All": true}}
            ]
        }))
        .expect("valid");
        let integrations = |i: usize| parsed.events[i].body.get("integrations").cloned();
        assert_eq!(integrations(0), Some(json!({"All": false, "Mixpanel": true})));
        assert_eq!(integrations(1), Some(json!({"All": true, "Mixpanel": true})));
        let err = batch(json!({"integrations": "x", "batch": []})).expect_err("not an object");
        assert_eq!((err.code, err.field.as_deref()), (Code::InvalidField, Some("integrations")));
    }

    #[test]
    fn a_batch_that_is_not_an_array_is_named_not_called_malformed() {
        for body in [json!({"batch": {"type": "track"}}), json!({"batch": "x"})] {
            let err = batch(body).expect_err("not an array");
            assert_eq!((err.code, err.field.as_deref()), (Code::InvalidField, Some("batch")));
        }
        let err = batch(json!({"writeKey": "k"})).expect_err("no batch");
        assert_eq!((err.code, err.field.as_deref()), (Code::MissingField, Some("batch")));
    }

    #[test]
    fn a_batch_without_an_envelope_key_takes_its_messages_agreed_key() {
        let message = |key: &str| json!({"type": "track", "userId": "u", "event": "e", "writeKey": key});
        let parsed =
            batch(json!({"batch": [message("k1"), {"type": "track", "userId": "u", "event": "e"}, message("k1")]}))
                .expect("one key");
        assert_eq!(parsed.write_key.as_deref(), Some("k1"));
        assert!(parsed.events.iter().all(|e| !e.body.contains_key("writeKey")), "the key is not stored");
        let err = batch(json!({"batch": [message("k1"), message("k2")]})).expect_err("two keys");
        assert_eq!((err.code, err.field.as_deref()), (Code::InvalidField, Some("batch[1].writeKey")));
        // The envelope's key wins and the messages' keys are not compared.
        let parsed =
            batch(json!({"writeKey": "top", "batch": [message("k1"), message("k2")]})).expect("the envelope's key");
        assert_eq!(parsed.write_key.as_deref(), Some("top"));
    }

    #[test]
    fn numeric_alias_and_group_ids_are_stored_as_text() {
        let alias = single(MessageType::Alias, json!({"userId": "u", "previousId": 123})).expect("valid");
        assert_eq!(alias.events[0].str_field("previousId"), Some("123"));
        let group = single(MessageType::Group, json!({"userId": "u", "groupId": 7, "traits": {}})).expect("valid");
        assert_eq!(group.events[0].str_field("groupId"), Some("7"));
    }

    #[test]
    fn a_message_id_is_measured_in_characters_after_trimming() {
        let long = "é".repeat(200);
        let parsed = single(MessageType::Track, json!({"userId": "u", "event": "E", "messageId": format!(" {long} ")}))
            .expect("200 characters are within the limit");
        assert_eq!(parsed.events[0].message_id, long);
        let err = single(MessageType::Track, json!({"userId": "u", "event": "E", "messageId": "x".repeat(257)}))
            .expect_err("too long");
        assert_eq!(err.field.as_deref(), Some("messageId"));
    }

    #[test]
    fn alias_and_group_need_their_ids() {
        let err = single(MessageType::Alias, json!({"userId": "u"})).expect_err("no previousId");
        assert_eq!(err.field.as_deref(), Some("previousId"));
        let err = single(MessageType::Group, json!({"userId": "u"})).expect_err("no groupId");
        assert_eq!(err.field.as_deref(), Some("groupId"));
        assert!(single(MessageType::Alias, json!({"userId": "u", "previousId": "a"})).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_request(Endpoint::Batch, &bytes, now(), &Limits::default());
            let _ = parse_request(Endpoint::Single(MessageType::Track), &bytes, now(), &Limits::default());
        }
    }
}
