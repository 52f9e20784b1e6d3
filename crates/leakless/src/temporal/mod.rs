//! The point-in-time operator: features from past events, labels from
//! future events and as-of lookups of dimensions, for every spine row, by
//! binary search in per-key sorted indexes.
//!
//! # Semantics
//! For a spine row at time `t` and a derived column over a source with
//! delay `d` (see `docs/semantics.md` for every op):
//! - a feature with window `w` sees the events with `t - d - w <= e < t - d`
//!   (lifetime: `e < t - d`);
//! - a label with offset `o` and window `w` sees `t + o <= e < t + o + w`;
//! - a dimension lookup takes the row for the key (snapshot) or the version
//!   with the greatest `valid_from < t - d`.
//!
//! # Cost per spine row and index
//! The key's slot (one array read for dense int keys, a hash lookup
//! otherwise; a string key is first mapped to its id, once per spine
//! column and batch, so it is hashed once however many indexes read it),
//! a galloping search per distinct window bound (O(1) steps when the key's
//! probes come in time order, O(log n) otherwise; an index whose keys
//! average fewer events than the state has words keeps none, and its
//! probes binary-search), then per column a cost that does not grow with
//! the events in the window:
//!
//! | op | structure (built once per index) | per row |
//! |---|---|---|
//! | `count`, `exists` | the range `[a, b)` itself | O(1) |
//! | `time_since_last`, `time_since_first` | the sorted times | O(1) |
//! | int `sum`, `mean` | exact i128 prefix sums | O(1) |
//! | float `sum`, `mean` | exact fixed-point prefix sums ([`range::ExactSums`]) | O(1) |
//! | `first`, `last` | next / previous non-null position | O(1) |
//! | lifetime `min`, `max`, `count_distinct` | the answer per position of the run | O(1) |
//! | sliding `min`, `max` | block sparse table ([`range::RangeMin`]) | O(1) |
//! | sliding `count_distinct` | previous same-value positions in a wavelet matrix ([`range::DistinctCounts`]) | O(1) amortised when the key's windows move forward a little, else O(log n) |
//! | `lookup`, `time_since` (dimensions) | the version before `t - d` | O(1) |
//!
//! Labels are event ops over forward windows and use the same structures.
//!
//! Events at one instant keep input order (files in path order, then row
//! order). Rows with `t + o + w > watermark` for some label are immature:
//! dropped and counted in the `held_back` metric; rows failing the spine's
//! `where` are dropped and counted in `spine_filtered`.
//!
//! # Inputs, distribution and memory
//! Children `0..k` are the indexed sources, read whole, partition by
//! partition in order; they are collected once into [`KeyIndex`]es shared by
//! every output partition, their memory reserved from the pool. The last
//! child is the spine in any partitioning and order; each of its batches
//! streams through, and the output has the spine's partitioning and row
//! order with filtered and immature rows removed. Any order is answered
//! exactly, but each stream's cursors only step forward when its rows come
//! in time order, as [`crate::order::BucketSortExec`] gives them. Nothing
//! joins spine rows to events.
//!
//! [`KeyIndex`]: indexed::KeyIndex

mod exec;
pub mod filter;
pub mod index;
mod indexed;
mod keys;
pub mod plan;
pub mod range;
mod stream;

pub use exec::{GroupMode, IndexedSummary, PointInTimeExec, output_schema, spec_schema};
pub use filter::FilterExpr;
pub use indexed::Latest;
pub use plan::PitPlan;
