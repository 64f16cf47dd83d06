//! Messaging, the pure part: templates and how they render, the send governor, tracking tokens, plain-text
//! bodies, LINE carousels, money formats and revenue attribution. No I/O: channels live in `kizuna-channels`,
//! the outbox and its worker in `kizuna-messaging-service`.

pub mod attribution;
mod data;
pub mod governor;
pub mod line;
mod liquid_ext;
pub mod model;
pub mod money;
pub mod starters;
pub mod template;
pub mod text;
pub mod tracking;

pub use data::{Data, Deferred};
pub use liquid_ext::{NoProducts, PickRequest, ProductPicker, context_products};
pub use model::{Channel, MessageState, Priority, Purpose};
pub use template::{Content, RenderContext, RenderError, Rendered, Renderer, TemplateDefinition, TemplateError};
