//! One table of error codes and one error shape, `{code, message, field}`, used by every API response.
//!
//! Library crates return their own `thiserror` enums and convert into [`KizunaError`] at the edge; the server
//! turns a `KizunaError` into an HTTP response with the status from [`Code::http_status`].

use serde::Serialize;
use std::fmt;

macro_rules! codes {
    ($($variant:ident => ($status:expr, $name:literal, $doc:literal)),+ $(,)?) => {
        /// Every error code Kizuna can answer with. The string form is stable API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $(#[doc = $doc] $variant),+ }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name),+ }
            }

            pub fn http_status(self) -> u16 {
                match self { $(Code::$variant => $status),+ }
            }

            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $doc),+ }
            }
        }
    };
}

codes! {
    MalformedJson => (400, "malformed_json", "The body is not valid JSON."),
    MalformedBody => (400, "malformed_body", "The body could not be decoded (bad gzip or encoding)."),
    InvalidField => (400, "invalid_field", "A field has the wrong type or an invalid value."),
    MissingField => (400, "missing_field", "A required field is missing."),
    MissingIdentity => (400, "missing_identity", "A message needs a userId or an anonymousId."),
    EventTooLarge => (400, "event_too_large", "One event is larger than the per-event limit."),
    BatchTooLarge => (400, "batch_too_large", "The request body is larger than the batch limit."),
    InvalidParameter => (400, "invalid_parameter", "A query or path parameter is invalid."),
    InvalidSegment => (400, "invalid_segment", "The segment definition does not parse or cannot hold; the message says where (line:column or JSON pointer) and what was expected."),
    MissingWriteKey => (401, "missing_write_key", "No write key was given (HTTP Basic username or writeKey)."),
    InvalidWriteKey => (401, "invalid_write_key", "The write key is unknown or revoked."),
    MissingApiKey => (401, "missing_api_key", "An admin API key is required as a Bearer token."),
    InvalidApiKey => (401, "invalid_api_key", "The admin API key is unknown or revoked."),
    ProfileNotFound => (404, "profile_not_found", "No profile has this id or identifier."),
    ProductNotFound => (404, "product_not_found", "No product has this id."),
    RouteNotFound => (404, "route_not_found", "No such endpoint."),
    SegmentNotFound => (404, "segment_not_found", "No segment has this name."),
    SegmentExists => (409, "segment_exists", "A segment with this name already exists; PUT replaces its definition."),
    SegmentInUse => (409, "segment_in_use", "Another segment refers to this one; change that one first."),
    PlacementNotFound => (404, "placement_not_found", "No recommendation placement has this name."),
    InvalidPlacement => (400, "invalid_placement", "The placement does not parse or breaks a rule; `field` names where."),
    AnalyticsRunning => (409, "analytics_running", "An analytics run started through the API is still going; wait for it to finish."),
    NothingToLearn => (409, "nothing_to_learn", "No product views, carts or orders to train a model on yet."),
    PlacementBuiltIn => (409, "placement_builtin", "A built-in placement cannot be deleted; PUT one of the same name to change it."),
    TemplateNotFound => (404, "template_not_found", "No message template has this name (or version)."),
    InvalidTemplate => (400, "invalid_template", "The template does not compile; `field` names the part and the message gives line and column."),
    RenderFailed => (422, "render_failed", "The template compiled but could not render for this recipient (e.g. a webhook payload that is not JSON)."),
    InvalidCredentials => (401, "invalid_credentials", "The email or password is wrong, or the session has ended; sign in again."),
    CsrfTokenMismatch => (403, "csrf_token_mismatch", "A change made with a session cookie must send the session's CSRF token as `X-CSRF-Token`."),
    TooManyAttempts => (429, "too_many_attempts", "Too many failed sign-ins for this email; wait and retry."),
    MessageNotFound => (404, "message_not_found", "No message has this id."),
    ChannelNotConfigured => (409, "channel_not_configured", "The channel this template uses has no provider settings."),
    InvalidTrackingLink => (400, "invalid_tracking_link", "The tracking or unsubscribe link is malformed or its signature does not match."),
    SendFailed => (502, "send_failed", "The channel's provider refused or could not be reached."),
    FlowNotFound => (404, "flow_not_found", "No flow has this name (or version)."),
    InvalidFlow => (400, "invalid_flow", "The flow definition is malformed or breaks a rule (unknown or unreachable step, missing branch, cycle without a wait, unknown template or segment); `field` names where."),
    FlowNotActive => (409, "flow_not_active", "The flow must be active for this (activate it first)."),
    RunNotFound => (404, "run_not_found", "No flow run has this id."),
    FlowExists => (409, "flow_exists", "A flow with this name already exists; PUT saves a new version of it."),
    AnalyticsRunNotFound => (404, "analytics_run_not_found", "No analytics run has this id, or none has succeeded yet."),
    UnsupportedMediaType => (415, "unsupported_media_type", "Send application/json, optionally gzip-encoded."),
    Unavailable => (503, "unavailable", "The server is shutting down or overloaded; retry later."),
    Internal => (500, "internal", "An internal error; the request was not applied."),
}

/// The one error shape of every API response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KizunaError {
    #[serde(serialize_with = "serialize_code")]
    pub code: Code,
    pub message: String,
    /// The offending field as a path, e.g. `batch[3].timestamp`; `null` when no single field is to blame.
    pub field: Option<String>,
}

fn serialize_code<S: serde::Serializer>(code: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

impl KizunaError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Prefixes the field path, e.g. `timestamp` inside `batch[3]` becomes `batch[3].timestamp`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field.take() {
            Some(f) if f.starts_with('[') => format!("{prefix}{f}"),
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_owned(),
        });
        self
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

impl fmt::Display for KizunaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({}): {}", self.code.as_str(), field, self.message),
            None => write!(f, "{}: {}", self.code.as_str(), self.message),
        }
    }
}

impl std::error::Error for KizunaError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_snake_case() {
        let names: HashSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len());
        for c in Code::ALL {
            assert!(c.as_str().chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'), "{}", c.as_str());
            assert!((400..600).contains(&c.http_status()));
        }
    }

    #[test]
    fn serialises_to_the_error_shape() {
        let e = KizunaError::new(Code::MissingField, "required").with_field("event").within("batch[2]");
        let v = serde_json::to_value(&e).expect("serialise");
        assert_eq!(v, serde_json::json!({"code": "missing_field", "message": "required", "field": "batch[2].event"}));
    }
}
