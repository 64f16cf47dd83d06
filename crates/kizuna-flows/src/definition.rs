//! A flow definition: the document saved through the API and the CLI (JSON or YAML; this is its serde form).
//!
//! ```json
//! {"description": "Cart abandonment",
//!  "trigger": {"event": {"name": "Checkout Started", "where": [{"path": "value", "op": "gt", "value": 50}]}},
//!  "entry": {"reentry": {"cooldown": "7d"}},
//!  "filter": "not count(Order Completed in last 1d) >= 1",
//!  "goal": {"event": {"name": "Order Completed"}, "within": "5d"},
//!  "steps": [
//!    {"id": "wait", "type": "wait_for_event", "event": {"name": "Order Completed"}, "same_as_trigger": ["cart_id"],
//!     "timeout": "1h", "on_event": null, "on_timeout": "remind"},
//!    {"id": "remind", "type": "send", "template": "cart_abandonment"}
//!  ]}
//! ```
//!
//! The first step is where a run starts. `next: null` (or no `next`) ends the run as completed. Conditions are
//! segment conditions, written either in the segment text syntax (a string) or as the JSON tree.

use chrono::Weekday;
use kizuna_messaging::Priority;
use kizuna_segments::{Condition, EventMatch, Span};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDefinition {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub trigger: Trigger,
    #[serde(default)]
    pub entry: Entry,
    /// Re-checked whenever a run resumes and before every send; a person who stops matching leaves the flow
    /// (reason `filter`): someone who bought leaves the cart flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FlowCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    pub steps: Vec<Step>,
}

/// What starts a run for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An event of this name whose properties pass the filters.
    Event(EventMatch),
    /// The person entered this segment.
    SegmentEntered(String),
    /// The person left this segment.
    SegmentExited(String),
    /// A date attribute's anniversary (birthday, first order), in the person's time zone, shifted by
    /// `offset` ("7 days before" is `-7d`), at a local time of day.
    Date(DateTrigger),
    /// A recurring schedule enrolling the members of a segment (or everyone): newsletters.
    Schedule(ScheduleTrigger),
    /// Only explicit enrolment through the API or the CLI.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateTrigger {
    /// `traits.birthday`, `computed.first_order_at`, `computed.expected_next_order_at`…
    pub attribute: String,
    /// Shift from the date: `-7d` is seven days before. Days or weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<SignedSpan>,
    /// Repeat every year on the anniversary (birthdays); `false` fires once on the date itself (a predicted
    /// next order date).
    #[serde(default = "yes")]
    pub yearly: bool,
    /// Local time of day the run starts.
    #[serde(default = "nine")]
    pub at: TimeOfDay,
}

fn yes() -> bool {
    true
}

fn nine() -> TimeOfDay {
    TimeOfDay { hour: 9, minute: 0 }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Local days the schedule fires on (every day when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<WeekdayName>,
    pub at: TimeOfDay,
    /// Enrol the members of this segment (everyone when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Checked once, when the person would enter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FlowCondition>,
    #[serde(default)]
    pub reentry: Reentry,
    /// Allow several active runs of this flow per person (one per trigger); off by default.
    #[serde(default)]
    pub concurrent: bool,
}

/// May a person enter again?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reentry {
    /// Once in a lifetime (welcome series).
    Never,
    /// Again once the previous run has ended.
    #[default]
    AfterExit,
    /// Again once this long has passed since the previous run started.
    Cooldown(Span),
}

/// A conversion: the goal event within a window of entering. Reaching it is counted (with its revenue) and
/// ends the run unless `exit` is false.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub event: EventMatch,
    pub within: Span,
    #[serde(default = "yes")]
    pub exit: bool,
}

/// A branch must be written out (`null` ends the run there): a forgotten branch is an error, not an exit.
fn branch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// One step. `id` names it for branches, logs and analytics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// Waits for a duration, then (optionally) until a local time of day on an allowed weekday.
    Delay {
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        duration: Option<Span>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<LocalTime>,
        #[serde(default)]
        next: Option<String>,
    },
    /// Waits until a matching event happens (`on_event`) or the timeout passes (`on_timeout`).
    WaitForEvent {
        event: EventMatch,
        /// Property paths whose value must equal the trigger event's (the same cart, the same order).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        same_as_trigger: Vec<String>,
        timeout: Span,
        #[serde(deserialize_with = "branch")]
        on_event: Option<String>,
        #[serde(deserialize_with = "branch")]
        on_timeout: Option<String>,
    },
    /// Branches on any segment condition, evaluated for the person now.
    Condition {
        #[serde(rename = "if")]
        condition: FlowCondition,
        #[serde(deserialize_with = "branch")]
        then: Option<String>,
        #[serde(rename = "else", deserialize_with = "branch")]
        otherwise: Option<String>,
    },
    /// A/B/n split by weight; the branch a person takes is stable (a hash, not a coin).
    Split { branches: Vec<Branch> },
    /// A stable share of entrants (by person) receives nothing from here on: they wait out the goal window and
    /// leave, so the lift of everyone else can be measured against them.
    Holdout {
        percent: f64,
        #[serde(default)]
        next: Option<String>,
    },
    /// Hands a message to the messaging pipeline (the governor decides consent, quiet hours, caps).
    Send {
        template: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        priority: Option<Priority>,
        #[serde(default)]
        next: Option<String>,
    },
    /// Sets profile traits (recorded as an `identify` from the `kizuna-flows` source).
    UpdateProfile {
        traits: Map<String, Value>,
        #[serde(default)]
        next: Option<String>,
    },
    /// Adds and removes tags (the `tags` trait, a list).
    Tag {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        add: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove: Vec<String>,
        #[serde(default)]
        next: Option<String>,
    },
    /// POSTs the person, the trigger and `body` to a URL (signed, with an idempotency key).
    Webhook {
        url: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        body: Value,
        #[serde(default)]
        next: Option<String>,
    },
    /// Awards loyalty points through the loyalty interface.
    AwardPoints {
        points: i64,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
        #[serde(default)]
        next: Option<String>,
    },
    /// Ends the run here (reason `exit_step`).
    Exit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub name: String,
    pub weight: u32,
    #[serde(deserialize_with = "branch")]
    pub next: Option<String>,
}

/// A local time of day on allowed weekdays (every day when empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTime {
    pub at: TimeOfDay,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<WeekdayName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u32,
    pub minute: u32,
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:02}:{:02}", self.hour, self.minute))
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("'{text}' is not a time of day like 09:30"));
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        let (hour, minute): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay { hour, minute })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeekdayName {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl WeekdayName {
    pub fn weekday(self) -> Weekday {
        match self {
            WeekdayName::Mon => Weekday::Mon,
            WeekdayName::Tue => Weekday::Tue,
            WeekdayName::Wed => Weekday::Wed,
            WeekdayName::Thu => Weekday::Thu,
            WeekdayName::Fri => Weekday::Fri,
            WeekdayName::Sat => Weekday::Sat,
            WeekdayName::Sun => Weekday::Sun,
        }
    }
}

/// A span with a sign: `-7d` (before), `3d` (after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedSpan {
    pub before: bool,
    pub span: Span,
}

impl SignedSpan {
    pub fn duration(self) -> chrono::Duration {
        if self.before { -self.span.duration() } else { self.span.duration() }
    }
}

impl Serialize for SignedSpan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}{}", if self.before { "-" } else { "" }, self.span))
    }
}

impl<'de> Deserialize<'de> for SignedSpan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let (before, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(&text)),
        };
        let span = Span::parse_compact(rest)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not an offset like -7d or 1w")))?;
        Ok(SignedSpan { before, span })
    }
}

/// A segment condition, in the text syntax or as the JSON tree; stored and shown as the tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct FlowCondition(pub Condition);

impl<'de> Deserialize<'de> for FlowCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(text) => kizuna_segments::parse(&text)
                .map(FlowCondition)
                .map_err(|e| serde::de::Error::custom(format!("condition {}:{}: {}", e.line, e.column, e.message))),
            tree => kizuna_segments::from_json(&tree).map(FlowCondition).map_err(serde::de::Error::custom),
        }
    }
}

impl Step {
    /// Every step this one can lead to, with the field naming it (`None` ends the run).
    pub fn exits(&self) -> Vec<(&'static str, Option<&str>)> {
        match &self.kind {
            StepKind::Delay { next, .. }
            | StepKind::Holdout { next, .. }
            | StepKind::Send { next, .. }
            | StepKind::UpdateProfile { next, .. }
            | StepKind::Tag { next, .. }
            | StepKind::Webhook { next, .. }
            | StepKind::AwardPoints { next, .. } => vec![("next", next.as_deref())],
            StepKind::WaitForEvent { on_event, on_timeout, .. } => {
                vec![("on_event", on_event.as_deref()), ("on_timeout", on_timeout.as_deref())]
            }
            StepKind::Condition { then, otherwise, .. } => {
                vec![("then", then.as_deref()), ("else", otherwise.as_deref())]
            }
            StepKind::Split { branches } => branches.iter().map(|b| ("next", b.next.as_deref())).collect(),
            StepKind::Exit => vec![],
        }
    }

    /// Steps that let time pass: a cycle must hold one, or a run would loop without end.
    pub fn waits(&self) -> bool {
        matches!(self.kind, StepKind::Delay { .. } | StepKind::WaitForEvent { .. })
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            StepKind::Delay { .. } => "delay",
            StepKind::WaitForEvent { .. } => "wait_for_event",
            StepKind::Condition { .. } => "condition",
            StepKind::Split { .. } => "split",
            StepKind::Holdout { .. } => "holdout",
            StepKind::Send { .. } => "send",
            StepKind::UpdateProfile { .. } => "update_profile",
            StepKind::Tag { .. } => "tag",
            StepKind::Webhook { .. } => "webhook",
            StepKind::AwardPoints { .. } => "award_points",
            StepKind::Exit => "exit",
        }
    }
}

impl FlowDefinition {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn first_step(&self) -> Option<&str> {
        self.steps.first().map(|s| s.id.as_str())
    }

    /// Templates the flow sends.
    pub fn templates(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::Send { template, .. } => Some(template.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Segments the flow reads: its trigger and every condition.
    pub fn segments(&self) -> Vec<&str> {
        let mut out = Vec::new();
        match &self.trigger {
            Trigger::SegmentEntered(s) | Trigger::SegmentExited(s) => out.push(s.as_str()),
            Trigger::Schedule(ScheduleTrigger { segment: Some(s), .. }) => out.push(s.as_str()),
            _ => {}
        }
        for condition in self.conditions() {
            out.extend(condition.referenced_segments());
        }
        out
    }

    /// Every condition in the flow: entry filter, flow filter, branches.
    pub fn conditions(&self) -> Vec<&Condition> {
        let mut out: Vec<&Condition> = Vec::new();
        out.extend(self.entry.filter.as_ref().map(|c| &c.0));
        out.extend(self.filter.as_ref().map(|c| &c.0));
        for step in &self.steps {
            if let StepKind::Condition { condition, .. } = &step.kind {
                out.push(&condition.0);
            }
        }
        out
    }

    /// Event names whose arrival matters to running people: waits and the goal.
    pub fn awaited_events(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::WaitForEvent { event, .. } => Some(event.name.as_str()),
                _ => None,
            })
            .collect();
        out.extend(self.goal.as_ref().map(|g| g.event.name.as_str()));
        out
    }
}
