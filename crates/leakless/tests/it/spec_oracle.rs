//! The spec-driven build (`Build::from_spec_file`) against a brute-force
//! oracle written from the definitions of the spec format alone.
//!
//! A small Rust model of a spec (sources, spine, features, labels) is drawn
//! at random, rendered as TOML beside CSV inputs, built with 1, 2 and 8
//! partitions, and every output cell is compared with what the oracle gets
//! by scanning every event for every spine row. Times sit on a one-hour grid
//! with a few one-microsecond nudges, so ties and window edges (`t - d`,
//! `t - d - w`, `t + offset`, `t + offset + w`, the watermark, a version's
//! `valid_from`) are common. A few hand-written cases with hand-computed
//! values follow the property test.
//!
//! The oracle works from the model, never from the library: `t` is the
//! spine row's time, `d` the source's delay, `w` the window.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int8Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use leakless::time::{format_rfc3339, parse_timestamp_micros};
use proptest::prelude::*;

use crate::common::{runtime, unindent};

const SEC: i64 = 1_000_000;
const MINUTE: i64 = 60 * SEC;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// An RFC 3339 instant as UTC microseconds.
fn at(text: &str) -> i64 {
    parse_timestamp_micros(text.as_bytes()).unwrap()
}

/// The origin of the time grid.
fn base() -> i64 {
    at("2026-10-01T00:00:00Z")
}

// ---------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------

/// One output cell. Equality is exact: floats compare bitwise.
#[derive(Clone, Debug)]
enum V {
    Null,
    I8(i8),
    I64(i64),
    F64(f64),
    Str(String),
    Bool(bool),
    Ts(i64),
}

impl PartialEq for V {
    fn eq(&self, other: &V) -> bool {
        match (self, other) {
            (V::Null, V::Null) => true,
            (V::I8(a), V::I8(b)) => a == b,
            (V::I64(a), V::I64(b)) | (V::Ts(a), V::Ts(b)) => a == b,
            (V::F64(a), V::F64(b)) => a.to_bits() == b.to_bits(),
            (V::Str(a), V::Str(b)) => a == b,
            (V::Bool(a), V::Bool(b)) => a == b,
            _ => false,
        }
    }
}

/// The order of two cells of one column, used both by min/max and by the
/// output sort: nulls first, strings by bytes (Rust's `str` order), floats
/// by `f64::total_cmp` (so -0.0 < 0.0), false before true.
fn order_cells(a: &V, b: &V) -> Ordering {
    match (a, b) {
        (V::Null, V::Null) => Ordering::Equal,
        (V::Null, _) => Ordering::Less,
        (_, V::Null) => Ordering::Greater,
        (V::I8(x), V::I8(y)) => x.cmp(y),
        (V::I64(x), V::I64(y)) | (V::Ts(x), V::Ts(y)) => x.cmp(y),
        (V::F64(x), V::F64(y)) => x.total_cmp(y),
        (V::Str(x), V::Str(y)) => x.cmp(y),
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        _ => panic!("cells of different types: {a:?} and {b:?}"),
    }
}

/// An output column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    I8,
    I64,
    F64,
    Str,
    Bool,
    Ts,
}

/// The type of an Arrow column read back from Parquet (any string layout,
/// a microsecond timestamp with or without a zone).
fn ty_of(data_type: &DataType) -> Ty {
    match data_type {
        DataType::Int8 => Ty::I8,
        DataType::Int64 => Ty::I64,
        DataType::Float64 => Ty::F64,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ty::Str,
        DataType::Boolean => Ty::Bool,
        DataType::Timestamp(TimeUnit::Microsecond, _) => Ty::Ts,
        other => panic!("unexpected output type {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The model of a spec
// ---------------------------------------------------------------------------

/// A duration as written in the spec and in microseconds.
#[derive(Clone, Copy, Debug)]
struct Dur {
    text: &'static str,
    micros: i64,
}

const fn dur(text: &'static str, micros: i64) -> Dur {
    Dur { text, micros }
}

/// Feature windows; `None` is "lifetime".
const WINDOWS: &[Option<Dur>] = &[
    None,
    Some(dur("1h", HOUR)),
    Some(dur("2h", 2 * HOUR)),
    Some(dur("90m", 90 * MINUTE)),
    Some(dur("1d", DAY)),
    Some(dur("7200s", 7200 * SEC)),
    Some(dur("1w", 7 * DAY)),
];

/// Label windows (labels have no lifetime).
const LABEL_WINDOWS: &[Dur] = &[
    dur("1h", HOUR),
    dur("2h", 2 * HOUR),
    dur("90m", 90 * MINUTE),
    dur("1d", DAY),
];

/// Delays and label offsets: absent (0), "0s" or "1h".
const SHIFTS: &[Option<Dur>] = &[None, Some(dur("0s", 0)), Some(dur("1h", HOUR))];

/// The two event sources. Both have the columns of [`Event`]: `ev` is the
/// folder `ev/` (part-00.csv, part-01.csv, ...), `ev2` the file `ev2.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Ev,
    Ev2,
}

const SOURCES: &[Src] = &[Src::Ev, Src::Ev, Src::Ev2];

impl Src {
    fn name(self) -> &'static str {
        match self {
            Src::Ev => "ev",
            Src::Ev2 => "ev2",
        }
    }

    fn index(self) -> usize {
        match self {
            Src::Ev => 0,
            Src::Ev2 => 1,
        }
    }
}

/// A column kept from the spine source (`id` int64, `u` string, `k` int64).
#[derive(Clone, Copy, Debug)]
enum SpineCol {
    Id,
    U,
    K,
}

const SPINE_ORDERS: &[[SpineCol; 3]] = &[
    [SpineCol::Id, SpineCol::U, SpineCol::K],
    [SpineCol::K, SpineCol::Id, SpineCol::U],
    [SpineCol::U, SpineCol::K, SpineCol::Id],
];

impl SpineCol {
    fn name(self) -> &'static str {
        match self {
            SpineCol::Id => "id",
            SpineCol::U => "u",
            SpineCol::K => "k",
        }
    }

    fn ty(self) -> Ty {
        match self {
            SpineCol::Id | SpineCol::K => Ty::I64,
            SpineCol::U => Ty::Str,
        }
    }

    fn value(self, r: &SpineRow) -> V {
        match self {
            SpineCol::Id => V::I64(r.id),
            SpineCol::U => r.u.map_or(V::Null, |u| V::Str(u.to_owned())),
            SpineCol::K => r.k.map_or(V::Null, V::I64),
        }
    }
}

/// `[spine] where`. SQL: a comparison with null is not true, so the row
/// is dropped.
#[derive(Clone, Copy, Debug)]
enum SpineWhere {
    IdAbove3,
    KAtLeast1,
    UIsB,
}

const SPINE_WHERES: &[SpineWhere] = &[
    SpineWhere::IdAbove3,
    SpineWhere::KAtLeast1,
    SpineWhere::UIsB,
];

impl SpineWhere {
    fn sql(self) -> &'static str {
        match self {
            SpineWhere::IdAbove3 => "id > 3",
            SpineWhere::KAtLeast1 => "k >= 1",
            SpineWhere::UIsB => "u = 'b'",
        }
    }

    fn holds(self, r: &SpineRow) -> bool {
        match self {
            SpineWhere::IdAbove3 => r.id > 3,
            SpineWhere::KAtLeast1 => r.k.is_some_and(|k| k >= 1),
            SpineWhere::UIsB => r.u == Some("b"),
        }
    }
}

/// A feature's `where` over the event source's columns. An event for which
/// it is false or null is not an event for that feature. (No literal is
/// zero, so -0.0 against 0.0 never matters here.)
#[derive(Clone, Copy, Debug)]
enum Filter {
    NAbove1,
    AmountAtLeast2,
    SIsA,
    AmountBelow1,
}

const FILTERS: &[Filter] = &[
    Filter::NAbove1,
    Filter::AmountAtLeast2,
    Filter::SIsA,
    Filter::AmountBelow1,
];

impl Filter {
    fn sql(self) -> &'static str {
        match self {
            Filter::NAbove1 => "n > 1",
            Filter::AmountAtLeast2 => "amount >= 2",
            Filter::SIsA => "s = 'a'",
            Filter::AmountBelow1 => "amount < 1",
        }
    }

    fn holds(self, e: &Event) -> bool {
        match self {
            Filter::NAbove1 => e.n.is_some_and(|n| n > 1),
            Filter::AmountAtLeast2 => e.amount.is_some_and(|a| a >= 2.0),
            Filter::SIsA => e.s == Some("a"),
            Filter::AmountBelow1 => e.amount.is_some_and(|a| a < 1.0),
        }
    }
}

/// A value column of the event sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Amount,
    N,
    S,
    B,
}

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Amount => "amount",
            Col::N => "n",
            Col::S => "s",
            Col::B => "b",
        }
    }

    fn ty(self) -> Ty {
        match self {
            Col::Amount => Ty::F64,
            Col::N => Ty::I64,
            Col::S => Ty::Str,
            Col::B => Ty::Bool,
        }
    }
}

/// An aggregation over the events of a window (features and labels; labels
/// never use the two `Since*`).
#[derive(Clone, Copy, Debug)]
enum Agg {
    Count,
    Exists,
    Sum(Col),
    Mean(Col),
    Min(Col),
    Max(Col),
    First(Col),
    Last(Col),
    CountDistinct(Col),
    SinceLast,
    SinceFirst,
}

impl Agg {
    /// Op number `op` (0..11; 0..9 are the label ops) over column number
    /// `col` (sum and mean only over the numeric columns).
    fn pick(op: usize, col: usize) -> Agg {
        let any = [Col::Amount, Col::N, Col::S, Col::B][col % 4];
        let numeric = [Col::Amount, Col::N][col % 2];
        match op {
            0 => Agg::Count,
            1 => Agg::Exists,
            2 => Agg::Sum(numeric),
            3 => Agg::Mean(numeric),
            4 => Agg::Min(any),
            5 => Agg::Max(any),
            6 => Agg::First(any),
            7 => Agg::Last(any),
            8 => Agg::CountDistinct(any),
            9 => Agg::SinceLast,
            _ => Agg::SinceFirst,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Exists => "exists",
            Agg::Sum(_) => "sum",
            Agg::Mean(_) => "mean",
            Agg::Min(_) => "min",
            Agg::Max(_) => "max",
            Agg::First(_) => "first",
            Agg::Last(_) => "last",
            Agg::CountDistinct(_) => "count_distinct",
            Agg::SinceLast => "time_since_last",
            Agg::SinceFirst => "time_since_first",
        }
    }

    fn column(self) -> Option<Col> {
        match self {
            Agg::Count | Agg::Exists | Agg::SinceLast | Agg::SinceFirst => None,
            Agg::Sum(c)
            | Agg::Mean(c)
            | Agg::Min(c)
            | Agg::Max(c)
            | Agg::First(c)
            | Agg::Last(c)
            | Agg::CountDistinct(c) => Some(c),
        }
    }

    /// count, count_distinct, time_since_*: int64; exists: int8; sum: the
    /// column's type; mean: float64; min/max/first/last: the column's type.
    fn ty(self) -> Ty {
        match self {
            Agg::Count | Agg::CountDistinct(_) | Agg::SinceLast | Agg::SinceFirst => Ty::I64,
            Agg::Exists => Ty::I8,
            Agg::Mean(_) => Ty::F64,
            Agg::Sum(c) | Agg::Min(c) | Agg::Max(c) | Agg::First(c) | Agg::Last(c) => c.ty(),
        }
    }
}

/// How an event feature or label keys the spine to its source. A key
/// matches when every part is non-null on both sides and equal.
#[derive(Clone, Copy, Debug)]
enum EvKey {
    /// `"k"`: spine k = event k.
    K,
    /// `"u"`: spine u = event u (a string key).
    U,
    /// `["u", "k"]`: a composite key.
    UAndK,
    /// `{ k = "j" }`: spine k = event j.
    KAsJ,
    /// `{ u = "u", k = "j" }`.
    UAndKAsJ,
    /// `{ id = "j" }`: spine id = event j.
    IdAsJ,
}

const EV_KEYS: &[EvKey] = &[
    EvKey::K,
    EvKey::K,
    EvKey::U,
    EvKey::UAndK,
    EvKey::KAsJ,
    EvKey::UAndKAsJ,
    EvKey::IdAsJ,
];

/// One part of a key value.
#[derive(Debug, PartialEq)]
enum Part {
    I(i64),
    S(&'static str),
}

impl EvKey {
    fn toml(self) -> &'static str {
        match self {
            EvKey::K => r#""k""#,
            EvKey::U => r#""u""#,
            EvKey::UAndK => r#"["u", "k"]"#,
            EvKey::KAsJ => r#"{ k = "j" }"#,
            EvKey::UAndKAsJ => r#"{ u = "u", k = "j" }"#,
            EvKey::IdAsJ => r#"{ id = "j" }"#,
        }
    }

    /// The spine row's key, or `None` when a part is null (matches nothing).
    fn spine_side(self, r: &SpineRow) -> Option<Vec<Part>> {
        Some(match self {
            EvKey::K | EvKey::KAsJ => vec![Part::I(r.k?)],
            EvKey::U => vec![Part::S(r.u?)],
            EvKey::UAndK | EvKey::UAndKAsJ => vec![Part::S(r.u?), Part::I(r.k?)],
            EvKey::IdAsJ => vec![Part::I(r.id)],
        })
    }

    /// The event's key, or `None` when a part is null (matches nothing).
    fn event_side(self, e: &Event) -> Option<Vec<Part>> {
        Some(match self {
            EvKey::K => vec![Part::I(e.k?)],
            EvKey::KAsJ | EvKey::IdAsJ => vec![Part::I(e.j?)],
            EvKey::U => vec![Part::S(e.u?)],
            EvKey::UAndK => vec![Part::S(e.u?), Part::I(e.k?)],
            EvKey::UAndKAsJ => vec![Part::S(e.u?), Part::I(e.j?)],
        })
    }
}

/// How a dimension feature writes its key. `dim` is keyed by `k`, `dimv`
/// by `["u", "k"]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DimKey {
    /// No `key`: the dimension's own key columns, by name, on the spine.
    Implicit,
    /// `key = "k"` / `key = ["u", "k"]`.
    Named,
    /// `key = { k = "k" }` / `key = { u = "u", k = "k" }`.
    Mapped,
    /// `key = { id = "k" }`: spine id = dimension k (snapshot only).
    FromId,
}

const DIM_KEYS: &[DimKey] = &[
    DimKey::Implicit,
    DimKey::Named,
    DimKey::Mapped,
    DimKey::FromId,
];

impl DimKey {
    fn toml(self, versioned: bool) -> Option<&'static str> {
        match (self, versioned) {
            (DimKey::Implicit, _) => None,
            (DimKey::Named, false) => Some(r#""k""#),
            (DimKey::Named, true) => Some(r#"["u", "k"]"#),
            (DimKey::Mapped, false) => Some(r#"{ k = "k" }"#),
            (DimKey::Mapped | DimKey::FromId, true) => Some(r#"{ u = "u", k = "k" }"#),
            (DimKey::FromId, false) => Some(r#"{ id = "k" }"#),
        }
    }
}

/// A dimension feature: `lookup` of a column, or `time_since` of `created`.
#[derive(Clone, Copy, Debug)]
enum DimOp {
    Price,
    Cat,
    Created,
    Active,
    SinceCreated,
}

const DIM_OPS: &[DimOp] = &[
    DimOp::Price,
    DimOp::Cat,
    DimOp::Created,
    DimOp::Active,
    DimOp::SinceCreated,
];

impl DimOp {
    fn op(self) -> &'static str {
        match self {
            DimOp::SinceCreated => "time_since",
            _ => "lookup",
        }
    }

    fn column(self) -> &'static str {
        match self {
            DimOp::Price => "price",
            DimOp::Cat => "cat",
            DimOp::Created | DimOp::SinceCreated => "created",
            DimOp::Active => "active",
        }
    }

    fn ty(self) -> Ty {
        match self {
            DimOp::Price => Ty::F64,
            DimOp::Cat => Ty::Str,
            DimOp::Created => Ty::Ts,
            DimOp::Active => Ty::Bool,
            DimOp::SinceCreated => Ty::I64,
        }
    }

    /// The value for a spine row at `t` of the dimension row it found.
    fn value(self, x: &DimRow, t: i64) -> V {
        match self {
            DimOp::Price => x.price.map_or(V::Null, V::F64),
            DimOp::Cat => x.cat.map_or(V::Null, |c| V::Str(c.to_owned())),
            DimOp::Created => x.created.map_or(V::Null, V::Ts),
            DimOp::Active => x.active.map_or(V::Null, V::Bool),
            // floor((t - value) / 1 s)
            DimOp::SinceCreated => x
                .created
                .map_or(V::Null, |c| V::I64((t - c).div_euclid(SEC))),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Feature {
    Event {
        src: Src,
        key: EvKey,
        agg: Agg,
        /// `None`: lifetime.
        window: Option<Dur>,
        filter: Option<Filter>,
    },
    Dim {
        /// `dimv` (valid_from `vf`, with the spec's `dimv_delay`) or `dim`
        /// (a snapshot).
        versioned: bool,
        key: DimKey,
        op: DimOp,
    },
}

impl Feature {
    fn ty(&self) -> Ty {
        match self {
            Feature::Event { agg, .. } => agg.ty(),
            Feature::Dim { op, .. } => op.ty(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Label {
    src: Src,
    key: EvKey,
    agg: Agg,
    window: Dur,
    /// `None`: no `offset` line (0).
    offset: Option<Dur>,
}

#[derive(Clone, Debug)]
struct Spec {
    watermark: Option<i64>,
    spine_cols: [SpineCol; 3],
    /// The spine source is the folder `spine/` rather than `spine.csv`.
    spine_folder: bool,
    spine_where: Option<SpineWhere>,
    ev_delay: Option<Dur>,
    ev2_delay: Option<Dur>,
    dimv_delay: Option<Dur>,
    /// Output columns `f0`, `f1`, ...
    features: Vec<Feature>,
    /// Output columns `l0`, `l1`, ...
    labels: Vec<Label>,
}

const SPINE_COLUMNS: &str = r#"{ id = "int64", u = "string", k = "int64", ts = "timestamp" }"#;
const EVENT_COLUMNS: &str = r#"{ k = "int64", j = "int64", u = "string", amount = "float64", n = "int64", s = "string", b = "bool", ts = "timestamp" }"#;
const DIM_COLUMNS: &str =
    r#"{ k = "int64", price = "float64", cat = "string", created = "timestamp", active = "bool" }"#;
const DIMV_COLUMNS: &str = r#"{ u = "string", k = "int64", vf = "timestamp", price = "float64", cat = "string", created = "timestamp", active = "bool" }"#;

impl Spec {
    fn delay_of(&self, src: Src) -> Option<Dur> {
        match src {
            Src::Ev => self.ev_delay,
            Src::Ev2 => self.ev2_delay,
        }
    }

    fn uses(&self, src: Src) -> bool {
        self.features
            .iter()
            .any(|f| matches!(f, Feature::Event { src: s, .. } if *s == src))
            || self.labels.iter().any(|l| l.src == src)
    }

    fn uses_dim(&self, versioned: bool) -> bool {
        self.features
            .iter()
            .any(|f| matches!(f, Feature::Dim { versioned: v, .. } if *v == versioned))
    }

    /// The spec file. Only the sources in use are declared.
    fn toml(&self) -> String {
        let mut s = String::from("version = 1\n");
        if let Some(w) = self.watermark {
            s.push_str(&format!("watermark = \"{}\"\n", format_rfc3339(w)));
        }
        let spine_path = if self.spine_folder {
            "spine"
        } else {
            "spine.csv"
        };
        s.push_str(&format!(
            "\n[sources.spine_src]\npath = \"{spine_path}\"\ntime = \"ts\"\n\
             columns = {SPINE_COLUMNS}\nrequired = [\"id\"]\n"
        ));
        for src in [Src::Ev, Src::Ev2] {
            if !self.uses(src) {
                continue;
            }
            let path = match src {
                Src::Ev => "ev",
                Src::Ev2 => "ev2.csv",
            };
            s.push_str(&format!(
                "\n[sources.{}]\npath = \"{path}\"\ntime = \"ts\"\n",
                src.name()
            ));
            if let Some(d) = self.delay_of(src) {
                s.push_str(&format!("delay = \"{}\"\n", d.text));
            }
            s.push_str(&format!("columns = {EVENT_COLUMNS}\n"));
        }
        if self.uses_dim(false) {
            s.push_str(&format!(
                "\n[sources.dim]\npath = \"dim.csv\"\nkey = \"k\"\ncolumns = {DIM_COLUMNS}\n"
            ));
        }
        if self.uses_dim(true) {
            s.push_str(
                "\n[sources.dimv]\npath = \"dimv.csv\"\nkey = [\"u\", \"k\"]\nvalid_from = \"vf\"\n",
            );
            if let Some(d) = self.dimv_delay {
                s.push_str(&format!("delay = \"{}\"\n", d.text));
            }
            s.push_str(&format!("columns = {DIMV_COLUMNS}\n"));
        }
        let columns: Vec<String> = self
            .spine_cols
            .iter()
            .map(|c| format!("\"{}\"", c.name()))
            .collect();
        s.push_str(&format!(
            "\n[spine]\nsource = \"spine_src\"\ncolumns = [{}]\n",
            columns.join(", ")
        ));
        if let Some(w) = self.spine_where {
            s.push_str(&format!("where = \"{}\"\n", w.sql()));
        }
        for (i, f) in self.features.iter().enumerate() {
            s.push_str(&format!("\n[features.f{i}]\n"));
            match *f {
                Feature::Event {
                    src,
                    key,
                    agg,
                    window,
                    filter,
                } => {
                    s.push_str(&format!(
                        "source = \"{}\"\nkey = {}\nop = \"{}\"\n",
                        src.name(),
                        key.toml(),
                        agg.name()
                    ));
                    if let Some(c) = agg.column() {
                        s.push_str(&format!("column = \"{}\"\n", c.name()));
                    }
                    let window = window.map_or("lifetime", |w| w.text);
                    s.push_str(&format!("window = \"{window}\"\n"));
                    if let Some(p) = filter {
                        s.push_str(&format!("where = \"{}\"\n", p.sql()));
                    }
                }
                Feature::Dim { versioned, key, op } => {
                    let source = if versioned { "dimv" } else { "dim" };
                    s.push_str(&format!("source = \"{source}\"\n"));
                    if let Some(k) = key.toml(versioned) {
                        s.push_str(&format!("key = {k}\n"));
                    }
                    s.push_str(&format!(
                        "op = \"{}\"\ncolumn = \"{}\"\n",
                        op.op(),
                        op.column()
                    ));
                }
            }
        }
        for (i, l) in self.labels.iter().enumerate() {
            s.push_str(&format!(
                "\n[labels.l{i}]\nsource = \"{}\"\nkey = {}\nop = \"{}\"\n",
                l.src.name(),
                l.key.toml(),
                l.agg.name()
            ));
            if let Some(c) = l.agg.column() {
                s.push_str(&format!("column = \"{}\"\n", c.name()));
            }
            s.push_str(&format!("window = \"{}\"\n", l.window.text));
            if let Some(o) = l.offset {
                s.push_str(&format!("offset = \"{}\"\n", o.text));
            }
        }
        s.push_str("\n[output]\npartition = \"none\"\n");
        s
    }

    /// Spine columns in order, the spine time column, features, labels.
    fn output_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .spine_cols
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        names.push("ts".to_owned());
        names.extend((0..self.features.len()).map(|i| format!("f{i}")));
        names.extend((0..self.labels.len()).map(|i| format!("l{i}")));
        names
    }

    fn output_types(&self) -> Vec<Ty> {
        let mut types: Vec<Ty> = self.spine_cols.iter().map(|c| c.ty()).collect();
        types.push(Ty::Ts);
        types.extend(self.features.iter().map(Feature::ty));
        types.extend(self.labels.iter().map(|l| l.agg.ty()));
        types
    }
}

// ---------------------------------------------------------------------------
// The data
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct SpineRow {
    id: i64,
    u: Option<&'static str>,
    k: Option<i64>,
    ts: i64,
    /// Which file of `spine/` holds the row (when the spine is a folder).
    file: usize,
}

#[derive(Clone, Debug)]
struct Event {
    k: Option<i64>,
    j: Option<i64>,
    u: Option<&'static str>,
    amount: Option<f64>,
    n: Option<i64>,
    s: Option<&'static str>,
    b: Option<bool>,
    ts: i64,
    /// Which file of `ev/` holds the event (always 0 for `ev2`).
    file: usize,
}

impl Event {
    fn get(&self, c: Col) -> V {
        match c {
            Col::Amount => self.amount.map_or(V::Null, V::F64),
            Col::N => self.n.map_or(V::Null, V::I64),
            Col::S => self.s.map_or(V::Null, |s| V::Str(s.to_owned())),
            Col::B => self.b.map_or(V::Null, V::Bool),
        }
    }
}

/// A row of `dim` (keyed by `k`; `u` and `vf` unused) or of `dimv` (keyed
/// by `u`, `k`, versioned by `vf`).
#[derive(Clone, Debug)]
struct DimRow {
    u: &'static str,
    k: i64,
    vf: i64,
    price: Option<f64>,
    cat: Option<&'static str>,
    created: Option<i64>,
    active: Option<bool>,
}

#[derive(Clone, Debug)]
struct Data {
    spine: Vec<SpineRow>,
    /// In generation order; `file` says which of `ev/part-00.csv`,
    /// `ev/part-01.csv`, ... holds each.
    ev: Vec<Event>,
    ev2: Vec<Event>,
    /// At most one row per `k`.
    dim: Vec<DimRow>,
    /// At most one row per (`u`, `k`, `vf`).
    dimv: Vec<DimRow>,
}

/// A string cell: empty (null) when absent, quoted when it holds a comma.
fn csv_str(v: Option<&str>) -> String {
    match v {
        None => String::new(),
        Some(s) if s.contains(',') => format!("\"{s}\""),
        Some(s) => s.to_owned(),
    }
}

fn csv_opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// A float in plain decimal that parses back to the same bits: "-0.0",
/// "0.1", "10000000000000000.0".
fn float_text(x: f64) -> String {
    let s = x.to_string();
    if s.contains('.') { s } else { format!("{s}.0") }
}

fn csv_f64(v: Option<f64>) -> String {
    v.map(float_text).unwrap_or_default()
}

fn csv_time(v: Option<i64>) -> String {
    v.map(format_rfc3339).unwrap_or_default()
}

/// The CSV text of `events` (those in `file`, or all), in order.
fn event_csv(events: &[Event], file: Option<usize>) -> String {
    let mut text = String::from("k,j,u,amount,n,s,b,ts\n");
    for e in events.iter().filter(|e| file.is_none_or(|f| e.file == f)) {
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            csv_opt(e.k),
            csv_opt(e.j),
            csv_str(e.u),
            csv_f64(e.amount),
            csv_opt(e.n),
            csv_str(e.s),
            csv_opt(e.b),
            format_rfc3339(e.ts)
        ));
    }
    text
}

fn write_inputs(dir: &Path, data: &Data, spine_folder: bool) {
    let spine_csv = |file: Option<usize>| {
        let mut text = String::from("id,u,k,ts\n");
        for r in data
            .spine
            .iter()
            .filter(|r| file.is_none_or(|f| r.file == f))
        {
            text.push_str(&format!(
                "{},{},{},{}\n",
                r.id,
                csv_str(r.u),
                csv_opt(r.k),
                format_rfc3339(r.ts)
            ));
        }
        text
    };
    if spine_folder {
        std::fs::create_dir_all(dir.join("spine")).unwrap();
        for f in 0..2 {
            std::fs::write(dir.join(format!("spine/part-{f}.csv")), spine_csv(Some(f))).unwrap();
        }
    } else {
        std::fs::write(dir.join("spine.csv"), spine_csv(None)).unwrap();
    }

    std::fs::create_dir_all(dir.join("ev")).unwrap();
    // Zero-padded: files are read in path order, which is `file` order.
    let files = data.ev.iter().map(|e| e.file + 1).max().unwrap_or(0).max(2);
    for f in 0..files {
        std::fs::write(
            dir.join(format!("ev/part-{f:02}.csv")),
            event_csv(&data.ev, Some(f)),
        )
        .unwrap();
    }
    std::fs::write(dir.join("ev2.csv"), event_csv(&data.ev2, None)).unwrap();

    let mut text = String::from("k,price,cat,created,active\n");
    for x in &data.dim {
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            x.k,
            csv_f64(x.price),
            csv_str(x.cat),
            csv_time(x.created),
            csv_opt(x.active)
        ));
    }
    std::fs::write(dir.join("dim.csv"), text).unwrap();

    let mut text = String::from("u,k,vf,price,cat,created,active\n");
    for x in &data.dimv {
        text.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            csv_str(Some(x.u)),
            x.k,
            format_rfc3339(x.vf),
            csv_f64(x.price),
            csv_str(x.cat),
            csv_time(x.created),
            csv_opt(x.active)
        ));
    }
    std::fs::write(dir.join("dimv.csv"), text).unwrap();
}

// ---------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------

/// Events in the order the definitions use: by time, ties by input order
/// (files in sorted path order, then row order within a file).
fn in_event_order(events: &[Event]) -> Vec<Event> {
    let mut v = events.to_vec();
    v.sort_by_key(|e| e.file); // stable: input order
    v.sort_by_key(|e| e.ts); // stable: ties keep input order
    v
}

/// The events (in event order) whose key matches the spine row's and that
/// `keep` accepts.
fn matching<'a>(
    events: &'a [Event],
    key: EvKey,
    r: &SpineRow,
    keep: impl Fn(&Event) -> bool,
) -> Vec<&'a Event> {
    let Some(want) = key.spine_side(r) else {
        return Vec::new();
    };
    events
        .iter()
        .filter(|&e| key.event_side(e).is_some_and(|got| got == want) && keep(e))
        .collect()
}

fn floats(values: &[V]) -> Vec<f64> {
    values
        .iter()
        .map(|v| match v {
            V::F64(x) => *x,
            other => panic!("not a float: {other:?}"),
        })
        .collect()
}

fn ints(values: &[V]) -> Vec<i64> {
    values
        .iter()
        .map(|v| match v {
            V::I64(x) => *x,
            other => panic!("not an int: {other:?}"),
        })
        .collect()
}

/// The identity of a value for count_distinct: -0.0 and 0.0 are one value.
fn distinct_key(v: &V) -> String {
    match v {
        V::F64(x) if *x == 0.0 => "f0".to_owned(),
        V::F64(x) => format!("f{}", x.to_bits()),
        V::I64(x) => format!("i{x}"),
        V::Str(x) => format!("s{x}"),
        V::Bool(x) => format!("b{x}"),
        other => panic!("no distinct key for {other:?}"),
    }
}

/// An aggregation over the window events `evs` (in event order, after
/// `where`) for a spine row at `t`.
///
/// count/exists/time_since_* look at every event; the value ops only at
/// events whose column is non-null (none: sum 0, count_distinct 0, the
/// others null). time_since_* = floor((t - e) / 1 s) of the latest/earliest.
fn aggregate(agg: Agg, t: i64, evs: &[&Event]) -> V {
    // The non-null values of a column, in event order.
    let values = |c: Col| -> Vec<V> {
        evs.iter()
            .map(|e| e.get(c))
            .filter(|v| !matches!(v, V::Null))
            .collect()
    };
    let since = |e: Option<&&Event>| e.map_or(V::Null, |e| V::I64((t - e.ts).div_euclid(SEC)));
    match agg {
        Agg::Count => V::I64(evs.len() as i64),
        Agg::Exists => V::I8(i8::from(!evs.is_empty())),
        Agg::SinceLast => since(evs.last()),
        Agg::SinceFirst => since(evs.first()),
        Agg::Sum(Col::Amount) => V::F64(crate::exact_sum::exact_sum(&floats(&values(Col::Amount)))),
        Agg::Sum(c) => V::I64(ints(&values(c)).iter().sum()),
        Agg::Mean(c) => {
            let v = values(c);
            if v.is_empty() {
                V::Null
            } else if c == Col::Amount {
                V::F64(crate::exact_sum::exact_sum(&floats(&v)) / v.len() as f64)
            } else {
                let sum: i128 = ints(&v).iter().map(|&x| i128::from(x)).sum();
                V::F64(sum as f64 / v.len() as f64)
            }
        }
        Agg::Min(c) => values(c).into_iter().min_by(order_cells).unwrap_or(V::Null),
        Agg::Max(c) => values(c).into_iter().max_by(order_cells).unwrap_or(V::Null),
        // The earliest / latest non-null value; equal times keep input order.
        Agg::First(c) => values(c).first().cloned().unwrap_or(V::Null),
        Agg::Last(c) => values(c).last().cloned().unwrap_or(V::Null),
        Agg::CountDistinct(c) => {
            let distinct: BTreeSet<String> = values(c).iter().map(distinct_key).collect();
            V::I64(distinct.len() as i64)
        }
    }
}

fn feature_value(
    spec: &Spec,
    data: &Data,
    ordered: &[Vec<Event>; 2],
    f: &Feature,
    r: &SpineRow,
) -> V {
    let t = r.ts;
    match *f {
        // An event is in the window when t - d - w <= e < t - d (lifetime:
        // e < t - d).
        Feature::Event {
            src,
            key,
            agg,
            window,
            filter,
        } => {
            let end = t - spec.delay_of(src).map_or(0, |d| d.micros);
            let start = window.map_or(i64::MIN, |w| end - w.micros);
            let evs = matching(&ordered[src.index()], key, r, |e| {
                (start..end).contains(&e.ts) && filter.is_none_or(|p| p.holds(e))
            });
            aggregate(agg, t, &evs)
        }
        // A snapshot row applies whatever t is; of a versioned dimension,
        // the row with the greatest valid_from < t - d. Null key parts and
        // unknown keys give null.
        Feature::Dim { versioned, key, op } => {
            let row = if versioned {
                let cutoff = t - spec.dimv_delay.map_or(0, |d| d.micros);
                match (r.u, r.k) {
                    (Some(u), Some(k)) => data
                        .dimv
                        .iter()
                        .filter(|x| x.u == u && x.k == k && x.vf < cutoff)
                        .max_by_key(|x| x.vf),
                    _ => None,
                }
            } else {
                let k = if key == DimKey::FromId {
                    Some(r.id)
                } else {
                    r.k
                };
                k.and_then(|k| data.dim.iter().find(|x| x.k == k))
            };
            row.map_or(V::Null, |x| op.value(x, t))
        }
    }
}

/// A label over the forward window [t + offset, t + offset + w); the
/// source's delay does not apply.
fn label_value(ordered: &[Vec<Event>; 2], l: &Label, r: &SpineRow) -> V {
    let start = r.ts + l.offset.map_or(0, |o| o.micros);
    let end = start + l.window.micros;
    let evs = matching(&ordered[l.src.index()], l.key, r, |e| {
        (start..end).contains(&e.ts)
    });
    aggregate(l.agg, r.ts, &evs)
}

/// Sorts rows by (spine time, spine columns in order, every other column in
/// order).
fn sort_rows(rows: &mut [Vec<V>], spine_cols: usize) {
    rows.sort_by(|a, b| {
        std::iter::once(spine_cols)
            .chain(0..spine_cols)
            .chain(spine_cols + 1..a.len())
            .map(|i| order_cells(&a[i], &b[i]))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
}

/// The expected output rows, in output order, and the number of immature
/// rows held back.
///
/// A row passing `[spine] where` is mature when t + offset + w <= the
/// watermark for every label (the spec's, else the largest event time of
/// the label's source); immature rows are held back. Rows failing `where`
/// are neither written nor counted.
fn oracle(spec: &Spec, data: &Data) -> (Vec<Vec<V>>, u64) {
    let ordered = [in_event_order(&data.ev), in_event_order(&data.ev2)];
    let mut rows = Vec::new();
    let mut held_back = 0u64;
    for r in &data.spine {
        if spec.spine_where.is_some_and(|w| !w.holds(r)) {
            continue;
        }
        let mature = spec.labels.iter().all(|l| {
            let watermark = spec.watermark.unwrap_or_else(|| {
                ordered[l.src.index()]
                    .iter()
                    .map(|e| e.ts)
                    .max()
                    .expect("an event source has events")
            });
            r.ts + l.offset.map_or(0, |o| o.micros) + l.window.micros <= watermark
        });
        if !mature {
            held_back += 1;
            continue;
        }
        let mut row: Vec<V> = spec.spine_cols.iter().map(|c| c.value(r)).collect();
        row.push(V::Ts(r.ts));
        for f in &spec.features {
            row.push(feature_value(spec, data, &ordered, f, r));
        }
        for l in &spec.labels {
            row.push(label_value(&ordered, l, r));
        }
        rows.push(row);
    }
    sort_rows(&mut rows, spec.spine_cols.len());
    (rows, held_back)
}

// ---------------------------------------------------------------------------
// Random specs and data
// ---------------------------------------------------------------------------

const USERS: &[&str] = &["a", "b", "ü"];
const TEXTS: &[&str] = &["a", "b", "ü", "x,y"];
/// Zeros of both signs; 1e16, 1 and -1e16 need an exact sum; 0.1 has no
/// exact sum in float64, so its rounding shows.
const AMOUNTS: &[f64] = &[-0.0, 0.0, 0.1, 0.5, 1.0, 2.0, 2.5, 3.0, -1.5, 1e16, -1e16];

/// Times on a one-hour grid, mostly in the first 6 hours (many ties),
/// sometimes nudged by a microsecond.
fn time() -> impl Strategy<Value = i64> {
    (
        prop_oneof![3 => 0i64..6, 1 => 0i64..30],
        prop_oneof![6 => Just(0i64), 1 => Just(1i64), 1 => Just(-1i64)],
    )
        .prop_map(|(hours, nudge)| base() + hours * HOUR + nudge)
}

fn text_value(
    values: &'static [&'static str],
    p_some: f64,
) -> impl Strategy<Value = Option<&'static str>> {
    prop::option::weighted(p_some, prop::sample::select(values))
}

/// An event in one of `files` files.
fn event(files: usize) -> impl Strategy<Value = Event> {
    (
        prop::option::weighted(0.85, 0i64..3),
        prop::option::weighted(0.85, 0i64..3),
        text_value(USERS, 0.85),
        prop::option::weighted(0.8, prop::sample::select(AMOUNTS)),
        prop::option::weighted(0.8, -2i64..5),
        text_value(TEXTS, 0.8),
        prop::option::weighted(0.8, any::<bool>()),
        time(),
        0..files,
    )
        .prop_map(|(k, j, u, amount, n, s, b, ts, file)| Event {
            k,
            j,
            u,
            amount,
            n,
            s,
            b,
            ts,
            file,
        })
}

fn spine_row() -> impl Strategy<Value = SpineRow> {
    (
        0i64..10,
        text_value(USERS, 0.85),
        prop::option::weighted(0.85, 0i64..3),
        time(),
        0usize..2,
    )
        .prop_map(|(id, u, k, ts, file)| SpineRow { id, u, k, ts, file })
}

fn dim_row() -> impl Strategy<Value = DimRow> {
    (
        prop::sample::select(USERS),
        0i64..4,
        time(),
        prop::option::weighted(0.8, prop::sample::select(AMOUNTS)),
        text_value(TEXTS, 0.8),
        prop::option::weighted(0.8, time()),
        prop::option::weighted(0.8, any::<bool>()),
    )
        .prop_map(|(u, k, vf, price, cat, created, active)| DimRow {
            u,
            k,
            vf,
            price,
            cat,
            created,
            active,
        })
}

fn data_strategy() -> impl Strategy<Value = Data> {
    data_of(1..14, (2, 1..24), 1..12)
}

/// Random data: `spine` rows, `ev` events spread over `ev.0` files, `ev2`
/// events, and dimension rows (keys made unique as each kind needs).
fn data_of(
    spine: std::ops::Range<usize>,
    ev: (usize, std::ops::Range<usize>),
    ev2: std::ops::Range<usize>,
) -> impl Strategy<Value = Data> {
    (
        prop::collection::vec(spine_row(), spine),
        prop::collection::vec(event(ev.0), ev.1),
        prop::collection::vec(event(1), ev2),
        prop::collection::vec(dim_row(), 0..6),
        prop::collection::vec(dim_row(), 0..12),
    )
        .prop_map(|(spine, ev, ev2, dim, dimv)| {
            let mut keys = BTreeSet::new();
            let dim = dim.into_iter().filter(|x| keys.insert(x.k)).collect();
            let mut versions = BTreeSet::new();
            let dimv = dimv
                .into_iter()
                .filter(|x| versions.insert((x.u, x.k, x.vf)))
                .collect();
            Data {
                spine,
                ev,
                ev2,
                dim,
                dimv,
            }
        })
}

fn feature() -> impl Strategy<Value = Feature> {
    let of_events = (
        prop::sample::select(SOURCES),
        prop::sample::select(EV_KEYS),
        0usize..11,
        0usize..4,
        prop::sample::select(WINDOWS),
        prop::option::weighted(0.3, prop::sample::select(FILTERS)),
    )
        .prop_map(|(src, key, op, col, window, filter)| Feature::Event {
            src,
            key,
            agg: Agg::pick(op, col),
            window,
            filter,
        });
    let of_dimensions = (
        any::<bool>(),
        prop::sample::select(DIM_KEYS),
        prop::sample::select(DIM_OPS),
    )
        .prop_map(|(versioned, key, op)| {
            // `{ id = "k" }` would be a partial key of the versioned one.
            let key = if versioned && key == DimKey::FromId {
                DimKey::Mapped
            } else {
                key
            };
            Feature::Dim { versioned, key, op }
        });
    prop_oneof![3 => of_events, 1 => of_dimensions]
}

fn label() -> impl Strategy<Value = Label> {
    (
        prop::sample::select(SOURCES),
        prop::sample::select(EV_KEYS),
        0usize..9,
        0usize..4,
        prop::sample::select(LABEL_WINDOWS),
        prop::sample::select(SHIFTS),
    )
        .prop_map(|(src, key, op, col, window, offset)| Label {
            src,
            key,
            agg: Agg::pick(op, col),
            window,
            offset,
        })
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        prop::option::of(time()),
        prop::sample::select(SPINE_ORDERS),
        any::<bool>(),
        prop::option::weighted(0.25, prop::sample::select(SPINE_WHERES)),
        (
            prop::sample::select(SHIFTS),
            prop::sample::select(SHIFTS),
            prop::sample::select(SHIFTS),
        ),
        prop::collection::vec(feature(), 1..6),
        prop::collection::vec(label(), 0..3),
    )
        .prop_map(
            |(
                watermark,
                spine_cols,
                spine_folder,
                spine_where,
                (ev_delay, ev2_delay, dimv_delay),
                features,
                labels,
            )| Spec {
                watermark,
                spine_cols,
                spine_folder,
                spine_where,
                ev_delay,
                ev2_delay,
                dimv_delay,
                features,
                labels,
            },
        )
}

// ---------------------------------------------------------------------------
// Running a build and reading it back
// ---------------------------------------------------------------------------

/// A build split by key: which hot keys it spreads, and over how many
/// shards built a few at a time through files (`Build::with_shards`), or
/// over its partitions in memory.
#[derive(Debug, Clone, Copy)]
struct Split {
    hot: leakless::HotKeys,
    shards: Option<usize>,
}

/// The builds each case runs: (partitions, split by key how). Besides 1,
/// 2 and 8 partitions, the plan split by key (`leakless::split`) on 3, on
/// 2 with every key salted (two salts of a key often in one partition),
/// and on 2 partitions over 5 shards with every key salted, unless the
/// engine splits every build anyway (a cluster).
fn builds(partitions: &[usize]) -> Vec<(usize, Option<Split>)> {
    let mut builds: Vec<_> = partitions.iter().map(|&p| (p, None)).collect();
    if !crate::engine().split_by_key() {
        let split = |hot, shards| Some(Split { hot, shards });
        builds.push((3, split(leakless::HotKeys::Auto, None)));
        builds.push((2, split(leakless::HotKeys::Every, None)));
        builds.push((2, split(leakless::HotKeys::Every, Some(5))));
    }
    builds
}

/// A build's name in the byte comparison: its partitions, plus 100 split
/// by key, 200 split with every key salted, 300 over shards.
fn build_label(partitions: usize, split: Option<Split>) -> usize {
    match split {
        None => partitions,
        Some(Split {
            shards: Some(_), ..
        }) => partitions + 300,
        Some(Split {
            hot: leakless::HotKeys::Every,
            ..
        }) => partitions + 200,
        Some(_) => partitions + 100,
    }
}

/// Builds `spec_path` into `out` with `partitions` on the test binary's
/// engine (this process; a cluster in the cluster crate's tests), split by
/// key when `split`; returns (rows written, immature rows held back).
fn run_build_split(
    spec_path: &Path,
    out: &Path,
    partitions: usize,
    split: Option<Split>,
) -> leakless::Result<(u64, u64)> {
    let build = leakless::Build::from_spec_file(spec_path, out)?;
    let summary = runtime().block_on(
        build
            .with_target_partitions(partitions)
            .with_split_by_key(split.is_some())
            .with_hot_keys(split.map_or(leakless::HotKeys::Auto, |s| s.hot))
            .with_shards(split.and_then(|s| s.shards))
            .with_overwrite(true)
            .execute_on(crate::engine()),
    )?;
    if split.is_some() || crate::engine().split_by_key() {
        // Every partition of every key group told its load (each under a
        // name of its own); the first group's probed every spine row that
        // passed `where`.
        let probed = summary.rows_written + summary.immature_held_back;
        for (g, load) in summary.key_groups.iter().enumerate() {
            let total = (load.spine_rows_mean * load.tasks as f64).round() as u64;
            match g {
                0 => assert_eq!(total, probed, "key group 0: {load:?}"),
                _ => assert!(total >= summary.rows_written, "key group {g}: {load:?}"),
            }
        }
    }
    Ok((summary.rows_written, summary.immature_held_back))
}

/// The dataset's Parquet files in name order (`_manifest.json` left out;
/// a missing folder has none).
fn parquet_files(out: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("parquet"))
        .collect();
    files.sort();
    files
}

/// Each Parquet file's name and bytes, in name order.
type Files = Vec<(String, Vec<u8>)>;

/// The Parquet files, then the profile (which must not depend on the
/// plan either).
fn file_bytes(out: &Path) -> Files {
    let profile = out.join(leakless::quality::profile::FILE_NAME);
    parquet_files(out)
        .into_iter()
        .chain(profile.is_file().then_some(profile))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect()
}

/// The dataset read back: column names and types (empty when there is no
/// file) and every row, files in name order.
#[derive(Debug, Default)]
struct Table {
    names: Vec<String>,
    types: Vec<Ty>,
    rows: Vec<Vec<V>>,
}

fn cell(c: &ArrayRef, i: usize) -> V {
    if c.is_null(i) {
        return V::Null;
    }
    match c.data_type() {
        DataType::Int8 => V::I8(c.as_primitive::<Int8Type>().value(i)),
        DataType::Int64 => V::I64(c.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => V::F64(c.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => V::Str(c.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => V::Str(c.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => V::Str(c.as_string_view().value(i).to_owned()),
        DataType::Boolean => V::Bool(c.as_boolean().value(i)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            V::Ts(c.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        other => panic!("unexpected output type {other:?}"),
    }
}

fn read_table(out: &Path) -> Table {
    let mut table = Table::default();
    for path in parquet_files(out) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let fields = builder.schema().fields().clone();
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let types: Vec<Ty> = fields.iter().map(|f| ty_of(f.data_type())).collect();
        if table.names.is_empty() {
            table.names = names;
            table.types = types;
        } else {
            assert_eq!(table.names, names, "every file has the same columns");
            assert_eq!(table.types, types, "every file has the same column types");
        }
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            for i in 0..batch.num_rows() {
                table
                    .rows
                    .push(batch.columns().iter().map(|c| cell(c, i)).collect());
            }
        }
    }
    table
}

fn assert_rows(actual: &[Vec<V>], expected: &[Vec<V>], context: &str) {
    if actual == expected {
        return;
    }
    let show = |rows: &[Vec<V>]| {
        let mut text = String::new();
        for r in rows {
            text.push_str(&format!("  {r:?}\n"));
        }
        text
    };
    let first = actual.iter().zip(expected).position(|(a, e)| a != e);
    panic!(
        "rows differ ({} written, {} expected, first difference at {first:?}) with {context}\n\
         --- expected ---\n{}--- actual ---\n{}",
        actual.len(),
        expected.len(),
        show(expected),
        show(actual)
    );
}

/// Every build wrote the same files, byte for byte.
fn assert_same_bytes(outputs: &[(usize, Files)], context: &str) {
    let (p0, first) = &outputs[0];
    for (p, files) in &outputs[1..] {
        let names0: Vec<&String> = first.iter().map(|f| &f.0).collect();
        let names: Vec<&String> = files.iter().map(|f| &f.0).collect();
        assert_eq!(
            names0, names,
            "files with {p0} and {p} partitions\n{context}"
        );
        for ((name, a), (_, b)) in first.iter().zip(files) {
            assert!(
                a == b,
                "{name} differs between {p0} and {p} partitions\n{context}"
            );
        }
    }
}

/// Writes the inputs and the spec of one case, builds it with 1, 2 and 8
/// partitions and compares everything with the oracle.
fn check(spec: &Spec, data: &Data) {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), data, spec.spine_folder);
    let toml = spec.toml();
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, &toml).unwrap();
    // The resolved spec crosses a process boundary unchanged (a cluster's
    // executors get it this way).
    let loaded = leakless::spec::load(&spec_path, &[]).unwrap();
    let wired = leakless::spec::Spec::from_wire(&loaded.to_wire().unwrap()).unwrap();
    assert_eq!(wired, loaded, "the spec on the wire\n{toml}");

    let (expected, held_back) = oracle(spec, data);
    let names = spec.output_names();
    let types = spec.output_types();

    let mut outputs = Vec::new();
    for (partitions, split) in builds(&[1, 2, 8]) {
        let out = dir
            .path()
            .join(format!("out-{}", build_label(partitions, split)));
        let (rows_written, held) = run_build_split(&spec_path, &out, partitions, split)
            .unwrap_or_else(|e| {
                panic!("build with {partitions} partitions (split {split:?}) failed: {e}\n{toml}")
            });
        let label = build_label(partitions, split);
        let table = read_table(&out);
        if !table.names.is_empty() {
            assert_eq!(
                table.names, names,
                "columns ({partitions} partitions)\n{toml}"
            );
            assert_eq!(
                table.types, types,
                "column types ({partitions} partitions)\n{toml}"
            );
        }
        assert_rows(
            &table.rows,
            &expected,
            &format!("{partitions} partitions\n{toml}"),
        );
        assert_eq!(
            rows_written,
            expected.len() as u64,
            "rows_written ({partitions} partitions)\n{toml}"
        );
        assert_eq!(
            held, held_back,
            "immature_held_back ({partitions} partitions)\n{toml}"
        );
        outputs.push((label, file_bytes(&out)));
    }
    assert_same_bytes(&outputs, &toml);
    check_quarantine(spec, data, &outputs[0], expected.len() as u64, held_back);
}

// ---------------------------------------------------------------------------
// Bad rows under quarantine
// ---------------------------------------------------------------------------

/// A valid text of a column of the inputs (by its name), and a bad one of
/// each class the strict mode refuses for its type.
fn column_texts(name: &str) -> (&'static str, Vec<(&'static str, &'static str)>) {
    match name {
        "id" | "k" | "j" | "n" => ("1", vec![("12x", "not a valid int64")]),
        "amount" | "price" => (
            "1.5",
            vec![
                ("1.2.3", "not a valid float64"),
                ("inf", "not a finite float64"),
            ],
        ),
        "b" | "active" => ("true", vec![("maybe", "not a valid bool")]),
        "ts" | "vf" | "created" => (
            "2026-10-01T00:00:00Z",
            vec![
                ("noon", "not a valid timestamp"),
                ("1800-01-01T00:00:00Z", "a time outside the years"),
            ],
        ),
        _ => ("a", vec![("\"a\"x", "characters after a closing quote")]),
    }
}

/// Writes bad rows of every class into every CSV file below `dir`: between
/// its rows and at its end (an unterminated quote, which swallows the rest
/// of its file, stops a build even under quarantine: not here). Returns, per file
/// (relative path), the line and the expected reason of each.
fn add_bad_rows(dir: &Path) -> Vec<(String, Vec<(u64, &'static str)>)> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in walk(dir) {
        if entry.extension().is_some_and(|x| x == "csv") {
            files.push(entry);
        }
    }
    files.sort();
    let mut all = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap().to_owned();
        let names: Vec<&str> = header.split(',').collect();
        let good: Vec<&str> = names.iter().map(|n| column_texts(n).0).collect();
        let mut bad: Vec<(String, &'static str)> = Vec::new();
        let mut extra = good.clone();
        extra.push("1");
        bad.push((extra.join(","), "expected"));
        bad.push((good[0].to_owned(), "expected"));
        for (i, name) in names.iter().enumerate() {
            let mut variants = column_texts(name).1;
            // A required column left empty (the time of events and of
            // versions, the spine's `id`).
            if matches!(*name, "ts" | "vf" | "id") {
                variants.push(("", "missing value"));
            }
            for (value, reason) in variants {
                let mut row = good.clone();
                row[i] = value;
                bad.push((row.join(","), reason));
            }
        }
        let rows: Vec<&str> = lines.collect();
        let mut out = vec![header.clone()];
        let mut injected = Vec::new();
        let mut next_bad = bad.into_iter();
        for (n, row) in rows.iter().enumerate() {
            if n % 2 == 0
                && let Some((line, reason)) = next_bad.next()
            {
                out.push(line);
                injected.push((out.len() as u64, reason));
            }
            out.push(row.to_string());
        }
        for (line, reason) in next_bad {
            out.push(line);
            injected.push((out.len() as u64, reason));
        }
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
        let relative = path
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        all.push((relative, injected));
    }
    all
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

/// The source a file of the inputs belongs to.
fn source_of(relative: &str) -> &'static str {
    match relative {
        r if r.starts_with("spine") => "spine_src",
        r if r.starts_with("ev/") => "ev",
        "ev2.csv" => "ev2",
        "dim.csv" => "dim",
        "dimv.csv" => "dimv",
        other => panic!("unknown input {other}"),
    }
}

/// (file, line, reason) of every row of a quarantine file.
fn quarantined_rows(path: &Path) -> Vec<(String, u64, String)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let files = batch.column_by_name("file").unwrap().as_string::<i32>();
        let lines = (batch.column_by_name("line").unwrap())
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        let reasons = batch.column_by_name("reason").unwrap().as_string::<i32>();
        for i in 0..batch.num_rows() {
            rows.push((
                files.value(i).to_owned(),
                lines.value(i),
                reasons.value(i).to_owned(),
            ));
        }
    }
    rows
}

/// The case's inputs again with bad rows of every class in every file,
/// built with quarantine (on 2 partitions, and split by key with every key
/// salted): the dataset's files are `expected`'s, byte for byte; each bad
/// row is in its source's quarantine file with its place and reason, in
/// file and line order; the spine's rows add up to the oracle's counts.
fn check_quarantine(
    spec: &Spec,
    data: &Data,
    expected: &(usize, Files),
    oracle_rows: u64,
    held_back: u64,
) {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), data, spec.spine_folder);
    let injected = add_bad_rows(dir.path());
    let toml = spec.toml();
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, &toml).unwrap();
    let filtered = (data.spine.iter())
        .filter(|r| spec.spine_where.is_some_and(|w| !w.holds(r)))
        .count() as u64;
    let mut builds = vec![(2, None)];
    if !crate::engine().split_by_key() {
        let every = leakless::HotKeys::Every;
        builds.push((
            2,
            Some(Split {
                hot: every,
                shards: None,
            }),
        ));
        builds.push((
            2,
            Some(Split {
                hot: every,
                shards: Some(5),
            }),
        ));
    }
    for (partitions, split) in builds {
        let out = dir
            .path()
            .join(format!("out-{}", build_label(partitions, split)));
        let build = leakless::Build::from_spec_file(&spec_path, &out).unwrap();
        let summary = runtime()
            .block_on(
                build
                    .with_target_partitions(partitions)
                    .with_split_by_key(split.is_some())
                    .with_hot_keys(split.map_or(leakless::HotKeys::Auto, |s| s.hot))
                    .with_shards(split.and_then(|s| s.shards))
                    .with_bad_rows(leakless::ingest::BadRowPolicy::Quarantine)
                    .with_max_bad_rows(Some(1.0))
                    .execute_on(crate::engine()),
            )
            .unwrap_or_else(|e| panic!("quarantine build (split {split:?}) failed: {e}\n{toml}"));
        let context = format!("quarantine, {partitions} partitions, split {split:?}\n{toml}");
        assert_same_bytes(&[expected.clone(), (0, file_bytes(&out))], &context);
        for (source, rows) in &summary.reconciliation {
            let want: Vec<(String, u64, &str)> = (injected.iter())
                .filter(|(file, _)| source_of(file) == source)
                .flat_map(|(file, lines)| {
                    let name = dir.path().join(file).display().to_string();
                    lines
                        .iter()
                        .map(move |&(line, reason)| (name.clone(), line, reason))
                })
                .collect();
            assert_eq!(rows.quarantined, want.len() as u64, "{source}: {context}");
            let got = quarantined_rows(&out.join(format!("_quarantine/{source}.parquet")));
            assert_eq!(got.len(), want.len(), "{source}: {context}");
            for ((file, line, reason), (want_file, want_line, want_reason)) in got.iter().zip(&want)
            {
                assert_eq!((file, line), (want_file, want_line), "{source}: {context}");
                assert!(
                    reason.starts_with(want_reason),
                    "{file} line {line}: {reason:?}, expected {want_reason:?}\n{context}"
                );
            }
            if source == "spine_src" {
                let spine = rows.spine.expect("the spine's terms");
                assert_eq!(
                    (
                        spine.filtered_by_where,
                        spine.held_back_immature,
                        spine.written
                    ),
                    (filtered, held_back, oracle_rows),
                    "{context}"
                );
                assert_eq!(
                    rows.read,
                    data.spine.len() as u64 + rows.quarantined,
                    "{context}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_specs_match_the_oracle(spec in spec_strategy(), data in data_strategy()) {
        check(&spec, &data);
    }
}

/// Thousands of events per key and window (three keys, a one-hour grid:
/// every window edge holds hundreds of tied events), each key's run spread
/// over twelve files of `ev/`, and every op over every sliding window and
/// lifetime, as features and as labels: the range structures (exact sums,
/// the block sparse table, the distinct counts with their slides and fresh
/// counts) against the oracle's scans, at 1, 2 and 8 partitions.
fn dense_data() -> impl Strategy<Value = Data> {
    data_of(40..70, (12, 3000..4000), 800..1200)
}

/// Every op over every column it takes, each over a sliding window (and
/// lifetime), keys and sources taken in turn; every label op likewise.
fn every_op_spec() -> Spec {
    let mut features = Vec::new();
    let mut n = 0;
    for op in 0..11 {
        for col in 0..4 {
            for window in WINDOWS {
                n += 1;
                if n % 3 != 0 && window.is_some() {
                    continue;
                }
                features.push(Feature::Event {
                    src: SOURCES[n % SOURCES.len()],
                    key: [EvKey::K, EvKey::U, EvKey::UAndK][n % 3],
                    agg: Agg::pick(op, col),
                    window: *window,
                    filter: (n % 5 == 0).then_some(FILTERS[n % FILTERS.len()]),
                });
            }
        }
    }
    let labels = (0..9)
        .flat_map(|op| (0..4).map(move |col| (op, col)))
        .enumerate()
        .map(|(i, (op, col))| Label {
            src: SOURCES[i % SOURCES.len()],
            key: [EvKey::K, EvKey::U, EvKey::UAndK][i % 3],
            agg: Agg::pick(op, col),
            window: LABEL_WINDOWS[i % LABEL_WINDOWS.len()],
            offset: SHIFTS[i % SHIFTS.len()],
        })
        .collect();
    Spec {
        watermark: Some(base() + 40 * DAY),
        spine_cols: SPINE_ORDERS[0],
        spine_folder: false,
        spine_where: None,
        ev_delay: Some(dur("1h", HOUR)),
        ev2_delay: None,
        dimv_delay: None,
        features,
        labels,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    #[test]
    fn thousands_of_events_per_window_match_the_oracle(data in dense_data()) {
        check(&every_op_spec(), &data);
    }
}

// ---------------------------------------------------------------------------
// Hand-written cases
// ---------------------------------------------------------------------------

/// Writes `files` (unindented) and `spec` into a fresh folder, builds with
/// 1 and 8 partitions, checks both wrote the same bytes, and returns (rows
/// written, immature held back, the table).
fn build_fixture(files: &[(&str, &str)], spec: &str) -> (u64, u64, Table) {
    let dir = tempfile::tempdir().unwrap();
    for &(path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, unindent(text)).unwrap();
    }
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, unindent(spec)).unwrap();
    let mut outputs = Vec::new();
    let mut result = None;
    for (partitions, split) in builds(&[1, 8]) {
        let out = dir
            .path()
            .join(format!("out-{}", build_label(partitions, split)));
        let (rows, held) =
            run_build_split(&spec_path, &out, partitions, split).unwrap_or_else(|e| {
                panic!("build with {partitions} partitions (split {split:?}) failed: {e}")
            });
        let label = build_label(partitions, split);
        let table = read_table(&out);
        outputs.push((label, file_bytes(&out)));
        if let Some((r, h, _)) = &result {
            // Every plan counts the same rows written and held back.
            assert_eq!(
                (rows, held),
                (*r, *h),
                "{partitions} partitions, split {split:?}"
            );
        } else {
            result = Some((rows, held, table));
        }
    }
    assert_same_bytes(&outputs, spec);
    result.unwrap()
}

fn assert_table(table: &Table, names: &[&str], rows: &[Vec<V>]) {
    let got: Vec<&str> = table.names.iter().map(String::as_str).collect();
    assert_eq!(got, names);
    assert_rows(&table.rows, rows, "a hand-written case");
}

fn int(x: i64) -> V {
    V::I64(x)
}

fn float(x: f64) -> V {
    V::F64(x)
}

fn text(x: &str) -> V {
    V::Str(x.to_owned())
}

fn ts(x: &str) -> V {
    V::Ts(at(x))
}

#[test]
fn first_and_last_break_time_ties_by_input_order_across_files() {
    // Event order: 00:00 p0r0 (1.0), p0r2 (3.0), p1r1 (null);
    //              01:00 p0r1 (5.0), p1r0 (6.0), p1r2 (null).
    let files = [
        (
            "spine.csv",
            "
            id,k,ts
            1,1,2026-10-01T02:00:00Z
            ",
        ),
        (
            "ev/part-0.csv",
            "
            k,amount,s,ts
            1,1.0,p0r0,2026-10-01T00:00:00Z
            1,5.0,p0r1,2026-10-01T01:00:00Z
            1,3.0,p0r2,2026-10-01T00:00:00Z
            ",
        ),
        (
            "ev/part-1.csv",
            "
            k,amount,s,ts
            1,6.0,p1r0,2026-10-01T01:00:00Z
            1,,p1r1,2026-10-01T00:00:00Z
            1,,p1r2,2026-10-01T01:00:00Z
            ",
        ),
    ];
    let spec = r#"
        version = 1

        [sources.spine_src]
        path = "spine.csv"
        time = "ts"
        columns = { id = "int64", k = "int64", ts = "timestamp" }

        [sources.ev]
        path = "ev"
        time = "ts"
        columns = { k = "int64", amount = "float64", s = "string", ts = "timestamp" }

        [spine]
        source = "spine_src"
        columns = ["id", "k"]

        [features.first_amount]
        source = "ev"
        key = "k"
        op = "first"
        column = "amount"
        window = "lifetime"

        [features.last_amount]
        source = "ev"
        key = "k"
        op = "last"
        column = "amount"
        window = "lifetime"

        [features.first_s]
        source = "ev"
        key = "k"
        op = "first"
        column = "s"
        window = "lifetime"

        [features.last_s]
        source = "ev"
        key = "k"
        op = "last"
        column = "s"
        window = "lifetime"

        [features.events]
        source = "ev"
        key = "k"
        op = "count"
        window = "lifetime"

        [features.since_last]
        source = "ev"
        key = "k"
        op = "time_since_last"
        window = "lifetime"

        [features.since_first]
        source = "ev"
        key = "k"
        op = "time_since_first"
        window = "lifetime"

        [features.total]
        source = "ev"
        key = "k"
        op = "sum"
        column = "amount"
        window = "lifetime"

        [features.average]
        source = "ev"
        key = "k"
        op = "mean"
        column = "amount"
        window = "lifetime"

        [output]
        partition = "none"
    "#;
    let (written, held, table) = build_fixture(&files, spec);
    assert_eq!((written, held), (1, 0));
    assert_table(
        &table,
        &[
            "id",
            "k",
            "ts",
            "first_amount",
            "last_amount",
            "first_s",
            "last_s",
            "events",
            "since_last",
            "since_first",
            "total",
            "average",
        ],
        &[vec![
            int(1),
            int(1),
            ts("2026-10-01T02:00:00Z"),
            float(1.0),
            float(6.0),
            text("p0r0"),
            text("p1r2"),
            int(6),
            int(3600),
            int(7200),
            float(15.0),
            float(3.75),
        ]],
    );
}

#[test]
fn zero_and_minus_zero_are_one_distinct_value_and_sums_are_exact() {
    let files = [
        (
            "spine.csv",
            "
            id,k,ts
            1,1,2026-10-01T02:00:00Z
            2,2,2026-10-01T02:00:00Z
            ",
        ),
        (
            "ev.csv",
            "
            k,amount,ts
            1,-0.0,2026-10-01T00:00:00Z
            1,0.0,2026-10-01T00:00:00Z
            1,0.0,2026-10-01T01:00:00Z
            1,,2026-10-01T01:00:00Z
            1,1.0,2026-10-01T01:00:00Z
            2,10000000000000000.0,2026-10-01T00:00:00Z
            2,1.0,2026-10-01T00:00:00Z
            2,-10000000000000000.0,2026-10-01T01:00:00Z
            ",
        ),
    ];
    let spec = r#"
        version = 1

        [sources.spine_src]
        path = "spine.csv"
        time = "ts"
        columns = { id = "int64", k = "int64", ts = "timestamp" }

        [sources.ev]
        path = "ev.csv"
        time = "ts"
        columns = { k = "int64", amount = "float64", ts = "timestamp" }

        [spine]
        source = "spine_src"
        columns = ["id", "k"]

        [features.n_distinct]
        source = "ev"
        key = "k"
        op = "count_distinct"
        column = "amount"
        window = "lifetime"

        [features.low]
        source = "ev"
        key = "k"
        op = "min"
        column = "amount"
        window = "lifetime"

        [features.high]
        source = "ev"
        key = "k"
        op = "max"
        column = "amount"
        window = "lifetime"

        [features.total]
        source = "ev"
        key = "k"
        op = "sum"
        column = "amount"
        window = "lifetime"

        [features.average]
        source = "ev"
        key = "k"
        op = "mean"
        column = "amount"
        window = "lifetime"

        [features.earliest]
        source = "ev"
        key = "k"
        op = "first"
        column = "amount"
        window = "lifetime"

        [output]
        partition = "none"
    "#;
    let (written, held, table) = build_fixture(&files, spec);
    assert_eq!((written, held), (2, 0));
    let t = || ts("2026-10-01T02:00:00Z");
    assert_table(
        &table,
        &[
            "id",
            "k",
            "ts",
            "n_distinct",
            "low",
            "high",
            "total",
            "average",
            "earliest",
        ],
        &[
            // -0.0, 0.0, 0.0, 1.0: two distinct values; min is -0.0 in
            // total order; the first is -0.0.
            vec![
                int(1),
                int(1),
                t(),
                int(2),
                float(-0.0),
                float(1.0),
                float(1.0),
                float(0.25),
                float(-0.0),
            ],
            // 1e16, 1.0, -1e16: a plain sum gives 0.0, the exact 1.0.
            vec![
                int(2),
                int(2),
                t(),
                int(3),
                float(-1e16),
                float(1e16),
                float(1.0),
                float(1.0 / 3.0),
                float(1e16),
            ],
        ],
    );
}

#[test]
fn a_version_valid_from_exactly_t_minus_delay_is_not_seen() {
    // delay 1h: the row at t = 02:00 sees versions with vf < 01:00.
    let files = [
        (
            "spine.csv",
            "
            id,u,k,ts
            1,a,1,2026-10-01T02:00:00Z
            2,b,1,2026-10-01T02:00:00Z
            3,b,2,2026-10-01T02:00:00Z
            4,a,1,2026-10-01T03:00:00Z
            5,,1,2026-10-01T03:00:00Z
            ",
        ),
        (
            "dimv.csv",
            "
            u,k,vf,price,created
            a,1,2026-10-01T01:00:00Z,2.0,2026-10-01T01:00:00Z
            a,1,2026-10-01T00:00:00Z,1.0,2026-10-01T00:00:00.5Z
            b,1,2026-10-01T01:00:00Z,5.0,
            b,2,2026-10-01T00:59:59.999999Z,7.0,2026-10-01T02:00:00.5Z
            ",
        ),
    ];
    let spec = r#"
        version = 1

        [sources.spine_src]
        path = "spine.csv"
        time = "ts"
        columns = { id = "int64", u = "string", k = "int64", ts = "timestamp" }

        [sources.dimv]
        path = "dimv.csv"
        key = ["u", "k"]
        valid_from = "vf"
        delay = "1h"
        columns = { u = "string", k = "int64", vf = "timestamp", price = "float64", created = "timestamp" }

        [spine]
        source = "spine_src"
        columns = ["id", "u", "k"]

        [features.dim_price]
        source = "dimv"
        op = "lookup"
        column = "price"

        [features.age]
        source = "dimv"
        key = { u = "u", k = "k" }
        op = "time_since"
        column = "created"

        [output]
        partition = "none"
    "#;
    let (written, held, table) = build_fixture(&files, spec);
    assert_eq!((written, held), (5, 0));
    let (t2, t3) = (ts("2026-10-01T02:00:00Z"), ts("2026-10-01T03:00:00Z"));
    assert_table(
        &table,
        &["id", "u", "k", "ts", "dim_price", "age"],
        &[
            // The 01:00 version is exactly t - d: the 00:00 one applies;
            // 7199.5 s floors to 7199.
            vec![int(1), text("a"), int(1), t2.clone(), float(1.0), int(7199)],
            // The only version is exactly t - d: none yet.
            vec![int(2), text("b"), int(1), t2.clone(), V::Null, V::Null],
            // One microsecond before t - d is seen; created 0.5 s after t
            // floors to -1.
            vec![int(3), text("b"), int(2), t2, float(7.0), int(-1)],
            // At 03:00, t - d = 02:00: the 01:00 version applies.
            vec![int(4), text("a"), int(1), t3.clone(), float(2.0), int(7200)],
            // A null key part finds nothing.
            vec![int(5), V::Null, int(1), t3, V::Null, V::Null],
        ],
    );
}

#[test]
fn a_key_with_a_null_part_matches_nothing() {
    let files = [
        (
            "spine.csv",
            "
            id,u,k,ts
            1,,1,2026-10-01T02:00:00Z
            2,a,1,2026-10-01T02:00:00Z
            3,a,,2026-10-01T02:00:00Z
            ",
        ),
        (
            "ev.csv",
            "
            u,k,amount,ts
            ,1,1.0,2026-10-01T00:00:00Z
            a,1,2.0,2026-10-01T00:00:00Z
            a,,4.0,2026-10-01T00:00:00Z
            ",
        ),
    ];
    let spec = r#"
        version = 1

        [sources.spine_src]
        path = "spine.csv"
        time = "ts"
        columns = { id = "int64", u = "string", k = "int64", ts = "timestamp" }

        [sources.ev]
        path = "ev.csv"
        time = "ts"
        columns = { u = "string", k = "int64", amount = "float64", ts = "timestamp" }

        [spine]
        source = "spine_src"
        columns = ["id", "u", "k"]

        [features.events]
        source = "ev"
        key = ["u", "k"]
        op = "count"
        window = "lifetime"

        [features.seen]
        source = "ev"
        key = ["u", "k"]
        op = "exists"
        window = "lifetime"

        [features.total]
        source = "ev"
        key = ["u", "k"]
        op = "sum"
        column = "amount"
        window = "lifetime"

        [features.average]
        source = "ev"
        key = ["u", "k"]
        op = "mean"
        column = "amount"
        window = "lifetime"

        [features.since_last]
        source = "ev"
        key = ["u", "k"]
        op = "time_since_last"
        window = "lifetime"

        [features.n_distinct]
        source = "ev"
        key = ["u", "k"]
        op = "count_distinct"
        column = "amount"
        window = "lifetime"

        [features.by_k]
        source = "ev"
        key = "k"
        op = "count"
        window = "lifetime"

        [output]
        partition = "none"
    "#;
    let (written, held, table) = build_fixture(&files, spec);
    assert_eq!((written, held), (3, 0));
    let t = || ts("2026-10-01T02:00:00Z");
    assert_table(
        &table,
        &[
            "id",
            "u",
            "k",
            "ts",
            "events",
            "seen",
            "total",
            "average",
            "since_last",
            "n_distinct",
            "by_k",
        ],
        &[
            vec![
                int(1),
                V::Null,
                int(1),
                t(),
                int(0),
                V::I8(0),
                float(0.0),
                V::Null,
                V::Null,
                int(0),
                int(2),
            ],
            vec![
                int(2),
                text("a"),
                int(1),
                t(),
                int(1),
                V::I8(1),
                float(2.0),
                float(2.0),
                int(7200),
                int(1),
                int(2),
            ],
            vec![
                int(3),
                text("a"),
                V::Null,
                t(),
                int(0),
                V::I8(0),
                float(0.0),
                V::Null,
                V::Null,
                int(0),
                int(0),
            ],
        ],
    );
}

/// Events of key 1 at 00:00, 01:00, 02:00, 03:00 and 05:00 (the default
/// watermark), a delay of 1h, and spine rows at 02:00, 03:00, 03:00 + 1 µs
/// and 04:00.
const LABELS_FILES: [(&str, &str); 2] = [
    (
        "spine.csv",
        "
        id,k,ts
        1,1,2026-10-01T02:00:00Z
        2,1,2026-10-01T03:00:00Z
        3,1,2026-10-01T03:00:00.000001Z
        4,1,2026-10-01T04:00:00Z
        ",
    ),
    (
        "ev.csv",
        "
        k,ts
        1,2026-10-01T00:00:00Z
        1,2026-10-01T01:00:00Z
        1,2026-10-01T02:00:00Z
        1,2026-10-01T03:00:00Z
        1,2026-10-01T05:00:00Z
        ",
    ),
];

const LABELS_SPEC: &str = r#"
    [sources.spine_src]
    path = "spine.csv"
    time = "ts"
    columns = { id = "int64", k = "int64", ts = "timestamp" }

    [sources.ev]
    path = "ev.csv"
    time = "ts"
    delay = "1h"
    columns = { k = "int64", ts = "timestamp" }

    [spine]
    source = "spine_src"
    columns = ["id", "k"]

    [features.prior_1h]
    source = "ev"
    key = "k"
    op = "count"
    window = "1h"

    [features.prior]
    source = "ev"
    key = "k"
    op = "count"
    window = "lifetime"

    [features.since_last]
    source = "ev"
    key = "k"
    op = "time_since_last"
    window = "lifetime"

    [labels.next]
    source = "ev"
    key = "k"
    op = "count"
    window = "1h"
    offset = "1h"

    [labels.clicked]
    source = "ev"
    key = "k"
    op = "exists"
    window = "2h"
    offset = "0s"

    [output]
    partition = "none"
"#;

const LABELS_NAMES: [&str; 8] = [
    "id",
    "k",
    "ts",
    "prior_1h",
    "prior",
    "since_last",
    "next",
    "clicked",
];

#[test]
fn windows_end_at_t_minus_delay_and_labels_need_a_mature_window() {
    // Default watermark: 05:00, the last event. Both labels end at t + 2h,
    // so rows up to 03:00 are mature (03:00 exactly at the watermark).
    let spec = format!("version = 1\n{LABELS_SPEC}");
    let (written, held, table) = build_fixture(&LABELS_FILES, &spec);
    assert_eq!((written, held), (2, 2));
    assert_table(
        &table,
        &LABELS_NAMES,
        &[
            // t = 02:00: the 1h window is [00:00, 01:00) (its start is in,
            // t - d is out); next is [03:00, 04:00); clicked is [02:00,
            // 04:00), the event at exactly t counts (no delay for labels).
            vec![
                int(1),
                int(1),
                ts("2026-10-01T02:00:00Z"),
                int(1),
                int(1),
                int(7200),
                int(1),
                V::I8(1),
            ],
            // t = 03:00: next is [04:00, 05:00), the 05:00 event is out.
            vec![
                int(2),
                int(1),
                ts("2026-10-01T03:00:00Z"),
                int(1),
                int(2),
                int(7200),
                int(0),
                V::I8(1),
            ],
        ],
    );
}

#[test]
fn the_spec_watermark_decides_maturity() {
    let spec = format!("version = 1\nwatermark = \"2026-10-01T04:00:00Z\"\n{LABELS_SPEC}");
    let (written, held, table) = build_fixture(&LABELS_FILES, &spec);
    assert_eq!((written, held), (1, 3));
    assert_table(
        &table,
        &LABELS_NAMES,
        &[vec![
            int(1),
            int(1),
            ts("2026-10-01T02:00:00Z"),
            int(1),
            int(1),
            int(7200),
            int(1),
            V::I8(1),
        ]],
    );
}

/// The spine's source is also indexed (a feature and a label over it)
/// and has a `where`: every plan, split by key too, counts the rows the
/// `where` drops and takes the label's watermark from the spine's events.
#[test]
fn a_spine_source_that_is_also_indexed_counts_its_where_once() {
    let files = [(
        "spine.csv",
        "
        id,k,ts
        1,1,2026-10-01T01:00:00Z
        2,1,2026-10-01T02:00:00Z
        3,1,2026-10-01T02:30:00Z
        4,2,2026-10-01T03:00:00Z
        5,1,2026-10-01T04:00:00Z
        ",
    )];
    let spec = r#"
        version = 1

        [sources.spine_src]
        path = "spine.csv"
        time = "ts"
        columns = { id = "int64", k = "int64", ts = "timestamp" }

        [spine]
        source = "spine_src"
        columns = ["id", "k"]
        where = "id <> 2"

        [features.prior]
        source = "spine_src"
        key = "k"
        op = "count"
        window = "lifetime"

        [labels.again_1h]
        source = "spine_src"
        key = "k"
        op = "count"
        window = "1h"

        [output]
        partition = "none"
    "#;
    // The watermark is 04:00, the latest event: rows up to 03:00 are
    // mature; id 2 fails the `where` (but is an event of the index).
    let (written, held, table) = build_fixture(&files, spec);
    assert_eq!((written, held), (3, 1));
    assert_table(
        &table,
        &["id", "k", "ts", "prior", "again_1h"],
        &[
            // A label's window starts at t: each row counts itself.
            vec![int(1), int(1), ts("2026-10-01T01:00:00Z"), int(0), int(1)],
            vec![int(3), int(1), ts("2026-10-01T02:30:00Z"), int(2), int(1)],
            vec![int(4), int(2), ts("2026-10-01T03:00:00Z"), int(0), int(1)],
        ],
    );
}
