//! TOML text -> a validated [`Spec`], collecting every mistake with its place.
//!
//! The text is read into raw serde structs that keep each token's span
//! (unknown keys are errors: a typo must not change what is computed), then
//! resolved in one pass. Each error names the line and column, the table it
//! is in and quotes the offending token:
//!
//! ```text
//! spec.toml:14:10: features.spend_7d: source `ordrs` does not exist (sources: views, orders)
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::{
    ColumnDef, ColumnType, CsvOptions, Derived, KeyPart, Op, OutputFormat, Partitioning, Role,
    SourceDef, SourceKind, Spec, SpineDef, ValueType, Window, parse_duration,
};
use crate::time::parse_timestamp_micros;

/// One mistake in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// 1-based line and column, when the mistake has a place.
    pub line: Option<(usize, usize)>,
    /// The table or key it is in, e.g. `features.price`.
    pub context: String,
    pub message: String,
}

/// Every mistake found in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors {
    pub path: PathBuf,
    pub errors: Vec<SpecError>,
}

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.path.display())?;
            if let Some((line, column)) = e.line {
                write!(f, ":{line}:{column}")?;
            }
            if !e.context.is_empty() {
                write!(f, ": {}", e.context)?;
            }
            write!(f, ": {}", e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    version: Option<S<i64>>,
    watermark: Option<S<String>>,
    #[serde(default)]
    sources: IndexMap<String, S<RawSource>>,
    spine: Option<S<RawSpine>>,
    #[serde(default)]
    features: IndexMap<String, S<RawDerived>>,
    #[serde(default)]
    labels: IndexMap<String, S<RawDerived>>,
    output: Option<S<RawOutput>>,
    #[serde(default)]
    checks: IndexMap<String, S<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: Option<S<String>>,
    time: Option<S<String>>,
    key: Option<S<toml::Value>>,
    valid_from: Option<S<String>>,
    delay: Option<S<String>>,
    columns: Option<S<IndexMap<String, S<String>>>>,
    required: Option<Vec<S<String>>>,
    delimiter: Option<S<String>>,
    null_values: Option<Vec<S<String>>>,
    max_bad_rows: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpine {
    source: S<String>,
    #[serde(default)]
    columns: Vec<S<String>>,
    #[serde(rename = "where")]
    filter: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDerived {
    source: Option<S<String>>,
    key: Option<S<toml::Value>>,
    op: Option<S<String>>,
    column: Option<S<String>>,
    window: Option<S<String>>,
    offset: Option<S<String>>,
    #[serde(rename = "where")]
    filter: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    partition: Option<S<String>>,
    format: Option<S<String>>,
}

/// Collects errors with places while resolving.
struct Errors<'a> {
    text: &'a str,
    found: Vec<SpecError>,
    /// Sources declared with mistakes (already reported): what refers to
    /// them is not reported again as naming a source that does not exist.
    broken: Vec<String>,
}

impl Errors<'_> {
    fn at(&mut self, span: Option<Range<usize>>, context: &str, message: impl Into<String>) {
        let line = span.map(|s| line_column(self.text, s.start));
        self.found.push(SpecError {
            line,
            context: context.to_owned(),
            message: message.into(),
        });
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The columns of a source that declares none.
pub type InferColumns<'a> = &'a dyn Fn(&SourceDef) -> Result<Vec<ColumnDef>, String>;

/// The name of the table whose header last precedes byte `at` of `text`
/// (`features.x` for `[features.x]`; empty at the top level): where a
/// TOML error is, for its message.
fn table_at(text: &str, at: usize) -> String {
    let before = text.get(..at).unwrap_or(text);
    // `[name]` or `[[name]]`, then nothing but a comment (a line of an
    // array's values has a comma, between its values or after the last).
    let header = |line: &str| {
        let name = line.trim().strip_prefix('[')?;
        let name = name.strip_prefix('[').unwrap_or(name);
        let (name, rest) = name.split_once(']')?;
        let rest = rest.strip_prefix(']').unwrap_or(rest).trim_start();
        let whole = rest.is_empty() || rest.starts_with('#');
        (whole && !name.contains(',')).then(|| name.trim().to_owned())
    };
    // The error's own line: a header (an error about the table, such as a
    // missing key, is placed at its header), or inside one (unclosed, say:
    // in no table yet).
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].split('\n').next().unwrap_or_default();
    if line.trim_start().starts_with('[') {
        return header(line).unwrap_or_default();
    }
    before.lines().rev().find_map(header).unwrap_or_default()
}

/// Parses and validates a spec. `path` names the file in messages and its
/// folder resolves relative source paths; `overrides` replace the paths of
/// named sources (`--source NAME=PATH`). `infer` supplies the columns of a
/// source that declares none (Parquet: from the file's schema).
pub fn parse_spec(
    text: &str,
    path: &Path,
    overrides: &[(String, PathBuf)],
    infer: Option<InferColumns<'_>>,
) -> Result<Spec, SpecErrors> {
    let fail = |errors| SpecErrors {
        path: path.to_owned(),
        errors,
    };
    let raw: RawSpec = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_column(text, s.start));
        fail(vec![SpecError {
            line,
            context: e
                .span()
                .map(|s| table_at(text, s.start))
                .unwrap_or_default(),
            message: e.message().trim_end().to_owned(),
        }])
    })?;
    let mut errors = Errors {
        text,
        found: Vec::new(),
        broken: Vec::new(),
    };
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    for (name, _) in overrides {
        if !raw.sources.contains_key(name) {
            errors.at(
                None,
                "--source",
                format!(
                    "source `{name}` does not exist (sources: {})",
                    list(raw.sources.keys())
                ),
            );
        }
    }
    let spec = resolve(raw, &base, overrides, infer, &mut errors);
    match spec {
        Some(spec) if errors.found.is_empty() => Ok(spec),
        _ => Err(fail(errors.found)),
    }
}

fn resolve(
    raw: RawSpec,
    base: &Path,
    overrides: &[(String, PathBuf)],
    infer: Option<InferColumns<'_>>,
    errors: &mut Errors<'_>,
) -> Option<Spec> {
    match &raw.version {
        None => errors.at(None, "version", "missing `version = 1` at the top"),
        Some(v) if *v.get_ref() != 1 => errors.at(
            Some(v.span()),
            "version",
            format!(
                "version `{}` is not supported (this leakless reads version 1)",
                v.get_ref()
            ),
        ),
        Some(_) => {}
    }
    let watermark = raw.watermark.as_ref().and_then(|w| {
        let parsed = parse_timestamp_micros(w.get_ref().as_bytes());
        if parsed.is_none() {
            errors.at(
                Some(w.span()),
                "watermark",
                format!(
                    "`{}` is not an RFC 3339 timestamp (e.g. 2026-10-31T00:00:00Z)",
                    w.get_ref()
                ),
            );
        }
        parsed
    });
    if raw.sources.is_empty() {
        errors.at(None, "sources", "no `[sources.NAME]` table");
    }
    let sources: Vec<SourceDef> = raw
        .sources
        .iter()
        .filter_map(|(name, s)| {
            let path = overrides.iter().find(|o| o.0 == *name).map(|o| o.1.clone());
            resolve_source(name, s, base, path, infer, errors)
        })
        .collect();
    errors.broken = raw
        .sources
        .keys()
        .filter(|name| !sources.iter().any(|s| &s.name == *name))
        .cloned()
        .collect();
    let partition = match raw
        .output
        .as_ref()
        .and_then(|o| o.get_ref().partition.as_ref())
    {
        None => Partitioning::Day,
        Some(p) => match p.get_ref().as_str() {
            "day" => Partitioning::Day,
            "hour" => Partitioning::Hour,
            "none" => Partitioning::None,
            other => {
                errors.at(
                    Some(p.span()),
                    "output.partition",
                    format!("`{other}` is not a partitioning (day, hour, none)"),
                );
                Partitioning::Day
            }
        },
    };
    let format = match raw
        .output
        .as_ref()
        .and_then(|o| o.get_ref().format.as_ref())
    {
        None => OutputFormat::Parquet,
        Some(f) => OutputFormat::parse(f.get_ref()).unwrap_or_else(|| {
            errors.at(
                Some(f.span()),
                "output.format",
                format!("`{}` is not an output format (parquet, delta)", f.get_ref()),
            );
            OutputFormat::Parquet
        }),
    };
    let Some(raw_spine) = &raw.spine else {
        errors.at(
            None,
            "spine",
            "no `[spine]` table (which source has one row per output row?)",
        );
        return None;
    };
    let spine = resolve_spine(raw_spine, &sources, errors)?;
    let mut derived = Vec::new();
    let mut names: Vec<String> = spine.columns.clone();
    names.push(spine.time.clone());
    for (role, table) in [(Role::Feature, &raw.features), (Role::Label, &raw.labels)] {
        for (name, d) in table {
            let context = format!(
                "{}.{name}",
                if role == Role::Feature {
                    "features"
                } else {
                    "labels"
                }
            );
            if names.contains(name) {
                errors.at(
                    Some(d.span()),
                    &context,
                    format!("the output already has a column `{name}`"),
                );
                continue;
            }
            names.push(name.clone());
            if let Some(d) = resolve_derived(name, role, d, &context, &sources, &spine, errors) {
                derived.push(d);
            }
        }
    }
    let mut checks = Vec::new();
    // Output column types need the whole spec: known once it is made.
    let mut spec = Spec {
        version: 1,
        sources,
        spine,
        derived,
        watermark,
        partition,
        format,
        base: base.to_owned(),
        checks: Vec::new(),
    };
    let outputs = spec.output_columns();
    let column = |name: &str| {
        let ty = outputs.iter().find(|c| c.name == name)?.ty;
        let label = (spec.derived.iter()).any(|d| d.name == name && d.role == Role::Label);
        Some((label, ty))
    };
    for (key, value) in &raw.checks {
        match crate::quality::checks::parse_entry(key, value.get_ref(), &column, partition) {
            Ok(found) => checks.extend(found),
            Err(message) => errors.at(Some(value.span()), &format!("checks.{key}"), message),
        }
    }
    spec.checks = checks;
    Some(spec)
}

fn resolve_source(
    name: &str,
    raw: &S<RawSource>,
    base: &Path,
    path_override: Option<PathBuf>,
    infer: Option<InferColumns<'_>>,
    errors: &mut Errors<'_>,
) -> Option<SourceDef> {
    let context = format!("sources.{name}");
    let span = raw.span();
    let raw = raw.get_ref();
    let before = errors.found.len();
    let path = match (&raw.path, path_override) {
        (_, Some(p)) => p,
        // An `s3://` URL is not relative to the spec's folder.
        (Some(p), None) if crate::storage::is_remote(Path::new(p.get_ref())) => {
            PathBuf::from(p.get_ref())
        }
        (Some(p), None) => base.join(p.get_ref()),
        (None, None) => {
            errors.at(Some(span.clone()), &context, "missing `path`");
            PathBuf::new()
        }
    };
    let delay_micros = raw.delay.as_ref().map_or(0, |d| {
        parse_duration(d.get_ref(), true).unwrap_or_else(|m| {
            errors.at(Some(d.span()), &context, format!("delay: {m}"));
            0
        })
    });
    let max_bad_rows = raw.max_bad_rows.as_ref().and_then(|m| {
        let fraction = *m.get_ref();
        if (0.0..=1.0).contains(&fraction) {
            return Some(fraction);
        }
        errors.at(
            Some(m.span()),
            &context,
            format!("max_bad_rows {fraction} is not a fraction of the source's rows (0 to 1)"),
        );
        None
    });
    let mut csv = CsvOptions::default();
    if let Some(d) = &raw.delimiter {
        match d.get_ref().as_bytes() {
            [b] if *b != b'"' && *b != b'\n' && *b != b'\r' => csv.delimiter = *b,
            _ => errors.at(
                Some(d.span()),
                &context,
                format!(
                    "delimiter {:?} is not one ASCII character other than a quote or a line end",
                    d.get_ref()
                ),
            ),
        }
    }
    if let Some(n) = &raw.null_values {
        csv.null_values = n.iter().map(|v| v.get_ref().clone()).collect();
    }
    let kind = match (&raw.time, &raw.key) {
        (Some(time), None) => {
            if let Some(v) = &raw.valid_from {
                errors.at(
                    Some(v.span()),
                    &context,
                    "`valid_from` belongs to a dimension (a source with `key`), not to an event source with `time`",
                );
            }
            SourceKind::Events {
                time: time.get_ref().clone(),
            }
        }
        (None, Some(key)) => {
            let key_columns = match key.get_ref() {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(a) if !a.is_empty() && a.iter().all(|v| v.is_str()) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            if key_columns.is_empty() {
                errors.at(
                    Some(key.span()),
                    &context,
                    "a dimension's `key` is a column name or a list of them",
                );
            }
            SourceKind::Dimension {
                key: key_columns,
                valid_from: raw.valid_from.as_ref().map(|v| v.get_ref().clone()),
            }
        }
        (Some(_), Some(k)) => {
            errors.at(
                Some(k.span()),
                &context,
                "a source has either `time` (events) or `key` (a dimension), not both",
            );
            return None;
        }
        (None, None) => {
            errors.at(
                Some(span),
                &context,
                "a source needs `time` (events) or `key` (a dimension)",
            );
            return None;
        }
    };
    let mut source = SourceDef {
        name: name.to_owned(),
        path,
        ignore: Vec::new(),
        columns: None,
        kind,
        delay_micros,
        csv,
        max_bad_rows,
    };
    let mut columns: Vec<ColumnDef> = Vec::new();
    match &raw.columns {
        Some(declared) => {
            for (column, ty) in declared.get_ref() {
                match ColumnType::from_name(ty.get_ref()) {
                    Some(t) => columns.push(ColumnDef {
                        name: column.clone(),
                        ty: t,
                        required: false,
                    }),
                    None => errors.at(
                        Some(ty.span()),
                        &format!("{context}.columns.{column}"),
                        format!(
                            "unknown type `{}` (types: {})",
                            ty.get_ref(),
                            list(ColumnType::ALL.map(ColumnType::name))
                        ),
                    ),
                }
            }
        }
        None => match infer {
            Some(infer) => match infer(&source) {
                Ok(found) => columns = found,
                Err(m) => errors.at(Some(span.clone()), &context, m),
            },
            None => errors.at(
                Some(span.clone()),
                &context,
                "missing `columns` (name = \"type\"; only Parquet sources may omit it)",
            ),
        },
    }
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let mut require = |errors: &mut Errors<'_>,
                       column: &str,
                       span: Option<Range<usize>>,
                       what: &str|
     -> Option<ColumnType> {
        match columns.iter_mut().find(|c| c.name == column) {
            Some(c) => {
                c.required = true;
                Some(c.ty)
            }
            None => {
                errors.at(
                    span,
                    &context,
                    format!(
                        "{what} `{column}` is not a declared column (columns: {})",
                        list(&names)
                    ),
                );
                None
            }
        }
    };
    let is_time = |t: Option<ColumnType>| t.is_none_or(|t| t.value_type() == ValueType::Timestamp);
    match &source.kind {
        SourceKind::Events { time } => {
            let t = require(
                errors,
                time,
                raw.time.as_ref().map(|t| t.span()),
                "time column",
            );
            if !is_time(t) {
                errors.at(
                    raw.time.as_ref().map(|t| t.span()),
                    &context,
                    format!(
                        "time column `{time}` is {}, not a timestamp type",
                        t.map_or("", |t| t.name())
                    ),
                );
            }
        }
        SourceKind::Dimension { key, valid_from } => {
            // A key column may be empty: a null key matches nothing.
            for k in key {
                if !names.contains(k) {
                    errors.at(
                        raw.key.as_ref().map(|k| k.span()),
                        &context,
                        format!(
                            "key column `{k}` is not a declared column (columns: {})",
                            list(&names)
                        ),
                    );
                }
            }
            if let Some(v) = valid_from {
                let t = require(
                    errors,
                    v,
                    raw.valid_from.as_ref().map(|v| v.span()),
                    "valid_from column",
                );
                if !is_time(t) {
                    errors.at(
                        raw.valid_from.as_ref().map(|v| v.span()),
                        &context,
                        format!("valid_from column `{v}` is not a timestamp type"),
                    );
                }
            }
        }
    }
    for r in raw.required.iter().flatten() {
        require(errors, r.get_ref(), Some(r.span()), "required column");
    }
    if let SourceKind::Dimension { key, .. } = &source.kind {
        for k in key {
            if let Some(c) = columns.iter().find(|c| &c.name == k)
                && !matches!(c.ty.value_type(), ValueType::Int64 | ValueType::String)
            {
                errors.at(
                    raw.key.as_ref().map(|k| k.span()),
                    &context,
                    format!(
                        "key column `{k}` is {}; keys are int64 or string",
                        c.ty.name()
                    ),
                );
            }
        }
    }
    source.columns = Some(columns);
    (errors.found.len() == before).then_some(source)
}

fn resolve_spine(
    raw: &S<RawSpine>,
    sources: &[SourceDef],
    errors: &mut Errors<'_>,
) -> Option<SpineDef> {
    let raw = raw.get_ref();
    let name = raw.source.get_ref();
    let Some(source) = sources.iter().find(|s| &s.name == name) else {
        if errors.broken.contains(name) {
            return None;
        }
        errors.at(
            Some(raw.source.span()),
            "spine",
            format!(
                "source `{name}` does not exist (sources: {})",
                list(sources.iter().map(|s| &s.name))
            ),
        );
        return None;
    };
    let SourceKind::Events { time } = &source.kind else {
        errors.at(
            Some(raw.source.span()),
            "spine",
            format!("source `{name}` is a dimension; the spine is an event source (with `time`)"),
        );
        return None;
    };
    let mut columns = Vec::new();
    for c in &raw.columns {
        if source.column(c.get_ref()).is_none() {
            errors.at(
                Some(c.span()),
                "spine.columns",
                format!(
                    "`{}` is not a column of `{name}` (columns: {})",
                    c.get_ref(),
                    list(source.columns.iter().flatten().map(|c| &c.name))
                ),
            );
        } else if c.get_ref() == time || columns.contains(c.get_ref()) {
            errors.at(
                Some(c.span()),
                "spine.columns",
                format!(
                    "`{}` is listed twice (the spine time is always kept)",
                    c.get_ref()
                ),
            );
        } else {
            columns.push(c.get_ref().clone());
        }
    }
    let filter = raw.filter.as_ref().map(|f| {
        check_filter(f.get_ref(), source)
            .unwrap_or_else(|m| errors.at(Some(f.span()), "spine.where", m));
        f.get_ref().clone()
    });
    Some(SpineDef {
        source: name.clone(),
        columns,
        time: time.clone(),
        filter,
    })
}

fn resolve_derived(
    name: &str,
    role: Role,
    raw: &S<RawDerived>,
    context: &str,
    sources: &[SourceDef],
    spine: &SpineDef,
    errors: &mut Errors<'_>,
) -> Option<Derived> {
    let span = raw.span();
    let raw = raw.get_ref();
    let before = errors.found.len();
    let Some(source_name) = &raw.source else {
        errors.at(Some(span), context, "missing `source`");
        return None;
    };
    let Some(source) = sources.iter().find(|s| s.name == *source_name.get_ref()) else {
        if errors.broken.contains(source_name.get_ref()) {
            return None;
        }
        errors.at(
            Some(source_name.span()),
            context,
            format!(
                "source `{}` does not exist (sources: {})",
                source_name.get_ref(),
                list(sources.iter().map(|s| &s.name))
            ),
        );
        return None;
    };
    let Some(op_text) = &raw.op else {
        errors.at(Some(span), context, "missing `op`");
        return None;
    };
    let Some(op) = Op::from_name(op_text.get_ref()) else {
        errors.at(
            Some(op_text.span()),
            context,
            format!(
                "unknown op `{}` (ops: {})",
                op_text.get_ref(),
                list(Op::ALL.map(Op::name))
            ),
        );
        return None;
    };
    let spine_source = sources
        .iter()
        .find(|s| s.name == spine.source)
        .expect("resolved spine source");
    // The op against the kind of source and the role.
    match (&source.kind, op.is_dimension_op(), role) {
        (SourceKind::Dimension { .. }, false, _) => errors.at(
            Some(op_text.span()),
            context,
            format!(
                "op `{}` needs an event source; `{}` is a dimension (ops: lookup, time_since)",
                op.name(),
                source.name
            ),
        ),
        (SourceKind::Events { .. }, true, _) => errors.at(
            Some(op_text.span()),
            context,
            format!(
                "op `{}` reads a dimension; `{}` is an event source",
                op.name(),
                source.name
            ),
        ),
        (_, true, Role::Label) => errors.at(
            Some(op_text.span()),
            context,
            format!(
                "op `{}` is not a label op (labels look at future events)",
                op.name()
            ),
        ),
        _ => {}
    }
    if role == Role::Label && matches!(op, Op::TimeSinceLast | Op::TimeSinceFirst) {
        errors.at(
            Some(op_text.span()),
            context,
            format!("op `{}` is a feature op, not a label op", op.name()),
        );
    }
    // The key: spine column = source column.
    let key: Vec<KeyPart> = match (&raw.key, &source.kind) {
        (None, SourceKind::Dimension { key, .. }) => key
            .iter()
            .map(|k| KeyPart {
                spine: k.clone(),
                source: k.clone(),
            })
            .collect(),
        (None, SourceKind::Events { .. }) => {
            errors.at(
                Some(span.clone()),
                context,
                "missing `key` (which column matches the spine's?)",
            );
            Vec::new()
        }
        (Some(k), _) => match k.get_ref() {
            toml::Value::String(s) => vec![KeyPart {
                spine: s.clone(),
                source: s.clone(),
            }],
            toml::Value::Array(a) if !a.is_empty() && a.iter().all(|v| v.is_str()) => a
                .iter()
                .filter_map(|v| v.as_str())
                .map(|s| KeyPart {
                    spine: s.to_owned(),
                    source: s.to_owned(),
                })
                .collect(),
            toml::Value::Table(t) if !t.is_empty() && t.values().all(|v| v.is_str()) => t
                .iter()
                .map(|(spine_col, v)| KeyPart {
                    spine: spine_col.clone(),
                    source: v.as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
            _ => {
                errors.at(
                    Some(k.span()),
                    context,
                    "`key` is a column name, a list of names, or a table { spine_column = \"source_column\" }",
                );
                Vec::new()
            }
        },
    };
    let key_span = raw.key.as_ref().map_or(span.clone(), |k| k.span());
    for part in &key {
        let spine_col = spine_source.column(&part.spine);
        let source_col = source.column(&part.source);
        if spine_col.is_none() {
            errors.at(
                Some(key_span.clone()),
                context,
                format!(
                    "key column `{}` is not a column of the spine source `{}` (columns: {})",
                    part.spine,
                    spine_source.name,
                    list(spine_source.columns.iter().flatten().map(|c| &c.name))
                ),
            );
        }
        if source_col.is_none() {
            errors.at(
                Some(key_span.clone()),
                context,
                format!(
                    "key column `{}` is not a column of `{}` (columns: {})",
                    part.source,
                    source.name,
                    list(source.columns.iter().flatten().map(|c| &c.name))
                ),
            );
        }
        if let (Some(a), Some(b)) = (spine_col, source_col) {
            let (a, b) = (a.ty.value_type(), b.ty.value_type());
            if !matches!(a, ValueType::Int64 | ValueType::String) || a != b {
                errors.at(
                    Some(key_span.clone()),
                    context,
                    format!(
                        "key `{}` is {} on the spine and `{}` is {} in `{}`; a key pairs two int64 or two string columns",
                        part.spine,
                        a.name(),
                        part.source,
                        b.name(),
                        source.name
                    ),
                );
            }
        }
    }
    if let SourceKind::Dimension { key: own, .. } = &source.kind {
        let used: Vec<&String> = key.iter().map(|k| &k.source).collect();
        let same = used.len() == own.len() && own.iter().all(|k| used.contains(&k));
        if !key.is_empty() && !same {
            errors.at(
                Some(key_span.clone()),
                context,
                format!("a dimension is looked up by its own key ({})", list(own)),
            );
        }
    }
    // The column.
    let column_type = match (&raw.column, op.reads_values()) {
        (Some(c), true) => match source.column(c.get_ref()) {
            Some(def) => Some(def.ty.value_type()),
            None => {
                errors.at(
                    Some(c.span()),
                    context,
                    format!(
                        "`{}` is not a column of `{}` (columns: {})",
                        c.get_ref(),
                        source.name,
                        list(source.columns.iter().flatten().map(|c| &c.name))
                    ),
                );
                None
            }
        },
        (None, true) => {
            errors.at(
                Some(op_text.span()),
                context,
                format!("op `{}` needs a `column`", op.name()),
            );
            None
        }
        (Some(c), false) => {
            errors.at(
                Some(c.span()),
                context,
                format!("op `{}` reads no column; remove `column`", op.name()),
            );
            None
        }
        (None, false) => None,
    };
    if let Some(t) = column_type {
        let fits = match op {
            Op::Sum | Op::Mean => matches!(t, ValueType::Int64 | ValueType::Float64),
            Op::TimeSince => t == ValueType::Timestamp,
            _ => true,
        };
        if !fits {
            errors.at(
                raw.column.as_ref().map(|c| c.span()),
                context,
                format!(
                    "op `{}` of `{}`, a {} column: {} needs {}",
                    op.name(),
                    raw.column.as_ref().map_or("", |c| c.get_ref()),
                    t.name(),
                    op.name(),
                    if op == Op::TimeSince {
                        "a timestamp"
                    } else {
                        "int64 or float64"
                    }
                ),
            );
        }
    }
    // The window and offset.
    let window = if op.is_dimension_op() {
        if let Some(w) = &raw.window {
            errors.at(
                Some(w.span()),
                context,
                format!("op `{}` has no window", op.name()),
            );
        }
        None
    } else {
        match &raw.window {
            None => {
                errors.at(
                    Some(span.clone()),
                    context,
                    "missing `window` (\"lifetime\" or a duration like \"24h\")",
                );
                None
            }
            Some(w) if w.get_ref() == "lifetime" => {
                if role == Role::Label {
                    errors.at(
                        Some(w.span()),
                        context,
                        "`lifetime` is not a label window (a label needs an end: e.g. \"24h\")",
                    );
                }
                Some(Window::Lifetime)
            }
            Some(w) => match parse_duration(w.get_ref(), false) {
                Ok(micros) => Some(Window::Micros(micros)),
                Err(m) => {
                    errors.at(Some(w.span()), context, format!("window: {m}"));
                    None
                }
            },
        }
    };
    let offset_micros = match (&raw.offset, role) {
        (None, _) => 0,
        (Some(o), Role::Label) => parse_duration(o.get_ref(), true).unwrap_or_else(|m| {
            errors.at(Some(o.span()), context, format!("offset: {m}"));
            0
        }),
        (Some(o), Role::Feature) => {
            errors.at(
                Some(o.span()),
                context,
                "`offset` belongs to labels; a feature's source has `delay`",
            );
            0
        }
    };
    let filter = raw.filter.as_ref().map(|f| {
        if op.is_dimension_op() {
            errors.at(
                Some(f.span()),
                context,
                "`where` applies to event features and labels, not to dimension lookups",
            );
        } else if let Err(m) = check_filter(f.get_ref(), source) {
            errors.at(Some(f.span()), context, m);
        }
        f.get_ref().clone()
    });
    if errors.found.len() != before {
        return None;
    }
    Some(Derived {
        name: name.to_owned(),
        role,
        source: source.name.clone(),
        key,
        op,
        column: raw.column.as_ref().map(|c| c.get_ref().clone()),
        window,
        offset_micros,
        filter,
        output_type: op.output_type(column_type),
    })
}

/// Checks that `sql` parses as a boolean expression over `source`'s
/// declared columns.
fn check_filter(sql: &str, source: &SourceDef) -> Result<(), String> {
    crate::temporal::filter::FilterExpr::try_new(sql, source)
        .map(|_| ())
        .map_err(|e| format!("where {sql:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
version = 1
[sources.views]
path = "views.csv"
time = "ts"
columns = { id = "int64", user = "string", item = "int64", ts = "timestamp" }
[sources.orders]
path = "orders.csv"
time = "ts"
columns = { user = "string", item = "int64", amount = "float64", note = "string", ts = "timestamp" }
[sources.items]
path = "items.csv"
key = "item"
columns = { item = "int64", price = "float64" }
[spine]
source = "views"
columns = ["id", "user", "item"]
"#;

    /// Parses `BASE` plus `extra` and returns the messages, one per line.
    fn errors(extra: &str) -> String {
        let text = format!("{BASE}{extra}");
        match parse_spec(&text, Path::new("spec.toml"), &[], None) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    fn check(extra: &str, expected: &str) {
        assert_eq!(errors(extra), expected);
    }

    #[test]
    fn a_valid_spec_resolves() {
        let extra = r#"
[features.spend_7d]
source = "orders"
key = "user"
op = "sum"
column = "amount"
window = "7d"
where = "amount > 100"
[features.price]
source = "items"
op = "lookup"
column = "price"
[labels.ordered]
source = "orders"
key = ["user", "item"]
op = "exists"
window = "24h"
offset = "1h"
"#;
        let spec = parse_spec(
            &format!("{BASE}{extra}"),
            Path::new("s/spec.toml"),
            &[],
            None,
        )
        .unwrap();
        let names: Vec<&str> = spec.derived.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["spend_7d", "price", "ordered"]);
        assert_eq!(
            spec.derived[0].window,
            Some(Window::Micros(7 * 86_400_000_000))
        );
        assert_eq!(spec.derived[2].offset_micros, 3_600_000_000);
        assert_eq!(spec.sources[0].path, Path::new("s/views.csv"));
        assert_eq!(spec.derived[1].key[0].source, "item");
    }

    #[test]
    fn toml_syntax_errors_name_line_and_column() {
        check(
            "[features.x\n",
            "spec.toml:18:12: unclosed table, expected `]`",
        );
    }

    #[test]
    fn table_names_of_toml_errors() {
        let text =
            "version = 1\n[sources.a]  # events\npath = [\n  [\"x\"],\n]\n[[checks]]\nk = 1\n";
        let at = |needle: &str| table_at(text, text.find(needle).unwrap());
        assert_eq!(at("version"), "");
        assert_eq!(at("path"), "sources.a");
        // Past a line of an array's values.
        assert_eq!(at("]\n[["), "sources.a");
        // Inside a header: in no table; at a header: its table.
        assert_eq!(table_at("[a]\n[features.x\n", 15), "");
        assert_eq!(table_at("[a]\nk = 1\n[spine]\n", 10), "spine");
        // The last of an array's values, no comma after it: no header.
        let pairs = "[features.x]\nkey = [\n  [\"user_id\", \"uid\"]\n]\nop = 1\n";
        assert_eq!(table_at(pairs, pairs.find("op").unwrap()), "features.x");
        assert_eq!(at("k = 1"), "checks");
    }

    #[test]
    fn a_missing_key_names_its_table() {
        // The spine without its source: the error is placed at `[spine]`.
        let text =
            "version = 1\n[sources.a]\npath = \"a.csv\"\ntime = \"t\"\n[spine]\ncolumns = []\n";
        let message = parse_spec(text, Path::new("spec.toml"), &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("spine: missing field `source`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        check(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindwo = \"1h\"\n",
            "spec.toml:22:1: features.x: unknown field `windwo`, expected one of `source`, `key`, `op`, `column`, `window`, `offset`, `where`",
        );
    }

    #[test]
    fn an_unknown_source_lists_the_sources() {
        check(
            "[features.x]\nsource = \"ordrs\"\nkey = \"user\"\nop = \"count\"\nwindow = \"1h\"\n",
            "spec.toml:19:10: features.x: source `ordrs` does not exist (sources: views, orders, items)",
        );
    }

    #[test]
    fn an_unknown_column_lists_the_columns() {
        check(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"max\"\ncolumn = \"amt\"\nwindow = \"1h\"\n",
            "spec.toml:22:10: features.x: `amt` is not a column of `orders` (columns: user, item, amount, note, ts)",
        );
    }

    #[test]
    fn an_unknown_op_lists_the_ops() {
        check(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"median\"\nwindow = \"1h\"\n",
            "spec.toml:21:6: features.x: unknown op `median` (ops: count, exists, sum, mean, min, max, first, last, count_distinct, time_since_last, time_since_first, lookup, time_since)",
        );
    }

    #[test]
    fn the_sum_of_a_string_is_a_type_error() {
        check(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"sum\"\ncolumn = \"note\"\nwindow = \"1h\"\n",
            "spec.toml:22:10: features.x: op `sum` of `note`, a string column: sum needs int64 or float64",
        );
    }

    #[test]
    fn keys_of_different_types_do_not_pair() {
        check(
            "[features.x]\nsource = \"orders\"\nkey = { item = \"user\" }\nop = \"count\"\nwindow = \"1h\"\n",
            "spec.toml:20:7: features.x: key `item` is int64 on the spine and `user` is string in `orders`; a key pairs two int64 or two string columns",
        );
    }

    #[test]
    fn windows_must_be_positive_exact_durations() {
        check(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"0h\"\n",
            "spec.toml:22:10: features.x: window: `0h` is not positive",
        );
        check(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"1mo\"\n",
            "spec.toml:22:10: features.x: window: `1mo` is not a duration: a whole number and one unit of s, m, h, d, w (e.g. \"90s\", \"24h\", \"7d\")",
        );
        check(
            "[labels.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"exists\"\nwindow = \"lifetime\"\n",
            "spec.toml:22:10: labels.x: `lifetime` is not a label window (a label needs an end: e.g. \"24h\")",
        );
    }

    #[test]
    fn a_where_that_does_not_parse_is_an_error() {
        let message = errors(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"1h\"\nwhere = \"amount >\"\n",
        );
        assert!(
            message.starts_with("spec.toml:23:9: features.x: where \"amount >\": "),
            "{message}"
        );
        let message = errors(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"1h\"\nwhere = \"amount + 1\"\n",
        );
        assert!(message.ends_with("not a boolean"), "{message}");
        // Filters that differ from run to run would make the bytes differ.
        let message = errors(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"1h\"\nwhere = \"random() < 0.5\"\n",
        );
        assert!(
            message.contains("`random` gives a different answer from run to run"),
            "{message}"
        );
    }

    #[test]
    fn a_broken_source_is_reported_once() {
        // Not again as "source `orders` does not exist" by its feature.
        let text = BASE.replace("amount = \"float64\"", "amount = \"flaot64\"");
        let extra =
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"1h\"\n";
        let message = parse_spec(&format!("{text}{extra}"), Path::new("spec.toml"), &[], None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "spec.toml:10:55: sources.orders.columns.amount: unknown type `flaot64` (types: int64, float64, string, bool, timestamp, timestamp_s, timestamp_ms, timestamp_us)"
        );
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let message = errors(
            "[features.x]\nsource = \"orders\"\nkey = \"usr\"\nop = \"count\"\nwindow = \"1h\"\n[features.id]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"1h\"\n",
        );
        assert_eq!(message.lines().count(), 3, "{message}");
        assert!(
            message.contains("the output already has a column `id`"),
            "{message}"
        );
    }

    #[test]
    fn the_feature_set_hash_ignores_spelling_but_not_definitions() {
        let spec = |extra: &str| {
            parse_spec(
                &format!("{BASE}{extra}"),
                Path::new("a/spec.toml"),
                &[],
                None,
            )
            .unwrap()
        };
        let a = spec(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"24h\"\n",
        );
        let b = spec(
            "# same\n[features.x]\nsource=\"orders\"\nkey=\"user\"\nop=\"count\"\nwindow=\"1d\"\n",
        );
        let c = spec(
            "[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"2d\"\n",
        );
        assert_eq!(a.feature_set_hash(), b.feature_set_hash());
        assert_ne!(a.feature_set_hash(), c.feature_set_hash());
        // An omitted default and its explicit value are the same definition;
        // paths and the watermark are not part of it.
        let explicit = format!(
            "watermark = \"2026-10-01T00:00:00Z\"\n{}[features.x]\nsource = \"orders\"\nkey = \"user\"\nop = \"count\"\nwindow = \"24h\"\n[output]\npartition = \"day\"\n",
            BASE.replace(
                "time = \"ts\"\ncolumns = { user",
                "time = \"ts\"\ndelay = \"0s\"\ncolumns = { user"
            )
            .replace("version = 1\n", "")
            .replace("orders.csv", "elsewhere/orders.parquet")
        );
        let explicit = parse_spec(
            &format!("version = 1\n{explicit}"),
            Path::new("b/spec.toml"),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(a.feature_set_hash(), explicit.feature_set_hash());
    }
}
