//! # kizuna-jobs — background work over the store
//!
//! Jobs read profiles and events that ingestion already committed and write derived data (scores, reports)
//! back in small transactions; they sit after the profile state in the data flow and never feed ingestion.
//!
//! * [`analytics_run`]: one analytics run — refit BG/NBD, Pareto/NBD and Gamma-Gamma on every buyer's net
//!   orders, score every buyer (P(alive), churn risk, expected orders in 30/90/365 days, next order date, CLV,
//!   RFM), compute the store metrics, the journey funnel and a holdout validation, and record the run.
//! * [`scheduler`]: runs it in the background on a schedule and on demand (after imports, from the API).
//! * [`facts`]: what analytics reads from a profile.
//!
//! ## Per-profile scores (what segments and templates see under `computed`)
//! | key | meaning |
//! |---|---|
//! | `rfm_recency`, `rfm_frequency`, `rfm_monetary` | 1–5 quintile scores among all buyers (5 = best) |
//! | `rfm_score`, `rfm_segment` | e.g. `"545"`, `"champions"` (see `kizuna_analytics::rfm`) |
//! | `p_alive`, `churn_risk` | probability the customer is still active, and 1 − that; for one-time buyers from Pareto/NBD |
//! | `one_time_buyer` | no repeat purchase yet |
//! | `expected_orders_30d`, `_90d`, `_365d` | BG/NBD conditional expected orders in the next 30/90/365 days |
//! | `next_order_expected_at` | the day by which one more order is expected (absent when the model expects none within 3 years) |
//! | `expected_order_value` | Gamma-Gamma conditional expected order value |
//! | `predicted_clv` | discounted expected revenue over `clv_months` (default 12, 1 %/month) |
//! | `orders_net`, `scored_at`, `analytics_run` | orders the scores are based on (same-day orders count once), when, which run |

pub mod analytics_run;
pub mod facts;
pub mod scheduler;

pub use analytics_run::{AnalyticsSettings, RunSummary, run_analytics};
pub use scheduler::AnalyticsScheduler;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] kizuna_store::StoreError),
    #[error(transparent)]
    Analytics(#[from] kizuna_analytics::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type JobResult<T> = Result<T, JobError>;
