//! leakless turns raw event logs into point-in-time correct training data.
//!
//! A spec (TOML) declares sources, keys, features over exact windows,
//! as-of lookups of dimensions and forward-looking labels; leakless writes
//! one row per mature spine row with features that look only backward in
//! time and labels that look only forward, as time-partitioned Parquet. See
//! `docs/semantics.md` in the repository for the exact definitions.
//!
//! ```no_run
//! # async fn run() -> leakless::Result<()> {
//! let summary = leakless::Build::from_spec_file("examples/marketplace/leakless.toml", "dataset")?
//!     .execute()
//!     .await?;
//! // Impressions whose 24 h label window is still open are held back.
//! let read = summary.rows_read["impressions"];
//! assert_eq!(summary.rows_written + summary.immature_held_back, read);
//! # Ok(())
//! # }
//! ```
//!
//! The pieces, in data-flow order: [`spec`] (what to compute), [`ingest`]
//! (files to typed batches), [`order`] (the spine bucketed by output
//! partition and sorted), [`temporal`] (the point-in-time operator),
//! [`pipeline`] (the DataFusion plan), [`write`] (partitioned Parquet and
//! the manifest).

pub mod check;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod incremental;
pub mod ingest;
pub mod order;
pub mod pipeline;
pub mod quality;
pub mod spec;
pub mod split;
pub mod storage;
pub mod synth;
pub mod temporal;
pub mod time;
pub mod write;

pub use error::{Error, Result};
pub use pipeline::{Build, BuildSummary, HotKeys};

/// The stage a run is in, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading inputs and computing rows.
    Reading,
    /// Sorting and writing Parquet.
    Writing,
    /// Committed.
    Done,
}

/// Receives progress from a running job; the library never prints.
pub trait Reporter: Send + Sync {
    /// The run entered `stage`.
    fn stage(&self, _stage: Stage) {}
    /// `rows` output rows have been computed so far.
    fn rows(&self, _rows: u64) {}
}

/// Reports nothing.
impl Reporter for () {}
