use kizuna_ingest::{Event, JUNK_IDS, MessageType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The kind of an identifier. Declaration order is resolution priority: the first identifier of a message in
/// this order decides which profile the message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    UserId,
    Email,
    Phone,
    LineUserId,
    Custom(String),
    AnonymousId,
}

impl IdKind {
    pub fn as_str(&self) -> &str {
        match self {
            IdKind::UserId => "user_id",
            IdKind::Email => "email",
            IdKind::Phone => "phone",
            IdKind::LineUserId => "line_user_id",
            IdKind::Custom(name) => name,
            IdKind::AnonymousId => "anonymous_id",
        }
    }

    /// Reads a kind from its API name; any other name is a custom kind (the caller checks it is declared).
    pub fn parse(name: &str) -> IdKind {
        match name {
            "user_id" => IdKind::UserId,
            "email" => IdKind::Email,
            "phone" => IdKind::Phone,
            "line_user_id" => IdKind::LineUserId,
            "anonymous_id" => IdKind::AnonymousId,
            other => IdKind::Custom(other.to_owned()),
        }
    }

    /// Identified = known to be a particular person, as opposed to a device cookie.
    pub fn is_strong(&self) -> bool {
        !matches!(self, IdKind::AnonymousId)
    }
}

impl Serialize for IdKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IdKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(IdKind::parse(&name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: IdKind,
    pub value: String,
}

impl Identifier {
    pub fn new(kind: IdKind, value: impl Into<String>) -> Self {
        Self { kind, value: value.into() }
    }

    /// Builds a normalised identifier from an API path or a trait, or `None` when the value is unusable.
    pub fn normalised(kind: IdKind, raw: &str, default_country: Option<&str>) -> Option<Self> {
        let value = match kind {
            IdKind::Email => normalise_email(raw)?,
            IdKind::Phone => normalise_phone(raw, default_country)?,
            _ => plain_id(raw)?,
        };
        Some(Self { kind, value })
    }

    /// The storage key, `kind:value`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.value)
    }

    pub fn from_key(key: &str) -> Option<Self> {
        let (kind, value) = key.split_once(':')?;
        Some(Self { kind: IdKind::parse(kind), value: value.to_owned() })
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.value)
    }
}

/// Which custom identifier types this deployment declares, and the country assumed for national phone numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierConfig {
    /// Custom identifier types, e.g. `shopify_customer_id`: read from traits of that name and from
    /// `context.externalIds` entries of that type.
    pub custom_types: Vec<String>,
    /// ISO 3166 alpha-2 country for phone numbers written without a country code, when the message does not
    /// say where the person is (`context.location.country`).
    pub default_country: Option<String>,
}

fn plain_id(raw: &str) -> Option<String> {
    let value = raw.trim();
    if value.is_empty() || value.chars().count() > 256 || JUNK_IDS.iter().any(|j| j.eq_ignore_ascii_case(value)) {
        return None;
    }
    Some(value.to_owned())
}

/// Lower-cases and trims an email; `None` when it is not shaped like `local@domain.tld`.
pub fn normalise_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let shaped = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email.chars().any(char::is_whitespace);
    shaped.then_some(email)
}

const CALLING_CODES: &[(&str, &str)] = &[
    ("JP", "81"),
    ("US", "1"),
    ("CA", "1"),
    ("GB", "44"),
    ("KR", "82"),
    ("TW", "886"),
    ("CN", "86"),
    ("HK", "852"),
    ("SG", "65"),
    ("TH", "66"),
    ("AU", "61"),
    ("NZ", "64"),
    ("DE", "49"),
    ("FR", "33"),
    ("IT", "39"),
    ("ES", "34"),
    ("NL", "31"),
    ("SE", "46"),
    ("IN", "91"),
    ("ID", "62"),
    ("PH", "63"),
    ("VN", "84"),
    ("MY", "60"),
    ("BR", "55"),
    ("MX", "52"),
];

/// Normalises a phone number to E.164 (`+819012345678`). Numbers written with `+` or `00` keep their country
/// code; national numbers take the calling code of `default_country`, dropping the trunk prefix `0`.
/// `None` when the result cannot be a valid E.164 number (8 to 15 digits).
pub fn normalise_phone(raw: &str, default_country: Option<&str>) -> Option<String> {
    let trimmed = raw.trim();
    let international = trimmed.starts_with('+');
    let mut digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let allowed = |c: char| c.is_ascii_digit() || " -().+/".contains(c);
    if !trimmed.chars().all(allowed) {
        return None;
    }
    let e164 = if international {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else {
        let country = default_country?.to_ascii_uppercase();
        let code = CALLING_CODES.iter().find(|(c, _)| *c == country)?.1;
        if code == "1" {
            if digits.len() == 11 && digits.starts_with('1') {
                digits.remove(0);
            }
            if digits.len() != 10 {
                return None;
            }
        } else if let Some(rest) = digits.strip_prefix('0') {
            digits = rest.to_owned();
        }
        format!("{code}{digits}")
    };
    ((8..=15).contains(&e164.len()) && !e164.starts_with('0')).then(|| format!("+{e164}"))
}

fn trait_str<'a>(traits: Option<&'a Map<String, Value>>, names: &[&str]) -> Option<&'a str> {
    let traits = traits?;
    names.iter().find_map(|n| traits.get(*n)).and_then(Value::as_str)
}

/// The identifiers a message carries, normalised, deduplicated and in priority order.
pub fn extract_identifiers(event: &Event, config: &IdentifierConfig) -> Vec<Identifier> {
    let mut out = Vec::with_capacity(4);
    let mut push = |id: Option<Identifier>| {
        if let Some(id) = id
            && !out.contains(&id)
        {
            out.push(id);
        }
    };
    let traits = event.traits();
    let context = event.context();
    let country = context
        .and_then(|c| c.get("location"))
        .and_then(|l| l.get("country"))
        .and_then(Value::as_str)
        .filter(|c| c.len() == 2)
        .or(config.default_country.as_deref());

    push(event.user_id.as_deref().and_then(|v| Identifier::normalised(IdKind::UserId, v, None)));
    push(trait_str(traits, &["email"]).and_then(|v| Identifier::normalised(IdKind::Email, v, None)));
    push(trait_str(traits, &["phone"]).and_then(|v| Identifier::normalised(IdKind::Phone, v, country)));
    push(
        trait_str(traits, &["line_user_id", "lineUserId"])
            .and_then(|v| Identifier::normalised(IdKind::LineUserId, v, None)),
    );
    for custom in &config.custom_types {
        push(
            trait_str(traits, &[custom.as_str()]).and_then(|v| Identifier::normalised(IdKind::parse(custom), v, None)),
        );
    }
    let external = context.and_then(|c| c.get("externalIds")).and_then(Value::as_array);
    for entry in external.into_iter().flatten() {
        let (Some(kind), Some(id)) = (entry.get("type").and_then(Value::as_str), entry.get("id")) else {
            continue;
        };
        let id = match id {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        let kind = IdKind::parse(kind);
        let known = match &kind {
            IdKind::Custom(name) => config.custom_types.iter().any(|c| c == name),
            _ => true,
        };
        if known {
            push(Identifier::normalised(kind, &id, country));
        }
    }
    push(event.anonymous_id.as_deref().and_then(|v| Identifier::normalised(IdKind::AnonymousId, v, None)));
    if event.message_type == MessageType::Alias {
        // Segment's alias links an earlier id (usually the anonymous one) to the userId.
        push(event.str_field("previousId").and_then(|v| Identifier::normalised(IdKind::AnonymousId, v, None)));
    }
    out.sort_by(|a, b| a.kind.cmp(&b.kind));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use kizuna_ingest::{Endpoint, Limits, parse_request};
    use serde_json::json;

    fn event(kind: MessageType, body: Value) -> Event {
        let mut parsed =
            parse_request(Endpoint::Single(kind), body.to_string().as_bytes(), Utc::now(), &Limits::default())
                .expect("valid message");
        parsed.events.remove(0)
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(normalise_email("  Alice@Example.COM "), Some("alice@example.com".into()));
        assert_eq!(normalise_email("not-an-email"), None);
        assert_eq!(normalise_email("a@b"), None);
        assert_eq!(normalise_email("a b@c.com"), None);
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(normalise_phone("090-1234-5678", Some("JP")), Some("+819012345678".into()));
        assert_eq!(normalise_phone("+81 90 1234 5678", None), Some("+819012345678".into()));
        assert_eq!(normalise_phone("0081 90 1234 5678", None), Some("+819012345678".into()));
        assert_eq!(normalise_phone("(415) 555-2671", Some("US")), Some("+14155552671".into()));
        assert_eq!(normalise_phone("1-415-555-2671", Some("us")), Some("+14155552671".into()));
        assert_eq!(normalise_phone("090-1234-5678", None), None);
        assert_eq!(normalise_phone("call me", Some("JP")), None);
        assert_eq!(normalise_phone("+1 23", None), None);
    }

    #[test]
    fn extracts_in_priority_order() {
        let config = IdentifierConfig { custom_types: vec!["shopify_id".into()], default_country: None };
        let e = event(
            MessageType::Identify,
            json!({"anonymousId": "anon-1", "userId": "u1", "traits": {
                "email": "A@x.com", "phone": "090-1111-2222", "lineUserId": "Uabc", "shopify_id": 77},
                "context": {"location": {"country": "JP"}, "externalIds": [{"id": "99", "type": "shopify_id"},
                {"id": "x", "type": "undeclared"}]}}),
        );
        let ids: Vec<String> = extract_identifiers(&e, &config).iter().map(Identifier::key).collect();
        assert_eq!(
            ids,
            [
                "user_id:u1",
                "email:a@x.com",
                "phone:+819011112222",
                "line_user_id:Uabc",
                "shopify_id:99",
                "anonymous_id:anon-1"
            ]
        );
    }

    #[test]
    fn track_reads_context_traits_and_alias_reads_previous_id() {
        let config = IdentifierConfig::default();
        let e = event(
            MessageType::Track,
            json!({"anonymousId": "a1", "event": "X", "context": {"traits": {"email": "b@y.org"}}}),
        );
        let ids: Vec<String> = extract_identifiers(&e, &config).iter().map(Identifier::key).collect();
        assert_eq!(ids, ["email:b@y.org", "anonymous_id:a1"]);
        let e = event(MessageType::Alias, json!({"userId": "u9", "previousId": "a9"}));
        let ids: Vec<String> = extract_identifiers(&e, &config).iter().map(Identifier::key).collect();
        assert_eq!(ids, ["user_id:u9", "anonymous_id:a9"]);
    }
}
