//! Exact answers over any position range `[a, b)` of an index's value
//! column in O(1) or O(log n), however many events the range holds: the
//! structures behind sliding-window float `sum`/`mean`, `min`/`max` and
//! `count_distinct` (issue 15). Pure, and property-tested against scans.
//!
//! | structure | serves | query | memory per event |
//! |---|---|---|---|
//! | [`ExactSums`]: fixed-point prefix sums of the floats, scaled by the column's smallest bit | float `sum`, `mean` | O(1): one subtraction, one rounding | 8 bytes (i64) when the column's values span at most about 63 - log2(n) binary orders, else 16 (i128), more only beyond about 127 - log2(n) |
//! | [`RangeMin`]: per block of 64 a monotonic stack as a bit mask, a sparse table over the blocks' minima | `min`, `max` | O(1): two masks, two table entries, four keys | 16 bytes, plus 4 log2(n/64) / 64 |
//! | [`DistinctCounts`]: each event's previous and next event of the same value in its run, and a wavelet matrix over the previous positions | `count_distinct` | O(log n) rank steps from scratch; O(1) amortised from the previous window of the key when probes move forward | about 8 bytes + 1.5 log2(n) bits |
//!
//! Worked example of `count_distinct`: a run holds values `[x, y, x, x, z]`
//! at positions 0..5. An event is the first of its value inside `[a, b)`
//! exactly when its previous same-value event lies before `a`, so the
//! answer is `#{ i in [a, b) : prev[i] < a }`:
//!
//! ```text
//!   position   0  1  2  3  4
//!   value      x  y  x  x  z
//!   prev + 1   0  0  1  3  0      (0: none before)
//!   [1, 4): prev + 1 <= 1 at positions 1, 2: y, x -> 2
//! ```

use std::cmp::Ordering;

/// Sums of the finite float64 values of any position range, exact and
/// rounded once to the nearest float64 (ties to even): the answer does not
/// depend on the order of additions, and so neither on partitioning nor on
/// how the range is split. NaN, +inf and -inf are counted apart: any NaN,
/// or both infinities, give NaN; one infinity gives it.
///
/// Every finite value is an integer times `2^exponent`, where `exponent`
/// is the lowest set bit over the column; the prefix sums of those integers
/// are exact in i128 when the column's values span few enough binary orders
/// (`(top - exponent) + log2(n) < 126`, true of any column of prices or
/// amounts), and in as many 64-bit limbs as needed otherwise.
#[derive(Debug)]
pub struct ExactSums {
    exponent: i32,
    prefix: Prefix,
    /// Prefix counts of NaN, +inf and -inf; `None` when the column has none.
    special: Option<Vec<[u32; 3]>>,
}

#[derive(Debug)]
enum Prefix {
    /// Prefix sums that fit in 63 bits and a sign (most columns: prices,
    /// amounts, durations in a few binary orders).
    Small(Vec<i64>),
    Narrow(Vec<i128>),
    /// `limbs` little-endian two's complement words per prefix.
    Wide {
        limbs: usize,
        words: Vec<u64>,
    },
}

/// A finite nonzero float as `(negative, odd mantissa, exponent)`.
fn decompose(x: f64) -> Option<(bool, u64, i32)> {
    if !x.is_finite() || x == 0.0 {
        return None;
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    let zeros = mantissa.trailing_zeros();
    Some((bits >> 63 == 1, mantissa >> zeros, exponent + zeros as i32))
}

impl ExactSums {
    /// `value(i)`: the float at position `i` of `n`, `None` when null.
    pub fn new(n: usize, value: impl Fn(usize) -> Option<f64>) -> Self {
        let values = || (0..n).map(&value);
        let (mut lowest, mut top) = (i32::MAX, i32::MIN);
        let mut special = false;
        for x in values() {
            match x.map(|x| (x, decompose(x))) {
                Some((_, Some((_, m, e)))) => {
                    lowest = lowest.min(e);
                    top = top.max(e + 64 - m.leading_zeros() as i32);
                }
                Some((x, None)) => special |= !x.is_finite(),
                None => {}
            }
        }
        let exponent = if lowest == i32::MAX { 0 } else { lowest };
        // Bits of the largest prefix magnitude, plus a sign bit.
        let span = if lowest == i32::MAX { 0 } else { top - lowest };
        let width = span as usize + usize::BITS as usize - n.leading_zeros() as usize + 1;
        let prefix = if width <= 64 {
            let mut sums = Vec::with_capacity(n + 1);
            let mut sum = 0i64;
            sums.push(sum);
            for x in values() {
                if let Some((negative, m, e)) = x.and_then(decompose) {
                    let v = (m << (e - exponent)) as i64;
                    sum += if negative { -v } else { v };
                }
                sums.push(sum);
            }
            Prefix::Small(sums)
        } else if width <= 127 {
            let mut sums = Vec::with_capacity(n + 1);
            let mut sum = 0i128;
            sums.push(sum);
            for x in values() {
                if let Some((negative, m, e)) = x.and_then(decompose) {
                    let v = i128::from(m) << (e - exponent);
                    sum += if negative { -v } else { v };
                }
                sums.push(sum);
            }
            Prefix::Narrow(sums)
        } else {
            let limbs = width.div_ceil(64);
            let mut words = vec![0u64; (n + 1) * limbs];
            for (i, x) in values().enumerate() {
                let (done, next) = words.split_at_mut((i + 1) * limbs);
                let next = &mut next[..limbs];
                next.copy_from_slice(&done[i * limbs..]);
                if let Some((negative, m, e)) = x.and_then(decompose) {
                    add_shifted(next, m, (e - exponent) as usize, negative);
                }
            }
            Prefix::Wide { limbs, words }
        };
        let special = special.then(|| {
            let mut counts = Vec::with_capacity(n + 1);
            let mut c = [0u32; 3];
            counts.push(c);
            for x in values() {
                match x {
                    Some(x) if x.is_nan() => c[0] += 1,
                    Some(x) if x == f64::INFINITY => c[1] += 1,
                    Some(x) if x == f64::NEG_INFINITY => c[2] += 1,
                    _ => {}
                }
                counts.push(c);
            }
            counts
        });
        ExactSums {
            exponent,
            prefix,
            special,
        }
    }

    /// The sum of the non-null values at positions `a..b`; `+0.0` for an
    /// exact zero (and for no values).
    pub fn sum(&self, a: usize, b: usize) -> f64 {
        if let Some(counts) = &self.special {
            let (x, y) = (counts[a], counts[b]);
            let (nan, pos, neg) = (y[0] - x[0], y[1] - x[1], y[2] - x[2]);
            if nan > 0 || (pos > 0 && neg > 0) {
                return f64::NAN;
            }
            if pos > 0 {
                return f64::INFINITY;
            }
            if neg > 0 {
                return f64::NEG_INFINITY;
            }
        }
        match &self.prefix {
            Prefix::Small(sums) => {
                let d = sums[b] - sums[a];
                round_to_f64(d < 0, &[d.unsigned_abs()], self.exponent)
            }
            Prefix::Narrow(sums) => {
                let d = sums[b] - sums[a];
                let m = d.unsigned_abs();
                round_to_f64(d < 0, &[m as u64, (m >> 64) as u64], self.exponent)
            }
            Prefix::Wide { limbs, words } => {
                let (x, y) = (&words[a * limbs..][..*limbs], &words[b * limbs..][..*limbs]);
                let mut d = vec![0u64; *limbs];
                let mut borrow = false;
                for i in 0..*limbs {
                    let (v, b1) = y[i].overflowing_sub(x[i]);
                    let (v, b2) = v.overflowing_sub(u64::from(borrow));
                    d[i] = v;
                    borrow = b1 || b2;
                }
                let negative = d[limbs - 1] >> 63 == 1;
                if negative {
                    negate(&mut d);
                }
                round_to_f64(negative, &d, self.exponent)
            }
        }
    }

    pub fn memory_size(&self) -> usize {
        let prefix = match &self.prefix {
            Prefix::Small(s) => s.capacity() * 8,
            Prefix::Narrow(s) => s.capacity() * 16,
            Prefix::Wide { words, .. } => words.capacity() * 8,
        };
        prefix + self.special.as_ref().map_or(0, |s| s.capacity() * 12)
    }
}

/// Adds (or subtracts) `m << shift` to the two's complement `words`.
fn add_shifted(words: &mut [u64], m: u64, shift: usize, negative: bool) {
    let (limb, bit) = (shift / 64, shift % 64);
    let wide = u128::from(m) << bit;
    let parts = [wide as u64, (wide >> 64) as u64];
    let mut carry = false;
    for (i, word) in words.iter_mut().enumerate().skip(limb) {
        let part = parts.get(i - limb).copied().unwrap_or(0);
        if negative {
            let (v, b1) = word.overflowing_sub(part);
            let (v, b2) = v.overflowing_sub(u64::from(carry));
            *word = v;
            carry = b1 || b2;
        } else {
            let (v, c1) = word.overflowing_add(part);
            let (v, c2) = v.overflowing_add(u64::from(carry));
            *word = v;
            carry = c1 || c2;
        }
        if !carry && i > limb + 1 {
            break;
        }
    }
}

fn negate(words: &mut [u64]) {
    let mut carry = true;
    for w in words.iter_mut() {
        let (v, c) = (!*w).overflowing_add(u64::from(carry));
        *w = v;
        carry = c;
    }
}

/// `±magnitude * 2^exponent` (`magnitude` little-endian) rounded to the
/// nearest float64, ties to even; beyond the largest float64, infinity.
pub fn round_to_f64(negative: bool, magnitude: &[u64], exponent: i32) -> f64 {
    let Some(high) = magnitude.iter().rposition(|&w| w != 0) else {
        return 0.0;
    };
    let bits = high as i64 * 64 + 64 - i64::from(magnitude[high].leading_zeros());
    let sign = if negative { -1.0 } else { 1.0 };
    // Exponent of the top bit.
    let top = i64::from(exponent) + bits - 1;
    if top > 1023 {
        return sign * f64::INFINITY;
    }
    // The lowest bit kept: 53 significant bits, none below 2^-1074.
    let keep = (top - 52).max(-1074);
    let drop = keep - i64::from(exponent);
    let bit = |i: i64| (magnitude[(i / 64) as usize] >> (i % 64)) & 1;
    let mut r = if drop <= 0 {
        extract(magnitude, 0, bits) << (-drop)
    } else {
        let r = extract(magnitude, drop, bits);
        let round = bit(drop - 1) == 1;
        let sticky = any_below(magnitude, drop - 1);
        r + u64::from(round && (sticky || r & 1 == 1))
    };
    let mut q = keep;
    if r == 1 << 53 {
        r >>= 1;
        q += 1;
    }
    let value = if r >= 1 << 52 {
        let biased = q + 1075;
        if biased >= 2047 {
            return sign * f64::INFINITY;
        }
        f64::from_bits(((biased as u64) << 52) | (r & ((1 << 52) - 1)))
    } else {
        // Subnormal: `q` is -1074.
        f64::from_bits(r)
    };
    sign * value
}

/// Whether any bit below position `p` of `magnitude` is set.
fn any_below(magnitude: &[u64], p: i64) -> bool {
    let (limb, bit) = ((p / 64) as usize, p % 64);
    magnitude[..limb].iter().any(|&w| w != 0) || magnitude[limb] & ((1u64 << bit) - 1) != 0
}

/// Bits `from..to` of `magnitude` (at most 64 of them).
fn extract(magnitude: &[u64], from: i64, to: i64) -> u64 {
    let mut out = 0u64;
    let mut i = from;
    while i < to {
        let (limb, bit) = ((i / 64) as usize, i % 64);
        let take = (64 - bit).min(to - i);
        let chunk = (magnitude[limb] >> bit) & if take == 64 { !0 } else { (1 << take) - 1 };
        out |= chunk << (i - from);
        i += take;
    }
    out
}

/// The position of the leftmost smallest key in any range, in O(1).
///
/// Keys are split into blocks of 64. Inside a block, `stacks[j]` has bit
/// `i` set when key `i` of the block is `<=` every key after it up to `j`
/// (the monotonic stack after `j`, as a mask): the leftmost minimum of
/// `[l, j]` is then the lowest set bit at or above `l`. Across blocks, a
/// sparse table holds the leftmost minimum of every `2^k` blocks. A query
/// reads at most two masks, two table entries and four keys.
#[derive(Debug)]
pub struct RangeMin {
    keys: Vec<u64>,
    stacks: Vec<u64>,
    /// `table[k][i]`: leftmost minimum of blocks `i..i + 2^k`.
    table: Vec<Vec<u32>>,
}

const BLOCK: usize = 64;

impl RangeMin {
    pub fn new(keys: Vec<u64>) -> Self {
        let n = keys.len();
        let mut stacks = vec![0u64; n];
        for start in (0..n).step_by(BLOCK) {
            let mut stack = 0u64;
            for j in start..(start + BLOCK).min(n) {
                while stack != 0 {
                    let top = 63 - stack.leading_zeros() as usize;
                    if keys[start + top] > keys[j] {
                        stack &= !(1 << top);
                    } else {
                        break;
                    }
                }
                stack |= 1 << (j - start);
                stacks[j] = stack;
            }
        }
        let blocks = n.div_ceil(BLOCK);
        let mut table: Vec<Vec<u32>> = vec![
            (0..blocks)
                .map(|b| {
                    let last = ((b + 1) * BLOCK).min(n) - 1;
                    (b * BLOCK + stacks[last].trailing_zeros() as usize) as u32
                })
                .collect(),
        ];
        let mut span = 1;
        while 2 * span <= blocks {
            let previous = table.last().expect("level 0");
            let level = (0..=blocks - 2 * span)
                .map(|i| leftmost_min(&keys, previous[i], previous[i + span]))
                .collect();
            table.push(level);
            span *= 2;
        }
        RangeMin {
            keys,
            stacks,
            table,
        }
    }

    /// The position of the leftmost smallest key in `l..r` (`l < r`).
    pub fn query(&self, l: usize, r: usize) -> usize {
        debug_assert!(l < r);
        let last = r - 1;
        let (bl, br) = (l / BLOCK, last / BLOCK);
        let within = |j: usize, from: usize| {
            let start = j / BLOCK * BLOCK;
            start + (self.stacks[j] & (!0u64 << (from - start))).trailing_zeros() as usize
        };
        if bl == br {
            return within(last, l);
        }
        let mut best = within((bl + 1) * BLOCK - 1, l) as u32;
        if bl + 1 < br {
            let (from, to) = (bl + 1, br - 1);
            let k = (usize::BITS - 1 - (to - from + 1).leading_zeros()) as usize;
            best = leftmost_min(&self.keys, best, self.table[k][from]);
            best = leftmost_min(&self.keys, best, self.table[k][to + 1 - (1 << k)]);
        }
        leftmost_min(&self.keys, best, within(last, br * BLOCK) as u32) as usize
    }

    pub fn memory_size(&self) -> usize {
        self.keys.capacity() * 8
            + self.stacks.capacity() * 8
            + self.table.iter().map(|l| l.capacity() * 4).sum::<usize>()
    }
}

/// Of positions `p <= q`, the one with the smaller key; `p` on a tie.
fn leftmost_min(keys: &[u64], p: u32, q: u32) -> u32 {
    match keys[q as usize].cmp(&keys[p as usize]) {
        Ordering::Less => q,
        _ => p,
    }
}

/// Distinct values in any range of an index's value column.
///
/// Per position `i`: `prev1[i]` is one more than the position of the
/// previous event of `i`'s run with the same value (0 when none; `n + 1`
/// when `i` is null, so it never counts), `next[i]` the position of the
/// next one (`u32::MAX` when none; 0 when null). The answer for `[a, b)` is
/// the number of `i` there with `prev1[i] <= a`, which a wavelet matrix
/// over `prev1` counts in `2 log2(n)` rank steps. When a key's probes move
/// forward (time order), [`DistinctCounts::step`] instead slides the key's
/// previous window to the new one, an event at a time, while that is
/// cheaper than counting afresh.
#[derive(Debug)]
pub struct DistinctCounts {
    prev1: Vec<u32>,
    next: Vec<u32>,
    wavelet: Wavelet,
    /// Events a slide may cross before a fresh count is cheaper.
    slide_limit: usize,
}

impl DistinctCounts {
    /// `same[i]`: the previous position in `i`'s run with the same value,
    /// `Some(None)` when there is none, `None` when `i` is null.
    pub fn new(same: Vec<Option<Option<u32>>>) -> Self {
        let n = same.len();
        let none_counts = n as u32 + 1;
        let mut prev1 = Vec::with_capacity(n);
        let mut next = vec![u32::MAX; n];
        for (i, s) in same.iter().enumerate() {
            prev1.push(match s {
                None => {
                    next[i] = 0;
                    none_counts
                }
                Some(None) => 0,
                Some(Some(p)) => {
                    next[*p as usize] = i as u32;
                    p + 1
                }
            });
        }
        let wavelet = Wavelet::new(&prev1, u64::from(none_counts));
        let slide_limit = 4 * wavelet.levels.len();
        DistinctCounts {
            prev1,
            next,
            wavelet,
            slide_limit,
        }
    }

    /// Distinct values at positions `a..b`, counted afresh.
    pub fn count(&self, a: usize, b: usize) -> usize {
        if a >= b {
            return 0;
        }
        self.wavelet.count_less(a, b, a as u64 + 1)
    }

    /// Distinct values at `a..b`, given `state`, the last window `[a0, b0)`
    /// and its count for the same key, which it updates. From a window
    /// that lies at or before this one, the ends slide forward: an event
    /// entering at `i` is new when `prev1[i] <= a0`, one leaving at `i`
    /// goes when the value has no later event before `b`. A move back, or
    /// one that would cross more than `slide_limit` events, counts afresh.
    pub fn step(&self, state: &mut [u32; 3], a: usize, b: usize) -> usize {
        let [a0, b0, c0] = state.map(|x| x as usize);
        let (a0, b0, c0) = if a0 < b0 && a0 <= a && b0 <= b {
            (a0, b0, c0)
        } else {
            (a, a, 0)
        };
        let count = if (b - b0) + (a - a0) <= self.slide_limit {
            let mut c = c0;
            for i in b0..b {
                c += usize::from(self.prev1[i] as usize <= a0);
            }
            for i in a0..a {
                c -= usize::from(self.next[i] as usize >= b);
            }
            c
        } else {
            self.count(a, b)
        };
        *state = [a as u32, b as u32, count as u32];
        count
    }

    pub fn memory_size(&self) -> usize {
        self.prev1.capacity() * 4 + self.next.capacity() * 4 + self.wavelet.memory_size()
    }
}

/// A wavelet matrix over values below `2^levels`: how many values in a
/// position range are below `x`, in one pair of rank queries per level.
#[derive(Debug)]
struct Wavelet {
    /// From the top bit down: the bits of the values in that level's order,
    /// and how many are 0.
    levels: Vec<(RankBits, usize)>,
}

impl Wavelet {
    fn new(values: &[u32], largest: u64) -> Self {
        let bits = (u64::BITS - largest.leading_zeros()) as usize;
        let mut current = values.to_vec();
        let mut next = Vec::with_capacity(values.len());
        let mut levels = Vec::with_capacity(bits);
        for level in (0..bits).rev() {
            let set = |v: u32| (v >> level) & 1 == 1;
            let rank = RankBits::new(current.iter().map(|&v| set(v)), current.len());
            next.clear();
            next.extend(current.iter().copied().filter(|&v| !set(v)));
            let zeros = next.len();
            next.extend(current.iter().copied().filter(|&v| set(v)));
            std::mem::swap(&mut current, &mut next);
            levels.push((rank, zeros));
        }
        Wavelet { levels }
    }

    /// Values at positions `a..b` below `x` (`x < 2^levels`).
    fn count_less(&self, mut a: usize, mut b: usize, x: u64) -> usize {
        let bits = self.levels.len();
        let mut below = 0;
        for (k, (rank, zeros)) in self.levels.iter().enumerate() {
            let (ra, rb) = (rank.ones_before(a), rank.ones_before(b));
            if (x >> (bits - 1 - k)) & 1 == 1 {
                below += (b - a) - (rb - ra);
                a = zeros + ra;
                b = zeros + rb;
            } else {
                a -= ra;
                b -= rb;
            }
        }
        below
    }

    fn memory_size(&self) -> usize {
        self.levels.iter().map(|(r, _)| r.memory_size()).sum()
    }
}

/// Bits with the count of ones before any position in O(1).
#[derive(Debug)]
struct RankBits {
    words: Vec<u64>,
    /// Ones before each word.
    before: Vec<u32>,
}

impl RankBits {
    fn new(bits: impl Iterator<Item = bool>, n: usize) -> Self {
        let mut words = vec![0u64; n / 64 + 1];
        for (i, b) in bits.enumerate() {
            words[i / 64] |= u64::from(b) << (i % 64);
        }
        let mut before = Vec::with_capacity(words.len());
        let mut ones = 0u32;
        for w in &words {
            before.push(ones);
            ones += w.count_ones();
        }
        RankBits { words, before }
    }

    fn ones_before(&self, i: usize) -> usize {
        let (w, bit) = (i / 64, i % 64);
        let mask = (1u64 << bit) - 1;
        self.before[w] as usize + (self.words[w] & mask).count_ones() as usize
    }

    fn memory_size(&self) -> usize {
        self.words.capacity() * 8 + self.before.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // The spec oracle's exact sum (Python's `math.fsum`), written
    // independently of [`ExactSums`].
    mod exact_sum {
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/exact_sum.rs"
        ));
    }
    use exact_sum::exact_sum as fsum;

    fn value() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            prop::sample::select(vec![
                -0.0, 0.0, 0.1, 0.5, 1.0, 2.5, -1.5, 1e16, -1e16, 3.0, 1e-300, -1e-300, 1e300,
                -1e300, 5e-324, 1e308, 1.7e308,
            ])
            .prop_map(Some),
            (-1e6f64..1e6).prop_map(Some),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(Some),
        ]
    }

    fn scan_sum(values: &[Option<f64>], a: usize, b: usize) -> Option<f64> {
        let xs: Vec<f64> = values[a..b].iter().flatten().copied().collect();
        if xs.iter().any(|x| x.is_nan())
            || (xs.contains(&f64::INFINITY) && xs.contains(&f64::NEG_INFINITY))
        {
            return Some(f64::NAN);
        }
        if let Some(&inf) = xs.iter().find(|x| x.is_infinite()) {
            return Some(inf);
        }
        let sum = fsum(&xs);
        if sum.is_finite() {
            return Some(sum);
        }
        // fsum's partials overflow near the largest float; scaling every
        // value by 2^-16 keeps them finite (60 values of at most 2^1024
        // sum below 2^1014), and is exact unless a value has set bits below
        // 2^-1058 (then the scan has no answer: `None`). The scaled sum,
        // correctly rounded, times 2^16 is the sum correctly rounded, or
        // infinity when that overflows.
        const SCALE: f64 = 65536.0;
        if xs.iter().any(|&x| (x / SCALE) * SCALE != x) {
            return None;
        }
        let scaled = fsum(&xs.iter().map(|x| x / SCALE).collect::<Vec<_>>());
        Some(scaled * SCALE)
    }

    #[test]
    fn rounding_matches_the_hardware_conversion() {
        for (m, e) in [
            (1u128, 0),
            ((1 << 53) + 1, 0),
            ((1 << 53) + 3, 0),
            (u128::MAX >> 1, -70),
            (12345678901234567890123456789, -40),
        ] {
            let expected = (m as f64) * 2f64.powi(e);
            let got = round_to_f64(false, &[m as u64, (m >> 64) as u64], e);
            assert_eq!(got.to_bits(), expected.to_bits(), "{m} * 2^{e}");
        }
        // Subnormals round at 2^-1074, ties to even.
        assert_eq!(round_to_f64(false, &[1], -1075), 0.0);
        assert_eq!(round_to_f64(false, &[3], -1075), 2.0 * 5e-324);
        assert_eq!(round_to_f64(true, &[1], -1074), -5e-324);
        assert_eq!(round_to_f64(false, &[1], 1024), f64::INFINITY);
        assert_eq!(round_to_f64(false, &[(1 << 53) - 1], 971), f64::MAX);
        assert_eq!(round_to_f64(false, &[(1 << 54) - 1], 970), f64::INFINITY);
    }

    proptest! {
        #[test]
        fn rounding_any_i128_matches_the_hardware(m in any::<u128>(), e in -900i32..800) {
            let expected = (m as f64) * 2f64.powi(e);
            prop_assume!(expected.is_finite() && (expected == 0.0 || expected.abs() >= f64::MIN_POSITIVE));
            let got = round_to_f64(false, &[m as u64, (m >> 64) as u64], e);
            prop_assert_eq!(got.to_bits(), expected.to_bits());
        }

        #[test]
        fn exact_sums_match_an_exact_scan(
            values in prop::collection::vec(value(), 0..60),
            specials in prop::collection::vec((0usize..60, prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY])), 0..3),
            ranges in prop::collection::vec((0usize..61, 0usize..61), 1..30),
        ) {
            let mut values = values;
            for (i, x) in specials {
                if i < values.len() {
                    values[i] = Some(x);
                }
            }
            let sums = ExactSums::new(values.len(), |i| values[i]);
            for (a, b) in ranges {
                let (a, b) = (a.min(values.len()), b.min(values.len()));
                let (a, b) = (a.min(b), a.max(b));
                let Some(expected) = scan_sum(&values, a, b) else { continue };
                let got = sums.sum(a, b);
                prop_assert!(
                    got.to_bits() == expected.to_bits() || (got.is_nan() && expected.is_nan()),
                    "[{}, {}) of {:?}: {} against {}", a, b, values, got, expected
                );
            }
        }

        #[test]
        fn range_min_is_the_leftmost_minimum(
            keys in prop::collection::vec(0u64..6, 1..400),
            ranges in prop::collection::vec((0usize..400, 1usize..400), 1..60),
        ) {
            let rmq = RangeMin::new(keys.clone());
            for (l, len) in ranges {
                let l = l % keys.len();
                let r = (l + len).min(keys.len());
                let expected = (l..r).min_by_key(|&i| (keys[i], i)).unwrap();
                prop_assert_eq!(rmq.query(l, r), expected, "[{}, {})", l, r);
            }
        }

        #[test]
        fn distinct_counts_match_a_scan_in_any_probe_order(
            runs in prop::collection::vec(prop::collection::vec(prop::option::weighted(0.9, 0u8..5), 0..150), 1..4),
            probes in prop::collection::vec((0usize..4, 0usize..160, 0usize..160), 1..80),
            sorted in any::<bool>(),
        ) {
            let values: Vec<Option<u8>> = runs.iter().flatten().copied().collect();
            let mut starts = vec![0];
            for r in &runs {
                starts.push(starts.last().unwrap() + r.len());
            }
            let mut same = Vec::new();
            for w in starts.windows(2) {
                for i in w[0]..w[1] {
                    same.push(values[i].map(|v| (w[0]..i).rev().find(|&j| values[j] == Some(v)).map(|j| j as u32)));
                }
            }
            let distinct = DistinctCounts::new(same);
            let mut probes: Vec<(usize, usize, usize)> = probes
                .into_iter()
                .map(|(k, x, y)| {
                    let k = k % runs.len();
                    let len = runs[k].len();
                    let (x, y) = (x.min(len), y.min(len));
                    (k, starts[k] + x.min(y), starts[k] + x.max(y))
                })
                .collect();
            if sorted {
                probes.sort_by_key(|&(_, a, b)| (b, a));
            }
            let mut states = vec![[0u32; 3]; runs.len()];
            for (k, a, b) in probes {
                let expected = values[a..b].iter().flatten().collect::<std::collections::BTreeSet<_>>().len();
                prop_assert_eq!(distinct.count(a, b), expected, "count [{}, {})", a, b);
                prop_assert_eq!(distinct.step(&mut states[k], a, b), expected, "step [{}, {})", a, b);
            }
        }
    }

    #[test]
    fn a_long_slide_and_a_fresh_count_agree() {
        // 5,000 events of 37 values in one run: windows move forward by a
        // few events (slides) and by thousands (fresh counts).
        let values: Vec<u32> = (0..5000u32).map(|i| (i * 7919) % 37).collect();
        let same = (0..values.len())
            .map(|i| {
                Some(
                    (0..i)
                        .rev()
                        .find(|&j| values[j] == values[i])
                        .map(|j| j as u32),
                )
            })
            .collect();
        let distinct = DistinctCounts::new(same);
        let mut state = [0u32; 3];
        for (a, b) in [
            (0, 10),
            (2, 30),
            (5, 4000),
            (100, 4001),
            (4990, 5000),
            (4999, 5000),
        ] {
            let expected = values[a..b]
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            assert_eq!(distinct.step(&mut state, a, b), expected, "[{a}, {b})");
        }
    }
}
