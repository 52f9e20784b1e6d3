//! The library's spec oracle (random specs and data with many ties and
//! events on every bound, checked cell by cell against a brute-force oracle
//! written from the definitions, byte-identical across 1, 2 and 8
//! partitions, and its hand-computed cases), with every build run on an
//! in-process cluster: a scheduler and two executors whose shuffle reads
//! all go over the network.

use std::sync::OnceLock;

use leakless::pipeline::Engine;
use leakless_cluster::Cluster;

#[allow(dead_code)]
#[path = "../../leakless/tests/it/common.rs"]
mod common;
#[path = "../../leakless/tests/it/exact_sum.rs"]
mod exact_sum;
#[path = "../../leakless/tests/it/spec_oracle.rs"]
mod spec_oracle;

/// The cluster every build of the oracle runs on, started once.
pub fn engine() -> &'static dyn Engine {
    static CLUSTER: OnceLock<(tokio::runtime::Runtime, Cluster)> = OnceLock::new();
    &CLUSTER
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let scheduler = runtime
                .block_on(leakless_cluster::serve::in_process(2, 2))
                .unwrap();
            // Split by key (the default, said here so that it stays so;
            // the plan by output bucket is run by the other tests).
            let cluster = Cluster::new(&scheduler.to_string())
                .with_remote_shuffle_reads()
                .with_split_by_key(true);
            (runtime, cluster)
        })
        .1
}
