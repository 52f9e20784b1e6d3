//! [`PitPlan`]: what the operator computes, resolved from a [`Spec`] into
//! positions: which inputs it reads, which indexes it builds, and for each
//! output column which index, op, window and value column serve it.
//!
//! Derived columns that share (source, key, `where`) share one index; the
//! plan is plain data (a spec and positions) so that it can travel with
//! the operator to another machine.

use crate::spec::{Derived, Op, Role, SourceKind, Spec, Window};

/// One index: the events (or dimension rows) of a source, per key.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexPlan {
    /// Position of the source among the operator's inputs.
    pub input: usize,
    /// Key columns: positions in the source's batches, and in the spine's.
    pub source_key: Vec<usize>,
    pub spine_key: Vec<usize>,
    /// Position of the time (events) or `valid_from` column; `None` for a
    /// snapshot dimension.
    pub time: Option<usize>,
    /// The `where` of every column it serves.
    pub filter: Option<String>,
    /// Value columns the ops read (positions in the source's batches).
    pub values: Vec<usize>,
    /// A dimension: at most one row per key (snapshot) or per key and
    /// `valid_from` (versioned).
    pub dimension: bool,
    /// Delay of the source (µs).
    pub delay: i64,
    /// The derived columns it serves, in output order.
    pub columns: Vec<usize>,
}

impl IndexPlan {
    /// A dimension without `valid_from`: one row per key, whatever `t` is.
    pub fn is_snapshot(&self) -> bool {
        self.dimension && self.time.is_none()
    }
}

/// One output column computed by the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnPlan {
    pub derived: Derived,
    pub index: usize,
    /// Position of its value column among the index's `values`.
    pub value: Option<usize>,
    /// The instants `[t + lo, t + hi)` of its window; for a dimension op,
    /// `hi` is `-delay` and the row is the last one before it.
    pub lo: Option<i64>,
    pub hi: i64,
}

/// Everything the operator computes.
#[derive(Debug, Clone, PartialEq)]
pub struct PitPlan {
    pub spec: Spec,
    /// Names of the sources read besides the spine, in input order.
    pub inputs: Vec<String>,
    pub indexes: Vec<IndexPlan>,
    pub columns: Vec<ColumnPlan>,
    /// Positions in the spine's batches of the kept columns, then the time.
    pub spine_columns: Vec<usize>,
    pub spine_time: usize,
    /// A watermark that overrides the spec's and the inferred one (µs).
    pub watermark: Option<i64>,
}

impl PitPlan {
    pub fn new(spec: Spec, watermark: Option<i64>) -> Self {
        let position = |source: &str, column: &str| -> usize {
            spec.source(source)
                .and_then(|s| s.columns.as_ref())
                .and_then(|c| c.iter().position(|c| c.name == column))
                .expect("a valid spec names declared columns")
        };
        let spine = &spec.spine;
        let mut inputs: Vec<String> = Vec::new();
        let mut indexes: Vec<IndexPlan> = Vec::new();
        let mut columns = Vec::new();
        for (i, d) in spec.derived.iter().enumerate() {
            let source = spec.source(&d.source).expect("resolved source");
            let input = match inputs.iter().position(|n| *n == d.source) {
                Some(p) => p,
                None => {
                    inputs.push(d.source.clone());
                    inputs.len() - 1
                }
            };
            let source_key: Vec<usize> = d
                .key
                .iter()
                .map(|k| position(&d.source, &k.source))
                .collect();
            let spine_key: Vec<usize> = d
                .key
                .iter()
                .map(|k| position(&spine.source, &k.spine))
                .collect();
            let index = match indexes.iter().position(|x| {
                x.input == input
                    && x.source_key == source_key
                    && x.spine_key == spine_key
                    && x.filter == d.filter
            }) {
                Some(p) => p,
                None => {
                    indexes.push(IndexPlan {
                        input,
                        source_key,
                        spine_key,
                        time: source.time_column().map(|t| position(&d.source, t)),
                        filter: d.filter.clone(),
                        values: Vec::new(),
                        dimension: matches!(source.kind, SourceKind::Dimension { .. }),
                        delay: source.delay_micros,
                        columns: Vec::new(),
                    });
                    indexes.len() - 1
                }
            };
            let plan = &mut indexes[index];
            plan.columns.push(i);
            let value = d.column.as_ref().filter(|_| d.op.reads_values()).map(|c| {
                let p = position(&d.source, c);
                match plan.values.iter().position(|&v| v == p) {
                    Some(v) => v,
                    None => {
                        plan.values.push(p);
                        plan.values.len() - 1
                    }
                }
            });
            let delay = source.delay_micros;
            let (lo, hi) = match (d.role, d.window, d.op) {
                (_, _, Op::Lookup | Op::TimeSince) => (None, -delay),
                (Role::Feature, Some(Window::Micros(w)), _) => {
                    (Some(-delay.saturating_add(w)), -delay)
                }
                (Role::Feature, _, _) => (None, -delay),
                (Role::Label, w, _) => {
                    let w = match w {
                        Some(Window::Micros(w)) => w,
                        _ => 0,
                    };
                    (Some(d.offset_micros), d.offset_micros.saturating_add(w))
                }
            };
            columns.push(ColumnPlan {
                derived: d.clone(),
                index,
                value,
                lo,
                hi,
            });
        }
        let spine_columns = spine
            .columns
            .iter()
            .map(|c| position(&spine.source, c))
            .collect();
        let spine_time = position(&spine.source, &spine.time);
        PitPlan {
            inputs,
            indexes,
            columns,
            spine_columns,
            spine_time,
            watermark,
            spec,
        }
    }

    /// The inputs that the indexes `members` read: each distinct (input,
    /// source key), in order of first use.
    pub fn routes(&self, members: &[usize]) -> Vec<(usize, Vec<usize>)> {
        let mut routes: Vec<(usize, Vec<usize>)> = Vec::new();
        for &m in members {
            let index = &self.indexes[m];
            let route = (index.input, index.source_key.clone());
            if !routes.contains(&route) {
                routes.push(route);
            }
        }
        routes
    }

    /// The derived columns that the indexes `members` serve, in output
    /// order.
    pub fn group_columns(&self, members: &[usize]) -> Vec<usize> {
        let mut columns: Vec<usize> = members
            .iter()
            .flat_map(|&m| self.indexes[m].columns.iter().copied())
            .collect();
        columns.sort_unstable();
        columns
    }

    /// The plan of the indexes `members` alone (a key group of a build
    /// split by key): one input per route of [`PitPlan::routes`], and only
    /// the columns they serve, in output order.
    pub fn group(&self, members: &[usize]) -> PitPlan {
        let routes = self.routes(members);
        let columns = self.group_columns(members);
        let indexes = members
            .iter()
            .map(|&m| {
                let mut index = self.indexes[m].clone();
                index.input = routes
                    .iter()
                    .position(|(input, key)| *input == index.input && *key == index.source_key)
                    .expect("every member's route");
                for c in &mut index.columns {
                    *c = columns.binary_search(c).expect("a member's column");
                }
                index
            })
            .collect();
        let columns = columns
            .iter()
            .map(|&c| {
                let mut column = self.columns[c].clone();
                column.index =
                    (members.iter().position(|&m| m == column.index)).expect("a member's index");
                column
            })
            .collect();
        PitPlan {
            spec: self.spec.clone(),
            inputs: routes
                .iter()
                .map(|(input, _)| self.inputs[*input].clone())
                .collect(),
            indexes,
            columns,
            spine_columns: self.spine_columns.clone(),
            spine_time: self.spine_time,
            watermark: self.watermark,
        }
    }

    /// The label columns: the end of their window past `t`, and the input
    /// their default watermark comes from.
    pub fn labels(&self) -> impl Iterator<Item = (&ColumnPlan, usize)> {
        self.columns
            .iter()
            .filter(|c| c.derived.role == Role::Label)
            .map(|c| (c, self.indexes[c.index].input))
    }

    /// How the indexes over source `name` take its rows: each index takes
    /// the rows whose key parts and time are all non-null and whose
    /// `where` is true.
    pub fn use_rules(&self, name: &str) -> Vec<crate::ingest::UseRule> {
        (self.indexes.iter())
            .filter(|index| self.inputs[index.input] == name)
            .map(|index| crate::ingest::UseRule {
                columns: index.source_key.iter().copied().chain(index.time).collect(),
                filter: index.filter.clone(),
            })
            .collect()
    }

    /// The watermark of each label (µs): `--watermark`, else the spec's,
    /// else the largest event time of the label's source (`latest` of its
    /// input); `None` when that is empty.
    pub fn label_watermarks(
        &self,
        latest: impl Fn(usize) -> Option<i64>,
    ) -> Vec<(String, Option<i64>)> {
        self.labels()
            .map(|(column, input)| {
                let w = (self.watermark.or(self.spec.watermark)).or_else(|| latest(input));
                (column.derived.name.clone(), w)
            })
            .collect()
    }
}
