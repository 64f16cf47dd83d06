//! Vocabulary every Kizuna crate shares: error codes and the one error shape, and the clock.

pub mod clock;
pub mod error;
pub mod telemetry;

pub use clock::{Clock, SystemClock, TestClock};
pub use error::{Code, KizunaError};
