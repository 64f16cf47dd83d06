use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const CHANNELS: &[&str] = &["email", "sms", "line", "push"];
pub const PURPOSES: &[&str] = &["marketing", "transactional", "analytics", "personalization"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Granted,
    Denied,
}

impl ConsentStatus {
    /// Reads the forms clients send: "granted"/"denied", "yes"/"no", "opted_in"/"unsubscribed", booleans.
    pub fn parse(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(true) => Some(Self::Granted),
            Value::Bool(false) => Some(Self::Denied),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "granted" | "yes" | "true" | "subscribed" | "opted_in" | "opt_in" | "accepted" => Some(Self::Granted),
                "denied" | "no" | "false" | "unsubscribed" | "opted_out" | "opt_out" | "revoked" | "rejected" => {
                    Some(Self::Denied)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// One consent decision with where and when it was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentEntry {
    pub status: ConsentStatus,
    pub source: String,
    #[serde(with = "crate::timestamp")]
    pub at: DateTime<Utc>,
}
