//! Segment state per profile: only what the active definitions can read. A definition set's [`Interest`] names
//! the attributes, event names and event properties it reads and how long each event can matter; a profile's
//! [`Summary`] keeps exactly that, so a million profiles fit in memory and a full build never touches storage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::ast::*;
use crate::eval::{EventFact, ProfileView};

/// How long an event of one name can still change an answer after it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Keep {
    For(Duration),
    Forever,
}

/// What a definition set reads from one event name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInterest {
    /// Dotted property paths read by filters and measures.
    pub paths: BTreeSet<String>,
    pub keep: Keep,
}

/// What a set of definitions reads from profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Attribute roots: the first two parts of each attribute path (`traits.address` for
    /// `traits.address.city`).
    pub attributes: BTreeSet<String>,
    pub events: BTreeMap<String, EventInterest>,
    /// Identifier kinds (`has email`) and granted consents (`consent:email:marketing`) read, as summary flags.
    pub flags: BTreeSet<String>,
    /// Whether a `near` condition reads the profile's location.
    pub coordinates: bool,
}

/// The attribute root of a path: `traits.address.city` → `traits.address`.
pub fn attribute_root(path: &str) -> &str {
    match path.match_indices('.').nth(1) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

fn window_keep(window: &Window, extra: Duration) -> Keep {
    match window {
        Window::Last(span) => Keep::For(span.duration() + extra),
        Window::BetweenAgo(_, to) => Keep::For(to.duration() + extra + Duration::milliseconds(1)),
        Window::Ever | Window::Range(..) => Keep::Forever,
    }
}

impl Interest {
    /// What `condition` reads.
    pub fn of(condition: &Condition) -> Interest {
        let mut interest = Interest::default();
        interest.add(condition);
        interest
    }

    /// Adds what `condition` reads.
    pub fn add(&mut self, condition: &Condition) {
        condition.visit(&mut |c| match c {
            Condition::Attribute(a) => {
                self.attributes.insert(attribute_root(&a.path).to_string());
            }
            Condition::Event(e) => {
                let mut paths: Vec<&str> = e.matches.filters.iter().map(|f| f.path.as_str()).collect();
                if let Measure::Sum(p) | Measure::Avg(p) | Measure::Min(p) | Measure::Max(p) = &e.measure {
                    paths.push(p);
                }
                // first/last compare the time itself, so a window cannot bound how long the event matters.
                let keep = match e.measure {
                    Measure::First | Measure::Last => Keep::Forever,
                    _ => window_keep(&e.window, Duration::zero()),
                };
                self.add_event(&e.matches.name, &paths, keep);
            }
            Condition::Sequence(s) => {
                let keep = window_keep(&s.window, s.within.duration());
                let first: Vec<&str> = s.first.filters.iter().map(|f| f.path.as_str()).collect();
                let then: Vec<&str> = s.then_not.filters.iter().map(|f| f.path.as_str()).collect();
                self.add_event(&s.first.name, &first, keep);
                self.add_event(&s.then_not.name, &then, keep);
            }
            Condition::HasIdentifier(kind) => {
                self.flags.insert(kind.clone());
            }
            Condition::Consent(c) => {
                self.flags.insert(consent_flag(&c.channel, &c.purpose));
            }
            Condition::Near(_) => self.coordinates = true,
            Condition::And(_) | Condition::Or(_) | Condition::Not(_) | Condition::InSegment(_) => {}
        });
    }

    fn add_event(&mut self, name: &str, paths: &[&str], keep: Keep) {
        let entry = self
            .events
            .entry(name.to_string())
            .or_insert_with(|| EventInterest { paths: BTreeSet::new(), keep: Keep::For(Duration::zero()) });
        entry.paths.extend(paths.iter().map(|p| p.to_string()));
        entry.keep = entry.keep.max(keep);
    }

    /// Everything both read.
    pub fn union(&self, other: &Interest) -> Interest {
        let mut out = self.clone();
        out.attributes.extend(other.attributes.iter().cloned());
        out.flags.extend(other.flags.iter().cloned());
        out.coordinates |= other.coordinates;
        for (name, e) in &other.events {
            let paths: Vec<&str> = e.paths.iter().map(String::as_str).collect();
            out.add_event(name, &paths, e.keep);
        }
        out
    }

    /// Whether profiles summarised for `self` already hold everything `other` reads (so `other` can be
    /// evaluated without reloading from storage).
    pub fn covers(&self, other: &Interest) -> bool {
        other.attributes.is_subset(&self.attributes)
            && other.flags.is_subset(&self.flags)
            && (self.coordinates || !other.coordinates)
            && other.events.iter().all(|(name, e)| {
                self.events.get(name).is_some_and(|mine| e.paths.is_subset(&mine.paths) && e.keep <= mine.keep)
            })
    }
}

/// A profile's attributes and identity facts as storage knows them now; the engine keeps what it needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileData {
    /// Orders updates: data older than what a summary holds is ignored (a reload racing live changes).
    pub version: i64,
    /// `traits` and `computed` objects.
    pub traits: Map<String, Value>,
    pub computed: Map<String, Value>,
    /// Granted (channel, purpose) pairs.
    pub consent: Vec<(String, String)>,
    /// Identifier kinds the profile has (`email`, `phone`, `line_user_id`…).
    pub identifiers: Vec<String>,
    pub coordinates: Option<(f64, f64)>,
}

/// An event as it reaches segments: with its position in the event log so that seeing it twice is harmless.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub seq: i64,
    pub name: String,
    pub at: DateTime<Utc>,
    /// Shared with the other consumers of the same commit; a summary keeps only the paths it reads.
    pub properties: std::sync::Arc<Value>,
}

/// Shares repeated strings (event names, identifier kinds, consent pairs) between summaries.
#[derive(Debug, Default)]
pub struct Interner {
    strings: std::collections::HashSet<Arc<str>>,
}

impl Interner {
    pub fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(text) {
            return found.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
    }
}

/// What segments know of one profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub version: i64,
    /// Attribute roots (`traits.vip`) the interest names, with their values. Boxed slices rather than vectors
    /// here: exactly sized (most profiles hold fewer of the attributes than the definitions read: an anonymous
    /// visitor has no order dates) and 8 bytes smaller each, which keeps the engine's per-profile entry within
    /// the allocator's 160-byte size class instead of 192.
    attributes: Box<[(Arc<str>, Value)]>,
    /// Events of interesting names, properties cut to the interesting paths; by time, then log position.
    /// Exactly sized, like the other lists here: a vector's spare capacity (up to twice what it held, after
    /// growth) and its 8 bytes more put the engine's entry in a larger size class.
    events: Box<[EventFact]>,
    /// `email`, `phone`… and `consent:channel:purpose` for granted consent: only those the interest reads (most
    /// definition sets read none, and a profile's identifier kinds and consents took ~5 flags of 16 bytes each).
    flags: Box<[Arc<str>]>,
    /// Only when a definition reads it; boxed because it rarely is (8 bytes in the entry instead of 24).
    coordinates: Option<Box<(f64, f64)>>,
}

/// Which parts of a summary an update changed, to pick the definitions worth re-evaluating.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Touched {
    pub attributes: BTreeSet<String>,
    pub event_names: BTreeSet<String>,
    /// Identifiers, consent or location.
    pub identity: bool,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.event_names.is_empty() && !self.identity
    }
}

fn consent_flag(channel: &str, purpose: &str) -> String {
    format!("consent:{channel}:{purpose}")
}

/// The value at a dotted path inside `root`, keeping only those paths (a list keeps its elements' fields).
fn cut(properties: &Value, paths: &BTreeSet<String>) -> Value {
    if paths.is_empty() {
        return Value::Null;
    }
    let mut out = Value::Null;
    for path in paths {
        let parts: Vec<&str> = path.split('.').collect();
        copy_path(properties, &parts, &mut out);
    }
    out
}

fn copy_path(from: &Value, parts: &[&str], into: &mut Value) {
    let Some((head, rest)) = parts.split_first() else {
        *into = from.clone();
        return;
    };
    match from {
        Value::Object(map) => {
            let Some(child) = map.get(*head) else { return };
            if !into.is_object() {
                *into = Value::Object(Map::new());
            }
            if let Value::Object(target) = into {
                let slot = target.entry(head.to_string()).or_insert(Value::Null);
                copy_path(child, rest, slot);
            }
        }
        Value::Array(items) => {
            if !into.is_array() {
                *into = Value::Array(vec![Value::Null; items.len()]);
            }
            if let Value::Array(target) = into {
                for (item, slot) in items.iter().zip(target.iter_mut()) {
                    copy_path(item, parts, slot);
                }
            }
        }
        _ => {}
    }
}

/// Changes an exactly sized list as a vector, then sizes it exactly again (no reallocation when the change
/// added and removed nothing).
pub(crate) fn edit<T, R>(list: &mut Box<[T]>, change: impl FnOnce(&mut Vec<T>) -> R) -> R {
    let mut vec = std::mem::take(list).into_vec();
    let result = change(&mut vec);
    *list = vec.into_boxed_slice();
    result
}

/// Inserts an event in time order, then log position.
fn insert_in_order(events: &mut Vec<EventFact>, event: EventFact) {
    let position = events.partition_point(|e| (e.at, e.seq) <= (event.at, event.seq));
    events.insert(position, event);
}

impl Summary {
    /// Replaces the attributes and identity facts with `data` (cut to `interest`); returns what changed.
    /// Data older than the summary's is ignored.
    pub fn set_data(&mut self, data: &ProfileData, interest: &Interest, interner: &mut Interner) -> Touched {
        let mut touched = Touched::default();
        if data.version < self.version {
            return touched;
        }
        self.version = data.version;
        let mut attributes = Vec::with_capacity(interest.attributes.len());
        for root in &interest.attributes {
            let value = root_value(data, root);
            let Some(value) = value.filter(|v| !v.is_null()) else { continue };
            attributes.push((interner.get(root), value.clone()));
        }
        for root in &interest.attributes {
            let before = self.attributes.iter().find(|(r, _)| &**r == root).map(|(_, v)| v);
            let after = attributes.iter().find(|(r, _)| &**r == root).map(|(_, v)| v);
            if before != after {
                touched.attributes.insert(root.clone());
            }
        }
        self.attributes = attributes.into_boxed_slice();
        let mut flags: Vec<Arc<str>> = Vec::new();
        if !interest.flags.is_empty() {
            let identifiers = data.identifiers.iter().cloned();
            let consents = data.consent.iter().map(|(c, p)| consent_flag(c, p));
            for flag in identifiers.chain(consents) {
                if interest.flags.contains(&flag) {
                    flags.push(interner.get(&flag));
                }
            }
            flags.sort();
            flags.dedup();
        }
        let coordinates = data.coordinates.filter(|_| interest.coordinates).map(Box::new);
        if *flags != *self.flags || coordinates != self.coordinates {
            touched.identity = true;
        }
        self.flags = flags.into_boxed_slice();
        self.coordinates = coordinates;
        touched
    }

    /// Adds events the interest names (once each, by log position); returns the names added.
    pub fn add_events(
        &mut self,
        events: &[NewEvent],
        interest: &Interest,
        interner: &mut Interner,
    ) -> BTreeSet<String> {
        let mut added = BTreeSet::new();
        edit(&mut self.events, |kept| {
            for event in events {
                let Some(wanted) = interest.events.get(&event.name) else { continue };
                if kept.iter().any(|e| e.seq == event.seq) {
                    continue;
                }
                let fact = EventFact {
                    seq: event.seq,
                    name: interner.get(&event.name),
                    at: event.at,
                    properties: cut(&event.properties, &wanted.paths),
                };
                insert_in_order(kept, fact);
                added.insert(event.name.clone());
            }
        });
        added
    }

    /// Takes in everything another summary knows (two profiles merged): events united by log position, the
    /// other's attributes kept only where this one has none (the store's merged state follows right after).
    pub fn absorb(&mut self, other: Summary) {
        edit(&mut self.events, |events| {
            for event in other.events {
                if !events.iter().any(|e| e.seq == event.seq) {
                    insert_in_order(events, event);
                }
            }
        });
        edit(&mut self.attributes, |attributes| {
            for (root, value) in other.attributes {
                if !attributes.iter().any(|(r, _)| *r == root) {
                    attributes.push((root, value));
                }
            }
        });
        edit(&mut self.flags, |flags| {
            for flag in other.flags {
                if !flags.contains(&flag) {
                    flags.push(flag);
                }
            }
            flags.sort();
        });
        if self.coordinates.is_none() {
            self.coordinates = other.coordinates;
        }
    }

    /// Drops events that can no longer change any answer at `now` (older than their name's keep).
    pub fn prune(&mut self, interest: &Interest, now: DateTime<Utc>) {
        let keeps = |e: &EventFact| match interest.events.get(&*e.name).map(|i| i.keep) {
            Some(Keep::Forever) => true,
            Some(Keep::For(d)) => now - e.at <= d,
            None => false,
        };
        // Loading a profile adds its whole history before the first prune keeps the last few days of it; the
        // list is exactly sized again after (a vector kept its whole history's capacity: ~110 MB more resident
        // at 71k profiles with the starter segments, which keep a few events each).
        if !self.events.iter().all(keeps) {
            edit(&mut self.events, |events| events.retain(keeps));
        }
    }

    /// Cuts the summary down to a narrower interest (definitions removed).
    pub fn narrow(&mut self, interest: &Interest) {
        edit(&mut self.attributes, |attributes| attributes.retain(|(root, _)| interest.attributes.contains(&**root)));
        edit(&mut self.flags, |flags| flags.retain(|flag| interest.flags.contains(&**flag)));
        if !interest.coordinates {
            self.coordinates = None;
        }
        edit(&mut self.events, |events| events.retain(|e| interest.events.contains_key(&*e.name)));
    }

    pub fn clear_events(&mut self) {
        self.events = Box::default();
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Approximate heap bytes held, for reporting segment-state memory.
    pub fn heap_bytes(&self) -> usize {
        fn value_bytes(v: &Value) -> usize {
            match v {
                Value::String(s) => s.capacity(),
                Value::Array(items) => items.capacity() * 32 + items.iter().map(value_bytes).sum::<usize>(),
                Value::Object(map) => map.iter().map(|(k, v)| k.capacity() + 64 + value_bytes(v)).sum(),
                _ => 0,
            }
        }
        self.attributes.len() * std::mem::size_of::<(Arc<str>, Value)>()
            + self.attributes.iter().map(|(_, v)| value_bytes(v)).sum::<usize>()
            + self.events.len() * std::mem::size_of::<EventFact>()
            + self.events.iter().map(|e| value_bytes(&e.properties)).sum::<usize>()
            + self.flags.len() * std::mem::size_of::<Arc<str>>()
            + self.coordinates.as_ref().map_or(0, |_| std::mem::size_of::<(f64, f64)>())
    }
}

fn root_value<'a>(data: &'a ProfileData, root: &str) -> Option<&'a Value> {
    let (scope, name) = root.split_once('.')?;
    match scope {
        "traits" => data.traits.get(name),
        "computed" => data.computed.get(name),
        _ => None,
    }
}

impl ProfileView for Summary {
    fn attribute(&self, path: &str) -> Option<&Value> {
        let root = attribute_root(path);
        let mut value = self.attributes.iter().find(|(r, _)| &**r == root).map(|(_, v)| v)?;
        if path.len() > root.len() {
            for part in path[root.len() + 1..].split('.') {
                value = value.get(part)?;
            }
        }
        Some(value)
    }

    fn events(&self) -> &[EventFact] {
        &self.events
    }

    fn consent_granted(&self, channel: &str, purpose: &str) -> bool {
        // The flag is `consent:{channel}:{purpose}`, matched without building it (called per profile in builds).
        self.flags.iter().any(|f| {
            f.strip_prefix("consent:")
                .and_then(|rest| rest.strip_prefix(channel))
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest == purpose)
        })
    }

    fn has_identifier(&self, kind: &str) -> bool {
        self.flags.iter().any(|f| &**f == kind)
    }

    fn coordinates(&self) -> Option<(f64, f64)> {
        self.coordinates.as_deref().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_a_loaded_history_gives_its_memory_back() {
        let condition = crate::parse(r#"event "Product Viewed" in last 3d"#).unwrap_or_else(|e| panic!("{e}"));
        let interest = Interest::of(&condition);
        let now = Utc::now();
        // A year of daily views: loading adds them all, pruning keeps the last three days.
        let events: Vec<NewEvent> = (0..365)
            .map(|day| NewEvent {
                seq: day,
                name: "Product Viewed".into(),
                at: now - Duration::days(364 - day) - Duration::hours(1),
                properties: Default::default(),
            })
            .collect();
        let mut summary = Summary::default();
        summary.add_events(&events, &interest, &mut Interner::default());
        assert_eq!(summary.events.len(), 365);
        summary.prune(&interest, now);
        assert_eq!(summary.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![362, 363, 364]);
    }

    fn profile_data(identifiers: &[&str], consent: &[(&str, &str)]) -> ProfileData {
        let mut computed = Map::new();
        computed.insert("orders_count".into(), Value::from(3));
        ProfileData {
            version: 1,
            traits: Map::new(),
            computed,
            consent: consent.iter().map(|(c, p)| (c.to_string(), p.to_string())).collect(),
            identifiers: identifiers.iter().map(|k| k.to_string()).collect(),
            coordinates: Some((35.68, 139.69)),
        }
    }

    #[test]
    fn a_profile_keeps_the_attributes_and_flags_it_has_only() {
        let condition = crate::parse(
            "computed.orders_count >= 2 and computed.aov >= 100 and traits.vip = true and has email \
             and consent email for marketing and has phone",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let interest = Interest::of(&condition);
        let data = profile_data(&["email", "anonymous_id", "email"], &[("email", "marketing"), ("sms", "marketing")]);
        let mut summary = Summary::default();
        summary.set_data(&data, &interest, &mut Interner::default());
        assert_eq!(summary.attributes.len(), 1);
        let flags: Vec<&str> = summary.flags.iter().map(|f| &**f).collect();
        assert_eq!(flags, ["consent:email:marketing", "email"]);
        assert_eq!(summary.attribute("computed.orders_count"), Some(&Value::from(3)));
        assert!(summary.has_identifier("email") && summary.consent_granted("email", "marketing"));
        assert_eq!(summary.coordinates(), None, "no definition reads the location");
    }

    #[test]
    fn identity_flags_and_location_are_kept_only_while_a_definition_reads_them() {
        let data = profile_data(&["email", "phone"], &[("email", "marketing")]);
        let orders = Interest::of(&crate::parse("computed.orders_count >= 2").unwrap_or_else(|e| panic!("{e}")));
        let mut summary = Summary::default();
        let touched = summary.set_data(&data, &orders, &mut Interner::default());
        assert!(summary.flags.is_empty() && !touched.identity);

        let near = crate::parse("has phone and near 35.6, 139.7 within 20 km").unwrap_or_else(|e| panic!("{e}"));
        let both = orders.union(&Interest::of(&near));
        assert!(!orders.covers(&both), "a definition reading flags must reload what the summaries dropped");
        assert!(both.covers(&orders) && both.covers(&Interest::of(&near)));
        let touched = summary.set_data(&data, &both, &mut Interner::default());
        assert!(touched.identity);
        assert!(summary.has_identifier("phone") && !summary.has_identifier("email"));
        assert_eq!(summary.coordinates(), Some((35.68, 139.69)));

        summary.narrow(&orders);
        assert!(summary.flags.is_empty());
        assert_eq!(summary.coordinates(), None);
    }
}
