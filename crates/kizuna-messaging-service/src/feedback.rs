//! The feedback loop: opens, clicks, unsubscribes and bounces become events on the profile (so segments and
//! flows can use them), and orders are attributed to the message that earned them.

use crate::{MessagingError, MessagingResult, Messenger};
use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use kizuna_ingest::{Event, MessageType};
use kizuna_messaging::attribution::{Touch, TouchKind, Windows, attribute};
use kizuna_messaging::tracking::{Token, is_machine_open};
use kizuna_messaging::{Channel, Purpose};
use kizuna_pipeline::{Committed, FeedChange, FeedSink, PipelineError};
use kizuna_store::Store;
use kizuna_store::messages::{AttributionRow, StoredMessage};
use kizuna_types::Clock;
use serde_json::{Map, Value, json};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

fn channel_label(channel: &str) -> &'static str {
    match Channel::parse(channel) {
        Some(Channel::Email) => "Email",
        Some(Channel::Sms) => "SMS",
        Some(Channel::Line) => "LINE",
        _ => "Webhook",
    }
}

impl Messenger {
    fn token_message(&self, token: &str) -> MessagingResult<(Token, StoredMessage)> {
        let token = self.signer().verify(token).map_err(|_| MessagingError::BadToken)?;
        let message = self
            .store()
            .messages()
            .message(token.message_id())?
            .ok_or_else(|| MessagingError::MessageNotFound(token.message_id().into()))?;
        Ok((token, message))
    }

    async fn record_event(&self, profile: Option<ProfileId>, name: &str, properties: Value) -> MessagingResult<()> {
        let (Some(profile), Some((pipeline, source))) = (profile, self.feedback()) else { return Ok(()) };
        let mut body = Map::new();
        body.insert("event".into(), Value::String(name.into()));
        body.insert("properties".into(), properties);
        let event = Event::internal(MessageType::Track, body, self.clock().now());
        self.append_to_live(&pipeline, &source, profile, event)
            .await
            .map_err(|e| MessagingError::Send(format!("could not record {name}: {e}")))
    }

    /// Appends to the profile, or to the one it was merged into since the message went out; a person erased
    /// meanwhile has nothing left to record it on. A merge re-points messages a little later than it commits, and
    /// a click or unsubscribe in that window was answered as a provider failure.
    async fn append_to_live(
        &self,
        pipeline: &kizuna_pipeline::Pipeline,
        source: &kizuna_store::Source,
        profile: ProfileId,
        event: Event,
    ) -> Result<(), PipelineError> {
        if pipeline.append_to_live(profile, source, event).await?.is_none() {
            tracing::debug!(profile, "feedback for a person no longer stored; not recorded");
        }
        Ok(())
    }

    fn properties(message: &StoredMessage) -> Value {
        json!({"message_id": message.id, "template": message.template, "template_version": message.template_version,
               "flow": message.flow, "campaign": message.campaign, "channel": message.channel})
    }

    /// The open pixel was loaded.
    pub async fn open(&self, token: &str, user_agent: &str) -> MessagingResult<()> {
        let (token, message) = self.token_message(token)?;
        if !matches!(token, Token::Open { .. }) {
            return Err(MessagingError::BadToken);
        }
        let now = self.clock().now();
        let machine = is_machine_open(user_agent, message.sent_at.map(|s| (now - s).num_seconds()));
        self.store().messages().record_touch(&message.id, "open", machine, None, now)?;
        let mut properties = Self::properties(&message);
        properties["machine_open"] = json!(machine);
        self.record_event(message.profile_id, &format!("{} Opened", channel_label(&message.channel)), properties).await
    }

    /// A tracked link was followed: returns where to send the person.
    pub async fn click(&self, token: &str) -> MessagingResult<String> {
        let (token, message) = self.token_message(token)?;
        let Token::Click { u, .. } = token else { return Err(MessagingError::BadToken) };
        let now = self.clock().now();
        self.store().messages().record_touch(&message.id, "click", false, Some(&u), now)?;
        let mut properties = Self::properties(&message);
        properties["url"] = json!(u);
        self.record_event(message.profile_id, &format!("{} Link Clicked", channel_label(&message.channel)), properties)
            .await?;
        Ok(u)
    }

    /// One-click unsubscribe (RFC 8058) or the preference page's "unsubscribe from all": marketing consent on
    /// the message's channel is withdrawn and the address suppressed for marketing.
    pub async fn unsubscribe(&self, token: &str, topic: Option<&str>) -> MessagingResult<StoredMessage> {
        let (token, message) = self.token_message(token)?;
        if !matches!(token, Token::Unsubscribe { .. }) {
            return Err(MessagingError::BadToken);
        }
        let now = self.clock().now();
        let Some(profile) = message.profile_id else { return Ok(message) };
        let mut traits = Map::new();
        match topic {
            Some(topic) => {
                // Leave one topic: the others stay.
                let current = self.store().profile(profile)?.map(|p| p.state.trait_values()).unwrap_or_default();
                let mut topics: Vec<Value> =
                    current.get("unsubscribed_topics").and_then(Value::as_array).cloned().unwrap_or_default();
                if !topics.iter().any(|t| t.as_str() == Some(topic)) {
                    topics.push(json!(topic));
                }
                traits.insert("unsubscribed_topics".into(), Value::Array(topics));
            }
            None => {
                traits.insert(
                    "consent".into(),
                    json!({message.channel.clone(): {Purpose::Marketing.as_str(): "denied"}}),
                );
                if let Some(address) = &message.recipient {
                    self.store().messages().suppress(&message.channel, address, "unsubscribe", now)?;
                }
            }
        }
        self.set_traits(profile, traits, "unsubscribe link").await?;
        let mut properties = Self::properties(&message);
        properties["topic"] = json!(topic);
        self.record_event(message.profile_id, "Unsubscribed", properties).await?;
        Ok(message)
    }

    async fn set_traits(&self, profile: ProfileId, traits: Map<String, Value>, why: &str) -> MessagingResult<()> {
        let Some((pipeline, source)) = self.feedback() else {
            return Err(MessagingError::Send("preference changes need the ingest pipeline".into()));
        };
        let mut body = Map::new();
        body.insert("traits".into(), Value::Object(traits));
        body.insert("context".into(), json!({"consentSource": why}));
        self.append_to_live(
            &pipeline,
            &source,
            profile,
            Event::internal(MessageType::Identify, body, self.clock().now()),
        )
        .await
        .map_err(|e| MessagingError::Send(e.to_string()))
    }

    /// The topics of the message's channel, each with whether the recipient still gets it, and the channel.
    pub fn preferences(&self, token: &str) -> MessagingResult<(Vec<(String, bool)>, String)> {
        let (token, message) = self.token_message(token)?;
        if !matches!(token, Token::Unsubscribe { .. }) {
            return Err(MessagingError::BadToken);
        }
        let left: Vec<String> = match message.profile_id {
            Some(p) => self
                .store()
                .profile(p)?
                .and_then(|p| p.state.trait_values().get("unsubscribed_topics").cloned())
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let mut topics: Vec<String> = self
            .store()
            .messages()
            .templates()?
            .iter()
            .filter(|t| t.definition.get("channel").and_then(Value::as_str) == Some(message.channel.as_str()))
            .filter_map(|t| t.definition.get("topic").and_then(Value::as_str).map(str::to_owned))
            .collect();
        topics.sort();
        topics.dedup();
        let listed = topics.into_iter().map(|t| (t.clone(), !left.contains(&t))).collect();
        Ok((listed, message.channel))
    }

    /// Keeps the recipient on `keep` and off the channel's other topics.
    pub async fn set_topics(&self, token: &str, keep: &[String]) -> MessagingResult<()> {
        let (topics, _) = self.preferences(token)?;
        let (_, message) = self.token_message(token)?;
        let Some(profile) = message.profile_id else { return Ok(()) };
        let off: Vec<Value> = topics.into_iter().filter(|(t, _)| !keep.contains(t)).map(|(t, _)| json!(t)).collect();
        let mut traits = Map::new();
        traits.insert("unsubscribed_topics".into(), Value::Array(off));
        self.set_traits(profile, traits, "preference page").await
    }

    /// An inbound text: STOP (and its synonyms) withdraws SMS marketing consent and suppresses the number;
    /// START gives it back. Returns whether the sender was unsubscribed.
    pub async fn inbound_sms(&self, from: &str, body: &str) -> MessagingResult<bool> {
        let word = body.trim().to_uppercase();
        let stop =
            ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "停止", "配信停止"].contains(&word.as_str());
        let start = ["START", "UNSTOP", "YES"].contains(&word.as_str());
        if !stop && !start {
            return Ok(false);
        }
        let now = self.clock().now();
        let phone = kizuna_identity::Identifier::normalised(kizuna_identity::IdKind::Phone, from, None)
            .map(|i| i.value)
            .unwrap_or_else(|| from.trim().to_owned());
        if stop {
            self.store().messages().suppress("sms", &phone, "unsubscribe", now)?;
        } else {
            self.store().messages().unsuppress("sms", &phone)?;
        }
        let identifier = kizuna_identity::Identifier::new(kizuna_identity::IdKind::Phone, phone);
        if let Some(profile) = self.store().profile_by_identifier(&identifier)? {
            let mut traits = Map::new();
            traits.insert("consent".into(), json!({"sms": {"marketing": if stop { "denied" } else { "granted" }}}));
            self.set_traits(profile, traits, "inbound SMS").await?;
            let name = if stop { "Unsubscribed" } else { "Subscribed" };
            self.record_event(Some(profile), name, json!({"channel": "sms", "keyword": word})).await?;
        }
        Ok(stop)
    }

    /// A provider reported a bounce or complaint for a message.
    pub async fn report_bounce(&self, message_id: &str, kind: &str, detail: &str) -> MessagingResult<()> {
        let message = self
            .store()
            .messages()
            .message(message_id)?
            .ok_or_else(|| MessagingError::MessageNotFound(message_id.into()))?;
        let now = self.clock().now();
        let (state, event, suppress) = match kind {
            "hard_bounce" | "bounce" => ("bounced", "Bounced", Some("hard_bounce")),
            "soft_bounce" => ("bounced", "Bounced", None),
            "complaint" => (message.state.as_str(), "Marked as Spam", Some("complaint")),
            "delivered" => ("delivered", "", None),
            other => {
                return Err(MessagingError::Invalid {
                    field: "type".into(),
                    message: format!("`{other}` is not one of hard_bounce, soft_bounce, complaint, delivered"),
                });
            }
        };
        if let (Some(reason), Some(address)) = (suppress, &message.recipient) {
            self.store().messages().suppress(&message.channel, address, reason, now)?;
        }
        let reason = if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {detail}") };
        let t = kizuna_store::messages::Transition::new(message.id.clone(), state, reason);
        self.store().messages().record(&[t], now)?;
        if !event.is_empty() {
            let mut properties = Self::properties(&message);
            properties["kind"] = json!(kind);
            self.record_event(message.profile_id, &format!("{} {event}", channel_label(&message.channel)), properties)
                .await?;
        }
        Ok(())
    }
}

/// Attributes an order to the message that earned it (idempotent per order id).
fn attribute_order(
    store: &dyn Store,
    windows: &Windows,
    profile: ProfileId,
    order_id: &str,
    revenue: f64,
    currency: Option<String>,
    at: DateTime<Utc>,
) -> MessagingResult<Option<String>> {
    let rows = store.messages().touches(profile, at - windows.lookback())?;
    let touches: Vec<Touch> = rows
        .into_iter()
        .map(|r| Touch {
            message_id: r.message_id,
            kind: if r.kind == "click" { TouchKind::Click } else { TouchKind::Open },
            at: r.at,
            machine: r.machine,
        })
        .collect();
    let Some(winner) = attribute(at, &touches, windows) else { return Ok(None) };
    let row = AttributionRow {
        order_id: order_id.to_owned(),
        profile_id: profile,
        message_id: winner.message_id.clone(),
        touch: winner.kind.as_str().into(),
        revenue,
        currency,
        at,
    };
    store.messages().record_attribution(&row)?;
    Ok(Some(row.message_id))
}

/// What the attribution thread is told, in commit order.
enum Work {
    Order {
        profile: ProfileId,
        properties: std::sync::Arc<Value>,
        at: DateTime<Utc>,
    },
    /// People were merged or erased: the store's records of it are read by cursor.
    ProfilesChanged,
}

/// Most merges and erasures applied in one transaction.
const PROFILE_CHANGES_PER_BATCH: usize = 1_000;
/// How often merges and erasures are looked for without news of one.
const RECHECK_PROFILE_CHANGES: std::time::Duration = std::time::Duration::from_secs(60);
/// How often at most merges and erasures heard of are applied to messages (see [`PendingChanges`]).
const FOLLOW_PROFILE_CHANGES_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether merges or erasures were heard of and not yet applied to messages. Applying them is a write
/// transaction on the main database, and a SQLite read transaction that begins after another connection's commit
/// starts with an empty page cache. Following each merge as it came, the ingest writer re-read 72 MB/s of pages
/// it had cached while `kizuna bench ingest` ran (8,800 reads a second; 29 with the following switched off). So
/// they are applied at most every [`FOLLOW_PROFILE_CHANGES_EVERY`]. Attribution does not wait for them: it reads
/// the touches of everyone merged into the buyer through the store's record of merges.
struct PendingChanges {
    any: bool,
    applied_at: Instant,
}

impl PendingChanges {
    fn new() -> Self {
        Self { any: false, applied_at: Instant::now() }
    }

    fn due(&self) -> bool {
        self.any && self.applied_at.elapsed() >= FOLLOW_PROFILE_CHANGES_EVERY
    }

    /// How long the thread may wait for news before it must apply what is pending (or recheck).
    fn patience(&self) -> std::time::Duration {
        if self.any {
            FOLLOW_PROFILE_CHANGES_EVERY.saturating_sub(self.applied_at.elapsed())
        } else {
            RECHECK_PROFILE_CHANGES
        }
    }

    fn apply(&mut self, store: &dyn Store, clock: &dyn Clock) {
        follow_profile_changes(store, clock);
        self.any = false;
        self.applied_at = Instant::now();
    }
}

/// Applies every merge and erasure recorded since messaging last looked.
fn follow_profile_changes(store: &dyn Store, clock: &dyn Clock) {
    loop {
        match store.messages().follow_profile_changes(PROFILE_CHANGES_PER_BATCH, clock.now()) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                // The cursor did not move: the next merge or erasure, or the next start, tries again.
                tracing::error!(error = %e, "messages did not follow merges and erasures");
                return;
            }
        }
    }
}

/// A feed sink that hands `Order Completed` events, merges and erasures to attribution (on its own thread: the
/// writer only sends them over), then passes the commit on to `next`. Merges move the merged-away profile's sent
/// messages and touches to the survivor, so a click before the merge still earns the order after it; erasures
/// leave the person's messages as anonymous rows. Both are read from the store's own records, also once at start
/// (what a crash left unapplied).
pub fn attribution_sink(messenger: &Messenger, next: FeedSink) -> FeedSink {
    let (sender, receiver) = std::sync::mpsc::channel::<Work>();
    // The thread holds the store, not the messenger: dropping the last messenger closes SMTP connections, which
    // needs the async runtime this thread does not have.
    let store = messenger.store().clone();
    let clock = messenger.clock().clone();
    let windows = messenger.settings().attribution.clone();
    let spawned = std::thread::Builder::new().name("kizuna-attribution".into()).spawn(move || {
        let mut pending = PendingChanges::new();
        pending.apply(store.as_ref(), clock.as_ref());
        loop {
            // Also now and then without being told: a follow that failed is tried again.
            let (profile, properties, at) = match receiver.recv_timeout(pending.patience()) {
                Ok(Work::Order { profile, properties, at }) => (profile, properties, at),
                Ok(Work::ProfilesChanged) => {
                    pending.any = true;
                    if pending.due() {
                        pending.apply(store.as_ref(), clock.as_ref());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    pending.apply(store.as_ref(), clock.as_ref());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if pending.any {
                        pending.apply(store.as_ref(), clock.as_ref());
                    }
                    break;
                }
            };
            let Some(order_id) = properties.get("order_id").and_then(|o| match o {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }) else {
                continue;
            };
            let revenue = ["revenue", "total", "value"]
                .iter()
                .find_map(|k| properties.get(*k).and_then(Value::as_f64))
                .unwrap_or(0.0);
            let currency = properties.get("currency").and_then(Value::as_str).map(str::to_owned);
            if let Err(e) = attribute_order(store.as_ref(), &windows, profile, &order_id, revenue, currency, at) {
                tracing::error!(error = %e, order = %order_id, "attribution failed");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start attribution");
    }
    Box::new(move |committed: Committed| {
        for change in &committed.changes {
            match change {
                FeedChange::Event { profile, event } if event.name == "Order Completed" => {
                    let _ = sender.send(Work::Order {
                        profile: *profile,
                        properties: event.properties.clone(),
                        at: event.at,
                    });
                }
                FeedChange::Merged { .. } | FeedChange::Removed { erased: true, .. } => {
                    let _ = sender.send(Work::ProfilesChanged);
                }
                _ => {}
            }
        }
        next(committed);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_changes_wait_at_most_the_follow_interval() {
        let mut pending = PendingChanges::new();
        assert_eq!(pending.patience(), RECHECK_PROFILE_CHANGES, "nothing heard: only the periodic recheck");
        assert!(!pending.due());
        pending.any = true;
        assert!(pending.patience() <= FOLLOW_PROFILE_CHANGES_EVERY, "a merge heard is applied within the interval");
        pending.applied_at = Instant::now() - FOLLOW_PROFILE_CHANGES_EVERY;
        assert!(pending.due(), "once the interval has passed since the last follow, the next news applies it");
        assert_eq!(pending.patience(), std::time::Duration::ZERO);
    }
}
