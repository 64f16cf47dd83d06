//! Identity resolution: the identifiers a message carries (userId, anonymousId, email, phone, LINE user id,
//! custom types) are normalised and stitched into one profile per person.
//!
//! The resolver is a pure in-memory [`IdentityGraph`]; the store persists what each [`Outcome`] changes.
//! How links become profiles is defined once, in time order:
//! every message contributes a *link* (its identifiers, its event time, whether its source is trusted);
//! links are applied greedily in `(timestamp, messageId)` order, and a link that would break a rule is
//! recorded as a conflict instead of applied. The rules:
//! 1. a profile holds at most one `user_id`: two userIds never merge;
//! 2. per-type limits (e.g. at most 100 anonymous ids per profile) keep shared or junk ids from welding
//!    strangers together;
//! 3. only a trusted source may merge two existing profiles that are both identified (hold a non-anonymous id).
//!
//! A link that arrives later than links it is connected to but carries an earlier time is replayed with its
//! whole cluster (the identifiers connected through any link) in time order, so the final grouping depends
//! only on the set of messages, not on their arrival order.

mod graph;
mod identifier;
mod paged;

pub use graph::{
    ConflictReason, ConflictRecord, IdentityGraph, IdentityRules, Link, LinkId, MergeRecord, OrderKey, Outcome,
    ProfileId, StoredLink,
};
pub use identifier::{IdKind, Identifier, IdentifierConfig, extract_identifiers, normalise_email, normalise_phone};
