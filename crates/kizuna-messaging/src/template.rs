//! Message templates: what a brand writes (Liquid per part), checked on save with the line and column of a
//! mistake, rendered per recipient.

use crate::data::{Data, Deferred};
use crate::line::{Carousel, carousel_message};
use crate::liquid_ext::{
    JsonFilter, LocalDateFilter, MoneyFilter, PickRequest, ProductPicker, RecommendTag, context_products,
};
use crate::model::{Channel, Purpose};
use crate::text::html_to_text;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::sync::Arc;

/// A template as stored and sent through the API.
/// Unknown fields are refused by [`Content`] (serde cannot refuse them on a struct that flattens another).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateDefinition {
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_purpose")]
    pub purpose: Purpose,
    /// The subscription topic (newsletter, back_in_stock…) a marketing message belongs to; recipients can
    /// leave one topic on the preference page and keep the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(flatten)]
    pub content: Content,
}

fn default_purpose() -> Purpose {
    Purpose::Marketing
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    Email {
        subject: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preheader: Option<String>,
        html: String,
        /// The plain-text body; made from the HTML when not given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    Sms {
        body: String,
    },
    Line {
        text: String,
        /// A product carousel (a Flex message) after the text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        carousel: Option<Carousel>,
    },
    Webhook {
        /// Liquid that renders to a JSON document.
        payload: String,
    },
}

impl Content {
    pub fn channel(&self) -> Channel {
        match self {
            Content::Email { .. } => Channel::Email,
            Content::Sms { .. } => Channel::Sms,
            Content::Line { .. } => Channel::Line,
            Content::Webhook { .. } => Channel::Webhook,
        }
    }

    fn parts(&self) -> Vec<(&'static str, &str)> {
        match self {
            Content::Email { subject, preheader, html, text } => {
                let mut parts = vec![("subject", subject.as_str()), ("html", html.as_str())];
                if let Some(p) = preheader {
                    parts.push(("preheader", p));
                }
                if let Some(t) = text {
                    parts.push(("text", t));
                }
                parts
            }
            Content::Sms { body } => vec![("body", body)],
            Content::Line { text, .. } => vec![("text", text)],
            Content::Webhook { payload } => vec![("payload", payload)],
        }
    }
}

/// A template that does not compile, with where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} line {line}, column {column}: {message}")]
pub struct TemplateError {
    /// The part (`subject`, `html`, `body`…).
    pub field: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Reads `line:column` from liquid's error text (pest prints ` --> 3:14`); 1:1 when it gives none.
fn locate(error: &str) -> (usize, usize) {
    let position = error.split("-->").nth(1).and_then(|rest| {
        let rest = rest.trim_start();
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ':')).unwrap_or(rest.len());
        let (line, column) = rest[..end].split_once(':')?;
        Some((line.parse().ok()?, column.parse().ok()?))
    });
    position.unwrap_or((1, 1))
}

fn clean_message(error: &str) -> String {
    // pest repeats the source around the caret; the first line and the "expected" line say what is wrong.
    let lines: Vec<&str> = error.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut message = lines.first().copied().unwrap_or("invalid template").to_owned();
    if let Some(expected) = lines.iter().find(|l| l.starts_with("= expected") || l.contains("expected"))
        && !message.contains(expected.trim_start_matches("= "))
    {
        message = format!("{message}: {}", expected.trim_start_matches("= "));
    }
    message
}

/// Compiles and renders templates; holds the Liquid language with Kizuna's filters and tags.
#[derive(Clone)]
pub struct Renderer {
    parser: Arc<liquid::Parser>,
    picker: Arc<dyn ProductPicker>,
}

pub struct CompiledTemplate {
    pub definition: TemplateDefinition,
    parts: Vec<(&'static str, liquid::Template)>,
}

/// Everything a template can read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RenderContext {
    /// Traits at the top level plus `id`, `email`, `phone` and `computed`.
    pub profile: Json,
    /// The event that triggered the message (`name`, `properties`, `timestamp`), or null.
    #[serde(default)]
    pub event: Json,
    /// Store settings: `name`, `url`, `currency`, `locale`, `timezone`.
    #[serde(default)]
    pub store: Json,
    /// `timezone`, `locale` of the recipient.
    #[serde(default)]
    pub recipient: Json,
    /// `id`, `unsubscribe_url`, `preferences_url` of this message.
    #[serde(default)]
    pub message: Json,
    /// RFC 3339 time of rendering.
    #[serde(default)]
    pub now: String,
    /// `profile.computed`, made only if the template reads it (it summarises the whole profile).
    #[serde(skip)]
    pub profile_computed: Option<Deferred>,
}

/// Fields every product in an event's `products` has (as nil when missing): inside `{% for %}` Liquid reads
/// plain values, which are strict about missing keys.
const EVENT_PRODUCT_FIELDS: &[&str] =
    &["product_id", "sku", "name", "price", "quantity", "category", "brand", "variant", "url", "image_url", "coupon"];

fn with_product_fields(mut event: Json) -> Json {
    if let Some(products) = event.pointer_mut("/properties/products").and_then(Json::as_array_mut) {
        for product in products.iter_mut().filter_map(Json::as_object_mut) {
            for field in EVENT_PRODUCT_FIELDS {
                product.entry(*field).or_insert(Json::Null);
            }
        }
    }
    event
}

impl RenderContext {
    /// What templates see; the context is taken apart, not copied.
    fn into_globals(self) -> Data {
        let mut globals = Data::map();
        let mut profile = if self.profile.is_object() { Data::from(self.profile) } else { Data::map() };
        if let Some(computed) = self.profile_computed {
            profile.insert_deferred("computed", computed);
        }
        globals.insert("profile", profile);
        for (key, value) in [
            ("event", with_product_fields(self.event)),
            ("store", self.store),
            ("recipient", self.recipient),
            ("message", self.message),
        ] {
            let data = if value.is_object() { Data::from(value) } else { Data::map() };
            globals.insert(key, data);
        }
        globals.insert("now", Data::from(Json::String(self.now)));
        globals
    }
}

/// A message ready for its channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Rendered {
    Email {
        subject: String,
        preheader: Option<String>,
        html: String,
        text: String,
    },
    Sms {
        body: String,
    },
    /// LINE Messaging API message objects (text, then a Flex carousel when there are products).
    Line {
        messages: Vec<Json>,
    },
    Webhook {
        payload: Json,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct RenderError {
    pub part: String,
    pub message: String,
}

impl Renderer {
    pub fn new(picker: Arc<dyn ProductPicker>) -> Renderer {
        let parser = liquid::ParserBuilder::with_stdlib()
            .filter(MoneyFilter)
            .filter(LocalDateFilter)
            .filter(JsonFilter)
            .tag(RecommendTag { picker: picker.clone() })
            .build()
            // Building the language only fails on conflicting registrations, which are fixed at compile time.
            .unwrap_or_else(|_| liquid::ParserBuilder::with_stdlib().build().unwrap_or_default());
        Renderer { parser: Arc::new(parser), picker }
    }

    /// Checks a definition: every part compiles, limits hold.
    pub fn compile(&self, definition: &TemplateDefinition) -> Result<CompiledTemplate, TemplateError> {
        let mut parts = Vec::new();
        for (field, source) in definition.content.parts() {
            if source.len() > 256 * 1024 {
                return Err(TemplateError {
                    field: field.into(),
                    line: 1,
                    column: 1,
                    message: "a part may be at most 256 KB".into(),
                });
            }
            let template = self.parser.parse(source).map_err(|e| {
                let text = e.to_string();
                let (line, column) = locate(&text);
                TemplateError { field: field.into(), line, column, message: clean_message(&text) }
            })?;
            parts.push((field, template));
        }
        match &definition.content {
            Content::Email { subject, .. } if subject.trim().is_empty() => {
                return Err(TemplateError {
                    field: "subject".into(),
                    line: 1,
                    column: 1,
                    message: "an email needs a subject".into(),
                });
            }
            Content::Line { carousel: Some(c), .. }
                if c.placement.trim().is_empty() || !(1..=10).contains(&c.limit) =>
            {
                return Err(TemplateError {
                    field: "carousel".into(),
                    line: 1,
                    column: 1,
                    message: "a carousel needs a placement and a limit from 1 to 10 (LINE shows at most 10 bubbles)"
                        .into(),
                });
            }
            _ => {}
        }
        Ok(CompiledTemplate { definition: definition.clone(), parts })
    }

    pub fn render(&self, template: &CompiledTemplate, context: RenderContext) -> Result<Rendered, RenderError> {
        // What a LINE carousel needs of the context, read before the context becomes the templates' globals.
        let carousel = match &template.definition.content {
            Content::Line { carousel: Some(carousel), .. } => Some((
                carousel,
                PickRequest {
                    profile_id: context.profile.get("id").and_then(|v| match v {
                        Json::String(s) => s.parse().ok(),
                        other => other.as_u64(),
                    }),
                    products: context_products(&context.event),
                    limit: carousel.limit,
                },
                context.store.clone(),
                context.recipient.clone(),
            )),
            _ => None,
        };
        let globals = context.into_globals();
        let render = |name: &str| -> Result<Option<String>, RenderError> {
            let Some((_, part)) = template.parts.iter().find(|(field, _)| *field == name) else { return Ok(None) };
            part.render(&globals).map(Some).map_err(|e| RenderError { part: name.into(), message: e.to_string() })
        };
        let required = |name: &str| render(name).map(Option::unwrap_or_default);
        Ok(match &template.definition.content {
            Content::Email { .. } => {
                let html = required("html")?;
                let text = match render("text")? {
                    Some(text) => text,
                    None => html_to_text(&html),
                };
                Rendered::Email {
                    subject: required("subject")?.split_whitespace().collect::<Vec<_>>().join(" "),
                    preheader: render("preheader")?,
                    html,
                    text,
                }
            }
            Content::Sms { .. } => Rendered::Sms { body: required("body")?.trim().to_owned() },
            Content::Line { .. } => {
                let mut messages = vec![json!({"type": "text", "text": required("text")?.trim()})];
                if let Some((carousel, request, store, recipient)) = carousel {
                    let products = self.picker.pick(&carousel.placement, &request).unwrap_or_default();
                    if let Some(message) = carousel_message(carousel, &products, &store, &recipient) {
                        messages.push(message);
                    }
                }
                Rendered::Line { messages }
            }
            Content::Webhook { .. } => {
                let text = required("payload")?;
                let payload = serde_json::from_str(&text).map_err(|e| RenderError {
                    part: "payload".into(),
                    message: format!("the payload did not render to JSON: {e}"),
                })?;
                Rendered::Webhook { payload }
            }
        })
    }
}
