//! Helpers: write inline CSV inputs, run a build, read the dataset back.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int8Type, Int64Type, TimestampMicrosecondType};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use leakless::time::format_rfc3339;
use leakless::{Build, BuildSummary};

/// Three inline CSV tables in a temporary folder.
pub struct Inputs {
    pub dir: tempfile::TempDir,
}

impl Inputs {
    pub fn new(impressions: &str, clicks: &str, listings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("impressions", impressions),
            ("clicks", clicks),
            ("listings", listings),
        ] {
            std::fs::write(dir.path().join(format!("{name}.csv")), unindent(text)).unwrap();
        }
        Inputs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn out(&self) -> PathBuf {
        self.path("dataset")
    }

    pub fn build(&self) -> Build {
        Build::new(
            self.path("impressions.csv"),
            self.path("clicks.csv"),
            self.path("listings.csv"),
            self.out(),
        )
    }

    /// Builds with `watermark` (RFC 3339) and `partitions`, and returns the summary.
    pub fn run(
        &self,
        watermark: Option<&str>,
        partitions: usize,
    ) -> leakless::Result<BuildSummary> {
        let watermark =
            watermark.map(|w| leakless::time::parse_timestamp_micros(w.as_bytes()).unwrap());
        let build = self
            .build()
            .with_watermark(watermark)
            .with_target_partitions(partitions)
            .with_overwrite(true);
        runtime().block_on(build.execute())
    }
}

/// Writes `files` (name, text) and `spec` as `spec.toml` into `dir`, and
/// builds the spec into `dir/dataset`.
pub fn run_spec_in(
    dir: &Path,
    files: &[(&str, &str)],
    spec: &str,
) -> leakless::Result<BuildSummary> {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::write(dir.join("spec.toml"), spec).unwrap();
    let build = leakless::Build::from_spec_file(dir.join("spec.toml"), dir.join("dataset"))?;
    runtime().block_on(build.execute())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Strips the common leading whitespace of an indented inline table.
pub fn unindent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().skip_while(|l| l.trim().is_empty()).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = lines
        .iter()
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("").trim_end()))
        .collect();
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The dataset's files in reading order: `dt=` folders sorted, parts sorted.
pub fn data_files(out: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
        .collect();
    files.sort();
    files
}

/// Every output row as one line of text, in file order, prefixed by its `dt`:
/// `dt id user listing ts | age price category | prior 24h clicked`.
pub fn read_rows(out: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for path in data_files(out) {
        let dt = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            rows.extend(format_batch(&dt, &batch.unwrap()));
        }
    }
    rows
}

fn format_batch(dt: &str, b: &RecordBatch) -> Vec<String> {
    let int = |name: &str| {
        b.column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    };
    let (id, user, listing, age, prior, last24) = (
        int("impression_id"),
        int("user_id"),
        int("listing_id"),
        int("listing_age_seconds"),
        int("prior_listing_clicks"),
        int("listing_clicks_24h"),
    );
    let ts = b
        .column_by_name("impression_ts")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    let price = b
        .column_by_name("price")
        .unwrap()
        .as_primitive::<Float64Type>();
    let category = b.column_by_name("category").unwrap().as_string::<i32>();
    let clicked = b
        .column_by_name("clicked")
        .unwrap()
        .as_primitive::<Int8Type>();
    (0..b.num_rows())
        .map(|i| {
            let opt = |valid: bool, text: String| if valid { text } else { "null".to_owned() };
            format!(
                "{dt} {} {} {} {} | {} {} {} | {} {} {}",
                id.value(i),
                user.value(i),
                listing.value(i),
                format_rfc3339(ts.value(i)),
                opt(age.is_valid(i), age.value(i).to_string()),
                opt(price.is_valid(i), price.value(i).to_string()),
                opt(category.is_valid(i), category.value(i).to_string()),
                prior.value(i),
                last24.value(i),
                clicked.value(i),
            )
        })
        .collect()
}

/// The click features and label of one impression, straight from the
/// definitions in docs/semantics.md: (prior clicks, clicks in the last 24 h,
/// clicked in the next 24 h).
pub fn oracle_clicks(clicks: &[(i64, i64)], listing: i64, t: i64) -> (i64, i64, i8) {
    const DAY: i64 = 86_400_000_000;
    let on_listing = || {
        clicks
            .iter()
            .filter(move |&&(l, _)| l == listing)
            .map(|&(_, ts)| ts)
    };
    let prior = on_listing().filter(|&ts| ts < t).count() as i64;
    let last_24h = on_listing().filter(|&ts| t - DAY <= ts && ts < t).count() as i64;
    let clicked = on_listing().any(|ts| t <= ts && ts < t + DAY);
    (prior, last_24h, i8::from(clicked))
}

/// Every Parquet file of a dataset: (relative path, bytes).
pub fn dataset_bytes(out: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    leakless::write::data_files(out)
        .unwrap()
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(out).unwrap().display().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// A build of the marketplace CSV files `leakless::synth::generate` wrote
/// into `data`.
pub fn generated_build(data: &Path, out: &Path) -> Build {
    Build::new(
        data.join("impressions.csv"),
        data.join("clicks.csv"),
        data.join("listings.csv"),
        out,
    )
}
