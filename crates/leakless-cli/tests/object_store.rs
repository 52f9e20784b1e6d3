//! Inputs and output on object storage (`s3://`), against a local
//! S3-compatible server (moto) that each test starts on a free 127.0.0.1
//! port and stops by its pid, also when the test fails. The server and
//! boto3 (which the tests use to put inputs and read outputs, independently
//! of leakless) are provisioned once into a virtualenv under the target
//! folder, from PyPI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

mod common;

use common::moto::Server;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn leakless(server: &Server) -> Command {
    let mut command = Command::cargo_bin("leakless").unwrap();
    command.envs(server.env());
    command
}

/// Every file below `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let relative = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            found.insert(relative, std::fs::read(&path).unwrap());
        }
    }
    found
}

/// The rich example's inputs in `dir` and under `s3://bucket/logs/`: views
/// split into a folder of two files beside a `_SUCCESS` marker and a hidden
/// file (both skipped, as in a local folder). The `--source` overrides for
/// each copy: (S3, local).
fn upload_rich(server: &Server, bucket: &str, dir: &Path) -> (Vec<String>, Vec<String>) {
    let rich = examples().join("rich");
    let views = std::fs::read_to_string(rich.join("views.csv")).unwrap();
    let mut lines = views.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let (a, b) = rows.split_at(rows.len() / 2);
    std::fs::create_dir_all(dir.join("views")).unwrap();
    for (name, part) in [("part-0.csv", a), ("part-1.csv", b)] {
        let path = dir.join("views").join(name);
        std::fs::write(&path, format!("{header}\n{}\n", part.join("\n"))).unwrap();
        server.put(bucket, &format!("logs/views/{name}"), &path);
    }
    // Left out in both: markers and hidden files, at the top and below,
    // and a folder `--ignore archive` names.
    for name in [
        "_SUCCESS",
        ".part-0.csv.crc",
        "_temporary/0/part-2.csv",
        "sub/.hidden.csv",
        "archive/old.csv",
    ] {
        let path = dir.join("views").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "not data").unwrap();
        server.put(bucket, &format!("logs/views/{name}"), &path);
    }
    // A console's folder markers (empty objects named like folders).
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    server.put(bucket, "logs/views/", &empty);
    server.put(bucket, "logs/views/sub/", &empty);
    // One whose contents are all deeper down (left out: hidden).
    server.put(bucket, "logs/views/sub/deeper/", &empty);
    server.put(bucket, "logs/views/sub/deeper/x/.hidden.csv", &empty);
    let mut remote = vec![format!("views=s3://{bucket}/logs/views/")];
    let mut local = vec![format!("views={}", dir.join("views").display())];
    for source in ["clicks", "orders", "listing_prices", "listings"] {
        let file = rich.join(format!("{source}.csv"));
        server.put(bucket, &format!("logs/{source}.csv"), &file);
        remote.push(format!("{source}=s3://{bucket}/logs/{source}.csv"));
        local.push(format!("{source}={}", file.display()));
    }
    (remote, local)
}

/// `leakless build` of the rich example with `--source` overrides.
fn build(server: &Server, overrides: &[String], out: &str, extra: &[&str]) -> std::process::Output {
    let mut command = leakless(server);
    command
        .arg("build")
        .arg("--spec")
        .arg(examples().join("rich/leakless.toml"))
        .args(["--out", out, "--ignore", "archive"])
        .args(extra);
    for o in overrides {
        command.args(["--source", o]);
    }
    command.output().unwrap()
}

/// The manifest without what names paths (settings, inputs' paths, data)
/// or a local file's modification time.
fn manifest_data(manifest: &[u8]) -> serde_json::Value {
    let mut m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let m = m.as_object_mut().unwrap();
    m.remove("settings");
    m.remove("data");
    for files in m["inputs"].as_object_mut().unwrap().values_mut() {
        for file in files.as_array_mut().unwrap() {
            file.as_object_mut().unwrap().remove("path");
            file.as_object_mut().unwrap().remove("modified_ns");
        }
    }
    serde_json::Value::Object(m.clone())
}

#[test]
fn a_build_from_and_to_s3_equals_the_local_build() {
    let server = Server::start();
    server.bucket("lake");
    let local = tempfile::tempdir().unwrap();
    let (overrides, local_overrides) = upload_rich(&server, "lake", &local.path().join("in"));

    // The same spec on the same files, local.
    let local_out = local.path().join("ds");
    let output = build(&server, &local_overrides, local_out.to_str().unwrap(), &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let output = build(&server, &overrides, "s3://lake/datasets/rich", &["--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["out"], "s3://lake/datasets/rich");

    let manifest = server.get("lake", "datasets/rich/_manifest.json");
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let data = parsed["data"].as_str().unwrap().to_owned();
    assert!(
        data.starts_with("_runs/") && data.len() == "_runs/".len() + 16,
        "{data}"
    );
    let views = &parsed["inputs"]["views"];
    assert_eq!(views.as_array().unwrap().len(), 2, "{views}");
    assert_eq!(views[0]["path"], "s3://lake/logs/views/part-0.csv");
    assert_eq!(parsed["settings"]["out"], "s3://lake/datasets/rich");

    // Every data file, byte for byte, and nothing else.
    let mut expected = files(&local_out);
    let local_manifest = expected.remove("_manifest.json").unwrap();
    assert_eq!(manifest_data(&manifest), manifest_data(&local_manifest));
    let mut listed = server.list("lake", "datasets/rich/");
    listed.sort();
    let mut wanted: Vec<String> = expected
        .keys()
        .map(|k| format!("datasets/rich/{data}/{k}"))
        .chain(["datasets/rich/_manifest.json".to_owned()])
        .collect();
    wanted.sort();
    assert_eq!(listed, wanted);
    for (relative, bytes) in &expected {
        let got = server.get("lake", &format!("datasets/rich/{data}/{relative}"));
        assert!(got == *bytes, "{relative} differs");
    }

    // `leakless check` reads the same inputs.
    let mut check = leakless(&server);
    check
        .arg("check")
        .arg("--spec")
        .arg(examples().join("rich/leakless.toml"))
        .args(["--ignore", "archive"]);
    for o in &overrides {
        check.args(["--source", o]);
    }
    let output = check.output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("s3://lake/logs/views"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn a_killed_build_leaves_the_previous_dataset_and_the_next_cleans_up() {
    let server = Server::start();
    server.bucket("lake");
    let local = tempfile::tempdir().unwrap();
    let (overrides, _) = upload_rich(&server, "lake", local.path());
    let out = "s3://lake/ds";
    let output = build(&server, &overrides, out, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let first = server.get("lake", "ds/_manifest.json");
    let first_data = serde_json::from_slice::<serde_json::Value>(&first).unwrap()["data"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_files = server.list("lake", &format!("ds/{first_data}/"));
    assert!(!first_files.is_empty());

    // Without --overwrite: refused, nothing written.
    let output = build(&server, &overrides, out, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("already exists"),
        "{}",
        text(&output.stderr)
    );

    // Killed after its data is uploaded, before the manifest is put.
    let mut command = leakless(&server);
    command
        .env("LEAKLESS_CRASH_AT", "before-publish")
        .arg("build")
        .arg("--spec")
        .arg(examples().join("rich/leakless.toml"))
        .args(["--out", out, "--overwrite", "--ignore", "archive"]);
    for o in &overrides {
        command.args(["--source", o]);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), None, "killed by a signal");
    assert_eq!(server.get("lake", "ds/_manifest.json"), first);
    let runs = |server: &Server| -> Vec<String> {
        let mut runs: Vec<String> = server
            .list("lake", "ds/_runs/")
            .iter()
            .map(|k| k.split('/').nth(2).unwrap().to_owned())
            .collect();
        runs.dedup();
        runs
    };
    assert_eq!(runs(&server).len(), 2, "the killed run's data is left");
    for key in &first_files {
        assert!(!server.get("lake", key).is_empty());
    }

    // The next two builds publish; the killed run's data and runs older
    // than the previous one are deleted (the store's clock, in seconds,
    // must have moved past their objects: a second apart).
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1100));
        let output = build(&server, &overrides, out, &["--overwrite"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let last = server.get("lake", "ds/_manifest.json");
    let last_data = serde_json::from_slice::<serde_json::Value>(&last).unwrap()["data"]
        .as_str()
        .unwrap()
        .to_owned();
    let left = runs(&server);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.contains(&last_data["_runs/".len()..].to_owned()),
        "{left:?}"
    );
    assert!(
        !left.contains(&first_data["_runs/".len()..].to_owned()),
        "{left:?}"
    );
    assert_eq!(manifest_data(&first), manifest_data(&last));
}

/// `leakless build` of the marketplace shorthand with the example's clicks
/// and listings and `impressions` from anywhere.
fn build_marketplace(mut leakless: Command, impressions: &str, out: &str) -> std::process::Output {
    let marketplace = examples().join("marketplace");
    leakless
        .arg("build")
        .args(["--impressions", impressions])
        .arg("--clicks")
        .arg(marketplace.join("clicks.csv"))
        .arg("--listings")
        .arg(marketplace.join("listings.csv"))
        .args(["--out", out])
        .output()
        .unwrap()
}

#[test]
fn a_bad_row_on_s3_is_named_by_its_url_and_line() {
    let server = Server::start();
    server.bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let impressions = dir.path().join("impressions.csv");
    std::fs::write(
        &impressions,
        "impression_id,user_id,listing_id,impression_ts\n1,10,1,2026-10-01T09:00:00Z\n2,ten,1,2026-10-01T09:00:00Z\n",
    )
    .unwrap();
    server.put("lake", "in/impressions.csv", &impressions);
    let output = build_marketplace(
        leakless(&server),
        "s3://lake/in/impressions.csv",
        "s3://lake/out",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "bad input row: `s3://lake/in/impressions.csv` line 3, column `user_id`: not a valid int64: \"ten\""
        ),
        "{stderr}"
    );
    assert!(server.list("lake", "out/").is_empty(), "nothing written");

    // A missing object, a bucket that does not exist, another scheme.
    let out = dir.path().join("o").to_str().unwrap().to_owned();
    for (path, wanted) in [
        ("s3://lake/in/nothing.csv", "no input files"),
        ("s3://no-such-bucket/x.csv", "s3://no-such-bucket"),
        ("gs://lake/x.csv", "not supported"),
    ] {
        let output = build_marketplace(leakless(&server), path, &out);
        let stderr = text(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{path}");
        assert!(stderr.contains(wanted), "{path}: {stderr}");
    }
    // A bucket the credentials cannot reach: the hint says where they
    // come from.
    let mut unreachable = leakless(&server);
    unreachable.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    let output = build_marketplace(unreachable, "s3://lake/in/impressions.csv", &out);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("s3://lake/in/impressions.csv"), "{stderr}");
    assert!(
        stderr.contains("hint: object storage reads its credentials"),
        "{stderr}"
    );
}

#[test]
fn large_files_go_up_in_parts_and_a_concurrent_publish_is_refused() {
    use leakless::storage::{Part, Remote, block_on};
    use leakless::write::RemoteDestination;
    let server = Server::start();
    server.bucket("lake");
    let endpoint = server.endpoint();
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];
    let remote_at = |url: &str| {
        Remote::parse_with(Path::new(url), &options)
            .unwrap()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &bytes).unwrap();
    let remote = remote_at("s3://lake/blobs");
    let key = remote.child("big.bin");
    block_on(remote.upload(vec![(big.clone(), key.clone())])).unwrap();
    assert!(server.get("lake", "blobs/big.bin") == bytes);
    let back = dir.path().join("back/big.bin");
    let size = bytes.len() as u64;
    block_on(remote.download(vec![(key.clone(), back.clone(), size, Part::Whole)])).unwrap();
    assert!(std::fs::read(&back).unwrap() == bytes);
    // Only the head, or only the tail, into a sparse file of the same size.
    let head = dir.path().join("back/head.bin");
    block_on(remote.download(vec![(key.clone(), head.clone(), size, Part::Head)])).unwrap();
    let got = std::fs::read(&head).unwrap();
    assert_eq!(got.len(), bytes.len());
    assert!(got[..1 << 20] == bytes[..1 << 20]);
    assert!(got[1 << 20..].iter().all(|&b| b == 0));
    // A footer whose metadata length (the 4 bytes before the last 4) is
    // longer than the first read: 100 KiB.
    let mut parquet_like = vec![7u8; 300 << 10];
    let n = parquet_like.len();
    parquet_like[n - 8..n - 4].copy_from_slice(&(100u32 << 10).to_le_bytes());
    parquet_like[n - 4..].copy_from_slice(b"PAR1");
    let footer_file = dir.path().join("footer.bin");
    std::fs::write(&footer_file, &parquet_like).unwrap();
    let footer_key = remote.child("footer.bin");
    block_on(remote.upload(vec![(footer_file, footer_key.clone())])).unwrap();
    let tail = dir.path().join("back/tail.bin");
    let parts = vec![(footer_key, tail.clone(), n as u64, Part::ParquetFooter)];
    block_on(remote.download(parts)).unwrap();
    let got = std::fs::read(&tail).unwrap();
    let start = n - (100 << 10) - 8;
    assert!(got[start..] == parquet_like[start..]);
    assert!(got[..start].iter().all(|&b| b == 0));
    // Without the magic, the length is not trusted: only the tail.
    let mut not_parquet = parquet_like.clone();
    not_parquet[n - 4..].copy_from_slice(b"JUNK");
    let junk_file = dir.path().join("junk.bin");
    std::fs::write(&junk_file, &not_parquet).unwrap();
    let junk_key = remote.child("junk.bin");
    block_on(remote.upload(vec![(junk_file, junk_key.clone())])).unwrap();
    let junk = dir.path().join("back/junk.bin");
    let parts = vec![(junk_key, junk.clone(), n as u64, Part::ParquetFooter)];
    block_on(remote.download(parts)).unwrap();
    let got = std::fs::read(&junk).unwrap();
    let tail = n - (64 << 10);
    assert!(got[tail..] == not_parquet[tail..]);
    assert!(got[..tail].iter().all(|&b| b == 0));

    // Two runs take the same (empty) destination; the first to put its
    // manifest publishes, the other is refused and leaves nothing.
    let target = remote_at("s3://lake/ds");
    let staged = dir.path().join("staged");
    std::fs::create_dir_all(staged.join("dt=2026-10-01")).unwrap();
    std::fs::write(staged.join("dt=2026-10-01/part-00000.parquet"), b"x").unwrap();
    // A file still being written (a cluster task attempt given up on but
    // still running) is never uploaded: the listing below has none.
    std::fs::write(
        staged.join("dt=2026-10-01/.part-00001.parquet.partial-7-0123456789abcdef-0"),
        b"half",
    )
    .unwrap();
    // A manifest names its run, as the build's do: two manifests never
    // have the same bytes, so never the same ETag.
    let manifest = |d: &RemoteDestination| {
        format!(r#"{{"tool": "leakless", "data": "{}"}}"#, d.data()).into_bytes()
    };
    let a = RemoteDestination::acquire(target.clone(), "aaaaaaaaaaaaaaaa".into(), true).unwrap();
    let b = RemoteDestination::acquire(target.clone(), "bbbbbbbbbbbbbbbb".into(), true).unwrap();
    a.publish(&staged, &[], &manifest(&a)).unwrap();
    let err = b.publish(&staged, &[], &manifest(&b)).unwrap_err();
    assert!(
        err.to_string().contains("published by another run"),
        "{err}"
    );
    // The refused run's data is left (a failed put may have landed, for
    // all it can tell) for the next publish to delete.
    assert_eq!(server.get("lake", "ds/_manifest.json"), manifest(&a));
    // And an update against a version that has moved on, too.
    let c = RemoteDestination::acquire(target.clone(), "cccccccccccccccc".into(), true).unwrap();
    let d = RemoteDestination::acquire(target, "dddddddddddddddd".into(), true).unwrap();
    d.publish(&staged, &[], &manifest(&d)).unwrap();
    let err = c.publish(&staged, &[], &manifest(&c)).unwrap_err();
    assert!(
        err.to_string().contains("published by another run"),
        "{err}"
    );
    let published = server.get("lake", "ds/_manifest.json");
    assert_eq!(published, manifest(&d));

    // A local dataset copied to object storage (a manifest without
    // `data`, files at the root) is refused, not overwritten.
    let copied = dir.path().join("copied.json");
    std::fs::write(&copied, br#"{"tool": "leakless"}"#).unwrap();
    server.put("lake", "copied/_manifest.json", &copied);
    let err = RemoteDestination::acquire(remote_at("s3://lake/copied"), "e".repeat(16), true)
        .unwrap_err();
    assert!(err.to_string().contains("names no `data` folder"), "{err}");
    // A second later (the store's clock), the next publish deletes every
    // run but its own and the one it replaces: a (replaced twice), b and c
    // (refused).
    std::thread::sleep(Duration::from_millis(1100));
    let f = RemoteDestination::acquire(remote_at("s3://lake/ds"), "f".repeat(16), true).unwrap();
    f.publish(&staged, &[], &manifest(&f)).unwrap();
    let mut runs = server.list("lake", "ds/_runs/");
    runs.sort();
    assert_eq!(
        runs,
        [
            "ds/_runs/dddddddddddddddd/dt=2026-10-01/part-00000.parquet",
            "ds/_runs/ffffffffffffffff/dt=2026-10-01/part-00000.parquet"
        ]
    );
}

#[test]
fn parquet_on_s3_by_glob_with_an_inferred_schema_equals_the_local_build() {
    let server = Server::start();
    server.bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("gen");
    let output = leakless(&server)
        .args([
            "generate",
            "--impressions",
            "3000",
            "--format",
            "parquet",
            "--out",
        ])
        .arg(&generated)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    // Two impression files for the glob (the second a copy: duplicate rows).
    std::fs::copy(
        generated.join("impressions.parquet"),
        generated.join("impressions-2.parquet"),
    )
    .unwrap();
    for name in ["impressions", "impressions-2", "clicks", "listings"] {
        let file = generated.join(format!("{name}.parquet"));
        server.put("lake", &format!("gen/{name}.parquet"), &file);
    }
    // The marketplace spec with the listings' columns left to the first
    // file's schema, and the impressions found by a glob.
    let spec = std::fs::read_to_string(examples().join("marketplace/leakless.toml")).unwrap();
    let declared = "columns = { listing_id = \"int64\", category = \"string\", price = \"float64\", created_ts = \"timestamp\" }\n";
    assert!(spec.contains(declared));
    let spec = spec.replace(declared, "");
    let at = |root: &str| {
        spec.replace("\"impressions.csv\"", &format!("\"{root}/impr*.parquet\""))
            .replace("\"clicks.csv\"", &format!("\"{root}/clicks.parquet\""))
            .replace("\"listings.csv\"", &format!("\"{root}/listings.parquet\""))
    };
    let local_spec = dir.path().join("local.toml");
    std::fs::write(&local_spec, at(generated.to_str().unwrap())).unwrap();
    let s3_spec = dir.path().join("s3.toml");
    std::fs::write(&s3_spec, at("s3://lake/gen")).unwrap();
    let local_out = dir.path().join("ds");
    // The output folder made empty in a console first: a folder marker.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    server.put("lake", "ds/", &empty);
    for (spec, out) in [
        (&local_spec, local_out.to_str().unwrap()),
        (&s3_spec, "s3://lake/ds"),
    ] {
        let output = leakless(&server)
            .arg("build")
            .arg("--spec")
            .arg(spec)
            .args(["--out", out])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let manifest = server.get("lake", "ds/_manifest.json");
    let data = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["data"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut expected = files(&local_out);
    let local_manifest = expected.remove("_manifest.json").unwrap();
    assert_eq!(manifest_data(&manifest), manifest_data(&local_manifest));
    assert!(expected.len() > 3, "{:?}", expected.keys());
    let impressions =
        serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["inputs"]["impressions"]
            .as_array()
            .unwrap()
            .len();
    assert_eq!(impressions, 2);
    for (relative, bytes) in &expected {
        let got = server.get("lake", &format!("ds/{data}/{relative}"));
        assert!(got == *bytes, "{relative} differs");
    }
}

#[test]
fn globs_over_hive_folders_find_the_same_files_in_the_same_order_as_locally() {
    let server = Server::start();
    server.bucket("lake");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("logs");
    let rich = examples().join("rich");
    let views = std::fs::read_to_string(rich.join("views.csv")).unwrap();
    let mut lines = views.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let third = rows.len() / 3;
    // Rows split over three folders (and a `_temporary` one left out). The
    // order of the files is the input order that breaks ties between an
    // indexed source's events; the manifest lists the files in that order.
    let parts = [
        ("views/dt=2/part-0.csv", &rows[..third]),
        ("views/dt=1/part-9.csv", &rows[third..2 * third]),
        ("views/dt=1/nested/part-5.csv", &rows[2 * third..]),
        ("views/dt=1/_temporary/part-7.csv", &rows[..1]),
    ];
    for (name, part) in parts {
        let path = local.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{header}\n{}\n", part.join("\n"))).unwrap();
        server.put("lake", &format!("logs/{name}"), &path);
    }
    let others: Vec<String> = ["clicks", "orders", "listing_prices", "listings"]
        .iter()
        .map(|s| format!("{s}={}", rich.join(format!("{s}.csv")).display()))
        .collect();
    for glob in ["views/dt=*/*.csv", "views/**/*.csv"] {
        let mut manifests = Vec::new();
        let mut outputs = Vec::new();
        for root in [
            local.to_str().unwrap().to_owned(),
            "s3://lake/logs".to_owned(),
        ] {
            let mut overrides = others.clone();
            overrides.push(format!("views={root}/{glob}"));
            let out = dir.path().join(format!("out-{}", manifests.len()));
            let output = build(&server, &overrides, out.to_str().unwrap(), &["--overwrite"]);
            assert!(output.status.success(), "{glob}: {}", text(&output.stderr));
            let mut written = files(&out);
            let manifest: serde_json::Value =
                serde_json::from_slice(&written.remove("_manifest.json").unwrap()).unwrap();
            let read: Vec<String> = manifest["inputs"]["views"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    f["path"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches(&root)
                        .to_owned()
                })
                .collect();
            manifests.push(read);
            outputs.push(written);
        }
        assert_eq!(manifests[0], manifests[1], "{glob}");
        let wanted: Vec<&str> = match glob {
            "views/dt=*/*.csv" => vec!["/views/dt=1/part-9.csv", "/views/dt=2/part-0.csv"],
            _ => vec![
                "/views/dt=1/nested/part-5.csv",
                "/views/dt=1/part-9.csv",
                "/views/dt=2/part-0.csv",
            ],
        };
        assert_eq!(manifests[1], wanted, "{glob}");
        assert!(outputs[0] == outputs[1], "{glob}: the outputs differ");
    }
}
