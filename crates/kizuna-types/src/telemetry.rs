//! Internal telemetry as typed events: every metric Kizuna exports is named here once, so names never drift
//! between the code that records them, the docs and the dashboards.

use std::time::Duration;

pub const EVENTS_ACCEPTED: &str = "kizuna_ingest_events_accepted_total";
pub const EVENTS_DUPLICATE: &str = "kizuna_ingest_events_duplicate_total";
pub const REQUESTS_REJECTED: &str = "kizuna_ingest_requests_rejected_total";
pub const HTTP_REQUEST_SECONDS: &str = "kizuna_http_request_duration_seconds";
pub const COMMIT_SECONDS: &str = "kizuna_store_commit_duration_seconds";
pub const COMMIT_GROUP_EVENTS: &str = "kizuna_store_commit_group_events";
pub const SYNC_SECONDS: &str = "kizuna_store_sync_duration_seconds";
pub const SYNC_COMMITS: &str = "kizuna_store_sync_commits";
pub const CHECKPOINT_RESTART_SECONDS: &str = "kizuna_store_checkpoint_restart_duration_seconds";
pub const IDENTITY_MERGES: &str = "kizuna_identity_merges_total";
pub const IDENTITY_CONFLICTS: &str = "kizuna_identity_conflicts_total";

/// What happened, in the words of the metric it feeds.
pub enum Telemetry<'a> {
    EventsAccepted {
        source: &'a str,
        count: u64,
    },
    EventsDuplicate {
        source: &'a str,
        count: u64,
    },
    RequestRejected {
        code: &'a str,
    },
    HttpRequest {
        route: &'a str,
        status: u16,
        elapsed: Duration,
    },
    Committed {
        events: u64,
        elapsed: Duration,
    },
    /// An fsync that made the commits before it durable (their callers are answered after it).
    Synced {
        commits: u64,
        elapsed: Duration,
    },
    /// A restarting WAL checkpoint, during which the file's writers wait.
    CheckpointRestarted {
        database: &'a str,
        elapsed: Duration,
    },
    IdentityMerged,
    IdentityConflict,
}

impl Telemetry<'_> {
    pub fn emit(self) {
        match self {
            Telemetry::EventsAccepted { source, count } => {
                metrics::counter!(EVENTS_ACCEPTED, "source" => source.to_owned()).increment(count)
            }
            Telemetry::EventsDuplicate { source, count } => {
                metrics::counter!(EVENTS_DUPLICATE, "source" => source.to_owned()).increment(count)
            }
            Telemetry::RequestRejected { code } => {
                metrics::counter!(REQUESTS_REJECTED, "code" => code.to_owned()).increment(1)
            }
            Telemetry::HttpRequest { route, status, elapsed } => metrics::histogram!(
                HTTP_REQUEST_SECONDS, "route" => route.to_owned(), "status" => status.to_string()
            )
            .record(elapsed.as_secs_f64()),
            Telemetry::Committed { events, elapsed } => {
                metrics::histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
                metrics::histogram!(COMMIT_GROUP_EVENTS).record(events as f64);
            }
            Telemetry::Synced { commits, elapsed } => {
                metrics::histogram!(SYNC_SECONDS).record(elapsed.as_secs_f64());
                metrics::histogram!(SYNC_COMMITS).record(commits as f64);
            }
            Telemetry::CheckpointRestarted { database, elapsed } => {
                metrics::histogram!(CHECKPOINT_RESTART_SECONDS, "database" => database.to_owned())
                    .record(elapsed.as_secs_f64())
            }
            Telemetry::IdentityMerged => metrics::counter!(IDENTITY_MERGES).increment(1),
            Telemetry::IdentityConflict => metrics::counter!(IDENTITY_CONFLICTS).increment(1),
        }
    }
}
