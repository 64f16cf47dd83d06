//! The step machine: what happens to one person's run when it enters, when its time comes, and when an event
//! of theirs arrives. Plain functions over a [`Run`]; the live engine persists the run after each call and
//! carries out the actions it returns, the replay ([`crate::simulate`]) keeps runs in memory and records them.
//! Both go through these functions, which is why a replay predicts live execution.
//!
//! A run's `step` is the step to execute when `due_at` comes (status `active`), or the wait it is in
//! (`waiting`, with `due_at` its timeout). Arriving at a delay executes it: `step` moves to the delay's next
//! step and `due_at` to the end of the delay.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kizuna_identity::ProfileId;
use kizuna_messaging::Priority;
use kizuna_segments::eval::{EventFact, matches, values_at};
use kizuna_segments::{Condition, EventMatch};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::definition::{FlowDefinition, Reentry, StepKind, Trigger};
use crate::time;

/// Steps executed in one go at most (validation rejects cycles without a wait; this guards old data).
const MAX_STEPS_PER_ADVANCE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Active,
    Waiting,
    /// In the hold-out: receives nothing, leaves when the goal window ends.
    Holdout,
    Completed,
    Exited,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Active => "active",
            RunStatus::Waiting => "waiting",
            RunStatus::Holdout => "holdout",
            RunStatus::Completed => "completed",
            RunStatus::Exited => "exited",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        [RunStatus::Active, RunStatus::Waiting, RunStatus::Holdout, RunStatus::Completed, RunStatus::Exited]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Still in the flow.
    pub fn is_live(self) -> bool {
        matches!(self, RunStatus::Active | RunStatus::Waiting | RunStatus::Holdout)
    }
}

/// What started a run: an event (with its properties, for templates and `same_as_trigger`), a segment
/// transition, a date, a schedule or an enrolment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// The event's log position (0 for other triggers): the trigger itself never counts as the goal.
    pub seq: i64,
    pub name: String,
    #[serde(default)]
    pub properties: Value,
    pub at: DateTime<Utc>,
}

impl TriggerInfo {
    /// The `event` object templates see.
    pub fn as_event(&self) -> Value {
        json!({"name": self.name, "properties": self.properties, "timestamp": self.at})
    }
}

/// One person's journey through one flow version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub profile: ProfileId,
    pub version: i64,
    pub status: RunStatus,
    pub step: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub entered_at: DateTime<Utc>,
    pub trigger: TriggerInfo,
    /// Steps executed so far: numbers each execution, which makes idempotency keys.
    pub visits: u32,
    /// The split branches taken, `/`-joined.
    pub arm: Option<String>,
    pub holdout: bool,
    /// Conversions count until then.
    pub goal_until: Option<DateTime<Utc>>,
    pub converted_at: Option<DateTime<Utc>>,
    pub revenue: f64,
    pub exit_reason: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Something a step asks the outside world to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Send { template: String, priority: Priority },
    UpdateProfile { traits: Map<String, Value> },
    Tag { add: Vec<String>, remove: Vec<String> },
    Webhook { url: String, body: Value },
    AwardPoints { points: i64, reason: String },
}

/// One executed step, for the run's path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub visit: u32,
    pub step: String,
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    /// `sent`, `then`, `else`, the branch name, `until 2026-12-01T10:00:00Z`, `waiting`, `event`, `timeout`,
    /// `held_out`, `treated`, `exit`…
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl StepRecord {
    /// The idempotency key of this step's action: the same run and visit never acts twice.
    pub fn idempotency_key(&self, run: i64) -> String {
        format!("flow-run:{run}:{}", self.visit)
    }
}

/// What the machine may ask about the person.
pub trait PersonContext {
    /// Whether a segment condition holds for the person at `now`.
    fn holds(&mut self, condition: &Condition, now: DateTime<Utc>) -> bool;
    /// The person's time zone.
    fn zone(&mut self) -> Tz;
}

/// A stable number in `[0, 1)` for these parts.
pub fn stable_fraction(parts: &[&str]) -> f64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a person falls in a flow's hold-out: by flow and person only, so the same people are held out
/// every time they enter.
pub fn in_holdout(flow: &str, profile: ProfileId, percent: f64) -> bool {
    stable_fraction(&[flow, "holdout", &profile.to_string()]) * 100.0 < percent
}

/// The runs a person had in this flow, for the re-entry rules.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PriorRuns {
    pub live: usize,
    pub last_entered: Option<DateTime<Utc>>,
}

/// Whether the trigger may start a run, by the flow's re-entry rules (the entry filter is checked after).
pub fn may_enter(def: &FlowDefinition, prior: &PriorRuns, now: DateTime<Utc>) -> Result<(), &'static str> {
    if prior.live > 0 && !def.entry.concurrent {
        return Err("already_in_flow");
    }
    match def.entry.reentry {
        Reentry::Never if prior.last_entered.is_some() => Err("entered_before"),
        Reentry::Cooldown(span) if prior.last_entered.is_some_and(|t| now < t + span.duration()) => Err("cooldown"),
        _ => Ok(()),
    }
}

/// Whether an event starts this flow.
pub fn event_triggers(def: &FlowDefinition, event: &EventFact) -> bool {
    matches!(&def.trigger, Trigger::Event(m) if matches(event, m, event.at))
}

/// Whether a segment transition starts this flow.
pub fn transition_triggers(def: &FlowDefinition, segment: &str, entered: bool) -> bool {
    match &def.trigger {
        Trigger::SegmentEntered(s) => entered && s == segment,
        Trigger::SegmentExited(s) => !entered && s == segment,
        _ => false,
    }
}

/// A new run at its first step, due at once.
pub fn start_run(def: &FlowDefinition, id: i64, profile: ProfileId, version: i64, trigger: TriggerInfo) -> Run {
    let entered_at = trigger.at;
    Run {
        id,
        profile,
        version,
        status: RunStatus::Active,
        step: def.first_step().map(str::to_string),
        due_at: Some(entered_at),
        entered_at,
        goal_until: def.goal.as_ref().map(|g| entered_at + g.within.duration()),
        trigger,
        visits: 0,
        arm: None,
        holdout: false,
        converted_at: None,
        revenue: 0.0,
        exit_reason: None,
        ended_at: None,
    }
}

fn end(run: &mut Run, status: RunStatus, reason: Option<&str>, now: DateTime<Utc>) {
    run.status = status;
    run.step = None;
    run.due_at = None;
    run.exit_reason = reason.map(str::to_string);
    run.ended_at = Some(now);
}

/// Ends a run from outside the machine (kill switch, merge, erasure): no step runs.
pub fn exit_run(run: &mut Run, reason: &str, now: DateTime<Utc>) {
    if run.status.is_live() {
        end(run, RunStatus::Exited, Some(reason), now);
    }
}

/// Runs the steps that are due at `now`, up to the next wait, and returns what was executed. Call when
/// `run.due_at <= now`.
pub fn advance(
    flow: &str,
    def: &FlowDefinition,
    run: &mut Run,
    person: &mut dyn PersonContext,
    now: DateTime<Utc>,
) -> Vec<StepRecord> {
    let mut records = Vec::new();
    if run.due_at.is_none_or(|due| due > now) {
        return records;
    }
    match run.status {
        RunStatus::Completed | RunStatus::Exited => return records,
        RunStatus::Holdout => {
            end(run, RunStatus::Exited, Some("holdout"), now);
            return records;
        }
        RunStatus::Waiting => {
            let Some(StepKind::WaitForEvent { on_timeout, .. }) =
                run.step.as_deref().and_then(|s| def.step(s)).map(|s| &s.kind)
            else {
                end(run, RunStatus::Exited, Some("step_removed"), now);
                return records;
            };
            run.visits += 1;
            records.push(StepRecord {
                visit: run.visits,
                step: run.step.clone().unwrap_or_default(),
                kind: "wait_for_event",
                at: now,
                outcome: "timeout".into(),
                action: None,
            });
            run.step = on_timeout.clone();
            run.status = RunStatus::Active;
        }
        RunStatus::Active => {}
    }
    if run.visits > 0
        && let Some(filter) = &def.filter
        && !person.holds(&filter.0, now)
    {
        end(run, RunStatus::Exited, Some("filter"), now);
        return records;
    }
    for _ in 0..MAX_STEPS_PER_ADVANCE {
        let Some(id) = run.step.clone() else {
            end(run, RunStatus::Completed, None, now);
            return records;
        };
        let Some(step) = def.step(&id) else {
            end(run, RunStatus::Exited, Some("step_removed"), now);
            return records;
        };
        run.visits += 1;
        let mut record = StepRecord {
            visit: run.visits,
            step: id.clone(),
            kind: step.kind_name(),
            at: now,
            outcome: String::new(),
            action: None,
        };
        let mut next = None;
        match &step.kind {
            StepKind::Delay { duration, until, next: after } => {
                let zone = if until.is_some() { person.zone() } else { chrono_tz::UTC };
                let due = time::delay_end(now, duration.map(|d| d.duration()), until.as_ref(), zone);
                record.outcome = format!("until {}", due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                records.push(record);
                run.step = after.clone();
                run.due_at = Some(due);
                if due > now {
                    return records;
                }
                continue;
            }
            StepKind::WaitForEvent { timeout, .. } => {
                record.outcome = "waiting".into();
                records.push(record);
                run.status = RunStatus::Waiting;
                run.due_at = Some(now + timeout.duration());
                return records;
            }
            StepKind::Condition { condition, then, otherwise } => {
                let holds = person.holds(&condition.0, now);
                record.outcome = if holds { "then" } else { "else" }.into();
                next = if holds { then.clone() } else { otherwise.clone() };
            }
            StepKind::Split { branches } => {
                let total: u32 = branches.iter().map(|b| b.weight).sum();
                let entered = run.entered_at.timestamp_millis().to_string();
                let point = stable_fraction(&[flow, &id, &run.profile.to_string(), &entered]) * f64::from(total);
                let mut acc = 0.0;
                let branch = branches
                    .iter()
                    .find(|b| {
                        acc += f64::from(b.weight);
                        point < acc
                    })
                    .or(branches.last());
                if let Some(branch) = branch {
                    record.outcome = branch.name.clone();
                    run.arm = Some(match run.arm.take() {
                        Some(arm) => format!("{arm}/{}", branch.name),
                        None => branch.name.clone(),
                    });
                    next = branch.next.clone();
                }
            }
            StepKind::Holdout { percent, next: after } => {
                if in_holdout(flow, run.profile, *percent) {
                    record.outcome = "held_out".into();
                    records.push(record);
                    run.holdout = true;
                    run.step = None;
                    match run.goal_until.filter(|until| *until > now) {
                        Some(until) => {
                            run.status = RunStatus::Holdout;
                            run.due_at = Some(until);
                        }
                        None => end(run, RunStatus::Exited, Some("holdout"), now),
                    }
                    return records;
                }
                record.outcome = "treated".into();
                next = after.clone();
            }
            StepKind::Send { template, priority, next: after } => {
                if let Some(filter) = &def.filter
                    && !person.holds(&filter.0, now)
                {
                    end(run, RunStatus::Exited, Some("filter"), now);
                    return records;
                }
                record.outcome = "sent".into();
                record.action = Some(Action::Send {
                    template: template.clone(),
                    priority: priority.unwrap_or(default_priority(&def.trigger)),
                });
                next = after.clone();
            }
            StepKind::UpdateProfile { traits, next: after } => {
                record.outcome = "updated".into();
                record.action = Some(Action::UpdateProfile { traits: traits.clone() });
                next = after.clone();
            }
            StepKind::Tag { add, remove, next: after } => {
                record.outcome = "tagged".into();
                record.action = Some(Action::Tag { add: add.clone(), remove: remove.clone() });
                next = after.clone();
            }
            StepKind::Webhook { url, body, next: after } => {
                record.outcome = "called".into();
                record.action = Some(Action::Webhook { url: url.clone(), body: body.clone() });
                next = after.clone();
            }
            StepKind::AwardPoints { points, reason, next: after } => {
                record.outcome = "awarded".into();
                record.action = Some(Action::AwardPoints { points: *points, reason: reason.clone() });
                next = after.clone();
            }
            StepKind::Exit => {
                record.outcome = "exit".into();
                records.push(record);
                end(run, RunStatus::Exited, Some("exit_step"), now);
                return records;
            }
        }
        records.push(record);
        run.step = next;
        run.due_at = Some(now);
    }
    // Only reachable with a definition that validation would reject.
    end(run, RunStatus::Exited, Some("step_limit"), now);
    records
}

/// Abandonment flows outrank other flows in the messaging queue.
fn default_priority(trigger: &Trigger) -> Priority {
    match trigger {
        Trigger::Event(m) if m.name == "Checkout Started" || m.name == "Product Added" || m.name == "Cart Viewed" => {
            Priority::Abandonment
        }
        Trigger::SegmentEntered(s) if s.contains("abandon") => Priority::Abandonment,
        _ => Priority::Flow,
    }
}

fn same_values(event: &Value, trigger: &Value, path: &str) -> bool {
    let mine = values_at(event, path);
    let theirs = values_at(trigger, path);
    !theirs.is_empty() && mine.iter().any(|v| !v.is_null() && theirs.contains(v))
}

/// What an arriving event did to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum EventEffect {
    None,
    /// The awaited event: the run moves to `on_event`, due at once.
    Resumed(StepRecord),
    /// The goal was reached (and the run left, if the goal exits).
    Converted,
}

/// Applies an arriving event of the run's person: the goal first, then a wait it ends.
pub fn on_event(def: &FlowDefinition, run: &mut Run, event: &EventFact, now: DateTime<Utc>) -> EventEffect {
    if event.seq == run.trigger.seq && run.trigger.seq != 0 {
        return EventEffect::None;
    }
    if let Some(goal) = &def.goal
        && run.converted_at.is_none()
        && event.at >= run.entered_at
        && run.goal_until.is_some_and(|until| event.at <= until)
        && matches(event, &goal.event, event.at)
    {
        run.converted_at = Some(event.at);
        run.revenue = revenue(&event.properties);
        if goal.exit && matches!(run.status, RunStatus::Active | RunStatus::Waiting) {
            end(run, RunStatus::Exited, Some("goal"), now);
        }
        return EventEffect::Converted;
    }
    if run.status != RunStatus::Waiting {
        return EventEffect::None;
    }
    let Some(step) = run.step.as_deref().and_then(|s| def.step(s)) else { return EventEffect::None };
    let StepKind::WaitForEvent { event: wanted, same_as_trigger, timeout, on_event, .. } = &step.kind else {
        return EventEffect::None;
    };
    let since = run.due_at.map(|due| due - timeout.duration());
    let in_window = since.is_some_and(|s| event.at >= s) && run.due_at.is_some_and(|due| event.at <= due);
    if !in_window || !awaited(event, wanted, same_as_trigger, &run.trigger.properties) {
        return EventEffect::None;
    }
    run.visits += 1;
    let record = StepRecord {
        visit: run.visits,
        step: step.id.clone(),
        kind: "wait_for_event",
        at: event.at,
        outcome: "event".into(),
        action: None,
    };
    run.step = on_event.clone();
    run.status = RunStatus::Active;
    run.due_at = Some(event.at.min(now));
    EventEffect::Resumed(record)
}

fn awaited(event: &EventFact, wanted: &EventMatch, same: &[String], trigger: &Value) -> bool {
    matches(event, wanted, event.at) && same.iter().all(|path| same_values(&event.properties, trigger, path))
}

/// An order's revenue: `revenue`, else `total`, else `value`.
pub fn revenue(properties: &Value) -> f64 {
    ["revenue", "total", "value"]
        .iter()
        .find_map(|k| properties.get(*k).and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))))
        .unwrap_or(0.0)
}
