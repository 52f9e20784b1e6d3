//! `leakless check` and `leakless explain`: the resolved spec printed back,
//! checked against the inputs' headers and schemas without computing
//! anything.

use serde::Serialize;

use crate::error::Result;
use crate::ingest::{BadRowPolicy, Format, Source};
use crate::spec::{CsvOptions, SourceKind, Spec};
use crate::temporal::PitPlan;

/// What `leakless check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub feature_set_hash: String,
    pub sources: Vec<SourceReport>,
    /// Which index serves which output columns.
    pub indexes: Vec<IndexReport>,
    pub warnings: Vec<String>,
}

/// One source and its files.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub name: String,
    /// `events`, `snapshot dimension` or `versioned dimension`.
    pub kind: &'static str,
    pub path: String,
    pub files: usize,
    pub bytes: u64,
}

/// One per-key index of the operator.
#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    pub source: String,
    /// `spine column = source column` per key part.
    pub key: Vec<String>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub columns: Vec<String>,
}

/// Every output column with its type and definition.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub feature_set_hash: String,
    pub columns: Vec<ColumnExplanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnExplanation {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub definition: String,
}

/// Checks every source's files against the spec (headers, Parquet schemas)
/// and describes the plan.
pub fn check(spec: &Spec) -> Result<CheckReport> {
    let mut sources = Vec::new();
    let mut warnings = warnings(spec);
    // Files on object storage: their heads and footers, copied locally.
    let scratch = match spec
        .sources
        .iter()
        .any(|s| crate::storage::is_remote(&s.path))
    {
        true => Some(crate::storage::Scratch::new("check")?),
        false => None,
    };
    for def in &spec.sources {
        let mut source = Source::open(def, BadRowPolicy::Fail)?;
        if let Some(scratch) = &scratch {
            source.fetch_schemas(scratch.dir())?;
        }
        source.check_columns()?;
        let all_parquet = source.files.iter().all(|f| f.format == Format::Parquet);
        if all_parquet && def.csv != CsvOptions::default() {
            warnings.push(format!(
                "source `{}` sets `delimiter` or `null_values`, but its files are Parquet: they have no effect",
                def.name
            ));
        }
        sources.push(SourceReport {
            name: def.name.clone(),
            kind: match &def.kind {
                SourceKind::Events { .. } => "events",
                SourceKind::Dimension {
                    valid_from: None, ..
                } => "snapshot dimension",
                SourceKind::Dimension { .. } => "versioned dimension",
            },
            path: def.path.display().to_string(),
            files: source.files.len(),
            bytes: source.files.iter().map(|f| f.bytes).sum(),
        });
    }
    let plan = PitPlan::new(spec.clone(), None);
    let indexes = plan
        .indexes
        .iter()
        .map(|index| {
            let first = &plan.columns[index.columns[0]].derived;
            IndexReport {
                source: plan.inputs[index.input].clone(),
                key: first
                    .key
                    .iter()
                    .map(|k| format!("{} = {}", k.spine, k.source))
                    .collect(),
                filter: index.filter.clone(),
                columns: index
                    .columns
                    .iter()
                    .map(|&c| plan.columns[c].derived.name.clone())
                    .collect(),
            }
        })
        .collect();
    Ok(CheckReport {
        feature_set_hash: spec.feature_set_hash(),
        sources,
        indexes,
        warnings,
    })
}

/// What a spec computes that may not be what its author meant.
pub fn warnings(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    for def in &spec.sources {
        if let SourceKind::Dimension {
            valid_from: None, ..
        } = &def.kind
        {
            let users: Vec<String> = spec
                .derived
                .iter()
                .filter(|d| d.source == def.name)
                .map(|d| format!("`{}`", d.name))
                .collect();
            if def.delay_micros > 0 {
                out.push(format!(
                    "source `{}` has a `delay` but no valid_from: a snapshot has no time for the delay to shift",
                    def.name
                ));
            }
            if !users.is_empty() {
                out.push(format!(
                    "source `{}` is a snapshot (no valid_from): {} see its rows as they are now, whatever t is; a row that changed after t leaks the future (declare valid_from to look rows up as of t)",
                    def.name,
                    users.join(", ")
                ));
            }
        }
    }
    if spec.labels().next().is_none() {
        out.push(
            "the spec has no labels: every spine row is kept (a dataset to score, not to train)"
                .into(),
        );
    }
    out
}

/// Every output column's definition and the feature-set hash.
pub fn explain(spec: &Spec) -> Explanation {
    let types = spec.output_columns();
    Explanation {
        feature_set_hash: spec.feature_set_hash(),
        columns: spec
            .definitions()
            .into_iter()
            .zip(types)
            .map(|((name, definition), c)| ColumnExplanation {
                name,
                ty: c.ty.name(),
                definition,
            })
            .collect(),
    }
}
