//! Email over SMTP with lettre: pooled connections, STARTTLS or implicit TLS, auth, a send rate, and the
//! headers mailbox providers require of bulk senders (RFC 8058 one-click unsubscribe on marketing mail).

use crate::{Channel, Outgoing, RateLimit, Receipt, SendError, SendFuture};
use kizuna_messaging::{Purpose, Rendered};
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP (a local relay).
    None,
    /// Upgrade with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// `Brand <news@brand.example>`.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Connections kept open to the server.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// Messages per second at most (0 = unlimited).
    #[serde(default)]
    pub rate_per_second: f64,
}

fn default_port() -> u16 {
    587
}

fn default_pool() -> u32 {
    4
}

/// The domain `Message-ID`s are made in: the sender's.
fn domain_of(from: &Mailbox) -> String {
    from.email.domain().to_owned()
}

macro_rules! text_header {
    ($name:ident, $header:literal) => {
        #[derive(Debug, Clone)]
        struct $name(String);

        impl Header for $name {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($header)
            }

            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($name(s.to_owned()))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

text_header!(ListUnsubscribe, "List-Unsubscribe");
text_header!(ListUnsubscribePost, "List-Unsubscribe-Post");
text_header!(KizunaMessageId, "X-Kizuna-Message-Id");

pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    rate: RateLimit,
}

impl SmtpChannel {
    pub fn new(settings: &SmtpSettings) -> Result<SmtpChannel, String> {
        let from: Mailbox = settings.from.parse().map_err(|e| format!("from: {e}"))?;
        let reply_to = match &settings.reply_to {
            Some(r) => Some(r.parse().map_err(|e| format!("reply_to: {e}"))?),
            None => None,
        };
        let tls_parameters = || TlsParameters::new(settings.host.clone()).map_err(|e| format!("tls: {e}"));
        let tls = match settings.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(PoolConfig::new().max_size(settings.pool_size.max(1)).idle_timeout(Duration::from_secs(60)));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpChannel {
            transport: builder.build(),
            from,
            reply_to,
            rate: RateLimit::per_second(settings.rate_per_second),
        })
    }

    /// Opens a connection and says hello: the settings page's "test connection".
    pub async fn test_connection(&self) -> Result<(), String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the server did not answer NOOP".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The MIME message as it goes on the wire.
    pub fn build(&self, message: &Outgoing) -> Result<Message, SendError> {
        let Rendered::Email { subject, preheader, html, text } = &message.rendered else {
            return Err(SendError::Permanent("not an email".into()));
        };
        let to: Mailbox = message.to.parse().map_err(|e| SendError::Bounced(format!("invalid address: {e}")))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject.clone())
            .message_id(Some(format!("<{}@{}>", message.message_id, domain_of(&self.from))))
            .header(KizunaMessageId(message.message_id.clone()))
            .date_now();
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        if message.purpose == Purpose::Marketing
            && let Some(url) = &message.unsubscribe_url
        {
            builder = builder
                .header(ListUnsubscribe(format!("<{url}>")))
                .header(ListUnsubscribePost("List-Unsubscribe=One-Click".into()));
        }
        let html = match preheader.as_deref().filter(|p| !p.trim().is_empty()) {
            // The preview line inboxes show after the subject, hidden in the body itself.
            Some(p) => format!(
                "<div style=\"display:none;max-height:0;overflow:hidden;mso-hide:all\">{}</div>{html}",
                escape_html(p)
            ),
            None => html.clone(),
        };
        builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text.clone()))
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
            )
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Channel for SmtpChannel {
    fn kind(&self) -> kizuna_messaging::Channel {
        kizuna_messaging::Channel::Email
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            let email = self.build(message)?;
            self.rate.wait().await;
            match self.transport.send(email).await {
                Ok(response) => {
                    // Servers answer "250 2.0.0 Ok: queued as ABC123": keep the queue id.
                    let text = response.message().collect::<Vec<_>>().join(" ");
                    let id = text.rsplit(' ').next().filter(|s| !s.is_empty()).map(str::to_owned);
                    Ok(Receipt { provider_id: id })
                }
                Err(e) if e.is_permanent() => {
                    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
                    // 550/551/553: the mailbox does not exist or is not accepted: a hard bounce.
                    if code.starts_with("55") && code != "552" && code != "554" {
                        Err(SendError::Bounced(e.to_string()))
                    } else {
                        Err(SendError::Permanent(e.to_string()))
                    }
                }
                Err(e) => Err(SendError::Retryable(e.to_string())),
            }
        })
    }
}
