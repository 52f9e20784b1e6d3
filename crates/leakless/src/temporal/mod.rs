//! The point-in-time operator: counts of past events and labels from future
//! events for every spine row, by binary search in a per-key index.
//!
//! # Semantics
//! For a spine row with key `k` and time `t`, each [`Aggregation`] looks at
//! the events with key `k` whose time falls in its [`Window`]:
//! - `Past { lookback: None }`: `ts < t`;
//! - `Past { lookback: w }`: `t - w <= ts < t`;
//! - `Future { horizon: h }`: `t <= ts < t + h`.
//!
//! An event at exactly `t` is future. Rows with `t + h > watermark` (for the
//! largest `h`) are immature: they are dropped and counted in the
//! `held_back` metric. The watermark is fixed or the largest event time.
//!
//! # Inputs, distribution and memory
//! Child 0 is the event (build) side and must be one partition; it is
//! collected once into a [`TemporalIndex`] shared by every output partition,
//! its memory reserved from the pool. Child 1 is the spine (probe) side in
//! any partitioning; each of its batches streams through, and the output has
//! the spine's partitioning and row order with immature rows removed. Memory
//! is the index (16 bytes an event plus a hash entry a key) and one batch.
//! Nothing joins spine rows to events.
//!
//! [`Aggregation`]: crate::spec::Aggregation
//! [`Window`]: crate::spec::Window

mod exec;
pub mod index;
mod stream;
mod table;

pub use exec::{BuildSummary, PointInTimeExec};
pub use index::TemporalIndex;
pub use table::PointInTimeTable;
