//! Vocabulary every Kizuna crate shares: error codes and the one error shape, the clock, and the hook that gives
//! freed memory back.

pub mod clock;
pub mod error;
pub mod memory;
pub mod telemetry;

pub use clock::{Clock, SystemClock, TestClock};
pub use error::{Code, KizunaError};
