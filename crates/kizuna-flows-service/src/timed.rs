//! Triggers that come from the calendar rather than from an input: date attributes (birthdays, first-order
//! anniversaries, a predicted next order) and recurring schedules. Each flow keeps a cursor: the instant up
//! to which its firings were enrolled; a sweep enrols every firing in (cursor, now] with its own time.

use chrono::{DateTime, Duration, TimeZone, Utc};
use kizuna_flows::definition::ScheduleTrigger;
use kizuna_flows::machine::TriggerInfo;
use kizuna_flows::time::{attribute_date, next_date_firing, next_local_time, zone};
use kizuna_flows::{DateTrigger, Trigger};
use serde_json::{Value, json};

use crate::engine::{LiveFlow, Work};
use crate::{FlowEngine, FlowsResult};

const PAGE: usize = 2_000;

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl FlowEngine {
    /// Enrols what the calendar triggered since the last sweep. Date flows are swept at most every
    /// `date_sweep`; schedules fire at their instants.
    pub(crate) async fn sweep_calendar(&self, flows: &[LiveFlow]) -> FlowsResult<bool> {
        let now = self.now();
        let mut worked = false;
        for flow in flows {
            let cursor_name = format!("calendar:{}", flow.id);
            let cursor = self.inner.store.flows().flow_cursor(&cursor_name)?;
            match &flow.def.trigger {
                Trigger::Date(trigger) => {
                    let Some(since) = cursor else {
                        self.set_cursor(&cursor_name, now).await?;
                        continue;
                    };
                    let since = from_ms(since);
                    if now - since < Duration::minutes(i64::from(self.inner.settings.date_sweep_minutes)) {
                        continue;
                    }
                    self.sweep_dates(flow, trigger, since, now).await?;
                    self.set_cursor(&cursor_name, now).await?;
                    worked = true;
                }
                Trigger::Schedule(schedule) => {
                    let since = cursor.map_or(now, from_ms);
                    if cursor.is_none() {
                        self.set_cursor(&cursor_name, now).await?;
                        continue;
                    }
                    let next = next_local_time(
                        since + Duration::minutes(1),
                        schedule.at,
                        &schedule.weekdays,
                        self.inner.default_zone,
                    );
                    if next > now {
                        continue;
                    }
                    self.fire_schedule(flow, schedule, next).await?;
                    self.set_cursor(&cursor_name, next).await?;
                    worked = true;
                }
                _ => {}
            }
        }
        Ok(worked)
    }

    async fn set_cursor(&self, name: &str, at: DateTime<Utc>) -> FlowsResult<()> {
        let batch = kizuna_store::flows::FlowBatch {
            cursors: vec![(name.into(), at.timestamp_millis())],
            ..Default::default()
        };
        self.inner.store.flows().apply_flow_batch(&batch, self.now())?;
        Ok(())
    }

    async fn sweep_dates(
        &self,
        flow: &LiveFlow,
        trigger: &DateTrigger,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> FlowsResult<()> {
        let mut after = None;
        loop {
            let page = self.inner.store.scan_profile_data(after, PAGE)?;
            let Some(last) = page.last().map(|p| p.id) else { break };
            after = Some(last);
            let mut work = Work::new(self, now);
            for profile in page {
                let traits = profile.state.trait_values();
                let value: Option<Value> = match trigger.attribute.split_once('.') {
                    Some(("traits", name)) => traits.get(name).cloned(),
                    Some(("computed", name)) => kizuna_jobs::facts::computed_attributes(
                        &profile.state,
                        profile.scores.as_ref(),
                        now,
                        self.inner.settings.purchase_window_days,
                    )
                    .get(name)
                    .cloned(),
                    _ => None,
                };
                let Some(value) = value else { continue };
                let tz = zone(traits.get("timezone").and_then(Value::as_str), self.inner.default_zone);
                let Some(date) = attribute_date(&value, tz) else { continue };
                let Some(firing) = next_date_firing(date, trigger.offset, trigger.yearly, trigger.at, tz, since) else {
                    continue;
                };
                if firing <= now {
                    let info = TriggerInfo {
                        seq: 0,
                        name: "Date Reached".into(),
                        properties: json!({"attribute": trigger.attribute, "date": date.to_string()}),
                        at: firing,
                    };
                    work.enter(flow, profile.id, info)?;
                }
            }
            work.finish().await?;
        }
        Ok(())
    }

    async fn fire_schedule(&self, flow: &LiveFlow, schedule: &ScheduleTrigger, at: DateTime<Utc>) -> FlowsResult<()> {
        let segment = match &schedule.segment {
            Some(name) => match self.inner.store.segment_by_name(name)? {
                Some(s) => Some(s.id),
                None => {
                    tracing::warn!(flow = %flow.name, segment = %name, "scheduled flow's segment is gone; skipped");
                    return Ok(());
                }
            },
            None => None,
        };
        let mut after = None;
        loop {
            let ids: Vec<u64> = match segment {
                Some(id) => self.inner.store.segment_members(id, after, PAGE)?.into_iter().map(|(p, _)| p).collect(),
                None => self.inner.store.scan_profile_data(after, PAGE)?.into_iter().map(|p| p.id).collect(),
            };
            let Some(&last) = ids.last() else { break };
            after = Some(last);
            let mut work = Work::new(self, self.now());
            for profile in ids {
                let info =
                    TriggerInfo { seq: 0, name: "Scheduled".into(), properties: json!({"flow": &*flow.name}), at };
                work.enter(flow, profile, info)?;
            }
            work.finish().await?;
        }
        Ok(())
    }
}
