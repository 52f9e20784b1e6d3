//! `[checks]`: bounds a build must meet, evaluated on its profile, per
//! partition folder (docs/semantics.md, "Checks").
//!
//! ```toml
//! [checks]
//! clicked.rate = [0.01, 0.2]          # [min, max]
//! price.null_rate = "<= 0.05"         # "<= x" or ">= x"
//! rows_per_day = { min = 1000 }       # { min = .., max = .. }
//! ```

use serde::{Deserialize, Serialize};

use super::profile::{DatasetProfile, PartitionProfile};

/// One bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub metric: Metric,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// What a check measures in each partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Rows written to the partition (`rows_per_day`, `rows_per_partition`).
    Rows,
    /// Rows held back as immature, over rows written plus held back.
    HeldBackRate,
    /// A statistic of an output column.
    Column { column: String, stat: Stat },
}

/// A column's statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stat {
    /// A label's share of rows neither 0 nor null.
    Rate,
    /// Nulls over rows.
    NullRate,
    Mean,
    Min,
    Max,
    /// Distinct values (the profile's estimate).
    Distinct,
}

impl Stat {
    const NAMES: &[(&str, Stat)] = &[
        ("rate", Stat::Rate),
        ("null_rate", Stat::NullRate),
        ("mean", Stat::Mean),
        ("min", Stat::Min),
        ("max", Stat::Max),
        ("distinct", Stat::Distinct),
    ];

    fn name(self) -> &'static str {
        Stat::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("?", |(n, _)| n)
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.metric {
            Metric::Rows => write!(f, "rows_per_partition")?,
            Metric::HeldBackRate => write!(f, "held_back_rate")?,
            Metric::Column { column, stat } => write!(f, "{column}.{}", stat.name())?,
        }
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => write!(f, " in [{lo}, {hi}]"),
            (Some(lo), None) => write!(f, " >= {lo}"),
            (None, Some(hi)) => write!(f, " <= {hi}"),
            (None, None) => Ok(()),
        }
    }
}

/// What `[checks]` needs to know of an output column: whether it is a
/// label, and its type.
pub type ColumnInfo = (bool, crate::spec::ValueType);

/// Parses the `[checks]` entry `key = value`. `column` tells whether a
/// name is an output column, whether it is a label and its type;
/// `partition` is the spec's. Returns the checks or a message.
pub fn parse_entry(
    key: &str,
    value: &toml::Value,
    column: &dyn Fn(&str) -> Option<ColumnInfo>,
    partition: crate::spec::Partitioning,
) -> Result<Vec<Check>, String> {
    use crate::spec::Partitioning;
    let dataset = match (key, partition) {
        ("rows_per_day", Partitioning::Day)
        | ("rows_per_hour", Partitioning::Hour)
        | ("rows_per_partition", _) => Some(Metric::Rows),
        ("rows_per_day" | "rows_per_hour", _) => {
            return Err(format!(
                "`{key}` does not fit the output's partitioning ({partition:?}); rows_per_partition checks each partition folder"
            ));
        }
        ("held_back_rate", _) => Some(Metric::HeldBackRate),
        _ => None,
    };
    if let Some(metric) = dataset {
        let (min, max) = bounds(value)?;
        return Ok(vec![Check { metric, min, max }]);
    }
    // `column.stat = ...`, or `[checks.column]` / `column = { stat = ... }`.
    let (name, stats): (&str, Vec<(&str, &toml::Value)>) = match key.rsplit_once('.') {
        Some((name, stat)) => (name, vec![(stat, value)]),
        None => match value {
            toml::Value::Table(t) if column(key).is_some() => {
                (key, t.iter().map(|(k, v)| (k.as_str(), v)).collect())
            }
            toml::Value::Table(_) => return Err(format!("`{key}` is not an output column")),
            _ => {
                return Err(format!(
                    "`{key}` is neither a dataset check (rows_per_day, held_back_rate) nor an output column"
                ));
            }
        },
    };
    let Some((is_label, ty)) = column(name) else {
        return Err(format!("`{name}` is not an output column"));
    };
    use crate::spec::ValueType;
    let numeric = matches!(
        ty,
        ValueType::Int64 | ValueType::Int8 | ValueType::Float64 | ValueType::Bool
    );
    let mut checks = Vec::new();
    for (stat, value) in stats {
        let Some(&(_, stat)) = Stat::NAMES.iter().find(|(n, _)| *n == stat) else {
            let names: Vec<&str> = Stat::NAMES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "`{name}.{stat}`: `{stat}` is not one of {}",
                names.join(", ")
            ));
        };
        if stat == Stat::Rate && !is_label {
            return Err(format!(
                "`{name}.rate`: a rate is a label's; use null_rate or mean for a feature"
            ));
        }
        if matches!(stat, Stat::Mean | Stat::Min | Stat::Max) && !numeric {
            return Err(format!(
                "`{name}.{}`: `{name}` is {}, not a number; use null_rate or distinct",
                stat.name(),
                ty.name()
            ));
        }
        let (min, max) = bounds(value).map_err(|e| format!("`{name}.{}`: {e}", stat.name()))?;
        checks.push(Check {
            metric: Metric::Column {
                column: name.to_owned(),
                stat,
            },
            min,
            max,
        });
    }
    Ok(checks)
}

/// `[min, max]`, `"<= x"`, `">= x"` or `{ min = .., max = .. }`.
fn bounds(value: &toml::Value) -> Result<(Option<f64>, Option<f64>), String> {
    let number = |v: &toml::Value| match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(x) if x.is_finite() => Some(*x),
        _ => None,
    };
    let expected = "expected [min, max], \"<= x\", \">= x\" or { min = .., max = .. }";
    let (min, max) = match value {
        toml::Value::Array(a) if a.len() == 2 => match (number(&a[0]), number(&a[1])) {
            (Some(lo), Some(hi)) => (Some(lo), Some(hi)),
            _ => return Err(format!("bounds must be numbers; {expected}")),
        },
        toml::Value::String(s) => {
            let s = s.trim();
            let parse = |rest: &str| rest.trim().parse::<f64>().ok().filter(|x| x.is_finite());
            match (s.strip_prefix("<="), s.strip_prefix(">=")) {
                (Some(rest), _) => (None, Some(parse(rest).ok_or(expected)?)),
                (_, Some(rest)) => (Some(parse(rest).ok_or(expected)?), None),
                _ => return Err(format!("{s:?}: {expected}")),
            }
        }
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| *k != "min" && *k != "max") {
                return Err(format!("`{k}`: {expected}"));
            }
            let get = |k: &str| match t.get(k) {
                None => Ok(None),
                Some(v) => number(v).map(Some).ok_or(format!("`{k}` is not a number")),
            };
            (get("min")?, get("max")?)
        }
        _ => return Err(expected.to_owned()),
    };
    match (min, max) {
        (None, None) => Err(format!("no bound; {expected}")),
        (Some(lo), Some(hi)) if lo > hi => Err(format!("min {lo} is above max {hi}")),
        bounds => Ok(bounds),
    }
}

/// One check in one partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub check: String,
    pub partition: String,
    /// `None` when the partition has no value (a column all null).
    pub value: Option<f64>,
    pub passed: bool,
}

/// Every check in every partition with rows written (a partition whose
/// rows were all held back is not checked), in check then partition order.
pub fn evaluate(checks: &[Check], profile: &DatasetProfile) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for check in checks {
        // A partition all held back has no rows to measure, but its
        // held-back rate is 1.
        let measured = |p: &&PartitionProfile| p.rows > 0 || check.metric == Metric::HeldBackRate;
        for partition in profile.partitions.iter().filter(measured) {
            let value = measure(&check.metric, partition);
            // No value (a mean of nothing) passes only an unbounded side.
            let passed = value.is_some_and(|v| {
                check.min.is_none_or(|lo| v >= lo) && check.max.is_none_or(|hi| v <= hi)
            });
            outcomes.push(Outcome {
                check: check.to_string(),
                partition: partition.partition.clone(),
                value,
                passed,
            });
        }
    }
    outcomes
}

/// The gate's failure: each failed check with its partition and value.
pub fn failure(failed: &[&Outcome]) -> crate::error::QualityFailure {
    const SHOWN: usize = 20;
    let mut lines: Vec<String> = (failed.iter().take(SHOWN))
        .map(|o| {
            let value = o.value.map_or("no value".to_owned(), |v| format!("{v}"));
            let place = match o.partition.as_str() {
                "" => String::new(),
                p => format!(" in {p}"),
            };
            format!("check `{}` failed{place}: {value}", o.check)
        })
        .collect();
    if failed.len() > SHOWN {
        lines.push(format!("and {} more", failed.len() - SHOWN));
    }
    crate::error::QualityFailure {
        failed: vec![format!("{} check(s) failed", failed.len())],
        details: lines,
    }
}

fn measure(metric: &Metric, p: &PartitionProfile) -> Option<f64> {
    let rows = p.rows as f64;
    match metric {
        Metric::Rows => Some(rows),
        Metric::HeldBackRate => Some(p.held_back as f64 / (rows + p.held_back as f64)),
        Metric::Column { column, stat } => {
            let c = p.columns.iter().find(|c| c.name == *column)?;
            let json =
                |v: &Option<serde_json::Value>| v.as_ref().and_then(super::profile::float_of);
            match stat {
                Stat::Rate => p.labels.get(column).map(|l| l.rate),
                Stat::NullRate => Some(c.nulls as f64 / rows),
                Stat::Mean => c.mean,
                Stat::Min => json(&c.min),
                Stat::Max => json(&c.max),
                Stat::Distinct => Some(c.distinct as f64),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Check>, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        use crate::spec::{Partitioning, ValueType};
        let column = |name: &str| match name {
            "clicked" => Some((true, ValueType::Int8)),
            "price" => Some((false, ValueType::Float64)),
            "category" => Some((false, ValueType::String)),
            _ => None,
        };
        let mut all = Vec::new();
        for (key, value) in &table {
            all.extend(parse_entry(key, value, &column, Partitioning::Day)?);
        }
        Ok(all)
    }

    #[test]
    fn every_form_of_bound_parses_and_mistakes_are_named() {
        let checks = parse(
            r#"
            "clicked.rate" = [0.01, 0.2]
            price = { null_rate = "<= 0.05", mean = ">= 1" }
            rows_per_day = { min = 1000 }
            "#,
        )
        .unwrap();
        let text: Vec<String> = checks.iter().map(Check::to_string).collect();
        assert_eq!(
            text,
            [
                "clicked.rate in [0.01, 0.2]",
                "price.null_rate <= 0.05",
                "price.mean >= 1",
                "rows_per_partition >= 1000"
            ]
        );
        for (text, error) in [
            ("\"price.rate\" = [0, 1]", "a rate is a label's"),
            ("\"nope.mean\" = [0, 1]", "`nope` is not an output column"),
            ("\"price.median\" = [0, 1]", "`median` is not one of"),
            ("\"price.mean\" = [2, 1]", "min 2 is above max 1"),
            ("\"price.mean\" = \"== 1\"", "expected [min, max]"),
            ("rows = 5", "neither a dataset check"),
            (
                "rows_per_hour = { min = 1 }",
                "does not fit the output's partitioning",
            ),
            (
                "\"category.mean\" = [0, 1]",
                "`category` is string, not a number",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(error), "{text}: {err}");
        }
    }
}
