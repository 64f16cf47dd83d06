//! How event bodies are stored: the message JSON, LZ4-compressed behind a one-byte format tag, so the format
//! can change without a migration. Compression runs on the caller's thread (see `kizuna-pipeline`), never on
//! the single writer, and it halves the bytes the writer, the WAL and the checkpointer move.

use std::cell::RefCell;

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};

use crate::StoreError;

const LZ4: u8 = 1;
/// The tag, then the uncompressed length (u32, little endian), as `lz4_flex::compress_prepend_size` wrote it.
const HEADER: usize = 1 + 4;
/// Scratch space kept between bodies: enough for any event the HTTP limits let in; a bigger one (an import) is
/// not held on to.
const SCRATCH_KEPT: usize = 64 * 1024;

thread_local! {
    /// Each thread's compression table and scratch output, kept between events: making them afresh allocated and
    /// zeroed about 9 KiB per event, and the result was copied twice more before it was stored.
    static COMPRESSOR: RefCell<(CompressTable, Vec<u8>)> = RefCell::new((CompressTable::default(), Vec::new()));
}

/// Encodes a message's JSON for storage.
pub fn encode_event_body(json: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|(table, scratch)| {
        // A body of 64 KiB or more (an import has no size limit) switches the table to 32-bit entries, which hash
        // differently; back to the small table for small bodies, so each body is encoded as it always was.
        if json.len() < usize::from(u16::MAX) && matches!(table, CompressTable::Large(_)) {
            *table = CompressTable::default();
        }
        scratch.resize(get_maximum_output_size(json.len()), 0);
        // The bound above is what the block format can grow to, so the block always fits.
        let compressed = compress_into_with_table(json, scratch, table)
            .unwrap_or_else(|_| unreachable!("an LZ4 block always fits in get_maximum_output_size of its input"));
        let mut out = Vec::with_capacity(HEADER + compressed);
        out.push(LZ4);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&scratch[..compressed]);
        if scratch.len() > SCRATCH_KEPT {
            *scratch = Vec::new();
        }
        out
    })
}

/// Decodes a stored body back to JSON bytes.
pub fn decode_event_body(stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    match stored.split_first() {
        Some((&LZ4, rest)) => lz4_flex::decompress_size_prepended(rest)
            .map_err(|e| StoreError::Invalid(format!("corrupt stored event body: {e}"))),
        Some((tag, _)) => Err(StoreError::Invalid(format!("unknown event body format {tag}"))),
        None => Err(StoreError::Invalid("empty stored event body".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_shrinks_json() {
        // An order with a few line items, shaped like what storefront libraries send.
        let item = r#"{"product_id":"prod_00042","sku":"SKU-00042","name":"Kumo Coffee Beans","category":"Coffee","brand":"Kumo Coffee","price":18,"quantity":1}"#;
        let json = format!(
            r#"{{"type":"track","event":"Order Completed","properties":{{"order_id":"o-1","currency":"USD","products":[{item},{item},{item}]}},"context":{{"library":{{"name":"analytics.js"}},"locale":"ja-JP","timezone":"Asia/Tokyo"}}}}"#
        );
        let json = json.as_bytes();
        let stored = encode_event_body(json);
        assert!(stored.len() < json.len());
        assert_eq!(decode_event_body(&stored).expect("decode"), json.to_vec());
        assert!(decode_event_body(&[9, 1, 2]).is_err());
        assert!(decode_event_body(&[]).is_err());
    }

    #[test]
    fn bodies_written_by_earlier_versions_still_decode() {
        // Stores written before the table was kept between events hold `compress_prepend_size`'s layout; the
        // new encoder must write exactly that layout, and both must decode.
        let json =
            br#"{"type":"identify","userId":"u-1","traits":{"email":"a@example.com","plan":"pro","plan2":"pro"}}"#;
        let mut earlier = vec![LZ4];
        earlier.extend_from_slice(&lz4_flex::compress_prepend_size(json));
        assert_eq!(encode_event_body(json), earlier);
        assert_eq!(decode_event_body(&earlier).expect("decode"), json.to_vec());
        // Long and short bodies in turn: the kept table starts clean, and the size it needs, for each input.
        let long = json.repeat(700); // past 64 KiB: the kept table grows to 32-bit entries
        let short = &json[..40];
        for input in [&long[..], short, &long[..], json] {
            let mut earlier = vec![LZ4];
            earlier.extend_from_slice(&lz4_flex::compress_prepend_size(input));
            assert_eq!(encode_event_body(input), earlier, "{} bytes", input.len());
            assert_eq!(decode_event_body(&earlier).expect("decode"), input.to_vec());
        }
    }
}
