//! The per-key sorted-timestamp index (CSR layout) and window counting.
//!
//! All event timestamps live in one buffer, sorted by (key, time); a hash map
//! gives each key its range of that buffer. A window count is the difference
//! of two positions in the key's times: a binary search costs `O(log n)`
//! for the key's `n` events, and a [`Cursor`] that remembers each key's last
//! positions makes probes in time order a step or two. Nothing is allocated
//! per probe, however hot the key.
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
/// saves the hash lookup's (probe CPU 31.4 s -> 22.9 s).
#[derive(Debug)]
enum Ranges {
    Dense {
        min: i64,
        ranges: Vec<(usize, usize)>,
    },
    /// Key -> (start, end, slot).
    Hashed(HashMap<i64, (usize, usize, usize)>),
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
            _ => Ranges::Hashed(
                found
                    .into_iter()
                    .enumerate()
                    .map(|(slot, (key, (start, end)))| (key, (start, end, slot)))
                    .collect(),
            ),
        };
        TemporalIndex {
            ranges,
            keys,
            times,
        }
    }

    /// A slot (dense, below [`TemporalIndex::slots`]) and the sorted event
    /// times of `key`; `None` for a key without events.
    pub fn locate(&self, key: i64) -> Option<(usize, &[i64])> {
        let (start, end, slot) = match &self.ranges {
            Ranges::Dense { min, ranges } => {
                let slot = usize::try_from(key.checked_sub(*min)?).ok()?;
                let &(start, end) = ranges.get(slot)?;
                (start, end, slot)
            }
            Ranges::Hashed(map) => *map.get(&key)?,
        };
        (end > start).then(|| (slot, &self.times[start..end]))
    }

    /// The number of slots [`TemporalIndex::locate`] can return.
    pub fn slots(&self) -> usize {
        match &self.ranges {
            Ranges::Dense { ranges, .. } => ranges.len(),
            Ranges::Hashed(map) => map.len(),
        }
    }

    /// The sorted event times of `key` (empty for an unknown key).
    pub fn times(&self, key: i64) -> &[i64] {
        self.locate(key).map_or(&[], |(_, times)| times)
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
            Ranges::Hashed(map) => map.capacity() * 32,
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
    let (lo, hi) = window_bounds(t, window);
    lower_bound(times, hi) - lo.map_or(0, |lo| lower_bound(times, lo))
}

/// The bounds of several windows as distinct offsets from `t`, so that
/// windows sharing a bound (a feature ending at `t`, a label starting at
/// `t`) share its position: the three windows of `leakless build` have the
/// three offsets `0`, `-24h` and `+24h`.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    offsets: Vec<i64>,
    /// Per window: the offset index of its lower bound (`None`: from the
    /// first event) and of its upper bound.
    bounds: Vec<(Option<usize>, usize)>,
}

impl WindowPlan {
    pub fn new(windows: &[Window]) -> Self {
        let mut offsets: Vec<i64> = Vec::new();
        let mut index_of = |offset: i64| match offsets.iter().position(|&o| o == offset) {
            Some(i) => i,
            None => {
                offsets.push(offset);
                offsets.len() - 1
            }
        };
        let bounds = windows
            .iter()
            .map(|&w| match w {
                Window::Past {
                    lookback_micros: None,
                } => (None, index_of(0)),
                Window::Past {
                    lookback_micros: Some(l),
                } => (Some(index_of(l.saturating_neg())), index_of(0)),
                Window::Future { horizon_micros } => (Some(index_of(0)), index_of(horizon_micros)),
            })
            .collect();
        WindowPlan { offsets, bounds }
    }
}

/// Answers probes against a [`TemporalIndex`], remembering per key the last
/// probe's time and positions. A probe at or after the key's previous one
/// (spine rows mostly come in time order) gallops forward from there and
/// touches a cache line or two; an earlier one binary-searches. At 100 M
/// impressions a hot listing has hundreds of thousands of clicks and every
/// binary search missed the cache on its deep levels: the cursor cut the
/// build's CPU there from 51 s to 42 s (wall 34.7 s to 31.2 s; 100 k
/// listings, bench/RESULTS.md), and is neutral at 10 M. One cursor per
/// stream.
#[derive(Debug)]
pub struct Cursor {
    plan: WindowPlan,
    /// Per slot: the last probe time, then one position per offset.
    state: Vec<i64>,
    found: Vec<usize>,
}

impl Cursor {
    pub fn new(index: &TemporalIndex, plan: WindowPlan) -> Self {
        let stride = plan.offsets.len() + 1;
        let mut state = vec![0; index.slots() * stride];
        for slot in state.chunks_mut(stride) {
            slot[0] = i64::MIN;
        }
        Cursor {
            found: vec![0; plan.offsets.len()],
            state,
            plan,
        }
    }

    /// Writes the count of each window of the plan for a probe of `key` at
    /// `t` into `out`.
    pub fn counts(&mut self, index: &TemporalIndex, key: i64, t: i64, out: &mut [usize]) {
        let Some((slot, times)) = index.locate(key) else {
            out.fill(0);
            return;
        };
        let stride = self.plan.offsets.len() + 1;
        let state = &mut self.state[slot * stride..(slot + 1) * stride];
        let forward = t >= state[0];
        state[0] = t;
        for ((position, &offset), found) in state[1..]
            .iter_mut()
            .zip(&self.plan.offsets)
            .zip(self.found.iter_mut())
        {
            let x = t.saturating_add(offset);
            let p = if forward {
                gallop(times, *position as usize, x)
            } else {
                lower_bound(times, x)
            };
            *position = p as i64;
            *found = p;
        }
        for (&(lo, hi), out) in self.plan.bounds.iter().zip(out.iter_mut()) {
            *out = self.found[hi] - lo.map_or(0, |lo| self.found[lo]);
        }
    }
}

/// Position of the first time `>= x` at or after `from`, given that every
/// time before `from` is `< x`: exponential steps, then binary search.
fn gallop(times: &[i64], from: usize, x: i64) -> usize {
    let mut step = 1;
    let mut lo = from;
    let mut hi = from;
    while hi < times.len() && times[hi] < x {
        lo = hi + 1;
        hi = (from + step).min(times.len());
        step *= 2;
    }
    lo + lower_bound(&times[lo..hi], x)
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
        fn a_cursor_matches_a_scan_in_any_probe_order(
            pairs in prop::collection::vec((prop_oneof![0i64..3, Just(i64::MAX)], 0i64..40), 0..80),
            probes in prop::collection::vec((prop_oneof![0i64..4, Just(i64::MAX)], -2i64..45), 0..60),
            sorted in any::<bool>(),
        ) {
            let windows = [PAST, LAST_10, NEXT_10, Window::Past { lookback_micros: Some(3) }];
            let index = TemporalIndex::from_pairs(pairs.clone());
            let mut cursor = Cursor::new(&index, WindowPlan::new(&windows));
            let mut probes = probes;
            if sorted {
                probes.sort_by_key(|p| p.1);
            }
            let mut out = [0; 4];
            for (key, t) in probes {
                cursor.counts(&index, key, t, &mut out);
                for (w, got) in windows.iter().zip(out) {
                    let expected = pairs.iter().filter(|&&(k, ts)| k == key && in_window(ts, t, *w)).count();
                    prop_assert_eq!(got, expected, "key {} t {} window {:?}", key, t, w);
                }
            }
        }

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
