//! Integration tests of the leakless library, one module per area.

mod common;
mod exact_sum;
mod golden;
mod ingest;
mod inputs;
mod operator;
mod oracle;
mod output;
mod spec_oracle;
mod synth;
