//! Window bounds as positions in a key's sorted times.
//!
//! Every indexed source keeps, per key, one run of event times sorted by
//! (time, input order). A window of a spine row at `t` is a half-open range
//! of instants `[t + lo, t + hi)` (a feature of a source with delay `d` and
//! window `w`: `lo = -d - w`, `hi = -d`; a lifetime window has no `lo`; a
//! label with offset `o`: `lo = o`, `hi = o + w`), and so a half-open range
//! of positions `[a, b)` in the run, found by binary search: every op is a
//! function of that range. A [`Cursor`] that remembers each key's last
//! positions makes probes in time order a step or two. Nothing is allocated
//! per probe, however hot the key.
//!
//! Worked example: clicks on listing 7 at times `[10, 20, 20, 30]`.
//! For an impression of listing 7 at `t = 20`:
//!
//! ```text
//!   position of first time >= t      = 1   (lifetime [.., 20): 1 event, 10)
//!   position of first time >= t - 10 = 0   (window [10, 20) holds 1)
//!   position of first time >= t + 10 = 3   (future [20, 30) holds 2: label 1)
//! ```

/// Position of the first time `>= t` in sorted `times`.
pub fn lower_bound(times: &[i64], t: i64) -> usize {
    times.partition_point(|&x| x < t)
}

/// The bounds of several windows as distinct offsets from `t`, so that
/// windows sharing a bound (a feature ending at `t`, a label starting at
/// `t`) share its position: the three windows of the marketplace spec have
/// the three offsets `0`, `-24h` and `+24h`.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    offsets: Vec<i64>,
    /// Per window: the offset index of its lower bound (`None`: from the
    /// first event) and of its upper bound.
    bounds: Vec<(Option<usize>, usize)>,
}

impl WindowPlan {
    /// `windows`: per window `(lo, hi)`, the instants `[t + lo, t + hi)`.
    pub fn new(windows: &[(Option<i64>, i64)]) -> Self {
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
            .map(|&(lo, hi)| (lo.map(&mut index_of), index_of(hi)))
            .collect();
        WindowPlan { offsets, bounds }
    }

    pub fn windows(&self) -> usize {
        self.bounds.len()
    }
}

/// Answers probes against per-key sorted times, remembering per key the
/// last probe's time and positions. A probe at or after the key's previous
/// one (spine rows mostly come in time order) gallops forward from there and
/// touches a cache line or two; an earlier one binary-searches. At 100 M
/// impressions a hot listing has hundreds of thousands of clicks and every
/// binary search missed the cache on its deep levels: the cursor cut the
/// build's CPU there from 51 s to 42 s (wall 34.7 s to 31.2 s; 100 k
/// listings, bench/RESULTS.md), and is neutral at 10 M. One cursor per
/// stream and index.
#[derive(Debug)]
pub struct Cursor {
    plan: WindowPlan,
    /// Per slot: the last probe time, then one position per offset.
    state: Vec<i64>,
    found: Vec<usize>,
}

impl Cursor {
    /// A cursor over `slots` keys holding `events` events in all. It keeps
    /// the state of every key (one word per window bound, and one) only
    /// when all of it is no more than the events' times (a word each), that
    /// is when the keys average at least that many events; otherwise (a
    /// user x item key) it keeps none, for any key, and each probe
    /// binary-searches its key's run, short on average; the state would
    /// have outweighed the index.
    pub fn new(slots: usize, plan: WindowPlan, events: usize) -> Self {
        let stride = plan.offsets.len() + 1;
        let slots = if events / stride >= slots { slots } else { 0 };
        // All zeros: a key never probed reads as probed at time 0 with its
        // positions at 0, from where a probe at or after 0 gallops and an
        // earlier one binary-searches: both exact. Zeros are also pages the
        // system hands out untouched, so the state of keys no spine row
        // asks for (ids in a dense span without rows) costs no memory.
        let state = vec![0; slots * stride];
        Cursor {
            found: vec![0; plan.offsets.len()],
            state,
            plan,
        }
    }

    /// Writes the position range `[a, b)` in `times` (the sorted times of
    /// the key in `slot`) of each window of the plan for a probe at `t`.
    pub fn ranges(&mut self, slot: usize, times: &[i64], t: i64, out: &mut [(usize, usize)]) {
        let stride = self.plan.offsets.len() + 1;
        if self.state.is_empty() {
            for (&offset, found) in self.plan.offsets.iter().zip(self.found.iter_mut()) {
                *found = lower_bound(times, t.saturating_add(offset));
            }
            self.write_ranges(out);
            return;
        }
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
        self.write_ranges(out);
    }

    /// Each window's `[a, b)` from the positions of the offsets.
    fn write_ranges(&self, out: &mut [(usize, usize)]) {
        for (&(lo, hi), out) in self.plan.bounds.iter().zip(out.iter_mut()) {
            let b = self.found[hi];
            let a = lo.map_or(0, |lo| self.found[lo]).min(b);
            *out = (a, b);
        }
    }
}

impl Cursor {
    /// Asks the CPU to fetch `slot`'s state, to be read a few rows later.
    pub fn prefetch_state(&self, slot: usize) {
        let stride = self.plan.offsets.len() + 1;
        if let Some(state) = self.state.get(slot * stride) {
            prefetch(state);
        }
    }

    /// Asks the CPU to fetch the times at `slot`'s last positions in
    /// `times` (its run), where its next probe starts galloping. Reads the
    /// state, so call it after [`Cursor::prefetch_state`] had time to work.
    /// Without state (keys with few events each), the times its binary
    /// searches read: the middle of the run first, and its ends, which for
    /// a run of a few events are the whole run.
    pub fn prefetch_times(&self, slot: usize, times: &[i64]) {
        let stride = self.plan.offsets.len() + 1;
        if self.state.is_empty() {
            if let (Some(first), Some(last)) = (times.first(), times.last()) {
                prefetch(first);
                prefetch(&times[times.len() / 2]);
                prefetch(last);
            }
            return;
        }
        let Some(state) = self.state.get(slot * stride..(slot + 1) * stride) else {
            return;
        };
        for &position in &state[1..] {
            if let Some(time) = times.get(position as usize) {
                prefetch(time);
            }
        }
    }
}

/// Asks the CPU to bring the cache line of `value` in, without waiting for
/// it: the probe's rows hit keys at random, and its loads of a key's state
/// and times miss the cache once the keys outgrow it (1 M listings).
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that reads nothing and cannot fault; the
    // pointer comes from a reference.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
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

    const LIFETIME: (Option<i64>, i64) = (None, 0);
    const LAST_10: (Option<i64>, i64) = (Some(-10), 0);
    const NEXT_10: (Option<i64>, i64) = (Some(0), 10);

    fn count(times: &[i64], t: i64, w: (Option<i64>, i64)) -> usize {
        let mut cursor = Cursor::new(1, WindowPlan::new(&[w]), usize::MAX);
        let mut out = [(0, 0)];
        cursor.ranges(0, times, t, &mut out);
        out[0].1 - out[0].0
    }

    #[test]
    fn worked_example() {
        let times = [10, 20, 20, 30];
        assert_eq!(count(&times, 20, LIFETIME), 1);
        assert_eq!(count(&times, 20, LAST_10), 1);
        assert_eq!(count(&times, 20, NEXT_10), 2);
    }

    #[test]
    fn window_edges() {
        let times = [0, 10, 20];
        // An event at exactly t is future, not past.
        assert_eq!(count(&times, 10, LIFETIME), 1);
        assert_eq!(count(&times, 10, NEXT_10), 1);
        // An event at exactly t - lookback is inside the look-back window.
        assert_eq!(count(&times, 10, LAST_10), 1);
        // An event at exactly t + horizon is outside the label window.
        assert_eq!(count(&times, 0, NEXT_10), 1);
        // Extreme times saturate instead of overflowing.
        assert_eq!(count(&times, i64::MAX, NEXT_10), 0);
        assert_eq!(count(&times, i64::MIN, LAST_10), 0);
    }

    proptest! {
        #[test]
        fn a_cursor_matches_a_scan_in_any_probe_order(
            keys in prop::collection::vec(prop::collection::vec(0i64..40, 0..30), 1..4),
            probes in prop::collection::vec((0usize..4, -2i64..45), 0..60),
            sorted in any::<bool>(),
            remember in any::<bool>(),
        ) {
            let windows = [LIFETIME, LAST_10, NEXT_10, (Some(-3), 0), (Some(2), 5), (None, -4)];
            let keys: Vec<Vec<i64>> = keys.into_iter().map(|mut k| { k.sort_unstable(); k }).collect();
            let events = if remember { usize::MAX } else { 0 };
            let mut cursor = Cursor::new(keys.len(), WindowPlan::new(&windows), events);
            let mut probes = probes;
            if sorted {
                probes.sort_by_key(|p| p.1);
            }
            let mut out = [(0, 0); 6];
            for (slot, t) in probes {
                let slot = slot % keys.len();
                let times = &keys[slot];
                cursor.ranges(slot, times, t, &mut out);
                for (w, (a, b)) in windows.iter().zip(out) {
                    let expected: Vec<usize> = (0..times.len())
                        .filter(|&i| w.0.is_none_or(|lo| times[i] >= t + lo) && times[i] < t + w.1)
                        .collect();
                    prop_assert_eq!((a..b).collect::<Vec<_>>(), expected, "slot {} t {} window {:?}", slot, t, w);
                }
            }
        }
    }
}
