//! How the store writes flow runs and their steps: a round writes a run again as it changes, and never undoes a
//! merge's move of it; the steps of stores written before migration 20 survive it.

use chrono::{DateTime, TimeZone, Utc};
use kizuna_store::flows::{FlowBatch, RunRow, StepRow};
use kizuna_store::{Durability, SqliteStore, Store};
use serde_json::json;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, hour, 0, 0).single().expect("a valid time")
}

fn waiting_run(id: i64, profile: u64) -> RunRow {
    RunRow {
        id,
        flow_id: 1,
        version: 1,
        profile_id: profile,
        status: "waiting".into(),
        step: Some("hello".into()),
        due_at: Some(at(10)),
        entered_at: at(9),
        trigger: json!({"kind": "event", "name": "Signed Up"}),
        visits: 1,
        arm: None,
        holdout: false,
        goal_until: None,
        converted_at: None,
        revenue: 0.0,
        exit_reason: None,
        ended_at: None,
    }
}

fn step(run_id: i64, visit: i64, name: &str) -> StepRow {
    StepRow {
        run_id,
        visit,
        step: name.into(),
        kind: "delay".into(),
        outcome: "waiting".into(),
        action: Some(json!({"for": "1h"})),
        at: at(9),
    }
}

#[test]
fn a_run_written_again_takes_its_new_state_and_version_but_keeps_the_person_a_merge_moved_it_to() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let flows = Store::flows(&store);
    flows.apply_flow_batch(&FlowBatch { runs: vec![waiting_run(7, 1)], ..Default::default() }, at(9))?;
    // A merge moves the run to person 2 (as `follow_profile_changes` does) after the engine read it as person 1's.
    let conn = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    conn.execute("UPDATE flow_runs SET profile_id = 2 WHERE id = 7", [])?;
    drop(conn);

    let mut done = waiting_run(7, 1);
    done.version = 2;
    done.status = "completed".into();
    done.step = None;
    done.due_at = None;
    done.ended_at = Some(at(10));
    done.trigger = json!({"kind": "something else, never written again"});
    flows.apply_flow_batch(&FlowBatch { runs: vec![done], ..Default::default() }, at(10))?;

    let run = flows.run(7)?.expect("the run");
    assert_eq!((run.profile_id, run.version, run.status.as_str()), (2, 2, "completed"));
    assert_eq!((run.step, run.due_at, run.ended_at), (None, None, Some(at(10))));
    assert_eq!(run.trigger, json!({"kind": "event", "name": "Signed Up"}), "the trigger is written once");
    assert_eq!(flows.next_due()?, None);
    Ok(())
}

#[test]
fn migration_20_keeps_every_step_and_stores_them_by_their_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let store = SqliteStore::open(dir.path(), Durability::Process)?;
        let batch = FlowBatch { runs: vec![waiting_run(7, 1)], ..Default::default() };
        Store::flows(&store).apply_flow_batch(&batch, at(9))?;
    }
    // The steps table as builds before migration 20 made it, with two steps in it.
    let conn = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    conn.execute_batch(
        "DROP TABLE flow_steps;
         CREATE TABLE flow_steps (
             run_id INTEGER NOT NULL, visit INTEGER NOT NULL, flow_id INTEGER NOT NULL, step TEXT NOT NULL,
             kind TEXT NOT NULL, outcome TEXT NOT NULL, action TEXT, at INTEGER NOT NULL,
             PRIMARY KEY (run_id, visit));
         CREATE INDEX flow_steps_flow ON flow_steps(flow_id, step);
         DELETE FROM schema_migrations WHERE version = 20;",
    )?;
    let ms = at(9).timestamp_millis();
    for (visit, name, action) in [(1, "wait", Some(r#"{"for":"1h"}"#)), (2, "hello", None)] {
        conn.execute(
            "INSERT INTO flow_steps VALUES (7, ?1, 1, ?2, 'delay', 'waiting', ?3, ?4)",
            rusqlite::params![visit, name, action, ms],
        )?;
    }
    drop(conn);

    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let steps = Store::flows(&store).run_steps(7)?;
    let mut second = step(7, 2, "hello");
    second.action = None;
    assert_eq!(steps, vec![step(7, 1, "wait"), second]);
    let conn = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let sql: String =
        conn.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'flow_steps'", [], |r| r.get(0))?;
    assert!(sql.contains("WITHOUT ROWID"), "{sql}");
    let indexes: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'flow_steps_flow' AND tbl_name = 'flow_steps'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(indexes, 1, "the per-flow index is there again");
    let counts = Store::flows(&store).flow_counts(1)?;
    assert_eq!(
        counts.by_step,
        vec![("hello".to_string(), "waiting".to_string(), 1), ("wait".into(), "waiting".into(), 1)]
    );
    // A step written again (a round redone after a crash) is kept once.
    let again = FlowBatch { steps: vec![(1, step(7, 1, "wait"))], ..Default::default() };
    Store::flows(&store).apply_flow_batch(&again, at(11))?;
    assert_eq!(Store::flows(&store).run_steps(7)?.len(), 2);
    Ok(())
}
