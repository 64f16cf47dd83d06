//! # kizuna-segments — who a message is for, in the words of the trade
//!
//! A segment definition is a [`Condition`] tree. It has two interchangeable forms: JSON (serde of [`ast`], for
//! the API and the UI) and a text syntax ([`parse`] / [`print`], for people, the CLI and version control) that
//! parses to the same tree and prints back from it.
//!
//! [`summary`] and [`engine`] keep membership current incrementally: per-profile state cut to what the
//! definitions read, re-evaluation of only the affected definitions, and a timer queue for time passing.
//!
//! This crate is pure: no I/O, and "now" is always a parameter.

pub mod ast;
mod by_profile;
pub mod engine;
pub mod eval;
pub mod parse;
pub mod print;
pub mod summary;
pub mod templates;
pub mod validate;

pub use ast::*;
pub use eval::{Evaluation, EventFact, ProfileView, evaluate};
pub use parse::{ParseError, parse};
pub use print::print;
pub use print::print_pretty;
pub use validate::{DefinitionError, check, check_definitions, from_json};
