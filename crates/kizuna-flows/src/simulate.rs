//! Replay before launch: a draft flow run over real history in simulated time, sending nothing. Each person
//! is replayed on their own: their events and segment transitions in time order, interleaved with the timers
//! of their runs, through the same machine the live engine uses ([`crate::machine`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use kizuna_segments::eval::EventFact;
use serde::Serialize;

use crate::definition::{FlowDefinition, Trigger};
use crate::machine::{self, Action, EventEffect, PersonContext, PriorRuns, Run, RunStatus, StepRecord, TriggerInfo};

/// A segment entry or exit in someone's history.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentChange {
    pub segment: String,
    pub entered: bool,
    pub at: DateTime<Utc>,
}

/// One person's history over the replayed period, oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersonHistory {
    pub profile: ProfileId,
    pub events: Vec<EventFact>,
    pub segment_changes: Vec<SegmentChange>,
    /// Date trigger firings inside the period (computed by the caller from the person's attribute).
    pub date_firings: Vec<DateTime<Utc>>,
}

/// What messaging would have done with a send: the governor's answer, as the messaging pipeline decides it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendVerdict {
    /// `send`, `defer`, `suppress`, `drop`.
    pub decision: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// The replay's view of the world for one person.
pub trait SimPerson: PersonContext {
    /// What messaging would do with this template for this person at `at`, given the sends so far.
    fn send(&mut self, template: &str, at: DateTime<Utc>) -> SendVerdict;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimSend {
    pub step: String,
    pub template: String,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub verdict: SendVerdict,
}

/// One simulated run: who, which path, what would have been sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimRun {
    #[serde(serialize_with = "as_text")]
    pub profile: ProfileId,
    pub entered_at: DateTime<Utc>,
    pub trigger: String,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    pub holdout: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted_at: Option<DateTime<Utc>>,
    pub revenue: f64,
    pub path: Vec<StepRecord>,
    pub sends: Vec<SimSend>,
}

fn as_text<S: serde::Serializer>(id: &ProfileId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// Why a trigger did not start a run, counted.
pub type Refusals = BTreeMap<String, u64>;

/// Replays one person. `to` ends the period: runs still going then are reported as they stand.
pub fn replay_person(
    flow: &str,
    def: &FlowDefinition,
    history: &PersonHistory,
    person: &mut dyn SimPerson,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    refusals: &mut Refusals,
) -> Vec<SimRun> {
    enum Input<'a> {
        Event(&'a EventFact),
        Segment(&'a SegmentChange),
        Date(DateTime<Utc>),
    }
    let mut inputs: Vec<(DateTime<Utc>, i64, Input<'_>)> = Vec::new();
    inputs.extend(history.events.iter().map(|e| (e.at, e.seq, Input::Event(e))));
    inputs.extend(history.segment_changes.iter().map(|c| (c.at, 0, Input::Segment(c))));
    inputs.extend(history.date_firings.iter().map(|t| (*t, 0, Input::Date(*t))));
    inputs.retain(|(at, ..)| *at >= from && *at <= to);
    inputs.sort_by_key(|(at, seq, _)| (*at, *seq));

    let goal_exits = def.goal.as_ref().is_some_and(|goal| goal.exit);
    let mut runs: Vec<SimRun> = Vec::new();
    let mut live: Vec<(Run, usize)> = Vec::new();
    let mut inputs = inputs.into_iter().peekable();
    loop {
        let next_timer = live.iter().enumerate().filter_map(|(i, (r, _))| r.due_at.map(|d| (d, i))).min();
        let next_input = inputs.peek().map(|(at, ..)| *at);
        // At the same instant an input goes first: an event at a wait's deadline still counts.
        let take_timer = match (next_timer, next_input) {
            (Some((due, _)), Some(at)) => due < at,
            (Some((due, _)), None) => due <= to,
            (None, _) => false,
        };
        if take_timer {
            let Some((due, i)) = next_timer else { break };
            let (run, slot) = &mut live[i];
            let records = machine::advance(flow, def, run, person, due);
            record(&mut runs[*slot], run, records, person, goal_exits);
        } else if let Some((at, _, input)) = inputs.next() {
            let trigger = match input {
                Input::Event(event) => {
                    for (run, slot) in live.iter_mut() {
                        match machine::on_event(def, run, event, at) {
                            EventEffect::Resumed(step) => {
                                runs[*slot].path.push(step);
                                let records = machine::advance(flow, def, run, person, at);
                                record(&mut runs[*slot], run, records, person, goal_exits);
                            }
                            EventEffect::Converted => record(&mut runs[*slot], run, Vec::new(), person, goal_exits),
                            EventEffect::None => {}
                        }
                    }
                    let starts = machine::event_triggers(def, event);
                    let info = TriggerInfo {
                        seq: event.seq,
                        name: event.name.to_string(),
                        properties: event.properties.clone(),
                        at,
                    };
                    starts.then_some(info)
                }
                Input::Segment(change) => {
                    let starts = machine::transition_triggers(def, &change.segment, change.entered);
                    let name = if change.entered { "Segment Entered" } else { "Segment Exited" };
                    let info = TriggerInfo {
                        seq: 0,
                        name: name.into(),
                        properties: serde_json::json!({"segment": change.segment}),
                        at,
                    };
                    starts.then_some(info)
                }
                Input::Date(t) => {
                    let starts = matches!(def.trigger, Trigger::Date(_));
                    starts.then(|| TriggerInfo {
                        seq: 0,
                        name: "Date Reached".into(),
                        properties: serde_json::Value::Null,
                        at: t,
                    })
                }
            };
            if let Some(info) = trigger {
                let prior = PriorRuns {
                    live: live.iter().filter(|(r, _)| r.status.is_live()).count(),
                    last_entered: runs.iter().map(|r| r.entered_at).max(),
                };
                let refused = machine::may_enter(def, &prior, at).err().map(str::to_string).or_else(|| {
                    def.entry.filter.as_ref().filter(|f| !person.holds(&f.0, at)).map(|_| "entry_filter".to_string())
                });
                if let Some(reason) = refused {
                    *refusals.entry(reason).or_default() += 1;
                } else {
                    let id = runs.len() as i64 + 1;
                    let mut run = machine::start_run(def, id, history.profile, 0, info);
                    runs.push(SimRun {
                        profile: history.profile,
                        entered_at: at,
                        trigger: run.trigger.name.clone(),
                        status: run.status,
                        exit_reason: None,
                        arm: None,
                        holdout: false,
                        converted_at: None,
                        revenue: 0.0,
                        path: Vec::new(),
                        sends: Vec::new(),
                    });
                    let slot = runs.len() - 1;
                    let records = machine::advance(flow, def, &mut run, person, at);
                    record(&mut runs[slot], &run, records, person, goal_exits);
                    live.push((run, slot));
                }
            }
        } else {
            break;
        }
        // Ended runs stay while they can still convert.
        live.retain(|(run, _)| run.status.is_live() || (run.converted_at.is_none() && run.goal_until.is_some()));
    }
    runs
}

fn record(out: &mut SimRun, run: &Run, records: Vec<StepRecord>, person: &mut dyn SimPerson, goal_exits: bool) {
    let converted_now = out.converted_at.is_none() && run.converted_at.is_some();
    let filtered_now = out.exit_reason.is_none() && run.exit_reason.as_deref() == Some("filter");
    for step in records {
        if let Some(Action::Send { template, .. }) = &step.action {
            let verdict = person.send(template, step.at);
            out.sends.push(SimSend { step: step.step.clone(), template: template.clone(), at: step.at, verdict });
        }
        out.path.push(step);
    }
    out.status = run.status;
    out.exit_reason = run.exit_reason.clone();
    out.arm = run.arm.clone();
    out.holdout = run.holdout;
    out.converted_at = run.converted_at;
    out.revenue = run.revenue;
    // As live: a send messaging still holds (deferred past this moment) does not go once the person reached a
    // goal that exits or stopped matching the flow's filter — the engine withdraws it.
    let ended = match (converted_now && goal_exits, filtered_now) {
        (true, _) => run.converted_at.map(|at| (at, "goal")),
        (false, true) => run.ended_at.map(|at| (at, "filter")),
        (false, false) => None,
    };
    if let Some((at, why)) = ended {
        for send in &mut out.sends {
            if send.verdict.decision == "defer" && send.verdict.until.is_some_and(|until| until > at) {
                send.verdict =
                    SendVerdict { decision: "drop".into(), reason: format!("flow_run_ended: {why}"), until: None };
            }
        }
    }
}

/// Totals over a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimSummary {
    pub people: u64,
    pub entered: u64,
    pub refused: Refusals,
    pub by_status: BTreeMap<String, u64>,
    pub by_exit_reason: BTreeMap<String, u64>,
    /// Executions per step id.
    pub by_step: BTreeMap<String, u64>,
    /// Sends per governor decision (`send`, `defer`, `suppress`, `drop`).
    pub sends: BTreeMap<String, u64>,
    pub converted: u64,
    pub revenue: f64,
}

impl SimSummary {
    pub fn add(&mut self, run: &SimRun) {
        self.entered += 1;
        *self.by_status.entry(run.status.as_str().into()).or_default() += 1;
        if let Some(reason) = &run.exit_reason {
            *self.by_exit_reason.entry(reason.clone()).or_default() += 1;
        }
        for step in &run.path {
            *self.by_step.entry(step.step.clone()).or_default() += 1;
        }
        for send in &run.sends {
            *self.sends.entry(send.verdict.decision.clone()).or_default() += 1;
        }
        if run.converted_at.is_some() {
            self.converted += 1;
            self.revenue += run.revenue;
        }
    }
}
