//! Segment definitions, membership and transition history; batch scans for the segment engine.

use super::{CachedSql, from_ms, ms};
use crate::{
    MemberChange, ScannedEvent, ScannedProfile, SegmentTransitionRow, StoreError, StoreResult, StoredSegment,
    TransitionFilter,
};
use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::BTreeMap;

const SEGMENT_COLUMNS: &str = "id, name, description, definition, version, created_at, updated_at";

fn segment_row(r: &Row<'_>) -> rusqlite::Result<(i64, String, String, String, i64, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

fn to_segment(
    (id, name, description, definition, version, created, updated): (i64, String, String, String, i64, i64, i64),
) -> StoreResult<StoredSegment> {
    Ok(StoredSegment {
        id,
        name,
        description,
        definition: serde_json::from_str(&definition)?,
        version,
        created_at: from_ms(created),
        updated_at: from_ms(updated),
    })
}

pub(super) fn segments(conn: &Connection) -> StoreResult<Vec<StoredSegment>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY id"))?;
    let rows = stmt.query_map([], segment_row)?;
    rows.map(|r| to_segment(r?)).collect()
}

pub(super) fn segment_by_name(conn: &Connection, name: &str) -> StoreResult<Option<StoredSegment>> {
    let row = conn
        .query_row_cached(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE name = ?1"), [name], segment_row)
        .optional()?;
    row.map(to_segment).transpose()
}

pub(super) fn save_segment(
    conn: &mut Connection,
    name: &str,
    description: &str,
    definition: &serde_json::Value,
    now: DateTime<Utc>,
) -> StoreResult<StoredSegment> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_cached(
        "INSERT INTO segments (name, description, definition, version, created_at, updated_at)
         VALUES (?1, ?2, ?3, 1, ?4, ?4)
         ON CONFLICT (name) DO UPDATE SET description = excluded.description, definition = excluded.definition,
             version = segments.version + 1, updated_at = excluded.updated_at",
        params![name, description, serde_json::to_string(definition)?, ms(now)],
    )?;
    let saved = segment_by_name(&tx, name)?.ok_or_else(|| StoreError::Invalid(format!("segment {name} vanished")))?;
    tx.commit()?;
    Ok(saved)
}

/// Deletes the definition from the main database; its membership is dropped from the derived one by
/// `drop_members` (a crash in between leaves rows that `stale_rows` finds at the next start).
pub(super) fn delete_segment(conn: &mut Connection, name: &str) -> StoreResult<Option<i64>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let id: Option<i64> =
        tx.query_row_cached("SELECT id FROM segments WHERE name = ?1", [name], |r| r.get(0)).optional()?;
    let Some(id) = id else { return Ok(None) };
    tx.execute_cached("DELETE FROM segments WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(Some(id))
}

pub(super) fn drop_members(conn: &mut Connection, segment_id: i64) -> StoreResult<()> {
    conn.execute_cached("DELETE FROM segment_members WHERE segment_id = ?1", [segment_id])?;
    Ok(())
}

pub(super) fn record_transitions(conn: &mut Connection, transitions: &mut [SegmentTransitionRow]) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO segment_transitions (segment_id, segment, profile_id, entered, at, cause)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for t in transitions.iter_mut() {
            insert.execute(params![
                t.segment_id,
                t.segment,
                t.profile_id as i64,
                t.entered,
                ms(t.at),
                serde_json::to_string(&t.cause)?
            ])?;
            t.seq = tx.last_insert_rowid();
        }
    }
    tx.commit()?;
    Ok(())
}

fn write_members(tx: &rusqlite::Transaction<'_>, changes: &[MemberChange]) -> StoreResult<()> {
    // An entry replaces `since`: a batch keeps only each person's last change, so an exit and a re-entry
    // within it arrive as one entry onto the old row.
    let mut enter = tx.prepare_cached(
        "INSERT INTO segment_members (segment_id, profile_id, since) VALUES (?1, ?2, ?3)
         ON CONFLICT (segment_id, profile_id) DO UPDATE SET since = excluded.since",
    )?;
    let mut exit = tx.prepare_cached("DELETE FROM segment_members WHERE segment_id = ?1 AND profile_id = ?2")?;
    for c in changes {
        if c.entered {
            enter.execute(params![c.segment_id, c.profile_id as i64, ms(c.at)])?;
        } else {
            exit.execute(params![c.segment_id, c.profile_id as i64])?;
        }
    }
    Ok(())
}

fn set_applied_through(tx: &rusqlite::Transaction<'_>, seq: i64) -> StoreResult<()> {
    tx.execute_cached("UPDATE segment_members_applied SET through_seq = MAX(through_seq, ?1)", [seq])?;
    Ok(())
}

pub(super) fn apply_members(
    conn: &mut Connection,
    changes: &[MemberChange],
    through_seq: Option<i64>,
) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    write_members(&tx, changes)?;
    if let Some(seq) = through_seq {
        set_applied_through(&tx, seq)?;
    }
    tx.commit()?;
    Ok(())
}

/// Applies the history recorded after the snapshot's position, in order (what a crash kept from being applied;
/// replaying a change that was applied already is harmless).
pub(super) fn catch_up_members(conn: &mut Connection) -> StoreResult<()> {
    const PAGE: i64 = 10_000;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let after: i64 = tx.query_row_cached("SELECT through_seq FROM segment_members_applied", [], |r| r.get(0))?;
        let changes: Vec<(i64, MemberChange)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, segment_id, profile_id, entered, at FROM segment_transitions
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, PAGE], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    MemberChange {
                        segment_id: r.get(1)?,
                        profile_id: r.get::<_, i64>(2)? as ProfileId,
                        entered: r.get(3)?,
                        at: from_ms(r.get(4)?),
                    },
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let Some(last) = changes.last().map(|(seq, _)| *seq) else { return Ok(()) };
        let changes: Vec<MemberChange> = changes.into_iter().map(|(_, c)| c).collect();
        write_members(&tx, &changes)?;
        set_applied_through(&tx, last)?;
        tx.commit()?;
        tracing::info!(through_seq = last, changes = changes.len(), "segment membership caught up with its history");
    }
}

pub(super) fn forget_profile(conn: &mut Connection, profile: ProfileId) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_cached("DELETE FROM segment_members WHERE profile_id = ?1", [profile as i64])?;
    tx.execute_cached("DELETE FROM segment_transitions WHERE profile_id = ?1", [profile as i64])?;
    tx.commit()?;
    Ok(())
}

/// History recorded after the membership snapshot's position, for one segment or one person: the last change of
/// each (segment, person) in it, `Some(since)` for an entry. Reads add it on top of the snapshot, so they are as
/// current as the history.
fn unapplied(conn: &Connection, column: &str, id: i64) -> StoreResult<BTreeMap<(i64, i64), Option<i64>>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT segment_id, profile_id, entered, at FROM segment_transitions
         WHERE {column} = ?1 AND seq > (SELECT through_seq FROM segment_members_applied) ORDER BY seq"
    ))?;
    let mut rows = stmt.query([id])?;
    let mut last = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let (entered, at): (bool, i64) = (row.get(2)?, row.get(3)?);
        last.insert((row.get(0)?, row.get(1)?), entered.then_some(at));
    }
    Ok(last)
}

pub(super) fn members(
    conn: &Connection,
    segment_id: i64,
    after: Option<ProfileId>,
    limit: usize,
) -> StoreResult<Vec<(ProfileId, DateTime<Utc>)>> {
    let after = after.map_or(-1, |a| a as i64);
    let recent: Vec<(i64, Option<i64>)> = unapplied(conn, "segment_id", segment_id)?
        .into_iter()
        .filter(|((_, profile), _)| *profile > after)
        .map(|((_, profile), since)| (profile, since))
        .collect();
    // Enough snapshot rows that `limit` remain after the recent exits are taken out.
    let exits = recent.iter().filter(|(_, since)| since.is_none()).count();
    let mut stmt = conn.prepare_cached(
        "SELECT profile_id, since FROM segment_members WHERE segment_id = ?1 AND profile_id > ?2
         ORDER BY profile_id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![segment_id, after, (limit + exits) as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut page: BTreeMap<i64, i64> = rows.collect::<Result<_, _>>()?;
    let full = page.len() == limit + exits;
    let horizon = page.last_key_value().map(|(p, _)| *p);
    for (profile, since) in recent {
        match since {
            // Past the last snapshot row of a full page, the next page has it.
            Some(since) if !(full && horizon.is_some_and(|h| profile > h)) => {
                page.insert(profile, since);
            }
            Some(_) => {}
            None => {
                page.remove(&profile);
            }
        }
    }
    Ok(page.into_iter().take(limit).map(|(p, since)| (p as ProfileId, from_ms(since))).collect())
}

pub(super) fn load_members(conn: &Connection, visit: &mut dyn FnMut(i64, ProfileId)) -> StoreResult<()> {
    // Only members whose profile still exists: a profile deleted while the engine was down simply is not
    // restored, and its stale rows are removed when the engine records the catch-up.
    let mut stmt = conn
        .prepare("SELECT m.segment_id, m.profile_id FROM segment_members m JOIN profiles p ON p.id = m.profile_id")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        visit(row.get(0)?, row.get::<_, i64>(1)? as ProfileId);
    }
    Ok(())
}

/// Rows of the derived database that outlived what they describe (read on a connection that sees both
/// databases): segments deleted, profiles merged away or erased (erased people also lose their history).
pub(super) struct StaleRows {
    segments: Vec<i64>,
    profiles: Vec<i64>,
    erased: Vec<i64>,
}

pub(super) fn stale_rows(conn: &Connection) -> StoreResult<StaleRows> {
    let ids = |sql: &str| -> StoreResult<Vec<i64>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    Ok(StaleRows {
        segments: ids(
            "SELECT DISTINCT segment_id FROM segment_members WHERE segment_id NOT IN (SELECT id FROM segments)",
        )?,
        profiles: ids(
            "SELECT DISTINCT profile_id FROM segment_members WHERE profile_id NOT IN (SELECT id FROM profiles)",
        )?,
        erased: ids("SELECT e.profile_id FROM erasures e
                     WHERE EXISTS (SELECT 1 FROM segment_transitions t WHERE t.profile_id = e.profile_id)")?,
    })
}

/// Deletes stale rows on the derived database's own connection; returns how many memberships went.
pub(super) fn prune(conn: &mut Connection, stale: &StaleRows) -> StoreResult<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut removed = 0;
    for segment in &stale.segments {
        removed += tx.execute_cached("DELETE FROM segment_members WHERE segment_id = ?1", [segment])?;
    }
    for profile in &stale.profiles {
        removed += tx.execute_cached("DELETE FROM segment_members WHERE profile_id = ?1", [profile])?;
    }
    for profile in &stale.erased {
        tx.execute_cached("DELETE FROM segment_transitions WHERE profile_id = ?1", [profile])?;
    }
    tx.commit()?;
    Ok(removed)
}

pub(super) fn profile_memberships(
    conn: &Connection,
    profile: ProfileId,
) -> StoreResult<Vec<(i64, String, DateTime<Utc>)>> {
    let mut stmt = conn.prepare_cached("SELECT segment_id, since FROM segment_members WHERE profile_id = ?1")?;
    let rows = stmt.query_map([profile as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    let mut current: BTreeMap<i64, i64> = rows.collect::<Result<_, _>>()?;
    for ((segment, _), since) in unapplied(conn, "profile_id", profile as i64)? {
        match since {
            Some(since) => current.insert(segment, since),
            None => current.remove(&segment),
        };
    }
    let mut name = conn.prepare_cached("SELECT name FROM segments WHERE id = ?1")?;
    let mut out = Vec::with_capacity(current.len());
    for (segment, since) in current {
        // A segment deleted since is left out.
        if let Some(found) = name.query_row([segment], |r| r.get::<_, String>(0)).optional()? {
            out.push((segment, found, from_ms(since)));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

pub(super) fn transitions(conn: &Connection, filter: &TransitionFilter) -> StoreResult<Vec<SegmentTransitionRow>> {
    let mut sql = String::from(
        "SELECT seq, segment_id, segment, profile_id, entered, at, cause FROM segment_transitions WHERE seq > ?1",
    );
    let mut values: Vec<i64> = vec![filter.after_seq];
    if let Some(profile) = filter.profile {
        values.push(profile as i64);
        sql.push_str(&format!(" AND profile_id = ?{}", values.len()));
    }
    if let Some(segment) = filter.segment_id {
        values.push(segment);
        sql.push_str(&format!(" AND segment_id = ?{}", values.len()));
    }
    values.push(filter.limit as i64);
    sql.push_str(&format!(" ORDER BY seq LIMIT ?{}", values.len()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, segment_id, segment, profile, entered, at, cause) = row?;
        out.push(SegmentTransitionRow {
            seq,
            segment_id,
            segment,
            profile_id: profile as ProfileId,
            entered,
            at: from_ms(at),
            cause: serde_json::from_str(&cause)?,
        });
    }
    Ok(out)
}

pub(super) fn scan_profile_data(
    conn: &Connection,
    after: Option<ProfileId>,
    limit: usize,
) -> StoreResult<Vec<ScannedProfile>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.id, p.state, p.updated_at, s.scores,
                (SELECT group_concat(DISTINCT i.kind) FROM identities i WHERE i.profile_id = p.id)
         FROM profiles p LEFT JOIN profile_scores s ON s.profile_id = p.id
         WHERE p.id > ?1 ORDER BY p.id LIMIT ?2",
    )?;
    let after = after.map_or(-1, |a| a as i64);
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, state, updated_ms, scores, kinds) = row?;
        out.push(ScannedProfile {
            id: id as ProfileId,
            state: serde_json::from_str(&state)?,
            scores: scores.map(|s| serde_json::from_str(&s)).transpose()?,
            identifier_kinds: kinds.map(|k| k.split(',').map(str::to_owned).collect()).unwrap_or_default(),
            updated_ms,
        });
    }
    Ok(out)
}

pub(super) fn scan_events(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
    wanted: &dyn Fn(&str) -> bool,
) -> StoreResult<(Vec<ScannedEvent>, Option<i64>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, profile_id, COALESCE(name, type), body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after_seq, limit as i64])?;
    let mut out = Vec::new();
    let mut last = None;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        last = Some(seq);
        let name: String = row.get(2)?;
        if !wanted(&name) {
            continue;
        }
        let body: Vec<u8> = row.get(3)?;
        let json = super::decode_body(conn, &body)?;
        out.push(ScannedEvent {
            seq,
            profile_id: row.get::<_, i64>(1)? as ProfileId,
            name,
            body: serde_json::from_slice(&json)?,
        });
    }
    Ok((out, last))
}

pub(super) fn profile_scores(conn: &Connection, profile: ProfileId) -> StoreResult<Option<serde_json::Value>> {
    let scores: Option<String> = conn
        .prepare_cached("SELECT scores FROM profile_scores WHERE profile_id = ?1")?
        .query_row([profile as i64], |r| r.get(0))
        .optional()?;
    Ok(scores.map(|s| serde_json::from_str(&s)).transpose()?)
}
