//! Messaging at run time. Every message is queued durably first (the outbox is also the delivery log), then a
//! worker takes what is due — most urgent priority first — passes each through the send governor, renders it,
//! hands it to its channel and records the outcome; every state change is recorded with its reason.
//!
//! Never sent twice: the state is `sending` (committed) before a message leaves, `sent` after. A crash in
//! between leaves `sending`: channels whose provider deduplicates by our key (LINE's retry key, the webhook's
//! idempotency key) are retried; email and SMS, which cannot be deduplicated at the provider, are marked
//! `failed` with the reason so a person can decide — never resent blindly, never silently lost.

mod feedback;
mod profile;

pub use feedback::attribution_sink;
pub use kizuna_channels::{LineSettings, SmsSettings, SmtpSettings, SmtpTls, WebhookSettings};

use chrono::{DateTime, Duration, Utc};
use kizuna_channels::{Channel as Transport, Outgoing, SendError};
use kizuna_identity::ProfileId;
use kizuna_messaging::governor::{Candidate, Decision, Policy, decide};
use kizuna_messaging::template::CompiledTemplate;
use kizuna_messaging::tracking::{Links, Signer};
use kizuna_messaging::{
    Channel, MessageState, Priority, ProductPicker, Purpose, RenderContext, Rendered, Renderer, TemplateDefinition,
    TemplateError,
};
use kizuna_pipeline::Pipeline;
use kizuna_store::messages::{NewMessage, StoredMessage, Suppression, Transition};
use kizuna_store::{Source, Store, StoreError};
use kizuna_types::Clock;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingSettings {
    /// The public URL of this Kizuna, for tracking and unsubscribe links.
    pub public_url: String,
    /// Store settings templates see as `store`: name, url, currency, locale, timezone.
    pub store: Value,
    pub policy: Policy,
    pub attribution: kizuna_messaging::attribution::Windows,
    pub email: Option<SmtpSettings>,
    pub sms: Option<SmsSettings>,
    pub line: Option<LineSettings>,
    pub webhook: Option<WebhookSettings>,
    /// Messages taken per worker round.
    pub batch: usize,
    /// Messages handed to providers at the same time (match the SMTP pool size: more only opens and closes
    /// extra connections).
    pub concurrency: usize,
    /// Attempts before a message that keeps failing temporarily is marked failed.
    pub max_attempts: i64,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        MessagingSettings {
            public_url: "http://127.0.0.1:8080".into(),
            store: json!({"name": "Kizuna demo store", "currency": "USD", "locale": "en-US", "timezone": "UTC"}),
            policy: Policy::default(),
            attribution: Default::default(),
            email: None,
            sms: None,
            line: None,
            webhook: None,
            batch: 500,
            concurrency: 8,
            max_attempts: 6,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template `{0}` not found")]
    TemplateNotFound(String),
    #[error("invalid template: {0}")]
    InvalidTemplate(TemplateError),
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("profile {0} not found")]
    ProfileNotFound(ProfileId),
    #[error("message `{0}` not found")]
    MessageNotFound(String),
    #[error("no {0} channel is configured")]
    ChannelNotConfigured(Channel),
    #[error("could not render: {0}")]
    Render(String),
    #[error("the link is invalid or was tampered with")]
    BadToken,
    #[error("sending failed: {0}")]
    Send(String),
}

pub type MessagingResult<T> = Result<T, MessagingError>;

fn invalid(field: &str, message: impl Into<String>) -> MessagingError {
    MessagingError::Invalid { field: field.into(), message: message.into() }
}

/// A message to queue: a template for a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub template: String,
    #[serde(deserialize_with = "profile_id_from_text")]
    pub profile_id: ProfileId,
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// The triggering event: `{name, properties, timestamp}`.
    #[serde(default)]
    pub event: Value,
    /// The same key never makes a second message (a flow step run, a campaign and person).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub flow: Option<String>,
    #[serde(default)]
    pub campaign: Option<String>,
    /// Not before this time.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
}

fn default_priority() -> Priority {
    Priority::Flow
}

fn profile_id_from_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ProfileId, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Number(n) => n.as_u64().ok_or_else(|| serde::de::Error::custom("a profile id is a positive integer")),
        _ => Err(serde::de::Error::custom("a profile id is a string of digits")),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    pub id: String,
    /// False when the idempotency key was already used: `id` is the earlier message.
    pub created: bool,
}

#[derive(Clone)]
pub struct Messenger {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: MessagingSettings,
    live: RwLock<LiveSettings>,
    renderer: Renderer,
    signer: Signer,
    channels: Mutex<HashMap<Channel, Arc<dyn Transport>>>,
    compiled: Mutex<HashMap<(String, i64), Arc<CompiledTemplate>>>,
    feedback: Mutex<Option<(Pipeline, Source)>>,
    wake: tokio::sync::Notify,
    stopped: std::sync::atomic::AtomicBool,
}

const TEMPLATE_NAME_MAX: usize = 64;

/// What the admin web app may change while the server runs: the store as templates see it (name, url, currency,
/// locale, time zone) and the sending policy (quiet hours, caps, opt-in rule, default zone). Kept in the data
/// directory once edited; from then on it takes precedence over the config file's `[messaging]` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSettings {
    pub store: Value,
    pub policy: Policy,
}

const LIVE_SETTINGS_KEY: &str = "live_settings";

impl LiveSettings {
    /// Checks every field a person can get wrong in the settings form; the error names the field.
    pub fn validate(&self) -> MessagingResult<()> {
        self.policy.validate().map_err(|(field, message)| invalid(&format!("policy.{field}"), message))?;
        let Some(store) = self.store.as_object() else {
            return Err(invalid("store", "the store settings are an object: name, url, currency, locale, timezone"));
        };
        let text = |key: &str| store.get(key).and_then(Value::as_str);
        if store.get("currency").is_some()
            && !text("currency").is_some_and(|c| c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()))
        {
            return Err(invalid("store.currency", "an ISO 4217 code such as JPY, USD or EUR"));
        }
        if store.get("timezone").is_some() && text("timezone").is_none_or(|z| z.parse::<chrono_tz::Tz>().is_err()) {
            return Err(invalid("store.timezone", "an IANA time zone such as Asia/Tokyo"));
        }
        let locale_ok = |l: &str| {
            (2..=35).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        };
        if store.get("locale").is_some() && !text("locale").is_some_and(locale_ok) {
            return Err(invalid("store.locale", "a language tag such as ja-JP or en-US"));
        }
        Ok(())
    }
}

impl Messenger {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: MessagingSettings,
        picker: Arc<dyn ProductPicker>,
    ) -> MessagingResult<Messenger> {
        settings.policy.validate().map_err(|(field, message)| invalid(&format!("policy.{field}"), message))?;
        let mut live = LiveSettings { store: settings.store.clone(), policy: settings.policy.clone() };
        if let Some(raw) = store.messages().setting(LIVE_SETTINGS_KEY)? {
            match serde_json::from_str::<LiveSettings>(&raw) {
                Ok(saved) if saved.validate().is_ok() => live = saved,
                _ => tracing::warn!("the settings saved from the admin app are unreadable; using the config file's"),
            }
        }
        let fresh = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let secret = store.messages().setting_or_insert("tracking_secret", &fresh)?;
        let mut channels: HashMap<Channel, Arc<dyn Transport>> = HashMap::new();
        if let Some(email) = &settings.email {
            let smtp = kizuna_channels::SmtpChannel::new(email).map_err(|m| invalid("email", m))?;
            channels.insert(Channel::Email, Arc::new(smtp));
        }
        if let Some(sms) = &settings.sms {
            channels.insert(Channel::Sms, Arc::new(kizuna_channels::SmsChannel::new(sms.clone())));
        }
        if let Some(line) = &settings.line {
            channels.insert(Channel::Line, Arc::new(kizuna_channels::LineChannel::new(line.clone())));
        }
        if let Some(webhook) = &settings.webhook {
            channels.insert(Channel::Webhook, Arc::new(kizuna_channels::WebhookChannel::new(webhook.clone())));
        }
        Ok(Messenger {
            inner: Arc::new(Inner {
                store,
                clock,
                settings,
                live: RwLock::new(live),
                renderer: Renderer::new(picker),
                signer: Signer::new(secret.as_bytes()),
                channels: Mutex::new(channels),
                compiled: Mutex::new(HashMap::new()),
                feedback: Mutex::new(None),
                wake: tokio::sync::Notify::new(),
                stopped: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Replaces (or adds) the transport for its channel.
    pub fn set_channel(&self, transport: Arc<dyn Transport>) {
        self.inner.channels.lock().insert(transport.kind(), transport);
    }

    /// Where tracking events (opens, clicks, unsubscribes, bounces) are recorded, as `source`.
    pub fn set_feedback(&self, pipeline: Pipeline, source: Source) {
        *self.inner.feedback.lock() = Some((pipeline, source));
    }

    /// The settings from the config file (channels, public URL…). The store and policy in force are
    /// [`Messenger::live_settings`].
    pub fn settings(&self) -> &MessagingSettings {
        &self.inner.settings
    }

    /// The store and sending policy in force now.
    pub fn live_settings(&self) -> LiveSettings {
        self.inner.live.read().clone()
    }

    /// Checks, stores and applies new store settings and policy; messages decided from now on follow them.
    pub fn update_live_settings(&self, next: LiveSettings) -> MessagingResult<LiveSettings> {
        next.validate()?;
        let raw = serde_json::to_string(&next).map_err(|e| invalid("settings", e.to_string()))?;
        self.inner.store.messages().set_setting(LIVE_SETTINGS_KEY, &raw)?;
        *self.inner.live.write() = next.clone();
        Ok(next)
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    // ---- templates ---------------------------------------------------------------------------------------

    pub fn check_template(&self, definition: &TemplateDefinition) -> MessagingResult<()> {
        self.inner.renderer.compile(definition).map(|_| ()).map_err(MessagingError::InvalidTemplate)
    }

    /// Saves a new version of a template after checking it compiles.
    pub fn save_template(&self, name: &str, definition: &TemplateDefinition) -> MessagingResult<i64> {
        let valid_name = !name.is_empty()
            && name.len() <= TEMPLATE_NAME_MAX
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid_name {
            return Err(invalid("name", "use 1 to 64 lower-case letters, digits, `_` or `-`"));
        }
        self.check_template(definition)?;
        let json = serde_json::to_value(definition).map_err(|e| invalid("definition", e.to_string()))?;
        Ok(self.inner.store.messages().save_template(name, &json, self.now())?)
    }

    /// The compiled template and its version: the current one, or the given one (then straight from the cache
    /// when it is there — the worker asks for every message it sends).
    fn compiled(&self, name: &str, version: Option<i64>) -> MessagingResult<(Arc<CompiledTemplate>, i64)> {
        if let Some(version) = version
            && let Some(hit) = self.inner.compiled.lock().get(&(name.to_owned(), version))
        {
            return Ok((hit.clone(), version));
        }
        let stored = self
            .inner
            .store
            .messages()
            .template(name, version)?
            .ok_or_else(|| MessagingError::TemplateNotFound(name.to_owned()))?;
        let key = (stored.name.clone(), stored.version);
        if let Some(hit) = self.inner.compiled.lock().get(&key) {
            return Ok((hit.clone(), stored.version));
        }
        let definition: TemplateDefinition = serde_json::from_value(stored.definition)
            .map_err(|e| MessagingError::Render(format!("stored template {name} is unreadable: {e}")))?;
        let compiled = Arc::new(self.inner.renderer.compile(&definition).map_err(MessagingError::InvalidTemplate)?);
        self.inner.compiled.lock().insert(key, compiled.clone());
        Ok((compiled, stored.version))
    }

    // ---- rendering ---------------------------------------------------------------------------------------

    /// The recipient's template data moves into the context: it was built for this one message.
    fn context(&self, profile: Option<profile::Recipient>, event: Value, message_id: &str) -> RenderContext {
        let links = Links { signer: &self.inner.signer, base_url: &self.inner.settings.public_url, message_id };
        let (profile, profile_computed, timezone, locale) = match profile {
            Some(p) => (p.template_data, p.computed, p.timezone, p.locale),
            None => (json!({}), None, None, None),
        };
        let (unsubscribe_url, preferences_url) = links.unsubscribe_urls();
        RenderContext {
            profile,
            event,
            store: self.inner.live.read().store.clone(),
            recipient: json!({"timezone": timezone, "locale": locale}),
            message: json!({
                "id": message_id,
                "unsubscribe_url": unsubscribe_url,
                "preferences_url": preferences_url,
            }),
            now: self.now().to_rfc3339(),
            profile_computed,
        }
    }

    /// Renders and adds tracking: links become click redirects, email gets the open pixel.
    fn render_tracked(
        &self,
        template: &CompiledTemplate,
        context: RenderContext,
        message_id: &str,
    ) -> MessagingResult<Rendered> {
        let rendered =
            self.inner.renderer.render(template, context).map_err(|e| MessagingError::Render(e.to_string()))?;
        let links = Links { signer: &self.inner.signer, base_url: &self.inner.settings.public_url, message_id };
        Ok(match rendered {
            Rendered::Email { subject, preheader, html, text } => {
                Rendered::Email { subject, preheader, html: links.track_html(&html), text: links.track_text(&text) }
            }
            Rendered::Sms { body } => Rendered::Sms { body: links.track_text(&body) },
            // LINE opens only https links: wrap them only when this Kizuna is reachable over https.
            Rendered::Line { mut messages } if self.inner.settings.public_url.starts_with("https://") => {
                for message in &mut messages {
                    track_line_links(message, &links);
                }
                Rendered::Line { messages }
            }
            other => other,
        })
    }

    /// Renders a template (saved, or a draft definition) for a real profile or sample data, without sending.
    pub fn preview(
        &self,
        template: Result<&str, &TemplateDefinition>,
        profile_id: Option<ProfileId>,
        event: &Value,
    ) -> MessagingResult<Rendered> {
        let compiled = match template {
            Ok(name) => self.compiled(name, None)?.0,
            Err(definition) => {
                Arc::new(self.inner.renderer.compile(definition).map_err(MessagingError::InvalidTemplate)?)
            }
        };
        let recipient = match profile_id {
            Some(id) => Some(self.recipient(id)?.ok_or(MessagingError::ProfileNotFound(id))?),
            None => Some(profile::Recipient::sample()),
        };
        let context = self.context(recipient, event.clone(), "preview");
        self.inner.renderer.render(&compiled, context).map_err(|e| MessagingError::Render(e.to_string()))
    }

    fn recipient(&self, id: ProfileId) -> MessagingResult<Option<profile::Recipient>> {
        Ok(self.live_recipient(id)?.map(|(_, recipient)| recipient))
    }

    /// Reads a round's people, whether their addresses are suppressed and their recent marketing sends (caps) in
    /// one read transaction each instead of up to three per message. A read transaction that begins after a
    /// commit starts with an empty page cache, so one per message read each person's b-tree path from the OS
    /// again while ingestion and the flow engine committed. Whoever is not found here (merged away since the
    /// message was queued, or gone) is resolved message by message, as before.
    fn round_reads(&self, due: &[StoredMessage], now: DateTime<Utc>) -> MessagingResult<RoundReads> {
        let ids: Vec<ProfileId> = due.iter().filter_map(|m| m.profile_id).collect();
        let recipients: HashMap<ProfileId, profile::Recipient> = self
            .inner
            .store
            .profiles(&ids)?
            .into_iter()
            .map(|(id, found)| (id, profile::Recipient::of(found)))
            .collect();
        let keys: Vec<(&'static str, String)> = due
            .iter()
            .filter_map(|m| {
                let channel = Channel::parse(&m.channel).filter(|c| c.reaches_a_person())?;
                Some((channel.as_str(), recipients.get(&m.profile_id?)?.address(channel)?))
            })
            .collect();
        let asked: Vec<(&str, &str)> = keys.iter().map(|(channel, address)| (*channel, address.as_str())).collect();
        let mut suppressions: HashMap<(String, String), Option<Suppression>> =
            keys.iter().map(|(channel, address)| (((*channel).to_owned(), address.clone()), None)).collect();
        for found in self.inner.store.messages().suppressions_of(&asked)? {
            suppressions.insert((found.channel.clone(), found.address.clone()), Some(found));
        }
        let mut capped: HashMap<Channel, Vec<ProfileId>> = HashMap::new();
        for m in due.iter().filter(|m| m.purpose == Purpose::Marketing.as_str()) {
            if let (Some(channel), Some(profile)) = (Channel::parse(&m.channel), m.profile_id)
                && recipients.contains_key(&profile)
            {
                capped.entry(channel).or_default().push(profile);
            }
        }
        let mut sent_times = HashMap::new();
        for (channel, people) in capped {
            let lookback = self.inner.live.read().policy.lookback(channel);
            if lookback <= Duration::zero() {
                continue;
            }
            let mut found = self.inner.store.messages().sent_times_of(
                &people,
                channel.as_str(),
                Purpose::Marketing.as_str(),
                now - lookback,
            )?;
            for profile in people {
                sent_times.insert((profile, channel), found.remove(&profile).unwrap_or_default());
            }
        }
        Ok(RoundReads { recipients, suppressions, sent_times })
    }

    /// The person a message queued for `id` is for now, and their profile id.
    fn live_recipient(&self, id: ProfileId) -> MessagingResult<Option<(ProfileId, profile::Recipient)>> {
        if let Some(found) = self.inner.store.profile(id)? {
            return Ok(Some((id, profile::Recipient::of(found))));
        }
        // Merged away since the message was queued: it goes to the person they are part of now.
        match self.inner.store.live_profile_id(id)? {
            Some(live) if live != id => Ok(self.inner.store.profile(live)?.map(|p| (live, profile::Recipient::of(p)))),
            _ => Ok(None),
        }
    }

    // ---- queueing ----------------------------------------------------------------------------------------

    /// Messages due and not yet handed to a channel, counted up to `cap`.
    pub fn backlog(&self, cap: usize) -> MessagingResult<usize> {
        Ok(self.inner.store.messages().backlog(self.now(), cap)?)
    }

    /// Whether a template of this name exists.
    pub fn template_exists(&self, name: &str) -> MessagingResult<bool> {
        Ok(self.inner.store.messages().template(name, None)?.is_some())
    }

    /// Queues messages durably (one transaction); they are sent by the worker. A profile that does not exist
    /// is refused; one merged away is queued for the person it is part of now.
    pub fn enqueue(&self, requests: &[SendRequest]) -> MessagingResult<Vec<Queued>> {
        let profiles: Vec<ProfileId> = requests.iter().map(|r| r.profile_id).collect();
        let live_ids = self.inner.store.live_profile_ids(&profiles)?;
        self.queue(requests, Some(&live_ids))
    }

    /// [`Messenger::enqueue`] for a caller that keeps its people's ids current itself (the flow engine
    /// follows merges and erasures): no read of every person first. Whoever is gone by the time of sending
    /// is suppressed as `profile_gone`, and a merged-away id reaches the survivor, as for any message.
    pub fn enqueue_for_known_profiles(&self, requests: &[SendRequest]) -> MessagingResult<Vec<Queued>> {
        self.queue(requests, None)
    }

    fn queue(
        &self,
        requests: &[SendRequest],
        live_ids: Option<&HashMap<ProfileId, Option<ProfileId>>>,
    ) -> MessagingResult<Vec<Queued>> {
        let now = self.now();
        let mut rows = Vec::with_capacity(requests.len());
        // A flow round queues thousands of messages of one or two templates: read each template once.
        let mut templates: HashMap<&str, (Arc<CompiledTemplate>, i64)> = HashMap::new();
        for (i, request) in requests.iter().enumerate() {
            let field = |f: &str| if requests.len() == 1 { f.to_owned() } else { format!("messages[{i}].{f}") };
            let (compiled, version) = match templates.get(request.template.as_str()) {
                Some(found) => found.clone(),
                None => {
                    let found = self.compiled(&request.template, None).map_err(|e| match e {
                        MessagingError::TemplateNotFound(_) => invalid(&field("template"), e.to_string()),
                        other => other,
                    })?;
                    templates.insert(request.template.as_str(), found.clone());
                    found
                }
            };
            let profile_id = match live_ids {
                Some(live_ids) => live_ids.get(&request.profile_id).copied().flatten().ok_or_else(|| {
                    invalid(&field("profile_id"), format!("profile {} not found", request.profile_id))
                })?,
                None => request.profile_id,
            };
            if !(request.event.is_null() || request.event.is_object()) {
                return Err(invalid(&field("event"), "the event is an object"));
            }
            let definition = &compiled.definition;
            rows.push(NewMessage {
                id: message_id(),
                idempotency_key: request.idempotency_key.clone(),
                profile_id: Some(profile_id),
                channel: definition.content.channel().as_str().into(),
                purpose: definition.purpose.as_str().into(),
                priority: if definition.purpose == Purpose::Transactional {
                    Priority::Transactional.rank()
                } else {
                    request.priority.rank()
                },
                template: request.template.clone(),
                template_version: version,
                flow: request.flow.clone(),
                campaign: request.campaign.clone(),
                context: json!({"event": request.event}),
                recipient: None,
                test: false,
                due_at: request.send_at.unwrap_or(now).max(now),
            });
        }
        let queued = self.inner.store.messages().enqueue(&rows, now)?;
        self.inner.wake.notify_one();
        Ok(queued.into_iter().map(|(id, created)| Queued { id, created }).collect())
    }

    /// Renders a template for a profile (or sample data) and sends it at once to `to`, outside the governor:
    /// the "send a test" button. Recorded in the log as a test.
    pub async fn send_test(&self, template: &str, to: &str, profile_id: Option<ProfileId>) -> MessagingResult<String> {
        let (compiled, version) = self.compiled(template, None)?;
        let channel = compiled.definition.content.channel();
        let transport = self.transport(channel)?;
        let recipient = match profile_id {
            Some(id) => self.recipient(id)?.ok_or(MessagingError::ProfileNotFound(id))?,
            None => profile::Recipient::sample(),
        };
        let id = message_id();
        let context = self.context(Some(recipient), Value::Null, &id);
        let rendered = self.render_tracked(&compiled, context, &id)?;
        let now = self.now();
        self.inner.store.messages().enqueue(
            &[NewMessage {
                id: id.clone(),
                idempotency_key: None,
                profile_id,
                channel: channel.as_str().into(),
                purpose: compiled.definition.purpose.as_str().into(),
                priority: Priority::Transactional.rank(),
                template: template.into(),
                template_version: version,
                flow: None,
                campaign: None,
                context: json!({"test": true}),
                recipient: Some(to.into()),
                test: true,
                // Never picked up by the worker: it is sent right here.
                due_at: now + Duration::days(36500),
            }],
            now,
        )?;
        let outgoing = Outgoing {
            message_id: id.clone(),
            to: to.to_owned(),
            purpose: compiled.definition.purpose,
            unsubscribe_url: Some(
                Links { signer: &self.inner.signer, base_url: &self.inner.settings.public_url, message_id: &id }
                    .unsubscribe_url(),
            ),
            rendered,
        };
        let outcome = transport.send(&outgoing).await;
        // A test is sent once: a temporary failure is reported, not retried later.
        let transition = outcome_transition(&id, to, outcome.clone(), 0, 1, now);
        self.inner.store.messages().record(&[transition], self.now())?;
        outcome.map(|_| id).map_err(|e| MessagingError::Send(e.to_string()))
    }

    fn transport(&self, channel: Channel) -> MessagingResult<Arc<dyn Transport>> {
        self.inner.channels.lock().get(&channel).cloned().ok_or(MessagingError::ChannelNotConfigured(channel))
    }

    // ---- the worker --------------------------------------------------------------------------------------

    /// After a restart: settles messages a crash left in `sending` (see the crate docs).
    pub fn recover(&self) -> MessagingResult<usize> {
        let stuck = self.inner.store.messages().sending_messages()?;
        let transitions: Vec<Transition> = stuck
            .iter()
            .map(|m| {
                let idempotent = matches!(Channel::parse(&m.channel), Some(Channel::Line | Channel::Webhook));
                if idempotent {
                    transition(&m.id, MessageState::Queued, "resumed after a restart: the provider deduplicates by the message id")
                } else {
                    transition(
                        &m.id,
                        MessageState::Failed,
                        "interrupted: the server stopped while handing it over; the outcome is unknown, so it is not resent (retry it to send anyway)",
                    )
                }
            })
            .collect();
        self.inner.store.messages().record(&transitions, self.now())?;
        Ok(transitions.len())
    }

    /// Drops the messages still waiting to go whose idempotency key starts with one of `key_prefixes` (a flow
    /// run that ended before they went out); returns how many.
    pub fn withdraw(&self, key_prefixes: &[String], reason: &str) -> MessagingResult<usize> {
        Ok(self.inner.store.messages().withdraw(key_prefixes, reason, self.now())?)
    }

    /// Puts a failed or dropped message back in the queue.
    pub fn retry(&self, id: &str) -> MessagingResult<()> {
        let message =
            self.inner.store.messages().message(id)?.ok_or_else(|| MessagingError::MessageNotFound(id.into()))?;
        if message.erased_at.is_some() {
            return Err(invalid("id", "the person this message was for was erased"));
        }
        if !matches!(message.state.as_str(), "failed" | "dropped" | "suppressed") {
            return Err(invalid(
                "state",
                format!("only failed, dropped or suppressed messages are retried (this one is {})", message.state),
            ));
        }
        let mut t = transition(id, MessageState::Queued, "retry requested");
        t.due_at = Some(self.now());
        self.inner.store.messages().record(&[t], self.now())?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// One round: takes due messages, decides, sends, records. Returns how many it took.
    pub async fn process_due(&self) -> MessagingResult<usize> {
        let now = self.now();
        let due = self.inner.store.messages().due_messages(now, self.inner.settings.batch.max(1))?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut settled = Vec::new();
        let mut sending = Vec::new();
        let mut to_send = Vec::new();
        // Sends decided earlier in this round count against caps too (they are not committed as sent yet).
        let mut this_round: HashMap<(ProfileId, String), Vec<DateTime<Utc>>> = HashMap::new();
        let mut reads = self.round_reads(&due, now)?;
        for message in &due {
            // Keyed by the person the message is for now (merges since it was queued followed).
            let earlier =
                |live: ProfileId| this_round.get(&(live, message.channel.clone())).cloned().unwrap_or_default();
            match self.prepare(message, now, &earlier, &mut reads) {
                Ok(Prepared::Settled(t)) => settled.push(t),
                Ok(Prepared::Send(outgoing, transport, profile)) => {
                    if message.purpose == Purpose::Marketing.as_str() {
                        this_round.entry((profile, message.channel.clone())).or_default().push(now);
                    }
                    let mut t = transition(&message.id, MessageState::Sending, "allowed by the governor");
                    t.recipient = Some(outgoing.to.clone());
                    t.profile = (message.profile_id != Some(profile)).then_some(profile);
                    sending.push(t);
                    to_send.push((message.attempts, outgoing, transport, profile));
                }
                Err(e) => settled.push(transition(&message.id, MessageState::Failed, &e.to_string())),
            }
        }
        // The round read its messages before deciding: one withdrawn (its flow run ended) or erased since keeps
        // that state, and is not sent.
        for t in settled.iter_mut().chain(sending.iter_mut()) {
            t.claim = true;
        }
        let first_send = settled.len();
        settled.extend(sending);
        // Durable before anything leaves: a crash from here on is settled by `recover`.
        let applied = self.inner.store.messages().record(&settled, now)?;
        let lost: HashSet<&str> = settled[first_send..]
            .iter()
            .zip(&applied[first_send..])
            .filter(|(_, applied)| !**applied)
            .map(|(t, _)| t.id.as_str())
            .collect();
        to_send.retain(|(_, outgoing, _, _)| !lost.contains(outgoing.message_id.as_str()));
        // A merge committed after a message's person was resolved above but before it was recorded as sending
        // found it still queued and did not move it (merges move sent and sending messages): resolve again now,
        // when any later merge will move it, and record the result with the outcome.
        // An erasure committed in between means the message does not go at all.
        let resolved: Vec<ProfileId> = to_send.iter().map(|(_, _, _, profile)| *profile).collect();
        let live_now =
            if resolved.is_empty() { HashMap::new() } else { self.inner.store.live_profile_ids(&resolved)? };
        let mut tasks = tokio::task::JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.inner.settings.concurrency.max(1)));
        let mut outcomes = Vec::new();
        for (attempts, outgoing, transport, profile) in to_send {
            let Some(live) = live_now.get(&profile).copied().unwrap_or(Some(profile)) else {
                let mut t = transition(&outgoing.message_id, MessageState::Suppressed, GONE);
                t.forget = true;
                outcomes.push(t);
                continue;
            };
            let slots = slots.clone();
            let moved = (live != profile).then_some(live);
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let outcome = transport.send(&outgoing).await;
                (attempts, outgoing, outcome, moved)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((attempts, outgoing, outcome, moved)) = joined else { continue };
            if let Err(SendError::Bounced(detail)) = &outcome {
                let channel = outgoing.rendered_channel();
                self.inner.store.messages().suppress(channel.as_str(), &outgoing.to, "hard_bounce", self.now())?;
                tracing::info!(message = %outgoing.message_id, %detail, "hard bounce: address suppressed");
            }
            let mut t = outcome_transition(
                &outgoing.message_id,
                &outgoing.to,
                outcome,
                attempts,
                self.inner.settings.max_attempts,
                self.now(),
            );
            t.profile = moved;
            outcomes.push(t);
        }
        self.inner.store.messages().record(&outcomes, self.now())?;
        Ok(due.len())
    }

    /// The governor's decision for a message, and what sending it needs when it may go.
    fn gate(
        &self,
        message: &StoredMessage,
        now: DateTime<Utc>,
        earlier_this_round: &dyn Fn(ProfileId) -> Vec<DateTime<Utc>>,
        reads: &mut RoundReads,
    ) -> MessagingResult<(Decision, Option<Gated>)> {
        let channel = Channel::parse(&message.channel).ok_or_else(|| invalid("channel", "unknown channel"))?;
        let purpose = Purpose::parse(&message.purpose).unwrap_or(Purpose::Marketing);
        let priority = Priority::ALL.into_iter().find(|p| p.rank() == message.priority).unwrap_or(Priority::Campaign);
        let Some(profile_id) = message.profile_id else {
            return Err(invalid("profile_id", "a queued message needs a profile"));
        };
        let found = match reads.recipients.remove(&profile_id) {
            Some(recipient) => Some((profile_id, recipient)),
            None => self.live_recipient(profile_id)?,
        };
        let Some((profile_id, recipient)) = found else {
            return Ok((Decision::Suppress { reason: GONE.into() }, None));
        };
        let address = match channel {
            Channel::Webhook => self.inner.settings.webhook.as_ref().map(|w| w.url.clone()),
            other => recipient.address(other),
        };
        let suppressed = match &address {
            Some(address) if channel.reaches_a_person() => {
                let key = (channel.as_str().to_owned(), address.clone());
                match reads.suppressions.get(&key) {
                    Some(known) => known.clone(),
                    None => self.inner.store.messages().suppression(channel.as_str(), address)?,
                }
                .filter(|s| {
                    // A hard bounce stops everything; unsubscribes and complaints stop marketing only.
                    purpose == Purpose::Marketing || s.reason == "hard_bounce"
                })
            }
            _ => None,
        };
        let lookback = self.inner.live.read().policy.lookback(channel);
        let sends = if purpose == Purpose::Marketing && lookback > Duration::zero() {
            let mut sends = match reads.sent_times.get(&(profile_id, channel)) {
                Some(known) => known.clone(),
                None => self.inner.store.messages().sent_times(
                    profile_id,
                    channel.as_str(),
                    purpose.as_str(),
                    now - lookback,
                )?,
            };
            sends.extend(earlier_this_round(profile_id));
            sends
        } else {
            Vec::new()
        };
        let (compiled, _) = self.compiled(&message.template, Some(message.template_version))?;
        let topic_unsubscribed = compiled
            .definition
            .topic
            .as_ref()
            .is_some_and(|topic| recipient.unsubscribed_topics.iter().any(|t| t == topic));
        let candidate = Candidate {
            channel,
            purpose,
            priority,
            has_address: address.is_some(),
            consent: recipient.consent(channel, purpose),
            suppressed: suppressed.as_ref().map(|s| s.reason.as_str()),
            topic_unsubscribed,
            timezone: recipient.timezone.as_deref(),
            recent_sends: &sends,
            created_at: message.created_at,
        };
        let decision = decide(&self.inner.live.read().policy, &candidate, now);
        Ok((decision, Some(Gated { channel, purpose, profile: profile_id, recipient, address, compiled })))
    }

    /// What the governor would decide for this template and person at `at`, had they also been sent
    /// messages at `earlier` (a flow replay's own sends): nothing is queued or sent.
    pub fn dry_run(
        &self,
        template: &str,
        profile_id: ProfileId,
        at: DateTime<Utc>,
        earlier: &[DateTime<Utc>],
    ) -> MessagingResult<Decision> {
        let (compiled, version) = self.compiled(template, None)?;
        let definition = &compiled.definition;
        let rank = if definition.purpose == Purpose::Transactional {
            Priority::Transactional.rank()
        } else {
            Priority::Flow.rank()
        };
        let message = StoredMessage {
            id: String::new(),
            idempotency_key: None,
            profile_id: Some(profile_id),
            channel: definition.content.channel().as_str().into(),
            purpose: definition.purpose.as_str().into(),
            priority: rank,
            template: template.into(),
            template_version: version,
            flow: None,
            campaign: None,
            context: Value::Null,
            recipient: None,
            state: "queued".into(),
            reason: None,
            due_at: at,
            attempts: 0,
            provider_id: None,
            test: false,
            created_at: at,
            updated_at: at,
            sent_at: None,
            opened_at: None,
            clicked_at: None,
            erased_at: None,
        };
        Ok(self.gate(&message, at, &|_| earlier.to_vec(), &mut RoundReads::default())?.0)
    }

    fn prepare(
        &self,
        message: &StoredMessage,
        now: DateTime<Utc>,
        earlier_this_round: &dyn Fn(ProfileId) -> Vec<DateTime<Utc>>,
        reads: &mut RoundReads,
    ) -> MessagingResult<Prepared> {
        let (decision, gated) = self.gate(message, now, earlier_this_round, reads)?;
        // Records whom the message is for when a merge since it was queued changed that (queued messages keep
        // the profile they were queued for; see migration 14).
        let moved = gated.as_ref().map(|g| g.profile).filter(|live| message.profile_id != Some(*live));
        let settled = |mut t: Transition| {
            t.profile = moved;
            Ok(Prepared::Settled(t))
        };
        match decision {
            Decision::Send => {}
            Decision::Defer { until, reason } => {
                let mut t = transition(&message.id, MessageState::Deferred, &reason);
                t.due_at = Some(until);
                return settled(t);
            }
            Decision::Drop { reason } => return settled(transition(&message.id, MessageState::Dropped, &reason)),
            Decision::Suppress { reason } => {
                let mut t = transition(&message.id, MessageState::Suppressed, &reason);
                // Nobody to send to any more (erased, or left without identifiers): the message keeps nothing of
                // them, also when it was queued after messaging followed the erasure.
                t.forget = gated.is_none();
                return settled(t);
            }
        }
        let Some(Gated { channel, purpose, profile, recipient, address, compiled }) = gated else {
            return Ok(Prepared::Settled(transition(&message.id, MessageState::Suppressed, "profile_gone")));
        };
        let Ok(transport) = self.transport(channel) else {
            return settled(transition(
                &message.id,
                MessageState::Failed,
                &format!("no {channel} channel is configured"),
            ));
        };
        let event = message.context.get("event").cloned().unwrap_or(Value::Null);
        let context = self.context(Some(recipient), event, &message.id);
        let unsubscribe_url = context.message.get("unsubscribe_url").and_then(Value::as_str).map(str::to_owned);
        let rendered = match self.render_tracked(&compiled, context, &message.id) {
            Ok(r) => r,
            Err(e) => return settled(transition(&message.id, MessageState::Failed, &format!("render_error: {e}"))),
        };
        Ok(Prepared::Send(
            Outgoing {
                message_id: message.id.clone(),
                to: address.unwrap_or_default(),
                purpose,
                rendered,
                unsubscribe_url,
            },
            transport,
            profile,
        ))
    }

    /// Runs the worker until [`Messenger::stop`]: a round whenever messages are queued, and at least every
    /// `idle` to pick up deferred ones.
    pub fn spawn_worker(&self, idle: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        if let Err(e) = me.recover() {
            tracing::error!(error = %e, "could not settle messages left in sending");
        }
        tokio::spawn(async move {
            while !me.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                match me.process_due().await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "messaging round failed"),
                }
                let _ = tokio::time::timeout(idle, me.inner.wake.notified()).await;
            }
        })
    }

    pub fn stop(&self) {
        self.inner.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn signer(&self) -> &Signer {
        &self.inner.signer
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub(crate) fn feedback(&self) -> Option<(Pipeline, Source)> {
        self.inner.feedback.lock().clone()
    }
}

/// Wraps the links of a LINE message (text URLs, button and action `uri`s) in click redirects.
fn track_line_links(value: &mut Value, links: &Links<'_>) {
    match value {
        Value::Object(map) => {
            let is_text = map.get("type").and_then(Value::as_str) == Some("text");
            for (key, child) in map.iter_mut() {
                match (key.as_str(), child) {
                    ("uri", Value::String(uri)) if uri.starts_with("https://") => *uri = links.click_url(uri),
                    ("text", Value::String(text)) if is_text => *text = links.track_text(text),
                    (_, child) => track_line_links(child, links),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| track_line_links(item, links)),
        _ => {}
    }
}

/// What a round of sends read up front about its people ([`Messenger::round_reads`]); empty outside a round.
#[derive(Default)]
struct RoundReads {
    /// Each person found, taken by their first message of the round (a second one reads them again).
    recipients: HashMap<ProfileId, profile::Recipient>,
    /// Every `(channel, address)` looked up, with its suppression if there is one.
    suppressions: HashMap<(String, String), Option<Suppression>>,
    /// Each person's marketing sends of a channel within its caps' lookback, for everyone looked up.
    sent_times: HashMap<(ProfileId, Channel), Vec<DateTime<Utc>>>,
}

/// A message the governor looked at, with what sending it needs.
struct Gated {
    channel: Channel,
    purpose: Purpose,
    /// The person it is for now (merges since it was queued followed).
    profile: ProfileId,
    recipient: profile::Recipient,
    address: Option<String>,
    compiled: Arc<CompiledTemplate>,
}

enum Prepared {
    Settled(Transition),
    Send(Outgoing, Arc<dyn Transport>, ProfileId),
}

trait RenderedChannel {
    fn rendered_channel(&self) -> Channel;
}

impl RenderedChannel for Outgoing {
    fn rendered_channel(&self) -> Channel {
        match self.rendered {
            Rendered::Email { .. } => Channel::Email,
            Rendered::Sms { .. } => Channel::Sms,
            Rendered::Line { .. } => Channel::Line,
            Rendered::Webhook { .. } => Channel::Webhook,
        }
    }
}

/// Time-ordered (UUIDv7): a round's new messages land side by side at the end of the id index and the
/// decision log's index instead of on random pages — with random ids every insert read a cold page once the
/// outbox outgrew the cache.
fn message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Why a message for someone no longer there is not sent.
const GONE: &str = "profile_gone: erased or left without identifiers";

fn transition(id: &str, state: MessageState, reason: &str) -> Transition {
    Transition::new(id, state.as_str(), reason)
}

/// Retries back off 1, 4, 16, 64… minutes, capped at 6 hours.
fn backoff(attempts: i64) -> Duration {
    Duration::minutes(4_i64.saturating_pow(attempts.clamp(0, 6) as u32).min(360))
}

fn outcome_transition(
    id: &str,
    to: &str,
    outcome: Result<kizuna_channels::Receipt, SendError>,
    attempts_before: i64,
    max_attempts: i64,
    now: DateTime<Utc>,
) -> Transition {
    let mut t = match &outcome {
        Ok(receipt) => {
            let mut t = transition(id, MessageState::Sent, "accepted by the provider");
            t.provider_id = receipt.provider_id.clone();
            t.sent = true;
            t
        }
        Err(SendError::Bounced(detail)) => transition(id, MessageState::Bounced, &format!("hard_bounce: {detail}")),
        Err(SendError::Permanent(detail)) => transition(id, MessageState::Failed, detail),
        Err(SendError::Retryable(detail)) if attempts_before + 1 >= max_attempts => {
            transition(id, MessageState::Failed, &format!("gave up after {} attempts: {detail}", attempts_before + 1))
        }
        Err(SendError::Retryable(detail)) => {
            let mut t = transition(id, MessageState::Deferred, &format!("retry: {detail}"));
            t.due_at = Some(now + backoff(attempts_before));
            t
        }
    };
    t.recipient = Some(to.to_owned());
    t.attempted = true;
    t
}
