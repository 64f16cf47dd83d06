//! Email over SMTP with lettre: pooled connections, STARTTLS or implicit TLS, auth, a send rate, and the
//! headers mailbox providers require of bulk senders (RFC 8058 one-click unsubscribe on marketing mail).

use crate::{Channel, Outgoing, RateLimit, Receipt, SendError, SendFuture};
use kizuna_messaging::{Purpose, Rendered};
use lettre::Message;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

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
    /// A PEM file with an extra root certificate to trust (a private relay's own CA).
    #[serde(default)]
    pub ca_file: Option<String>,
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

/// Email over SMTP. Connections are pooled here rather than in lettre's transport so each socket gets
/// TCP_NODELAY: lettre writes the end-of-data marker as its own small write, which Nagle's algorithm holds back
/// until the server's delayed ACK (~40 ms) — one message per 40 ms per connection. lettre still speaks the
/// protocol (EHLO, STARTTLS, AUTH, dot-stuffing).
pub struct SmtpChannel {
    settings: SmtpSettings,
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: tokio::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    rate: RateLimit,
}

/// Servers drop idle clients after a while; an older pooled connection is not trusted.
const MAX_IDLE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

fn smtp_error(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        let code = e.status().map(|c| c.to_string()).unwrap_or_default();
        // 550/551/553: the mailbox does not exist or is not accepted: a hard bounce.
        if code.starts_with("55") && code != "552" && code != "554" {
            SendError::Bounced(e.to_string())
        } else {
            SendError::Permanent(e.to_string())
        }
    } else {
        SendError::Retryable(e.to_string())
    }
}

impl SmtpChannel {
    pub fn new(settings: &SmtpSettings) -> Result<SmtpChannel, String> {
        let from: Mailbox = settings.from.parse().map_err(|e| format!("from: {e}"))?;
        let reply_to = match &settings.reply_to {
            Some(r) => Some(r.parse().map_err(|e| format!("reply_to: {e}"))?),
            None => None,
        };
        let tls = match settings.tls {
            SmtpTls::None => None,
            SmtpTls::Starttls | SmtpTls::Tls => {
                let mut builder = TlsParameters::builder(settings.host.clone());
                if let Some(path) = &settings.ca_file {
                    let pem = std::fs::read(path).map_err(|e| format!("ca_file {path}: {e}"))?;
                    let certificate = lettre::transport::smtp::client::Certificate::from_pem(&pem)
                        .map_err(|e| format!("ca_file {path}: {e}"))?;
                    builder = builder.add_root_certificate(certificate);
                }
                Some(builder.build().map_err(|e| format!("tls: {e}"))?)
            }
        };
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.clone())),
            _ => None,
        };
        Ok(SmtpChannel {
            settings: settings.clone(),
            tls,
            credentials,
            hello: ClientId::default(),
            idle: tokio::sync::Mutex::new(Vec::new()),
            from,
            reply_to,
            rate: RateLimit::per_second(settings.rate_per_second),
        })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let address = (self.settings.host.as_str(), self.settings.port);
        let mut connection = match (self.settings.tls, &self.tls) {
            // Implicit TLS: lettre opens the socket (no TCP_NODELAY there; TLS records batch the writes anyway).
            (SmtpTls::Tls, Some(tls)) => {
                AsyncSmtpConnection::connect_tokio1(address, Some(TIMEOUT), &self.hello, Some(tls.clone()), None)
                    .await
                    .map_err(smtp_error)?
            }
            _ => {
                let tcp = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(address))
                    .await
                    .map_err(|_| SendError::Retryable(format!("connecting to {} timed out", self.settings.host)))?
                    .map_err(|e| SendError::Retryable(format!("cannot connect to {}: {e}", self.settings.host)))?;
                tcp.set_nodelay(true).map_err(|e| SendError::Retryable(e.to_string()))?;
                let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(smtp_error)?;
                if let (SmtpTls::Starttls, Some(tls)) = (self.settings.tls, &self.tls) {
                    connection.starttls(tls.clone(), &self.hello).await.map_err(smtp_error)?;
                }
                connection
            }
        };
        if let Some(credentials) = &self.credentials {
            connection.auth(&[Mechanism::Plain, Mechanism::Login], credentials).await.map_err(smtp_error)?;
        }
        Ok(connection)
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some((connection, since)) = self.idle.lock().await.pop() {
            if since.elapsed() < MAX_IDLE && !connection.has_broken() {
                return Ok(connection);
            }
        }
        self.connect().await
    }

    async fn checkin(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().await;
        if idle.len() < self.settings.pool_size.max(1) as usize && !connection.has_broken() {
            idle.push((connection, Instant::now()));
        }
    }

    /// Opens a connection and says hello: the settings page's "test connection".
    pub async fn test_connection(&self) -> Result<(), String> {
        let mut connection = self.connect().await.map_err(|e| e.to_string())?;
        if connection.test_connected().await {
            let _ = connection.quit().await;
            Ok(())
        } else {
            Err("the server did not answer NOOP".into())
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
            // Bounds the whole exchange: a server that stops answering (or lettre waiting on one after a refused
            // AUTH — seen with aiosmtpd, until its 300 s idle timeout) must not hold a send slot.
            tokio::time::timeout(SEND_TIMEOUT, self.deliver(&email)).await.map_err(|_| {
                SendError::Retryable(format!(
                    "no answer from {} within {} s",
                    self.settings.host,
                    SEND_TIMEOUT.as_secs()
                ))
            })?
        })
    }
}

impl SmtpChannel {
    async fn deliver(&self, email: &Message) -> Result<Receipt, SendError> {
        let mut connection = self.checkout().await?;
        match connection.send(email.envelope(), &email.formatted()).await {
            Ok(response) => {
                self.checkin(connection).await;
                // Servers answer "250 2.0.0 Ok: queued as ABC123": keep the queue id.
                let text = response.message().collect::<Vec<_>>().join(" ");
                let id = text.rsplit(' ').next().filter(|s| !s.is_empty()).map(str::to_owned);
                Ok(Receipt { provider_id: id })
            }
            Err(e) => {
                // A refused recipient leaves the session usable (lettre sent RSET); anything else does not.
                if e.is_permanent() || e.is_transient() {
                    self.checkin(connection).await;
                }
                Err(smtp_error(e))
            }
        }
    }
}
