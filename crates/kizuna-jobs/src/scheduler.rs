//! Runs analytics in the background: when a run is due by the schedule (judged on the injected clock) and when
//! asked (after an import, from the API). Requests that arrive while a run is going are coalesced into one
//! follow-up run.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Duration, Utc};
use kizuna_store::Store;
use kizuna_types::Clock;

use crate::analytics_run::{AnalyticsSettings, run_analytics};

enum Message {
    Run(String),
    Shutdown,
}

/// The background analytics thread. Dropping it (or [`AnalyticsScheduler::shutdown`]) stops it after the
/// current run.
pub struct AnalyticsScheduler {
    sender: Mutex<Sender<Message>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// When runs happen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// A run is due when the last one started this long ago (or there was none); `None` runs only on request.
    pub every: Option<Duration>,
    /// How often the thread looks at the clock (real time).
    pub poll: std::time::Duration,
}

impl AnalyticsScheduler {
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: AnalyticsSettings,
        schedule: Schedule,
    ) -> std::io::Result<Self> {
        Self::start_with_hook(store, clock, settings, schedule, Box::new(|| {}))
    }

    /// [`AnalyticsScheduler::start`], calling `after_run` after every successful run (to refresh what reads
    /// the scores, such as segment membership).
    pub fn start_with_hook(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: AnalyticsSettings,
        schedule: Schedule,
        after_run: Box<dyn Fn() + Send>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = channel();
        let thread = std::thread::Builder::new().name("kizuna-analytics".into()).spawn(move || {
            background(store.as_ref(), clock.as_ref(), &settings, schedule, &receiver, after_run.as_ref())
        })?;
        Ok(AnalyticsScheduler { sender: Mutex::new(sender), thread: Mutex::new(Some(thread)) })
    }

    /// Asks for a run (coalesced with other requests made while one is going).
    pub fn request(&self, trigger: &str) {
        if let Ok(sender) = self.sender.lock() {
            let _ = sender.send(Message::Run(trigger.to_owned()));
        }
    }

    /// Stops the thread after the current run.
    pub fn shutdown(&self) {
        if let Ok(sender) = self.sender.lock() {
            let _ = sender.send(Message::Shutdown);
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

impl Drop for AnalyticsScheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether the schedule calls for a run now: the latest run (of any outcome, so a failing run is not retried in
/// a tight loop) started at least `every` ago; with no run yet, `every` after `since` (the scheduler's start: a
/// fresh server does not start with a full scan — imports and the demo run analytics themselves).
pub fn is_due(store: &dyn Store, clock: &dyn Clock, every: Duration, since: DateTime<Utc>) -> bool {
    match store.analytics_runs(1) {
        Ok(runs) => clock.now() - runs.first().map_or(since, |last| last.started_at) >= every,
        Err(error) => {
            tracing::warn!(%error, "cannot read analytics runs");
            false
        }
    }
}

fn background(
    store: &dyn Store,
    clock: &dyn Clock,
    settings: &AnalyticsSettings,
    schedule: Schedule,
    receiver: &Receiver<Message>,
    after_run: &dyn Fn(),
) {
    let started = clock.now();
    loop {
        let trigger = match receiver.recv_timeout(schedule.poll) {
            Ok(Message::Run(trigger)) => Some(trigger),
            Ok(Message::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                schedule.every.filter(|every| is_due(store, clock, *every, started)).map(|_| "schedule".to_owned())
            }
        };
        let Some(mut trigger) = trigger else { continue };
        // Coalesce requests that queued up; stop if asked to.
        loop {
            match receiver.try_recv() {
                Ok(Message::Run(next)) => trigger = next,
                Ok(Message::Shutdown) => return,
                Err(_) => break,
            }
        }
        match run_analytics(store, clock.now(), &trigger, settings) {
            Ok(_) => after_run(),
            Err(error) => tracing::warn!(%error, "analytics run failed"),
        }
    }
}
