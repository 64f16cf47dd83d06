//! The words every part of messaging shares.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Line,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::Sms, Channel::Line, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Line => "line",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Webhooks reach the brand's own systems, not a person's inbox: consent and caps do not apply.
    pub fn reaches_a_person(self) -> bool {
        !matches!(self, Channel::Webhook)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message is sent: marketing needs opt-in consent and obeys caps and quiet hours; transactional
/// (receipts, shipping, password resets) goes unless the person refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Marketing,
    Transactional,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Transactional => "transactional",
        }
    }

    pub fn parse(text: &str) -> Option<Purpose> {
        match text {
            "marketing" => Some(Purpose::Marketing),
            "transactional" => Some(Purpose::Transactional),
            _ => None,
        }
    }
}

/// Who wins a contested slot: lower sorts first. Transactional > cart/browse abandonment > other flows >
/// campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Transactional = 0,
    Abandonment = 1,
    Flow = 2,
    Campaign = 3,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::Transactional, Priority::Abandonment, Priority::Flow, Priority::Campaign];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Transactional => "transactional",
            Priority::Abandonment => "abandonment",
            Priority::Flow => "flow",
            Priority::Campaign => "campaign",
        }
    }

    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == text)
    }

    pub fn rank(self) -> i64 {
        self as i64
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Queued,
    Deferred,
    /// Handed to the sender; the outcome is not recorded yet.
    Sending,
    Sent,
    Delivered,
    Bounced,
    Failed,
    Suppressed,
    /// Not sent on purpose (a capped campaign, a message too late to matter), with the reason.
    Dropped,
}

impl MessageState {
    pub const ALL: [MessageState; 9] = [
        MessageState::Queued,
        MessageState::Deferred,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Delivered,
        MessageState::Bounced,
        MessageState::Failed,
        MessageState::Suppressed,
        MessageState::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Deferred => "deferred",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Bounced => "bounced",
            MessageState::Failed => "failed",
            MessageState::Suppressed => "suppressed",
            MessageState::Dropped => "dropped",
        }
    }

    pub fn parse(text: &str) -> Option<MessageState> {
        MessageState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Counts against frequency caps: it reached (or is reaching) the person.
    pub fn counts_as_sent(self) -> bool {
        matches!(self, MessageState::Sending | MessageState::Sent | MessageState::Delivered)
    }
}
