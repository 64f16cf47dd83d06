//! Evaluating a definition against one profile at one instant, and finding the next instant at which the
//! answer can change with no new data ("in the last 7 days" expiring, a sequence's wait running out), so a
//! scheduler can wake the profile up exactly then instead of rescanning everyone.
//!
//! Semantics worth knowing:
//! * A missing attribute (or a `null`) fails every comparison except through `not`: `traits.city != "Tokyo"`
//!   does not hold for a profile without a city; write `not traits.city = "Tokyo"` to include them.
//! * Numbers compare numerically, also when stored as strings ("42"); `=` on a list attribute holds when the
//!   list contains the value.
//! * Dates are RFC 3339 timestamps or `YYYY-MM-DD` days (midnight UTC). Anniversaries are in UTC days.
//! * Event windows: `last 7d` is `(now − 7d, now]`; `between 7d and 14d ago` is `[now − 14d, now − 7d]`; an
//!   absolute range is `[from, to)`. Events stamped after `now` are ignored until their time comes.
//! * A sequence `did A then not B within T` holds for an A (in the window) that is at least T old with no
//!   matching B in `(A, A + T]`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde_json::Value;

use crate::ast::*;

/// One event as segments see it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFact {
    /// Position in the event log: tells two events apart and makes seeing one twice harmless.
    pub seq: i64,
    /// Track event name, or the message type (`page`, `screen`, `identify`…) for other messages.
    pub name: std::sync::Arc<str>,
    pub at: DateTime<Utc>,
    pub properties: Value,
}

/// What the evaluator may ask of a profile. Implemented over the stored profile state by the engine, and by
/// plain structs in tests.
pub trait ProfileView {
    /// `traits.NAME[.field…]` or `computed.NAME[.field…]`.
    fn attribute(&self, path: &str) -> Option<&Value>;
    /// The profile's events, oldest first.
    fn events(&self) -> &[EventFact];
    fn consent_granted(&self, channel: &str, purpose: &str) -> bool;
    fn has_identifier(&self, kind: &str) -> bool;
    /// Latitude and longitude, when known.
    fn coordinates(&self) -> Option<(f64, f64)>;
}

/// The answer for one profile at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub member: bool,
    /// The earliest instant after `now` at which the answer can change without new data, if any.
    pub next_change: Option<DateTime<Utc>>,
}

/// Evaluates `condition` for `profile` at `now`. `in_segment` answers membership of other segments for this
/// profile (the engine evaluates dependencies first; cycles are rejected when definitions are saved).
pub fn evaluate(
    condition: &Condition,
    profile: &dyn ProfileView,
    now: DateTime<Utc>,
    in_segment: &dyn Fn(&str) -> bool,
) -> Evaluation {
    let mut next = NextChange { now, at: None };
    let member = eval(condition, profile, now, in_segment, &mut next);
    Evaluation { member, next_change: next.at }
}

struct NextChange {
    now: DateTime<Utc>,
    at: Option<DateTime<Utc>>,
}

impl NextChange {
    /// Notes an instant at which some leaf flips; only future instants count.
    fn at(&mut self, t: DateTime<Utc>) {
        if t > self.now && self.at.is_none_or(|current| t < current) {
            self.at = Some(t);
        }
    }
}

fn eval(
    c: &Condition,
    p: &dyn ProfileView,
    now: DateTime<Utc>,
    in_segment: &dyn Fn(&str) -> bool,
    next: &mut NextChange,
) -> bool {
    match c {
        Condition::And(all) => combine(all, false, p, now, in_segment, next),
        Condition::Or(any) => combine(any, true, p, now, in_segment, next),
        Condition::Not(inner) => !eval(inner, p, now, in_segment, next),
        Condition::Attribute(a) => match p.attribute(&a.path) {
            Some(value) if !value.is_null() => compare_value(value, &a.comparison, now, next),
            _ => false,
        },
        Condition::Event(e) => event_condition(e, p.events(), now, next),
        Condition::Sequence(s) => sequence(s, p.events(), now, next),
        Condition::Consent(c) => p.consent_granted(&c.channel, &c.purpose),
        Condition::HasIdentifier(kind) => p.has_identifier(kind),
        Condition::Near(n) => p.coordinates().is_some_and(|(lat, lon)| haversine_km(lat, lon, n.lat, n.lon) <= n.km),
        Condition::InSegment(name) => in_segment(name),
    }
}

/// An `and` (`decisive` false) or an `or` (`decisive` true). Every child is evaluated so that every
/// time-dependent leaf reports its next flip — except when a child gives the decisive answer and time alone
/// cannot change it (no next flip): then the whole answer is settled until new data arrives, which re-evaluates
/// anyway, so the other children's flips do not matter. Cheap children go first: most profiles fail a trait or a
/// consent before any event is read.
fn combine(
    children: &[Condition],
    decisive: bool,
    p: &dyn ProfileView,
    now: DateTime<Utc>,
    in_segment: &dyn Fn(&str) -> bool,
    next: &mut NextChange,
) -> bool {
    let mut flips = NextChange { now, at: None };
    let mut answer = !decisive;
    let cheap_first =
        children.iter().filter(|c| reads_no_events(c)).chain(children.iter().filter(|c| !reads_no_events(c)));
    for child in cheap_first {
        let mut own = NextChange { now, at: None };
        if eval(child, p, now, in_segment, &mut own) == decisive {
            if own.at.is_none() {
                return decisive;
            }
            answer = decisive;
        }
        if let Some(at) = own.at {
            flips.at(at);
        }
    }
    if let Some(at) = flips.at {
        next.at(at);
    }
    answer
}

/// Leaves that read no events (and the `not` of one): cheap to evaluate.
fn reads_no_events(c: &Condition) -> bool {
    match c {
        Condition::Event(_) | Condition::Sequence(_) | Condition::And(_) | Condition::Or(_) => false,
        Condition::Not(inner) => reads_no_events(inner),
        _ => true,
    }
}

/// Compares one stored value. Date comparisons report when they flip.
fn compare_value(value: &Value, comparison: &Comparison, now: DateTime<Utc>, next: &mut NextChange) -> bool {
    match comparison {
        Comparison::Equals(v) => equals(value, v),
        Comparison::NotEquals(v) => !equals(value, v),
        Comparison::Gt(x) => number(value).is_some_and(|n| n > *x),
        Comparison::Gte(x) => number(value).is_some_and(|n| n >= *x),
        Comparison::Lt(x) => number(value).is_some_and(|n| n < *x),
        Comparison::Lte(x) => number(value).is_some_and(|n| n <= *x),
        Comparison::Between(lo, hi) => number(value).is_some_and(|n| *lo <= n && n <= *hi),
        Comparison::Contains(v) => match (value, v) {
            (Value::String(s), Value::String(needle)) => s.contains(needle.as_str()),
            (Value::Array(items), needle) => items.iter().any(|i| equals(i, needle)),
            _ => false,
        },
        Comparison::StartsWith(prefix) => value.as_str().is_some_and(|s| s.starts_with(prefix.as_str())),
        Comparison::In(options) => options.iter().any(|o| equals(value, o)),
        Comparison::Exists => !value.is_null(),
        _ => time(value).is_some_and(|t| compare_time(t, comparison, now, next)),
    }
}

/// A time comparison, noting the instants at which it flips.
fn compare_time(t: DateTime<Utc>, comparison: &Comparison, now: DateTime<Utc>, next: &mut NextChange) -> bool {
    match comparison {
        Comparison::Before(limit) => t < *limit,
        Comparison::After(limit) => t > *limit,
        Comparison::WithinLast(span) => {
            next.at(t);
            next.at(t + span.duration() + Duration::milliseconds(1));
            t <= now && now - t <= span.duration()
        }
        Comparison::MoreThanAgo(span) => {
            next.at(t + span.duration() + Duration::milliseconds(1));
            now - t > span.duration()
        }
        Comparison::BetweenAgo(from, to) => {
            next.at(t + from.duration());
            next.at(t + to.duration() + Duration::milliseconds(1));
            let age = now - t;
            from.duration() <= age && age <= to.duration()
        }
        Comparison::AnniversaryWithin(span) => {
            // The answer can change at every UTC midnight.
            if let Some(midnight) = (now.date_naive() + Duration::days(1)).and_hms_opt(0, 0, 0) {
                next.at(midnight.and_utc());
            }
            days_to_anniversary(t.date_naive(), now.date_naive())
                .is_some_and(|d| Duration::days(d) < span.duration().max(Duration::days(1)))
        }
        _ => false,
    }
}

/// Days from `today` until the next anniversary of `date` (0 = today). 29 February falls on 28 February in
/// other years.
fn days_to_anniversary(date: NaiveDate, today: NaiveDate) -> Option<i64> {
    let on = |year: i32| {
        NaiveDate::from_ymd_opt(year, date.month(), date.day())
            .or_else(|| NaiveDate::from_ymd_opt(year, date.month(), date.day().saturating_sub(1)))
    };
    let this_year = on(today.year())?;
    let next = if this_year >= today { this_year } else { on(today.year() + 1)? };
    Some((next - today).num_days())
}

fn equals(value: &Value, expected: &Value) -> bool {
    match (value, expected) {
        (Value::Array(items), e) if !e.is_array() => items.iter().any(|i| equals(i, e)),
        (a, Value::Number(_)) | (a @ Value::Number(_), _) => match (number(a), number(expected)) {
            (Some(x), Some(y)) => x == y,
            _ => a == expected,
        },
        (a, b) => a == b,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// RFC 3339, or `YYYY-MM-DD` as midnight UTC.
pub fn time(value: &Value) -> Option<DateTime<Utc>> {
    let text = value.as_str()?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?))
}

/// The values at a dotted path; a list on the way fans out to its elements.
pub fn values_at<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![root];
    for part in path.split('.') {
        let mut following = Vec::new();
        for value in current {
            match value {
                Value::Object(map) => {
                    if let Some(v) = map.get(part) {
                        following.push(v);
                    }
                }
                Value::Array(items) => {
                    for item in items {
                        if let Some(v) = item.get(part) {
                            following.push(v);
                        }
                    }
                }
                _ => {}
            }
        }
        current = following;
    }
    // A list at the end of the path is its elements.
    current
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .collect()
}

/// Whether an event passes an event match (name, then every property filter on any value at its path).
pub fn matches(event: &EventFact, m: &EventMatch, now: DateTime<Utc>) -> bool {
    matching(event, m, now, &mut NextChange { now, at: None })
}

/// [`matches`], noting when a filter's answer flips (`where ends_at within last 14d`): the answer of the
/// condition around it can change then, and the engine must wake the profile.
fn matching(event: &EventFact, m: &EventMatch, now: DateTime<Utc>, next: &mut NextChange) -> bool {
    *event.name == *m.name
        && m.filters.iter().all(|f| {
            any_value_at(&event.properties, &f.path, &mut |v| {
                !v.is_null() && compare_value(v, &f.comparison, now, next)
            })
        })
}

/// Whether `test` holds for any of [`values_at`]`(root, path)` (without collecting them: filters run on every
/// kept event of every profile in a build).
fn any_value_at(root: &Value, path: &str, test: &mut dyn FnMut(&Value) -> bool) -> bool {
    let (part, rest) = match path.split_once('.') {
        Some((part, rest)) => (part, Some(rest)),
        None => (path, None),
    };
    let mut at_child = |child: &Value| match (rest, child) {
        (Some(rest), _) => any_value_at(child, rest, test),
        (None, Value::Array(items)) => items.iter().any(&mut *test),
        (None, value) => test(value),
    };
    match root {
        Value::Object(map) => map.get(part).is_some_and(&mut at_child),
        Value::Array(items) => items.iter().filter_map(|item| item.get(part)).any(at_child),
        _ => false,
    }
}

/// Whether `at` is inside the window at `now`, noting when the event enters or leaves it.
fn in_window(at: DateTime<Utc>, window: &Window, now: DateTime<Utc>, next: &mut NextChange) -> bool {
    if at > now {
        next.at(at);
        return false;
    }
    match window {
        Window::Ever => true,
        Window::Last(span) => {
            let leaves = at + span.duration();
            next.at(leaves);
            now < leaves
        }
        Window::BetweenAgo(from, to) => {
            next.at(at + from.duration());
            next.at(at + to.duration() + Duration::milliseconds(1));
            let age = now - at;
            from.duration() <= age && age <= to.duration()
        }
        Window::Range(from, to) => *from <= at && at < *to,
    }
}

fn event_condition(e: &EventCondition, events: &[EventFact], now: DateTime<Utc>, next: &mut NextChange) -> bool {
    let mut count = 0u64;
    let mut values: Vec<f64> = Vec::new();
    let (mut first, mut last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    for event in events {
        if !matching(event, &e.matches, now, next) || !in_window(event.at, &e.window, now, next) {
            continue;
        }
        count += 1;
        first = Some(first.map_or(event.at, |f| f.min(event.at)));
        last = Some(last.map_or(event.at, |l| l.max(event.at)));
        if let Measure::Sum(path) | Measure::Avg(path) | Measure::Min(path) | Measure::Max(path) = &e.measure {
            values.extend(values_at(&event.properties, path).into_iter().filter_map(number));
        }
    }
    let aggregate = match &e.measure {
        Measure::Count => Some(count as f64),
        Measure::Sum(_) => Some(values.iter().sum()),
        Measure::Avg(_) => (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
        Measure::Min(_) => values.iter().copied().reduce(f64::min),
        Measure::Max(_) => values.iter().copied().reduce(f64::max),
        Measure::First => return first.is_some_and(|t| compare_time(t, &e.comparison, now, next)),
        Measure::Last => return last.is_some_and(|t| compare_time(t, &e.comparison, now, next)),
    };
    aggregate.is_some_and(|a| compare_value(&serde_json::json!(a), &e.comparison, now, next))
}

fn sequence(s: &SequenceCondition, events: &[EventFact], now: DateTime<Utc>, next: &mut NextChange) -> bool {
    let within = s.within.duration();
    let mut holds = false;
    for (i, a) in events.iter().enumerate() {
        if !matching(a, &s.first, now, next) || !in_window(a.at, &s.window, now, next) {
            continue;
        }
        let deadline = a.at + within;
        let answered = events[i + 1..]
            .iter()
            .take_while(|b| b.at <= deadline)
            .any(|b| b.at > a.at && b.at <= now && matching(b, &s.then_not, now, next));
        if answered {
            continue;
        }
        if now >= deadline {
            holds = true;
        } else {
            next.at(deadline);
        }
    }
    holds
}

/// Great-circle distance in km.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn testing_values_in_place_sees_what_collecting_them_sees() {
        let properties = json!({
            "category": "shoes",
            "tags": ["sale", "new"],
            "product": {"brand": "Acme", "sizes": [40, 41]},
            "products": [
                {"sku": "a", "category": "bags", "variants": [{"color": "red"}, {"color": "blue"}]},
                {"sku": "b", "category": "shoes"},
                ["not", "an", "object"],
                {"sku": null}
            ]
        });
        let paths = [
            "category",
            "tags",
            "missing",
            "product.brand",
            "product.sizes",
            "product.missing",
            "products.sku",
            "products.category",
            "products.variants.color",
            "products",
            "category.deeper",
            "tags.deeper",
        ];
        for path in paths {
            let collected: Vec<Value> = values_at(&properties, path).into_iter().cloned().collect();
            let mut seen = Vec::new();
            let found = any_value_at(&properties, path, &mut |v| {
                seen.push(v.clone());
                false
            });
            assert!(!found, "{path}");
            assert_eq!(seen, collected, "{path}");
            let wanted = collected.first().cloned();
            let stop_at_first = any_value_at(&properties, path, &mut |v| Some(v) == wanted.as_ref());
            assert_eq!(stop_at_first, wanted.is_some(), "{path}");
        }
    }
}
