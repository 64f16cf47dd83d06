//! Channels that are HTTP APIs: SMS (Twilio-compatible), LINE Messaging API push, and webhooks signed with
//! HMAC-SHA256. Provider base URLs are settings, so tests point them at local fakes.

use crate::{Channel, Outgoing, RateLimit, Receipt, SendError, SendFuture};
use kizuna_messaging::{Purpose, Rendered};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// 429 and 5xx are worth retrying; other 4xx mean the request itself is wrong.
async fn classify(response: reqwest::Response, what: &str) -> Result<(reqwest::StatusCode, Value), SendError> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok((status, json));
    }
    let detail: String = format!("{what} answered {status}: {}", body.chars().take(300).collect::<String>());
    if status.as_u16() == 429 || status.is_server_error() {
        Err(SendError::Retryable(detail))
    } else {
        Err(SendError::Permanent(detail))
    }
}

fn network(error: reqwest::Error, what: &str) -> SendError {
    SendError::Retryable(format!("{what} unreachable: {error}"))
}

// ---- SMS -------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSettings {
    /// `https://api.twilio.com` or a compatible provider.
    #[serde(default = "twilio")]
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The sender: an E.164 number or an alphanumeric sender id.
    pub from: String,
    /// Added to marketing texts that do not already say how to stop them.
    #[serde(default = "stop_text")]
    pub stop_text: String,
    #[serde(default)]
    pub rate_per_second: f64,
}

fn twilio() -> String {
    "https://api.twilio.com".into()
}

fn stop_text() -> String {
    "Reply STOP to opt out.".into()
}

pub struct SmsChannel {
    settings: SmsSettings,
    client: reqwest::Client,
    rate: RateLimit,
}

impl SmsChannel {
    pub fn new(settings: SmsSettings) -> SmsChannel {
        let rate = RateLimit::per_second(settings.rate_per_second);
        SmsChannel { settings, client: client(), rate }
    }

    /// The text as sent: marketing texts say how to stop them (carriers require it).
    pub fn body(&self, message: &Outgoing, body: &str) -> String {
        if message.purpose == Purpose::Marketing && !body.to_ascii_uppercase().contains("STOP") {
            format!("{body}\n{}", self.settings.stop_text)
        } else {
            body.to_owned()
        }
    }
}

impl Channel for SmsChannel {
    fn kind(&self) -> kizuna_messaging::Channel {
        kizuna_messaging::Channel::Sms
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            let Rendered::Sms { body } = &message.rendered else {
                return Err(SendError::Permanent("not an SMS".into()));
            };
            if !message.to.starts_with('+') {
                return Err(SendError::Bounced(format!("`{}` is not an E.164 number", message.to)));
            }
            let body = self.body(message, body);
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                self.settings.base_url.trim_end_matches('/'),
                self.settings.account_sid
            );
            self.rate.wait().await;
            let response = self
                .client
                .post(url)
                .basic_auth(&self.settings.account_sid, Some(&self.settings.auth_token))
                .form(&[("To", message.to.as_str()), ("From", self.settings.from.as_str()), ("Body", body.as_str())])
                .send()
                .await
                .map_err(|e| network(e, "the SMS provider"))?;
            let (_, json) = match classify(response, "the SMS provider").await {
                // Twilio's 21211/21614: not a valid or not a mobile number — the address is bad, not the request.
                Err(SendError::Permanent(detail)) if detail.contains("21211") || detail.contains("21614") => {
                    return Err(SendError::Bounced(detail));
                }
                other => other?,
            };
            Ok(Receipt { provider_id: json.get("sid").and_then(Value::as_str).map(str::to_owned) })
        })
    }
}

/// Checks Twilio's `X-Twilio-Signature` on an inbound webhook: base64 of HMAC-SHA1, keyed with the auth token,
/// over the full URL Twilio called followed by every form parameter's name and value, sorted by name.
pub fn twilio_signature_valid(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = <Hmac<sha1::Sha1>>::new_from_slice(auth_token.as_bytes()) else { return false };
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else { return false };
    mac.verify_slice(&given).is_ok()
}

// ---- LINE ------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSettings {
    #[serde(default = "line_api")]
    pub base_url: String,
    pub channel_access_token: String,
    #[serde(default)]
    pub rate_per_second: f64,
}

fn line_api() -> String {
    "https://api.line.me".into()
}

pub struct LineChannel {
    settings: LineSettings,
    client: reqwest::Client,
    rate: RateLimit,
}

impl LineChannel {
    pub fn new(settings: LineSettings) -> LineChannel {
        let rate = RateLimit::per_second(settings.rate_per_second);
        LineChannel { settings, client: client(), rate }
    }
}

impl Channel for LineChannel {
    fn kind(&self) -> kizuna_messaging::Channel {
        kizuna_messaging::Channel::Line
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            let Rendered::Line { messages } = &message.rendered else {
                return Err(SendError::Permanent("not a LINE message".into()));
            };
            let url = format!("{}/v2/bot/message/push", self.settings.base_url.trim_end_matches('/'));
            self.rate.wait().await;
            let response = self
                .client
                .post(url)
                .bearer_auth(&self.settings.channel_access_token)
                // The same key on a retry makes LINE answer 409 instead of delivering twice.
                .header("X-Line-Retry-Key", &message.message_id)
                .json(&json!({"to": message.to, "messages": messages}))
                .send()
                .await
                .map_err(|e| network(e, "LINE"))?;
            let request_id =
                response.headers().get("x-line-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            if response.status() == reqwest::StatusCode::CONFLICT {
                // Accepted on an earlier attempt with this retry key.
                let accepted = response
                    .headers()
                    .get("x-line-accepted-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Ok(Receipt { provider_id: accepted.or(request_id) });
            }
            classify(response, "LINE").await?;
            Ok(Receipt { provider_id: request_id })
        })
    }
}

// ---- Webhook ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// Signs every request; the receiver checks `X-Kizuna-Signature`.
    pub secret: String,
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` — the timestamp inside the signature stops replays.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| <Hmac<sha2::Sha256>>::new_from_slice(b"kizuna").expect("HMAC takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct WebhookChannel {
    settings: WebhookSettings,
    client: reqwest::Client,
}

impl WebhookChannel {
    pub fn new(settings: WebhookSettings) -> WebhookChannel {
        WebhookChannel { settings, client: client() }
    }
}

impl Channel for WebhookChannel {
    fn kind(&self) -> kizuna_messaging::Channel {
        kizuna_messaging::Channel::Webhook
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            let Rendered::Webhook { payload } = &message.rendered else {
                return Err(SendError::Permanent("not a webhook payload".into()));
            };
            let body = serde_json::to_vec(payload).map_err(|e| SendError::Permanent(e.to_string()))?;
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            let response = self
                .client
                .post(&self.settings.url)
                .header("content-type", "application/json")
                .header("X-Kizuna-Signature", webhook_signature(&self.settings.secret, timestamp, &body))
                .header("Idempotency-Key", &message.message_id)
                .body(body)
                .send()
                .await
                .map_err(|e| network(e, "the webhook"))?;
            classify(response, "the webhook").await?;
            Ok(Receipt { provider_id: None })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::twilio_signature_valid;

    /// The example in Twilio's webhook security documentation.
    #[test]
    fn twilio_documented_signature() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(twilio_signature_valid("12345", url, &params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        assert!(!twilio_signature_valid("12346", url, &params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
        assert!(!twilio_signature_valid(
            "12345",
            "https://mycompany.com/other",
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!twilio_signature_valid("12345", url, &params, "not base64!"));
    }
}
