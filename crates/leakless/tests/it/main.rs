//! Integration tests of the leakless library, one module per area.

mod common;
mod exact_sum;
mod golden;
mod hot_keys;
mod incremental;
mod ingest;
mod inputs;
mod operator;
mod oracle;
mod output;
mod quality;
mod spec_oracle;
mod synth;

/// The engine the spec oracle's builds run on: this process. The cluster
/// crate's tests run the same module on a cluster.
pub fn engine() -> &'static dyn leakless::pipeline::Engine {
    &leakless::pipeline::Embedded
}
