//! The running side of recommendations. One thread consumes the pipeline's post-commit change feed into the
//! counters ([`kizuna_recs::Signals`]) and rebuilds the rankings when they changed (at most every
//! `rebuild_ms`); another retrains the EASE model every `retrain_minutes` from the profiles' histories and
//! swaps it in atomically. Serving ([`Recommender::recommend`]) reads under a shared lock and never waits for
//! training. Counters and models are derived data: start-up rebuilds them from the catalog and the event log.

use chrono::{DateTime, Utc};
use kizuna_catalog::Product;
use kizuna_pipeline::{Committed, FeedChange, FeedSink};
use kizuna_recs::ease::EaseSettings;
use kizuna_recs::ials::IalsSettings;
use kizuna_recs::model::{CfModel, ModelChoice};
use kizuna_recs::{Placement, ProfileKey, RankingSettings, Rankings, Request, Signals, Taste};
use kizuna_store::{Store, StoreError};
use kizuna_types::Clock;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecsSettings {
    pub rankings: RankingSettings,
    /// `auto` (EASE while at most `ease.max_items` products have interactions, iALS beyond), `ease` or `ials`.
    pub model: ModelChoice,
    pub ease: EaseSettings,
    pub ials: IalsSettings,
    /// Retrain the personalized model this often (0: only on request).
    pub retrain_minutes: u32,
    /// Rebuild rankings at most this often while events arrive.
    pub rebuild_ms: u64,
}

impl Default for RecsSettings {
    fn default() -> Self {
        Self {
            rankings: RankingSettings::default(),
            model: ModelChoice::Auto,
            ease: EaseSettings::default(),
            ials: IalsSettings::default(),
            retrain_minutes: 60,
            rebuild_ms: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecsError {
    #[error("no placement is named {0}")]
    PlacementNotFound(String),
    #[error("no product has the id {0}")]
    UnknownProduct(String),
    #[error("{0}")]
    InvalidPlacement(#[from] kizuna_recs::PlacementError),
    #[error("a built-in placement cannot be deleted; PUT a placement of the same name to change it")]
    BuiltIn,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model training failed: {0}")]
    Training(String),
    #[error("no product views, carts or orders to learn from yet")]
    NothingToLearn,
}

pub type RecsResult<T> = Result<T, RecsError>;

/// A placement request as the edges see it.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub profile: Option<ProfileKey>,
    /// Product ids the request is about (the product page's, the cart's).
    pub products: Vec<String>,
    /// Place keys to use instead of the profile's (see [`kizuna_recs::place_keys`]).
    pub places: Option<Vec<String>>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommended {
    pub product: Arc<Product>,
    pub in_catalog: bool,
    pub score: f32,
    pub reason: String,
    pub strategy: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub placement: String,
    pub items: Vec<Recommended>,
}

/// An offline evaluation of the recommenders on the store's own history.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub evaluated_at: DateTime<Utc>,
    pub split: &'static str,
    pub users: usize,
    pub items: usize,
    pub interactions: usize,
    pub results: Vec<kizuna_recs::eval::StrategyResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `ease` or `ials`.
    pub kind: &'static str,
    pub trained_at: DateTime<Utc>,
    pub train_seconds: f64,
    pub interactions: usize,
    /// Distinct profile–product pairs on the products the model keeps (the rest are served by the other
    /// strategies), and in all.
    pub pairs_covered: usize,
    pub pairs: usize,
    pub users: usize,
    pub items: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub products: usize,
    pub profiles_with_history: usize,
    pub baskets: u64,
    pub rankings_built_at: DateTime<Utc>,
    pub model: Option<ModelInfo>,
}

/// A placement as listed: saved ones and the built-in starters (which a saved one of the same name replaces).
#[derive(Debug, Clone, Serialize)]
pub struct ListedPlacement {
    #[serde(flatten)]
    pub placement: Placement,
    pub builtin: bool,
    pub version: i64,
}

struct Live {
    signals: Signals,
}

struct Inner {
    live: RwLock<Live>,
    rankings: RwLock<Arc<Rankings>>,
    model: RwLock<Option<(Arc<CfModel>, ModelInfo)>>,
    evaluation: RwLock<Option<Evaluation>>,
    placements: RwLock<HashMap<String, ListedPlacement>>,
    training: Mutex<()>,
    /// Saving or deleting a placement and reloading the map happen one at a time.
    placement_writes: Mutex<()>,
    /// Dropped by `stop()` to end the training thread.
    stop_training: Mutex<Option<mpsc::Sender<()>>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: RecsSettings,
    sender: Mutex<mpsc::Sender<Input>>,
}

enum Input {
    Commit(Committed),
    /// Answered once every commit handed over before it is applied and the rankings are current.
    Sync(mpsc::Sender<()>),
    Stop,
}

#[derive(Clone)]
pub struct Recommender {
    inner: Arc<Inner>,
}

const PRODUCT_EVENTS: &[&str] = &["product viewed", "product clicked", "product added", "order completed"];

/// A profile's place keys and taste, read straight from its computed attributes (the same values as through
/// the JSON summary, without building it for every profile a commit changes).
fn places_and_taste(computed: &kizuna_profiles::Computed) -> (Vec<String>, Taste) {
    let (country, region, city) = computed.place();
    let taste = Taste::from_shares(computed.category_shares(), computed.brand_shares(), computed.price_band());
    (Taste::places(country, region, city), taste)
}

fn is_product_event(name: &str) -> bool {
    PRODUCT_EVENTS.iter().any(|n| n.eq_ignore_ascii_case(name.trim()))
}

impl Recommender {
    /// Loads placements, the catalog, every profile's place and taste and every product event, then starts the
    /// feed and training threads. Call before the pipeline starts, so no commit is missed.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: RecsSettings) -> RecsResult<Recommender> {
        let started = Instant::now();
        let mut signals = Signals::default();
        signals.keep_days = max_window(&settings.rankings);
        let mut after: Option<String> = None;
        loop {
            let page = store.list_products(after.as_deref(), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for product in page {
                signals.upsert_product(product);
            }
        }
        let mut after = None;
        loop {
            let page = store.scan_profile_data(after, 2000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for profile in page {
                let (places, taste) = places_and_taste(&profile.state.computed);
                signals.set_places(profile.id, places);
                signals.set_taste(profile.id, &taste);
            }
        }
        let now = clock.now().timestamp();
        let mut after_seq = 0;
        let mut events = 0usize;
        loop {
            let (page, last) = store.scan_events(after_seq, 10_000, &is_product_event)?;
            for event in page {
                let serde_json::Value::Object(body) = event.body else { continue };
                let Some(message) = kizuna_ingest::Event::from_stored(body, String::new()) else { continue };
                let properties =
                    message.properties().map_or(serde_json::Value::Null, |p| serde_json::Value::Object(p.clone()));
                let at = message.timestamp.timestamp().min(now);
                if signals.apply_event(event.profile_id, &event.name, at, &properties) {
                    events += 1;
                }
            }
            match last {
                Some(seq) => after_seq = seq,
                None => break,
            }
        }
        signals.repack();
        tracing::info!(
            products = signals.items.len(),
            events,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recommendations loaded"
        );
        Self::start_from(store, clock, settings, signals)
    }

    /// Starts from counters built elsewhere (benchmarks, tests); [`Recommender::start`] builds them from storage.
    pub fn start_from(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: RecsSettings,
        signals: Signals,
    ) -> RecsResult<Recommender> {
        let rankings = Rankings::build(&signals, &settings.rankings, clock.now().timestamp());
        let (sender, receiver) = mpsc::channel();
        let recommender = Recommender {
            inner: Arc::new(Inner {
                live: RwLock::new(Live { signals }),
                rankings: RwLock::new(Arc::new(rankings)),
                model: RwLock::new(None),
                evaluation: RwLock::new(None),
                placements: RwLock::new(HashMap::new()),
                training: Mutex::new(()),
                placement_writes: Mutex::new(()),
                stop_training: Mutex::new(None),
                store,
                clock,
                settings,
                sender: Mutex::new(sender),
            }),
        };
        recommender.reload_placements()?;
        let feed = recommender.clone();
        std::thread::Builder::new()
            .name("recs-feed".into())
            .spawn(move || feed.consume(receiver))
            .map_err(|e| RecsError::Training(format!("cannot start the feed thread: {e}")))?;
        let trainer = recommender.clone();
        let (stop_training, stop) = mpsc::channel();
        *recommender.inner.stop_training.lock() = Some(stop_training);
        std::thread::Builder::new()
            .name("recs-train".into())
            .spawn(move || trainer.train_periodically(stop))
            .map_err(|e| RecsError::Training(format!("cannot start the training thread: {e}")))?;
        Ok(recommender)
    }

    /// Hands commits to the feed thread (the pipeline calls it on its writer thread).
    pub fn feed_sink(&self) -> FeedSink {
        let sender = self.inner.sender.lock().clone();
        Box::new(move |committed| {
            if sender.send(Input::Commit(committed)).is_err() {
                tracing::warn!("recommendation feed stopped; counters will be rebuilt at the next start");
            }
        })
    }

    /// Waits until every commit handed over so far is applied and the rankings rebuilt (blocking; for tests,
    /// benchmarks and the demo).
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self.inner.sender.lock().send(Input::Sync(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// A sink that hands recommendations each commit filtered to what they read (product events and every
    /// non-event change, sharing their properties and states), then passes the commit itself on to `next`. It
    /// runs on the thread that acknowledges commits, so it copies nothing deep.
    pub fn feed_sink_then(&self, next: FeedSink) -> FeedSink {
        let mine = self.feed_sink();
        Box::new(move |committed: Committed| {
            mine(committed.filtered(is_product_event));
            next(committed);
        })
    }

    pub fn stop(&self) {
        self.inner.stop_training.lock().take();
        let _ = self.inner.sender.lock().send(Input::Stop);
    }

    fn consume(&self, receiver: mpsc::Receiver<Input>) {
        let every = Duration::from_millis(self.inner.settings.rebuild_ms.max(1));
        let mut last_build = Instant::now();
        loop {
            match receiver.recv_timeout(every) {
                Ok(Input::Commit(committed)) => {
                    // A bug in one commit's handling must not stop every later one from counting.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply(committed))).is_err() {
                        tracing::error!(
                            "recommendations skipped a commit after a panic; counters may be off until restart"
                        );
                    }
                }
                Ok(Input::Sync(done)) => {
                    self.rebuild_rankings();
                    last_build = Instant::now();
                    let _ = done.send(());
                    continue;
                }
                Ok(Input::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if last_build.elapsed() >= every {
                // One lock at a time (status and serving take them in other orders).
                let built = self.inner.rankings.read().generation;
                let stale = built != self.inner.live.read().signals.generation();
                if stale {
                    self.rebuild_rankings();
                }
                last_build = Instant::now();
            }
        }
    }

    fn apply(&self, committed: Committed) {
        // Counters never see the future: a client clock ahead (or a forged timestamp) counts as now.
        let now = self.inner.clock.now().timestamp();
        let mut live = self.inner.live.write();
        let live = &mut *live;
        // Places first: a commit's purchases count where the buyer is after it.
        for change in &committed.changes {
            if let FeedChange::State { profile, state, .. } = change {
                let (places, taste) = places_and_taste(&state.computed);
                live.signals.set_places(*profile, places);
                live.signals.set_taste(*profile, &taste);
            }
        }
        for change in committed.changes {
            match change {
                FeedChange::Event { profile, event } => {
                    live.signals.apply_event(profile, &event.name, event.at.timestamp().min(now), &event.properties);
                }
                FeedChange::Merged { from, into } => {
                    live.signals.merge(from, into);
                }
                FeedChange::Rebuilt { profile, events } => {
                    live.signals.rebuild_history(
                        profile,
                        events.iter().map(|e| (e.name.as_str(), e.at.timestamp().min(now), &*e.properties)),
                    );
                }
                FeedChange::Removed { profile, .. } => {
                    live.signals.remove(profile);
                }
                FeedChange::State { .. } => {}
            }
        }
    }

    /// Rebuilds the rankings from the counters now.
    pub fn rebuild_rankings(&self) {
        let now = self.inner.clock.now().timestamp();
        let rankings = {
            let live = self.inner.live.read();
            Rankings::build(&live.signals, &self.inner.settings.rankings, now)
        };
        *self.inner.rankings.write() = Arc::new(rankings);
    }

    /// Adds or replaces catalog products; new arrivals and stock changes show at once.
    pub fn upsert_products(&self, products: &[Product]) {
        {
            let mut live = self.inner.live.write();
            for p in products {
                live.signals.upsert_product(p.clone());
            }
        }
        self.rebuild_rankings();
    }

    fn train_periodically(&self, stop: mpsc::Receiver<()>) {
        let minutes = self.inner.settings.retrain_minutes;
        if minutes == 0 {
            return;
        }
        let every = Duration::from_secs(u64::from(minutes) * 60);
        loop {
            // A panic in training must not end retraining for good.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.train())) {
                Ok(Ok(_)) | Ok(Err(RecsError::NothingToLearn)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "recommendation model training failed"),
                Err(_) => tracing::error!("recommendation model training panicked; the previous model stays"),
            }
            match stop.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Trains the personalized model from every profile's history now and swaps it in.
    pub fn train(&self) -> RecsResult<ModelInfo> {
        let _one_at_a_time = self.inner.training.lock();
        let cells: Vec<(u32, u32, f32)> = {
            let live = self.inner.live.read();
            let mut cells = Vec::new();
            for (n, (_, history)) in live.signals.profiles().enumerate() {
                for t in history.touches() {
                    cells.push((n as u32, t.item, t.kind.weight()));
                }
            }
            cells
        };
        let started = Instant::now();
        let settings = &self.inner.settings;
        let model =
            kizuna_recs::model::train(&cells, settings.model, &settings.ease, &settings.ials).map_err(|e| match e {
                kizuna_recs::ease::EaseError::Empty => RecsError::NothingToLearn,
                other => RecsError::Training(other.to_string()),
            })?;
        let (covered, pairs) = match &model {
            CfModel::Ease(m) => (m.covered_interactions, m.interactions),
            CfModel::Ials(_) => {
                let mut distinct: Vec<(u32, u32)> = cells.iter().map(|c| (c.0, c.1)).collect();
                distinct.sort_unstable();
                distinct.dedup();
                (distinct.len(), distinct.len())
            }
        };
        let info = ModelInfo {
            trained_at: self.inner.clock.now(),
            train_seconds: started.elapsed().as_secs_f64(),
            interactions: cells.len(),
            kind: model.name(),
            pairs_covered: covered,
            pairs,
            users: cells.iter().map(|c| c.0 as usize + 1).max().unwrap_or(0),
            items: model.item_count(),
        };
        tracing::info!(
            items = info.items,
            users = info.users,
            seconds = info.train_seconds,
            "recommendation model trained"
        );
        *self.inner.model.write() = Some((Arc::new(model), info.clone()));
        // Training on the training thread, which then sleeps until the next one: give back what it freed.
        kizuna_types::memory::release_free_memory();
        Ok(info)
    }

    /// Offline evaluation on this store's own history: each person's latest 20% of product touches are held
    /// out (a time split), popularity and EASE learn from the rest, and recall@20 / NDCG@10 / NDCG@100 say how
    /// well each finds what people did next. Kept as the latest evaluation (in memory).
    pub fn evaluate(&self) -> RecsResult<Evaluation> {
        let _one_at_a_time = self.inner.training.lock();
        let interactions: Vec<kizuna_recs::eval::Interaction> = {
            let live = self.inner.live.read();
            let mut out = Vec::new();
            for (n, (_, history)) in live.signals.profiles().enumerate() {
                for t in history.touches() {
                    out.push(kizuna_recs::eval::Interaction {
                        user: n as u32,
                        item: t.item,
                        at: t.at,
                        weight: t.kind.weight(),
                    });
                }
            }
            out
        };
        if interactions.is_empty() {
            return Err(RecsError::NothingToLearn);
        }
        let dataset = kizuna_recs::eval::Dataset {
            name: "this store".into(),
            users: interactions.iter().map(|i| i.user as usize + 1).max().unwrap_or(0),
            items: interactions.iter().map(|i| i.item as usize + 1).max().unwrap_or(0),
            interactions,
        };
        let split = kizuna_recs::eval::split(&dataset, kizuna_recs::eval::SplitKind::Time, 42);
        let mut results = vec![kizuna_recs::eval::evaluate_popularity(&split)];
        match kizuna_recs::eval::evaluate_ease(&split, &self.inner.settings.ease) {
            Ok(result) => results.push(result),
            Err(kizuna_recs::ease::EaseError::Empty) => {}
            Err(other) => return Err(RecsError::Training(other.to_string())),
        }
        let evaluation = Evaluation {
            evaluated_at: self.inner.clock.now(),
            split: "time: each person's latest 20% held out",
            users: dataset.users,
            items: dataset.items,
            interactions: dataset.interactions.len(),
            results,
        };
        *self.inner.evaluation.write() = Some(evaluation.clone());
        Ok(evaluation)
    }

    /// The latest offline evaluation, if one ran since start.
    pub fn last_evaluation(&self) -> Option<Evaluation> {
        self.inner.evaluation.read().clone()
    }

    /// Whether this live profile is known here (merged-away and erased ones are forgotten).
    pub fn knows(&self, profile: ProfileKey) -> bool {
        let live = self.inner.live.read();
        live.signals.knows(profile)
    }

    pub fn status(&self) -> Status {
        let rankings = self.inner.rankings.read().clone();
        let (products, profiles_with_history, baskets) = {
            let live = self.inner.live.read();
            (live.signals.items.len(), live.signals.profile_count(), live.signals.baskets())
        };
        Status {
            products,
            profiles_with_history,
            baskets,
            rankings_built_at: DateTime::from_timestamp(rankings.built_at, 0).unwrap_or_default(),
            model: self.inner.model.read().as_ref().map(|(_, info)| info.clone()),
        }
    }

    /// Answers a placement.
    pub fn recommend(&self, placement: &str, query: &Query) -> RecsResult<Answer> {
        let placement = self
            .inner
            .placements
            .read()
            .get(placement)
            .map(|p| p.placement.clone())
            .ok_or_else(|| RecsError::PlacementNotFound(placement.to_owned()))?;
        let rankings = self.inner.rankings.read().clone();
        let model = self.inner.model.read().as_ref().map(|(m, _)| m.clone());
        let live = self.inner.live.read();
        let mut context = Vec::with_capacity(query.products.len());
        for id in &query.products {
            context.push(live.signals.items.ix(id).ok_or_else(|| RecsError::UnknownProduct(id.clone()))?);
        }
        let places = match &query.places {
            Some(p) => p.clone(),
            None => query.profile.map(|p| live.signals.places_of(p)).unwrap_or_default(),
        };
        let taste = query.profile.and_then(|p| live.signals.taste(p));
        let request = Request {
            profile: query.profile,
            context,
            places,
            taste: taste.as_ref(),
            limit: query.limit.unwrap_or(placement.limit).clamp(1, kizuna_recs::MAX_LIMIT),
            now: self.inner.clock.now().timestamp(),
        };
        let recs = kizuna_recs::recommend(&placement, &request, &live.signals, &rankings, model.as_deref());
        let items = recs
            .into_iter()
            .map(|r| {
                let item = live.signals.items.item(r.item);
                Recommended {
                    product: item.product.clone(),
                    in_catalog: item.in_catalog,
                    score: r.score,
                    reason: r.reason,
                    strategy: r.strategy,
                }
            })
            .collect();
        Ok(Answer { placement: placement.name, items })
    }

    pub fn placements(&self) -> Vec<ListedPlacement> {
        let mut list: Vec<ListedPlacement> = self.inner.placements.read().values().cloned().collect();
        list.sort_by(|a, b| a.placement.name.cmp(&b.placement.name));
        list
    }

    pub fn placement(&self, name: &str) -> RecsResult<ListedPlacement> {
        self.inner.placements.read().get(name).cloned().ok_or_else(|| RecsError::PlacementNotFound(name.to_owned()))
    }

    /// Validates and saves a placement (creating or replacing it).
    pub fn save_placement(&self, placement: &Placement) -> RecsResult<ListedPlacement> {
        placement.validate()?;
        let _one_at_a_time = self.inner.placement_writes.lock();
        let json = serde_json::to_value(placement).map_err(StoreError::from)?;
        self.inner.store.save_placement(&placement.name, &json, self.inner.clock.now())?;
        self.reload_placements()?;
        self.placement(&placement.name)
    }

    pub fn delete_placement(&self, name: &str) -> RecsResult<()> {
        let _one_at_a_time = self.inner.placement_writes.lock();
        if self.inner.store.delete_placement(name)? {
            return self.reload_placements();
        }
        match self.inner.placements.read().get(name) {
            Some(p) if p.builtin => Err(RecsError::BuiltIn),
            _ => Err(RecsError::PlacementNotFound(name.to_owned())),
        }
    }

    fn reload_placements(&self) -> RecsResult<()> {
        let mut map: HashMap<String, ListedPlacement> = kizuna_recs::starter_placements()
            .into_iter()
            .map(|p| (p.name.clone(), ListedPlacement { placement: p, builtin: true, version: 0 }))
            .collect();
        for stored in self.inner.store.placements()? {
            match serde_json::from_value::<Placement>(stored.definition) {
                Ok(placement) => {
                    map.insert(stored.name, ListedPlacement { placement, builtin: false, version: stored.version });
                }
                Err(e) => {
                    tracing::warn!(placement = %stored.name, error = %e, "stored placement no longer parses; skipped")
                }
            }
        }
        *self.inner.placements.write() = map;
        Ok(())
    }
}

fn max_window(settings: &RankingSettings) -> i32 {
    let longest = settings.bestseller_windows.iter().copied().max().unwrap_or(30);
    let trending = settings.trending_recent_days + settings.trending_baseline_days;
    longest.max(trending) as i32 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizuna_ingest::{Endpoint, Limits, MessageType, parse_request};
    use kizuna_profiles::{DataKind, Origin, ProfileState};
    use serde_json::json;

    fn fold(messages: &[serde_json::Value]) -> ProfileState {
        let origin = Origin { source: "web".into(), data_kind: DataKind::FirstParty };
        let mut state = ProfileState::default();
        for message in messages {
            let body = message.to_string();
            let parsed =
                parse_request(Endpoint::Single(MessageType::Track), body.as_bytes(), Utc::now(), &Limits::default())
                    .expect("valid message");
            for event in &parsed.events {
                state.apply(event, &origin);
            }
        }
        state
    }

    #[test]
    fn places_and_taste_read_directly_match_the_summary() {
        // Seven categories and brands (the taste keeps five of each, ties by name), two price levels, a place.
        let products: Vec<serde_json::Value> = (0..7)
            .map(|i| {
                json!({"product_id": format!("p{i}"), "price": 20.0 + f64::from(i) * 15.0, "quantity": 1 + i % 3,
                       "category": format!("Category {}", i % 7), "brand": format!("Brand {}", (i * 3) % 7)})
            })
            .collect();
        let order = json!({"userId": "u", "event": "Order Completed", "timestamp": "2026-11-01T10:00:00Z",
            "context": {"location": {"country": "JP", "region": "Tokyo", "city": "Shibuya"}},
            "properties": {"order_id": "o1", "total": 300.0, "products": products}});
        let view = json!({"userId": "u", "event": "Product Viewed", "timestamp": "2026-11-02T10:00:00Z",
            "properties": {"product_id": "p9", "price": 12.0, "category": "Category 3", "brand": "Brand 5"}});
        let without_region = json!({"userId": "u", "event": "Product Viewed", "timestamp": "2026-11-03T10:00:00Z",
            "context": {"location": {"country": "JP", "city": ""}},
            "properties": {"product_id": "p9", "category": "Category 3"}});
        let states = [
            ProfileState::default(),
            fold(std::slice::from_ref(&view)),
            fold(&[order.clone(), view.clone()]),
            fold(&[order, view, without_region]),
        ];
        // The same, read from the public JSON summary.
        let from_summary = |summary: &serde_json::Value| {
            let text = |key: &str| summary.get(key).and_then(serde_json::Value::as_str);
            let shares = |key: &str| -> Vec<(&str, f64)> {
                summary[key]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_f64()?)))
                    .collect()
            };
            let places = Taste::places(text("country"), text("region"), text("city"));
            (places, Taste::from_shares(shares("category_affinity"), shares("brand_affinity"), text("price_band")))
        };
        for state in &states {
            let summary = state.computed.summary();
            assert_eq!(places_and_taste(&state.computed), from_summary(&summary), "{summary}");
        }
        let (places, taste) = places_and_taste(&states[2].computed);
        assert_eq!(places, ["city:shibuya", "region:jp/tokyo", "country:jp"]);
        assert_eq!((taste.categories.len(), taste.brands.len()), (5, 5), "{taste:?}");
        assert!(taste.price_band.is_some());
        assert_eq!(places_and_taste(&states[0].computed), (Vec::new(), Taste::default()));
    }
}
