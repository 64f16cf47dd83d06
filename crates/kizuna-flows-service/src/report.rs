//! The flow report: runs by status and exit reason, per-step executions by outcome, messages handed to
//! messaging, conversions and revenue within the goal window, and each arm's lift against the hold-out.

use std::collections::BTreeMap;

use kizuna_flows::lift::{Lift, Outcome, lift};
use serde::Serialize;

use crate::{FlowEngine, FlowsResult};

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub executions: i64,
    /// People inside the flow at this step now (waiting at it, or due to run it next).
    pub in_progress: i64,
    /// Executions by outcome (`sent`, `then`, `else`, a branch name, `failed: …`).
    pub outcomes: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmReport {
    /// The split branches taken (`A`, `B/long`), or none.
    pub arm: Option<String>,
    pub entered: u64,
    pub converted: u64,
    pub conversion_rate: f64,
    pub revenue: f64,
    /// Against the hold-out, when the flow has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lift: Option<Lift>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub flow: String,
    pub entered: i64,
    pub in_progress: i64,
    pub by_status: BTreeMap<String, i64>,
    pub exited_by_reason: BTreeMap<String, i64>,
    pub messages_queued: i64,
    pub conversions: u64,
    pub revenue: f64,
    pub steps: Vec<StepReport>,
    pub arms: Vec<ArmReport>,
    /// The hold-out's own numbers, when the flow has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout: Option<ArmReport>,
}

impl FlowEngine {
    pub fn report(&self, name: &str) -> FlowsResult<FlowReport> {
        let flow = self.stored(name)?;
        let counts = self.inner.store.flows().flow_counts(flow.id)?;
        let by_status: BTreeMap<String, i64> = counts.by_status.into_iter().collect();
        let entered = by_status.values().sum();
        let in_progress = ["active", "waiting", "holdout"].iter().filter_map(|s| by_status.get(*s)).sum();
        let mut steps: BTreeMap<String, StepReport> = BTreeMap::new();
        let mut messages_queued = 0;
        for (step, outcome, n) in counts.by_step {
            if outcome == "sent" {
                messages_queued += n;
            }
            let entry = steps.entry(step.clone()).or_insert_with(|| StepReport {
                step,
                executions: 0,
                in_progress: 0,
                outcomes: BTreeMap::new(),
            });
            entry.executions += n;
            *entry.outcomes.entry(outcome).or_default() += n;
        }
        for (step, n) in counts.waiting_at {
            steps
                .entry(step.clone())
                .or_insert_with(|| StepReport { step, executions: 0, in_progress: 0, outcomes: BTreeMap::new() })
                .in_progress = n;
        }
        let mut holdout = Outcome::default();
        let mut arms: BTreeMap<Option<String>, Outcome> = BTreeMap::new();
        for (arm, held, n, converted, revenue) in counts.by_arm {
            let target = if held { &mut holdout } else { arms.entry(arm).or_default() };
            target.entered += n as u64;
            target.converted += converted as u64;
            target.revenue += revenue;
        }
        let arm_report = |arm: Option<String>, o: Outcome, with_lift: bool| ArmReport {
            arm,
            entered: o.entered,
            converted: o.converted,
            conversion_rate: o.rate(),
            revenue: o.revenue,
            lift: if with_lift { lift(o, holdout) } else { None },
        };
        let conversions = holdout.converted + arms.values().map(|o| o.converted).sum::<u64>();
        let revenue = holdout.revenue + arms.values().map(|o| o.revenue).sum::<f64>();
        Ok(FlowReport {
            flow: flow.name,
            entered,
            in_progress,
            by_status,
            exited_by_reason: counts.by_exit_reason.into_iter().collect(),
            messages_queued,
            conversions,
            revenue,
            steps: steps.into_values().collect(),
            arms: arms.into_iter().map(|(arm, o)| arm_report(arm, o, holdout.entered > 0)).collect(),
            holdout: (holdout.entered > 0).then(|| arm_report(Some("holdout".into()), holdout, false)),
        })
    }
}
