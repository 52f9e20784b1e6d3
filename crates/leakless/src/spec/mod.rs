//! What to compute: sources, the spine, point-in-time features and labels.
//!
//! A spec file (TOML, see `docs/semantics.md`) is parsed by [`parse`] into a
//! raw form that keeps every token's place, then resolved in one pass that
//! collects every mistake it can into a validated [`Spec`]. The
//! `--impressions/--clicks/--listings` shorthand of `leakless build` is the
//! built-in spec [`marketplace`].
//!
//! Invariants:
//! - a [`Spec`] is valid: every name it holds exists, every type fits its op,
//!   every key pairs columns of one type, durations are exact microseconds;
//! - a past window ends strictly before `t - delay`, a label window starts at
//!   `t + offset`: an event is never both a feature's and a label's when
//!   delay and offset are 0;
//! - `spec` knows nothing of files' contents, DataFusion plans or output.

mod describe;
mod parse;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use parse::{InferColumns, SpecError, SpecErrors, parse_spec};

use crate::time::{MICROS_PER_DAY, MICROS_PER_SECOND};

/// The type of a source column, as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Int64,
    Float64,
    String,
    Bool,
    /// RFC 3339 text (zone-less = UTC); Parquet timestamps of any unit.
    Timestamp,
    /// Integer seconds since the epoch.
    TimestampS,
    /// Integer milliseconds since the epoch.
    TimestampMs,
    /// Integer microseconds since the epoch.
    TimestampUs,
}

impl ColumnType {
    pub const ALL: [ColumnType; 8] = [
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::String,
        ColumnType::Bool,
        ColumnType::Timestamp,
        ColumnType::TimestampS,
        ColumnType::TimestampMs,
        ColumnType::TimestampUs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
            ColumnType::TimestampS => "timestamp_s",
            ColumnType::TimestampMs => "timestamp_ms",
            ColumnType::TimestampUs => "timestamp_us",
        }
    }

    pub fn from_name(name: &str) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The type of the values once read: every timestamp is UTC µs.
    pub fn value_type(self) -> ValueType {
        match self {
            ColumnType::Int64 => ValueType::Int64,
            ColumnType::Float64 => ValueType::Float64,
            ColumnType::String => ValueType::String,
            ColumnType::Bool => ValueType::Bool,
            ColumnType::Timestamp
            | ColumnType::TimestampS
            | ColumnType::TimestampMs
            | ColumnType::TimestampUs => ValueType::Timestamp,
        }
    }
}

/// The type of a value after ingest (and of an output column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Int64,
    /// 0 or 1, for `exists`.
    Int8,
    Float64,
    String,
    Bool,
    /// UTC microseconds.
    Timestamp,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Int64 => "int64",
            ValueType::Int8 => "int8",
            ValueType::Float64 => "float64",
            ValueType::String => "string",
            ValueType::Bool => "bool",
            ValueType::Timestamp => "timestamp",
        }
    }
}

/// One declared column of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// An empty value is a bad row.
    pub required: bool,
}

/// How CSV files of a source are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvOptions {
    pub delimiter: u8,
    /// Unquoted values read as null.
    pub null_values: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            null_values: vec![String::new()],
        }
    }
}

/// Whether a source is a stream of events or a (versioned) dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Events at the instant in column `time`.
    Events { time: String },
    /// Rows keyed by `key`; with `valid_from`, versions of a row.
    Dimension {
        key: Vec<String>,
        valid_from: Option<String>,
    },
}

/// One input source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceDef {
    pub name: String,
    /// A file, a folder or a glob, resolved against the spec's folder.
    #[serde(skip)]
    pub path: PathBuf,
    /// Globs of files to leave out of a folder (`--ignore`); not part of
    /// the definitions.
    #[serde(skip)]
    pub ignore: Vec<String>,
    /// `None`: every column of the file (Parquet only), types from the file.
    pub columns: Option<Vec<ColumnDef>>,
    pub kind: SourceKind,
    /// Events become visible this long after their time (µs, >= 0).
    pub delay_micros: i64,
    pub csv: CsvOptions,
    /// Under `--bad-rows quarantine`, the largest fraction of the source's
    /// rows that may be bad (`None`: the build's default); not part of the
    /// definitions.
    #[serde(skip)]
    pub max_bad_rows: Option<f64>,
}

impl SourceDef {
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.as_ref()?.iter().find(|c| c.name == name)
    }

    /// The time column of an event source, the `valid_from` of a versioned
    /// dimension.
    pub fn time_column(&self) -> Option<&str> {
        match &self.kind {
            SourceKind::Events { time } => Some(time),
            SourceKind::Dimension { valid_from, .. } => valid_from.as_deref(),
        }
    }

    pub fn is_dimension(&self) -> bool {
        matches!(self.kind, SourceKind::Dimension { .. })
    }
}

/// A time window, relative to the spine time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Every event before the probe instant.
    Lifetime,
    /// An exact duration in microseconds (> 0).
    Micros(i64),
}

/// What a derived column computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Count,
    Exists,
    Sum,
    Mean,
    Min,
    Max,
    First,
    Last,
    CountDistinct,
    TimeSinceLast,
    TimeSinceFirst,
    /// Dimension: the value of `column` in the row for the key.
    Lookup,
    /// Dimension: whole seconds from timestamp `column` to `t`.
    TimeSince,
}

impl Op {
    pub const ALL: [Op; 13] = [
        Op::Count,
        Op::Exists,
        Op::Sum,
        Op::Mean,
        Op::Min,
        Op::Max,
        Op::First,
        Op::Last,
        Op::CountDistinct,
        Op::TimeSinceLast,
        Op::TimeSinceFirst,
        Op::Lookup,
        Op::TimeSince,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Count => "count",
            Op::Exists => "exists",
            Op::Sum => "sum",
            Op::Mean => "mean",
            Op::Min => "min",
            Op::Max => "max",
            Op::First => "first",
            Op::Last => "last",
            Op::CountDistinct => "count_distinct",
            Op::TimeSinceLast => "time_since_last",
            Op::TimeSinceFirst => "time_since_first",
            Op::Lookup => "lookup",
            Op::TimeSince => "time_since",
        }
    }

    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Ops over a dimension row rather than a window of events.
    pub fn is_dimension_op(self) -> bool {
        matches!(self, Op::Lookup | Op::TimeSince)
    }

    /// Ops that read `column`'s values (and skip its nulls).
    pub fn reads_values(self) -> bool {
        matches!(
            self,
            Op::Sum
                | Op::Mean
                | Op::Min
                | Op::Max
                | Op::First
                | Op::Last
                | Op::CountDistinct
                | Op::Lookup
                | Op::TimeSince
        )
    }

    /// The output type for a column of type `column` (when the op reads one).
    pub fn output_type(self, column: Option<ValueType>) -> ValueType {
        match self {
            Op::Count
            | Op::CountDistinct
            | Op::TimeSinceLast
            | Op::TimeSinceFirst
            | Op::TimeSince => ValueType::Int64,
            Op::Exists => ValueType::Int8,
            Op::Mean => ValueType::Float64,
            Op::Sum | Op::Min | Op::Max | Op::First | Op::Last | Op::Lookup => {
                column.unwrap_or(ValueType::Int64)
            }
        }
    }
}

/// Whether a derived column is a feature (past) or a label (future).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Feature,
    Label,
}

/// One pair of a key: the spine's column and the source's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyPart {
    pub spine: String,
    pub source: String,
}

/// One feature or label: an output column computed from a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    pub name: String,
    pub role: Role,
    pub source: String,
    pub key: Vec<KeyPart>,
    pub op: Op,
    pub column: Option<String>,
    /// `None` for dimension ops.
    pub window: Option<Window>,
    /// Labels: the window starts this long after `t` (µs, >= 0).
    pub offset_micros: i64,
    /// SQL over the source's declared columns; rows where it is not true
    /// are not events for this column.
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub output_type: ValueType,
}

/// How the output is partitioned into folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// `dt=YYYY-MM-DD/` of the spine time, UTC.
    #[default]
    Day,
    /// `dt=YYYY-MM-DD/hour=HH/`.
    Hour,
    /// Files at the root.
    None,
}

impl Partitioning {
    pub fn name(self) -> &'static str {
        match self {
            Partitioning::Day => "day",
            Partitioning::Hour => "hour",
            Partitioning::None => "none",
        }
    }
}

/// The file format a build writes (`[output] format`, `--format`); not
/// part of the definitions (the feature-set hash is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Parquet files and `_manifest.json`, published by one rename.
    #[default]
    Parquet,
    /// A Delta Lake table: each build one commit (`crate::write::delta`).
    Delta,
}

impl OutputFormat {
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Delta => "delta",
        }
    }

    pub fn parse(name: &str) -> Option<OutputFormat> {
        match name {
            "parquet" => Some(OutputFormat::Parquet),
            "delta" => Some(OutputFormat::Delta),
            _ => None,
        }
    }
}

/// The spine: one output row per (kept) row of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpineDef {
    pub source: String,
    /// Kept in this order, then the spine time.
    pub columns: Vec<String>,
    /// The spine source's time column.
    pub time: String,
    #[serde(rename = "where")]
    pub filter: Option<String>,
}

/// A validated spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub version: u32,
    pub sources: Vec<SourceDef>,
    pub spine: SpineDef,
    /// Features and labels in the order the spec lists them.
    pub derived: Vec<Derived>,
    /// `watermark = "..."` of the spec (UTC µs).
    #[serde(skip)]
    pub watermark: Option<i64>,
    pub partition: Partitioning,
    /// `[output] format` (not part of the definitions).
    #[serde(skip)]
    pub format: OutputFormat,
    /// The folder relative paths are resolved against.
    #[serde(skip)]
    pub base: PathBuf,
    /// `[checks]`: bounds on the profile (not part of the definitions).
    #[serde(skip)]
    pub checks: Vec<crate::quality::checks::Check>,
}

/// A spec as it travels to another process (a cluster's executors): every
/// field, resolved (paths, `ignore`, inferred columns, the watermark), so
/// that the receiver reads no spec file and infers nothing.
#[derive(Serialize, Deserialize)]
struct Wire {
    spec: Spec,
    paths: Vec<PathBuf>,
    ignore: Vec<Vec<String>>,
    watermark: Option<i64>,
    base: PathBuf,
    #[serde(default)]
    checks: Vec<crate::quality::checks::Check>,
    #[serde(default)]
    max_bad_rows: Vec<Option<f64>>,
}

impl Spec {
    /// The spec as bytes for another process ([`Spec::from_wire`]); an
    /// error when a path is not UTF-8.
    pub fn to_wire(&self) -> crate::Result<Vec<u8>> {
        let wire = Wire {
            spec: self.clone(),
            paths: self.sources.iter().map(|s| s.path.clone()).collect(),
            ignore: self.sources.iter().map(|s| s.ignore.clone()).collect(),
            watermark: self.watermark,
            base: self.base.clone(),
            checks: self.checks.clone(),
            max_bad_rows: self.sources.iter().map(|s| s.max_bad_rows).collect(),
        };
        serde_json::to_vec(&wire)
            .map_err(|e| crate::Error::Invalid(format!("a spec for the wire: {e}")))
    }

    /// The spec [`Spec::to_wire`] wrote.
    pub fn from_wire(bytes: &[u8]) -> crate::Result<Spec> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| crate::Error::Invalid(format!("a spec on the wire: {e}")))?;
        let mut spec = wire.spec;
        if wire.paths.len() != spec.sources.len() || wire.ignore.len() != spec.sources.len() {
            return Err(crate::Error::Invalid(
                "a spec on the wire: one path and ignore list per source".into(),
            ));
        }
        for ((source, path), ignore) in spec.sources.iter_mut().zip(wire.paths).zip(wire.ignore) {
            source.path = path;
            source.ignore = ignore;
        }
        spec.watermark = wire.watermark;
        spec.base = wire.base;
        spec.checks = wire.checks;
        for (source, max) in spec.sources.iter_mut().zip(wire.max_bad_rows) {
            source.max_bad_rows = max;
        }
        Ok(spec)
    }
}

/// One output column: its name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    pub name: String,
    pub ty: ValueType,
}

impl Spec {
    pub fn source(&self, name: &str) -> Option<&SourceDef> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Leaves files matching any of `globs` out of every source's folder
    /// (see [`crate::ingest::discover`]).
    pub fn ignore_files(&mut self, globs: &[String]) {
        for source in &mut self.sources {
            source.ignore.extend(globs.iter().cloned());
        }
    }

    pub fn spine_source(&self) -> &SourceDef {
        self.source(&self.spine.source)
            .expect("a valid spec's spine source exists")
    }

    pub fn labels(&self) -> impl Iterator<Item = &Derived> {
        self.derived.iter().filter(|d| d.role == Role::Label)
    }

    /// The output columns in order: spine columns, spine time, derived.
    pub fn output_columns(&self) -> Vec<OutputColumn> {
        let spine = self.spine_source();
        let typed = |name: &str| OutputColumn {
            name: name.to_owned(),
            ty: spine
                .column(name)
                .map_or(ValueType::Int64, |c| c.ty.value_type()),
        };
        let mut out: Vec<OutputColumn> = self.spine.columns.iter().map(|c| typed(c)).collect();
        out.push(OutputColumn {
            name: self.spine.time.clone(),
            ty: ValueType::Timestamp,
        });
        out.extend(self.derived.iter().map(|d| OutputColumn {
            name: d.name.clone(),
            ty: d.output_type,
        }));
        out
    }

    /// The normalised definitions as JSON: what the feature-set hash covers
    /// (no paths, no watermark; the order of columns is part of it).
    pub fn normalized(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a spec always serialises")
    }

    /// Hex SHA-256 of [`Spec::normalized`]: the feature-set version.
    pub fn feature_set_hash(&self) -> String {
        let bytes = serde_json::to_vec(&self.normalized()).expect("json");
        crate::ingest::hex(&Sha256::digest(&bytes))
    }

    /// Every output column with its definition in words.
    pub fn definitions(&self) -> Vec<(String, String)> {
        describe::definitions(self)
    }
}

/// Reads and validates the spec file at `path`; `overrides` replace source
/// paths; Parquet sources without `columns` take them from their files.
pub fn load(path: &std::path::Path, overrides: &[(String, PathBuf)]) -> crate::Result<Spec> {
    load_ignoring(path, overrides, &[])
}

/// [`load`], leaving files matching `ignore` out of every source's folder,
/// the files columns are inferred from included.
pub fn load_ignoring(
    path: &std::path::Path,
    overrides: &[(String, PathBuf)],
    ignore: &[String],
) -> crate::Result<Spec> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io("reading", path, e))?;
    load_text(&text, path, overrides, ignore)
}

/// [`load_ignoring`] for spec text that did not come from `path` as it
/// is (a spec built in memory, a Python dict): `path` names it in
/// errors, and relative paths are resolved against its folder (the
/// current folder for a bare name such as `<dict>`).
pub fn load_text(
    text: &str,
    path: &std::path::Path,
    overrides: &[(String, PathBuf)],
    ignore: &[String],
) -> crate::Result<Spec> {
    let infer = |def: &SourceDef| {
        let mut def = def.clone();
        def.ignore.extend(ignore.iter().cloned());
        crate::ingest::infer_columns(&def)
    };
    let mut spec = parse_spec(text, path, overrides, Some(&infer))
        .map_err(|e| crate::Error::Spec(Box::new(e)))?;
    spec.ignore_files(ignore);
    Ok(spec)
}

/// Parses a duration: a positive integer and one unit of `s`, `m`, `h`,
/// `d` (86,400 s) or `w`; `zero_ok` allows `0`. In microseconds.
pub fn parse_duration(text: &str, zero_ok: bool) -> Result<i64, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use s, m, h, d or w, e.g. \"24h\")"))?;
    let (digits, unit) = text.split_at(unit_at);
    let scale = match unit {
        "s" => MICROS_PER_SECOND,
        "m" => 60 * MICROS_PER_SECOND,
        "h" => 3_600 * MICROS_PER_SECOND,
        "d" => MICROS_PER_DAY,
        "w" => 7 * MICROS_PER_DAY,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: a whole number and one unit of s, m, h, d, w (e.g. \"90s\", \"24h\", \"7d\")"
            ));
        }
    };
    if digits.is_empty() {
        return Err(format!("`{text}` has no number (e.g. \"24h\")"));
    }
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    if n == 0 && !zero_ok {
        return Err(format!("`{text}` is not positive"));
    }
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration in words: the largest unit that divides it.
pub fn format_duration(micros: i64) -> String {
    for (unit, scale) in [
        ("w", 7 * MICROS_PER_DAY),
        ("d", MICROS_PER_DAY),
        ("h", 3_600 * MICROS_PER_SECOND),
        ("m", 60 * MICROS_PER_SECOND),
        ("s", MICROS_PER_SECOND),
    ] {
        if micros != 0 && micros % scale == 0 {
            return format!("{}{unit}", micros / scale);
        }
    }
    if micros == 0 {
        "0s".into()
    } else {
        format!("{micros}us")
    }
}

/// The built-in spec of `leakless build --impressions --clicks --listings`:
/// `examples/marketplace/leakless.toml` without `user_id` in clicks, and
/// with the columns required that the shorthand has always required.
pub fn marketplace(impressions: PathBuf, clicks: PathBuf, listings: PathBuf) -> Spec {
    let text = MARKETPLACE_SHORTHAND;
    let mut spec = parse_spec(text, std::path::Path::new("<built-in spec>"), &[], None)
        .expect("the built-in spec is valid");
    for source in &mut spec.sources {
        source.path = match source.name.as_str() {
            "impressions" => impressions.clone(),
            "clicks" => clicks.clone(),
            _ => listings.clone(),
        };
    }
    spec
}

/// The shorthand's spec text.
pub const MARKETPLACE_SHORTHAND: &str = r#"
version = 1

[sources.impressions]
path = "impressions"
time = "impression_ts"
columns = { impression_id = "int64", user_id = "int64", listing_id = "int64", impression_ts = "timestamp" }
required = ["impression_id", "user_id", "listing_id"]

[sources.clicks]
path = "clicks"
time = "click_ts"
columns = { listing_id = "int64", click_ts = "timestamp" }
required = ["listing_id"]

[sources.listings]
path = "listings"
key = "listing_id"
columns = { listing_id = "int64", category = "string", price = "float64", created_ts = "timestamp" }
required = ["listing_id", "created_ts"]

[spine]
source = "impressions"
columns = ["impression_id", "user_id", "listing_id"]

[features.listing_age_seconds]
source = "listings"
op = "time_since"
column = "created_ts"

[features.price]
source = "listings"
op = "lookup"
column = "price"

[features.category]
source = "listings"
op = "lookup"
column = "category"

[features.prior_listing_clicks]
source = "clicks"
key = "listing_id"
op = "count"
window = "lifetime"

[features.listing_clicks_24h]
source = "clicks"
key = "listing_id"
op = "count"
window = "24h"

[labels.clicked]
source = "clicks"
key = "listing_id"
op = "exists"
window = "24h"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_exact() {
        assert_eq!(parse_duration("90s", false), Ok(90 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("1d", false), parse_duration("24h", false));
        assert_eq!(parse_duration("4w", false), Ok(28 * MICROS_PER_DAY));
        assert_eq!(parse_duration("0s", true), Ok(0));
        assert!(parse_duration("0s", false).is_err());
        for bad in ["", "h", "1.5h", "1h30m", "1mo", "-1h", "24 h", "1D"] {
            assert!(parse_duration(bad, true).is_err(), "{bad}");
        }
        assert_eq!(format_duration(MICROS_PER_DAY), "1d");
        assert_eq!(format_duration(90 * MICROS_PER_SECOND), "90s");
    }

    #[test]
    fn a_spec_crosses_the_wire_whole() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for path in [
            "examples/marketplace/leakless.toml",
            "examples/rich/leakless.toml",
            "bench/rich2.toml",
        ] {
            let mut spec = load(&root.join(path), &[]).unwrap();
            spec.sources[0].ignore = vec!["*.json".into()];
            spec.watermark = Some(1_790_000_000_000_000);
            let back = Spec::from_wire(&spec.to_wire().unwrap()).unwrap();
            assert_eq!(back, spec, "{path}");
            assert_eq!(back.feature_set_hash(), spec.feature_set_hash());
        }
        assert!(Spec::from_wire(b"{}").is_err());
    }
}
