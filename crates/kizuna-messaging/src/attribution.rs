//! Which message earned an order: the last one clicked within the click window before it, else (when opens
//! count) the last one opened by a person — not a privacy proxy — within the open window.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchKind {
    Open,
    Click,
}

impl TouchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TouchKind::Open => "open",
            TouchKind::Click => "click",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub message_id: String,
    pub kind: TouchKind,
    pub at: DateTime<Utc>,
    /// Opened by a machine (privacy proxy, scanner): never earns an order.
    pub machine: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Windows {
    pub click_days: u32,
    pub open_days: u32,
    pub count_opens: bool,
}

impl Default for Windows {
    fn default() -> Self {
        Windows { click_days: 5, open_days: 1, count_opens: true }
    }
}

impl Windows {
    /// How far back touches can matter.
    pub fn lookback(&self) -> Duration {
        Duration::days(i64::from(self.click_days.max(if self.count_opens { self.open_days } else { 0 })))
    }
}

pub fn attribute<'t>(order_at: DateTime<Utc>, touches: &'t [Touch], windows: &Windows) -> Option<&'t Touch> {
    let within = |t: &&Touch, days: u32| t.at <= order_at && order_at - t.at <= Duration::days(i64::from(days));
    let latest = |kind: TouchKind, days: u32| {
        touches.iter().filter(|t| t.kind == kind && !t.machine).filter(|t| within(t, days)).max_by_key(|t| t.at)
    };
    latest(TouchKind::Click, windows.click_days)
        .or_else(|| if windows.count_opens { latest(TouchKind::Open, windows.open_days) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default() + Duration::hours(hours)
    }

    fn touch(id: &str, kind: TouchKind, hours: i64, machine: bool) -> Touch {
        Touch { message_id: id.into(), kind, at: at(hours), machine }
    }

    #[test]
    fn last_click_wins_then_last_human_open() {
        let touches = vec![
            touch("old-click", TouchKind::Click, 0, false),
            touch("click", TouchKind::Click, 10, false),
            touch("open-after-click", TouchKind::Open, 20, false),
            touch("after-order", TouchKind::Click, 200, false),
        ];
        let w = Windows::default();
        assert_eq!(attribute(at(100), &touches, &w).map(|t| t.message_id.as_str()), Some("click"));
        // Clicks older than 5 days do not count; the open is older than a day too.
        assert_eq!(attribute(at(10 + 24 * 5 + 1), &touches, &w).map(|t| t.message_id.as_str()), None);
        let opens = vec![touch("proxy", TouchKind::Open, 5, true), touch("human", TouchKind::Open, 4, false)];
        assert_eq!(attribute(at(6), &opens, &w).map(|t| t.message_id.as_str()), Some("human"));
        assert_eq!(attribute(at(6), &opens, &Windows { count_opens: false, ..w.clone() }), None);
        assert_eq!(attribute(at(30), &opens, &w), None);
    }
}
