//! Incremental membership, in memory and without I/O: the set of definitions, every profile's [`Summary`] and
//! memberships, and a timer queue keyed by the next instant each profile's membership can change.
//!
//! * A committed change re-evaluates, for the profiles it touched, only the definitions that read what
//!   changed (an event name, an attribute root, identity facts) and, in dependency order, the definitions that
//!   refer to a segment whose membership just changed.
//! * Time moving on is a timer: each evaluation reports when its answer can next change with no new data; the
//!   profile sleeps in the queue until the earliest such instant, and only the definitions due are
//!   re-evaluated then. Nothing is rescanned.
//! * A new or edited definition is built over every profile in memory, in parallel.
//!
//! Every membership change is a [`Transition`] (`Segment Entered` / `Segment Exited`) with its time and cause.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::ast::Condition;
use crate::by_profile::ByProfile;
use crate::eval::{Evaluation, evaluate};
use crate::summary::{Interest, Interner, NewEvent, ProfileData, Summary, Touched, attribute_root, edit};
use crate::validate::{DefinitionError, check_definitions};

pub type ProfileKey = u64;

/// A saved definition.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDefinition {
    pub id: i64,
    pub name: String,
    pub condition: Condition,
}

/// Why a membership changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// Events arrived (their names).
    Events { names: Vec<String> },
    /// Traits, computed attributes, consent, identifiers or location changed.
    ProfileChanged,
    /// Time passed: a window expired, a sequence's wait ran out, a date came into range.
    Time,
    /// Other profiles were merged into this one.
    Merged { from: Vec<ProfileKey> },
    /// This profile was merged into another and no longer exists.
    MergedInto { into: ProfileKey },
    /// The person was erased.
    Erased,
    /// The segment was created or its definition changed.
    Definition,
    /// Membership recomputed from stored data (start-up, catching up after downtime).
    Recomputed,
}

/// `Segment Entered` (`entered`) or `Segment Exited`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub segment_id: i64,
    pub segment: String,
    pub profile: ProfileKey,
    pub entered: bool,
    pub at: DateTime<Utc>,
    pub cause: Cause,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("segment \"{0}\" does not exist")]
    UnknownSegment(String),
    #[error("segment \"{segment}\" is used by segment \"{used_by}\"")]
    InUse { segment: String, used_by: String },
    /// The definition reads data the summaries do not hold yet: widen the interest and reload first.
    #[error("segment state does not hold the data this definition reads yet")]
    NeedsReload,
}

/// One change committed to storage, as the engine consumes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// New events for a profile and/or its current data.
    Updated { profile: ProfileKey, data: Option<ProfileData>, events: Vec<NewEvent> },
    /// `from` was merged into `into`: `from`'s events now belong to `into` and `from` is gone.
    Merged { from: ProfileKey, into: ProfileKey },
    /// The profile's events were regrouped: these are all of them now.
    Rebuilt { profile: ProfileKey, events: Vec<NewEvent> },
    /// The profile no longer exists (erased, or emptied by a regroup).
    Removed { profile: ProfileKey, erased: bool },
}

struct Slot {
    definition: SegmentDefinition,
    interest: Interest,
    reads_identity: bool,
    /// Slots of the segments this one refers to.
    depends_on: Vec<u32>,
    members: usize,
}

#[derive(Default)]
struct Entry {
    summary: Summary,
    /// Slots the profile is a member of, sorted. Boxed slices rather than vectors (both change seldom): with the
    /// summary's lists boxed too, the entry is in the allocator's 112-byte size class instead of 160.
    members: Box<[u32]>,
    /// (slot, ms) — when each time-dependent answer can next change.
    wakes: Box<[(u32, i64)]>,
    /// The instant this profile sits in the timer queue at.
    timer: Option<i64>,
}

impl Entry {
    fn is_member(&self, slot: u32) -> bool {
        self.members.binary_search(&slot).is_ok()
    }

    fn set_member(&mut self, slot: u32, member: bool) -> bool {
        match (self.members.binary_search(&slot), member) {
            (Ok(_), true) | (Err(_), false) => false,
            (Err(at), true) => {
                edit(&mut self.members, |members| members.insert(at, slot));
                true
            }
            (Ok(at), false) => {
                edit(&mut self.members, |members| members.remove(at));
                true
            }
        }
    }

    fn set_wake(&mut self, slot: u32, next: Option<DateTime<Utc>>) {
        let next = next.map(|at| (slot, at.timestamp_millis()));
        if self.wakes.iter().find(|(s, _)| *s == slot) == next.as_ref() {
            return;
        }
        edit(&mut self.wakes, |wakes| {
            wakes.retain(|(s, _)| *s != slot);
            wakes.extend(next);
        });
    }
}

/// Counts for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub segments: usize,
    pub profiles: usize,
    pub events: usize,
    pub timers: usize,
    /// Approximate heap bytes of segment state (summaries, memberships, timers).
    pub state_bytes: usize,
}

impl Slot {
    fn transition(&self, profile: ProfileKey, entered: bool, at: DateTime<Utc>, cause: &Cause) -> Transition {
        Transition {
            segment_id: self.definition.id,
            segment: self.definition.name.clone(),
            profile,
            entered,
            at,
            cause: cause.clone(),
        }
    }
}

#[derive(Default)]
pub struct Engine {
    slots: Vec<Option<Slot>>,
    by_name: HashMap<String, u32>,
    by_id: HashMap<i64, u32>,
    /// Slots, dependencies before the segments that refer to them.
    order: Vec<u32>,
    interest: Interest,
    /// Boxed: a table of 168-byte entries doubles to twice the profiles it holds in slots, and at 118k profiles
    /// had just doubled to 262k of them (46 MB); boxed, each entry is allocated once.
    profiles: ByProfile<Entry>,
    timers: BTreeSet<(i64, ProfileKey)>,
    interner: Interner,
    threads: usize,
    /// No segment is defined and no summaries are kept (see [`Engine::sleep`]).
    dormant: bool,
}

/// Puts the profile in the timer queue at its earliest wake-up (or takes it out).
fn reschedule(timers: &mut BTreeSet<(i64, ProfileKey)>, profile: ProfileKey, entry: &mut Entry) {
    let due = next_timer(entry);
    if entry.timer != due {
        if let Some(old) = entry.timer {
            timers.remove(&(old, profile));
        }
        if let Some(at) = due {
            timers.insert((at, profile));
        }
        entry.timer = due;
    }
}

/// The earliest instant any of the profile's time-dependent answers can change.
fn next_timer(entry: &Entry) -> Option<i64> {
    entry.wakes.iter().map(|(_, at)| *at).min()
}

/// The definitions, borrowed apart from the profiles: a build evaluates and updates disjoint sets of profiles on
/// several threads while they read the definitions.
#[derive(Clone, Copy)]
struct Definitions<'a> {
    slots: &'a [Option<Slot>],
    by_name: &'a HashMap<String, u32>,
}

impl Definitions<'_> {
    fn slot(&self, slot: u32) -> Option<&Slot> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// One definition for one profile; `in segment` sees the answers already given in this pass, then the
    /// profile's current memberships.
    fn evaluate_slot(&self, s: &Slot, entry: &Entry, answers: &[(u32, Evaluation)], now: DateTime<Utc>) -> Evaluation {
        let in_segment = |name: &str| {
            let Some(other) = self.by_name.get(name) else { return false };
            match answers.iter().find(|(s, _)| s == other) {
                Some((_, e)) => e.member,
                None => entry.is_member(*other),
            }
        };
        evaluate(&s.definition.condition, &entry.summary, now, &in_segment)
    }

    /// Answers for `slots` (in order) for one profile into `answers`; later slots see the earlier slots' new
    /// answers.
    fn evaluate_entry(&self, entry: &Entry, slots: &[u32], now: DateTime<Utc>, answers: &mut Vec<(u32, Evaluation)>) {
        answers.clear();
        for &slot in slots {
            let Some(s) = self.slot(slot) else { continue };
            let evaluation = self.evaluate_slot(s, entry, answers, now);
            answers.push((slot, evaluation));
        }
    }
}

/// What one thread of a build changed besides its profiles' entries.
struct BuildPart {
    transitions: Vec<Transition>,
    /// Per slot: members gained minus members lost.
    member_delta: Vec<i64>,
    /// Timer queue entries to take out, and to put in (sorted: many go in at once by a merge).
    removed_timers: Vec<(i64, ProfileKey)>,
    added_timers: Vec<(i64, ProfileKey)>,
}

/// Evaluates `slots` for a share of the profiles and applies the answers to their entries.
fn build_part(
    view: Definitions<'_>,
    part: &mut [(ProfileKey, &mut Entry)],
    slots: &[u32],
    now: DateTime<Utc>,
    cause: &Cause,
) -> BuildPart {
    let mut out = BuildPart {
        transitions: Vec::new(),
        member_delta: vec![0; view.slots.len()],
        removed_timers: Vec::new(),
        added_timers: Vec::new(),
    };
    let mut answers = Vec::with_capacity(slots.len());
    for (profile, entry) in part.iter_mut() {
        let profile = *profile;
        view.evaluate_entry(entry, slots, now, &mut answers);
        for &(slot, evaluation) in &answers {
            entry.set_wake(slot, evaluation.next_change);
            if entry.set_member(slot, evaluation.member)
                && let Some(s) = view.slot(slot)
            {
                out.member_delta[slot as usize] += if evaluation.member { 1 } else { -1 };
                out.transitions.push(s.transition(profile, evaluation.member, now, cause));
            }
        }
        let due = next_timer(entry);
        if entry.timer != due {
            out.removed_timers.extend(entry.timer.map(|at| (at, profile)));
            out.added_timers.extend(due.map(|at| (at, profile)));
            entry.timer = due;
        }
    }
    out.added_timers.sort_unstable();
    out
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Engine {
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Engine { threads, ..Engine::default() }
    }

    /// What the summaries hold.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Whether `condition` can be evaluated from what the summaries hold now.
    pub fn covers(&self, condition: &Condition) -> bool {
        !self.dormant && self.interest.covers(&Interest::of(condition))
    }

    /// With no segment defined, drops every summary and keeps none until [`Engine::wake`]: they would cost
    /// memory for every profile (a few hundred bytes each) and work on every event for no one. Until then
    /// changes are ignored and nothing is covered, so the first definition or preview reloads from storage.
    /// Refused (false) while definitions exist.
    pub fn sleep(&mut self) -> bool {
        if !self.by_name.is_empty() {
            return false;
        }
        self.dormant = true;
        self.profiles = ByProfile::default();
        self.timers.clear();
        self.interest = Interest::default();
        self.interner = Interner::default();
        true
    }

    /// Keeps summaries again; the caller reloads them from storage.
    pub fn wake(&mut self) {
        self.dormant = false;
    }

    pub fn is_dormant(&self) -> bool {
        self.dormant
    }

    /// Makes summaries keep what `condition` reads from now on. Profiles loaded before only hold it after
    /// [`Engine::load_profile`] is called for them again (a reload from storage).
    pub fn widen(&mut self, condition: &Condition) {
        self.interest = self.interest.union(&Interest::of(condition));
    }

    pub fn definitions(&self) -> impl Iterator<Item = &SegmentDefinition> {
        self.order.iter().filter_map(|s| self.slot(*s)).map(|s| &s.definition)
    }

    pub fn definition(&self, name: &str) -> Option<&SegmentDefinition> {
        self.by_name.get(name).and_then(|s| self.slot(*s)).map(|s| &s.definition)
    }

    fn slot(&self, slot: u32) -> Option<&Slot> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub fn member_count(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).and_then(|s| self.slot(*s)).map(|s| s.members)
    }

    /// Ids of the segments a profile is in.
    pub fn memberships(&self, profile: ProfileKey) -> Vec<i64> {
        self.profiles
            .get(profile)
            .map(|e| e.members.iter().filter_map(|s| self.slot(*s)).map(|s| s.definition.id).collect())
            .unwrap_or_default()
    }

    pub fn is_member(&self, name: &str, profile: ProfileKey) -> bool {
        let Some(slot) = self.by_name.get(name) else { return false };
        self.profiles.get(profile).is_some_and(|e| e.is_member(*slot))
    }

    /// Members of a segment in profile order after `after`, at most `limit`.
    pub fn members(&self, name: &str, after: Option<ProfileKey>, limit: usize) -> Vec<ProfileKey> {
        let Some(slot) = self.by_name.get(name).copied() else { return Vec::new() };
        let mut out: Vec<ProfileKey> = self
            .profiles
            .iter()
            .filter(|(id, e)| after.is_none_or(|a| *id > a) && e.is_member(slot))
            .map(|(id, _)| id)
            .collect();
        out.sort_unstable();
        out.truncate(limit);
        out
    }

    pub fn stats(&self) -> EngineStats {
        let mut stats = EngineStats {
            segments: self.by_name.len(),
            profiles: self.profiles.len(),
            timers: self.timers.len(),
            ..EngineStats::default()
        };
        let entry_size = std::mem::size_of::<Option<Box<Entry>>>() + std::mem::size_of::<Entry>();
        for entry in self.profiles.values() {
            stats.events += entry.summary.event_count();
            stats.state_bytes += entry_size
                + entry.summary.heap_bytes()
                + entry.members.len() * 4
                + entry.wakes.len() * std::mem::size_of::<(u32, i64)>();
        }
        stats.state_bytes += self.timers.len() * 40;
        stats
    }

    /// The earliest instant a profile's membership can change with no new data.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|(at, _)| ms_time(*at))
    }

    /// Marks a stored membership (start-up), before [`Engine::evaluate_all`] reconciles it.
    pub fn restore_member(&mut self, segment_id: i64, profile: ProfileKey) {
        let Some(slot) = self.by_id.get(&segment_id).copied() else { return };
        let entry = self.profiles.get_or_default(profile);
        if entry.set_member(slot, true)
            && let Some(Some(s)) = self.slots.get_mut(slot as usize)
        {
            s.members += 1;
        }
    }

    /// Merges stored data for a profile into its summary without evaluating (start-up and reloads; the
    /// caller evaluates afterwards). Seeing data twice is harmless.
    pub fn load_profile(
        &mut self,
        profile: ProfileKey,
        data: Option<&ProfileData>,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) {
        if self.dormant {
            return;
        }
        let entry = self.profiles.get_or_default(profile);
        if let Some(data) = data {
            entry.summary.set_data(data, &self.interest, &mut self.interner);
        }
        entry.summary.add_events(events, &self.interest, &mut self.interner);
        entry.summary.prune(&self.interest, now);
    }

    /// Adds definitions without building them (start-up: memberships are restored, then
    /// [`Engine::evaluate_all`] runs once). The set must be valid as a whole.
    pub fn install(&mut self, definitions: Vec<SegmentDefinition>) -> Result<(), EngineError> {
        let mut all: BTreeMap<String, Condition> =
            self.definitions().map(|d| (d.name.clone(), d.condition.clone())).collect();
        for d in &definitions {
            all.insert(d.name.clone(), d.condition.clone());
        }
        check_definitions(&all)?;
        for definition in definitions {
            self.interest = self.interest.union(&Interest::of(&definition.condition));
            self.put(definition);
        }
        self.reorder();
        Ok(())
    }

    fn put(&mut self, definition: SegmentDefinition) -> u32 {
        let mut reads_identity = false;
        definition.condition.visit(&mut |c| {
            reads_identity |= matches!(c, Condition::Consent(_) | Condition::HasIdentifier(_) | Condition::Near(_))
        });
        let interest = Interest::of(&definition.condition);
        let slot = match self.by_name.get(&definition.name) {
            Some(slot) => *slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let members = self.slot(slot).map_or(0, |s| s.members);
        if let Some(old_id) = self.slot(slot).map(|old| old.definition.id) {
            self.by_id.remove(&old_id);
        }
        self.by_name.insert(definition.name.clone(), slot);
        self.by_id.insert(definition.id, slot);
        self.slots[slot as usize] =
            Some(Slot { definition, interest, reads_identity, depends_on: Vec::new(), members });
        slot
    }

    /// Recomputes dependency slots and the evaluation order.
    fn reorder(&mut self) {
        let names: Vec<(u32, Vec<u32>)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as u32, s)))
            .map(|(i, s)| {
                let deps = s
                    .definition
                    .condition
                    .referenced_segments()
                    .into_iter()
                    .filter_map(|n| self.by_name.get(n).copied())
                    .collect();
                (i, deps)
            })
            .collect();
        let mut order = Vec::with_capacity(names.len());
        let mut placed: BTreeSet<u32> = BTreeSet::new();
        // Definitions are acyclic (checked on save), so this settles in at most `names.len()` rounds.
        for _ in 0..=names.len() {
            for (slot, deps) in &names {
                if !placed.contains(slot) && deps.iter().all(|d| placed.contains(d)) {
                    placed.insert(*slot);
                    order.push(*slot);
                }
            }
        }
        for (slot, deps) in names {
            if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
                s.depends_on = deps;
            }
        }
        self.order = order;
    }

    /// Creates or replaces a definition and builds its membership over every profile (and, after it, the
    /// segments that refer to it). Returns the membership changes.
    pub fn upsert(
        &mut self,
        definition: SegmentDefinition,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, EngineError> {
        let mut all: BTreeMap<String, Condition> =
            self.definitions().map(|d| (d.name.clone(), d.condition.clone())).collect();
        all.insert(definition.name.clone(), definition.condition.clone());
        check_definitions(&all)?;
        if !self.covers(&definition.condition) {
            return Err(EngineError::NeedsReload);
        }
        let slot = self.put(definition);
        self.reorder();
        let mut targets: BTreeSet<u32> = BTreeSet::from([slot]);
        // Everything that refers to it, transitively.
        loop {
            let before = targets.len();
            for s in self.order.clone() {
                if self.slot(s).is_some_and(|x| x.depends_on.iter().any(|d| targets.contains(d))) {
                    targets.insert(s);
                }
            }
            if targets.len() == before {
                break;
            }
        }
        let slots: Vec<u32> = self.order.iter().copied().filter(|s| targets.contains(s)).collect();
        Ok(self.build(&slots, now, &Cause::Definition))
    }

    /// Deletes a definition. Its members are dropped without `Segment Exited` records (nobody left it; it
    /// stopped existing). Refused while another segment refers to it.
    pub fn remove(&mut self, name: &str) -> Result<SegmentDefinition, EngineError> {
        let slot = *self.by_name.get(name).ok_or_else(|| EngineError::UnknownSegment(name.to_string()))?;
        if let Some(user) = self.definitions().find(|d| d.condition.referenced_segments().contains(&name)) {
            return Err(EngineError::InUse { segment: name.to_string(), used_by: user.name.clone() });
        }
        let removed = self.slots[slot as usize].take().ok_or_else(|| EngineError::UnknownSegment(name.to_string()))?;
        self.by_name.remove(name);
        self.by_id.remove(&removed.definition.id);
        self.reorder();
        let mut interest = Interest::default();
        for d in self.definitions() {
            interest.add(&d.condition);
        }
        self.interest = interest;
        for (profile, entry) in self.profiles.iter_mut() {
            entry.set_member(slot, false);
            entry.set_wake(slot, None);
            entry.summary.narrow(&self.interest);
            reschedule(&mut self.timers, profile, entry);
        }
        Ok(removed.definition)
    }

    /// Evaluates every definition for every profile (start-up, reloads), reconciling restored memberships.
    pub fn evaluate_all(&mut self, now: DateTime<Utc>) -> Vec<Transition> {
        let slots = self.order.clone();
        self.build(&slots, now, &Cause::Recomputed)
    }

    /// Whether `definition` may be saved next to the current definitions (valid, refers to segments that
    /// exist, no cycle).
    pub fn check(&self, definition: &SegmentDefinition) -> Result<(), EngineError> {
        let mut all: BTreeMap<String, Condition> =
            self.definitions().map(|d| (d.name.clone(), d.condition.clone())).collect();
        all.insert(definition.name.clone(), definition.condition.clone());
        check_definitions(&all)?;
        Ok(())
    }

    fn view(&self) -> Definitions<'_> {
        Definitions { slots: &self.slots, by_name: &self.by_name }
    }

    /// Evaluates `slots` (in dependency order) for every profile and applies the answers, in parallel: each
    /// thread owns a share of the profiles' entries (the answers were applied on one thread before: ~300 ms of
    /// a 1M-profile build); the timer queue and member counts are updated after, with what each share changed.
    fn build(&mut self, slots: &[u32], now: DateTime<Utc>, cause: &Cause) -> Vec<Transition> {
        let threads = self.threads.max(1);
        let view = Definitions { slots: &self.slots, by_name: &self.by_name };
        let mut entries: Vec<(ProfileKey, &mut Entry)> = self.profiles.iter_mut().collect();
        let chunk = entries.len().div_ceil(threads).max(1);
        let parts: Vec<BuildPart> = std::thread::scope(|scope| {
            let handles: Vec<_> = entries
                .chunks_mut(chunk)
                .map(|part| scope.spawn(move || build_part(view, part, slots, now, cause)))
                .collect();
            // A share whose thread panicked has changed some of its entries already: carrying on without its
            // counts and timers would leave the engine inconsistent.
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        let mut transitions = Vec::with_capacity(parts.iter().map(|p| p.transitions.len()).sum());
        let mut added = Vec::with_capacity(parts.iter().map(|p| p.added_timers.len()).sum());
        for part in parts {
            for (slot, delta) in part.member_delta.into_iter().enumerate() {
                if delta != 0
                    && let Some(Some(s)) = self.slots.get_mut(slot)
                {
                    s.members = s.members.saturating_add_signed(delta as isize);
                }
            }
            for old in &part.removed_timers {
                self.timers.remove(old);
            }
            added.extend(part.added_timers);
            transitions.extend(part.transitions);
        }
        if added.len() > self.timers.len() / 8 {
            // A build that gives most profiles a wake-up (a time window in a new definition): one merge of sorted
            // runs instead of a million random inserts (~200 ms serial at 1M profiles).
            let mut fresh: BTreeSet<(i64, ProfileKey)> = added.into_iter().collect();
            self.timers.append(&mut fresh);
        } else {
            self.timers.extend(added);
        }
        transitions
    }

    fn apply_answers(
        &mut self,
        profile: ProfileKey,
        answers: Vec<(u32, Evaluation)>,
        now: DateTime<Utc>,
        cause: &Cause,
        transitions: &mut Vec<Transition>,
    ) {
        let Some(entry) = self.profiles.get_mut(profile) else { return };
        for (slot, evaluation) in answers {
            entry.set_wake(slot, evaluation.next_change);
            if entry.set_member(slot, evaluation.member)
                && let Some(Some(s)) = self.slots.get_mut(slot as usize)
            {
                if evaluation.member {
                    s.members += 1;
                } else {
                    s.members = s.members.saturating_sub(1);
                }
                transitions.push(s.transition(profile, evaluation.member, now, cause));
            }
        }
        reschedule(&mut self.timers, profile, entry);
    }

    /// Re-evaluates one profile: the definitions `wanted` picks, then (in order) every definition that refers
    /// to a segment whose answer changed.
    fn reevaluate(
        &mut self,
        profile: ProfileKey,
        wanted: &dyn Fn(&Slot, u32) -> bool,
        now: DateTime<Utc>,
        cause: &Cause,
        transitions: &mut Vec<Transition>,
    ) {
        let Some(entry) = self.profiles.get(profile) else { return };
        let mut answers: Vec<(u32, Evaluation)> = Vec::new();
        let mut changed: Vec<u32> = Vec::new();
        for &slot in &self.order {
            let Some(s) = self.slot(slot) else { continue };
            if !wanted(s, slot) && !s.depends_on.iter().any(|d| changed.contains(d)) {
                continue;
            }
            let evaluation = self.view().evaluate_slot(s, entry, &answers, now);
            if evaluation.member != entry.is_member(slot) {
                changed.push(slot);
            }
            answers.push((slot, evaluation));
        }
        self.apply_answers(profile, answers, now, cause, transitions);
    }

    /// Applies the changes of one commit, then re-evaluates each touched profile once.
    pub fn apply(&mut self, changes: Vec<Change>, now: DateTime<Utc>) -> Vec<Transition> {
        if self.dormant {
            return Vec::new();
        }
        let mut touched: BTreeMap<ProfileKey, (Touched, Cause)> = BTreeMap::new();
        let mut gone: Vec<(ProfileKey, Cause)> = Vec::new();
        for change in changes {
            match change {
                Change::Updated { profile, data, events } => {
                    let first_seen = !self.profiles.contains(profile);
                    let entry = self.profiles.get_or_default(profile);
                    let (t, cause) = touched.entry(profile).or_insert((Touched::default(), Cause::ProfileChanged));
                    if first_seen {
                        // Never evaluated: a segment that holds for someone we know nothing about (`not has
                        // email`) holds for them whatever this change touched.
                        t.attributes.insert("*".into());
                    }
                    if let Some(data) = data {
                        let changed = entry.summary.set_data(&data, &self.interest, &mut self.interner);
                        t.attributes.extend(changed.attributes);
                        t.identity |= changed.identity;
                    }
                    let names = entry.summary.add_events(&events, &self.interest, &mut self.interner);
                    if !names.is_empty() {
                        if let Cause::Events { names: known } = cause {
                            known.extend(names.iter().filter(|n| !known.contains(n)).cloned().collect::<Vec<_>>());
                        } else if *cause == Cause::ProfileChanged {
                            *cause = Cause::Events { names: names.iter().cloned().collect() };
                        }
                        t.event_names.extend(names);
                    }
                }
                Change::Merged { from, into } => {
                    let absorbed = self.profiles.get_mut(from).map(|e| std::mem::take(&mut e.summary));
                    let entry = self.profiles.get_or_default(into);
                    if let Some(summary) = absorbed {
                        entry.summary.absorb(summary);
                    }
                    let (t, cause) = touched.entry(into).or_insert((Touched::default(), Cause::ProfileChanged));
                    t.identity = true;
                    t.attributes.insert("*".into());
                    match cause {
                        Cause::Merged { from: list } => list.push(from),
                        _ => *cause = Cause::Merged { from: vec![from] },
                    }
                    touched.remove(&from);
                    gone.push((from, Cause::MergedInto { into }));
                }
                Change::Rebuilt { profile, events } => {
                    let entry = self.profiles.get_or_default(profile);
                    entry.summary.clear_events();
                    entry.summary.add_events(&events, &self.interest, &mut self.interner);
                    let (t, _) = touched.entry(profile).or_insert((Touched::default(), Cause::Recomputed));
                    t.identity = true;
                    t.attributes.insert("*".into());
                }
                Change::Removed { profile, erased } => {
                    touched.remove(&profile);
                    let cause = if erased { Cause::Erased } else { Cause::Recomputed };
                    gone.push((profile, cause));
                }
            }
        }
        let mut transitions = Vec::new();
        for (profile, cause) in gone {
            self.drop_profile(profile, now, cause, &mut transitions);
        }
        for (profile, (t, cause)) in touched {
            let Some(entry) = self.profiles.get_mut(profile) else { continue };
            entry.summary.prune(&self.interest, now);
            let everything = t.attributes.contains("*");
            let wanted = |s: &Slot, _slot: u32| {
                everything
                    || (t.identity && s.reads_identity)
                    || t.event_names.iter().any(|n| s.interest.events.contains_key(n))
                    || t.attributes.iter().any(|a| s.interest.attributes.contains(a))
            };
            self.reevaluate(profile, &wanted, now, &cause, &mut transitions);
        }
        transitions
    }

    fn drop_profile(&mut self, profile: ProfileKey, now: DateTime<Utc>, cause: Cause, out: &mut Vec<Transition>) {
        let Some(entry) = self.profiles.remove(profile) else { return };
        if let Some(at) = entry.timer {
            self.timers.remove(&(at, profile));
        }
        for slot in entry.members {
            if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
                s.members = s.members.saturating_sub(1);
                out.push(Transition {
                    segment_id: s.definition.id,
                    segment: s.definition.name.clone(),
                    profile,
                    entered: false,
                    at: now,
                    cause: cause.clone(),
                });
            }
        }
    }

    /// Wakes the profiles due at `now` and re-evaluates their due definitions.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Transition> {
        let now_ms = now.timestamp_millis();
        let mut transitions = Vec::new();
        while let Some(&(at, profile)) = self.timers.first() {
            if at > now_ms {
                break;
            }
            self.timers.pop_first();
            let due: Vec<u32> = match self.profiles.get_mut(profile) {
                Some(entry) => {
                    entry.timer = None;
                    entry.summary.prune(&self.interest, now);
                    entry.wakes.iter().filter(|(_, w)| *w <= now_ms).map(|(s, _)| *s).collect()
                }
                None => continue,
            };
            self.reevaluate(profile, &|_, slot| due.contains(&slot), now, &Cause::Time, &mut transitions);
        }
        transitions
    }

    /// How many profiles match `condition` now, and the first `sample` of them by id, without saving anything.
    pub fn preview(
        &self,
        condition: &Condition,
        now: DateTime<Utc>,
        sample: usize,
    ) -> Result<(usize, Vec<ProfileKey>), EngineError> {
        crate::validate::check(condition)?;
        for name in condition.referenced_segments() {
            if !self.by_name.contains_key(name) {
                return Err(EngineError::UnknownSegment(name.to_string()));
            }
        }
        if !self.covers(condition) {
            return Err(EngineError::NeedsReload);
        }
        let entries: Vec<(ProfileKey, &Entry)> = self.profiles.iter().collect();
        let chunk = entries.len().div_ceil(self.threads.max(1)).max(1);
        let parts: Vec<(usize, Vec<ProfileKey>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = entries
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let mut count = 0;
                        let mut ids = Vec::new();
                        for (id, entry) in part {
                            let in_segment =
                                |name: &str| self.by_name.get(name).is_some_and(|slot| entry.is_member(*slot));
                            if evaluate(condition, &entry.summary, now, &in_segment).member {
                                count += 1;
                                ids.push(*id);
                            }
                        }
                        ids.sort_unstable();
                        ids.truncate(sample);
                        (count, ids)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let count = parts.iter().map(|(c, _)| c).sum();
        let mut ids: Vec<ProfileKey> = parts.into_iter().flat_map(|(_, ids)| ids).collect();
        ids.sort_unstable();
        ids.truncate(sample);
        Ok((count, ids))
    }

    /// The attribute roots a set of definitions reads (for loading computed attributes selectively).
    pub fn reads_attribute(&self, path: &str) -> bool {
        self.interest.attributes.contains(attribute_root(path))
    }
}

#[cfg(test)]
mod tests {
    /// Every profile has one boxed entry: mimalloc's size classes around it are 112, 128 and 160 bytes, so a
    /// field that takes it past 112 costs 16 bytes per profile or more (1.9 MB at 118k profiles).
    #[test]
    fn a_profile_entry_fits_the_allocators_112_byte_size_class() {
        let size = std::mem::size_of::<super::Entry>();
        assert!(size <= 112, "an entry is {size} bytes");
    }
}
