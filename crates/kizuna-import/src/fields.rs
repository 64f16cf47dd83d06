//! Column lookup and value parsing shared by every format. Parse failures are plain `String` reasons
//! that already name the column; the caller attaches the line number.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use csv::StringRecord;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A per-field failure reason (the column name is already part of it).
pub(crate) type FieldResult<T> = Result<T, String>;

/// The header row: original names for messages, normalised names for lookup.
#[derive(Debug)]
pub(crate) struct Header {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

/// Lower-case, BOM-free, whitespace-collapsed form of a column name.
pub(crate) fn normalize(name: &str) -> String {
    name.trim_start_matches('\u{feff}').split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl Header {
    /// Builds the lookup; a column name that appears twice is an error (which one would we read?).
    pub(crate) fn new(record: &StringRecord) -> FieldResult<Self> {
        let mut names = Vec::with_capacity(record.len());
        let mut index = HashMap::new();
        for (i, raw) in record.iter().enumerate() {
            let original = raw.trim_start_matches('\u{feff}').trim().to_owned();
            let key = normalize(&original);
            if !key.is_empty() && index.insert(key, i).is_some() {
                return Err(format!("column '{original}' appears more than once in the header"));
            }
            names.push(original);
        }
        Ok(Header { names, index })
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub(crate) fn idx(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The column's name as written in the file, or `key` when the column is absent.
    pub(crate) fn label<'a>(&'a self, key: &'a str) -> &'a str {
        match self.idx(key).and_then(|i| self.names.get(i)) {
            Some(name) => name,
            None => key,
        }
    }

    /// Original (trimmed) names, in file order, skipping blank ones.
    pub(crate) fn names(&self) -> impl Iterator<Item = (usize, &str)> {
        self.names.iter().enumerate().filter(|(_, n)| !n.is_empty()).map(|(i, n)| (i, n.as_str()))
    }

    /// Name of the column at `index` (for CSV-level errors).
    pub(crate) fn name_at(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(String::as_str)
    }
}

/// One non-blank CSV record and the physical line it starts on.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub line: u64,
    pub rec: StringRecord,
    /// Why the row cannot be trusted (e.g. invalid UTF-8); such a row still groups by its key column.
    pub problem: Option<String>,
}

impl Row {
    /// Whether every field is empty or whitespace (spreadsheets leave such rows behind).
    pub(crate) fn is_blank(&self) -> bool {
        self.rec.iter().all(|f| f.trim().is_empty())
    }
}

/// A row seen through its header.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub header: &'a Header,
    pub row: &'a Row,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(header: &'a Header, row: &'a Row) -> Self {
        Fields { header, row }
    }

    /// Trimmed value of a column; "" when the column is absent or the row is short.
    pub(crate) fn get(&self, key: &str) -> &'a str {
        self.header.idx(key).and_then(|i| self.row.rec.get(i)).map(str::trim).unwrap_or("")
    }

    /// Value at a raw column index (for pass-through columns).
    pub(crate) fn at(&self, index: usize) -> &'a str {
        self.row.rec.get(index).map(str::trim).unwrap_or("")
    }

    pub(crate) fn label(&self, key: &'a str) -> &'a str {
        self.header.label(key)
    }

    /// Non-empty value or None.
    pub(crate) fn opt(&self, key: &str) -> Option<&'a str> {
        Some(self.get(key)).filter(|v| !v.is_empty())
    }

    /// First non-empty value among alternative column names (newer and older export headers).
    pub(crate) fn first_of(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|k| self.opt(k))
    }

    /// The label of the first of `keys` that exists in the header (for error messages).
    pub(crate) fn label_of(&self, keys: &[&'a str]) -> &'a str {
        keys.iter().find(|k| self.header.has(k)).map_or_else(|| keys.first().copied().unwrap_or(""), |k| self.label(k))
    }

    pub(crate) fn money(&self, key: &'a str) -> FieldResult<Option<f64>> {
        parse_money(self.label(key), self.get(key))
    }

    pub(crate) fn timestamp(&self, key: &'a str) -> FieldResult<Option<DateTime<Utc>>> {
        let v = self.get(key);
        if v.is_empty() { Ok(None) } else { parse_timestamp(self.label(key), v).map(Some) }
    }

    pub(crate) fn email(&self, key: &'a str) -> FieldResult<Option<String>> {
        parse_email(self.label(key), self.get(key))
    }
}

/// Removes the apostrophe Shopify puts in front of long numbers (ids, phones, zips) so spreadsheets keep them as text.
pub(crate) fn strip_apostrophe(v: &str) -> &str {
    v.strip_prefix('\'').map(str::trim).unwrap_or(v)
}

/// A non-negative amount of money; blank is None.
pub(crate) fn parse_money(label: &str, v: &str) -> FieldResult<Option<f64>> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
        Ok(n) if n.is_finite() => Err(format!("{label}: '{v}' must not be negative")),
        _ => Err(format!("{label}: '{v}' is not a number")),
    }
}

/// A strictly positive whole number.
pub(crate) fn parse_quantity(label: &str, v: &str) -> FieldResult<u64> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{label}: '{v}' is not a positive integer")),
    }
}

/// yes/no style flag; blank is None.
pub(crate) fn parse_bool(label: &str, v: &str) -> FieldResult<Option<bool>> {
    match v.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "yes" | "y" | "true" | "t" | "1" | "granted" => Ok(Some(true)),
        "no" | "n" | "false" | "f" | "0" | "denied" => Ok(Some(false)),
        _ => Err(format!("{label}: expected yes/no or true/false, got '{v}'")),
    }
}

/// Lower-cased email address; blank is None. Only the obvious mistakes are rejected.
pub(crate) fn parse_email(label: &str, v: &str) -> FieldResult<Option<String>> {
    if v.is_empty() {
        return Ok(None);
    }
    let ok = match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !v.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if ok { Ok(Some(v.to_lowercase())) } else { Err(format!("{label}: '{v}' is not an email address")) }
}

/// Accepts RFC 3339, Shopify's `2024-03-05 14:22:10 +0900`, naive date-times (taken as UTC) and bare dates
/// (midnight UTC).
pub(crate) fn parse_timestamp(label: &str, v: &str) -> FieldResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    const WITH_OFFSET: [&str; 4] =
        ["%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M %z"];
    for fmt in WITH_OFFSET {
        if let Ok(t) = DateTime::parse_from_str(v, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    const NAIVE: [&str; 4] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"];
    for fmt in NAIVE {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, fmt) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(Utc.from_utc_datetime(&t));
    }
    Err(format!("{label}: cannot parse '{v}' as a date"))
}

/// A calendar date (birthday), returned as `YYYY-MM-DD`.
pub(crate) fn parse_date(label: &str, v: &str) -> FieldResult<String> {
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| format!("{label}: cannot parse '{v}' as a date (expected YYYY-MM-DD)"))
}

/// RFC 3339 in UTC with a `Z`, fractional seconds only when present.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Rounds away float noise from sums and differences of money (0.1 + 0.2 → 0.3).
pub(crate) fn round_money(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Splits a list cell, trimming and dropping empty entries.
pub(crate) fn split_list(v: &str, sep: &str) -> Vec<String> {
    v.split(sep).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Inserts `value` as a JSON string when non-empty.
pub(crate) fn put_str(map: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        map.insert(key.to_owned(), Value::String(v.to_owned()));
    }
}

/// Key-sorted, whitespace-free JSON: the same value always gives the same text, whatever map order
/// serde_json was built with.
pub(crate) fn canonical_json(value: &Value) -> String {
    fn write(out: &mut String, value: &Value) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(v) = map.get(k) {
                        write(out, v);
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, v);
                }
                out.push(']');
            }
            other => {
                let _ = write!(out, "{other}");
            }
        }
    }
    let mut out = String::new();
    write(&mut out, value);
    out
}

/// First 16 hex digits of the SHA-256 of the value's canonical JSON.
pub(crate) fn short_hash(value: &Value) -> String {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_to_utc() {
        let t = |v| parse_timestamp("Created at", v).map(rfc3339);
        assert_eq!(t("2024-03-05 14:22:10 +0900"), Ok("2024-03-05T05:22:10Z".to_owned()));
        assert_eq!(t("2024-03-05 14:22:10 -0500"), Ok("2024-03-05T19:22:10Z".to_owned()));
        assert_eq!(t("2024-03-05T14:22:10+09:00"), Ok("2024-03-05T05:22:10Z".to_owned()));
        assert_eq!(t("2024-03-05T14:22:10.250Z"), Ok("2024-03-05T14:22:10.250Z".to_owned()));
        assert_eq!(t("2024-03-05 14:22:10"), Ok("2024-03-05T14:22:10Z".to_owned()));
        assert_eq!(t("2024-03-05"), Ok("2024-03-05T00:00:00Z".to_owned()));
        assert_eq!(t("2024-13-99"), Err("Created at: cannot parse '2024-13-99' as a date".to_owned()));
    }

    #[test]
    fn numbers_and_flags() {
        assert_eq!(parse_money("price", "19.99"), Ok(Some(19.99)));
        assert_eq!(parse_money("price", ""), Ok(None));
        assert_eq!(parse_money("price", "abc"), Err("price: 'abc' is not a number".to_owned()));
        assert_eq!(parse_money("price", "-1"), Err("price: '-1' must not be negative".to_owned()));
        assert_eq!(parse_money("price", "NaN"), Err("price: 'NaN' is not a number".to_owned()));
        assert_eq!(parse_quantity("quantity", "3"), Ok(3));
        assert!(parse_quantity("quantity", "0").is_err());
        assert!(parse_quantity("quantity", "1.5").is_err());
        assert_eq!(parse_bool("x", "Yes"), Ok(Some(true)));
        assert_eq!(parse_bool("x", "FALSE"), Ok(Some(false)));
        assert!(parse_bool("x", "maybe").is_err());
        assert_eq!(round_money(0.1 + 0.2), 0.3);
    }

    #[test]
    fn emails() {
        assert_eq!(parse_email("Email", ""), Ok(None));
        assert_eq!(parse_email("Email", "Ann@Example.COM"), Ok(Some("ann@example.com".to_owned())));
        assert!(parse_email("Email", "ann.example.com").is_err());
        assert!(parse_email("Email", "a@b@c").is_err());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a = serde_json::json!({"b": 1, "a": {"d": [1, "x"], "c": null}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#);
        assert_eq!(short_hash(&a).len(), 16);
    }
}
