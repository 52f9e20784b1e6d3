//! The per-key sorted-timestamp index (CSR layout) and window counting.
//!
//! All event timestamps live in one buffer, sorted by (key, time); a hash map
//! gives each key its range of that buffer. A window count is the difference
//! of two binary-search positions, so a probe costs `O(log n)` for the key's
//! `n` events and allocates nothing, however hot the key.
//!
//! Worked example: clicks on listing 7 at times `[10, 20, 20, 30]`.
//! For an impression of listing 7 at `t = 20`:
//!
//! ```text
//!   position of first time >= t      = 1   (prior count = 1: only 10)
//!   position of first time >= t - 10 = 0   (window [10, 20) holds 1)
//!   position of first time >= t + 10 = 3   (future [20, 30) holds 2: label 1)
//! ```

use hashbrown::HashMap;

use crate::spec::Window;

/// Where each key's times are: a table indexed by `key - min` when the keys
/// are dense (ids usually are), a hash map otherwise. At 100 M impressions
/// over 1 M listings the probe is bound by cache misses, and the dense table
/// saves the hash lookup's (bench/RESULTS.md).
#[derive(Debug)]
enum Ranges {
    Dense {
        min: i64,
        ranges: Vec<(usize, usize)>,
    },
    Hashed(HashMap<i64, (usize, usize)>),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges::Hashed(HashMap::new())
    }
}

/// Sorted event times per key.
#[derive(Debug, Default)]
pub struct TemporalIndex {
    ranges: Ranges,
    keys: usize,
    times: Vec<i64>,
}

impl TemporalIndex {
    /// Builds the index from `(key, time)` pairs in any order.
    pub fn from_pairs(mut pairs: Vec<(i64, i64)>) -> Self {
        pairs.sort_unstable();
        let mut found: Vec<(i64, (usize, usize))> = Vec::new();
        let mut times = Vec::with_capacity(pairs.len());
        let mut start = 0;
        for (i, &(key, time)) in pairs.iter().enumerate() {
            times.push(time);
            let last_of_key = pairs.get(i + 1).is_none_or(|next| next.0 != key);
            if last_of_key {
                found.push((key, (start, i + 1)));
                start = i + 1;
            }
        }
        let keys = found.len();
        let span = match (found.first(), found.last()) {
            (Some(first), Some(last)) => last
                .0
                .checked_sub(first.0)
                .and_then(|s| usize::try_from(s).ok()),
            _ => None,
        };
        let ranges = match span {
            Some(span) if span < 4 * keys + 1024 => {
                let min = found[0].0;
                let mut ranges = vec![(0, 0); span + 1];
                for (key, range) in found {
                    ranges[(key - min) as usize] = range;
                }
                Ranges::Dense { min, ranges }
            }
            _ => Ranges::Hashed(found.into_iter().collect()),
        };
        TemporalIndex {
            ranges,
            keys,
            times,
        }
    }

    /// The sorted event times of `key` (empty for an unknown key).
    pub fn times(&self, key: i64) -> &[i64] {
        let range = match &self.ranges {
            Ranges::Dense { min, ranges } => key
                .checked_sub(*min)
                .and_then(|offset| usize::try_from(offset).ok())
                .and_then(|offset| ranges.get(offset)),
            Ranges::Hashed(map) => map.get(&key),
        };
        match range {
            Some(&(start, end)) => &self.times[start..end],
            None => &[],
        }
    }

    /// Number of events indexed.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Number of distinct keys.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// The largest event time, `None` when there are no events.
    pub fn max_time(&self) -> Option<i64> {
        let ends: Box<dyn Iterator<Item = usize>> = match &self.ranges {
            Ranges::Dense { ranges, .. } => {
                Box::new(ranges.iter().filter(|r| r.1 > r.0).map(|r| r.1))
            }
            Ranges::Hashed(map) => Box::new(map.values().map(|r| r.1)),
        };
        ends.map(|end| self.times[end - 1]).max()
    }

    /// Bytes held by the index.
    pub fn memory_size(&self) -> usize {
        let ranges = match &self.ranges {
            Ranges::Dense { ranges, .. } => ranges.capacity() * 16,
            Ranges::Hashed(map) => map.capacity() * 24,
        };
        self.times.capacity() * 8 + ranges
    }
}

/// Position of the first time `>= t` in sorted `times`.
fn lower_bound(times: &[i64], t: i64) -> usize {
    times.partition_point(|&x| x < t)
}

/// The instants bounding `window` around `t`: the events with
/// `lo <= ts < hi`, `lo = None` meaning from the first event.
pub fn window_bounds(t: i64, window: Window) -> (Option<i64>, i64) {
    match window {
        Window::Past {
            lookback_micros: None,
        } => (None, t),
        Window::Past {
            lookback_micros: Some(w),
        } => (Some(t.saturating_sub(w)), t),
        Window::Future { horizon_micros } => (Some(t), t.saturating_add(horizon_micros)),
    }
}

/// How many of the sorted `times` fall in `window` relative to `t`.
pub fn window_count(times: &[i64], t: i64, window: Window) -> usize {
    Positions::new(times).count(t, window)
}

/// Binary searches in one key's times, remembered so that windows sharing
/// a bound (the feature's `t` is the label's start) search once: the three
/// windows of `leakless build` cost three searches, not five.
pub struct Positions<'a> {
    times: &'a [i64],
    known: [(i64, usize); 4],
    len: usize,
}

impl<'a> Positions<'a> {
    pub fn new(times: &'a [i64]) -> Self {
        Positions {
            times,
            known: [(0, 0); 4],
            len: 0,
        }
    }

    /// Position of the first time `>= x`.
    fn lower_bound(&mut self, x: i64) -> usize {
        if let Some(&(_, p)) = self.known[..self.len].iter().find(|k| k.0 == x) {
            return p;
        }
        let p = lower_bound(self.times, x);
        if self.len < self.known.len() {
            self.known[self.len] = (x, p);
            self.len += 1;
        }
        p
    }

    /// How many times fall in `window` relative to `t`.
    pub fn count(&mut self, t: i64, window: Window) -> usize {
        let (lo, hi) = window_bounds(t, window);
        let lo = lo.map_or(0, |lo| self.lower_bound(lo));
        self.lower_bound(hi) - lo
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PAST: Window = Window::Past {
        lookback_micros: None,
    };
    const LAST_10: Window = Window::Past {
        lookback_micros: Some(10),
    };
    const NEXT_10: Window = Window::Future { horizon_micros: 10 };

    #[test]
    fn worked_example() {
        let index = TemporalIndex::from_pairs(vec![(7, 30), (7, 20), (8, 5), (7, 10), (7, 20)]);
        let times = index.times(7);
        assert_eq!(times, &[10, 20, 20, 30]);
        assert_eq!(window_count(times, 20, PAST), 1);
        assert_eq!(window_count(times, 20, LAST_10), 1);
        assert_eq!(window_count(times, 20, NEXT_10), 2);
        assert_eq!(index.times(9), &[] as &[i64]);
        assert_eq!(
            (index.len(), index.keys(), index.max_time()),
            (5, 2, Some(30))
        );
    }

    #[test]
    fn window_edges() {
        let times = [0, 10, 20];
        // An event at exactly t is future, not past.
        assert_eq!(window_count(&times, 10, PAST), 1);
        assert_eq!(window_count(&times, 10, NEXT_10), 1);
        // An event at exactly t - lookback is inside the look-back window.
        assert_eq!(window_count(&times, 10, LAST_10), 1);
        // An event at exactly t + horizon is outside the label window.
        assert_eq!(window_count(&times, 0, NEXT_10), 1);
        // Extreme times saturate instead of overflowing.
        assert_eq!(window_count(&times, i64::MAX, NEXT_10), 0);
        assert_eq!(window_count(&times, i64::MIN, LAST_10), 0);
    }

    fn window() -> impl Strategy<Value = Window> {
        prop_oneof![
            Just(PAST),
            (1i64..8).prop_map(|w| Window::Past {
                lookback_micros: Some(w)
            }),
            (1i64..8).prop_map(|h| Window::Future { horizon_micros: h }),
        ]
    }

    fn in_window(ts: i64, t: i64, window: Window) -> bool {
        match window {
            Window::Past {
                lookback_micros: None,
            } => ts < t,
            Window::Past {
                lookback_micros: Some(w),
            } => t - w <= ts && ts < t,
            Window::Future { horizon_micros } => t <= ts && ts < t + horizon_micros,
        }
    }

    #[test]
    fn sparse_and_extreme_keys_use_the_hash_map() {
        let index = TemporalIndex::from_pairs(vec![(i64::MIN, 1), (i64::MAX, 2), (0, 3)]);
        assert!(matches!(index.ranges, Ranges::Hashed(_)));
        assert_eq!(
            (index.times(i64::MIN), index.times(i64::MAX), index.times(5)),
            (&[1][..], &[2][..], &[][..])
        );
        assert_eq!((index.keys(), index.max_time()), (3, Some(3)));
        let dense = TemporalIndex::from_pairs(vec![(-3, 1), (2, 2)]);
        assert!(matches!(dense.ranges, Ranges::Dense { .. }));
        assert_eq!(
            (
                dense.times(-3),
                dense.times(-4),
                dense.times(0),
                dense.times(3)
            ),
            (&[1][..], &[][..], &[][..], &[][..])
        );
    }

    proptest! {
        #[test]
        fn counts_match_a_scan(
            pairs in prop::collection::vec((prop_oneof![0i64..3, Just(i64::MAX), Just(-5_000_000)], 0i64..12), 0..40),
            key in prop_oneof![0i64..4, Just(i64::MAX), Just(-5_000_000), Just(i64::MIN)],
            t in -2i64..15,
            window in window(),
        ) {
            let expected = pairs.iter().filter(|&&(k, ts)| k == key && in_window(ts, t, window)).count();
            let index = TemporalIndex::from_pairs(pairs);
            prop_assert_eq!(window_count(index.times(key), t, window), expected);
        }
    }
}
