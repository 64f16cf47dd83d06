//! Kizuna's additions to Liquid: `money`, `local_date` and `{% recommend %}`.

use crate::money::format_money;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use liquid_core::model::{KString, ScalarCow, Value};
use liquid_core::parser::FilterArguments;
use liquid_core::parser::ParameterReflection;
use liquid_core::{
    Error, Expression, Filter, FilterReflection, Language, ParseFilter, ParseTag, Renderable, Result, Runtime,
    TagReflection, TagTokenIter, ValueView,
};
use serde_json::Value as Json;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

/// Where `{% recommend %}` gets products: the recommendation engine, in-process.
pub trait ProductPicker: Send + Sync {
    /// Products for a placement as template data (`id`, `name`, `price`, `currency`, `url`, `image_url`,
    /// `brand`, `category`, `reason`…), best first.
    fn pick(&self, placement: &str, request: &PickRequest) -> std::result::Result<Vec<Json>, String>;
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PickRequest {
    pub profile_id: Option<u64>,
    /// The products the message is about (the cart's, the viewed product).
    pub products: Vec<String>,
    pub limit: usize,
}

/// Serves nothing: templates render their empty-state markup.
pub struct NoProducts;

impl ProductPicker for NoProducts {
    fn pick(&self, _: &str, _: &PickRequest) -> std::result::Result<Vec<Json>, String> {
        Ok(Vec::new())
    }
}

/// Fields every recommended product has, so `{{ product.image_url }}` never fails on a product without one.
const PRODUCT_FIELDS: &[&str] =
    &["id", "name", "price", "currency", "url", "image_url", "brand", "category", "reason", "compare_at_price"];

fn lookup<'r>(runtime: &'r dyn Runtime, path: &[&str]) -> Option<liquid_core::ValueCow<'r>> {
    let path: Vec<ScalarCow<'_>> = path.iter().map(|p| ScalarCow::new(*p)).collect();
    runtime.try_get(&path).filter(|v| !v.is_nil())
}

fn lookup_str(runtime: &dyn Runtime, path: &[&str]) -> Option<String> {
    lookup(runtime, path).map(|v| v.to_kstr().to_string()).filter(|s| !s.is_empty())
}

/// The products a message is about: `event.properties.products[*].product_id` (Segment's e-commerce spec), or
/// `event.properties.product_id`.
pub fn context_products(event: &Json) -> Vec<String> {
    let properties = &event["properties"];
    let id_of = |p: &Json| match p.get("product_id").or_else(|| p.get("id")).or_else(|| p.get("sku")) {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match properties.get("products").and_then(Json::as_array) {
        Some(items) => items.iter().filter_map(id_of).collect(),
        None => id_of(properties).into_iter().collect(),
    }
}

fn runtime_products(runtime: &dyn Runtime) -> Vec<String> {
    let Some(properties) = lookup(runtime, &["event", "properties"]) else { return Vec::new() };
    let id_of = |p: &dyn ValueView| -> Option<String> {
        let object = p.as_object()?;
        ["product_id", "id", "sku"]
            .iter()
            .filter_map(|k| object.get(k))
            .find(|v| !v.is_nil())
            .map(|v| v.to_kstr().to_string())
    };
    let Some(object) = properties.as_object() else { return Vec::new() };
    match object.get("products").and_then(|p| p.as_array()) {
        Some(items) => items.values().filter_map(id_of).collect(),
        None => id_of(properties.as_view()).into_iter().collect(),
    }
}

// ---- {% recommend placement: "cart_cross_sell", limit: 3 %} ------------------------------------------------

#[derive(Clone)]
pub struct RecommendTag {
    pub picker: Arc<dyn ProductPicker>,
}

impl TagReflection for RecommendTag {
    fn tag(&self) -> &str {
        "recommend"
    }

    fn description(&self) -> &str {
        "Puts products from a recommendation placement in a variable (default `recommendations`): \
         {% recommend placement: \"cart_cross_sell\", limit: 3 %}{% for product in recommendations %}…{% endfor %}"
    }
}

impl ParseTag for RecommendTag {
    fn parse(&self, mut arguments: TagTokenIter<'_>, _options: &Language) -> Result<Box<dyn Renderable>> {
        let mut placement = None;
        let mut limit = None;
        let mut products = None;
        let mut name = KString::from_static("recommendations");
        while let Some(token) = arguments.next() {
            if token.as_str() == "," {
                continue;
            }
            let key = token.expect_identifier().into_result()?.to_owned();
            arguments
                .expect_next("\":\" expected")?
                .expect_str(":")
                .into_result_custom_msg("expected \":\" after the argument name")?;
            let value = arguments.expect_next("a value expected")?.expect_value().into_result()?;
            match key.as_str() {
                "placement" => placement = Some(value),
                "limit" => limit = Some(value),
                "products" | "product" => products = Some(value),
                "as" => match value.into_literal() {
                    Some(Value::Scalar(s)) => name = KString::from_string(s.into_string().to_string()),
                    _ => return Err(Error::with_msg("`as:` takes a quoted variable name")),
                },
                other => {
                    return Err(Error::with_msg(format!(
                        "unknown argument `{other}` for recommend (expected placement, limit, products, as)"
                    )));
                }
            }
        }
        let placement = placement.ok_or_else(|| Error::with_msg("recommend needs `placement: \"name\"`"))?;
        Ok(Box::new(Recommend { picker: self.picker.clone(), placement, limit, products, name }))
    }

    fn reflection(&self) -> &dyn TagReflection {
        self
    }
}

struct Recommend {
    picker: Arc<dyn ProductPicker>,
    placement: Expression,
    limit: Option<Expression>,
    products: Option<Expression>,
    name: KString,
}

impl fmt::Debug for Recommend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recommend placement: {}", self.placement)
    }
}

pub const MAX_RECOMMENDED: usize = 20;

impl Renderable for Recommend {
    fn render_to(&self, _writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let placement = self.placement.evaluate(runtime)?.to_kstr().to_string();
        let limit = match &self.limit {
            Some(limit) => limit.evaluate(runtime)?.as_scalar().and_then(|s| s.to_integer()).unwrap_or(3),
            None => 3,
        };
        let limit = limit.clamp(1, MAX_RECOMMENDED as i64) as usize;
        let products = match &self.products {
            Some(expr) => match expr.try_evaluate(runtime) {
                Some(v) => match v.as_array() {
                    Some(items) => items.values().map(|i| i.to_kstr().to_string()).collect(),
                    None if !v.is_nil() => vec![v.to_kstr().to_string()],
                    None => Vec::new(),
                },
                None => Vec::new(),
            },
            None => runtime_products(runtime),
        };
        let profile_id = lookup_str(runtime, &["profile", "id"]).and_then(|s| s.parse().ok());
        let request = PickRequest { profile_id, products, limit };
        // A recommendation outage must not stop the message: the block renders its empty state.
        let picked = self.picker.pick(&placement, &request).unwrap_or_default();
        let items = picked.iter().take(limit).map(product_value).collect();
        runtime.set_global(self.name.clone(), Value::Array(items));
        Ok(())
    }
}

fn product_value(product: &Json) -> Value {
    let mut object = liquid_core::Object::new();
    for field in PRODUCT_FIELDS {
        object.insert(KString::from_static(field), Value::Nil);
    }
    if let Some(map) = product.as_object() {
        for (k, v) in map {
            object.insert(KString::from_string(k.clone()), json_to_liquid(v));
        }
    }
    Value::Object(object)
}

pub fn json_to_liquid(value: &Json) -> Value {
    match value {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::scalar(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::scalar(i),
            None => Value::scalar(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::scalar(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_liquid).collect()),
        Json::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (KString::from_string(k.clone()), json_to_liquid(v))).collect())
        }
    }
}

// ---- filters ---------------------------------------------------------------------------------------------------

macro_rules! simple_filter {
    ($parser:ident, $filter:ident, $name:literal, $description:literal, $params:expr) => {
        #[derive(Clone, Default)]
        pub struct $parser;

        impl FilterReflection for $parser {
            fn name(&self) -> &str {
                $name
            }
            fn description(&self) -> &str {
                $description
            }
            fn positional_parameters(&self) -> &'static [ParameterReflection] {
                $params
            }
            fn keyword_parameters(&self) -> &'static [ParameterReflection] {
                &[]
            }
        }

        impl ParseFilter for $parser {
            fn parse(&self, mut arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
                let argument = arguments.positional.next();
                if arguments.positional.next().is_some() {
                    return Err(Error::with_msg(concat!($name, " takes at most one argument")));
                }
                if arguments.keyword.next().is_some() {
                    return Err(Error::with_msg(concat!($name, " takes no keyword arguments")));
                }
                Ok(Box::new($filter { argument }))
            }
            fn reflection(&self) -> &dyn FilterReflection {
                self
            }
        }

        #[derive(Debug)]
        struct $filter {
            argument: Option<Expression>,
        }

        impl fmt::Display for $filter {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match &self.argument {
                    Some(a) => write!(f, "{}: {}", $name, a),
                    None => f.write_str($name),
                }
            }
        }
    };
}

simple_filter!(
    MoneyFilter,
    Money,
    "money",
    "Formats an amount in the store's currency (or the one given) for the recipient's locale: {{ 1200 | money }}",
    &[ParameterReflection { name: "currency", description: "ISO 4217 code", is_optional: true }]
);

impl Filter for Money {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let Some(amount) = input.as_scalar().and_then(|s| s.to_float()) else {
            // Nothing to format (a missing price): print nothing rather than fail the message.
            return Ok(Value::scalar(""));
        };
        let currency = match &self.argument {
            Some(a) => a.evaluate(runtime)?.to_kstr().to_string(),
            None => lookup_str(runtime, &["store", "currency"]).unwrap_or_else(|| "USD".into()),
        };
        let locale = lookup_str(runtime, &["recipient", "locale"])
            .or_else(|| lookup_str(runtime, &["store", "locale"]))
            .unwrap_or_else(|| "en".into());
        Ok(Value::scalar(format_money(amount, &currency, &locale)))
    }
}

simple_filter!(
    JsonFilter,
    JsonText,
    "json",
    "Writes a value as JSON (for webhook payloads): {{ profile.first_name | json }}",
    &[]
);

impl Filter for JsonText {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> Result<Value> {
        let text = serde_json::to_string(&input.to_value()).unwrap_or_else(|_| "null".into());
        Ok(Value::scalar(text))
    }
}

simple_filter!(
    LocalDateFilter,
    LocalDate,
    "local_date",
    "Formats a time in the recipient's time zone (else the store's) with a strftime pattern: \
     {{ event.timestamp | local_date: \"%Y-%m-%d %H:%M\" }}",
    &[ParameterReflection { name: "format", description: "strftime pattern, default %Y-%m-%d", is_optional: true }]
);

/// Reads a time the way events carry it: RFC 3339 text, `now`, or seconds since the epoch.
fn parse_time(input: &dyn ValueView, now: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let scalar = input.as_scalar()?;
    if let Some(seconds) = scalar.to_integer() {
        return DateTime::from_timestamp(seconds, 0);
    }
    let text = scalar.to_kstr();
    let text = text.as_str().trim();
    if text.eq_ignore_ascii_case("now") || text.eq_ignore_ascii_case("today") {
        return now;
    }
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc)).or_else(|| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .map(|t| t.and_utc())
    })
}

impl Filter for LocalDate {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let now = lookup_str(runtime, &["now"])
            .and_then(|n| DateTime::parse_from_rfc3339(&n).ok())
            .map(|t| t.with_timezone(&Utc));
        let Some(time) = parse_time(input, now) else { return Ok(Value::scalar("")) };
        let format = match &self.argument {
            Some(a) => a.evaluate(runtime)?.to_kstr().to_string(),
            None => "%Y-%m-%d".to_owned(),
        };
        let zone: Tz = lookup_str(runtime, &["recipient", "timezone"])
            .or_else(|| lookup_str(runtime, &["store", "timezone"]))
            .and_then(|z| z.parse().ok())
            .unwrap_or(Tz::UTC);
        let mut out = String::new();
        use std::fmt::Write as _;
        // A bad pattern from a template author prints the ISO date instead of failing the message.
        if write!(out, "{}", time.with_timezone(&zone).format(&format)).is_err() {
            out = time.with_timezone(&zone).format("%Y-%m-%d").to_string();
        }
        Ok(Value::scalar(out))
    }
}
