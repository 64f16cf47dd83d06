//! The batch reads a round of sends makes once instead of once per message answer what the single reads answer,
//! and leave out what those find nothing for.

use chrono::{TimeZone, Utc};
use kizuna_identity::{IdKind, Identifier};
use kizuna_profiles::{DataKind, ProfileState, TraitEntry};
use kizuna_store::messages::MessageStore;
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
