//! Profile states the writer committed recently, kept decoded for the next transaction that touches them.
//!
//! With live traffic a person's session spreads over a few consecutive commits, and each commit read its
//! profile's state back from the store and decoded its JSON: ~15% of the writer thread's time (perf, time-order
//! `bench ingest`, BENCHMARKS.md 2026-12-05). The writer is the only one who writes profile states, so a state it
//! committed stays current until it writes it again or deletes it. A transaction takes out the states it touches
//! and puts them back only after its commit, so a rollback leaves nothing stale here (the writer still drops
//! everything after a failure).
//!
//! Two generations bound the memory without a recency list: new states go into `recent`; when it is full it
//! becomes `older` and the previous `older` is dropped. A hit leaves the cache (the transaction owns the state
//! until it commits and puts it back), so what is kept is at most `capacity` states, the most recently committed.

use kizuna_identity::ProfileId;
use kizuna_profiles::ProfileState;
use std::collections::HashMap;
use std::sync::Arc;

pub struct StateCache {
    recent: HashMap<ProfileId, Arc<ProfileState>>,
    older: HashMap<ProfileId, Arc<ProfileState>>,
    generation: usize,
}

impl StateCache {
    /// Keeps at most `capacity` states (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self { recent: HashMap::new(), older: HashMap::new(), generation: capacity / 2 }
    }

    /// The state of `profile` as last committed, if it is kept; it leaves the cache.
    pub fn take(&mut self, profile: ProfileId) -> Option<ProfileState> {
        let kept = self.recent.remove(&profile).or_else(|| self.older.remove(&profile))?;
        // Feed consumers may still hold the committed state: then the transaction works on a copy.
        Some(Arc::try_unwrap(kept).unwrap_or_else(|shared| (*shared).clone()))
    }

    /// Keeps a state that was just committed.
    pub fn put(&mut self, profile: ProfileId, state: Arc<ProfileState>) {
        if self.generation == 0 {
            return;
        }
        self.older.remove(&profile);
        if self.recent.len() >= self.generation && !self.recent.contains_key(&profile) {
            std::mem::swap(&mut self.recent, &mut self.older);
            self.recent.clear();
        }
        self.recent.insert(profile, state);
    }

    /// The profile's state changed outside a commit this cache sees (it was deleted or erased).
    pub fn forget(&mut self, profile: ProfileId) {
        self.recent.remove(&profile);
        self.older.remove(&profile);
    }

    /// A transaction failed: what it changed in memory may not be in the store.
    pub fn clear(&mut self) {
        self.recent.clear();
        self.older.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.recent.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(marker: &str) -> Arc<ProfileState> {
        let mut state = ProfileState::default();
        state.consent.insert(marker.to_owned(), Default::default());
        Arc::new(state)
    }

    fn marker(state: &ProfileState) -> Option<&str> {
        state.consent.keys().next().map(String::as_str)
    }

    #[test]
    fn keeps_the_most_recently_committed_states_up_to_its_capacity() {
        let mut cache = StateCache::new(4);
        for profile in 1..=5 {
            cache.put(profile, state(&format!("p{profile}")));
            assert!(cache.len() <= 4);
        }
        // 1 and 2 went with the first generation; 3 to 5 are kept.
        assert!(cache.take(1).is_none());
        assert!(cache.take(2).is_none());
        assert_eq!(cache.take(4).as_ref().and_then(marker), Some("p4"));
        // A hit leaves the cache: the transaction owns the state until it puts it back.
        assert!(cache.take(4).is_none());
        // Putting a newer state replaces the older one wherever it was.
        cache.put(3, state("p3 again"));
        assert_eq!(cache.take(3).as_ref().and_then(marker), Some("p3 again"));
        assert!(cache.take(3).is_none());
    }

    #[test]
    fn a_shared_state_is_copied_forgotten_states_and_a_cleared_cache_give_nothing() {
        let mut cache = StateCache::new(8);
        let committed = state("shared");
        cache.put(7, committed.clone());
        let mut taken = cache.take(7).unwrap_or_default();
        taken.consent.clear();
        assert_eq!(marker(&committed), Some("shared"), "the feed's copy changed");

        cache.put(8, state("p8"));
        cache.forget(8);
        assert!(cache.take(8).is_none());
        cache.put(9, state("p9"));
        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!(cache.take(9).is_none());

        let mut none = StateCache::new(0);
        none.put(1, state("p1"));
        assert!(none.take(1).is_none());
    }
}
