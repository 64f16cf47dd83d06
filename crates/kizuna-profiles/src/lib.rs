//! A profile's state is a fold over its events: traits (last write wins, by event time), consent per channel and
//! purpose, and computed attributes (orders, revenue, affinities, location…).
//!
//! Every update is order-insensitive — the same events in any order give the same state (up to float
//! rounding in decayed scores) — so late events, replays and merges need no special cases.

mod consent;
mod state;
mod timestamp;

pub use consent::{CHANNELS, ConsentEntry, ConsentStatus, PURPOSES};
pub use state::{Computed, DataKind, OrderView, Origin, ProfileState, TraitEntry, ViewedProduct};
