//! Storage for the identity graph's large arrays that grows without moving what it holds.
//!
//! A `Vec` grows by doubling: it copies every item into a block twice the size and gives the old block back to
//! the allocator. Restore sizes the graph's arrays exactly, so at a restart the first new identifier doubled
//! all of them at once: ~21 MB more resident for a graph of 309k identifiers (118k profiles), which a server
//! kept from then on (BENCHMARKS.md, memory). In pages, growth takes one more page and copies nothing.

use std::ops::{Index, IndexMut};

const PAGE_BITS: u32 = 12;
/// Items a page holds: 128 KiB of 32-byte nodes.
const PAGE: usize = 1 << PAGE_BITS;

/// A vector kept in pages of [`PAGE`] items.
#[derive(Debug, Clone)]
pub(crate) struct Paged<T> {
    pages: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Paged<T> {
    fn default() -> Self {
        Self { pages: Vec::new(), len: 0 }
    }
}

impl<T> Paged<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, item: T) {
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => page.push(item),
            _ => {
                let mut page = Vec::with_capacity(PAGE);
                page.push(item);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.pages.get(index >> PAGE_BITS)?.get(index & (PAGE - 1))
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.pages.get_mut(index >> PAGE_BITS)?.get_mut(index & (PAGE - 1))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.pages.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pages.iter_mut().flatten()
    }
}

impl<T: Clone> Paged<T> {
    /// Grows to `len` items, the new ones copies of `value` (never shrinks).
    pub(crate) fn grow_to(&mut self, len: usize, value: T) {
        while self.len < len {
            self.push(value.clone());
        }
    }
}

impl<T> Index<usize> for Paged<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        &self.pages[index >> PAGE_BITS][index & (PAGE - 1)]
    }
}

impl<T> IndexMut<usize> for Paged<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.pages[index >> PAGE_BITS][index & (PAGE - 1)]
    }
}

/// Bytes a string page holds; a longer string gets a page of its own.
const TEXT_PAGE: usize = 1 << 16;

/// Strings in pages: each lies within one page and is found by one `u32`, its page times [`TEXT_PAGE`] plus
/// its offset in the page (the same 4 GiB of text a `u32` offset into one string addressed).
#[derive(Debug, Clone, Default)]
pub(crate) struct TextPages {
    pages: Vec<String>,
}

impl TextPages {
    /// Stores `text`; returns where it starts.
    pub(crate) fn push(&mut self, text: &str) -> u32 {
        let fits = self.pages.last().is_some_and(|page| page.len() < TEXT_PAGE && page.len() + text.len() <= TEXT_PAGE);
        if !fits {
            self.pages.push(String::with_capacity(TEXT_PAGE.max(text.len())));
        }
        let page_number = self.pages.len() - 1;
        let page = &mut self.pages[page_number];
        let start = page_number * TEXT_PAGE + page.len();
        debug_assert!(u32::try_from(start).is_ok(), "more than 4 GiB of identifier text");
        page.push_str(text);
        start as u32
    }

    pub(crate) fn get(&self, start: u32, len: u32) -> &str {
        let (page, offset) = (start as usize / TEXT_PAGE, start as usize % TEXT_PAGE);
        &self.pages[page][offset..offset + len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_every_item_in_place_as_they_grow() {
        let mut paged = Paged::default();
        for i in 0..3 * PAGE + 5 {
            paged.push(i);
        }
        let first_page = &paged[0] as *const usize;
        paged.push(0);
        assert_eq!(first_page, &paged[0] as *const usize, "growth moved the first page");
        assert_eq!(paged.len(), 3 * PAGE + 6);
        assert_eq!(paged[PAGE + 7], PAGE + 7);
        assert_eq!(paged.get(3 * PAGE + 6), None);
        paged[2 * PAGE] = 1;
        assert_eq!(paged.iter().filter(|&&i| i == 1).count(), 2);
        paged.grow_to(4 * PAGE + 1, 9);
        assert_eq!((paged.len(), paged[4 * PAGE]), (4 * PAGE + 1, 9));
    }

    #[test]
    fn texts_never_straddle_pages_and_long_ones_get_their_own() {
        let mut texts = TextPages::default();
        let short = "x".repeat(1000);
        let long = "y".repeat(TEXT_PAGE + 10);
        let mut stored = Vec::new();
        for i in 0..200 {
            let text = if i == 100 { long.clone() } else { format!("{i}{short}") };
            stored.push((texts.push(&text), text));
        }
        stored.push((texts.push(""), String::new()));
        for (start, text) in &stored {
            assert_eq!(texts.get(*start, text.len() as u32), text);
        }
    }
}
