//! The cluster inside the test's process: leakless's operators through the
//! codec, and builds on a scheduler with two executors whose shuffle reads
//! all go over the network, byte-identical to the embedded build.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{dataset_files, examples, manifest_data};
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionContext;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use leakless::Build;
use leakless::pipeline::{Embedded, Engine};
use leakless_cluster::{Cluster, LeaklessCodec};

/// The rich example's build, or the marketplace's.
fn build(spec: &str, out: &Path) -> Build {
    Build::from_spec_file(examples().join(spec).join("leakless.toml"), out).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Every operator of ours (scan, bucket sort, point in time, write, and
/// the split by key's route and key groups) encodes and decodes to the
/// same plan, which writes the same files.
#[test]
fn every_operator_survives_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    for (spec, split) in [("rich", true), ("rich", false), ("marketplace", true)] {
        let (before, after) = (
            dir.path().join(format!("{spec}-{split}-a")),
            dir.path().join(format!("{spec}-{split}-b")),
        );
        // Every key salted: the routes of the key groups salt their rows.
        let build = |spec: &str, out: &Path| {
            build(spec, out)
                .with_split_by_key(split)
                .with_target_partitions(3)
                .with_hot_keys(leakless::HotKeys::Every)
        };
        let (hot, plan) = runtime
            .block_on(build(spec, &before).plans_into(&before, true))
            .unwrap();
        assert_eq!(hot.is_some(), split);
        let codec = LeaklessCodec::default();
        let round_trip = |plan: &Arc<dyn ExecutionPlan>| {
            let bytes = PhysicalPlanNode::try_from_physical_plan(plan.clone(), &codec).unwrap();
            let decoded = bytes
                .try_into_physical_plan(&SessionContext::new().task_ctx(), &codec)
                .unwrap();
            // Encoded again, it is the same bytes: nothing was lost on the way.
            let again = PhysicalPlanNode::try_from_physical_plan(decoded.clone(), &codec).unwrap();
            assert_eq!(again, bytes, "{spec}: decoding lost something");
            decoded
        };
        let shown = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).indent(true).to_string();
        let decoded = round_trip(&plan);
        // Every operator of ours is in the plan, and comes back as itself.
        let kinds = node_names(&plan);
        // Split by key, each scan is inside its route.
        let mut ours = vec!["WriteExec", "PointInTimeExec", "BucketSortExec"];
        ours.extend(match split {
            true => ["RouteExec", "RepartitionExec", "SortExec", "ProjectionExec"].as_slice(),
            false => ["ScanExec"].as_slice(),
        });
        for node in ours {
            assert!(kinds.iter().any(|k| k == node), "{node} missing: {kinds:?}");
        }
        assert_eq!(node_names(&decoded), kinds);
        assert_eq!(shown(&decoded), shown(&plan));
        if split {
            assert!(shown(&plan).contains("__leakless_salt"), "nothing salted");
        }
        // The hot keys' plan gives the same summaries decoded.
        if let Some(hot) = &hot {
            let decoded = round_trip(hot);
            assert_eq!(
                node_names(&decoded),
                ["HotKeysExec", "RouteExec", "DataSourceExec"]
            );
            let summaries = |p: Arc<dyn ExecutionPlan>| {
                let batches = runtime.block_on(Embedded.run(p)).unwrap();
                let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches);
                shown.unwrap().to_string()
            };
            let (a, b) = (summaries(hot.clone()), summaries(decoded));
            assert!(a.lines().count() > 8, "{a}");
            assert_eq!(a, b);
        }
        // The decoded plan writes into the same folder name: point it at
        // another by encoding a plan made for it, and compare the files.
        let (_, other) = runtime
            .block_on(build(spec, &after).plans_into(&after, true))
            .unwrap();
        let other = round_trip(&other);
        runtime.block_on(Embedded.run(plan)).unwrap();
        runtime.block_on(Embedded.run(other)).unwrap();
        // The group tasks' loads tell seconds: every other file is equal.
        let files = |dir: &Path| {
            let mut files = dataset_files(dir);
            files.retain(|name, _| !name.starts_with("_stats/load-"));
            files
        };
        let (a, b) = (files(&before), files(&after));
        assert!(!a.is_empty());
        assert_eq!(a, b, "{spec}: the decoded plan wrote other files");
    }
}

/// The names of a plan's nodes, depth first.
fn node_names(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut names = vec![plan.name().to_owned()];
    for child in plan.children() {
        names.extend(node_names(child));
    }
    names
}

/// A scheduler and two executors in this process; builds of the
/// marketplace and the rich example on 1, 3 and 8 partitions, by output
/// bucket and split by key, equal the embedded build, file for file.
#[test]
fn builds_on_an_in_process_cluster_equal_the_embedded_build() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let scheduler = runtime
        .block_on(leakless_cluster::serve::in_process(2, 2))
        .unwrap();
    let cluster = Cluster::new(&scheduler.to_string()).with_remote_shuffle_reads();
    for (spec, split) in [
        ("marketplace", false),
        ("rich", false),
        ("marketplace", true),
        ("rich", true),
    ] {
        let cluster = cluster.clone().with_split_by_key(split);
        let embedded = dir.path().join(format!("{spec}-{split}-embedded"));
        runtime.block_on(build(spec, &embedded).execute()).unwrap();
        let expected = dataset_files(&embedded);
        let manifest = manifest_data(&embedded);
        for partitions in [1, 3, 8] {
            let out = dir.path().join(format!("{spec}-{split}-{partitions}"));
            let summary = runtime
                .block_on(
                    build(spec, &out)
                        .with_target_partitions(partitions)
                        .execute_on(&cluster),
                )
                .unwrap();
            assert_eq!(summary.target_partitions, partitions);
            assert_eq!(
                dataset_files(&out),
                expected,
                "{spec} on {partitions} partitions, split {split}"
            );
            assert_eq!(
                manifest_data(&out),
                manifest,
                "{spec} on {partitions} partitions, split {split}"
            );
        }
    }
}

/// A cluster build of a Delta table: the executors write the files (named
/// with the client's run), the client commits them; the same files as the
/// embedded build's table, whose version 0 it is too.
#[cfg(feature = "delta")]
#[test]
fn a_cluster_build_commits_the_embedded_builds_delta_table() {
    use leakless::spec::OutputFormat;
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let scheduler = runtime
        .block_on(leakless_cluster::serve::in_process(2, 2))
        .unwrap();
    let cluster = Cluster::new(&scheduler.to_string()).with_remote_shuffle_reads();
    // The table's current files by name without the run, with their bytes.
    let table_files = |table: &Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        (leakless::write::data_files(table).unwrap().into_iter())
            .map(|path| {
                let name = path.strip_prefix(table).unwrap().display().to_string();
                let (folder, file) = name.rsplit_once("part-").unwrap();
                (
                    format!("{folder}part-{}", &file[..5]),
                    std::fs::read(&path).unwrap(),
                )
            })
            .collect()
    };
    let embedded = dir.path().join("embedded");
    let summary = runtime
        .block_on(
            build("rich", &embedded)
                .with_format(OutputFormat::Delta)
                .execute(),
        )
        .unwrap();
    assert_eq!(summary.delta_version, Some(0));
    let out = dir.path().join("cluster");
    let summary = runtime
        .block_on(
            build("rich", &out)
                .with_format(OutputFormat::Delta)
                .with_target_partitions(3)
                .execute_on(&cluster),
        )
        .unwrap();
    assert_eq!(summary.delta_version, Some(0));
    let expected = table_files(&embedded);
    assert!(!expected.is_empty());
    assert_eq!(table_files(&out), expected);
    let (version, info) = leakless::write::delta::latest_commit(&out)
        .unwrap()
        .unwrap();
    assert_eq!(version, 0);
    assert_eq!(info["leakless"]["rows_written"], summary.rows_written);
    // The executors named the files with the client's run.
    let run = info["leakless"]["run"].as_str().unwrap().to_owned();
    for path in leakless::write::data_files(&out).unwrap() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(&format!("-{run}.parquet")), "{name}");
    }
}

/// A bad input row stops a cluster build with the embedded build's message
/// (file, line, column and value), not the engine's debug text.
#[test]
fn a_bad_row_on_the_cluster_is_told_as_locally() {
    let dir = tempfile::tempdir().unwrap();
    let market = examples().join("marketplace");
    for file in ["impressions.csv", "clicks.csv", "listings.csv"] {
        std::fs::copy(market.join(file), dir.path().join(file)).unwrap();
    }
    let impressions = dir.path().join("impressions.csv");
    let text = std::fs::read_to_string(&impressions).unwrap();
    let bad: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| match i {
            2 => "1,2,3,\"not a \"time\"\"\n".to_owned(),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&impressions, bad).unwrap();
    let build = |out: &str| {
        let d = dir.path();
        Build::new(
            d.join("impressions.csv"),
            d.join("clicks.csv"),
            d.join("listings.csv"),
            d.join(out),
        )
    };
    let runtime = runtime();
    let local = runtime.block_on(build("local").execute()).unwrap_err();
    assert!(local.to_string().contains("line 3"), "{local}");
    let scheduler = runtime
        .block_on(leakless_cluster::serve::in_process(1, 1))
        .unwrap();
    // By output bucket the writer meets the row; split by key, the scan's
    // route does.
    for split in [false, true] {
        let cluster = Cluster::new(&scheduler.to_string()).with_split_by_key(split);
        let remote = runtime
            .block_on(
                build(&format!("remote-{split}"))
                    .with_target_partitions(2)
                    .execute_on(&cluster),
            )
            .unwrap_err();
        assert_eq!(remote.to_string(), local.to_string(), "split {split}");
    }
}
