//! The boundary to messaging. Flows hand sends over through [`Delivery`] and never see channels; messaging
//! never sees flows beyond a name on the message. Tests can put any implementation here.

use chrono::{DateTime, Utc};
use kizuna_flows::simulate::SendVerdict;
use kizuna_identity::ProfileId;
use kizuna_messaging::governor::Decision;
use kizuna_messaging_service::{Messenger, SendRequest};

pub trait Delivery: Send + Sync {
    /// Queues sends durably, all or none. A request whose idempotency key was seen before is not queued
    /// again, so executing a step twice sends once.
    fn enqueue(&self, sends: &[SendRequest]) -> Result<(), String>;
    /// Withdraws the sends still waiting to go that were queued under these idempotency key prefixes (a run
    /// that ended: its person converted, stopped matching, or was merged into someone with the same flow).
    fn withdraw(&self, key_prefixes: &[String], reason: &str) -> Result<usize, String>;
    /// Sends waiting to be handed to a channel, counted up to `cap`.
    fn backlog(&self, cap: usize) -> usize;
    fn template_exists(&self, name: &str) -> bool;
    /// What would happen to a send at `at`, given the replay's earlier sends to the same person.
    fn dry_run(&self, template: &str, profile: ProfileId, at: DateTime<Utc>, earlier: &[DateTime<Utc>]) -> SendVerdict;
}

impl Delivery for Messenger {
    fn enqueue(&self, sends: &[SendRequest]) -> Result<(), String> {
        // The engine's runs follow merges and erasures (see `FlowEngine::round`), so messaging need not read
        // every person again before queueing.
        Messenger::enqueue_for_known_profiles(self, sends).map(|_| ()).map_err(|e| e.to_string())
    }

    fn withdraw(&self, key_prefixes: &[String], reason: &str) -> Result<usize, String> {
        Messenger::withdraw(self, key_prefixes, reason).map_err(|e| e.to_string())
    }

    fn backlog(&self, cap: usize) -> usize {
        Messenger::backlog(self, cap).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the messaging backlog");
            0
        })
    }

    fn template_exists(&self, name: &str) -> bool {
        Messenger::template_exists(self, name).unwrap_or(false)
    }

    fn dry_run(&self, template: &str, profile: ProfileId, at: DateTime<Utc>, earlier: &[DateTime<Utc>]) -> SendVerdict {
        match Messenger::dry_run(self, template, profile, at, earlier) {
            Ok(decision) => verdict(&decision),
            Err(e) => SendVerdict { decision: "fail".into(), reason: e.to_string(), until: None },
        }
    }
}

pub fn verdict(decision: &Decision) -> SendVerdict {
    let (name, until) = match decision {
        Decision::Send => ("send", None),
        Decision::Defer { until, .. } => ("defer", Some(*until)),
        Decision::Drop { .. } => ("drop", None),
        Decision::Suppress { .. } => ("suppress", None),
    };
    SendVerdict { decision: name.into(), reason: decision.reason().into(), until }
}
