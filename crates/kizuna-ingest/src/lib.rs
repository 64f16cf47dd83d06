//! The ingest domain: messages in the Segment HTTP tracking API format (`identify`, `track`, `page`, `screen`,
//! `group`, `alias`, `batch`), validated and normalised into [`Event`]s. Pure: no I/O, time comes in as values.

mod ecommerce;
mod message;

pub use ecommerce::{EcommerceEvent, classify};
pub use message::{Endpoint, Event, JUNK_IDS, Limits, MessageType, ParsedRequest, parse_message, parse_request};
