//! Printing a [`Condition`] in the text syntax, canonically: `parse(&print(c)) == Ok(c)` for every tree whose
//! numbers are finite and whose dates lie in the years 0000–9999 (what RFC 3339 can write).
//!
//! Canonical choices: keywords in lower case, spans compact (`7d`), strings and values as JSON, `f64`s in
//! Rust's shortest round-trip form (`2`, `0.1`, `1e300`), dates as `YYYY-MM-DD` when at midnight UTC and as
//! RFC 3339 otherwise, "has done" events (`count … >= 1`) in the short form (`event "X" in last 7d`). An `And`
//! or `Or` of two or more is printed infix (parenthesised where nesting needs it), of zero or one as
//! `all()` / `all(x)` / `any()` / `any(x)`.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::Value;

use crate::ast::*;
use crate::parse::{is_ident_char, is_word_start};

/// The canonical one-line text of a definition.
pub fn print(condition: &Condition) -> String {
    let mut out = String::new();
    write_condition(condition, &mut out);
    out
}

/// Like [`print`], but a definition longer than `width` characters has its `and` / `or` chains broken over
/// lines, one operand a line, with parenthesised groups indented by four spaces. Parses back to the same tree.
pub fn print_pretty(condition: &Condition, width: usize) -> String {
    let mut out = String::new();
    write_pretty(condition, 0, width, &mut out);
    out
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_comparison(self, &mut out);
        f.write_str(&out)
    }
}

/// An `And` / `Or` printed infix (two or more operands).
fn is_chain(condition: &Condition) -> bool {
    matches!(condition, Condition::And(items) | Condition::Or(items) if items.len() >= 2)
}

fn write_condition(condition: &Condition, out: &mut String) {
    match condition {
        Condition::And(items) | Condition::Or(items) if items.len() >= 2 => {
            let is_and = matches!(condition, Condition::And(_));
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if is_and { " and " } else { " or " });
                }
                // Inside `or`, an `and` chain needs no parentheses (and binds tighter).
                let bare_ok = !is_and && matches!(item, Condition::And(_));
                write_operand(item, bare_ok, out);
            }
        }
        Condition::And(items) | Condition::Or(items) => {
            out.push_str(if matches!(condition, Condition::And(_)) { "all(" } else { "any(" });
            if let Some(item) = items.first() {
                write_condition(item, out);
            }
            out.push(')');
        }
        Condition::Not(inner) => {
            out.push_str("not ");
            write_operand(inner, false, out);
        }
        Condition::Attribute(a) => {
            out.push_str(&print_attribute_path(&a.path));
            out.push(' ');
            write_comparison(&a.comparison, out);
        }
        Condition::Event(e) => write_event(e, out),
        Condition::Sequence(s) => {
            out.push_str("did ");
            write_event_match(&s.first, out);
            out.push_str(" then not ");
            write_event_match(&s.then_not, out);
            out.push_str(&format!(" within {}", s.within));
            write_window(&s.window, out);
        }
        Condition::Consent(c) => {
            out.push_str(&format!("consent {} for {}", bare_or_quoted(&c.channel), bare_or_quoted(&c.purpose)));
        }
        Condition::HasIdentifier(kind) => out.push_str(&format!("has {}", bare_or_quoted(kind))),
        Condition::Near(n) => {
            out.push_str(&format!("near {}, {} within {} km", format_f64(n.lat), format_f64(n.lon), format_f64(n.km)))
        }
        Condition::InSegment(name) => out.push_str(&format!("in segment {}", quote(name))),
    }
}

fn write_operand(condition: &Condition, bare_ok: bool, out: &mut String) {
    if is_chain(condition) && !bare_ok {
        out.push('(');
        write_condition(condition, out);
        out.push(')');
    } else {
        write_condition(condition, out);
    }
}

fn write_pretty(condition: &Condition, indent: usize, width: usize, out: &mut String) {
    let flat = print(condition);
    if indent + flat.chars().count() <= width || !is_chain_or_not_chain(condition) {
        out.push_str(&flat);
        return;
    }
    let pad = " ".repeat(indent);
    match condition {
        Condition::And(items) | Condition::Or(items) => {
            let is_and = matches!(condition, Condition::And(_));
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                    out.push_str(&pad);
                    out.push_str(if is_and { "and " } else { "or " });
                }
                // An `and` inside `or` stays bare when it fits on the line, and is parenthesised when broken.
                let flat_item = print(item);
                if !is_and && matches!(item, Condition::And(_)) && indent + 4 + flat_item.chars().count() <= width {
                    out.push_str(&flat_item);
                } else {
                    write_pretty_operand(item, indent, width, out);
                }
            }
        }
        Condition::Not(inner) => {
            out.push_str("not ");
            write_pretty_operand(inner, indent, width, out);
        }
        _ => out.push_str(&flat),
    }
}

fn is_chain_or_not_chain(condition: &Condition) -> bool {
    match condition {
        Condition::Not(inner) => is_chain_or_not_chain(inner),
        other => is_chain(other),
    }
}

fn write_pretty_operand(condition: &Condition, indent: usize, width: usize, out: &mut String) {
    if is_chain(condition) {
        let flat = print(condition);
        if indent + flat.chars().count() + 2 <= width {
            out.push_str(&format!("({flat})"));
        } else {
            out.push_str("(\n");
            out.push_str(&" ".repeat(indent + 4));
            write_pretty(condition, indent + 4, width, out);
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            out.push(')');
        }
    } else {
        write_pretty(condition, indent, width, out);
    }
}

fn write_event(e: &EventCondition, out: &mut String) {
    let has_done = e.measure == Measure::Count && e.comparison == Comparison::Gte(1.0);
    if !has_done {
        match &e.measure {
            Measure::Count => out.push_str("count"),
            Measure::First => out.push_str("first"),
            Measure::Last => out.push_str("last"),
            Measure::Sum(p) => out.push_str(&format!("sum {}", print_property_path(p))),
            Measure::Avg(p) => out.push_str(&format!("avg {}", print_property_path(p))),
            Measure::Min(p) => out.push_str(&format!("min {}", print_property_path(p))),
            Measure::Max(p) => out.push_str(&format!("max {}", print_property_path(p))),
        }
        out.push_str(" of ");
    }
    out.push_str("event ");
    write_event_match(&e.matches, out);
    write_window(&e.window, out);
    if !has_done {
        out.push(' ');
        write_comparison(&e.comparison, out);
    }
}

fn write_event_match(m: &EventMatch, out: &mut String) {
    out.push_str(&quote(&m.name));
    for (i, filter) in m.filters.iter().enumerate() {
        out.push_str(if i == 0 { " where " } else { ", " });
        out.push_str(&print_property_path(&filter.path));
        out.push(' ');
        write_comparison(&filter.comparison, out);
    }
}

fn write_window(window: &Window, out: &mut String) {
    match window {
        Window::Ever => {}
        Window::Last(span) => out.push_str(&format!(" in last {span}")),
        Window::BetweenAgo(from, to) => out.push_str(&format!(" between {from} and {to} ago")),
        Window::Range(from, to) => out.push_str(&format!(" from {} to {}", format_date(from), format_date(to))),
    }
}

fn write_comparison(comparison: &Comparison, out: &mut String) {
    let text = match comparison {
        Comparison::Equals(v) => format!("= {}", format_value(v)),
        Comparison::NotEquals(v) => format!("!= {}", format_value(v)),
        Comparison::Gt(n) => format!("> {}", format_f64(*n)),
        Comparison::Gte(n) => format!(">= {}", format_f64(*n)),
        Comparison::Lt(n) => format!("< {}", format_f64(*n)),
        Comparison::Lte(n) => format!("<= {}", format_f64(*n)),
        Comparison::Between(low, high) => format!("between {} and {}", format_f64(*low), format_f64(*high)),
        Comparison::Contains(v) => format!("contains {}", format_value(v)),
        Comparison::StartsWith(s) => format!("starts with {}", quote(s)),
        Comparison::In(values) => {
            format!("in ({})", values.iter().map(format_value).collect::<Vec<_>>().join(", "))
        }
        Comparison::Exists => "exists".to_string(),
        Comparison::Before(date) => format!("before {}", format_date(date)),
        Comparison::After(date) => format!("after {}", format_date(date)),
        Comparison::WithinLast(span) => format!("within last {span}"),
        Comparison::MoreThanAgo(span) => format!("more than {span} ago"),
        Comparison::BetweenAgo(from, to) => format!("between {from} and {to} ago"),
        Comparison::AnniversaryWithin(span) => format!("anniversary within {span}"),
    };
    out.push_str(&text);
}

/// An attribute path: `traits.vip`, `computed."first name"`; a first part other than `traits` / `computed`
/// is quoted (`"foo".bar`).
pub(crate) fn print_attribute_path(path: &str) -> String {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let mut out =
        if (first == "traits" || first == "computed") && !rest.is_empty() { first.to_string() } else { quote(first) };
    for part in rest {
        out.push('.');
        out.push_str(&path_part(part));
    }
    out
}

/// An event property path: `total`, `products.price`, `"unit price"`.
pub(crate) fn print_property_path(path: &str) -> String {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let mut out = if is_word(first) { first.to_string() } else { quote(first) };
    for part in parts {
        out.push('.');
        out.push_str(&path_part(part));
    }
    out
}

fn path_part(part: &str) -> String {
    if !part.is_empty() && part.chars().all(is_ident_char) { part.to_string() } else { quote(part) }
}

fn is_word(s: &str) -> bool {
    s.chars().next().is_some_and(is_word_start) && s.chars().all(is_ident_char)
}

/// A consent channel / purpose or identifier kind: bare when it is a plain word.
fn bare_or_quoted(s: &str) -> String {
    let reserved = ["and", "or", "not", "for"].iter().any(|r| s.eq_ignore_ascii_case(r));
    if is_word(s) && !reserved { s.to_string() } else { quote(s) }
}

/// A JSON string literal.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Shortest text that parses back to the same `f64`; exponent form for very large or small magnitudes.
pub(crate) fn format_f64(n: f64) -> String {
    let magnitude = n.abs();
    if magnitude != 0.0 && !(1e-5..1e16).contains(&magnitude) { format!("{n:e}") } else { format!("{n}") }
}

/// JSON text of a value (serde_json keeps `2` and `2.0` apart, and so does the parser).
fn format_value(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        Value::Array(items) => format!("[{}]", items.iter().map(format_value).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("{}: {}", quote(k), format_value(v))).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// `2026-01-01` at midnight UTC, RFC 3339 (`2026-01-01T09:00:00Z`, fractions as needed) otherwise.
pub(crate) fn format_date(date: &DateTime<Utc>) -> String {
    if date.num_seconds_from_midnight() == 0 && date.nanosecond() == 0 {
        date.format("%Y-%m-%d").to_string()
    } else {
        date.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
}
