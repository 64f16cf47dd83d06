//! Checks a parsed (or deserialised) definition can mean something, and that a set of definitions refers only
//! to segments that exist, without cycles.
//!
//! Locations (`at`) are JSON pointers into the definition's JSON form, e.g. `/and/1/event/where/0`; `/` is the
//! whole definition.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::ast::*;

/// Why a definition (or a set of them) is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DefinitionError {
    #[error("segment \"{segment}\" refers to unknown segment \"{unknown}\"")]
    UnknownSegment { segment: String, unknown: String },
    /// The segments of the cycle in order, the first repeated at the end.
    #[error("segment cycle: {}", .cycle.join(" → "))]
    Cycle { cycle: Vec<String> },
    /// A measure compared in a way that cannot hold or does not type: `last` needs a date comparison, `count`
    /// / `sum` / … a numeric one.
    #[error("`{measure}` of events needs {needs}, not `{comparison}` (at {at})")]
    IncompatibleMeasure { at: String, measure: String, comparison: String, needs: &'static str },
    /// Any other problem inside one definition.
    #[error("{problem} (at {at})")]
    Invalid { at: String, problem: String },
    /// The JSON is not a definition; `path` is a JSON pointer to the offending part.
    #[error("invalid definition JSON at {path}: {reason}")]
    Json { path: String, reason: String },
    /// A problem inside one definition of a set.
    #[error("segment \"{segment}\": {error}")]
    InDefinition { segment: String, error: Box<DefinitionError> },
}

/// Checks a set of definitions by segment name: each definition passes [`check`], every `in segment "x"`
/// names a defined segment, and no segment depends on itself (directly or through others).
pub fn check_definitions(definitions: &BTreeMap<String, Condition>) -> Result<(), DefinitionError> {
    for (segment, condition) in definitions {
        check(condition)
            .map_err(|error| DefinitionError::InDefinition { segment: segment.clone(), error: Box::new(error) })?;
        if let Some(unknown) = condition.referenced_segments().into_iter().find(|r| !definitions.contains_key(*r)) {
            return Err(DefinitionError::UnknownSegment { segment: segment.clone(), unknown: unknown.to_string() });
        }
    }
    let mut done: BTreeMap<&str, bool> = BTreeMap::new(); // false: on the current path, true: finished
    for segment in definitions.keys() {
        let mut path = Vec::new();
        if let Err(cycle) = visit(segment, definitions, &mut done, &mut path) {
            return Err(DefinitionError::Cycle { cycle });
        }
    }
    Ok(())
}

fn visit<'a>(
    segment: &'a str,
    definitions: &'a BTreeMap<String, Condition>,
    done: &mut BTreeMap<&'a str, bool>,
    path: &mut Vec<&'a str>,
) -> Result<(), Vec<String>> {
    match done.get(segment) {
        Some(true) => return Ok(()),
        Some(false) => {
            let start = path.iter().position(|s| *s == segment).unwrap_or(0);
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(segment.to_string());
            return Err(cycle);
        }
        None => {}
    }
    done.insert(segment, false);
    path.push(segment);
    if let Some(condition) = definitions.get(segment) {
        for referenced in condition.referenced_segments() {
            visit(referenced, definitions, done, path)?;
        }
    }
    path.pop();
    done.insert(segment, true);
    Ok(())
}

/// Deserialises a definition from its JSON form and [`check`]s it. Errors carry a JSON pointer to the part
/// that does not deserialise and serde's reason.
pub fn from_json(value: &Value) -> Result<Condition, DefinitionError> {
    let condition = Condition::deserialize(value).map_err(|error| {
        let (path, reason) = locate(value, "", error.to_string());
        DefinitionError::Json { path: pointer(&path), reason }
    })?;
    check(&condition)?;
    Ok(condition)
}

/// The deepest part of `value` (a condition at `at`) that does not deserialise, and why.
fn locate(value: &Value, at: &str, reason: String) -> (String, String) {
    let Value::Object(map) = value else { return (at.to_string(), reason) };
    let Some((key, inner)) = map.iter().next().filter(|_| map.len() == 1) else { return (at.to_string(), reason) };
    let here = format!("{at}/{key}");
    let fail = |v: &Value, deserialise: fn(&Value) -> Result<(), serde_json::Error>| deserialise(v).err();
    match (key.as_str(), inner) {
        ("and" | "or", Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Err(error) = Condition::deserialize(item) {
                    return locate(item, &format!("{here}/{i}"), error.to_string());
                }
            }
        }
        ("not", inner) => {
            if let Err(error) = Condition::deserialize(inner) {
                return locate(inner, &here, error.to_string());
            }
        }
        ("event", Value::Object(fields)) => {
            if let Some(found) = locate_match(fields, &here) {
                return found;
            }
            if let Some(window) = fields.get("window")
                && let Some(error) = fail(window, |v| Window::deserialize(v).map(drop))
            {
                return (format!("{here}/window"), error.to_string());
            }
            if let Some(measure) = fields.get("measure")
                && let Some(error) = fail(measure, |v| Measure::deserialize(v).map(drop))
            {
                return (format!("{here}/measure"), error.to_string());
            }
        }
        ("sequence", Value::Object(fields)) => {
            for part in ["first", "then_not"] {
                if let Some(Value::Object(m)) = fields.get(part) {
                    let at = format!("{here}/{part}");
                    if let Some(found) = locate_match(m, &at) {
                        return found;
                    }
                    if let Err(error) = EventMatch::deserialize(&fields[part]) {
                        return (at, error.to_string());
                    }
                }
            }
            if let Some(window) = fields.get("window")
                && let Some(error) = fail(window, |v| Window::deserialize(v).map(drop))
            {
                return (format!("{here}/window"), error.to_string());
            }
        }
        _ => {}
    }
    // The variant itself: serde passes the inner reason through an externally tagged enum.
    (here, reason)
}

/// A failing `where` filter of an event match.
fn locate_match(fields: &serde_json::Map<String, Value>, at: &str) -> Option<(String, String)> {
    let Some(Value::Array(filters)) = fields.get("where") else { return None };
    filters.iter().enumerate().find_map(|(i, filter)| {
        PropertyFilter::deserialize(filter).err().map(|error| (format!("{at}/where/{i}"), error.to_string()))
    })
}

fn pointer(at: &str) -> String {
    if at.is_empty() { "/".to_string() } else { at.to_string() }
}

/// Checks one definition: spans longer than zero; `between` ranges the right way round (`low ≤ high`,
/// `from ≤ to` ago, absolute ranges `from < to`); finite numbers; coordinates in range and a radius above
/// zero; non-empty names and paths (attribute paths under `traits.` or `computed.`); `in` lists not empty;
/// measures with a comparison of their kind (`first` / `last`: before, after, within last, more than … ago,
/// between … ago; `count`, `sum`, `avg`, `min`, `max`: >, >=, <, <=, between, or = / != a number).
pub fn check(condition: &Condition) -> Result<(), DefinitionError> {
    check_at(condition, "")
}

fn invalid(at: &str, problem: impl Into<String>) -> DefinitionError {
    DefinitionError::Invalid { at: pointer(at), problem: problem.into() }
}

fn check_at(condition: &Condition, at: &str) -> Result<(), DefinitionError> {
    match condition {
        Condition::And(items) | Condition::Or(items) => {
            let key = if matches!(condition, Condition::And(_)) { "and" } else { "or" };
            for (i, item) in items.iter().enumerate() {
                check_at(item, &format!("{at}/{key}/{i}"))?;
            }
        }
        Condition::Not(inner) => check_at(inner, &format!("{at}/not"))?,
        Condition::Attribute(a) => {
            let at = format!("{at}/attribute");
            let has_prefix = ["traits.", "computed."].iter().any(|p| a.path.starts_with(p));
            if !has_prefix {
                return Err(invalid(
                    &at,
                    format!("attribute path \"{}\" must start with traits. or computed.", a.path),
                ));
            }
            check_path(&a.path, &at)?;
            check_comparison(&a.comparison, &at)?;
        }
        Condition::Event(e) => {
            let at = format!("{at}/event");
            check_match(&e.matches, &at)?;
            check_window(&e.window, &at)?;
            check_comparison(&e.comparison, &at)?;
            check_measure(&e.measure, &e.comparison, &at)?;
        }
        Condition::Sequence(s) => {
            let at = format!("{at}/sequence");
            check_match(&s.first, &format!("{at}/first"))?;
            check_match(&s.then_not, &format!("{at}/then_not"))?;
            check_span(s.within, &at)?;
            check_window(&s.window, &at)?;
        }
        Condition::Consent(c) => {
            let at = format!("{at}/consent");
            check_name(&c.channel, "consent channel", &at)?;
            check_name(&c.purpose, "consent purpose", &at)?;
        }
        Condition::HasIdentifier(kind) => check_name(kind, "identifier kind", &format!("{at}/has_identifier"))?,
        Condition::Near(n) => {
            let at = format!("{at}/near");
            if !(n.lat.is_finite() && (-90.0..=90.0).contains(&n.lat)) {
                return Err(invalid(&at, format!("latitude {} is not between -90 and 90", n.lat)));
            }
            if !(n.lon.is_finite() && (-180.0..=180.0).contains(&n.lon)) {
                return Err(invalid(&at, format!("longitude {} is not between -180 and 180", n.lon)));
            }
            if !(n.km.is_finite() && n.km > 0.0) {
                return Err(invalid(&at, format!("the radius must be more than 0 km, not {}", n.km)));
            }
        }
        Condition::InSegment(name) => check_name(name, "segment name", &format!("{at}/in_segment"))?,
    }
    Ok(())
}

fn check_name(name: &str, what: &str, at: &str) -> Result<(), DefinitionError> {
    if name.trim().is_empty() { Err(invalid(at, format!("the {what} is empty"))) } else { Ok(()) }
}

fn check_path(path: &str, at: &str) -> Result<(), DefinitionError> {
    if path.split('.').any(str::is_empty) {
        return Err(invalid(at, format!("path \"{path}\" has an empty part")));
    }
    Ok(())
}

fn check_match(m: &EventMatch, at: &str) -> Result<(), DefinitionError> {
    check_name(&m.name, "event name", at)?;
    for (i, filter) in m.filters.iter().enumerate() {
        let at = format!("{at}/where/{i}");
        check_path(&filter.path, &at)?;
        check_comparison(&filter.comparison, &at)?;
    }
    Ok(())
}

fn check_span(span: Span, at: &str) -> Result<(), DefinitionError> {
    if span.amount == 0 { Err(invalid(at, format!("the span {span} must be longer than zero"))) } else { Ok(()) }
}

fn check_ago_range(from: Span, to: Span, at: &str) -> Result<(), DefinitionError> {
    check_span(from, at)?;
    check_span(to, at)?;
    if from.duration() > to.duration() {
        return Err(invalid(
            at,
            format!("between {from} and {to} ago: the nearer span must come first ({to} and {from})"),
        ));
    }
    Ok(())
}

fn check_window(window: &Window, at: &str) -> Result<(), DefinitionError> {
    let at = &format!("{at}/window");
    match window {
        Window::Ever => Ok(()),
        Window::Last(span) => check_span(*span, at),
        Window::BetweenAgo(from, to) => check_ago_range(*from, *to, at),
        Window::Range(from, to) if from >= to => Err(invalid(
            at,
            format!(
                "the range from {} to {} is empty: the start must come before the end",
                crate::print::format_date(from),
                crate::print::format_date(to)
            ),
        )),
        Window::Range(..) => Ok(()),
    }
}

fn check_number(n: f64, at: &str) -> Result<(), DefinitionError> {
    if n.is_finite() { Ok(()) } else { Err(invalid(at, format!("{n} is not a finite number"))) }
}

fn check_comparison(comparison: &Comparison, at: &str) -> Result<(), DefinitionError> {
    match comparison {
        Comparison::Gt(n) | Comparison::Gte(n) | Comparison::Lt(n) | Comparison::Lte(n) => check_number(*n, at),
        Comparison::Between(low, high) => {
            check_number(*low, at)?;
            check_number(*high, at)?;
            if low > high {
                return Err(invalid(at, format!("{comparison}: the low end must not be above the high end")));
            }
            Ok(())
        }
        Comparison::In(values) if values.is_empty() => Err(invalid(at, "in () needs at least one value")),
        Comparison::WithinLast(span) | Comparison::MoreThanAgo(span) | Comparison::AnniversaryWithin(span) => {
            check_span(*span, at)
        }
        Comparison::BetweenAgo(from, to) => check_ago_range(*from, *to, at),
        Comparison::Equals(_)
        | Comparison::NotEquals(_)
        | Comparison::Contains(_)
        | Comparison::StartsWith(_)
        | Comparison::In(_)
        | Comparison::Exists
        | Comparison::Before(_)
        | Comparison::After(_) => Ok(()),
    }
}

fn check_measure(measure: &Measure, comparison: &Comparison, at: &str) -> Result<(), DefinitionError> {
    let (name, path) = match measure {
        Measure::Count => ("count", None),
        Measure::First => ("first", None),
        Measure::Last => ("last", None),
        Measure::Sum(p) => ("sum", Some(p)),
        Measure::Avg(p) => ("avg", Some(p)),
        Measure::Min(p) => ("min", Some(p)),
        Measure::Max(p) => ("max", Some(p)),
    };
    if let Some(path) = path {
        let at = format!("{at}/measure");
        if path.is_empty() {
            return Err(invalid(&at, format!("`{name}` needs an event property, as in {name} total")));
        }
        check_path(path, &at)?;
    }
    let (fits, needs) = if matches!(measure, Measure::First | Measure::Last) {
        (
            matches!(
                comparison,
                Comparison::Before(_)
                    | Comparison::After(_)
                    | Comparison::WithinLast(_)
                    | Comparison::MoreThanAgo(_)
                    | Comparison::BetweenAgo(..)
            ),
            "a date comparison (before, after, within last, more than … ago, between … ago)",
        )
    } else {
        (
            match comparison {
                Comparison::Gt(_)
                | Comparison::Gte(_)
                | Comparison::Lt(_)
                | Comparison::Lte(_)
                | Comparison::Between(..) => true,
                Comparison::Equals(v) | Comparison::NotEquals(v) => v.is_number(),
                _ => false,
            },
            "a numeric comparison (>, >=, <, <=, between, or = / != a number)",
        )
    };
    if fits {
        Ok(())
    } else {
        Err(DefinitionError::IncompatibleMeasure {
            at: pointer(at),
            measure: name.to_string(),
            comparison: comparison.to_string(),
            needs,
        })
    }
}
