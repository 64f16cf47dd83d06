//! SQLite implementation of [`FlowStore`].

use super::cursors::{ERASURES, Follower, MERGES, erasures_after};
use super::{CachedSql, SqliteStore, from_ms, ms};
use crate::flows::{
    FlowBatch, FlowCounts, FlowStore, FlowVersion, FollowedChanges, OwedWithdrawal, PriorRunsRow, RunRow, StepRow,
    StoredFlow,
};
use crate::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use rusqlite::{Connection, OptionalExtension, Row, params};

const FLOW_COLUMNS: &str =
    "id, name, status, version, live_version, since_event_seq, since_transition_seq, created_at, updated_at";

const RUN_COLUMNS: &str = "id, flow_id, version, profile_id, status, step, due_at, entered_at, trigger, visits, arm, \
     holdout, goal_until, converted_at, revenue, exit_reason, ended_at";

fn flow_row(r: &Row<'_>) -> rusqlite::Result<StoredFlow> {
    Ok(StoredFlow {
        id: r.get(0)?,
        name: r.get(1)?,
        status: r.get(2)?,
        version: r.get(3)?,
        live_version: r.get(4)?,
        since_event_seq: r.get(5)?,
        since_transition_seq: r.get(6)?,
        created_at: from_ms(r.get(7)?),
        updated_at: from_ms(r.get(8)?),
    })
}

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    let trigger: String = r.get(8)?;
    Ok(RunRow {
        id: r.get(0)?,
        flow_id: r.get(1)?,
        version: r.get(2)?,
        profile_id: r.get::<_, i64>(3)? as ProfileId,
        status: r.get(4)?,
        step: r.get(5)?,
        due_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
        entered_at: from_ms(r.get(7)?),
        trigger: serde_json::from_str(&trigger).unwrap_or(serde_json::Value::Null),
        visits: r.get(9)?,
        arm: r.get(10)?,
        holdout: r.get::<_, i64>(11)? != 0,
        goal_until: r.get::<_, Option<i64>>(12)?.map(from_ms),
        converted_at: r.get::<_, Option<i64>>(13)?.map(from_ms),
        revenue: r.get(14)?,
        exit_reason: r.get(15)?,
        ended_at: r.get::<_, Option<i64>>(16)?.map(from_ms),
    })
}

fn query_runs(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<RunRow>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, run_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn flow_where(conn: &Connection, clause: &str, param: impl rusqlite::ToSql) -> StoreResult<Option<StoredFlow>> {
    Ok(conn
        .query_row_cached(&format!("SELECT {FLOW_COLUMNS} FROM flows WHERE {clause}"), [param], flow_row)
        .optional()?)
}

impl FlowStore for SqliteStore {
    fn save_flow(&self, name: &str, definition: &serde_json::Value, now: DateTime<Utc>) -> StoreResult<StoredFlow> {
        let text = serde_json::to_string(definition)?;
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            tx.execute_cached(
                "INSERT INTO flows (name, status, version, live_version, created_at, updated_at)
                 VALUES (?1, 'draft', 0, NULL, ?2, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, ms(now)],
            )?;
            tx.execute_cached(
                "UPDATE flows SET version = version + 1, updated_at = ?2 WHERE name = ?1",
                params![name, ms(now)],
            )?;
            let flow = flow_where(&tx, "name = ?1", name)?
                .ok_or_else(|| StoreError::Invalid(format!("flow {name} vanished while saving")))?;
            tx.execute_cached(
                "INSERT INTO flow_versions (flow_id, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![flow.id, flow.version, text, ms(now)],
            )?;
            tx.commit()?;
            Ok(flow)
        })
    }

    fn flow(&self, name: &str) -> StoreResult<Option<StoredFlow>> {
        self.with_reader(|conn| flow_where(conn, "name = ?1", name))
    }

    fn flow_by_id(&self, id: i64) -> StoreResult<Option<StoredFlow>> {
        self.with_reader(|conn| flow_where(conn, "id = ?1", id))
    }

    fn list_flows(&self) -> StoreResult<Vec<StoredFlow>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {FLOW_COLUMNS} FROM flows ORDER BY name"))?;
            Ok(stmt.query_map([], flow_row)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn flow_version(&self, flow_id: i64, version: i64) -> StoreResult<Option<FlowVersion>> {
        self.with_reader(|conn| {
            let row = conn
                .query_row_cached(
                    "SELECT version, definition, created_at FROM flow_versions WHERE flow_id = ?1 AND version = ?2",
                    params![flow_id, version],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()?;
            row.map(|(version, definition, created)| {
                Ok(FlowVersion {
                    version,
                    definition: serde_json::from_str(&definition)?,
                    created_at: from_ms(created),
                })
            })
            .transpose()
        })
    }

    fn flow_versions(&self, flow_id: i64) -> StoreResult<Vec<(i64, DateTime<Utc>)>> {
        self.with_reader(|conn| {
            let mut stmt =
                conn.prepare("SELECT version, created_at FROM flow_versions WHERE flow_id = ?1 ORDER BY version DESC")?;
            let rows = stmt.query_map([flow_id], |r| Ok((r.get::<_, i64>(0)?, from_ms(r.get(1)?))))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn set_flow_status(
        &self,
        flow_id: i64,
        status: &str,
        live_version: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let heads = match live_version {
            Some(_) => Some(self.input_heads()?),
            None => None,
        };
        self.with_writer(|conn| {
            conn.execute_cached(
                "UPDATE flows SET status = ?2, live_version = COALESCE(?3, live_version),
                     since_event_seq = COALESCE(?5, since_event_seq),
                     since_transition_seq = COALESCE(?6, since_transition_seq), updated_at = ?4
                 WHERE id = ?1",
                params![flow_id, status, live_version, ms(now), heads.map(|h| h.0), heads.map(|h| h.1)],
            )?;
            Ok(())
        })
    }

    fn input_heads(&self) -> StoreResult<(i64, i64)> {
        self.with_reader(|conn| {
            Ok(conn.query_row_cached(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events),
                        (SELECT COALESCE(MAX(seq), 0) FROM derived.segment_transitions)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
    }

    fn delete_flow(&self, flow_id: i64) -> StoreResult<()> {
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            tx.execute_cached("DELETE FROM flow_steps WHERE flow_id = ?1", [flow_id])?;
            tx.execute_cached("DELETE FROM flow_runs WHERE flow_id = ?1", [flow_id])?;
            // Its sends were withdrawn as a whole before (see `FlowEngine::delete`).
            tx.execute_cached("DELETE FROM flow_withdrawals WHERE flow_id = ?1", [flow_id])?;
            tx.execute_cached("DELETE FROM flow_versions WHERE flow_id = ?1", [flow_id])?;
            tx.execute_cached("DELETE FROM flows WHERE id = ?1", [flow_id])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn flow_cursor(&self, name: &str) -> StoreResult<Option<i64>> {
        self.with_reader(|conn| Follower::Flows.position(conn, name))
    }

    fn forget_flow_cursors(&self) -> StoreResult<()> {
        let any: bool = self.with_reader(|conn| {
            Ok(conn.query_row_cached("SELECT EXISTS (SELECT 1 FROM flow_cursors)", [], |r| r.get(0))?)
        })?;
        if any {
            self.with_writer(|conn| Ok(conn.execute_cached("DELETE FROM flow_cursors", []).map(|_| ())?))?;
        }
        Ok(())
    }

    fn apply_flow_batch(&self, batch: &FlowBatch, now: DateTime<Utc>) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            {
                // A run is updated in place, and inserted only when no row was there: an upsert rewrote the
                // person index of every run it updated (its SET named `profile_id`), and serialised the trigger
                // that an update never writes. A run's person changes only when merges move it
                // (`follow_profile_changes`), which an update here must not undo; its version only by `migrate`
                // (the upsert did not write it, so a migration moved nobody).
                let mut update = tx.prepare_cached(
                    "UPDATE flow_runs SET status = ?2, step = ?3, due_at = ?4, visits = ?5, arm = ?6, holdout = ?7,
                         converted_at = ?8, revenue = ?9, exit_reason = ?10, ended_at = ?11, updated_at = ?12,
                         version = ?13
                     WHERE id = ?1",
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO flow_runs (id, flow_id, version, profile_id, status, step, due_at, entered_at, trigger,
                         visits, arm, holdout, goal_until, converted_at, revenue, exit_reason, ended_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )?;
                for run in &batch.runs {
                    let updated = update.execute(params![
                        run.id,
                        run.status,
                        run.step,
                        run.due_at.map(ms),
                        run.visits,
                        run.arm,
                        i64::from(run.holdout),
                        run.converted_at.map(ms),
                        run.revenue,
                        run.exit_reason,
                        run.ended_at.map(ms),
                        ms(now),
                        run.version,
                    ])?;
                    if updated > 0 {
                        continue;
                    }
                    insert.execute(params![
                        run.id,
                        run.flow_id,
                        run.version,
                        run.profile_id as i64,
                        run.status,
                        run.step,
                        run.due_at.map(ms),
                        ms(run.entered_at),
                        serde_json::to_string(&run.trigger)?,
                        run.visits,
                        run.arm,
                        i64::from(run.holdout),
                        run.goal_until.map(ms),
                        run.converted_at.map(ms),
                        run.revenue,
                        run.exit_reason,
                        run.ended_at.map(ms),
                        ms(now),
                    ])?;
                }
                let mut step = tx.prepare_cached(
                    "INSERT INTO flow_steps (run_id, visit, flow_id, step, kind, outcome, action, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (run_id, visit) DO NOTHING",
                )?;
                for (flow_id, s) in &batch.steps {
                    let action = s.action.as_ref().map(serde_json::to_string).transpose()?;
                    step.execute(params![s.run_id, s.visit, flow_id, s.step, s.kind, s.outcome, action, ms(s.at)])?;
                }
                Follower::Flows.save(&tx, batch.cursors.iter().map(|(name, position)| (name.as_str(), *position)))?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn max_run_id(&self) -> StoreResult<i64> {
        self.with_reader(|conn| {
            Ok(conn.query_row_cached("SELECT COALESCE(MAX(id), 0) FROM flow_runs", [], |r| r.get(0))?)
        })
    }

    // `flow_id + 0` keeps the planner on the due-time index: filtering by flow through `flow_runs_flow` read
    // and sorted every run of the flow (a million, per round, measured) instead of the few that are due.
    fn due_runs(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<RunRow>> {
        self.with_reader(|conn| {
            query_runs(
                conn,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM flow_runs WHERE due_at IS NOT NULL AND due_at <= ?1
                       AND flow_id + 0 IN (SELECT id FROM flows WHERE status = 'active')
                     ORDER BY due_at LIMIT ?2"
                ),
                params![ms(now), limit as i64],
            )
        })
    }

    fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.with_reader(|conn| {
            let due: Option<i64> = conn
                .query_row_cached(
                    "SELECT due_at FROM flow_runs WHERE due_at IS NOT NULL
                       AND flow_id + 0 IN (SELECT id FROM flows WHERE status = 'active')
                     ORDER BY due_at LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(due.map(from_ms))
        })
    }

    fn open_runs(&self, profile: ProfileId, at: DateTime<Utc>) -> StoreResult<Vec<RunRow>> {
        self.with_reader(|conn| {
            query_runs(
                conn,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM flow_runs WHERE profile_id = ?1
                     AND (status IN ('active', 'waiting', 'holdout')
                          OR (converted_at IS NULL AND goal_until IS NOT NULL AND goal_until >= ?2))
                     ORDER BY id"
                ),
                params![profile as i64, ms(at)],
            )
        })
    }

    fn prior_runs(&self, flow_id: i64, profile: ProfileId) -> StoreResult<PriorRunsRow> {
        self.with_reader(|conn| {
            let (live, last): (i64, Option<i64>) = conn.query_row_cached(
                "SELECT COALESCE(SUM(status IN ('active', 'waiting', 'holdout')), 0), MAX(entered_at)
                 FROM flow_runs WHERE profile_id = ?1 AND flow_id = ?2",
                params![profile as i64, flow_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(PriorRunsRow { live: live as usize, last_entered: last.map(from_ms) })
        })
    }

    fn run(&self, id: i64) -> StoreResult<Option<RunRow>> {
        self.with_reader(|conn| {
            Ok(query_runs(conn, &format!("SELECT {RUN_COLUMNS} FROM flow_runs WHERE id = ?1"), [id])?.pop())
        })
    }

    fn runs(
        &self,
        flow_id: Option<i64>,
        profile: Option<ProfileId>,
        status: Option<&str>,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<RunRow>> {
        self.with_reader(|conn| {
            query_runs(
                conn,
                &format!(
                    "SELECT {RUN_COLUMNS} FROM flow_runs
                     WHERE (?1 IS NULL OR flow_id = ?1) AND (?2 IS NULL OR profile_id = ?2)
                       AND (?3 IS NULL OR status = ?3) AND id > ?4
                     ORDER BY id LIMIT ?5"
                ),
                params![flow_id, profile.map(|p| p as i64), status, after.unwrap_or(0), limit as i64],
            )
        })
    }

    fn run_steps(&self, run_id: i64) -> StoreResult<Vec<StepRow>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT run_id, visit, step, kind, outcome, action, at FROM flow_steps WHERE run_id = ?1 ORDER BY visit",
            )?;
            let rows = stmt.query_map([run_id], |r| {
                let action: Option<String> = r.get(5)?;
                Ok(StepRow {
                    run_id: r.get(0)?,
                    visit: r.get(1)?,
                    step: r.get(2)?,
                    kind: r.get(3)?,
                    outcome: r.get(4)?,
                    action: action.and_then(|a| serde_json::from_str(&a).ok()),
                    at: from_ms(r.get(6)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn flow_counts(&self, flow_id: i64) -> StoreResult<FlowCounts> {
        self.with_reader(|conn| {
            let pairs = |sql: &str| -> StoreResult<Vec<(String, i64)>> {
                let mut stmt = conn.prepare(sql)?;
                let rows = stmt.query_map([flow_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            };
            let by_status =
                pairs("SELECT status, COUNT(*) FROM flow_runs WHERE flow_id = ?1 GROUP BY status ORDER BY status")?;
            let by_exit_reason = pairs(
                "SELECT exit_reason, COUNT(*) FROM flow_runs WHERE flow_id = ?1 AND exit_reason IS NOT NULL
                 GROUP BY exit_reason ORDER BY exit_reason",
            )?;
            let mut stmt = conn.prepare(
                "SELECT step, outcome, COUNT(*) FROM flow_steps WHERE flow_id = ?1 GROUP BY step, outcome
                 ORDER BY step, outcome",
            )?;
            let by_step =
                stmt.query_map([flow_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()?;
            let mut stmt = conn.prepare(
                "SELECT arm, holdout, COUNT(*), COUNT(converted_at), COALESCE(SUM(revenue), 0) FROM flow_runs
                 WHERE flow_id = ?1 AND (exit_reason IS NULL OR exit_reason <> 'merged')
                 GROUP BY arm, holdout ORDER BY arm, holdout",
            )?;
            let by_arm = stmt
                .query_map([flow_id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let waiting_at = pairs(
                "SELECT step, COUNT(*) FROM flow_runs WHERE flow_id = ?1 AND status IN ('active', 'waiting')
                   AND step IS NOT NULL GROUP BY step ORDER BY step",
            )?;
            Ok(FlowCounts { by_status, by_exit_reason, by_step, waiting_at, by_arm })
        })
    }

    fn follow_profile_changes(&self, limit: usize, concurrent_flows: &[i64]) -> StoreResult<FollowedChanges> {
        type Changes = (Vec<(i64, i64, i64, i64)>, Vec<(i64, i64)>, i64, i64, bool);
        let limit = limit.max(1) as i64;
        // A read first: nearly every round finds nothing, and must not take the write lock to learn it.
        let (merges, erasures, merge_cursor, erasure_cursor, fresh): Changes = self.with_reader(|conn| {
            let cursor = |name| Follower::Flows.position(conn, name);
            let (Some(merge_cursor), Some(erasure_cursor)) = (cursor(MERGES)?, cursor(ERASURES)?) else {
                let (merges, erasures) = conn.query_row_cached(
                    "SELECT (SELECT COALESCE(MAX(id), 0) FROM merges), (SELECT COALESCE(MAX(rowid), 0) FROM erasures)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                return Ok((Vec::new(), Vec::new(), merges, erasures, true));
            };
            let merges = conn
                .prepare_cached(
                    "SELECT id, from_profile, into_profile, recorded_at FROM merges WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?
                .query_map([merge_cursor, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let erasures = erasures_after(conn, erasure_cursor, limit)?;
            let merge_cursor = merges.last().map_or(merge_cursor, |m| m.0);
            let erasure_cursor = erasures.last().map_or(erasure_cursor, |e| e.0);
            Ok((merges, erasures, merge_cursor, erasure_cursor, false))
        })?;
        if merges.is_empty() && erasures.is_empty() && !fresh {
            return Ok(FollowedChanges::default());
        }
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let mut merged_runs = 0;
            // Merges before erasures: a person merged into someone later erased leaves with them.
            for (_, from, into, recorded_at) in &merges {
                let moved = tx.execute_cached(
                    "UPDATE flow_runs SET profile_id = ?2 WHERE profile_id = ?1",
                    params![from, into],
                )?;
                if moved > 0 {
                    merged_runs += end_duplicate_runs(&tx, *into, concurrent_flows, *recorded_at)?;
                }
            }
            for (_, profile) in &erasures {
                tx.execute_cached(
                    "DELETE FROM flow_steps WHERE run_id IN (SELECT id FROM flow_runs WHERE profile_id = ?1)",
                    [profile],
                )?;
                tx.execute_cached("DELETE FROM flow_runs WHERE profile_id = ?1", [profile])?;
            }
            Follower::Flows.save(&tx, [(MERGES, merge_cursor), (ERASURES, erasure_cursor)])?;
            tx.commit()?;
            Ok(FollowedChanges { applied: merges.len() + erasures.len(), merged_runs })
        })
    }

    fn owed_withdrawals(&self, limit: usize) -> StoreResult<Vec<OwedWithdrawal>> {
        self.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT flow_id, run_id, reason FROM flow_withdrawals ORDER BY run_id LIMIT ?1")?
                .query_map([limit.max(1) as i64], |r| {
                    Ok(OwedWithdrawal { flow_id: r.get(0)?, run_id: r.get(1)?, reason: r.get(2)? })
                })?
                .collect::<Result<_, _>>()?)
        })
    }

    fn withdrawals_done(&self, run_ids: &[i64]) -> StoreResult<()> {
        if run_ids.is_empty() {
            return Ok(());
        }
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            for run in run_ids {
                tx.execute_cached("DELETE FROM flow_withdrawals WHERE run_id = ?1", [run])?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// A person holds at most one run in progress per flow (unless the flow allows several): after a merge brought
/// two people's runs together, the run that entered first goes on and the others exit as `merged`, at the time
/// the merge was recorded (or their entry, if that was later: client clocks). An exited duplicate no longer
/// counts conversions (its goal window closes) nor, in the flow's arm and lift figures, the person a second time.
fn end_duplicate_runs(
    tx: &rusqlite::Transaction<'_>,
    profile: i64,
    concurrent_flows: &[i64],
    at_ms: i64,
) -> StoreResult<usize> {
    let open: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT id, flow_id FROM flow_runs WHERE profile_id = ?1 AND status IN ('active', 'waiting', 'holdout')
             ORDER BY entered_at, id",
        )?
        .query_map([profile], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut kept = std::collections::HashSet::new();
    let mut ended = 0;
    for (run, flow) in open {
        if concurrent_flows.contains(&flow) || kept.insert(flow) {
            continue;
        }
        ended += 1;
        // What the run queued is withdrawn after this commits; recorded here so a crash cannot skip it.
        tx.execute_cached(
            "INSERT INTO flow_withdrawals (run_id, flow_id, reason) VALUES (?1, ?2, 'merged')
             ON CONFLICT (run_id) DO NOTHING",
            params![run, flow],
        )?;
        tx.execute_cached(
            "UPDATE flow_runs SET status = 'exited', exit_reason = 'merged', step = NULL, due_at = NULL,
                    goal_until = NULL, ended_at = CASE WHEN entered_at > ?2 THEN entered_at ELSE ?2 END,
                    updated_at = ?2
              WHERE id = ?1",
            params![run, at_ms],
        )?;
    }
    Ok(ended)
}
