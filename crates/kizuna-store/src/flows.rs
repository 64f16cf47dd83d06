//! What flows keep: definitions with their versions, one row per person's run (its state and its timer), the
//! steps each run took, and the engine's read cursors. Statuses and triggers travel as text and JSON so the
//! store knows nothing of the flow machine's types.

use chrono::{DateTime, Utc};
use kizuna_identity::ProfileId;
use serde::Serialize;

use crate::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredFlow {
    pub id: i64,
    pub name: String,
    /// `draft`, `active`, `paused`.
    pub status: String,
    /// The latest saved version.
    pub version: i64,
    /// The version new entrants get; set when the flow is activated.
    pub live_version: Option<i64>,
    /// Only events after this log position (and segment transitions after this one) trigger the flow: the
    /// heads when it was last activated.
    pub since_event_seq: i64,
    pub since_transition_seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowVersion {
    pub version: i64,
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub flow_id: i64,
    pub version: i64,
    pub profile_id: ProfileId,
    pub status: String,
    pub step: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub entered_at: DateTime<Utc>,
    pub trigger: serde_json::Value,
    pub visits: i64,
    pub arm: Option<String>,
    pub holdout: bool,
    pub goal_until: Option<DateTime<Utc>>,
    pub converted_at: Option<DateTime<Utc>>,
    pub revenue: f64,
    pub exit_reason: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One executed step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    pub run_id: i64,
    pub visit: i64,
    pub step: String,
    pub kind: String,
    pub outcome: String,
    pub action: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// What one engine round changed, written in one transaction: runs inserted or updated (by id), their new
/// steps, and the cursors of the inputs it consumed.
#[derive(Debug, Clone, Default)]
pub struct FlowBatch {
    pub runs: Vec<RunRow>,
    pub steps: Vec<(i64, StepRow)>,
    pub cursors: Vec<(String, i64)>,
}

impl FlowBatch {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.steps.is_empty() && self.cursors.is_empty()
    }
}

/// A person's history in one flow, for the re-entry rules.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PriorRunsRow {
    pub live: usize,
    pub last_entered: Option<DateTime<Utc>>,
}

/// Counts for the flow report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowCounts {
    /// Runs by status.
    pub by_status: Vec<(String, i64)>,
    pub by_exit_reason: Vec<(String, i64)>,
    /// Per step: (step, outcome, executions).
    pub by_step: Vec<(String, String, i64)>,
    /// People inside now, by the step they wait at or will run next.
    pub waiting_at: Vec<(String, i64)>,
    /// Per arm and hold-out: (arm, holdout, entered, converted, revenue).
    pub by_arm: Vec<(Option<String>, bool, i64, i64, f64)>,
}

/// What [`FlowStore::follow_profile_changes`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowedChanges {
    /// Merges and erasures applied.
    pub applied: usize,
    /// Runs that exited as `merged`; each is owed a withdrawal (see [`FlowStore::owed_withdrawals`]).
    pub merged_runs: usize,
}

/// Sends to withdraw: what a run queued and has not gone out yet, because the run ended (`reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedWithdrawal {
    pub flow_id: i64,
    pub run_id: i64,
    pub reason: String,
}

pub trait FlowStore: Send + Sync {
    /// Creates a flow (as a draft) or adds a version to it; returns the stored flow.
    fn save_flow(&self, name: &str, definition: &serde_json::Value, now: DateTime<Utc>) -> StoreResult<StoredFlow>;
    fn flow(&self, name: &str) -> StoreResult<Option<StoredFlow>>;
    fn flow_by_id(&self, id: i64) -> StoreResult<Option<StoredFlow>>;
    fn list_flows(&self) -> StoreResult<Vec<StoredFlow>>;
    fn flow_version(&self, flow_id: i64, version: i64) -> StoreResult<Option<FlowVersion>>;
    /// Versions, newest first, without definitions.
    fn flow_versions(&self, flow_id: i64) -> StoreResult<Vec<(i64, DateTime<Utc>)>>;
    /// Sets the status; activation (`live_version` given) also records the input heads, so only what comes
    /// after it triggers the flow.
    fn set_flow_status(
        &self,
        flow_id: i64,
        status: &str,
        live_version: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The last positions of the event log and of the segment history.
    fn input_heads(&self) -> StoreResult<(i64, i64)>;
    /// Deletes a flow, its versions, runs and steps.
    fn delete_flow(&self, flow_id: i64) -> StoreResult<()>;

    fn flow_cursor(&self, name: &str) -> StoreResult<Option<i64>>;
    /// Forgets every input cursor (no flow exists: the first one to come reads from where it was activated
    /// instead of through everything stored meanwhile).
    fn forget_flow_cursors(&self) -> StoreResult<()>;
    /// Writes runs, steps and cursors in one transaction. A run already stored takes its new state and version; its
    /// person, flow, entry time, trigger and goal window stay as stored (a person changes only by a merge, see
    /// `follow_profile_changes`). A step already stored is kept as it was.
    fn apply_flow_batch(&self, batch: &FlowBatch, now: DateTime<Utc>) -> StoreResult<()>;
    /// The largest run id in use (new runs are numbered after it).
    fn max_run_id(&self) -> StoreResult<i64>;
    /// Runs whose timer is at or before `now`, earliest first.
    fn due_runs(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<RunRow>>;
    /// The earliest timer of any run.
    fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// A person's runs that an event can still change: live ones, and ended ones inside their goal window
    /// without a conversion yet.
    fn open_runs(&self, profile: ProfileId, at: DateTime<Utc>) -> StoreResult<Vec<RunRow>>;
    fn prior_runs(&self, flow_id: i64, profile: ProfileId) -> StoreResult<PriorRunsRow>;
    fn run(&self, id: i64) -> StoreResult<Option<RunRow>>;
    /// A flow's runs by id after `after`, optionally of one status; or a person's runs in every flow.
    fn runs(
        &self,
        flow_id: Option<i64>,
        profile: Option<ProfileId>,
        status: Option<&str>,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<RunRow>>;
    fn run_steps(&self, run_id: i64) -> StoreResult<Vec<StepRow>>;
    fn flow_counts(&self, flow_id: i64) -> StoreResult<FlowCounts>;
    /// Applies to runs the merges and erasures recorded since the engine last looked (the `merges` and
    /// `erasures` cursors; the first time, none: runs started afterwards name live people): a merged-away
    /// person's runs move to the survivor, an erased person's runs and steps are deleted, and the cursors
    /// advance in the same transaction — so a change is followed exactly once, even across a crash. Two people
    /// merged with a run in progress each in one flow keep one: the run that entered first goes on, the other
    /// exits as `merged` — except in the flows of `concurrent_flows`, which allow several runs per person.
    /// Takes at most `limit` of each.
    fn follow_profile_changes(&self, limit: usize, concurrent_flows: &[i64]) -> StoreResult<FollowedChanges>;
    /// Withdrawals recorded in the transaction that ended their runs (a merge's duplicates), oldest run first, at
    /// most `limit`: they stay until [`FlowStore::withdrawals_done`], so a crash after the runs ended and before
    /// messaging heard of it leaves them to do again.
    fn owed_withdrawals(&self, limit: usize) -> StoreResult<Vec<OwedWithdrawal>>;
    /// Forgets withdrawals messaging has carried out.
    fn withdrawals_done(&self, run_ids: &[i64]) -> StoreResult<()>;
}
