//! Local time: delays until a time of day in the person's zone, anniversaries, schedules.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::definition::{LocalTime, SignedSpan, TimeOfDay, WeekdayName};

/// The person's zone, or `default` when theirs is unknown or not an IANA name.
pub fn zone(name: Option<&str>, default: Tz) -> Tz {
    name.and_then(|n| n.parse::<Tz>().ok()).unwrap_or(default)
}

/// A local wall-clock time as an instant; in a DST gap, the first instant after it.
fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => resolve(tz, local + Duration::hours(1)),
    }
}

fn allowed(weekdays: &[WeekdayName], date: NaiveDate) -> bool {
    weekdays.is_empty() || weekdays.iter().any(|w| w.weekday() == date.weekday())
}

fn time_of(at: TimeOfDay) -> NaiveTime {
    NaiveTime::from_hms_opt(at.hour, at.minute, 0).unwrap_or(NaiveTime::MIN)
}

/// The first instant at or after `from` that is `at` local time on an allowed weekday.
pub fn next_local_time(from: DateTime<Utc>, at: TimeOfDay, weekdays: &[WeekdayName], tz: Tz) -> DateTime<Utc> {
    let mut date = from.with_timezone(&tz).date_naive();
    for _ in 0..8 {
        if allowed(weekdays, date) {
            let t = resolve(tz, date.and_time(time_of(at)));
            if t >= from {
                return t;
            }
        }
        date = date.succ_opt().unwrap_or(date);
    }
    from
}

/// When a delay that starts at `now` ends.
pub fn delay_end(
    now: DateTime<Utc>,
    duration: Option<chrono::Duration>,
    until: Option<&LocalTime>,
    tz: Tz,
) -> DateTime<Utc> {
    let after = now + duration.unwrap_or_else(Duration::zero);
    match until {
        Some(local) => next_local_time(after, local.at, &local.weekdays, tz),
        None => after,
    }
}

/// Reads a date attribute: `YYYY-MM-DD`, or an RFC 3339 time (its date in the person's zone).
pub fn attribute_date(value: &serde_json::Value, tz: Tz) -> Option<NaiveDate> {
    let text = value.as_str()?;
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(date);
    }
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&tz).date_naive())
}

/// The date's anniversary in `year` (29 February falls on 28 February in other years).
fn in_year(date: NaiveDate, year: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, date.month(), date.day()).or_else(|| NaiveDate::from_ymd_opt(year, date.month(), 28))
}

/// The next firing of a date trigger strictly after `after`: the (anniversary of the) date, shifted by the
/// offset, at the local time of day.
pub fn next_date_firing(
    date: NaiveDate,
    offset: Option<SignedSpan>,
    yearly: bool,
    at: TimeOfDay,
    tz: Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let shift = offset.map(|o| o.duration()).unwrap_or_else(Duration::zero);
    let fire = |d: NaiveDate| resolve(tz, d.and_time(time_of(at)) + shift);
    if !yearly {
        let t = fire(date);
        return (t > after).then_some(t);
    }
    let year = after.with_timezone(&tz).year();
    (year - 1..=year + 2).filter_map(|y| in_year(date, y)).map(fire).find(|t| *t > after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).expect("time")
    }

    #[test]
    fn local_time_in_tokyo_on_weekdays() {
        let tz: Tz = "Asia/Tokyo".parse().expect("zone");
        // Friday 2026-12-04 12:00 JST; next 10:00 on a weekday is Monday 2026-12-07 10:00 JST.
        let from = utc("2026-12-04T03:00:00Z");
        let weekdays = [WeekdayName::Mon, WeekdayName::Tue, WeekdayName::Wed, WeekdayName::Thu, WeekdayName::Fri];
        let t = next_local_time(from, TimeOfDay { hour: 10, minute: 0 }, &weekdays, tz);
        assert_eq!(t, utc("2026-12-07T01:00:00Z"));
        // Same day when still ahead.
        let t = next_local_time(utc("2026-12-04T00:00:00Z"), TimeOfDay { hour: 10, minute: 0 }, &[], tz);
        assert_eq!(t, utc("2026-12-04T01:00:00Z"));
    }

    #[test]
    fn dst_gap_moves_forward() {
        let tz: Tz = "America/New_York".parse().expect("zone");
        // 2026-03-08 02:30 does not exist in New York; 03:30 EDT does.
        let t = next_local_time(utc("2026-03-08T05:00:00Z"), TimeOfDay { hour: 2, minute: 30 }, &[], tz);
        assert_eq!(t, utc("2026-03-08T07:30:00Z"));
    }

    #[test]
    fn birthday_seven_days_before() {
        let tz: Tz = "Asia/Tokyo".parse().expect("zone");
        let birthday = NaiveDate::from_ymd_opt(1990, 12, 20).expect("date");
        let offset = Some(SignedSpan { before: true, span: kizuna_segments::Span::parse_compact("7d").expect("span") });
        let at = TimeOfDay { hour: 9, minute: 0 };
        let t = next_date_firing(birthday, offset, true, at, tz, utc("2026-12-01T00:00:00Z")).expect("fires");
        assert_eq!(t, utc("2026-12-13T00:00:00Z"));
        // Already past this year: next year.
        let t = next_date_firing(birthday, offset, true, at, tz, utc("2026-12-13T00:00:00Z")).expect("fires");
        assert_eq!(t, utc("2027-12-13T00:00:00Z"));
        // Leap day.
        let leap = NaiveDate::from_ymd_opt(2000, 2, 29).expect("date");
        let t = next_date_firing(leap, None, true, at, tz, utc("2027-01-01T00:00:00Z")).expect("fires");
        assert_eq!(t, utc("2027-02-28T00:00:00Z"));
        // Once only, in the past: never.
        assert!(next_date_firing(leap, None, false, at, tz, utc("2027-01-01T00:00:00Z")).is_none());
    }
}
