//! Replay before launch over the store's history: who would have entered a draft flow in the last N days,
//! the path each took, and what messaging would have done with each send — without sending anything.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use kizuna_flows::machine::PersonContext;
use kizuna_flows::person::Snapshot;
use kizuna_flows::simulate::{self, PersonHistory, SegmentChange, SendVerdict, SimPerson, SimRun, SimSummary};
use kizuna_flows::{FlowDefinition, Trigger};
use kizuna_identity::ProfileId;
use kizuna_segments::summary::Interest;
use kizuna_store::TransitionFilter;
use serde::{Deserialize, Serialize};

use crate::delivery::Delivery;
use crate::person::{fact, load_snapshot};
use crate::{FlowEngine, FlowsResult};
use kizuna_flows::validate::FlowError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRequest {
    /// How many days of history to replay (1–365).
    #[serde(default = "thirty")]
    pub days: u32,
    /// How many runs to return in full (the summary counts them all).
    #[serde(default = "fifty")]
    pub sample: usize,
    /// A draft definition to replay instead of the saved one.
    #[serde(default)]
    pub definition: Option<serde_json::Value>,
}

fn thirty() -> u32 {
    30
}

fn fifty() -> usize {
    50
}

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub summary: SimSummary,
    /// The first runs in time order.
    pub runs: Vec<SimRun>,
    pub took_ms: f64,
}

/// People replayed at most.
const MAX_PEOPLE: usize = 200_000;

struct ReplayPerson<'a> {
    snapshot: Snapshot,
    delivery: &'a dyn Delivery,
    profile: ProfileId,
    sent: Vec<DateTime<Utc>>,
}

impl PersonContext for ReplayPerson<'_> {
    fn holds(&mut self, condition: &kizuna_segments::Condition, now: DateTime<Utc>) -> bool {
        self.snapshot.holds(condition, now)
    }

    fn zone(&mut self) -> chrono_tz::Tz {
        self.snapshot.zone()
    }
}

impl SimPerson for ReplayPerson<'_> {
    fn send(&mut self, template: &str, at: DateTime<Utc>) -> SendVerdict {
        let verdict = self.delivery.dry_run(template, self.profile, at, &self.sent);
        if verdict.decision == "send" {
            self.sent.push(at);
        }
        verdict
    }
}

impl FlowEngine {
    /// Replays a flow (its latest version, or `request.definition`) over the last `days` of history.
    pub fn simulate(&self, name: &str, request: &SimRequest) -> FlowsResult<SimReport> {
        let started = std::time::Instant::now();
        if !(1..=365).contains(&request.days) {
            return Err(FlowError { field: "days".into(), message: "replay 1 to 365 days".into() }.into());
        }
        let def = match &request.definition {
            Some(definition) => self.check(definition)?,
            None => {
                let flow = self.stored(name)?;
                (*self.definition(flow.id, flow.version)?).clone()
            }
        };
        if matches!(def.trigger, Trigger::Schedule(_) | Trigger::Manual | Trigger::Date(_)) {
            return Err(FlowError {
                field: "trigger".into(),
                message: "replay covers event and segment triggers; date, schedule and manual flows start from a \
                          list, not from history"
                    .into(),
            }
            .into());
        }
        let to = self.now();
        let from = to - Duration::days(i64::from(request.days));
        let mut people: BTreeMap<ProfileId, PersonHistory> = BTreeMap::new();
        let mut triggered: HashSet<ProfileId> = HashSet::new();
        self.gather_events(&def, from, &mut people, &mut triggered)?;
        self.gather_transitions(&def, from, &mut people, &mut triggered)?;
        let mut summary = SimSummary::default();
        let mut runs = Vec::new();
        let with_events = !def.conditions().is_empty();
        for profile in triggered.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().take(MAX_PEOPLE)
        {
            let Some(history) = people.get_mut(&profile) else { continue };
            history.events.sort_by_key(|e| (e.at, e.seq));
            history.segment_changes.sort_by_key(|c| c.at);
            let Some(mut snapshot) = load_snapshot(
                self.inner.store.as_ref(),
                profile,
                to,
                false,
                self.inner.default_zone,
                self.inner.settings.purchase_window_days,
            )?
            else {
                continue;
            };
            if with_events {
                snapshot.events = history.events.clone();
            }
            let mut person =
                ReplayPerson { snapshot, delivery: self.inner.delivery.as_ref(), profile, sent: Vec::new() };
            summary.people += 1;
            for run in simulate::replay_person(name, &def, history, &mut person, from, to, &mut summary.refused) {
                summary.add(&run);
                runs.push(run);
            }
        }
        runs.sort_by_key(|r| (r.entered_at, r.profile));
        runs.truncate(request.sample.min(1_000));
        Ok(SimReport { from, to, summary, runs, took_ms: started.elapsed().as_secs_f64() * 1e3 })
    }

    fn gather_events(
        &self,
        def: &FlowDefinition,
        from: DateTime<Utc>,
        people: &mut BTreeMap<ProfileId, PersonHistory>,
        triggered: &mut HashSet<ProfileId>,
    ) -> FlowsResult<()> {
        let mut names: HashSet<String> = def.awaited_events().into_iter().map(str::to_string).collect();
        let trigger_name = match &def.trigger {
            Trigger::Event(m) => Some(m.name.clone()),
            _ => None,
        };
        names.extend(trigger_name.clone());
        let mut interest = Interest::default();
        for condition in def.conditions() {
            interest.add(condition);
        }
        names.extend(interest.events.keys().cloned());
        if names.is_empty() {
            return Ok(());
        }
        let wanted = |name: &str| names.contains(name);
        let mut after = 0;
        let mut by_profile: HashMap<ProfileId, Vec<kizuna_segments::eval::EventFact>> = HashMap::new();
        loop {
            let (page, last) = self.inner.store.scan_events(after, 10_000, &wanted)?;
            for scanned in page {
                if !wanted(&scanned.name) {
                    continue;
                }
                let profile = scanned.profile_id;
                if let Some(event) = fact(scanned.seq, scanned.body) {
                    if trigger_name.as_deref() == Some(&*event.name) && event.at >= from {
                        triggered.insert(profile);
                    }
                    by_profile.entry(profile).or_default().push(event);
                }
            }
            match last {
                Some(last) if last > after => after = last,
                _ => break,
            }
        }
        for (profile, events) in by_profile {
            people.entry(profile).or_insert_with(|| PersonHistory { profile, ..PersonHistory::default() }).events =
                events;
        }
        Ok(())
    }

    fn gather_transitions(
        &self,
        def: &FlowDefinition,
        from: DateTime<Utc>,
        people: &mut BTreeMap<ProfileId, PersonHistory>,
        triggered: &mut HashSet<ProfileId>,
    ) -> FlowsResult<()> {
        let (segment, entered) = match &def.trigger {
            Trigger::SegmentEntered(s) => (s, true),
            Trigger::SegmentExited(s) => (s, false),
            _ => return Ok(()),
        };
        let Some(stored) = self.inner.store.segment_by_name(segment)? else { return Ok(()) };
        let mut after = 0;
        loop {
            let filter =
                TransitionFilter { segment_id: Some(stored.id), after_seq: after, limit: 10_000, ..Default::default() };
            let page = self.inner.store.segment_transitions(&filter)?;
            let Some(last) = page.last().map(|t| t.seq) else { break };
            after = last;
            for t in page {
                if t.at < from {
                    continue;
                }
                if t.entered == entered {
                    triggered.insert(t.profile_id);
                }
                people
                    .entry(t.profile_id)
                    .or_insert_with(|| PersonHistory { profile: t.profile_id, ..PersonHistory::default() })
                    .segment_changes
                    .push(SegmentChange { segment: t.segment.clone(), entered: t.entered, at: t.at });
            }
        }
        Ok(())
    }
}
