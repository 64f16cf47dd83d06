//! Physical line numbers for CSV records.
//!
//! `csv::Position::line()` miscounts with CRLF line endings and does not count skipped blank lines, and a
//! record's `Position::byte()` is where the parser *started* looking for it (before any blank lines). So the
//! input is read through [`LineTracker`], which remembers where each line break is, and a record's line is
//! 1 + the number of line breaks before its first byte.

use std::collections::VecDeque;
use std::io::{self, Read};

/// A reader that notes every line break passing through it.
#[derive(Debug)]
pub(crate) struct LineTracker<R> {
    inner: R,
    /// Byte offset of the next byte to be read.
    offset: u64,
    /// Start offset of the current run of `\r`/`\n` bytes, if the last byte was one.
    run_start: Option<u64>,
    /// A `\r` not yet known to be part of `\r\n`.
    pending_cr: bool,
    /// For each line break read and not yet counted: the start of the run of line-break bytes it belongs to.
    breaks: VecDeque<u64>,
    /// Line breaks already counted.
    counted: u64,
}

impl<R> LineTracker<R> {
    pub(crate) fn new(inner: R) -> Self {
        LineTracker { inner, offset: 0, run_start: None, pending_cr: false, breaks: VecDeque::new(), counted: 0 }
    }

    /// Line (1-based) of a record whose parse started at byte `offset`: line breaks right at `offset` (blank lines
    /// the parser skipped, the `\n` of a `\r\n`) come before the record, so they count too. Offsets must not
    /// decrease between calls.
    pub(crate) fn line_at(&mut self, offset: u64) -> u64 {
        while self.breaks.front().is_some_and(|&start| start <= offset) {
            self.breaks.pop_front();
            self.counted += 1;
        }
        self.counted + 1
    }

    fn observe(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' | b'\r' => {
                    let start = *self.run_start.get_or_insert(self.offset);
                    if b == b'\n' {
                        self.pending_cr = false;
                        self.breaks.push_back(start);
                    } else {
                        if self.pending_cr {
                            self.breaks.push_back(start); // "\r\r": the first was a line break of its own
                        }
                        self.pending_cr = true;
                    }
                }
                _ => {
                    if self.pending_cr {
                        if let Some(start) = self.run_start {
                            self.breaks.push_back(start); // a lone "\r" (classic Mac line ending)
                        }
                        self.pending_cr = false;
                    }
                    self.run_start = None;
                }
            }
            self.offset += 1;
        }
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(read) = buf.get(..n) {
            self.observe(read);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &str) -> Vec<u64> {
        let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(LineTracker::new(input.as_bytes()));
        let _ = csv.byte_headers().expect("header");
        let mut rec = csv::ByteRecord::new();
        let mut out = Vec::new();
        while csv.read_byte_record(&mut rec).expect("record") {
            let byte = rec.position().map_or(0, csv::Position::byte);
            out.push(csv.get_mut().line_at(byte));
        }
        out
    }

    #[test]
    fn counts_lines_like_a_spreadsheet() {
        assert_eq!(lines_of("a,b\n1,2\n,\n\n3,4\n"), vec![2, 3, 5]);
        assert_eq!(lines_of("a,b\r\n1,2\r\n,\r\n\r\n3,4\r\n"), vec![2, 3, 5]);
        assert_eq!(lines_of("\u{feff}a,b\r\n1,2\r\n\r\n3,4"), vec![2, 4]);
        assert_eq!(lines_of("a,b\r1,2\r\r3,4\r"), vec![2, 4]);
        assert_eq!(lines_of("a,b\n\"x\n\ny\",2\n3,4\n\"\n\",5\n6,7\n"), vec![2, 5, 6, 8]);
        assert_eq!(lines_of("a,b\r\n\"x\r\ny\",2\r\n3,4\r\n"), vec![2, 4]);
    }

    #[test]
    fn counts_across_small_reads() {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((b, rest)), Some(slot)) => {
                        *slot = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let input = b"a,b\r\n1,2\r\n\r\n\"q\r\nq\",3\r\n4,5\r\n";
        let mut csv = csv::ReaderBuilder::new().from_reader(LineTracker::new(OneByte(input)));
        let _ = csv.byte_headers().expect("header");
        let mut rec = csv::ByteRecord::new();
        let mut out = Vec::new();
        while csv.read_byte_record(&mut rec).expect("record") {
            let byte = rec.position().map_or(0, csv::Position::byte);
            out.push(csv.get_mut().line_at(byte));
        }
        assert_eq!(out, vec![2, 4, 6]);
    }
}
