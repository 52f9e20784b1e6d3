//! The seeded marketplace simulator behind `leakless generate`.
//!
//! The model, each point checked by a test:
//! - listing popularity is Zipf-like (weight `1 / rank^s`, ranks shuffled
//!   over listing ids, `s` chosen for the listing count so that the top 1 %
//!   of listings get about 45 % of the weight at every size);
//! - 80 % of listings exist before the start, 20 % are created during the
//!   period; no impression of a listing precedes its `created_ts`;
//! - traffic follows the day (busiest mid-afternoon UTC, quietest at night);
//! - the click probability depends on price (as of the impression),
//!   category and listing age;
//! - 40 % of listings change price one to three times during the period:
//!   `listing_prices` has every version with its `valid_from`, while
//!   `listings` shows the price now, a snapshot that postdates most
//!   impressions (what an as-of lookup avoids);
//! - a click follows its impression by minutes usually, hours sometimes, and
//!   more than 24 h for a few percent; 1 % arrive in the same second (ties);
//!   some clicks are organic (no impression, no user);
//! - clicks after the period's end are cut off, as in a real log extract.
//!
//! Generation goes day by day: a day's impressions are drawn and sorted,
//! their clicks go to a min-heap and are released once no later impression
//! can precede them; a second thread formats and writes each day's rows
//! while the next day is drawn. Every random draw happens on the first
//! thread, in a fixed order. Memory is the per-listing state plus about
//! three days of pending clicks and one day of unresolved labels.
//!
//! Invariant: the same [`Params`] give the same bytes; nothing reads the
//! clock or the thread count.

pub(crate) mod rng;
mod sink;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::columns::Value;
use crate::spec::ValueType;
use crate::time::{MICROS_PER_DAY, MICROS_PER_SECOND, format_rfc3339};
use rng::{AliasTable, Rng};
use sink::TableSink;

pub use sink::OutputFormat;

const CATEGORIES: [(&str, f64); 8] = [
    ("home", 1.0),
    ("fashion", 1.3),
    ("electronics", 0.8),
    ("books", 1.1),
    ("toys", 1.2),
    ("garden", 0.7),
    ("sports", 0.9),
    ("beauty", 1.4),
];

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub impressions: u64,
    pub listings: u64,
    pub users: u64,
    pub days: u32,
    /// First day of the period (UTC midnight, microseconds).
    #[serde(serialize_with = "as_rfc3339")]
    pub start: i64,
    pub seed: u64,
    pub format: OutputFormat,
}

fn as_rfc3339<S: serde::Serializer>(micros: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*micros))
}

impl Params {
    /// Defaults scaled from the impression count: listings about 1 %, users
    /// about 10 %.
    pub fn new(impressions: u64) -> Self {
        Params {
            impressions,
            listings: (impressions / 100).max(10),
            users: (impressions / 10).max(10),
            days: 30,
            start: crate::time::parse_timestamp_micros(b"2026-10-01T00:00:00Z")
                .expect("a valid date"),
            seed: 42,
            format: OutputFormat::Csv,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.listings == 0 || self.users == 0 || self.days == 0 {
            return Err(Error::Invalid(
                "listings, users and days must be at least 1".into(),
            ));
        }
        if self.start.rem_euclid(MICROS_PER_DAY) != 0 {
            return Err(Error::Invalid("the start must be a UTC midnight".into()));
        }
        Ok(())
    }

    fn end(&self) -> i64 {
        self.start + i64::from(self.days) * MICROS_PER_DAY
    }
}

/// What was generated, written to `_generator.json` with the parameters.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Totals {
    pub impressions: u64,
    pub clicks: u64,
    pub attributed_clicks: u64,
    pub organic_clicks: u64,
    /// Attributed clicks that came more than 24 h after their impression.
    pub clicks_after_24h: u64,
    /// Attributed clicks in the same second as their impression.
    pub clicks_at_impression_time: u64,
    /// Clicks dropped because they fell after the period's end.
    pub clicks_cut_at_end: u64,
    pub listings: u64,
    pub listings_created_during_period: u64,
    /// Rows of `listing_prices`: every listing's first price and its changes.
    pub price_versions: u64,
    /// Share of impressions that went to the top 1 % of listings.
    pub top_1pct_listing_impression_share: f64,
    /// Share of impressions whose own click came within 24 h (the CTR).
    pub own_click_within_24h_rate: f64,
    /// The watermark to build with: the end of the period.
    pub watermark: String,
    /// Impressions with `t + 24h <= watermark` (the ones `leakless build
    /// --watermark` keeps).
    pub mature_impressions: u64,
    /// Share of mature impressions whose listing got any click in
    /// `[t, t + 24h)`: the label rate `leakless build` should find.
    pub label_rate_24h: f64,
}

/// The files written.
#[derive(Debug, Clone)]
pub struct Generated {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
struct GeneratorFile<'a> {
    tool: &'static str,
    version: &'static str,
    params: &'a Params,
    totals: &'a Totals,
}

struct Listing {
    created: i64,
    /// Price versions `(valid_from, price)` in time order, the first from
    /// `created`: a price applies from its `valid_from` on.
    prices: Vec<(i64, f64)>,
    category: usize,
}

impl Listing {
    /// The price in force at `t`.
    fn price_at(&self, t: i64) -> f64 {
        let i = self.prices.partition_point(|p| p.0 <= t);
        self.prices[i.saturating_sub(1)].1
    }

    /// The price now (at the end of the period): what a snapshot shows.
    fn current_price(&self) -> f64 {
        self.prices.last().map_or(0.0, |p| p.1)
    }
}

/// Price changes of a listing during `[start, end)`: 40 % of listings change
/// price one to three times, by -30 % to +30 % each. Drawn from their own
/// stream so that the rest of the data does not depend on them.
fn price_versions(
    rng: &mut Rng,
    created: i64,
    price: f64,
    start: i64,
    end: i64,
) -> Vec<(i64, f64)> {
    let mut versions = vec![(created, price)];
    if rng.uniform() >= 0.4 {
        return versions;
    }
    let from = created.max(start) + MICROS_PER_SECOND;
    if from >= end {
        return versions;
    }
    let mut times: Vec<i64> = (0..1 + rng.below(3))
        .map(|_| {
            let t = from + (rng.uniform() * (end - from) as f64) as i64;
            t - t.rem_euclid(MICROS_PER_SECOND)
        })
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut current = price;
    for t in times {
        current = ((current * (0.7 + 0.6 * rng.uniform())) * 100.0).round() / 100.0;
        current = current.max(0.5);
        versions.push((t, current));
    }
    versions
}

/// A click waiting in the heap: (time, sequence, listing, user or -1).
type Pending = Reverse<(i64, u64, i64, i64)>;

/// Writes `impressions`, `clicks`, `listings` and `listing_prices` files and `_generator.json`
/// into `dir` (created if needed).
pub fn generate(params: &Params, dir: &Path) -> Result<Generated> {
    params.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let mut rng = Rng::new(params.seed);
    let (start, end) = (params.start, params.end());
    let n_listings = params.listings as usize;

    // Listings: a popularity rank each, the most popular created before the start.
    let mut ranks: Vec<usize> = (0..n_listings).collect();
    rng.shuffle(&mut ranks);
    let exponent = zipf_exponent(n_listings, TOP_1PCT_SHARE);
    let weights: Vec<f64> = ranks
        .iter()
        .map(|&r| 1.0 / ((r + 1) as f64).powf(exponent))
        .collect();
    let popularity = AliasTable::new(&weights);
    let mut totals = Totals::default();
    let mut price_rng = Rng::new(params.seed ^ 0x5052_4943_4553);
    let listings: Vec<Listing> = (0..n_listings)
        .map(|i| {
            let during = ranks[i] != 0 && rng.uniform() < 0.2;
            let created = if during {
                totals.listings_created_during_period += 1;
                start + (rng.uniform() * (end - start) as f64) as i64
            } else {
                start - (rng.uniform() * 180.0 * MICROS_PER_DAY as f64) as i64 - MICROS_PER_SECOND
            };
            let created = created - created.rem_euclid(MICROS_PER_SECOND);
            let price = (((3.5 + 1.0 * rng.normal()).exp() * 100.0).round() / 100.0).max(0.5);
            Listing {
                created,
                prices: price_versions(&mut price_rng, created, price, start, end),
                category: rng.below(CATEGORIES.len() as u64) as usize,
            }
        })
        .collect();
    totals.listings = params.listings;
    let mut files = Vec::new();
    let mut listing_sink =
        TableSink::create(dir, "listings", params.format, &columns_of("listings"))?;
    for (i, l) in listings.iter().enumerate() {
        listing_sink.write(&[
            Value::Int(i as i64 + 1),
            Value::Str(CATEGORIES[l.category].0.into()),
            Value::Float(l.current_price()),
            Value::Ts(l.created),
        ])?;
    }
    files.push(listing_sink.finish()?);
    // Every price a listing had, from when: `valid_from` for an as-of
    // lookup, where the listings' snapshot price would leak later prices.
    let price_columns = [
        ("listing_id".to_owned(), ValueType::Int64),
        ("price".to_owned(), ValueType::Float64),
        ("valid_from".to_owned(), ValueType::Timestamp),
    ];
    let mut price_sink = TableSink::create(dir, "listing_prices", params.format, &price_columns)?;
    for (i, l) in listings.iter().enumerate() {
        for &(valid_from, price) in &l.prices {
            price_sink.write(&[
                Value::Int(i as i64 + 1),
                Value::Float(price),
                Value::Ts(valid_from),
            ])?;
            totals.price_versions += 1;
        }
    }
    files.push(price_sink.finish()?);

    let impression_sink = TableSink::create(
        dir,
        "impressions",
        params.format,
        &columns_of("impressions"),
    )?;
    // Clicks also carry the user, as real click logs often do.
    let mut click_columns = columns_of("clicks");
    click_columns.push(("user_id".into(), ValueType::Int64));
    let click_sink = TableSink::create(dir, "clicks", params.format, &click_columns)?;

    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut labels = Labels::new(n_listings, end);
    let mut listing_impressions = vec![0u64; n_listings];
    let mut next_id = 1i64;
    let organic_per_impression = 0.004;
    // Rows are formatted and written on a second thread, a day at a time,
    // while the next day is drawn: at 10 M this took generation from 2.7 s
    // on one thread (about what `build` needs) to 1.4 s, the same bytes.
    let (day_tx, day_rx) = std::sync::mpsc::sync_channel::<DayRows>(2);
    let written = std::thread::scope(|scope| -> Result<Vec<PathBuf>> {
        let writer = scope.spawn(move || write_days(day_rx, impression_sink, click_sink));
        for day in 0..params.days {
            let day_start = start + i64::from(day) * MICROS_PER_DAY;
            let count = params.impressions / u64::from(params.days)
                + u64::from(u64::from(day) < params.impressions % u64::from(params.days));
            let mut times: Vec<i64> = (0..count)
                .map(|_| diurnal_time(&mut rng, day_start))
                .collect();
            times.sort_unstable();
            let mut day_rows: Vec<(i64, usize, i64)> = Vec::with_capacity(times.len());
            for t in times {
                let listing = pick_listing(&mut rng, &popularity, &listings, t);
                let user = rng.below(params.users) as i64 + 1;
                day_rows.push((t, listing, user));
                // Organic clicks, spread like traffic.
                if rng.uniform() < organic_per_impression {
                    let l = popularity.sample(&mut rng);
                    let c = t + (rng.uniform() * 3600.0) as i64 * MICROS_PER_SECOND;
                    heap.push(Reverse((c, sequence, l as i64, -1)));
                    sequence += 1;
                    totals.organic_clicks += 1;
                }
            }
            let first_id = next_id;
            let mut day_clicks = Vec::new();
            for &(t, listing, user) in &day_rows {
                let l = &listings[listing];
                next_id += 1;
                totals.impressions += 1;
                listing_impressions[listing] += 1;
                if rng.uniform() < click_probability(l, t) {
                    let delay = click_delay(&mut rng);
                    if delay >= MICROS_PER_DAY {
                        totals.clicks_after_24h += 1;
                    } else {
                        totals.own_click_within_24h_rate += 1.0;
                    }
                    if delay == 0 {
                        totals.clicks_at_impression_time += 1;
                    }
                    totals.attributed_clicks += 1;
                    heap.push(Reverse((t + delay, sequence, listing as i64, user)));
                    sequence += 1;
                }
            }
            // Impressions and clicks of this day, merged in time order (an
            // impression before a click at the same time), resolve labels.
            let day_end = day_start + MICROS_PER_DAY;
            let mut rows = day_rows.iter().peekable();
            while let Some(Reverse((c, _, listing, user))) = heap.peek().copied() {
                if c >= day_end {
                    break;
                }
                heap.pop();
                while let Some(&&(t, l, _)) = rows.peek() {
                    if t > c {
                        break;
                    }
                    labels.impression(l, t);
                    rows.next();
                }
                if c >= end {
                    totals.clicks_cut_at_end += 1;
                    continue;
                }
                labels.click(listing as usize, c);
                day_clicks.push((listing, c, user));
                totals.clicks += 1;
            }
            for &(t, l, _) in rows {
                labels.impression(l, t);
            }
            let rows = DayRows {
                first_id,
                impressions: day_rows,
                clicks: day_clicks,
            };
            if day_tx.send(rows).is_err() {
                break; // The writer failed; its error is returned below.
            }
        }
        drop(day_tx);
        writer
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("the writer thread panicked".into())))
    })?;
    totals.clicks_cut_at_end += heap.len() as u64;
    files.extend(written);

    let (mature, ones) = labels.finish();
    totals.mature_impressions = mature;
    totals.label_rate_24h = ratio(ones, mature);
    totals.own_click_within_24h_rate =
        ratio(totals.own_click_within_24h_rate as u64, totals.impressions);
    totals.watermark = format_rfc3339(end);
    let mut per_listing = listing_impressions;
    per_listing.sort_unstable_by(|a, b| b.cmp(a));
    let top = per_listing.len().div_ceil(100);
    totals.top_1pct_listing_impression_share =
        ratio(per_listing[..top].iter().sum(), totals.impressions);

    let meta = GeneratorFile {
        tool: crate::write::manifest::TOOL,
        version: env!("CARGO_PKG_VERSION"),
        params,
        totals: &totals,
    };
    let path = dir.join("_generator.json");
    let mut json = serde_json::to_vec_pretty(&meta).expect("serialisable");
    json.push(b'\n');
    std::fs::write(&path, json).map_err(|e| Error::io("writing", &path, e))?;
    Ok(Generated {
        dir: dir.to_owned(),
        files,
        totals,
    })
}

/// The share of impressions the top 1 % of listings should get.
const TOP_1PCT_SHARE: f64 = 0.45;

/// The Zipf exponent `s` (weights `1 / rank^s`) at which the top 1 % of `n`
/// ranks hold `share` of the weight, so that the tail looks the same at
/// every size. Bisection over `[0.3, 2.5]`.
fn zipf_exponent(n: usize, share: f64) -> f64 {
    let top = n.div_ceil(100);
    let share_at = |s: f64| {
        let weights = (1..=n).map(|r| (r as f64).powf(-s));
        let (mut head, mut all) = (0.0, 0.0);
        for (i, w) in weights.enumerate() {
            all += w;
            if i < top {
                head += w;
            }
        }
        head / all
    };
    let (mut lo, mut hi) = (0.3, 2.5);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if share_at(mid) < share {
            lo = mid
        } else {
            hi = mid
        }
    }
    (lo + hi) / 2.0
}

/// One day of generated rows for the writer thread.
struct DayRows {
    first_id: i64,
    /// (time, listing index, user)
    impressions: Vec<(i64, usize, i64)>,
    /// (listing index, time, user or -1)
    clicks: Vec<(i64, i64, i64)>,
}

/// Writes days of rows as they come; returns the two files.
fn write_days(
    days: std::sync::mpsc::Receiver<DayRows>,
    mut impressions: TableSink,
    mut clicks: TableSink,
) -> Result<Vec<PathBuf>> {
    for day in days {
        for (i, &(t, listing, user)) in day.impressions.iter().enumerate() {
            impressions.write(&[
                Value::Int(day.first_id + i as i64),
                Value::Int(user),
                Value::Int(listing as i64 + 1),
                Value::Ts(t),
            ])?;
        }
        for &(listing, c, user) in &day.clicks {
            let user = if user < 0 {
                Value::Null
            } else {
                Value::Int(user)
            };
            clicks.write(&[Value::Int(listing + 1), Value::Ts(c), user])?;
        }
    }
    Ok(vec![impressions.finish()?, clicks.finish()?])
}

/// The columns the shorthand's built-in spec reads from `source`, in its
/// order: the generator writes exactly what ingest expects.
fn columns_of(source: &str) -> Vec<(String, ValueType)> {
    let spec = crate::spec::marketplace(PathBuf::new(), PathBuf::new(), PathBuf::new());
    spec.source(source)
        .and_then(|s| s.columns.as_ref())
        .expect("the built-in spec declares its columns")
        .iter()
        .map(|c| (c.name.clone(), c.ty.value_type()))
        .collect()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        (a as f64 / b as f64 * 1e6).round() / 1e6
    }
}

/// A whole-second time in the day, busiest around 15:00 UTC, quietest
/// around 03:00 (a 9:1 ratio).
fn diurnal_time(rng: &mut Rng, day_start: i64) -> i64 {
    loop {
        let second = rng.below(86_400) as i64;
        let hour = second as f64 / 3600.0;
        let density = 0.55 + 0.45 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin();
        if rng.uniform() < density {
            return day_start + second * MICROS_PER_SECOND;
        }
    }
}

/// A listing by popularity among those created by `t`.
fn pick_listing(rng: &mut Rng, popularity: &AliasTable, listings: &[Listing], t: i64) -> usize {
    for _ in 0..64 {
        let l = popularity.sample(rng);
        if listings[l].created <= t {
            return l;
        }
    }
    // The most popular listing exists before the start.
    popularity.most_likely()
}

/// Cheap, new listings in popular categories get more clicks.
fn click_probability(l: &Listing, t: i64) -> f64 {
    let age_days = (t - l.created) as f64 / MICROS_PER_DAY as f64;
    let age = if age_days < 7.0 { 1.8 } else { 1.0 };
    let price = (40.0 / (l.price_at(t) + 20.0)).powf(0.6);
    (0.025 * age * price * CATEGORIES[l.category].1).min(0.5)
}

/// Whole seconds: 1 % at once, most within minutes, some within hours, a few
/// percent one to three days later.
fn click_delay(rng: &mut Rng) -> i64 {
    let u = rng.uniform();
    let seconds = if u < 0.01 {
        0.0
    } else if u < 0.87 {
        rng.exponential(300.0)
    } else if u < 0.96 {
        rng.exponential(3.0 * 3600.0)
    } else {
        86_400.0 + rng.uniform() * 2.0 * 86_400.0
    };
    (seconds as i64).max(if u < 0.01 { 0 } else { 1 }) * MICROS_PER_SECOND
}

/// Streams the label of every impression: per listing, the impressions whose
/// 24 h window has seen no click yet.
struct Labels {
    pending: Vec<VecDeque<i64>>,
    end: i64,
    mature: u64,
    ones: u64,
}

impl Labels {
    fn new(listings: usize, end: i64) -> Self {
        Labels {
            pending: vec![VecDeque::new(); listings],
            end,
            mature: 0,
            ones: 0,
        }
    }

    fn is_mature(&self, t: i64) -> bool {
        t + MICROS_PER_DAY <= self.end
    }

    fn impression(&mut self, listing: usize, t: i64) {
        self.pending[listing].push_back(t);
    }

    /// A click at `c`: pending impressions with `t + 24h <= c` are 0, those
    /// with `t <= c` are 1.
    fn click(&mut self, listing: usize, c: i64) {
        while let Some(&t) = self.pending[listing].front() {
            if t > c {
                break;
            }
            self.pending[listing].pop_front();
            if self.is_mature(t) {
                self.mature += 1;
                self.ones += u64::from(c < t + MICROS_PER_DAY);
            }
        }
    }

    fn finish(mut self) -> (u64, u64) {
        for queue in std::mem::take(&mut self.pending) {
            for t in queue {
                if self.is_mature(t) {
                    self.mature += 1;
                }
            }
        }
        (self.mature, self.ones)
    }
}
