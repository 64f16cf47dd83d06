//! What messaging reads on its hot paths. The batch reads a round of sends makes once instead of once per
//! message answer what the single reads answer and leave out what those find nothing for; attribution's read of
//! touches follows merges as recorded, before messaging has moved the rows.

use chrono::{TimeZone, Utc};
use kizuna_identity::{IdKind, Identifier, MergeRecord};
use kizuna_profiles::{DataKind, ProfileState, TraitEntry};
use kizuna_store::messages::{MessageStore, NewMessage, Transition};
use kizuna_store::{Durability, SqliteStore, Store};

#[test]
fn profiles_of_many_ids_match_each_profile_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let mut writer = store.writer()?;
    let mut tx = writer.begin()?;
    for id in [3u64, 1, 2] {
        let mut state = ProfileState::default();
        state.traits.insert(
            "first_name".into(),
            TraitEntry {
                value: format!("person-{id}").into(),
                set_at: Utc.timestamp_millis_opt(1_000).single().expect("a valid time"),
                source: "test".into(),
                data_kind: DataKind::FirstParty,
            },
        );
        tx.save_state(id, &state, 1_000)?;
        tx.set_owner(&Identifier::new(IdKind::Email, format!("p{id}@example.com")), Some(id))?;
        tx.set_owner(&Identifier::new(IdKind::UserId, format!("u{id}")), Some(id))?;
    }
    tx.commit()?;

    // Repeated and unknown ids: one entry per profile that exists.
    let found = store.profiles(&[2, 3, 2, 99, 1])?;
    let mut ids: Vec<u64> = found.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3]);
    for (id, profile) in &found {
        assert_eq!(Some(profile), store.profile(*id)?.as_ref(), "profile {id}");
        assert_eq!(profile.identities.len(), 2, "profile {id} keeps its identifiers");
    }
    assert!(store.profiles(&[])?.is_empty());
    Ok(())
}

#[test]
fn suppressions_of_many_addresses_are_the_suppressed_ones() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let now = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("a valid time");
    let messages = Store::messages(&store);
    messages.suppress("email", "bounced@example.com", "hard_bounce", now)?;
    messages.suppress("sms", "+81900000000", "unsubscribe", now)?;

    let asked = [
        ("email", "bounced@example.com"),
        ("email", "fine@example.com"),
        // The same address on another channel is not suppressed there.
        ("sms", "bounced@example.com"),
        ("sms", "+81900000000"),
        ("email", "bounced@example.com"),
    ];
    let mut found: Vec<(String, String, String)> =
        messages.suppressions_of(&asked)?.into_iter().map(|s| (s.channel, s.address, s.reason)).collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("email".into(), "bounced@example.com".into(), "hard_bounce".into()),
            ("sms".into(), "+81900000000".into(), "unsubscribe".into()),
        ]
    );
    for (channel, address) in asked {
        let single = messages.suppression(channel, address)?;
        assert_eq!(single.is_some(), found.iter().any(|(c, a, _)| c == channel && a == address));
    }
    Ok(())
}

#[test]
fn sent_times_of_many_people_match_each_persons_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let messages = Store::messages(&store);
    let start = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("a valid time");
    // Person 1: two marketing emails and one transactional; person 2: one marketing SMS; person 3: nothing sent.
    let sends = [
        (1u64, "email", "marketing"),
        (1, "email", "transactional"),
        (1, "email", "marketing"),
        (2, "sms", "marketing"),
    ];
    for (i, (profile, channel, purpose)) in sends.into_iter().enumerate() {
        let at = start + chrono::Duration::minutes(i as i64);
        let id = format!("m{i}");
        queue(messages, &id, profile, (channel, purpose), at)?;
        let sent = Transition {
            recipient: Some(format!("to-{profile}")),
            attempted: true,
            sent: true,
            ..Transition::new(id, "sent", "sent")
        };
        assert_eq!(messages.record(&[sent], at)?, vec![true]);
    }

    let since = start + chrono::Duration::seconds(30);
    let email = messages.sent_times_of(&[3, 1, 2, 1], "email", "marketing", since)?;
    assert_eq!(email.keys().copied().collect::<Vec<_>>(), vec![1], "only person 1 had marketing email since then");
    assert_eq!(email[&1], messages.sent_times(1, "email", "marketing", since)?);
    assert_eq!(email[&1], vec![start + chrono::Duration::minutes(2)], "the send before `since` is left out");
    let sms = messages.sent_times_of(&[1, 2], "sms", "marketing", start)?;
    assert_eq!(sms.get(&2), Some(&vec![start + chrono::Duration::minutes(3)]));
    assert!(!sms.contains_key(&1));
    Ok(())
}

/// Attribution reads touches before messaging has moved a merged-away person's rows (it applies merges at most
/// every quarter second): the survivor's touches include theirs, through merges of merges.
#[test]
fn touches_include_those_of_people_merged_in_before_messaging_moved_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let messages = Store::messages(&store);
    let at = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("a valid time");
    // One message each to people 1, 2 and 4, each clicked.
    for profile in [1u64, 2, 4] {
        let id = format!("m{profile}");
        queue(messages, &id, profile, ("email", "marketing"), at)?;
        assert!(messages.record_touch(&id, "click", false, None, at)?);
    }
    // 1 was merged into 2, then 2 into 3; 4 is someone else.
    let mut writer = store.writer()?;
    let mut tx = writer.begin()?;
    for (from, into) in [(1u64, 2u64), (2, 3)] {
        let merge = MergeRecord {
            into,
            from,
            identifier: Identifier::new(IdKind::Email, format!("p{from}@example.com")),
            message_id: format!("merge-{from}"),
            at_ms: 1_000,
            replayed: false,
        };
        tx.record_merge(&merge, 1_000)?;
    }
    tx.commit()?;

    let ids = |profile| -> anyhow::Result<Vec<String>> {
        let mut ids: Vec<String> =
            messages.touches(profile, at - chrono::Duration::days(1))?.into_iter().map(|t| t.message_id).collect();
        ids.sort();
        Ok(ids)
    };
    assert_eq!(ids(3)?, vec!["m1", "m2"], "the survivor's touches include everyone merged into it");
    assert_eq!(ids(2)?, vec!["m1", "m2"]);
    assert_eq!(ids(4)?, vec!["m4"], "nobody else's");
    assert!(ids(5)?.is_empty());
    Ok(())
}

#[test]
fn the_backlog_counts_waiting_messages_due_of_every_priority() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let now = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("a valid time");
    let messages = Store::messages(&store);
    let later = now + chrono::Duration::minutes(5);
    // Two due messages of each priority, one of each due later.
    for priority in 0..4 {
        for (n, due_at) in [(0, now), (1, now - chrono::Duration::minutes(1)), (2, later)] {
            let mut message = new_message(&format!("p{priority}-{n}"), 1, ("email", "marketing"), due_at);
            message.priority = priority;
            messages.enqueue(&[message], now)?;
        }
    }
    assert_eq!(messages.backlog(now, 100)?, 8);
    assert_eq!(messages.backlog(now, 5)?, 5, "counted up to the cap");
    assert_eq!(messages.backlog(later, 100)?, 12);
    // Claimed for sending, or settled: no longer waiting. Deferred: waiting until it is due again.
    let to = |id: &str, state: &str, due_at| Transition { due_at, claim: true, ..Transition::new(id, state, "test") };
    let applied = messages.record(
        &[to("p0-0", "sending", None), to("p1-0", "dropped", None), to("p2-0", "deferred", Some(later))],
        now,
    )?;
    assert_eq!(applied, vec![true, true, true]);
    assert_eq!(messages.backlog(now, 100)?, 5);
    assert_eq!(messages.backlog(later, 100)?, 10);
    Ok(())
}

#[test]
fn the_decision_log_begins_with_the_queueing_read_from_the_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let queued_at = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("a valid time");
    let later = queued_at + chrono::Duration::seconds(3);
    let messages = Store::messages(&store);
    let mut by_flow = new_message("f", 1, ("email", "marketing"), queued_at);
    by_flow.flow = Some("7".into());
    let mut by_campaign = new_message("c", 1, ("email", "marketing"), queued_at);
    by_campaign.campaign = Some("spring".into());
    messages.enqueue(&[by_flow, by_campaign, new_message("m", 1, ("email", "marketing"), queued_at)], queued_at)?;
    let sending = Transition { claim: true, ..Transition::new("f", "sending", "allowed by the governor") };
    messages.record(&[sending, Transition::new("f", "sent", "sent")], later)?;

    let log = |id: &str| -> anyhow::Result<Vec<(chrono::DateTime<Utc>, String, String)>> {
        Ok(messages.decisions(id)?.into_iter().map(|d| (d.at, d.state, d.reason)).collect())
    };
    let entry = |at, state: &str, reason: &str| (at, state.to_owned(), reason.to_owned());
    assert_eq!(
        log("f")?,
        vec![
            entry(queued_at, "queued", "queued by flow 7"),
            entry(later, "sending", "allowed by the governor"),
            entry(later, "sent", "sent"),
        ]
    );
    assert_eq!(log("c")?, vec![entry(queued_at, "queued", "queued by campaign spring")]);
    assert_eq!(log("m")?, vec![entry(queued_at, "queued", "queued")]);
    assert!(log("unknown")?.is_empty());
    Ok(())
}

#[test]
fn migration_18_removes_the_queueing_rows_written_before_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let queued_at = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("a valid time");
    {
        let store = SqliteStore::open(dir.path(), Durability::Process)?;
        let mut message = new_message("old", 1, ("email", "marketing"), queued_at);
        message.flow = Some("7".into());
        Store::messages(&store).enqueue(&[message], queued_at)?;
    }
    // The log as the build before migration 18 wrote it: the queueing row first, then a later requeue.
    let conn = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let at = queued_at.timestamp_millis();
    conn.execute_batch(&format!(
        "INSERT INTO msg_decisions (message_id, at, state, reason) VALUES ('old', {at}, 'queued', 'queued by flow 7');
         INSERT INTO msg_decisions (message_id, at, state, reason) VALUES ('old', {at} + 1, 'queued', 'retry');
         DELETE FROM schema_migrations WHERE version = 18;"
    ))?;
    drop(conn);

    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let log: Vec<(String, String)> =
        Store::messages(&store).decisions("old")?.into_iter().map(|d| (d.state, d.reason)).collect();
    let entry = |state: &str, reason: &str| (state.to_owned(), reason.to_owned());
    assert_eq!(log, vec![entry("queued", "queued by flow 7"), entry("queued", "retry")], "once each");
    Ok(())
}

#[test]
fn due_messages_come_most_urgent_priority_first_then_by_due_time_up_to_the_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let now = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("a valid time");
    let messages = Store::messages(&store);
    let minutes = |m: i64| now - chrono::Duration::minutes(m);
    // Queued out of order: priority 2 first, the most urgent last; one not yet due.
    for (id, priority, due_at) in [
        ("p2-late", 2, minutes(1)),
        ("p2-early", 2, minutes(9)),
        ("p3", 3, minutes(20)),
        ("p0-late", 0, minutes(2)),
        ("p0-early", 0, minutes(5)),
        ("p0-future", 0, now + chrono::Duration::minutes(1)),
        ("p1", 1, minutes(3)),
    ] {
        let mut message = new_message(id, 1, ("email", "marketing"), due_at);
        message.priority = priority;
        messages.enqueue(&[message], now)?;
    }
    let due = |limit: usize| -> anyhow::Result<Vec<String>> {
        Ok(messages.due_messages(now, limit)?.into_iter().map(|m| m.id).collect())
    };
    assert_eq!(due(10)?, vec!["p0-early", "p0-late", "p1", "p2-early", "p2-late", "p3"]);
    assert_eq!(due(4)?, vec!["p0-early", "p0-late", "p1", "p2-early"]);
    assert_eq!(due(1)?, vec!["p0-early"]);
    Ok(())
}

/// Queues one message due at `at`.
fn queue(
    messages: &dyn MessageStore,
    id: &str,
    profile: u64,
    (channel, purpose): (&str, &str),
    at: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    messages.enqueue(&[new_message(id, profile, (channel, purpose), at)], at)?;
    Ok(())
}

/// A message for `profile` due at `at`.
fn new_message(id: &str, profile: u64, (channel, purpose): (&str, &str), at: chrono::DateTime<Utc>) -> NewMessage {
    NewMessage {
        id: id.into(),
        idempotency_key: None,
        profile_id: Some(profile),
        channel: channel.into(),
        purpose: purpose.into(),
        priority: 1,
        template: "t".into(),
        template_version: 1,
        flow: None,
        campaign: None,
        context: serde_json::json!({}),
        recipient: None,
        test: false,
        due_at: at,
    }
}
