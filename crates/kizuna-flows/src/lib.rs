//! # kizuna-flows — automated customer journeys (pure)
//!
//! A flow is a versioned document ([`definition`]): a trigger (event, segment entered/exited, a date
//! attribute, a schedule, manual enrolment), entry rules, a flow filter, a conversion goal and steps. It is
//! checked before it is saved ([`validate`]). [`machine`] moves one person's run through the steps; the live
//! engine (`kizuna-flows-service`) persists runs and carries out their actions, [`simulate`] replays a draft
//! over history without sending anything, through the same machine. [`lift`] measures a flow against its
//! hold-out. [`starters`] are the shipped flow templates.
//!
//! No I/O here, and "now" is always a parameter.

pub mod definition;
pub mod lift;
pub mod machine;
pub mod person;
pub mod simulate;
pub mod starters;
pub mod time;
pub mod validate;

pub use definition::{DateTrigger, FlowDefinition, Step, StepKind, Trigger};
pub use machine::{Action, PersonContext, Run, RunStatus, StepRecord, TriggerInfo};
pub use validate::{FlowError, Resolver};

#[cfg(test)]
mod tests;
