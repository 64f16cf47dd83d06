//! The values templates see. Liquid treats a missing key as an error; a message must never fail because one
//! customer has no `first_name`, so every object here answers a missing key with `nil`, which prints as nothing
//! and takes `| default: "…"`.

use liquid_core::model::{
    ArrayView, DisplayCow, KStringCow, ObjectView, ScalarCow, State, Value as LiquidValue, ValueView,
};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;

/// What a missing key reads as: nil to every test and print, and itself for any deeper key, so
/// `profile.address.city` is nil too when the profile has no address.
static MISSING: Data = Data::Missing;

/// A JSON document as Liquid sees it, lenient about missing keys.
#[derive(Debug, Clone)]
pub enum Data {
    /// Scalars (and nil) are plain Liquid values.
    Leaf(LiquidValue),
    List(Vec<Data>),
    Map(BTreeMap<String, Data>),
    Missing,
}

impl Data {
    pub fn from_json(value: &Json) -> Data {
        match value {
            Json::Null => Data::Leaf(LiquidValue::Nil),
            Json::Bool(b) => Data::Leaf(LiquidValue::scalar(*b)),
            Json::Number(n) => Data::Leaf(match n.as_i64() {
                Some(i) => LiquidValue::scalar(i),
                None => LiquidValue::scalar(n.as_f64().unwrap_or(0.0)),
            }),
            Json::String(s) => Data::Leaf(LiquidValue::scalar(s.clone())),
            Json::Array(items) => Data::List(items.iter().map(Data::from_json).collect()),
            Json::Object(map) => Data::Map(map.iter().map(|(k, v)| (k.clone(), Data::from_json(v))).collect()),
        }
    }

    pub fn map() -> Data {
        Data::Map(BTreeMap::new())
    }

    /// Sets a key when this is a map (otherwise does nothing).
    pub fn insert(&mut self, key: &str, value: Data) {
        if let Data::Map(map) = self {
            map.insert(key.to_owned(), value);
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
            Data::Map(map) => match state {
                State::Truthy => true,
                _ => map.is_empty(),
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
            Data::Map(map) => LiquidValue::Object(map.iter().map(|(k, v)| (k.clone().into(), v.to_value())).collect()),
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
            Data::Map(map) => map.len() as i64,
            _ => 0,
        }
    }

    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        match self {
            Data::Map(map) => Box::new(map.keys().map(|k| KStringCow::from_ref(k.as_str()))),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Data::Map(map) => Box::new(map.values().map(|v| v as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        match self {
            Data::Map(map) => {
                Box::new(map.iter().map(|(k, v)| (KStringCow::from_ref(k.as_str()), v as &dyn ValueView)))
            }
            _ => Box::new(std::iter::empty()),
        }
    }

    /// Every key "exists": a missing one is nil.
    fn contains_key(&self, _index: &str) -> bool {
        true
    }

    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        match self {
            Data::Map(map) => Some(map.get(index).unwrap_or(&MISSING)),
            Data::Missing => Some(&MISSING),
            _ => None,
        }
    }
}
