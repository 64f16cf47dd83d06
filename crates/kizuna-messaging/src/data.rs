//! The values templates see. Liquid treats a missing key as an error; a message must never fail because one
//! customer has no `first_name`, so every object here answers a missing key with `nil`, which prints as nothing
//! and takes `| default: "…"`.
//!
//! An object's fields are converted for Liquid when a template first reads them: a message's template data holds
//! the whole profile (traits, computed attributes, predictions), and a template reads a few of its values.

use liquid_core::model::{
    ArrayView, DisplayCow, KStringCow, ObjectView, ScalarCow, State, Value as LiquidValue, ValueView,
};
use serde_json::Value as Json;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// What a missing key reads as: nil to every test and print, and itself for any deeper key, so
/// `profile.address.city` is nil too when the profile has no address.
static MISSING: Data = Data::Missing;

/// A JSON document as Liquid sees it, lenient about missing keys.
#[derive(Debug, Clone)]
pub enum Data {
    /// Scalars (and nil) are plain Liquid values.
    Leaf(LiquidValue),
    List(Vec<Data>),
    Map(Fields),
    Missing,
}

/// A value made only if a template reads it (the computed attributes of a profile).
#[derive(Clone)]
pub struct Deferred(Arc<dyn Fn() -> Json + Send + Sync>);

impl Deferred {
    pub fn new(make: impl Fn() -> Json + Send + Sync + 'static) -> Deferred {
        Deferred(Arc::new(make))
    }
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deferred")
    }
}

#[derive(Debug, Clone)]
enum Source {
    Json(Json),
    Deferred(Deferred),
    /// Given as Liquid data already: the value is set.
    Ready,
}

#[derive(Debug, Clone)]
struct Field {
    key: String,
    source: Source,
    value: OnceLock<Data>,
}

impl Field {
    fn value(&self) -> &Data {
        self.value.get_or_init(|| match &self.source {
            Source::Json(json) => Data::from(json.clone()),
            Source::Deferred(make) => Data::from((make.0)()),
            Source::Ready => Data::Missing,
        })
    }
}

/// An object's fields, sorted by key, each converted on first read.
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<Field>);

impl Fields {
    fn get(&self, key: &str) -> Option<&Data> {
        self.0.binary_search_by(|f| f.key.as_str().cmp(key)).ok().map(|i| self.0[i].value())
    }

    fn set(&mut self, field: Field) {
        match self.0.binary_search_by(|f| f.key.cmp(&field.key)) {
            Ok(i) => self.0[i] = field,
            Err(i) => self.0.insert(i, field),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Data)> {
        self.0.iter().map(|f| (f.key.as_str(), f.value()))
    }
}

impl From<Json> for Data {
    /// Takes the document apart instead of copying it; an object's fields wait to be read.
    fn from(value: Json) -> Data {
        match value {
            Json::Null => Data::Leaf(LiquidValue::Nil),
            Json::Bool(b) => Data::Leaf(LiquidValue::scalar(b)),
            Json::Number(n) => Data::Leaf(match n.as_i64() {
                Some(i) => LiquidValue::scalar(i),
                None => LiquidValue::scalar(n.as_f64().unwrap_or(0.0)),
            }),
            Json::String(s) => Data::Leaf(LiquidValue::scalar(s)),
            Json::Array(items) => Data::List(items.into_iter().map(Data::from).collect()),
            Json::Object(map) => {
                let mut fields: Vec<Field> = map
                    .into_iter()
                    .map(|(key, json)| Field { key, source: Source::Json(json), value: OnceLock::new() })
                    .collect();
                fields.sort_by(|a, b| a.key.cmp(&b.key));
                Data::Map(Fields(fields))
            }
        }
    }
}

impl Data {
    pub fn map() -> Data {
        Data::Map(Fields::default())
    }

    /// Sets a key when this is a map (otherwise does nothing).
    pub fn insert(&mut self, key: &str, value: Data) {
        if let Data::Map(fields) = self {
            fields.set(Field { key: key.to_owned(), source: Source::Ready, value: OnceLock::from(value) });
        }
    }

    /// Sets a key, made when a template first reads it, when this is a map (otherwise does nothing).
    pub fn insert_deferred(&mut self, key: &str, make: Deferred) {
        if let Data::Map(fields) = self {
            fields.set(Field { key: key.to_owned(), source: Source::Deferred(make), value: OnceLock::new() });
        }
    }
}

struct Rendered(String);

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ValueView for Data {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }

    fn render(&self) -> DisplayCow<'_> {
        match self {
            Data::Leaf(v) => v.render(),
            Data::Missing => DisplayCow::Borrowed(&""),
            _ => DisplayCow::Owned(Box::new(Rendered(self.to_value().render().to_string()))),
        }
    }

    fn source(&self) -> DisplayCow<'_> {
        match self {
            Data::Leaf(v) => v.source(),
            Data::Missing => DisplayCow::Owned(Box::new(Rendered("nil".into()))),
            _ => DisplayCow::Owned(Box::new(Rendered(self.to_value().source().to_string()))),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Data::Leaf(v) => v.type_name(),
            Data::Missing => "nil",
            Data::List(_) => "array",
            Data::Map(_) => "object",
        }
    }

    fn query_state(&self, state: State) -> bool {
        match self {
            Data::Leaf(v) => v.query_state(state),
            Data::Missing => LiquidValue::Nil.query_state(state),
            Data::List(items) => match state {
                State::Truthy => true,
                _ => items.is_empty(),
            },
            Data::Map(fields) => match state {
                State::Truthy => true,
                _ => fields.0.is_empty(),
            },
        }
    }

    fn to_kstr(&self) -> KStringCow<'_> {
        match self {
            Data::Leaf(v) => v.to_kstr(),
            Data::Missing => KStringCow::from_static(""),
            _ => KStringCow::from_string(self.render().to_string()),
        }
    }

    fn to_value(&self) -> LiquidValue {
        match self {
            Data::Leaf(v) => v.clone(),
            Data::Missing => LiquidValue::Nil,
            Data::List(items) => LiquidValue::Array(items.iter().map(ValueView::to_value).collect()),
            Data::Map(fields) => {
                LiquidValue::Object(fields.iter().map(|(k, v)| (k.to_owned().into(), v.to_value())).collect())
            }
        }
    }

    fn as_scalar(&self) -> Option<ScalarCow<'_>> {
        match self {
            Data::Leaf(v) => v.as_scalar(),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&dyn ArrayView> {
        match self {
            Data::List(_) => Some(self),
            _ => None,
        }
    }

    fn as_object(&self) -> Option<&dyn ObjectView> {
        match self {
            Data::Map(_) | Data::Missing => Some(self),
            _ => None,
        }
    }

    fn as_state(&self) -> Option<State> {
        None
    }

    fn is_nil(&self) -> bool {
        matches!(self, Data::Leaf(LiquidValue::Nil) | Data::Missing)
    }
}

impl ArrayView for Data {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        match self {
            Data::List(items) => items.len() as i64,
            _ => 0,
        }
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Data::List(items) => Box::new(items.iter().map(|i| i as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn contains_key(&self, index: i64) -> bool {
        ArrayView::get(self, index).is_some()
    }

    fn get(&self, index: i64) -> Option<&dyn ValueView> {
        let Data::List(items) = self else { return None };
        let index = if index < 0 { items.len() as i64 + index } else { index };
        usize::try_from(index).ok().and_then(|i| items.as_slice().get(i)).map(|i| i as &dyn ValueView)
    }
}

impl ObjectView for Data {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        match self {
            Data::Map(fields) => fields.0.len() as i64,
            _ => 0,
        }
    }

    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        match self {
            Data::Map(fields) => Box::new(fields.0.iter().map(|f| KStringCow::from_ref(f.key.as_str()))),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Data::Map(fields) => Box::new(fields.iter().map(|(_, v)| v as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        match self {
            Data::Map(fields) => Box::new(fields.iter().map(|(k, v)| (KStringCow::from_ref(k), v as &dyn ValueView))),
            _ => Box::new(std::iter::empty()),
        }
    }

    /// Every key "exists": a missing one is nil.
    fn contains_key(&self, _index: &str) -> bool {
        true
    }

    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        match self {
            Data::Map(fields) => Some(fields.get(index).unwrap_or(&MISSING)),
            Data::Missing => Some(&MISSING),
            _ => None,
        }
    }
}
