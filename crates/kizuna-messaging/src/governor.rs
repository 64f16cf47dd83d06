//! The send governor: the one place every message passes before it goes out. It decides from consent,
//! suppressions, frequency caps and quiet hours — never silently: every decision carries its reason.

use crate::model::{Channel, Priority, Purpose};
use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub channel: Channel,
    pub max: u32,
    pub window_hours: u32,
}

/// Local hours in which marketing is not sent, e.g. 21:00–08:00 (a window may cross midnight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end { t >= self.start && t < self.end } else { t >= self.start || t < self.end }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Caps on marketing messages per person and channel (transactional mail is never capped).
    pub caps: Vec<FrequencyCap>,
    pub quiet_hours: Option<QuietHours>,
    /// The zone used for people whose own is unknown (the store's).
    pub default_timezone: String,
    /// How late a message may still go, per priority, in hours; later it is dropped as stale ("your cart is
    /// waiting" three days on helps no one). Campaigns capped by frequency are dropped at once.
    pub max_delay_hours: MaxDelay,
    /// Marketing only to people who opted in (Japan's Act on Specified Electronic Mail, GDPR). `false` sends to
    /// everyone who has not refused (the US CAN-SPAM model); an explicit refusal always wins.
    #[serde(default = "opt_in")]
    pub marketing_requires_opt_in: bool,
}

fn opt_in() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxDelay {
    pub abandonment: u32,
    pub flow: u32,
    pub campaign: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            caps: vec![
                FrequencyCap { channel: Channel::Email, max: 1, window_hours: 16 },
                FrequencyCap { channel: Channel::Email, max: 3, window_hours: 24 * 7 },
                FrequencyCap { channel: Channel::Sms, max: 1, window_hours: 24 },
                FrequencyCap { channel: Channel::Sms, max: 4, window_hours: 24 * 30 },
                FrequencyCap { channel: Channel::Line, max: 1, window_hours: 24 },
            ],
            quiet_hours: Some(QuietHours {
                start: NaiveTime::from_hms_opt(21, 0, 0).unwrap_or_default(),
                end: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
            }),
            default_timezone: "UTC".into(),
            max_delay_hours: MaxDelay { abandonment: 24, flow: 72, campaign: 48 },
            marketing_requires_opt_in: true,
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, cap) in self.caps.iter().enumerate() {
            if cap.max == 0 || cap.window_hours == 0 {
                return Err((format!("caps[{i}]"), "max and window_hours must be at least 1".into()));
            }
        }
        if self.default_timezone.parse::<Tz>().is_err() {
            return Err(("default_timezone".into(), format!("unknown time zone `{}`", self.default_timezone)));
        }
        Ok(())
    }

    fn max_delay(&self, priority: Priority) -> Option<Duration> {
        let hours = match priority {
            Priority::Transactional => return None,
            Priority::Abandonment => self.max_delay_hours.abandonment,
            Priority::Flow => self.max_delay_hours.flow,
            Priority::Campaign => self.max_delay_hours.campaign,
        };
        Some(Duration::hours(i64::from(hours)))
    }

    /// The longest cap window on a channel: how far back the caller must look for earlier sends.
    pub fn lookback(&self, channel: Channel) -> Duration {
        let hours = self.caps.iter().filter(|c| c.channel == channel).map(|c| c.window_hours).max().unwrap_or(0);
        Duration::hours(i64::from(hours))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    Granted,
    Denied,
    Unknown,
}

/// What the governor needs to know about one message and its recipient.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub channel: Channel,
    pub purpose: Purpose,
    pub priority: Priority,
    pub has_address: bool,
    pub consent: Consent,
    /// The suppression that applies to this purpose, with its reason (hard_bounce, complaint, unsubscribe).
    pub suppressed: Option<&'a str>,
    pub topic_unsubscribed: bool,
    /// The recipient's IANA zone.
    pub timezone: Option<&'a str>,
    /// When earlier capped messages to this person on this channel went (within [`Policy::lookback`]).
    pub recent_sends: &'a [DateTime<Utc>],
    /// When the message was first queued (deferrals count from here).
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Send,
    Defer { until: DateTime<Utc>, reason: String },
    Drop { reason: String },
    Suppress { reason: String },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Send => "allowed",
            Decision::Defer { reason, .. } | Decision::Drop { reason } | Decision::Suppress { reason } => reason,
        }
    }
}

fn zone(candidate: &Candidate<'_>, policy: &Policy) -> Tz {
    candidate.timezone.and_then(|z| z.parse().ok()).or_else(|| policy.default_timezone.parse().ok()).unwrap_or(Tz::UTC)
}

/// The end of the quiet window `t` falls in, or `t` itself.
fn after_quiet_hours(quiet: &QuietHours, zone: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
    let local = t.with_timezone(&zone);
    if !quiet.contains(local.time()) {
        return t;
    }
    let mut day = local.date_naive();
    if quiet.start > quiet.end && local.time() >= quiet.start {
        day = day.succ_opt().unwrap_or(day);
    }
    let end = day.and_time(quiet.end);
    // A zone's clocks can skip the end time (DST): take the first instant after it.
    zone.from_local_datetime(&end)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(end + Duration::hours(1))).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(t + Duration::hours(1))
}

/// The first moment from `t` when every cap on the channel has room.
fn after_caps(
    policy: &Policy,
    channel: Channel,
    sends: &[DateTime<Utc>],
    t: DateTime<Utc>,
) -> (DateTime<Utc>, Option<String>) {
    let mut at = t;
    let mut reason = None;
    for cap in policy.caps.iter().filter(|c| c.channel == channel) {
        let window = Duration::hours(i64::from(cap.window_hours));
        let mut inside: Vec<DateTime<Utc>> = sends.iter().copied().filter(|s| *s > at - window && *s <= at).collect();
        if inside.len() < cap.max as usize {
            continue;
        }
        inside.sort();
        // Room opens when enough of the sends in the window have aged out of it.
        let opens = inside[inside.len() - cap.max as usize] + window;
        if opens > at {
            at = opens;
            reason = Some(format!("frequency_cap: at most {} {} per {} h", cap.max, channel, cap.window_hours));
        }
    }
    (at, reason)
}

/// Decides what happens to a message now.
pub fn decide(policy: &Policy, candidate: &Candidate<'_>, now: DateTime<Utc>) -> Decision {
    if !candidate.channel.reaches_a_person() {
        return Decision::Send;
    }
    if !candidate.has_address {
        return Decision::Suppress { reason: format!("no_address: the profile has no {} address", candidate.channel) };
    }
    if let Some(reason) = candidate.suppressed {
        return Decision::Suppress { reason: format!("suppressed: {reason}") };
    }
    match (candidate.purpose, candidate.consent) {
        (_, Consent::Denied) => {
            return Decision::Suppress {
                reason: format!("consent_denied: {} {}", candidate.channel, candidate.purpose.as_str()),
            };
        }
        (Purpose::Marketing, Consent::Unknown) if policy.marketing_requires_opt_in => {
            return Decision::Suppress {
                reason: format!("no_consent: marketing on {} needs opt-in", candidate.channel),
            };
        }
        _ => {}
    }
    if candidate.purpose == Purpose::Transactional || candidate.priority == Priority::Transactional {
        return Decision::Send;
    }
    if candidate.topic_unsubscribed {
        return Decision::Suppress { reason: "topic_unsubscribed".into() };
    }
    let zone = zone(candidate, policy);
    let mut at = now;
    let mut reasons: Vec<String> = Vec::new();
    // Moving past quiet hours can run into a cap and the reverse; a few rounds settle it.
    for _ in 0..8 {
        let mut moved = false;
        let (capped, cap_reason) = after_caps(policy, candidate.channel, candidate.recent_sends, at);
        if capped > at {
            if candidate.priority == Priority::Campaign {
                return Decision::Drop { reason: cap_reason.unwrap_or_else(|| "frequency_cap".into()) };
            }
            at = capped;
            moved = true;
            reasons.extend(cap_reason);
        }
        if let Some(quiet) = &policy.quiet_hours {
            let open = after_quiet_hours(quiet, zone, at);
            if open > at {
                at = open;
                moved = true;
                reasons.push(format!(
                    "quiet_hours: {}–{} {}",
                    quiet.start.format("%H:%M"),
                    quiet.end.format("%H:%M"),
                    zone
                ));
            }
        }
        if !moved {
            break;
        }
    }
    if at <= now {
        return Decision::Send;
    }
    reasons.dedup();
    let reason = reasons.join("; ");
    if let Some(max) = policy.max_delay(candidate.priority)
        && at - candidate.created_at > max
    {
        return Decision::Drop { reason: format!("too_late: {reason} would delay it past {} h", max.num_hours()) };
    }
    Decision::Defer { until: at, reason }
}
