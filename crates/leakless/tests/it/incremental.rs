//! Incremental builds: after every change to the inputs, an incremental
//! build equals a full build of the same inputs, byte for byte (every data
//! file, the profile, the quarantine, the manifest but its settings), and
//! carries unchanged partitions over as the same files.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use leakless::Build;

use crate::common::runtime;

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = DAY / 24;
/// 2026-10-01T00:00:00Z in µs.
const START: i64 = 1_790_812_800_000_000;

/// Features over sliding and lifetime windows with a delay, a versioned
/// and a snapshot dimension, two labels with an offset.
const SPEC: &str = r#"
version = 1

[sources.impressions]
path = "impressions"
time = "ts"
columns = { id = "int64", user = "int64", item = "int64", ts = "timestamp" }

[sources.clicks]
path = "clicks"
time = "ts"
delay = "30m"
columns = { item = "int64", user = "int64", ts = "timestamp", value = "float64" }

[sources.views]
path = "views"
time = "ts"
columns = { user = "int64", ts = "timestamp" }

[sources.prices]
path = "prices"
key = "item"
valid_from = "from"
columns = { item = "int64", from = "timestamp", price = "float64" }

[sources.items]
path = "items.csv"
key = "item"
columns = { item = "int64", category = "string" }

[spine]
source = "impressions"
columns = ["id", "user", "item"]

[features.clicks_6h]
source = "clicks"
key = "item"
op = "count"
window = "6h"

[features.value_sum_2d]
source = "clicks"
key = "item"
op = "sum"
column = "value"
window = "2d"

[features.user_clicks_ever]
source = "clicks"
key = "user"
op = "count"
window = "lifetime"

[features.views_6h]
source = "views"
key = "user"
op = "count"
window = "6h"

[features.price]
source = "prices"
op = "lookup"
column = "price"

[features.category]
source = "items"
op = "lookup"
column = "category"

[labels.clicked]
source = "clicks"
key = "item"
op = "exists"
window = "24h"

[labels.later_value]
source = "clicks"
key = ["user", "item"]
op = "sum"
column = "value"
window = "12h"
offset = "1h"
"#;

/// A splitmix64 stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A time in `day`, often on an hour or exactly on the day's bounds.
    fn time(&mut self, day: i64) -> i64 {
        let base = START + day * DAY;
        match self.below(5) {
            0 => base,
            1 => base + DAY - 1,
            2 => base + self.below(24) as i64 * HOUR,
            _ => base + self.below(DAY as u64) as i64,
        }
    }
}

fn ts(micros: i64) -> String {
    leakless::time::format_rfc3339(micros)
}

fn impressions(rng: &mut Rng, day: i64, n: usize, first_id: i64) -> String {
    let mut text = String::from("id,user,item,ts\n");
    for i in 0..n {
        let (user, item, t) = (rng.below(6), rng.below(12), rng.time(day));
        text += &format!("{},{user},{item},{}\n", first_id + i as i64, ts(t));
    }
    text
}

fn clicks(rng: &mut Rng, day: i64, n: usize) -> String {
    let mut text = String::from("item,user,ts,value\n");
    for _ in 0..n {
        let (user, item, t) = (rng.below(6), rng.below(12), rng.time(day));
        let value = match rng.below(4) {
            0 => String::new(),
            _ => format!("{}.{}", rng.below(100), rng.below(10)),
        };
        text += &format!("{item},{user},{},{value}\n", ts(t));
    }
    text
}

/// Every file of a dataset but the manifest, and the manifest without its
/// settings.
fn snapshot(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![out.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // A folder is part of the dataset's tree too.
                let name = path.strip_prefix(out).unwrap().display().to_string();
                files.insert(format!("{name}/"), Vec::new());
                stack.push(path);
                continue;
            }
            let name = path.strip_prefix(out).unwrap().display().to_string();
            let mut bytes = std::fs::read(&path).unwrap();
            if name == "_manifest.json" {
                let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                manifest.as_object_mut().unwrap().remove("settings");
                // A file's modification time is not its content.
                for files in manifest["inputs"].as_object_mut().unwrap().values_mut() {
                    for file in files.as_array_mut().unwrap() {
                        file.as_object_mut().unwrap().remove("modified_ns");
                    }
                }
                bytes = serde_json::to_vec_pretty(&manifest).unwrap();
            }
            files.insert(name, bytes);
        }
    }
    files
}

/// The inode of each data file (a carried partition keeps its files).
fn inodes(out: &Path) -> BTreeMap<String, u64> {
    leakless::write::data_files(out)
        .unwrap()
        .into_iter()
        .map(|p| {
            let inode = std::fs::metadata(&p).unwrap().ino();
            (p.strip_prefix(out).unwrap().display().to_string(), inode)
        })
        .collect()
}

struct Case {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    watermark: i64,
    /// `false`: each label's watermark is inferred from its source.
    given: bool,
    partitions: usize,
    policy: leakless::ingest::BadRowPolicy,
}

impl Case {
    fn build(&self, out: &str, incremental: bool) -> leakless::BuildSummary {
        let build = Build::from_spec_file(self.dir.join("spec.toml"), self.dir.join(out))
            .unwrap()
            .with_watermark(self.given.then_some(self.watermark))
            .with_target_partitions(self.partitions)
            .with_overwrite(!incremental)
            .with_bad_rows(self.policy)
            .with_max_bad_rows(Some(0.01))
            .with_incremental(incremental);
        runtime().block_on(build.execute()).unwrap()
    }

    fn dry_run(&self, out: &str) -> leakless::incremental::Increment {
        let build = Build::from_spec_file(self.dir.join("spec.toml"), self.dir.join(out))
            .unwrap()
            .with_watermark(self.given.then_some(self.watermark))
            .with_bad_rows(self.policy)
            .with_max_bad_rows(Some(0.01))
            .with_incremental(true);
        runtime().block_on(build.dry_run()).unwrap()
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// An incremental build of `dataset`, checked against a full build of
    /// the same inputs; what it computed again, and what it carried.
    fn step(&self, what: &str) -> (Vec<String>, Vec<String>) {
        let planned = self.dry_run("dataset");
        let before = inodes(&self.dir.join("dataset"));
        let summary = self.build("dataset", true);
        self.build("full", false);
        let (incremental, full) = (
            snapshot(&self.dir.join("dataset")),
            snapshot(&self.dir.join("full")),
        );
        assert_eq!(
            incremental.keys().collect::<Vec<_>>(),
            full.keys().collect::<Vec<_>>(),
            "{what}: the files"
        );
        for (name, bytes) in &incremental {
            if *bytes != full[name] {
                panic!(
                    "{what}: `{name}` differs from the full build's\n{}\n---\n{}",
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(&full[name])
                );
            }
        }
        let increment = summary
            .increment
            .expect("an incremental build says what it did");
        assert!(increment.full.is_none(), "{what}: {:?}", increment.full);
        // The dry run said the same, and carried partitions kept their files.
        let recomputed: Vec<String> = (increment.recompute.values())
            .map(|r| r.partition.clone())
            .collect();
        let planned: Vec<String> = (planned.recompute.values())
            .map(|r| r.partition.clone())
            .collect();
        assert_eq!(recomputed, planned, "{what}: the dry run");
        let after = inodes(&self.dir.join("dataset"));
        for carried in &increment.carried {
            for (file, inode) in after
                .iter()
                .filter(|(f, _)| f.starts_with(carried.as_str()))
            {
                assert_eq!(
                    before.get(file),
                    Some(inode),
                    "{what}: {file} was rewritten"
                );
            }
        }
        (days(&recomputed), days(&increment.carried))
    }
}

fn days(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| n.trim_start_matches("dt=").to_owned())
        .collect()
}

#[test]
fn every_incremental_build_equals_a_full_build() {
    for (seed, partitions) in [(1u64, 1usize), (2, 2), (3, 8)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut case = Case {
            dir: tmp.path().to_owned(),
            _tmp: tmp,
            watermark: START + 3 * DAY,
            given: true,
            partitions,
            policy: leakless::ingest::BadRowPolicy::Fail,
        };
        let mut rng = Rng(seed);
        case.write("spec.toml", SPEC);
        case.write(
            "prices/base.csv",
            &format!(
                "item,from,price\n1,{},2.5\n2,{},3.0\n1,{},2.75\n",
                ts(START - DAY),
                ts(START + DAY + 7 * HOUR),
                ts(START + 2 * DAY)
            ),
        );
        case.write("items.csv", "item,category\n0,a\n1,b\n2,a\n3,c\n4,b\n9,d\n");
        case.write(
            "views/0.csv",
            &format!("user,ts\n1,{}\n", ts(START + 5 * HOUR)),
        );
        let mut id = 0;
        for day in 0..3 {
            case.write(
                &format!("impressions/{day}.csv"),
                &impressions(&mut rng, day, 60, id),
            );
            case.write(&format!("clicks/{day}.csv"), &clicks(&mut rng, day, 10));
            id += 60;
        }
        // The first incremental build has no dataset: a full build.
        let first = case.build("dataset", true);
        assert!(first.increment.unwrap().full.is_some());

        // A new day of logs, and the watermark a day later.
        case.write("impressions/3.csv", &impressions(&mut rng, 3, 60, id));
        case.write("clicks/3.csv", &clicks(&mut rng, 3, 10));
        case.watermark += DAY;
        let (recomputed, carried) = case.step("a new day");
        // Day 3 is new; day 2's labels matured; days 0 and 1 are carried
        // (the lifetime feature's new clicks reach only later times).
        assert_eq!(recomputed, ["2026-10-03", "2026-10-04"]);
        assert_eq!(carried, ["2026-10-01", "2026-10-02"]);

        // Nothing changed: nothing computed.
        assert!(case.step("no change").0.is_empty());

        // A late view reaches the 6 hours after it: into the next day.
        for user in 0..6 {
            let late = format!("user,ts\n{user},{}\n", ts(START + DAY + 22 * HOUR));
            case.write(&format!("views/late-{user}.csv"), &late);
            let (recomputed, carried) = case.step("a late view");
            assert_eq!(recomputed, ["2026-10-02", "2026-10-03"]);
            assert_eq!(carried, ["2026-10-01", "2026-10-04"]);
        }

        // A late click on day 2 reaches the labels of day 1's last hours
        // and the features of days 2 and 3 (the 2-day window).
        for item in 0..12 {
            let late = format!(
                "item,user,ts,value\n{item},{},{},7.5\n",
                item % 6,
                ts(START + 2 * DAY + 12 * HOUR)
            );
            case.write(&format!("clicks/late-{item}.csv"), &late);
            let (recomputed, carried) = case.step("a late file");
            assert_eq!(recomputed, ["2026-10-02", "2026-10-03", "2026-10-04"]);
            assert_eq!(carried, ["2026-10-01"]);
        }

        // A file changed in place, and one removed.
        case.write("clicks/0.csv", &clicks(&mut rng, 0, 30));
        std::fs::remove_file(case.dir.join("impressions/1.csv")).unwrap();
        case.step("a changed and a removed file");

        // A new version in the versioned dimension reaches the times after
        // it.
        case.write(
            "prices/2026-10-04.csv",
            &format!(
                "item,from,price\n3,{},9.5\n",
                ts(START + 3 * DAY + 5 * HOUR)
            ),
        );
        let (recomputed, _) = case.step("a new price version");
        assert_eq!(recomputed, ["2026-10-04"]);

        // The watermark moves back and then forward.
        case.watermark -= 30 * HOUR;
        case.step("the watermark moves back");
        case.watermark += 40 * HOUR;
        case.step("the watermark moves forward");

        // A snapshot dimension changed: every partition.
        case.write("items.csv", "item,category\n0,a\n1,b\n2,z\n3,c\n4,b\n9,d\n");
        let (recomputed, carried) = case.step("a snapshot dimension changed");
        assert!(carried.is_empty() && !recomputed.is_empty(), "{carried:?}");
    }
}

#[test]
fn another_spec_is_refused_with_how_to_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let case = Case {
        dir: tmp.path().to_owned(),
        _tmp: tmp,
        watermark: START + 2 * DAY,
        given: true,
        partitions: 2,
        policy: leakless::ingest::BadRowPolicy::Fail,
    };
    let mut rng = Rng(9);
    case.write("spec.toml", SPEC);
    case.write("prices/base.csv", "item,from,price\n");
    case.write("items.csv", "item,category\n");
    case.write("views/0.csv", "user,ts\n");
    case.write("impressions/0.csv", &impressions(&mut rng, 0, 20, 0));
    case.write("clicks/0.csv", &clicks(&mut rng, 0, 20));
    case.build("dataset", false);
    case.write(
        "spec.toml",
        &SPEC.replace("window = \"6h\"", "window = \"7h\""),
    );
    let build = Build::from_spec_file(case.dir.join("spec.toml"), case.dir.join("dataset"))
        .unwrap()
        .with_watermark(Some(case.watermark))
        .with_incremental(true);
    let err = runtime().block_on(build.execute()).unwrap_err().to_string();
    assert!(
        err.contains("another spec") && err.contains("without --incremental"),
        "{err}"
    );
}

/// Under quarantine, a spine file of a carried day with bad rows is read
/// again (its bad rows are the dataset's), and a new file's bad rows join
/// them: the quarantine equals a full build's.
#[test]
fn bad_rows_set_aside_stay_in_the_quarantine_of_an_incremental_build() {
    let tmp = tempfile::tempdir().unwrap();
    let mut case = Case {
        dir: tmp.path().to_owned(),
        _tmp: tmp,
        watermark: START + 2 * DAY,
        given: true,
        partitions: 2,
        policy: leakless::ingest::BadRowPolicy::Quarantine,
    };
    let mut rng = Rng(11);
    case.write("spec.toml", SPEC);
    case.write("prices/base.csv", "item,from,price\n");
    case.write("items.csv", "item,category\n1,a\n");
    case.write("views/0.csv", "user,ts\n");
    for day in 0..2 {
        let mut rows = impressions(&mut rng, day, 300, day * 300);
        rows += "999,1,1,not a time\n";
        case.write(&format!("impressions/{day}.csv"), &rows);
        case.write(&format!("clicks/{day}.csv"), &clicks(&mut rng, day, 30));
    }
    case.build("dataset", false);
    case.write(
        "impressions/2.csv",
        &(impressions(&mut rng, 2, 300, 600) + "1000,x,1,2026-10-03T00:00:00Z\n"),
    );
    case.write("clicks/2.csv", &clicks(&mut rng, 2, 30));
    case.watermark += DAY;
    let (recomputed, carried) = case.step("a new day with a bad row");
    assert_eq!(recomputed, ["2026-10-02", "2026-10-03"]);
    assert_eq!(carried, ["2026-10-01"]);
    assert!(
        case.dir
            .join("dataset/_quarantine/impressions.parquet")
            .exists()
    );
}

/// Hour partitions, a spine that is also an indexed source, watermarks
/// inferred from the label source, partitions all held back carried over,
/// and a manifest of an older leakless (no file times): a full build.
#[test]
fn hours_an_indexed_spine_inferred_watermarks_and_an_older_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let case = Case {
        dir: tmp.path().to_owned(),
        _tmp: tmp,
        watermark: 0,
        given: false,
        partitions: 2,
        policy: leakless::ingest::BadRowPolicy::Fail,
    };
    let spec = format!(
        "{SPEC}\n[features.user_impressions_3h]\nsource = \"impressions\"\nkey = \"user\"\nop = \"count\"\nwindow = \"3h\"\n\n[output]\npartition = \"hour\"\n"
    );
    let mut rng = Rng(5);
    case.write("spec.toml", &spec);
    case.write("prices/base.csv", "item,from,price\n");
    case.write("items.csv", "item,category\n1,a\n");
    case.write("views/0.csv", "user,ts\n");
    case.write("impressions/0.csv", &impressions(&mut rng, 0, 200, 0));
    case.write("clicks/0.csv", &clicks(&mut rng, 0, 40));
    case.build("dataset", false);
    // The last hours' rows are all held back: folders without files.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.dir.join("dataset/_manifest.json")).unwrap())
            .unwrap();
    let partitions = manifest["partitions"].as_array().unwrap();
    assert!(
        partitions
            .iter()
            .any(|p| p["rows"] == 0 && p["held_back"].as_u64() > Some(0))
    );
    assert!(
        partitions
            .iter()
            .any(|p| p["complete"] == false && p["partial"].is_string())
    );

    // A late view reaches three hours; the inferred watermark stays.
    case.write(
        "views/late.csv",
        &format!("user,ts\n2,{}\n", ts(START + 3 * HOUR + 30 * 60_000_000)),
    );
    let (recomputed, carried) = case.step("a late view, by the hour");
    let reached: Vec<String> = (3..=9).map(|h| format!("2026-10-01/hour={h:02}")).collect();
    assert!(!recomputed.is_empty(), "{recomputed:?}");
    assert!(
        recomputed.iter().all(|h| reached.contains(h)),
        "{recomputed:?}"
    );
    assert!(carried.len() > 10, "{carried:?}");

    // New impressions (the spine, also indexed) and clicks: the inferred
    // watermark moves a day, over every hour.
    case.write("impressions/1.csv", &impressions(&mut rng, 1, 200, 200));
    case.write("clicks/1.csv", &clicks(&mut rng, 1, 40));
    let (recomputed, _) = case.step("a new day, by the hour");
    assert!(
        recomputed.iter().any(|h| h.starts_with("2026-10-02")),
        "{recomputed:?}"
    );

    // A manifest without file times: a full build, and why.
    let path = case.dir.join("dataset/_manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for files in manifest["inputs"].as_object_mut().unwrap().values_mut() {
        for file in files.as_array_mut().unwrap() {
            file.as_object_mut().unwrap().remove("times");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let summary = case.build("dataset", true);
    let full = summary.increment.unwrap().full.unwrap();
    assert!(full.contains("older leakless"), "{full}");
}
