//! Profile-state timestamps in exactly chrono's serde form (RFC 3339, UTC as `Z`, fractional seconds only as
//! many as needed: none, 3, 6 or 9 digits), written and read without chrono's general formatter and parser.
//!
//! A state holds a timestamp per trait, order, viewed product and consent decision, and the writer encodes the
//! states of every profile a commit touches: chrono's `Display`-based formatting was ~4% of the writer thread and
//! its parser ~2.5% (perf, time-order `bench ingest`, BENCHMARKS.md 2026-12-05). Anything outside the common
//! shape (years beyond 0–9999, leap seconds, other offsets, lower-case `z`) goes through chrono as before.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use serde::{Deserializer, Serialize, Serializer, de::Visitor};

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 30];
    match format(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => at.serialize(serializer),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(TimestampVisitor)
}

/// Reads the text where the deserializer holds it: through a `Cow<str>`, serde copied every timestamp into a
/// `String` of its own first.
struct TimestampVisitor;

impl<'de> Visitor<'de> for TimestampVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).map_err(E::custom)
    }
}

/// For `Option<DateTime<Utc>>` fields (pair with `#[serde(default)]`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an RFC 3339 timestamp or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            super::deserialize(deserializer).map(Some)
        }
    }
}

fn format<'b>(at: &DateTime<Utc>, buffer: &'b mut [u8; 30]) -> Option<&'b str> {
    let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
    let nanos = at.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut value = value;
        for i in (0..digits).rev() {
            buffer[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second(), 2);
    let mut end = 19;
    if nanos != 0 {
        let (value, digits) = if nanos.is_multiple_of(1_000_000) {
            (nanos / 1_000_000, 3)
        } else if nanos.is_multiple_of(1_000) {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        put(20, value, digits);
        buffer[19] = b'.';
        end = 20 + digits;
    }
    for (i, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buffer[i] = separator;
    }
    buffer[end] = b'Z';
    std::str::from_utf8(&buffer[..=end]).ok()
}

fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_common(text.as_bytes()) {
        Some(at) => Ok(at),
        None => Ok(text.parse::<DateTime<FixedOffset>>()?.with_timezone(&Utc)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, or `None` for chrono to judge.
fn parse_common(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let number = |from: usize, digits: usize| -> Option<u32> {
        bytes
            .get(from..from + digits)?
            .iter()
            .try_fold(0u32, |value, &byte| byte.is_ascii_digit().then(|| value * 10 + u32::from(byte - b'0')))
    };
    for (i, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        if bytes.get(i) != Some(&separator) {
            return None;
        }
    }
    let mut nanos = 0;
    let mut end = 19;
    if bytes.get(19) == Some(&b'.') {
        let digits = bytes[20..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        nanos = number(20, digits)? * 10u32.pow(9 - digits as u32);
        end = 20 + digits;
    }
    if bytes.len() != end + 1 || bytes[end] != b'Z' {
        return None;
    }
    let year = i32::try_from(number(0, 4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, number(5, 2)?, number(8, 2)?)?;
    let second = number(17, 2)?;
    // A leap second (:60) is left to chrono.
    if second > 59 {
        return None;
    }
    Some(date.and_hms_nano_opt(number(11, 2)?, number(14, 2)?, second, nanos)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Fast(#[serde(with = "super")] DateTime<Utc>);

    fn chrono_text(at: &DateTime<Utc>) -> String {
        serde_json::to_string(at).unwrap_or_default()
    }

    proptest! {
        #[test]
        fn writes_what_chrono_writes_and_reads_it_back(
            seconds in -62_167_219_200i64..253_402_300_800,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|ms| ms * 1_000_000),
                                 (0u32..1_000_000).prop_map(|us| us * 1000), 0u32..1_000_000_000],
        ) {
            let at = DateTime::from_timestamp(seconds, nanos).unwrap_or_default();
            let text = serde_json::to_string(&Fast(at)).unwrap_or_default();
            prop_assert_eq!(&text, &chrono_text(&at));
            let read: Fast = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(read.0, at);
        }
    }

    #[test]
    fn reads_what_only_chrono_reads_and_refuses_what_chrono_refuses() {
        for text in [
            "2026-12-05T16:00:00+09:00",
            "2026-12-05T16:00:00.5-03:30",
            "2026-12-05t16:00:00z",
            "2026-12-05T16:00:00.1234567891Z",
            "+12026-12-05T16:00:00Z",
            "2026-12-05 16:00:00Z",
        ] {
            let quoted = format!("\"{text}\"");
            let fast = serde_json::from_str::<Fast>(&quoted).map(|f| f.0).map_err(|_| ());
            let chrono = serde_json::from_str::<DateTime<Utc>>(&quoted).map_err(|_| ());
            assert_eq!(fast, chrono, "{text}");
        }
        for bad in ["2026-02-30T00:00:00Z", "2026-12-05T24:00:00Z", "2026-12-05T16:00:00.Z", "2026-12-05T16:00Z", ""] {
            let quoted = format!("\"{bad}\"");
            assert!(serde_json::from_str::<Fast>(&quoted).is_err(), "{bad}");
        }
        let fast = serde_json::from_str::<Fast>("\"2026-12-05T16:00:00.25Z\"").map(|f| f.0).ok();
        assert_eq!(fast, DateTime::from_timestamp(1_796_486_400, 250_000_000));
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Maybe {
        #[serde(default, with = "super::option")]
        at: Option<DateTime<Utc>>,
    }

    #[test]
    fn an_optional_timestamp_reads_null_absent_and_escaped_text() -> Result<(), serde_json::Error> {
        let at = DateTime::from_timestamp(1_796_486_400, 250_000_000);
        assert_eq!(serde_json::from_str::<Maybe>(r#"{"at":null}"#)?, Maybe { at: None });
        assert_eq!(serde_json::from_str::<Maybe>("{}")?, Maybe { at: None });
        assert_eq!(serde_json::from_str::<Maybe>(r#"{"at":"2026-12-05T16:00:00.25Z"}"#)?, Maybe { at });
        // An escaped character makes serde_json hand over its own copy, not a slice of the input.
        assert_eq!(serde_json::from_str::<Maybe>(r#"{"at":"2026-12-05T16:00:00.25\u005a"}"#)?, Maybe { at });
        assert_eq!(serde_json::to_string(&Maybe { at })?, r#"{"at":"2026-12-05T16:00:00.250Z"}"#);
        assert!(serde_json::from_str::<Maybe>(r#"{"at":5}"#).is_err());
        // Read from a `Value` (a borrowed deserializer would not show a `visit_string` gap).
        let value = serde_json::json!({"at": "2026-12-05T16:00:00.25Z"});
        assert_eq!(serde_json::from_value::<Maybe>(value)?, Maybe { at });
        Ok(())
    }
}
