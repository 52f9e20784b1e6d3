//! A cluster build whose inputs and output are `s3://` paths on a local
//! S3-compatible server (moto, shared with the CLI's tests) equals the
//! embedded build of the same spec on local files.

mod common;

#[allow(dead_code)]
#[path = "../../leakless-cli/tests/common/mod.rs"]
mod cli_common;

use std::process::Command;

use cli_common::moto::Server;
use common::{dataset_files, examples};
use sha2::{Digest, Sha256};

#[test]
fn a_cluster_build_from_and_to_s3_equals_the_local_build() {
    let server = Server::start();
    server.bucket("lake");
    let rich = examples().join("rich");
    let mut overrides = Vec::new();
    for source in ["views", "clicks", "orders", "listing_prices", "listings"] {
        server.put(
            "lake",
            &format!("logs/{source}.csv"),
            &rich.join(format!("{source}.csv")),
        );
        overrides.push(format!("{source}=s3://lake/logs/{source}.csv"));
    }
    let local = tempfile::tempdir().unwrap();
    let expected_dir = local.path().join("rich");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(
            leakless::Build::from_spec_file(rich.join("leakless.toml"), &expected_dir)
                .unwrap()
                .execute(),
        )
        .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scheduler = runtime
        .block_on(leakless_cluster::serve::in_process(2, 1))
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_leakless-cluster"));
    command
        .envs(server.env())
        .args([
            "build",
            "--scheduler",
            &scheduler.to_string(),
            "--remote-shuffle-reads",
            "--quiet",
        ])
        .arg("--spec")
        .arg(rich.join("leakless.toml"))
        .args(["--out", "s3://lake/datasets/rich", "--partitions", "3"]);
    for o in &overrides {
        command.args(["--source", o]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The published data, file for file, and the manifest's data part.
    let manifest = server.get("lake", "datasets/rich/_manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let data = manifest["data"].as_str().unwrap().to_owned();
    let prefix = format!("datasets/rich/{data}/");
    let published: std::collections::BTreeMap<String, String> = server
        .list("lake", &prefix)
        .into_iter()
        .map(|key| {
            let digest = Sha256::digest(server.get("lake", &key));
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            (key[prefix.len()..].to_owned(), hex)
        })
        .collect();
    assert!(!published.is_empty());
    assert_eq!(published, dataset_files(&expected_dir));
    let mut expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(expected_dir.join("_manifest.json")).unwrap())
            .unwrap();
    for m in [&mut manifest, &mut expected] {
        let object = m.as_object_mut().unwrap();
        object.remove("settings");
        object.remove("data");
        for files in object["inputs"].as_object_mut().unwrap().values_mut() {
            for file in files.as_array_mut().unwrap() {
                // Where a file is, and a local file's modification time.
                file.as_object_mut().unwrap().remove("path");
                file.as_object_mut().unwrap().remove("modified_ns");
            }
        }
    }
    assert_eq!(manifest, expected);
}
