//! Delivery channels, each behind [`Channel`]: email over SMTP, SMS through a Twilio-compatible API, LINE
//! Messaging API push, and signed webhooks. A channel sends one rendered message and says whether a failure is
//! worth retrying; queuing, retries and the delivery log belong to the messaging service.

mod email;
mod http;

pub use email::{SmtpChannel, SmtpSettings, SmtpTls};
pub use http::{
    LineChannel, LineSettings, SmsChannel, SmsSettings, WebhookChannel, WebhookSettings, twilio_signature_valid,
    webhook_signature,
};

use kizuna_messaging::{Purpose, Rendered};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// A message ready to go out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// A UUID; doubles as the provider idempotency key (LINE's `X-Line-Retry-Key`, the webhook's
    /// `Idempotency-Key`, the email `Message-ID`).
    pub message_id: String,
    /// Email address, E.164 phone number, LINE user id; ignored by webhooks.
    pub to: String,
    pub purpose: Purpose,
    pub rendered: Rendered,
    /// The one-click unsubscribe URL (marketing email carries it in `List-Unsubscribe`).
    pub unsubscribe_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id for the message (SMTP queue id, Twilio SID, LINE request id).
    pub provider_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another try later (connection refused, 4xx SMTP, 429/5xx HTTP, timeouts).
    #[error("temporary failure: {0}")]
    Retryable(String),
    /// Retrying will not help (bad address, rejected content, 5xx SMTP, 4xx HTTP).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The recipient address does not exist: the address is suppressed from then on.
    #[error("hard bounce: {0}")]
    Bounced(String),
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Receipt, SendError>> + Send + 'a>>;

pub trait Channel: Send + Sync {
    fn kind(&self) -> kizuna_messaging::Channel;
    fn send<'a>(&'a self, message: &'a Outgoing) -> SendFuture<'a>;
}

/// Spaces sends to at most `per_second` (providers throttle and then block senders that burst).
pub struct RateLimit {
    interval: Option<Duration>,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimit {
    pub fn per_second(per_second: f64) -> RateLimit {
        let interval = (per_second.is_finite() && per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second));
        RateLimit { interval, next: tokio::sync::Mutex::new(Instant::now()) }
    }

    pub async fn wait(&self) {
        let Some(interval) = self.interval else { return };
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}
