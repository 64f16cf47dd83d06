//! The segment definition tree. Its serde form is the JSON form of a definition.
//!
//! ```json
//! {"and": [
//!   {"attribute": {"path": "computed.orders_count", "op": "gte", "value": 2}},
//!   {"event": {"name": "Product Viewed", "where": [{"path": "category", "op": "equals", "value": "shoes"}],
//!              "window": {"last": "7d"}, "measure": "count", "op": "gte", "value": 1}},
//!   {"not": {"event": {"name": "Order Completed", "window": {"last": "7d"}, "measure": "count", "op": "gte", "value": 1}}}
//! ]}
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A condition on one profile. Freely nested with `and` / `or` / `not`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every condition holds (an empty list holds).
    And(Vec<Condition>),
    /// At least one condition holds (an empty list does not).
    Or(Vec<Condition>),
    Not(Box<Condition>),
    /// A trait (`traits.NAME`), a computed attribute (`computed.NAME`, including analytics scores such as
    /// `computed.rfm_segment`, `computed.churn_risk`, `computed.journey_stage`) compared with a value. Paths are
    /// open-ended: any attribute that exists on a profile can be named; nested fields with dots.
    Attribute(AttributeCondition),
    /// An aggregate of the profile's events that match, over a window, compared with a number (or, for
    /// `first`/`last`, a time comparison).
    Event(EventCondition),
    /// Did `first` and then did not do `then_not` within `within` of it (browse or cart abandonment), with the
    /// `first` event inside `window`.
    Sequence(SequenceCondition),
    /// The profile's consent for a channel and purpose is granted.
    Consent(ConsentCondition),
    /// The profile has an identifier of this kind (`email`, `phone`, `line_user_id`, `user_id`, a custom type).
    HasIdentifier(String),
    /// The profile's location is within `km` of a point.
    Near(NearCondition),
    /// The profile is a member of another segment (by name). Cycles are rejected.
    InSegment(String),
}

/// `path op value`, e.g. `traits.vip equals true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeCondition {
    pub path: String,
    #[serde(flatten)]
    pub comparison: Comparison,
}

/// A comparison of one value (an attribute, an event property, an aggregate) with the definition's operand.
/// Serialised as `{"op": "...", "value": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum Comparison {
    /// Equal: strings case-sensitively, numbers numerically, booleans; a list attribute equals when it
    /// contains the value.
    Equals(Value),
    NotEquals(Value),
    /// Numbers (strings holding numbers are compared as numbers).
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    /// Inclusive numeric range `[low, high]`.
    Between(f64, f64),
    /// Substring (strings) or element (lists).
    Contains(Value),
    StartsWith(String),
    /// Equals any of these.
    In(Vec<Value>),
    /// The attribute is present and not null.
    Exists,
    /// Dates (RFC 3339 or YYYY-MM-DD attribute values): strictly before / after an absolute time.
    Before(DateTime<Utc>),
    After(DateTime<Utc>),
    /// Dates: at most this long ago (and not in the future).
    WithinLast(Span),
    /// Dates: more than this long ago.
    MoreThanAgo(Span),
    /// Dates: between `from` and `to` ago, inclusive (`from` ≤ `to`), e.g. between 60 and 120 days ago.
    BetweenAgo(Span, Span),
    /// Dates: the next anniversary (same month and day, any year) falls within the next span, today included
    /// — birthdays. 29 February is celebrated on 28 February in other years.
    AnniversaryWithin(Span),
}

/// An amount of time: `30m`, `24h`, `7d`, `2w` in both forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub amount: u32,
    pub unit: SpanUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanUnit {
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl Span {
    pub fn new(amount: u32, unit: SpanUnit) -> Self {
        Span { amount, unit }
    }

    pub fn duration(self) -> chrono::Duration {
        let n = i64::from(self.amount);
        match self.unit {
            SpanUnit::Minutes => chrono::Duration::minutes(n),
            SpanUnit::Hours => chrono::Duration::hours(n),
            SpanUnit::Days => chrono::Duration::days(n),
            SpanUnit::Weeks => chrono::Duration::weeks(n),
        }
    }

    fn suffix(self) -> char {
        match self.unit {
            SpanUnit::Minutes => 'm',
            SpanUnit::Hours => 'h',
            SpanUnit::Days => 'd',
            SpanUnit::Weeks => 'w',
        }
    }

    /// Parses `7d`, `24h`, `30m`, `2w`.
    pub fn parse_compact(text: &str) -> Option<Span> {
        let unit = match text.chars().last()? {
            'm' => SpanUnit::Minutes,
            'h' => SpanUnit::Hours,
            'd' => SpanUnit::Days,
            'w' => SpanUnit::Weeks,
            _ => return None,
        };
        let amount = text[..text.len() - 1].parse().ok()?;
        Some(Span { amount, unit })
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.amount, self.suffix())
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse_compact(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a span like 30m, 24h, 7d or 2w")))
    }
}

/// Which events count, by time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// All of the profile's history.
    #[default]
    Ever,
    /// The last span up to now.
    Last(Span),
    /// Between `from` and `to` ago (`from` ≤ `to`), e.g. between 7 and 14 days ago.
    BetweenAgo(Span, Span),
    /// An absolute range `[from, to)`.
    Range(DateTime<Utc>, DateTime<Utc>),
}

/// Events of one name (a track event name such as `Order Completed`, or a message type: `page`, `screen`,
/// `identify`) whose properties pass every filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMatch {
    pub name: String,
    /// Property filters, all of which must hold. Paths are dotted (`address.city`); a path through a list
    /// (`products.category`) holds when any element matches.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyFilter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyFilter {
    pub path: String,
    #[serde(flatten)]
    pub comparison: Comparison,
}

/// What is computed over the matching events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// How many matched.
    Count,
    /// Sum / average / min / max of a numeric property (events without it are skipped).
    Sum(String),
    Avg(String),
    Min(String),
    Max(String),
    /// The time of the first / last matching event (compared with a date comparison).
    First,
    Last,
}

/// `measure(events matching, window) comparison`, e.g. `count(Order Completed in last 90 days) >= 2`.
/// "Has done" is `count >= 1`; "has not done" is `not (count >= 1)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCondition {
    #[serde(flatten)]
    pub matches: EventMatch,
    #[serde(default)]
    pub window: Window,
    pub measure: Measure,
    #[serde(flatten)]
    pub comparison: Comparison,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceCondition {
    pub first: EventMatch,
    pub then_not: EventMatch,
    /// How long after `first` the absence of `then_not` is required; the condition holds only once that time
    /// has passed without it.
    pub within: Span,
    /// Where the `first` event must lie.
    #[serde(default)]
    pub window: Window,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentCondition {
    /// `email`, `sms`, `line`, `push`.
    pub channel: String,
    /// `marketing`, `transactional`, `analytics`, `personalization`.
    pub purpose: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NearCondition {
    pub lat: f64,
    pub lon: f64,
    pub km: f64,
}

impl Condition {
    /// Names of the segments this condition refers to (for cycle checks), in order of appearance.
    pub fn referenced_segments(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |c| {
            if let Condition::InSegment(name) = c {
                out.push(name.as_str());
            }
        });
        out
    }

    /// Calls `f` on this condition and every condition inside it, depth first.
    pub fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Condition)) {
        f(self);
        match self {
            Condition::And(all) | Condition::Or(all) => all.iter().for_each(|c| c.visit(f)),
            Condition::Not(inner) => inner.visit(f),
            _ => {}
        }
    }
}
