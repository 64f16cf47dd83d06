//! How event bodies are stored: the message JSON, LZ4-compressed behind a one-byte format tag, so the format
//! can change without a migration. Compression runs on the caller's thread (see `kizuna-pipeline`), never on
//! the single writer, and it halves the bytes the writer, the WAL and the checkpointer move.

use crate::StoreError;

const LZ4: u8 = 1;

/// Encodes a message's JSON for storage.
pub fn encode_event_body(json: &[u8]) -> Vec<u8> {
    let compressed = lz4_flex::compress_prepend_size(json);
    let mut out = Vec::with_capacity(compressed.len() + 1);
    out.push(LZ4);
    out.extend_from_slice(&compressed);
    out
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
}
