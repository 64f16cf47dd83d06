//! Replay-protection keys frozen out of memory: a sorted run of [`ReplayIndex`] slots in an unnamed file, found
//! through a binary fuse filter that stays in memory.
//!
//! A week of live message ids is millions of keys, and at 9–14 bytes a key the in-memory table alone cost ~37 MB
//! of resident memory per 100k profiles in `bench memory` (BENCHMARKS.md, 2026-12-05). A frozen run costs ~9 bits
//! a key for its filter plus 4 bytes per 512 keys for its fences. Most claims are new keys, which the filters turn
//! away (a false positive once in 256 runs checked) without touching the file; a possible match reads one 4 KiB
//! block, usually from the page cache.
//!
//! The files are derived data: the log (`dedup_log`) is the truth, and each start rebuilds the runs from it. An
//! unnamed file disappears with the process, so a crash leaves nothing behind.
//!
//! [`ReplayIndex`]: super::replay_index::ReplayIndex

use super::replay_index::ReplayIndex;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use xorf::{BinaryFuse8, Filter};

/// Slots per block: one 4 KiB read finds a tag.
const BLOCK_SLOTS: usize = 512;
const SLOT_BYTES: usize = 8;

pub struct FrozenRun {
    file: File,
    /// The tag of each block's first slot.
    fences: Vec<u32>,
    /// `None` when the filter could not be built (it fails only on pathological inputs): every lookup then reads
    /// the file, which is slower but still exact.
    filter: Option<BinaryFuse8>,
    len: usize,
    /// A slot's row is `base + offset`.
    base: i64,
    last_seq: i64,
}

impl FrozenRun {
    /// Writes `slots` (sorted; offsets counted from `base`) to an unnamed file in `dir`.
    pub fn write(dir: &Path, slots: &[u64], base: i64) -> io::Result<Self> {
        debug_assert!(slots.is_sorted());
        let file = tempfile::tempfile_in(dir)?;
        let mut out = BufWriter::with_capacity(1 << 16, &file);
        for slot in slots {
            out.write_all(&slot.to_le_bytes())?;
        }
        out.flush()?;
        drop(out);
        let fences = slots.iter().step_by(BLOCK_SLOTS).map(|&slot| ReplayIndex::split(slot).0).collect();
        let mut tags: Vec<u64> = slots.iter().map(|&slot| u64::from(ReplayIndex::split(slot).0)).collect();
        // The filter must be built from distinct keys; sorted slots put equal tags side by side.
        tags.dedup();
        let filter = BinaryFuse8::try_from(&tags).ok();
        let last_seq = slots.iter().map(|&slot| base + i64::from(ReplayIndex::split(slot).1)).max().unwrap_or(base);
        Ok(Self { file, fences, filter, len: slots.len(), base, last_seq })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The highest log row the run holds: once the log's front passes it, no key of the run can match.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The rows that may hold a key with this tag.
    pub fn candidates(&self, tag: u32) -> io::Result<Vec<i64>> {
        let mut found = Vec::new();
        if self.filter.as_ref().is_some_and(|filter| !filter.contains(&u64::from(tag))) {
            return Ok(found);
        }
        // Equal tags may straddle a block boundary: start at the last block whose first tag is below this one.
        let mut block = self.fences.partition_point(|&fence| fence < tag).saturating_sub(1);
        let mut bytes = [0u8; BLOCK_SLOTS * SLOT_BYTES];
        while block < self.fences.len() && self.fences[block] <= tag {
            let first = block * BLOCK_SLOTS;
            let count = (self.len - first).min(BLOCK_SLOTS);
            let bytes = &mut bytes[..count * SLOT_BYTES];
            let mut file = &self.file;
            file.seek(SeekFrom::Start((first * SLOT_BYTES) as u64))?;
            file.read_exact(bytes)?;
            for chunk in bytes.chunks_exact(SLOT_BYTES) {
                let mut slot = [0u8; SLOT_BYTES];
                slot.copy_from_slice(chunk);
                let (slot_tag, offset) = ReplayIndex::split(u64::from_le_bytes(slot));
                match slot_tag.cmp(&tag) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => found.push(self.base + i64::from(offset)),
                    std::cmp::Ordering::Greater => return Ok(found),
                }
            }
            block += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(tag: u32, offset: u32) -> u64 {
        (u64::from(tag) << 32) | u64::from(offset)
    }

    #[test]
    fn finds_every_row_of_a_tag_across_block_boundaries_and_nothing_else() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        // Tag 7 fills more than two blocks and starts mid-block; other tags around it.
        let mut slots: Vec<u64> = (0..300).map(|i| slot(3, i + 1)).collect();
        slots.extend((0..1200).map(|i| slot(7, 1000 + i)));
        slots.extend((0..700u32).map(|i| slot(9 + i, 5000 + i)));
        slots.sort_unstable();
        let run = FrozenRun::write(dir.path(), &slots, 100)?;
        assert_eq!(run.len(), 2200);
        assert_eq!(run.last_seq(), 100 + 5699);

        let sevens = run.candidates(7)?;
        assert_eq!(sevens, (0..1200).map(|i| 100 + 1000 + i).collect::<Vec<i64>>());
        assert_eq!(run.candidates(3)?.len(), 300);
        assert_eq!(run.candidates(708)?, vec![100 + 5699]);
        // Absent tags: below, between and above everything stored.
        let mut unfiltered = run;
        for _ in 0..2 {
            for absent in [0, 5, 8, 709, u32::MAX] {
                assert!(unfiltered.candidates(absent)?.is_empty(), "tag {absent}");
            }
            // Without its filter the run answers the same from the file alone.
            assert_eq!(unfiltered.candidates(7)?.len(), 1200);
            unfiltered.filter = None;
        }
        Ok(())
    }
}
