//! leakless on an Apache DataFusion Ballista cluster.
//!
//! The build's plan (`leakless::Build`) runs unchanged; what this crate
//! adds is the way there: [`LeaklessCodec`] carries leakless's operators
//! to the scheduler and executors (a `PhysicalExtensionCodec` that wraps
//! Ballista's own), [`Cluster`] submits a build's plan to a scheduler and
//! collects every output partition's report, and [`serve`] starts a
//! scheduler or an executor with the codec installed. See
//! `docs/cluster.md` for what runs where.

pub mod codec;
pub mod engine;
pub mod serve;

pub use codec::LeaklessCodec;
pub use engine::Cluster;
