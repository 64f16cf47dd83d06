//! The write path. Requests are validated by the caller (see `kizuna-ingest`) and handed to a single writer
//! thread that owns the identity graph and the store's writer. The writer takes every command waiting in its
//! queue, applies them in one transaction and commits once (group commit): many requests share one fsync, and
//! each is answered only after the commit that holds it, so an acknowledged event is durable.
//!
//! One writer also makes concurrency simple: two events of the same person never race, merges see a
//! consistent graph, and the order of application is the order of the queue.

mod bodies;
mod feed;
mod state_cache;
mod writer;

pub use feed::{Committed, FedEvent, FeedChange, FeedSink};

pub use writer::{ErasureReceipt, IngestReceipt, Pipeline, PipelineConfig, PipelineError};
