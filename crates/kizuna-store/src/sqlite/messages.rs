//! SQLite implementation of [`MessageStore`].

use super::cursors::{ERASURES, Follower, MERGES, erasures_after};
use super::{CachedSql, SqliteStore, from_ms, ms};
use crate::messages::{
    AttributionRow, Decision, MessageFilter, MessageStore, NewMessage, ReportRow, StoredMessage, StoredTemplate,
    Suppression, TouchRow, Transition,
};
use crate::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use rusqlite::{OptionalExtension, Row, params};
use std::collections::HashMap;

const MESSAGE_COLUMNS: &str = "id, idempotency_key, profile_id, channel, purpose, priority, template, template_version, \
     flow, campaign, context, recipient, state, reason, due_at, attempts, provider_id, test, created_at, updated_at, \
     sent_at, opened_at, clicked_at, erased_at";

fn message_row(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let context: String = r.get(10)?;
    Ok(StoredMessage {
        id: r.get(0)?,
        idempotency_key: r.get(1)?,
        profile_id: r.get::<_, Option<i64>>(2)?.map(|p| p as ProfileId),
        channel: r.get(3)?,
        purpose: r.get(4)?,
        priority: r.get(5)?,
        template: r.get(6)?,
        template_version: r.get(7)?,
        flow: r.get(8)?,
        campaign: r.get(9)?,
        context: serde_json::from_str(&context).unwrap_or(serde_json::Value::Null),
        recipient: r.get(11)?,
        state: r.get(12)?,
        reason: r.get(13)?,
        due_at: from_ms(r.get(14)?),
        attempts: r.get(15)?,
        provider_id: r.get(16)?,
        test: r.get::<_, i64>(17)? != 0,
        created_at: from_ms(r.get(18)?),
        updated_at: from_ms(r.get(19)?),
        sent_at: r.get::<_, Option<i64>>(20)?.map(from_ms),
        opened_at: r.get::<_, Option<i64>>(21)?.map(from_ms),
        clicked_at: r.get::<_, Option<i64>>(22)?.map(from_ms),
        erased_at: r.get::<_, Option<i64>>(23)?.map(from_ms),
    })
}

fn template_row(r: &Row<'_>) -> rusqlite::Result<(String, i64, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_template((name, version, definition, created): (String, i64, String, i64)) -> StoreResult<StoredTemplate> {
    Ok(StoredTemplate { name, version, definition: serde_json::from_str(&definition)?, created_at: from_ms(created) })
}

/// The people in `?1` (a JSON array of profile ids) and everyone merged into them, as the table `people`: a
/// message queued before a merge still names the merged-away profile (see migration 14).
const PEOPLE: &str = "WITH RECURSIVE people(id) AS (
         SELECT value FROM json_each(?1)
         UNION SELECT m.from_profile FROM merges m JOIN people p ON m.into_profile = p.id)";

/// The rowids of the messages of `people`: one indexed path per kind of message (see migration 15), not a scan of
/// the whole outbox; the queue's is a walk of the queue (the planner would rather scan the table).
const MESSAGES_OF_PEOPLE: &str = "SELECT rowid FROM msg_messages WHERE sent_at IS NOT NULL AND profile_id IN people
     UNION SELECT rowid FROM msg_messages INDEXED BY msg_messages_queue
       WHERE state IN ('queued', 'deferred') AND profile_id IN people
     UNION SELECT rowid FROM msg_messages WHERE state = 'sending' AND profile_id IN people
     UNION SELECT rowid FROM msg_messages
       WHERE sent_at IS NULL AND state <> 'queued' AND state <> 'deferred' AND state <> 'sending'
         AND profile_id IN people";

/// Queues one message, unless one with its idempotency key exists.
const QUEUE_MESSAGE: &str = "INSERT INTO msg_messages (id, idempotency_key, profile_id, channel, purpose, priority,
         template, template_version, flow, campaign, context, recipient, state, reason, due_at, test, created_at,
         updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'queued', 'queued', ?13, ?14, ?15, ?15)
     ON CONFLICT (idempotency_key) DO NOTHING";

/// A message's change of state (see `record`).
const MESSAGE_TRANSITION: &str = "UPDATE msg_messages SET due_at = COALESCE(?4, due_at),
         provider_id = COALESCE(?6, provider_id),
         attempts = attempts + ?7, sent_at = CASE WHEN ?8 THEN ?9 ELSE sent_at END, updated_at = ?9,
         state = ?2, reason = ?3,
         recipient = CASE WHEN erased_at IS NULL AND NOT ?11 THEN COALESCE(?5, recipient) END,
         profile_id = CASE WHEN erased_at IS NULL AND NOT ?11 THEN COALESCE(?10, profile_id) END,
         context = CASE WHEN ?11 THEN '{}' ELSE context END,
         erased_at = CASE WHEN ?11 THEN COALESCE(erased_at, ?9) ELSE erased_at END
     WHERE rowid = ?1";

/// One priority's waiting messages due at `?2`, in due order, at most `?3`.
fn due_of_priority() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM msg_messages
         WHERE priority = ?1 AND state IN ('queued', 'deferred') AND due_at <= ?2 ORDER BY due_at LIMIT ?3"
    )
}

/// Messages waiting and due, counted up to a cap: one range of the queue index per priority, as `due_messages`
/// reads it.
const BACKLOG: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM msg_messages
     WHERE priority IN (0, 1, 2, 3) AND state IN ('queued', 'deferred') AND due_at <= ?1 LIMIT ?2)";

/// The least string greater than every string that starts with `prefix` (its last character moved up by one),
/// or none for an empty prefix.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(u32::from(last) + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Merges and erasures read for [`MessageStore::follow_profile_changes`], with where to go on from next time.
#[derive(Default)]
struct ProfileChanges {
    merges: Vec<(i64, i64)>,
    erasures: usize,
    /// The erased people and everyone merged into them.
    gone: Vec<i64>,
    /// Their messages' rowids.
    erased_messages: Vec<i64>,
    merge_cursor: i64,
    erasure_cursor: i64,
}

impl MessageStore for SqliteStore {
    fn save_template(&self, name: &str, definition: &serde_json::Value, now: DateTime<Utc>) -> StoreResult<i64> {
        let text = serde_json::to_string(definition)?;
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let version: i64 = tx.query_row_cached(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM msg_templates WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
            tx.execute_cached(
                "INSERT INTO msg_templates (name, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, version, text, ms(now)],
            )?;
            tx.execute_cached(
                "INSERT INTO msg_template_heads (name, version, deleted) VALUES (?1, ?2, 0)
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version, deleted = 0",
                params![name, version],
            )?;
            tx.commit()?;
            Ok(version)
        })
    }

    fn template(&self, name: &str, version: Option<i64>) -> StoreResult<Option<StoredTemplate>> {
        self.with_reader(|conn| {
            let row = match version {
                Some(v) => conn
                    .query_row_cached(
                        "SELECT name, version, definition, created_at FROM msg_templates WHERE name = ?1 AND version = ?2",
                        params![name, v],
                        template_row,
                    )
                    .optional()?,
                None => conn
                    .query_row_cached(
                        "SELECT t.name, t.version, t.definition, t.created_at FROM msg_template_heads h
                         JOIN msg_templates t ON t.name = h.name AND t.version = h.version
                         WHERE h.name = ?1 AND h.deleted = 0",
                        [name],
                        template_row,
                    )
                    .optional()?,
            };
            row.map(to_template).transpose()
        })
    }

    fn templates(&self) -> StoreResult<Vec<StoredTemplate>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.name, t.version, t.definition, t.created_at FROM msg_template_heads h
                 JOIN msg_templates t ON t.name = h.name AND t.version = h.version
                 WHERE h.deleted = 0 ORDER BY h.name",
            )?;
            let rows = stmt.query_map([], template_row)?;
            rows.map(|r| to_template(r?)).collect()
        })
    }

    fn delete_template(&self, name: &str) -> StoreResult<bool> {
        self.with_writer(|conn| {
            Ok(conn
                .execute_cached("UPDATE msg_template_heads SET deleted = 1 WHERE name = ?1 AND deleted = 0", [name])?
                > 0)
        })
    }

    fn backlog(&self, now: DateTime<Utc>, cap: usize) -> StoreResult<usize> {
        self.with_reader(|conn| {
            let n: i64 = conn.query_row_cached(BACKLOG, params![ms(now), cap as i64], |r| r.get(0))?;
            Ok(n as usize)
        })
    }

    fn enqueue(&self, messages: &[NewMessage], now: DateTime<Utc>) -> StoreResult<Vec<(String, bool)>> {
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let mut out = Vec::with_capacity(messages.len());
            {
                let mut insert = tx.prepare_cached(QUEUE_MESSAGE)?;
                // No decision row for queueing: `decisions` makes it from the message row (migration 18).
                let mut existing = tx.prepare_cached("SELECT id FROM msg_messages WHERE idempotency_key = ?1")?;
                for m in messages {
                    let inserted = insert.execute(params![
                        m.id,
                        m.idempotency_key,
                        m.profile_id.map(|p| p as i64),
                        m.channel,
                        m.purpose,
                        m.priority,
                        m.template,
                        m.template_version,
                        m.flow,
                        m.campaign,
                        serde_json::to_string(&m.context)?,
                        m.recipient,
                        ms(m.due_at),
                        i64::from(m.test),
                        ms(now),
                    ])? > 0;
                    if inserted {
                        out.push((m.id.clone(), true));
                    } else {
                        let key = m.idempotency_key.as_deref().unwrap_or_default();
                        let id: String = existing.query_row([key], |r| r.get(0))?;
                        out.push((id, false));
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn due_messages(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<StoredMessage>> {
        self.with_reader(|conn| {
            // Priorities in order, each one range of the queue index read in due order, until the limit: the
            // answer comes out ordered without sorting. (One statement with UNION ALL and ORDER BY sorted every
            // row it took, whole: the 24 columns and the context.)
            let mut due = Vec::with_capacity(limit.min(1_024));
            let mut stmt = conn.prepare_cached(&due_of_priority())?;
            for priority in 0..=3 {
                let left = limit.saturating_sub(due.len());
                if left == 0 {
                    break;
                }
                let rows = stmt.query_map(params![priority, ms(now), left as i64], message_row)?;
                for row in rows {
                    due.push(row?);
                }
            }
            Ok(due)
        })
    }

    fn sending_messages(&self) -> StoreResult<Vec<StoredMessage>> {
        self.with_reader(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM msg_messages WHERE state = 'sending'"))?;
            let rows = stmt.query_map([], message_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn record(&self, transitions: &[Transition], now: DateTime<Utc>) -> StoreResult<Vec<bool>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let mut applied = Vec::with_capacity(transitions.len());
            {
                // Read, then update by rowid: `UPDATE … RETURNING` opened and created a temporary b-tree on
                // every execution. The writer's transaction holds the write lock, so nothing changes the row
                // between the two.
                let mut current = tx.prepare_cached(
                    "SELECT rowid, state IN ('queued', 'deferred'), erased_at IS NOT NULL FROM msg_messages
                     WHERE id = ?1",
                )?;
                let mut update = tx.prepare_cached(MESSAGE_TRANSITION)?;
                let mut decision = tx.prepare_cached(
                    "INSERT INTO msg_decisions (message_id, at, state, reason) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for t in transitions {
                    let found: Option<(i64, bool, bool)> =
                        current.query_row([&t.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
                    let Some((rowid, _, erased)) = found.filter(|(_, waiting, _)| !t.claim || *waiting) else {
                        applied.push(false);
                        continue;
                    };
                    // A message erased while it was in flight keeps nothing personal from its outcome (the
                    // address, a provider's reason that may quote it) and cannot go back to the queue; a
                    // forgotten one drops what it had.
                    let reopened = matches!(t.state.as_str(), "queued" | "deferred" | "sending");
                    let state = if erased && reopened { "suppressed" } else { t.state.as_str() };
                    let reason = if erased { "erased" } else { t.reason.as_str() };
                    update.execute(params![
                        rowid,
                        state,
                        reason,
                        t.due_at.map(ms),
                        t.recipient,
                        t.provider_id,
                        i64::from(t.attempted),
                        t.sent,
                        ms(now),
                        t.profile.map(|p| p as i64),
                        t.forget,
                    ])?;
                    decision.execute(params![t.id, ms(now), state, reason])?;
                    applied.push(true);
                }
            }
            tx.commit()?;
            Ok(applied)
        })
    }

    fn message(&self, id: &str) -> StoreResult<Option<StoredMessage>> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row_cached(
                    &format!("SELECT {MESSAGE_COLUMNS} FROM msg_messages WHERE id = ?1"),
                    [id],
                    message_row,
                )
                .optional()?)
        })
    }

    fn messages(&self, filter: &MessageFilter) -> StoreResult<Vec<StoredMessage>> {
        self.with_reader(|conn| {
            let before = match &filter.before {
                Some(id) => conn
                    .query_row_cached("SELECT created_at, id FROM msg_messages WHERE id = ?1", [id], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()?,
                None => None,
            };
            // One person's messages (also those queued before a merge) through the indexes that hold a person's
            // messages; everyone's through the index on creation time.
            let (whose, people) = match filter.profile_id {
                Some(profile) => (
                    format!("{PEOPLE}, theirs(id) AS ({MESSAGES_OF_PEOPLE}) SELECT {MESSAGE_COLUMNS} FROM msg_messages WHERE rowid IN theirs"),
                    Some(format!("[{}]", profile as i64)),
                ),
                None => (format!("SELECT {MESSAGE_COLUMNS} FROM msg_messages WHERE ?1 IS NULL"), None),
            };
            let mut stmt = conn.prepare_cached(&format!(
                "{whose} AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR channel = ?3)
                   AND (?4 IS NULL OR template = ?4) AND (?5 IS NULL OR flow = ?5)
                   AND (?6 IS NULL OR created_at < ?6 OR (created_at = ?6 AND id < ?7))
                 ORDER BY created_at DESC, id DESC LIMIT ?8"
            ))?;
            let rows = stmt.query_map(
                params![
                    people,
                    filter.state,
                    filter.channel,
                    filter.template,
                    filter.flow,
                    before.as_ref().map(|b| b.0),
                    before.as_ref().map(|b| b.1.clone()),
                    filter.limit.max(1) as i64,
                ],
                message_row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn decisions(&self, id: &str) -> StoreResult<Vec<Decision>> {
        self.with_reader(|conn| {
            // The first decision, queueing, is the message row itself (its creation time, and who queued it).
            let queued = conn
                .query_row_cached(
                    "SELECT created_at, flow, campaign, erased_at IS NOT NULL FROM msg_messages WHERE id = ?1",
                    [id],
                    |r| {
                        let (flow, campaign): (Option<String>, Option<String>) = (r.get(1)?, r.get(2)?);
                        let reason = match (flow, campaign, r.get::<_, bool>(3)?) {
                            (_, _, true) => "erased".to_owned(),
                            (Some(flow), _, _) => format!("queued by flow {flow}"),
                            (_, Some(campaign), _) => format!("queued by campaign {campaign}"),
                            _ => "queued".to_owned(),
                        };
                        Ok(Decision { at: from_ms(r.get(0)?), state: "queued".into(), reason })
                    },
                )
                .optional()?;
            let mut stmt = conn
                .prepare_cached("SELECT at, state, reason FROM msg_decisions WHERE message_id = ?1 ORDER BY rowid")?;
            let rows =
                stmt.query_map([id], |r| Ok(Decision { at: from_ms(r.get(0)?), state: r.get(1)?, reason: r.get(2)? }))?;
            queued.into_iter().map(Ok).chain(rows).collect::<Result<_, _>>().map_err(Into::into)
        })
    }

    fn sent_times(
        &self,
        profile: ProfileId,
        channel: &str,
        purpose: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DateTime<Utc>>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(SENT_TIMES)?;
            let rows = stmt.query_map(params![profile as i64, channel, ms(since), purpose], |r| r.get::<_, i64>(0))?;
            rows.map(|r| Ok(from_ms(r?))).collect()
        })
    }

    fn sent_times_of(
        &self,
        profiles: &[ProfileId],
        channel: &str,
        purpose: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<ProfileId, Vec<DateTime<Utc>>>> {
        let mut sorted = profiles.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(SENT_TIMES)?;
            let mut out = HashMap::new();
            for profile in sorted {
                let rows =
                    stmt.query_map(params![profile as i64, channel, ms(since), purpose], |r| r.get::<_, i64>(0))?;
                let times: Vec<DateTime<Utc>> = rows.map(|r| r.map(from_ms)).collect::<Result<_, _>>()?;
                if !times.is_empty() {
                    out.insert(profile, times);
                }
            }
            Ok(out)
        })
    }

    fn suppress(&self, channel: &str, address: &str, reason: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.with_writer(|conn| {
            conn.execute_cached(
                "INSERT INTO msg_suppressions (channel, address, reason, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (channel, address) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                params![channel, address, reason, ms(now)],
            )?;
            Ok(())
        })
    }

    fn unsuppress(&self, channel: &str, address: &str) -> StoreResult<bool> {
        self.with_writer(|conn| {
            Ok(conn.execute_cached(
                "DELETE FROM msg_suppressions WHERE channel = ?1 AND address = ?2",
                [channel, address],
            )? > 0)
        })
    }

    fn suppression(&self, channel: &str, address: &str) -> StoreResult<Option<Suppression>> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row_cached(
                    "SELECT channel, address, reason, at FROM msg_suppressions WHERE channel = ?1 AND address = ?2",
                    [channel, address],
                    suppression_row,
                )
                .optional()?)
        })
    }

    fn suppressions_of(&self, keys: &[(&str, &str)]) -> StoreResult<Vec<Suppression>> {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT channel, address, reason, at FROM msg_suppressions WHERE channel = ?1 AND address = ?2",
            )?;
            let mut found = Vec::new();
            for (channel, address) in sorted {
                if let Some(suppression) = stmt.query_row([channel, address], suppression_row).optional()? {
                    found.push(suppression);
                }
            }
            Ok(found)
        })
    }

    fn suppressions(&self, limit: usize) -> StoreResult<Vec<Suppression>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT channel, address, reason, at FROM msg_suppressions ORDER BY at DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], suppression_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn record_touch(
        &self,
        message_id: &str,
        kind: &str,
        machine: bool,
        url: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let column = match kind {
            "open" => "opened_at",
            "click" => "clicked_at",
            other => return Err(StoreError::Invalid(format!("unknown touch kind {other}"))),
        };
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let found: Option<(Option<i64>, bool)> = tx
                .query_row_cached(
                    "SELECT profile_id, erased_at IS NOT NULL FROM msg_messages WHERE id = ?1",
                    [message_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((profile, erased)) = found else { return Ok(false) };
            // A click on an erased person's message counts, but its link (which may carry their data) is not kept.
            let url = if erased { None } else { url };
            tx.execute_cached(
                "INSERT INTO msg_touches (message_id, profile_id, kind, at, machine, url) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![message_id, profile, kind, ms(at), i64::from(machine), url],
            )?;
            if !machine {
                tx.execute_cached(
                    &format!("UPDATE msg_messages SET {column} = COALESCE({column}, ?2) WHERE id = ?1"),
                    params![message_id, ms(at)],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn touches(&self, profile: ProfileId, since: DateTime<Utc>) -> StoreResult<Vec<TouchRow>> {
        self.with_reader(|conn| {
            // Through the merges as recorded, not only as messaging has applied them: an order can be attributed
            // before the touches of someone merged into its buyer have moved (see the attribution thread).
            let mut stmt = conn.prepare_cached(
                "WITH RECURSIVE people(id) AS (
                     SELECT ?1 UNION SELECT merges.from_profile FROM merges JOIN people ON merges.into_profile = people.id
                 )
                 SELECT message_id, kind, at, machine FROM msg_touches
                 WHERE profile_id IN (SELECT id FROM people) AND at >= ?2",
            )?;
            let rows = stmt.query_map(params![profile as i64, ms(since)], |r| {
                Ok(TouchRow {
                    message_id: r.get(0)?,
                    kind: r.get(1)?,
                    at: from_ms(r.get(2)?),
                    machine: r.get::<_, i64>(3)? != 0,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn record_attribution(&self, row: &AttributionRow) -> StoreResult<bool> {
        self.with_writer(|conn| {
            Ok(conn.execute_cached(
                "INSERT INTO msg_attributions (order_id, profile_id, message_id, touch, revenue, currency, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (order_id) DO NOTHING",
                params![
                    row.order_id,
                    row.profile_id as i64,
                    row.message_id,
                    row.touch,
                    row.revenue,
                    row.currency,
                    ms(row.at)
                ],
            )? > 0)
        })
    }

    fn report(&self, group: &str, since: DateTime<Utc>) -> StoreResult<Vec<ReportRow>> {
        Ok(self.grouped_report(group, since, false)?.into_iter().map(|(_, row)| row).collect())
    }

    fn report_by_day(&self, group: &str, since: DateTime<Utc>) -> StoreResult<Vec<(i64, ReportRow)>> {
        self.grouped_report(group, since, true)
    }

    fn withdraw(&self, key_prefixes: &[String], reason: &str, now: DateTime<Utc>) -> StoreResult<usize> {
        if key_prefixes.is_empty() {
            return Ok(0);
        }
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let mut withdrawn = 0;
            {
                // A range of the idempotency key's index: from the prefix to the first key past all that start
                // with it.
                let mut drop = tx.prepare_cached(
                    "UPDATE msg_messages SET state = 'dropped', reason = ?3, updated_at = ?4
                     WHERE idempotency_key >= ?1 AND idempotency_key < ?2 AND state IN ('queued', 'deferred')
                     RETURNING id",
                )?;
                let mut decision = tx.prepare_cached(
                    "INSERT INTO msg_decisions (message_id, at, state, reason) VALUES (?1, ?2, 'dropped', ?3)",
                )?;
                for prefix in key_prefixes {
                    let Some(end) = prefix_end(prefix) else { continue };
                    let ids: Vec<String> = drop
                        .query_map(params![prefix, end, reason, ms(now)], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for id in &ids {
                        decision.execute(params![id, ms(now), reason])?;
                    }
                    withdrawn += ids.len();
                }
            }
            tx.commit()?;
            Ok(withdrawn)
        })
    }

    fn follow_profile_changes(&self, limit: usize, now: DateTime<Utc>) -> StoreResult<usize> {
        let limit = limit.max(1) as i64;
        // A read first: nearly every call finds nothing, and must not take the write lock to learn it. The
        // erased people's messages are found here too: unsent ones are not in the profile index, so that is a
        // scan, and a reader does not hold up sending while it runs.
        let pending = self.with_reader(|conn| {
            // The first time, merges start from now (before, messaging followed them as they happened), and
            // erasures from the beginning: a store erased people before messaging followed erasures at all.
            // Migration 15 set both cursors.
            let cursor = |name| Follower::Messaging.position(conn, name);
            let (merge_cursor, erasure_cursor) = (cursor(MERGES)?.unwrap_or(0), cursor(ERASURES)?.unwrap_or(0));
            let merges: Vec<(i64, i64, i64)> = conn
                .prepare_cached("SELECT id, from_profile, into_profile FROM merges WHERE id > ?1 ORDER BY id LIMIT ?2")?
                .query_map([merge_cursor, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let erasures = erasures_after(conn, erasure_cursor, limit)?;
            if merges.is_empty() && erasures.is_empty() {
                return Ok(None);
            }
            let mut changes = ProfileChanges {
                merge_cursor: merges.last().map_or(merge_cursor, |m| m.0),
                erasure_cursor: erasures.last().map_or(erasure_cursor, |e| e.0),
                merges: merges.into_iter().map(|(_, from, into)| (from, into)).collect(),
                erasures: erasures.len(),
                ..ProfileChanges::default()
            };
            if !erasures.is_empty() {
                // Messages queued for someone later merged into the erased person still name that someone.
                let erased = serde_json::to_string(&erasures.iter().map(|e| e.1).collect::<Vec<_>>())?;
                changes.gone = conn
                    .prepare_cached(&format!("{PEOPLE} SELECT id FROM people"))?
                    .query_map([&erased], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                changes.erased_messages = conn
                    .prepare_cached(&format!("{PEOPLE} {MESSAGES_OF_PEOPLE}"))?
                    .query_map([&erased], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
            }
            Ok(Some(changes))
        })?;
        let Some(changes) = pending else { return Ok(0) };
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            // Merges before erasures: a person merged into someone later erased is erased with them. Messages
            // still in the queue keep the profile they were queued for: the worker follows the merge when it takes
            // them out, and records whom they went to (see migration 14).
            for (from, into) in &changes.merges {
                for statement in [
                    "UPDATE msg_messages SET profile_id = ?2 WHERE profile_id = ?1 AND sent_at IS NOT NULL",
                    "UPDATE msg_messages SET profile_id = ?2 WHERE state = 'sending' AND profile_id = ?1",
                    "UPDATE msg_touches SET profile_id = ?2 WHERE profile_id = ?1",
                    "UPDATE msg_attributions SET profile_id = ?2 WHERE profile_id = ?1",
                ] {
                    tx.execute_cached(statement, params![from, into])?;
                }
            }
            let at = ms(now);
            for rowid in &changes.erased_messages {
                // Links may carry personal data a template put in them; the figures (kind, time) stay.
                for statement in [
                    "UPDATE msg_touches SET profile_id = NULL, url = NULL
                     WHERE message_id = (SELECT id FROM msg_messages WHERE rowid = ?1)",
                    "UPDATE msg_attributions SET profile_id = NULL
                     WHERE message_id = (SELECT id FROM msg_messages WHERE rowid = ?1)",
                    "UPDATE msg_decisions SET reason = 'erased'
                     WHERE message_id = (SELECT id FROM msg_messages WHERE rowid = ?1)",
                ] {
                    tx.execute_cached(statement, [rowid])?;
                }
                for statement in [
                    "INSERT INTO msg_decisions (message_id, at, state, reason)
                     SELECT id, ?2, 'suppressed', 'erased' FROM msg_messages
                     WHERE rowid = ?1 AND state IN ('queued', 'deferred')",
                    "UPDATE msg_messages SET profile_id = NULL, recipient = NULL, context = '{}', updated_at = ?2,
                         reason = CASE WHEN reason IS NULL THEN NULL ELSE 'erased' END,
                         state = CASE WHEN state IN ('queued', 'deferred') THEN 'suppressed' ELSE state END,
                         erased_at = COALESCE(erased_at, ?2)
                     WHERE rowid = ?1",
                ] {
                    tx.execute_cached(statement, params![rowid, at])?;
                }
            }
            if !changes.gone.is_empty() {
                let gone = serde_json::to_string(&changes.gone)?;
                for statement in [
                    "UPDATE msg_touches SET profile_id = NULL, url = NULL
                     WHERE profile_id IN (SELECT value FROM json_each(?1))",
                    "UPDATE msg_attributions SET profile_id = NULL WHERE profile_id IN (SELECT value FROM json_each(?1))",
                ] {
                    tx.execute_cached(statement, [&gone])?;
                }
            }
            Follower::Messaging.save(&tx, [(MERGES, changes.merge_cursor), (ERASURES, changes.erasure_cursor)])?;
            tx.commit()?;
            Ok(changes.merges.len() + changes.erasures)
        })
    }

    fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row_cached("SELECT value FROM msg_settings WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        })
    }

    fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        self.with_writer(|conn| {
            conn.execute_cached(
                "INSERT INTO msg_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [key, value],
            )?;
            Ok(conn.query_row_cached("SELECT value FROM msg_settings WHERE key = ?1", [key], |r| r.get(0))?)
        })
    }

    fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        self.with_writer(|conn| {
            conn.execute_cached(
                "INSERT INTO msg_settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )?;
            Ok(())
        })
    }
}

/// One person's sends of a channel and purpose since a time (frequency caps), through the sent messages' index.
const SENT_TIMES: &str = "SELECT sent_at FROM msg_messages
     WHERE profile_id = ?1 AND channel = ?2 AND sent_at >= ?3 AND purpose = ?4 AND test = 0
       AND state IN ('sending', 'sent', 'delivered')";

fn suppression_row(r: &Row<'_>) -> rusqlite::Result<Suppression> {
    Ok(Suppression { channel: r.get(0)?, address: r.get(1)?, reason: r.get(2)?, at: from_ms(r.get(3)?) })
}

impl SqliteStore {
    fn grouped_report(&self, group: &str, since: DateTime<Utc>, by_day: bool) -> StoreResult<Vec<(i64, ReportRow)>> {
        let key = match group {
            "template" | "flow" | "channel" | "campaign" => group,
            other => return Err(StoreError::Invalid(format!("cannot group by {other}"))),
        };
        // Integer division keeps the day bucket portable SQL (no date functions).
        let day = if by_day { "m.created_at / 86400000" } else { "0" };
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT m.{key},
                        SUM(m.sent_at IS NOT NULL),
                        SUM(m.opened_at IS NOT NULL),
                        SUM(EXISTS (SELECT 1 FROM msg_touches t WHERE t.message_id = m.id AND t.kind = 'open' AND t.machine = 1)
                            AND m.opened_at IS NULL),
                        SUM(m.clicked_at IS NOT NULL),
                        COALESCE(SUM(a.orders), 0),
                        COALESCE(SUM(a.revenue), 0),
                        {day} AS day
                 FROM msg_messages m
                 LEFT JOIN (SELECT message_id, COUNT(*) AS orders, SUM(revenue) AS revenue
                            FROM msg_attributions GROUP BY message_id) a ON a.message_id = m.id
                 WHERE m.created_at >= ?1 AND m.test = 0
                 GROUP BY m.{key}, day ORDER BY day, m.{key}"
            ))?;
            let rows = stmt.query_map([ms(since)], |r| {
                Ok((
                    r.get(7)?,
                    ReportRow {
                        key: r.get(0)?,
                        sent: r.get(1)?,
                        opened: r.get(2)?,
                        machine_opened: r.get(3)?,
                        clicked: r.get(4)?,
                        orders: r.get(5)?,
                        revenue: r.get(6)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    /// The steps of `sql`'s query plan in a fresh store.
    /// A connection to a freshly migrated store (the directory lives as long as the returned guard).
    fn fresh_store() -> anyhow::Result<(tempfile::TempDir, rusqlite::Connection)> {
        let dir = tempfile::tempdir()?;
        drop(SqliteStore::open(dir.path(), Durability::Process)?);
        let conn = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
        Ok((dir, conn))
    }

    fn plan(sql: &str, params: impl rusqlite::Params) -> anyhow::Result<Vec<String>> {
        let (_dir, conn) = fresh_store()?;
        let steps = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
            .query_map(params, |row| row.get(3))?
            .collect::<Result<_, _>>()?;
        Ok(steps)
    }

    #[test]
    fn an_erasure_finds_the_peoples_messages_through_indexes() -> anyhow::Result<()> {
        let steps = plan(&format!("{PEOPLE} {MESSAGES_OF_PEOPLE}"), ["[1]"])?;
        for index in
            ["msg_messages_profile", "msg_messages_queue", "msg_messages_sending", "msg_messages_unsent_profile"]
        {
            assert!(steps.iter().any(|s| s.contains(index)), "{index}: {steps:?}");
        }
        assert!(!steps.iter().any(|s| s == "SCAN msg_messages"), "{steps:?}");
        Ok(())
    }

    /// Queueing a message and each change of its state build no temporary b-tree: a partial index whose
    /// condition holds an IN list of three values made SQLite create one on every write (migration 19).
    #[test]
    fn writing_a_message_builds_no_temporary_btree() -> anyhow::Result<()> {
        let (_dir, conn) = fresh_store()?;
        for sql in [QUEUE_MESSAGE, MESSAGE_TRANSITION] {
            let mut explain = conn.prepare(&format!("EXPLAIN {sql}"))?;
            let unbound =
                rusqlite::params_from_iter(std::iter::repeat_n(rusqlite::types::Null, explain.parameter_count()));
            let opcodes: Vec<String> = explain.query_map(unbound, |row| row.get(1))?.collect::<Result<_, _>>()?;
            assert!(opcodes.iter().any(|op| op == "IdxInsert"), "{sql}: {opcodes:?}");
            assert!(!opcodes.iter().any(|op| op == "OpenEphemeral"), "{sql}: {opcodes:?}");
        }
        Ok(())
    }

    #[test]
    fn due_messages_are_read_in_queue_order_without_sorting() -> anyhow::Result<()> {
        let steps = plan(&due_of_priority(), [0, 10, 5])?;
        assert!(steps.iter().any(|s| s.contains("INDEX msg_messages_queue (priority=? AND due_at<?)")), "{steps:?}");
        assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{steps:?}");
        Ok(())
    }

    #[test]
    fn the_backlog_reads_only_the_queue_index() -> anyhow::Result<()> {
        let steps = plan(BACKLOG, [0, 10])?;
        assert!(
            steps.iter().any(|s| s.contains("COVERING INDEX msg_messages_queue (priority=? AND due_at<?)")),
            "{steps:?}"
        );
        Ok(())
    }

    #[test]
    fn cached_statements_are_not_planned_again_for_new_values() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(dir.path(), Durability::Process)?;
        store.with_reader(|conn| {
            for sql in [due_of_priority(), BACKLOG.to_owned()] {
                let mut stmt = conn.prepare_cached(&sql)?;
                let count = stmt.parameter_count();
                for i in 0..5i64 {
                    let values = [i % 4, 1_000 + i, 500 + i];
                    let _ = stmt.query_map(rusqlite::params_from_iter(&values[..count]), |_| Ok(()))?.count();
                }
                assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
            }
            Ok(())
        })?;
        Ok(())
    }
}
