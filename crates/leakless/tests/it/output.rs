//! The dataset on disk: determinism, commit by rename, overwrite rules.

use leakless::Error;

use crate::common::{Inputs, data_files};

const IMPRESSIONS: &str = "
    impression_id,user_id,listing_id,impression_ts
    1,10,1,2026-10-01T12:00:00Z
    2,20,2,2026-10-02T18:00:00Z
    3,20,2,2026-10-02T06:00:00Z
";
const CLICKS: &str = "
    listing_id,click_ts
    1,2026-10-01T11:00:00Z
    2,2026-10-05T00:00:00Z
";
const LISTINGS: &str = "
    listing_id,category,price,created_ts
    1,shoes,10.5,2026-09-30T00:00:00Z
";

fn snapshot(inputs: &Inputs) -> Vec<(String, Vec<u8>)> {
    let out = inputs.out();
    let mut files: Vec<_> = data_files(&out)
        .into_iter()
        .chain(std::iter::once(out.join("_manifest.json")))
        .map(|p| {
            (
                p.strip_prefix(&out).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_same_inputs_give_the_same_bytes_whatever_the_partitions() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    inputs.run(None, 1).unwrap();
    let first = snapshot(&inputs);
    inputs.run(None, 1).unwrap();
    assert_eq!(snapshot(&inputs), first);
    assert_eq!(
        first.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        [
            "_manifest.json",
            "dt=2026-10-01/part-00000.parquet",
            "dt=2026-10-02/part-00000.parquet"
        ]
    );
    // Only the settings line of the manifest may differ with other partitions.
    inputs.run(None, 8).unwrap();
    let data = |s: &[(String, Vec<u8>)]| {
        s.iter()
            .filter(|f| f.0 != "_manifest.json")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(data(&snapshot(&inputs)), data(&first));
}

#[test]
fn an_existing_dataset_is_replaced_only_with_overwrite() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    inputs.run(None, 2).unwrap();
    let build = || inputs.build();
    let rt = crate::common::runtime();
    assert!(matches!(
        rt.block_on(build().execute()),
        Err(Error::OutputExists { why: None, .. })
    ));
    rt.block_on(build().with_overwrite(true).execute()).unwrap();
    // A folder that is not a dataset is never replaced.
    std::fs::remove_file(inputs.out().join("_manifest.json")).unwrap();
    assert!(matches!(
        rt.block_on(build().with_overwrite(true).execute()),
        Err(Error::OutputExists { why: Some(_), .. })
    ));
}

#[test]
fn a_failed_build_leaves_the_previous_dataset_and_no_temporary_files() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    inputs.run(None, 2).unwrap();
    let before = snapshot(&inputs);
    std::fs::write(
        inputs.path("impressions.csv"),
        "impression_id,user_id,listing_id,impression_ts\n1,10,1,yesterday\n",
    )
    .unwrap();
    assert!(matches!(inputs.run(None, 2), Err(Error::BadRow(_))));
    assert_eq!(snapshot(&inputs), before);
    let mut names: Vec<String> = std::fs::read_dir(inputs.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".dataset.leakless-lock",
            "clicks.csv",
            "dataset",
            "impressions.csv",
            "listings.csv"
        ]
    );
}

#[test]
fn the_manifest_records_inputs_watermark_and_partitions() {
    let inputs = Inputs::new(IMPRESSIONS, CLICKS, LISTINGS);
    inputs.run(Some("2026-10-03T12:00:00Z"), 2).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inputs.out().join("_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["watermarks"]["clicked"],
        "2026-10-03T12:00:00.000000Z"
    );
    assert_eq!(manifest["feature_set_hash"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["spec"]["derived"].as_array().unwrap().len(), 6);
    assert_eq!(manifest["watermark_source"], "--watermark");
    assert_eq!(manifest["immature_held_back"], 1);
    assert_eq!(manifest["rows_written"], 2);
    assert_eq!(manifest["rows_read"]["impressions"], 3);
    assert_eq!(manifest["partitions"][1]["partition"], "dt=2026-10-02");
    assert_eq!(manifest["partitions"][1]["rows"], 1);
    let clicks = &manifest["inputs"]["clicks"][0];
    assert_eq!(clicks["rows"], 2);
    assert_eq!(clicks["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["columns"].as_array().unwrap().len(), 10);
}

#[test]
fn without_partitioning_every_row_lands_in_one_file_whatever_its_time() {
    // Rows before 1970 and after it, and a null dimension key that matches
    // nothing (a key column may be empty).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spine.csv"),
        "id,k,ts\n1,5,1969-12-31T23:00:00Z\n2,5,2026-10-01T00:00:00Z\n3,6,2026-10-02T00:00:00Z\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("dim.csv"), "k,v\n5,a\n,b\n").unwrap();
    std::fs::write(
        dir.path().join("spec.toml"),
        r#"
version = 1
[sources.spine]
path = "spine.csv"
time = "ts"
columns = { id = "int64", k = "int64", ts = "timestamp" }
[sources.dim]
path = "dim.csv"
key = "k"
columns = { k = "int64", v = "string" }
[spine]
source = "spine"
columns = ["id", "k"]
[features.v]
source = "dim"
op = "lookup"
column = "v"
[output]
partition = "none"
"#,
    )
    .unwrap();
    let out = dir.path().join("dataset");
    let build = leakless::Build::from_spec_file(dir.path().join("spec.toml"), &out)
        .unwrap()
        .with_target_partitions(2);
    let summary = crate::common::runtime().block_on(build.execute()).unwrap();
    assert_eq!((summary.rows_written, summary.files), (3, 1));
    assert!(out.join("part-00000.parquet").is_file());
}

#[test]
fn hourly_partitions_are_named_by_utc_date_and_hour() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spine.csv"),
        "id,ts\n1,2026-10-01T00:59:59.999999Z\n2,2026-10-01T01:00:00Z\n3,2026-10-02T23:30:00+02:00\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("spec.toml"),
        "version = 1\n[sources.s]\npath = \"spine.csv\"\ntime = \"ts\"\ncolumns = { id = \"int64\", ts = \"timestamp\" }\n[spine]\nsource = \"s\"\ncolumns = [\"id\"]\n[output]\npartition = \"hour\"\n",
    )
    .unwrap();
    let out = dir.path().join("dataset");
    let build = leakless::Build::from_spec_file(dir.path().join("spec.toml"), &out).unwrap();
    crate::common::runtime().block_on(build.execute()).unwrap();
    for file in [
        "dt=2026-10-01/hour=00/part-00000.parquet",
        "dt=2026-10-01/hour=01/part-00000.parquet",
        "dt=2026-10-02/hour=21/part-00000.parquet",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
}

/// The file's data lines in a seeded random order (header kept first).
fn shuffle_lines(path: &std::path::Path, seed: u64) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.remove(0);
    let mut state = seed;
    for i in (1..lines.len()).rev() {
        // SplitMix64 steps: a fixed permutation for a fixed seed.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        lines.swap(i, (z % (i as u64 + 1)) as usize);
    }
    let mut out = String::from(header);
    for line in lines {
        out.push('\n');
        out.push_str(line);
    }
    out.push('\n');
    std::fs::write(path, out).unwrap();
}

#[test]
fn shuffled_inputs_give_the_same_bytes_at_every_partition_count() {
    // Real logs arrive out of order: the marketplace's features and label
    // do not depend on the order of rows, so neither may a single byte.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut params = leakless::synth::Params::new(30_000);
    params.format = leakless::synth::OutputFormat::Csv;
    params.days = 5;
    leakless::synth::generate(&params, &data).unwrap();
    let build = |partitions: usize, name: &str| {
        let out = dir.path().join(name);
        let build = crate::common::generated_build(&data, &out).with_target_partitions(partitions);
        // With 2 partitions every batch of the spine is spilled to disk
        // and read back.
        let build = if partitions == 2 {
            build.with_spill_bytes(0)
        } else {
            build
        };
        crate::common::runtime().block_on(build.execute()).unwrap();
        // The manifest's data part: everything but the settings as given
        // (which name the output folder).
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
        manifest.as_object_mut().unwrap().remove("settings");
        (crate::common::dataset_bytes(&out), manifest)
    };
    let (ordered, _) = build(1, "ordered");
    assert!(ordered.len() >= 4, "{} files", ordered.len());
    for name in ["impressions.csv", "clicks.csv", "listings.csv"] {
        shuffle_lines(&data.join(name), 7);
    }
    let mut manifests = Vec::new();
    for partitions in [1, 2, 8] {
        let (shuffled, manifest) = build(partitions, &format!("shuffled-{partitions}"));
        assert!(
            shuffled == ordered,
            "shuffled input with {partitions} partitions wrote other bytes"
        );
        manifests.push(manifest);
    }
    // Counts, watermarks, partitions and files, inputs and their hashes:
    // the same whatever the partitioning.
    assert_eq!(manifests[0], manifests[1]);
    assert_eq!(manifests[0], manifests[2]);
}

#[test]
fn the_first_bad_spine_file_in_path_order_is_the_one_reported() {
    // Files are read on several tasks, whether the spine is only bucketed
    // or also indexed: whichever fails first in time, the error is the one
    // a sequential read meets first, `b.csv` at its last line, not `c.csv`
    // (bad at once).
    let dir = tempfile::tempdir().unwrap();
    let spine = dir.path().join("spine");
    std::fs::create_dir(&spine).unwrap();
    let good = |n: usize| -> String {
        (0..n)
            .map(|i| format!("{i},2026-10-01T00:00:{:02}Z\n", i % 60))
            .collect()
    };
    std::fs::write(spine.join("a.csv"), format!("id,ts\n{}", good(10))).unwrap();
    std::fs::write(
        spine.join("b.csv"),
        format!("id,ts\n{}x,2026-10-01T00:00:00Z\n", good(50_000)),
    )
    .unwrap();
    std::fs::write(spine.join("c.csv"), "id,ts\ny,2026-10-01T00:00:00Z\n").unwrap();
    std::fs::write(spine.join("d.csv"), format!("id,ts\n{}", good(10))).unwrap();
    std::fs::write(
        dir.path().join("events.csv"),
        "id,ts\n1,2026-09-01T00:00:00Z\n",
    )
    .unwrap();
    for feature_source in ["events", "spine"] {
        std::fs::write(
            dir.path().join("spec.toml"),
            format!(
                r#"
version = 1
[sources.spine]
path = "spine"
time = "ts"
columns = {{ id = "int64", ts = "timestamp" }}
[sources.events]
path = "events.csv"
time = "ts"
columns = {{ id = "int64", ts = "timestamp" }}
[spine]
source = "spine"
columns = ["id"]
[features.n]
source = "{feature_source}"
key = "id"
op = "count"
window = "lifetime"
"#
            ),
        )
        .unwrap();
        for partitions in [1, 2, 3, 8] {
            let out = dir
                .path()
                .join(format!("dataset-{feature_source}-{partitions}"));
            let build = leakless::Build::from_spec_file(dir.path().join("spec.toml"), &out)
                .unwrap()
                .with_target_partitions(partitions);
            let err = crate::common::runtime()
                .block_on(build.execute())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("b.csv") && err.contains("line 50002"),
                "{feature_source}, {partitions} partitions: {err}"
            );
            assert!(!out.exists());
        }
    }
}
