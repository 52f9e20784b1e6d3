//! Drift between two sets of rows of a dataset: the population stability
//! index of every column, and the change in its null rate and mean
//! (docs/semantics.md, "Drift").

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int8Type, Int64Type, TimestampMicrosecondType,
};
use serde::Serialize;

use crate::error::{Error, Result};

/// PSI at or above this: the column drifted.
pub const PSI_DRIFT: f64 = 0.25;
/// PSI at or above this (and below [`PSI_DRIFT`]): worth a look.
pub const PSI_WATCH: f64 = 0.1;
/// A null rate that moves by this much (absolute) is flagged.
pub const NULL_RATE_CHANGE: f64 = 0.05;
/// A mean that moves by this many of the reference's standard deviations
/// is flagged.
pub const MEAN_CHANGE: f64 = 0.5;
/// A bin's share is taken as at least this in PSI (an empty bin would
/// make it infinite).
pub const PSI_FLOOR: f64 = 1e-4;
/// Numeric bins: between the reference's deciles.
const BINS: usize = 10;
/// String bins: the reference's most frequent values, and the rest.
const TOP_VALUES: usize = 10;

/// Every batch of the Parquet file `path`.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let parquet = |source| Error::Parquet {
        path: path.to_owned(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet)?
        .build()
        .map_err(parquet)?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Engine(Box::new(e.into())))
}

/// A dataset's rows, per partition folder (in folder order).
pub struct Rows {
    pub columns: Vec<String>,
    pub partitions: Vec<(String, Vec<RecordBatch>)>,
}

impl Rows {
    /// Reads every data file of the local dataset `dataset`.
    pub fn read(dataset: &Path) -> Result<Rows> {
        let mut partitions: Vec<(String, Vec<RecordBatch>)> = Vec::new();
        let mut columns = Vec::new();
        for path in crate::write::data_files(dataset)? {
            let folder = (path.parent().and_then(|p| p.strip_prefix(dataset).ok()))
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let batches = read_parquet(&path)?;
            if columns.is_empty()
                && let Some(b) = batches.first()
            {
                columns = b
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
            }
            match partitions.last_mut() {
                Some((f, all)) if *f == folder => all.extend(batches),
                _ => partitions.push((folder, batches)),
            }
        }
        Ok(Rows {
            columns,
            partitions,
        })
    }

    /// Column `name`'s values over the partitions `which` selects.
    pub fn values(&self, name: &str, which: impl Fn(usize) -> bool) -> Values {
        let mut values = Values::default();
        for (i, (_, batches)) in self.partitions.iter().enumerate() {
            if !which(i) {
                continue;
            }
            for batch in batches {
                if let Some(column) = batch.column_by_name(name) {
                    values.push(column);
                }
            }
        }
        values
    }
}

/// A column's values: numbers (times as µs, booleans as 0/1) or text.
#[derive(Default)]
pub struct Values {
    pub rows: u64,
    pub nulls: u64,
    pub numbers: Vec<f64>,
    pub texts: Vec<String>,
}

impl Values {
    fn push(&mut self, column: &ArrayRef) {
        self.rows += column.len() as u64;
        self.nulls += column.null_count() as u64;
        match column.data_type() {
            DataType::Int8 => (self.numbers).extend(
                column
                    .as_primitive::<Int8Type>()
                    .iter()
                    .flatten()
                    .map(f64::from),
            ),
            DataType::Int64 => (self.numbers).extend(
                column
                    .as_primitive::<Int64Type>()
                    .iter()
                    .flatten()
                    .map(|v| v as f64),
            ),
            DataType::Float64 => {
                (self.numbers).extend(column.as_primitive::<Float64Type>().iter().flatten())
            }
            DataType::Timestamp(..) => (self.numbers).extend(
                (column.as_primitive::<TimestampMicrosecondType>().iter())
                    .flatten()
                    .map(|v| v as f64),
            ),
            DataType::Boolean => (self.numbers).extend(
                column
                    .as_boolean()
                    .iter()
                    .flatten()
                    .map(|b| f64::from(u8::from(b))),
            ),
            DataType::Utf8 => (self.texts).extend(
                column
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }

    pub fn null_rate(&self) -> f64 {
        match self.rows {
            0 => 0.0,
            n => self.nulls as f64 / n as f64,
        }
    }

    fn mean_std(&self) -> Option<(f64, f64)> {
        if self.numbers.is_empty() {
            return None;
        }
        let n = self.numbers.len() as f64;
        let mean = self.numbers.iter().sum::<f64>() / n;
        let var = self
            .numbers
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f64>()
            / n;
        Some((mean, var.sqrt()))
    }
}

/// One column's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDrift {
    pub column: String,
    /// Population stability index over the non-null values (`None` when
    /// either side has none).
    pub psi: Option<f64>,
    pub null_rate: (f64, f64),
    /// Reference and current mean (numeric columns).
    pub mean: Option<(f64, f64)>,
    /// `drift`, `watch` (PSI), `nulls`, `mean`.
    pub flags: Vec<&'static str>,
}

/// Drift of every column shared by the two sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// What each side is.
    pub reference: String,
    pub current: String,
    pub columns: Vec<ColumnDrift>,
    /// Columns of the current side the reference does not have (a
    /// baseline built from another spec, or with no rows): not compared.
    pub not_in_reference: Vec<String>,
}

/// `current` against `reference`, column by column (`columns`: their
/// names, in order).
pub fn compare(
    columns: &[String],
    reference: &dyn Fn(&str) -> Values,
    current: &dyn Fn(&str) -> Values,
) -> Vec<ColumnDrift> {
    columns
        .iter()
        .map(|name| column_drift(name, &reference(name), &current(name)))
        .collect()
}

fn column_drift(name: &str, reference: &Values, current: &Values) -> ColumnDrift {
    let psi = if !reference.numbers.is_empty() && !current.numbers.is_empty() {
        Some(psi(
            &numeric_shares(&reference.numbers, &reference.numbers),
            &numeric_shares(&reference.numbers, &current.numbers),
        ))
    } else if !reference.texts.is_empty() && !current.texts.is_empty() {
        let top = top_values(&reference.texts);
        Some(psi(
            &text_shares(&top, &reference.texts),
            &text_shares(&top, &current.texts),
        ))
    } else {
        None
    };
    let null_rate = (reference.null_rate(), current.null_rate());
    let (reference_moments, current_moments) = (reference.mean_std(), current.mean_std());
    let mean = reference_moments
        .zip(current_moments)
        .map(|((a, _), (b, _))| (a, b));
    let mut flags = Vec::new();
    match psi {
        Some(p) if p >= PSI_DRIFT => flags.push("drift"),
        Some(p) if p >= PSI_WATCH => flags.push("watch"),
        _ => {}
    }
    if (null_rate.1 - null_rate.0).abs() >= NULL_RATE_CHANGE {
        flags.push("nulls");
    }
    if let (Some((a, std)), Some((b, _))) = (reference_moments, current_moments)
        && (b - a).abs() > MEAN_CHANGE * std
    {
        flags.push("mean");
    }
    ColumnDrift {
        column: name.to_owned(),
        psi,
        null_rate,
        mean,
        flags,
    }
}

/// `sum (a - e) ln(a / e)` over the bins, shares floored at [`PSI_FLOOR`].
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(PSI_FLOOR), a.max(PSI_FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The share of `values` in each bin cut at the deciles of `reference`
/// (repeated cuts merged): `(-inf, c1], (c1, c2], ..., (ck, inf)`.
fn numeric_shares(reference: &[f64], values: &[f64]) -> Vec<f64> {
    let mut sorted = reference.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut cuts: Vec<f64> = (1..BINS)
        .map(|k| sorted[(k * sorted.len()).div_ceil(BINS).max(1) - 1])
        .collect();
    cuts.dedup();
    let mut counts = vec![0u64; cuts.len() + 1];
    for &v in values {
        counts[cuts.partition_point(|&c| c < v)] += 1;
    }
    let n = values.len() as f64;
    counts.iter().map(|&c| c as f64 / n).collect()
}

/// The reference's most frequent values (ties by value).
fn top_values(texts: &[String]) -> Vec<String> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for t in texts {
        *counts.entry(t).or_default() += 1;
    }
    let mut all: Vec<(&str, u64)> = counts.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    all.into_iter()
        .take(TOP_VALUES)
        .map(|(t, _)| t.to_owned())
        .collect()
}

/// The share of `texts` equal to each of `top`, then of the rest.
fn text_shares(top: &[String], texts: &[String]) -> Vec<f64> {
    let mut counts = vec![0u64; top.len() + 1];
    for t in texts {
        let bin = top.iter().position(|x| x == t).unwrap_or(top.len());
        counts[bin] += 1;
    }
    let n = texts.len() as f64;
    counts.iter().map(|&c| c as f64 / n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(v: Vec<f64>) -> Values {
        Values {
            rows: v.len() as u64,
            nulls: 0,
            numbers: v,
            texts: Vec::new(),
        }
    }

    #[test]
    fn psi_is_zero_for_the_same_distribution_and_large_for_a_shift() {
        let a: Vec<f64> = (0..10_000).map(|i| (i % 1000) as f64).collect();
        let same = column_drift("x", &numbers(a.clone()), &numbers(a.clone()));
        assert!(same.psi.unwrap().abs() < 1e-12 && same.flags.is_empty());
        // Shifted by half the range: half the values leave their deciles.
        let shifted: Vec<f64> = a.iter().map(|v| v + 500.0).collect();
        let drift = column_drift("x", &numbers(a), &numbers(shifted));
        assert!(drift.psi.unwrap() > PSI_DRIFT, "{drift:?}");
        assert_eq!(drift.flags, ["drift", "mean"]);
    }

    #[test]
    fn psi_matches_its_formula() {
        // Shares 0.5/0.5 against 0.25/0.75.
        let got = psi(&[0.5, 0.5], &[0.25, 0.75]);
        let by_hand = (0.25 - 0.5) * (0.25f64 / 0.5).ln() + (0.75 - 0.5) * (0.75f64 / 0.5).ln();
        assert!((got - by_hand).abs() < 1e-15, "{got} {by_hand}");
    }
}
