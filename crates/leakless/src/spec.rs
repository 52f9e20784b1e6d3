//! What to compute: point-in-time features and labels as plain data.
//!
//! A [`TemporalSpec`] says which event stream (the build side) answers which
//! spine (one row per prediction), matched on a key, and which
//! [`Aggregation`]s to compute for every spine row. It is plain serde data so
//! that it can be written into a manifest and, later, shipped to a cluster.
//!
//! Invariants:
//! - a past window ends strictly before the spine time `t`; a future window
//!   starts at `t` inclusive: every event is past or future, never both;
//! - durations are exact microseconds;
//! - `spec` knows nothing of files, DataFusion or output.

use serde::{Deserialize, Serialize};

use crate::time::MICROS_PER_DAY;

/// What an aggregation computes over the events in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationKind {
    /// How many events fall in the window (`Int64`).
    Count,
    /// Whether any event falls in the window (`Int8`, 0 or 1).
    Exists,
}

/// The time window of an aggregation, relative to the spine time `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Events with `t - lookback <= ts < t`; all events with `ts < t` when
    /// `lookback_micros` is `None`. A feature.
    Past { lookback_micros: Option<i64> },
    /// Events with `t <= ts < t + horizon`. A label: it is only known once
    /// the watermark has passed `t + horizon`.
    Future { horizon_micros: i64 },
}

/// One derived column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregation {
    /// Output column name.
    pub name: String,
    pub kind: AggregationKind,
    pub window: Window,
}

/// When label windows count as closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Watermark {
    /// The largest event timestamp of the build side.
    #[default]
    MaxEventTime,
    /// A given instant (UTC microseconds).
    Fixed(i64),
}

/// Point-in-time aggregations of an event stream for every spine row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemporalSpec {
    /// Key column of the event (build) side.
    pub event_key: String,
    /// Timestamp column of the event side.
    pub event_time: String,
    /// Key column of the spine (probe) side.
    pub spine_key: String,
    /// Timestamp column of the spine side.
    pub spine_time: String,
    pub aggregations: Vec<Aggregation>,
    pub watermark: Watermark,
}

impl TemporalSpec {
    /// The longest label horizon; spine rows whose `t + horizon` passes the
    /// watermark are immature. `None` when the spec has no label.
    pub fn max_horizon_micros(&self) -> Option<i64> {
        self.aggregations
            .iter()
            .filter_map(|a| match a.window {
                Window::Future { horizon_micros } => Some(horizon_micros),
                Window::Past { .. } => None,
            })
            .max()
    }

    /// Checks names and durations.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for a in &self.aggregations {
            if !names.insert(a.name.as_str()) {
                return Err(format!("aggregation `{}` is defined twice", a.name));
            }
            let bad = match a.window {
                Window::Past {
                    lookback_micros: Some(w),
                } => w <= 0,
                Window::Past {
                    lookback_micros: None,
                } => false,
                Window::Future { horizon_micros } => horizon_micros <= 0,
            };
            if bad {
                return Err(format!(
                    "aggregation `{}` has a window that is not positive",
                    a.name
                ));
            }
        }
        Ok(())
    }
}

/// The click features and label of `leakless build`: clicks on the listing
/// before the impression, in the 24 h before it, and in the 24 h after it.
pub fn listing_clicks(watermark: Watermark) -> TemporalSpec {
    TemporalSpec {
        event_key: "listing_id".into(),
        event_time: "click_ts".into(),
        spine_key: "listing_id".into(),
        spine_time: "impression_ts".into(),
        aggregations: vec![
            Aggregation {
                name: "prior_listing_clicks".into(),
                kind: AggregationKind::Count,
                window: Window::Past {
                    lookback_micros: None,
                },
            },
            Aggregation {
                name: "listing_clicks_24h".into(),
                kind: AggregationKind::Count,
                window: Window::Past {
                    lookback_micros: Some(MICROS_PER_DAY),
                },
            },
            Aggregation {
                name: "clicked".into(),
                kind: AggregationKind::Exists,
                window: Window::Future {
                    horizon_micros: MICROS_PER_DAY,
                },
            },
        ],
        watermark,
    }
}
