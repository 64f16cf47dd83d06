//! How event bodies are stored: the message JSON, compressed behind a one-byte format tag, so the format can
//! change without a migration. Compression runs on the caller's thread (see `kizuna-pipeline`), never on the
//! single writer.
//!
//! Two formats. LZ4 ([`LZ4`]) needs nothing but the body; it only shrinks a ~1 KB Segment message by about a
//! fifth, because a small message repeats little within itself. Zstandard against a dictionary ([`ZSTD_DICT`])
//! trained on the store's own first events shrinks the same messages 3.5 times more (simulated store: 1,003
//! bytes of JSON, 752 stored with LZ4, 217 with a 64 KiB dictionary trained on what many people's messages
//! share, see `kizuna-pipeline`'s `bodies.rs`): the keys, the library and user-agent strings and the context
//! every message repeats are in the dictionary. Events are most of the bytes a brand stores, and
//! every byte of them passes through the WAL and the checkpointer once more.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};
use sha2::{Digest, Sha256};

use crate::StoreError;

const LZ4: u8 = 1;
const ZSTD_DICT: u8 = 2;
/// The tag, then the uncompressed length (u32, little endian), as `lz4_flex::compress_prepend_size` wrote it.
const HEADER: usize = 1 + 4;
/// The tag, the dictionary's id (u64, little endian), the uncompressed length (u32, little endian).
const DICT_HEADER: usize = 1 + 8 + 4;
/// Scratch space kept between bodies: enough for any event the HTTP limits let in; a bigger one (an import) is
/// not held on to.
const SCRATCH_KEPT: usize = 64 * 1024;
/// Level 1: at these sizes the dictionary does the work; higher levels gained 5% of size for 20% more time.
const ZSTD_LEVEL: i32 = 1;
/// Bodies up to this size are compressed against a dictionary (any HTTP message is far smaller; an import's
/// order with thousands of lines is not): a decoder allocates what a header says only up to it.
const MAX_DICTIONARY_BODY: usize = 16 * 1024 * 1024;
/// The dictionary's size. 16 KiB left messages ~10% bigger; 112 KiB gained nothing over 64.
pub const DICTIONARY_BYTES: usize = 64 * 1024;

/// Every dictionary this process has met, by id, whichever store it came from: an id is a hash of the
/// dictionary's bytes, so the same id is the same dictionary in every store.
static DICTIONARIES: LazyLock<RwLock<HashMap<u64, Arc<[u8]>>>> = LazyLock::new(Default::default);

thread_local! {
    /// Each thread's compression table and scratch output, kept between events: making them afresh allocated and
    /// zeroed about 9 KiB per event, and the result was copied twice more before it was stored.
    static COMPRESSOR: RefCell<(CompressTable, Vec<u8>)> = RefCell::new((CompressTable::default(), Vec::new()));
    /// Each thread's Zstandard contexts with the dictionary loaded (zstd digests a loaded dictionary once, on
    /// the first body, and reuses it), for the last dictionary the thread used.
    static ZSTD_ENCODER: RefCell<Option<(u64, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static ZSTD_DECODER: RefCell<Option<(u64, zstd::bulk::Decompressor<'static>)>> = const { RefCell::new(None) };
}

/// The id of a dictionary: the first eight bytes of its SHA-256, never 0.
pub fn dictionary_id(dictionary: &[u8]) -> u64 {
    let digest = Sha256::digest(dictionary);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first).max(1)
}

/// Makes a dictionary available to [`encode_event_body_with`] and [`decode_event_body`]; returns its id.
pub fn register_dictionary(dictionary: &[u8]) -> u64 {
    let id = dictionary_id(dictionary);
    let mut known = DICTIONARIES.write().unwrap_or_else(PoisonError::into_inner);
    known.entry(id).or_insert_with(|| Arc::from(dictionary));
    id
}

fn dictionary(id: u64) -> Option<Arc<[u8]>> {
    DICTIONARIES.read().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
}

/// Trains a dictionary on sample bodies (message JSON).
pub fn train_dictionary(samples: &[Vec<u8>]) -> Result<Vec<u8>, StoreError> {
    zstd::dict::from_samples(samples, DICTIONARY_BYTES)
        .map_err(|e| StoreError::Invalid(format!("could not train a body dictionary: {e}")))
}

/// Encodes a message's JSON for storage with LZ4.
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

/// Encodes a message's JSON for storage, against the dictionary `dictionary` when there is one (a registered
/// id), else with LZ4.
pub fn encode_event_body_with(json: &[u8], dictionary: Option<u64>) -> Vec<u8> {
    let Some(id) = dictionary else { return encode_event_body(json) };
    if json.len() > MAX_DICTIONARY_BODY {
        return encode_event_body(json);
    }
    let length = json.len() as u32;
    ZSTD_ENCODER
        .with_borrow_mut(|slot| {
            let compressor = zstd_encoder(slot, id)?;
            let mut out = Vec::with_capacity(DICT_HEADER + zstd::zstd_safe::compress_bound(json.len()));
            out.push(ZSTD_DICT);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
            // Written after the header (a plain `Vec` would be written from its start).
            let mut after_header = std::io::Cursor::new(out);
            after_header.set_position(DICT_HEADER as u64);
            let written = compressor.compress_to_buffer(json, &mut after_header).ok()?;
            let mut out = after_header.into_inner();
            out.truncate(DICT_HEADER + written);
            Some(out)
        })
        // Only an unregistered id or a failing context get here; LZ4 needs neither.
        .unwrap_or_else(|| encode_event_body(json))
}

fn zstd_encoder<'slot>(
    slot: &'slot mut Option<(u64, zstd::bulk::Compressor<'static>)>,
    id: u64,
) -> Option<&'slot mut zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    if slot.as_ref().is_none_or(|(current, _)| *current != id) {
        let bytes = dictionary(id)?;
        let mut compressor = zstd::bulk::Compressor::with_dictionary(ZSTD_LEVEL, &bytes).ok()?;
        // The header holds the length and the dictionary. The frame's checksum stays (4 bytes): SQLite keeps no
        // checksum of its pages, so it is what turns a damaged body into an error instead of different JSON.
        for parameter in
            [CParameter::ChecksumFlag(true), CParameter::ContentSizeFlag(false), CParameter::DictIdFlag(false)]
        {
            compressor.set_parameter(parameter).ok()?;
        }
        *slot = Some((id, compressor));
    }
    slot.as_mut().map(|(_, compressor)| compressor)
}

/// Decodes a stored body back to JSON bytes.
pub fn decode_event_body(stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    match stored.split_first() {
        Some((&LZ4, rest)) => lz4_flex::decompress_size_prepended(rest)
            .map_err(|e| StoreError::Invalid(format!("corrupt stored event body: {e}"))),
        Some((&ZSTD_DICT, rest)) => decode_zstd(rest),
        Some((tag, _)) => Err(StoreError::Invalid(format!("unknown event body format {tag}"))),
        None => Err(StoreError::Invalid("empty stored event body".into())),
    }
}

fn decode_zstd(rest: &[u8]) -> Result<Vec<u8>, StoreError> {
    let corrupt = || StoreError::Invalid("corrupt stored event body: short header".into());
    let id = u64::from_le_bytes(rest.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?);
    let length = u32::from_le_bytes(rest.get(8..12).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?) as usize;
    if length > MAX_DICTIONARY_BODY {
        // Never written (bigger bodies go out as LZ4): a damaged header, not trusted with memory.
        return Err(StoreError::Invalid(format!("corrupt stored event body: a length of {length} bytes")));
    }
    let frame = &rest[12..];
    ZSTD_DECODER.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(current, _)| *current != id) {
            let bytes = dictionary(id).ok_or(StoreError::MissingDictionary(id))?;
            let decompressor = zstd::bulk::Decompressor::with_dictionary(&bytes)?;
            *slot = Some((id, decompressor));
        }
        let Some((_, decompressor)) = slot.as_mut() else { unreachable!("the slot was filled above") };
        let mut out = Vec::with_capacity(length);
        decompressor
            .decompress_to_buffer(frame, &mut out)
            .map_err(|e| StoreError::Invalid(format!("corrupt stored event body: {e}")))?;
        if out.len() != length {
            return Err(StoreError::Invalid(format!(
                "corrupt stored event body: {} bytes where its header says {length}",
                out.len()
            )));
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dictionary a stored body names, if it names one.
    fn body_dictionary(stored: &[u8]) -> Option<u64> {
        match stored.split_first() {
            Some((&ZSTD_DICT, rest)) => rest.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes),
            _ => None,
        }
    }

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

    /// Messages shaped like a storefront's, each different in its ids, times and products.
    fn storefront_message(i: usize) -> Vec<u8> {
        let product = i * 7919 % 503;
        format!(
            r#"{{"anonymousId":"{:08x}-51c3-4d7a-b400-{:012x}","context":{{"ip":"203.0.113.{}","library":{{"name":"analytics.js","version":"next-1.70.0"}},"locale":"ja-JP","timezone":"Asia/Tokyo","userAgent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}},"event":"{}","messageId":"sim-7-{i}-{}","originalTimestamp":"2026-07-{:02}T01:{:02}:43.194Z","properties":{{"product_id":"prod_{product:05}","sku":"SKU-{product:05}","name":"Product {product}","price":{}.5,"currency":"USD"}},"type":"track"}}"#,
            i * 2_654_435_761 % (1 << 32),
            i * 40_503,
            i % 250,
            ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"][i % 4],
            i % 97,
            1 + i % 28,
            i % 60,
            10 + product % 90,
        )
        .into_bytes()
    }

    #[test]
    fn a_trained_dictionary_shrinks_bodies_several_times_over_lz4_and_they_round_trip() {
        let samples: Vec<Vec<u8>> = (0..2_000).map(storefront_message).collect();
        let dictionary = train_dictionary(&samples).expect("train");
        assert!(dictionary.len() <= DICTIONARY_BYTES);
        let id = register_dictionary(&dictionary);
        assert_eq!(id, dictionary_id(&dictionary));
        assert_eq!(register_dictionary(&dictionary), id, "registering again changes nothing");

        let (mut lz4_bytes, mut zstd_bytes) = (0, 0);
        for message in (5_000..5_200).map(storefront_message) {
            let plain = encode_event_body(&message);
            let stored = encode_event_body_with(&message, Some(id));
            assert_eq!(stored[0], ZSTD_DICT);
            assert_eq!(body_dictionary(&stored), Some(id));
            assert_eq!(body_dictionary(&plain), None);
            assert_eq!(decode_event_body(&stored).expect("decode"), message);
            lz4_bytes += plain.len();
            zstd_bytes += stored.len();
        }
        assert!(zstd_bytes * 2 < lz4_bytes, "{zstd_bytes} bytes with the dictionary against {lz4_bytes} with LZ4");
        // No dictionary, or one never registered: LZ4, which needs none.
        let message = storefront_message(1);
        assert_eq!(encode_event_body_with(&message, None), encode_event_body(&message));
        assert_eq!(encode_event_body_with(&message, Some(7)), encode_event_body(&message));
    }

    #[test]
    fn a_body_whose_dictionary_is_missing_or_damaged_is_an_error() {
        let mut stored = vec![ZSTD_DICT];
        stored.extend_from_slice(&0x5eed_u64.to_le_bytes());
        stored.extend_from_slice(&10u32.to_le_bytes());
        stored.extend_from_slice(b"not a zstd frame");
        assert!(matches!(decode_event_body(&stored), Err(StoreError::MissingDictionary(0x5eed))));
        assert!(decode_event_body(&stored[..6]).is_err(), "a short header");

        let samples: Vec<Vec<u8>> = (0..2_000).map(|i| storefront_message(i + 10_000)).collect();
        let id = register_dictionary(&train_dictionary(&samples).expect("train"));
        let good = encode_event_body_with(&storefront_message(3), Some(id));
        assert!(decode_event_body(&good[..good.len() - 3]).is_err(), "a truncated frame");
        let mut wrong_length = good.clone();
        wrong_length[9] ^= 1;
        assert!(decode_event_body(&wrong_length).is_err(), "a length the frame does not have");
        let mut huge_length = good.clone();
        huge_length[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_event_body(&huge_length).is_err(), "a length no body was written with, not allocated");
        let mut flipped = good.clone();
        let middle = DICT_HEADER + (flipped.len() - DICT_HEADER) / 2;
        flipped[middle] ^= 0x10;
        assert!(decode_event_body(&flipped).is_err(), "the frame's checksum catches a damaged byte");
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
