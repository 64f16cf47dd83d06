//! The send governor's decisions at chosen moments (the clock is just an argument).

use chrono::{DateTime, Duration, TimeZone, Utc};
use kizuna_messaging::governor::{Candidate, Consent, Decision, Policy, decide};
use kizuna_messaging::model::{Channel, Priority, Purpose};

/// 2026-12-01 03:00 UTC = 12:00 in Tokyo.
fn noon_tokyo() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).single().unwrap_or_default()
}

fn candidate<'a>(sends: &'a [DateTime<Utc>], priority: Priority) -> Candidate<'a> {
    Candidate {
        channel: Channel::Email,
        purpose: Purpose::Marketing,
        priority,
        has_address: true,
        consent: Consent::Granted,
        suppressed: None,
        topic_unsubscribed: false,
        timezone: Some("Asia/Tokyo"),
        recent_sends: sends,
        created_at: noon_tokyo(),
    }
}

#[test]
fn consent_suppression_and_address_come_first() {
    let policy = Policy::default();
    let now = noon_tokyo();
    assert_eq!(decide(&policy, &candidate(&[], Priority::Flow), now), Decision::Send);
    let mut c = candidate(&[], Priority::Flow);
    c.consent = Consent::Unknown;
    assert!(matches!(decide(&policy, &c, now), Decision::Suppress { reason } if reason.starts_with("no_consent")));
    // Where the law allows marketing until someone refuses, unknown consent is enough; a refusal still wins.
    let opt_out = Policy { marketing_requires_opt_in: false, ..Policy::default() };
    assert_eq!(decide(&opt_out, &c, now), Decision::Send);
    // Transactional mail goes without opt-in, but not against an explicit no.
    c.purpose = Purpose::Transactional;
    assert_eq!(decide(&policy, &c, now), Decision::Send);
    c.consent = Consent::Denied;
    assert!(matches!(decide(&policy, &c, now), Decision::Suppress { reason } if reason.starts_with("consent_denied")));
    c.purpose = Purpose::Marketing;
    assert!(matches!(decide(&opt_out, &c, now), Decision::Suppress { reason } if reason.starts_with("consent_denied")));
    let mut c = candidate(&[], Priority::Flow);
    c.suppressed = Some("hard_bounce");
    assert_eq!(decide(&policy, &c, now), Decision::Suppress { reason: "suppressed: hard_bounce".into() });
    let mut c = candidate(&[], Priority::Flow);
    c.has_address = false;
    assert!(matches!(decide(&policy, &c, now), Decision::Suppress { reason } if reason.starts_with("no_address")));
    let mut c = candidate(&[], Priority::Flow);
    c.topic_unsubscribed = true;
    assert_eq!(decide(&policy, &c, now), Decision::Suppress { reason: "topic_unsubscribed".into() });
    // Webhooks reach the brand's systems, not a person.
    let mut c = candidate(&[], Priority::Campaign);
    c.channel = Channel::Webhook;
    c.consent = Consent::Denied;
    assert_eq!(decide(&policy, &c, now), Decision::Send);
}

#[test]
fn quiet_hours_defer_to_the_local_morning() {
    let policy = Policy::default();
    // 23:30 in Tokyo → 08:00 the next day in Tokyo = 23:00 UTC.
    let late = noon_tokyo() + Duration::minutes(11 * 60 + 30);
    let mut c = candidate(&[], Priority::Flow);
    c.created_at = late;
    let expected = Utc.with_ymd_and_hms(2026, 12, 1, 23, 0, 0).single().unwrap_or_default();
    match decide(&policy, &c, late) {
        Decision::Defer { until, reason } => {
            assert_eq!(until, expected);
            assert!(reason.starts_with("quiet_hours"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The same moment is mid-morning in London: no wait.
    c.timezone = Some("Europe/London");
    assert_eq!(decide(&policy, &c, late), Decision::Send);
    // 06:00 in Tokyo is before the window ends: same day 08:00.
    let early = noon_tokyo() - Duration::hours(6);
    let mut c = candidate(&[], Priority::Abandonment);
    c.created_at = early;
    assert!(matches!(decide(&policy, &c, early), Decision::Defer { until, .. } if until == early + Duration::hours(2)));
    // Transactional ignores quiet hours.
    c.purpose = Purpose::Transactional;
    c.priority = Priority::Transactional;
    assert_eq!(decide(&policy, &c, early), Decision::Send);
}

#[test]
fn frequency_caps_defer_flows_and_drop_campaigns() {
    let policy = Policy::default();
    let now = noon_tokyo();
    // One marketing email 2 hours ago: the 1-per-16h cap opens 14 hours from now (02:00 Tokyo, in quiet
    // hours), so the flow message waits for 08:00 Tokyo.
    let sends = [now - Duration::hours(2)];
    match decide(&policy, &candidate(&sends, Priority::Flow), now) {
        Decision::Defer { until, reason } => {
            assert_eq!(until, Utc.with_ymd_and_hms(2026, 12, 1, 23, 0, 0).single().unwrap_or_default());
            assert!(reason.contains("frequency_cap") && reason.contains("quiet_hours"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decide(&policy, &candidate(&sends, Priority::Campaign), now),
        Decision::Drop { reason } if reason.starts_with("frequency_cap")
    ));
    // Three in the week (oldest 6 days ago): room opens when the oldest leaves the 7-day window.
    let week = [now - Duration::days(6), now - Duration::days(3), now - Duration::days(2)];
    match decide(&policy, &candidate(&week, Priority::Flow), now) {
        Decision::Defer { until, .. } => assert_eq!(until, now + Duration::days(1)),
        other => panic!("{other:?}"),
    }
    // An abandonment reminder may wait at most 24 h: a 2-day wait drops it as stale.
    let week = [now - Duration::days(5), now - Duration::days(3), now - Duration::days(2)];
    assert!(matches!(
        decide(&policy, &candidate(&week, Priority::Abandonment), now),
        Decision::Drop { reason } if reason.starts_with("too_late")
    ));
    // Transactional mail is never capped; SMS caps are separate from email's.
    let mut c = candidate(&sends, Priority::Transactional);
    c.purpose = Purpose::Transactional;
    assert_eq!(decide(&policy, &c, now), Decision::Send);
    let mut c = candidate(&[], Priority::Flow);
    c.channel = Channel::Sms;
    assert_eq!(decide(&policy, &c, now), Decision::Send);
}
