//! Product recommendations, as plain Rust with no I/O.
//!
//! - [`ItemIndex`]: every product the store sells or that events mention, by a dense index.
//! - [`Signals`]: counters kept current event by event — per-product daily views, carts and purchases, basket
//!   co-occurrence, co-views, repeat-purchase intervals, purchases by place — and each profile's recent history.
//! - [`Rankings`]: what the counters imply at an instant (bestsellers, trending, new arrivals, popular near a
//!   place), rebuilt from the signals when they changed; serving reads it without locks on counters.
//! - [`model::CfModel`]: the personalized "for you" model, trained in the background — EASE (Steck 2019) while
//!   the interacted catalog fits a dense item–item inverse, implicit ALS ([`ials`]) beyond.
//! - [`Strategy`], [`Rules`], [`Placement`]: what a storefront slot asks for, and [`recommend`] answering it.
//! - [`eval`]: offline evaluation (splits and the literature's metrics).

pub mod ease;
pub mod eval;
pub mod ials;
mod index;
pub mod model;
mod people;
mod placement;
mod rankings;
mod recommend;
mod rules;
mod signals;
mod strategy;

pub use index::{Item, ItemIndex, ItemIx, product_from_event};
pub use placement::{MAX_LIMIT, Placement, PlacementError, starter_placements};
pub use rankings::{RankingSettings, Rankings};
pub use recommend::{Recommendation, Request, Taste, place_keys, recommend};
pub use rules::{Boost, Rules};
pub use signals::{History, Kind, ProfileKey, Signals, Touch};
pub use strategy::{BecauseOf, Strategy, price_band};

/// Seconds since the Unix epoch: the time unit of every counter (compact, and exact for day arithmetic).
pub type Secs = i64;

pub const DAY: Secs = 86_400;

/// The day number of an instant (days since the epoch, UTC).
pub fn day_of(at: Secs) -> i32 {
    at.div_euclid(DAY) as i32
}
