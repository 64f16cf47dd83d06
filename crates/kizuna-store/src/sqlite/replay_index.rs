//! Where the replay-protection keys inside their window are found: a compact in-memory table from a key's hash to
//! its row in the append-only `dedup_log`.
//!
//! Live traffic spreads its message ids over the whole key space, so a B-tree keyed by message id dirtied about
//! one random page per event, which the WAL then wrote and the checkpointer wrote again; the check and insert
//! were ~11 µs of server CPU per event in time-ordered ingest (BENCHMARKS.md, 2026-12-05). The log only grows at
//! its end and is pruned at its front, and this table answers "which rows might hold this key" from memory.
//!
//! Each slot is one `u64`: the top 32 bits of the key's hash (the tag) and the row's `seq` as an offset from a
//! base. The tag alone chooses the home slot (scaled to the table's length), so the table can be resized
//! without the keys themselves; the tag also filters candidates, and the caller confirms each candidate against
//! its row, so a tag collision costs a read, never a wrong answer. Linear probing, deletion by backward shift,
//! at most 7/8 full (an absent key then scans a few cache lines), growing by half: 8 bytes a slot is 9–14 bytes
//! a key, which at a few million keys in the window is what this table costs in memory.

/// An empty slot. A stored slot is never 0: its offset is at least 1.
const EMPTY: u64 = 0;
const MIN_SLOTS: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("replay-protection keys span more than 2^32 log positions; too many messages inside the deduplication window")]
pub struct IndexFull;

pub struct ReplayIndex {
    slots: Vec<u64>,
    len: usize,
    /// A row's `seq` is `base + offset`.
    base: i64,
}

impl Default for ReplayIndex {
    fn default() -> Self {
        Self::with_room_for(0)
    }
}

impl ReplayIndex {
    /// An empty table that holds `keys` keys without resizing (a rebuild knows how many are coming: a table
    /// grown step by step would leave the earlier, smaller tables behind as freed but unreturned memory).
    pub fn with_room_for(keys: usize) -> Self {
        Self { slots: vec![EMPTY; Self::slots_for(keys)], len: 0, base: 0 }
    }

    /// Room for `keys` at 4/5 full.
    fn slots_for(keys: usize) -> usize {
        (keys.saturating_mul(5) / 4).max(MIN_SLOTS)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The tag of a 64-bit key hash.
    pub fn tag(hash: u64) -> u32 {
        (hash >> 32) as u32
    }

    /// A slot's tag and its row's offset from the base.
    pub fn split(slot: u64) -> (u32, u32) {
        ((slot >> 32) as u32, slot as u32)
    }

    /// The base that the offsets in this table's slots count from.
    pub fn base(&self) -> i64 {
        self.base
    }

    /// Empties the table into its slots sorted by tag, then offset.
    pub fn into_sorted_slots(self) -> Vec<u64> {
        let mut slots = self.slots;
        slots.retain(|&slot| slot != EMPTY);
        slots.sort_unstable();
        slots
    }

    fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * self.slots.len() as u64) >> 32) as usize
    }

    fn after(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// How many steps forward `to` lies from `from`, around the end.
    fn distance(&self, from: usize, to: usize) -> usize {
        if to >= from { to - from } else { to + self.slots.len() - from }
    }

    fn seq_of(&self, slot: u64) -> i64 {
        self.base + (slot & u64::from(u32::MAX)) as i64
    }

    pub fn insert(&mut self, tag: u32, seq: i64) -> Result<(), IndexFull> {
        if self.len == 0 {
            self.base = seq - 1;
        }
        if seq <= self.base || seq - self.base > i64::from(u32::MAX) {
            self.rebase(seq)?;
        }
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.resize(self.slots.len() + self.slots.len() / 2);
        }
        let slot = (u64::from(tag) << 32) | (seq - self.base) as u64;
        self.place(slot);
        self.len += 1;
        Ok(())
    }

    fn place(&mut self, slot: u64) {
        let mut i = self.home((slot >> 32) as u32);
        while self.slots[i] != EMPTY {
            i = self.after(i);
        }
        self.slots[i] = slot;
    }

    /// The rows that may hold a key with this tag.
    pub fn candidates(&self, tag: u32) -> impl Iterator<Item = i64> + '_ {
        let mut i = self.home(tag);
        std::iter::from_fn(move || {
            loop {
                let slot = self.slots[i];
                if slot == EMPTY {
                    return None;
                }
                i = self.after(i);
                if (slot >> 32) as u32 == tag {
                    return Some(self.seq_of(slot));
                }
            }
        })
    }

    /// Forgets the row `seq` of a key with this tag; false when it was not there.
    pub fn remove(&mut self, tag: u32, seq: i64) -> bool {
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return false;
            }
            if (slot >> 32) as u32 == tag && self.seq_of(slot) == seq {
                break;
            }
            i = self.after(i);
        }
        // Backward shift: move later members of the run into the hole when the hole lies between their home and
        // where they sit, so that every lookup still reaches them before an empty slot.
        let mut hole = i;
        let mut j = i;
        loop {
            j = self.after(j);
            let slot = self.slots[j];
            if slot == EMPTY {
                break;
            }
            let home = self.home((slot >> 32) as u32);
            if self.distance(home, j) >= self.distance(hole, j) {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        if self.slots.len() > MIN_SLOTS && self.len * 4 < self.slots.len() {
            self.resize(Self::slots_for(self.len));
        }
        true
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            self.place(slot);
        }
    }

    /// Moves the base so that `seq` and every stored row fit in 32-bit offsets (the log's positions only grow,
    /// and its front is pruned, so the rows held span the window, not the log's history).
    fn rebase(&mut self, seq: i64) -> Result<(), IndexFull> {
        let held = || self.slots.iter().filter(|&&s| s != EMPTY).map(|&s| self.seq_of(s));
        let base = held().min().unwrap_or(seq).min(seq) - 1;
        let highest = held().max().unwrap_or(seq).max(seq);
        if highest - base > i64::from(u32::MAX) {
            return Err(IndexFull);
        }
        let old_base = self.base;
        for slot in self.slots.iter_mut().filter(|s| **s != EMPTY) {
            let seq = old_base + (*slot & u64::from(u32::MAX)) as i64;
            *slot = (*slot & !u64::from(u32::MAX)) | (seq - base) as u64;
        }
        self.base = base;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tiny deterministic generator so the test needs no dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn candidates_of(index: &ReplayIndex, tag: u32) -> Vec<i64> {
        let mut found: Vec<i64> = index.candidates(tag).collect();
        found.sort_unstable();
        found
    }

    #[test]
    fn matches_a_map_through_growth_removal_and_shrinking() {
        let mut index = ReplayIndex::default();
        let mut model: HashMap<u32, Vec<i64>> = HashMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut live: Vec<(u32, i64)> = Vec::new();
        // Few distinct tags, so that runs are long and many tags share home slots; some share a whole tag.
        for seq in 1..20_000_i64 {
            let tag = (next(&mut rng) as u32) & 0xFFF0_00FF;
            index.insert(tag, seq).expect("fits");
            model.entry(tag).or_default().push(seq);
            live.push((tag, seq));
            if next(&mut rng).is_multiple_of(3) {
                let at = (next(&mut rng) % live.len() as u64) as usize;
                let (tag, seq) = live.swap_remove(at);
                assert!(index.remove(tag, seq));
                model.get_mut(&tag).expect("tag").retain(|s| *s != seq);
            }
        }
        assert!(!index.remove(1, 999_999), "an absent row is not removed");
        assert_eq!(index.len(), live.len());
        for (tag, seqs) in &model {
            let mut expected = seqs.clone();
            expected.sort_unstable();
            assert_eq!(candidates_of(&index, *tag), expected, "tag {tag:#x}");
        }
        // Empty it: the table shrinks back and still answers.
        for (tag, seq) in live.drain(..) {
            assert!(index.remove(tag, seq));
        }
        assert_eq!(index.len(), 0);
        assert_eq!(index.slots.len(), MIN_SLOTS);
        assert!(index.candidates(0xFFF0_00FF).next().is_none());
    }

    #[test]
    fn positions_beyond_32_bits_rebase_and_a_span_too_wide_is_refused() {
        let mut index = ReplayIndex::default();
        let start = 10_000_000_000_i64;
        index.insert(7, start).expect("first");
        index.insert(8, start + 5).expect("second");
        assert!(index.remove(7, start));
        // The front was pruned: a position 2^32 further on still fits once the base moves.
        let far = start + 5 + i64::from(u32::MAX) - 1;
        index.insert(9, far).expect("rebased");
        assert_eq!(candidates_of(&index, 8), vec![start + 5]);
        assert_eq!(candidates_of(&index, 9), vec![far]);
        assert!(index.insert(10, far + 10).is_err(), "rows spanning more than 2^32 positions cannot be held");
        assert_eq!(candidates_of(&index, 8), vec![start + 5], "a refused insert changes nothing");
    }
}
