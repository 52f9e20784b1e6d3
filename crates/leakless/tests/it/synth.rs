//! The marketplace simulator: determinism and each property of its model,
//! checked on the files it writes.

use std::collections::HashMap;
use std::path::Path;

use leakless::synth::{OutputFormat, Params, Totals, generate};
use leakless::time::{MICROS_PER_DAY, parse_timestamp_micros};

const HOUR: i64 = 3_600_000_000;

fn params(impressions: u64, seed: u64, format: OutputFormat) -> Params {
    let mut p = Params::new(impressions);
    p.seed = seed;
    p.format = format;
    p
}

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    for format in [OutputFormat::Csv, OutputFormat::Parquet] {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        generate(&params(20_000, 1, format), dirs[0].path()).unwrap();
        generate(&params(20_000, 1, format), dirs[1].path()).unwrap();
        generate(&params(20_000, 2, format), dirs[2].path()).unwrap();
        let (a, b, c) = (
            read_all(dirs[0].path()),
            read_all(dirs[1].path()),
            read_all(dirs[2].path()),
        );
        assert_eq!(a.len(), 5, "four tables and _generator.json");
        assert!(a == b, "same seed, different bytes ({format:?})");
        for (x, y) in a.iter().zip(&c) {
            assert_ne!(x.1, y.1, "{} did not change with the seed", x.0);
        }
    }
}

/// The generated CSV tables, parsed.
struct Market {
    /// (id, user, listing, t)
    impressions: Vec<(i64, i64, i64, i64)>,
    /// (listing, t, user)
    clicks: Vec<(i64, i64, Option<i64>)>,
    /// listing -> (price, created)
    listings: HashMap<i64, (f64, i64)>,
    totals: Totals,
    start: i64,
}

fn rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn ts(text: &str) -> i64 {
    parse_timestamp_micros(text.as_bytes()).unwrap_or_else(|| panic!("bad timestamp {text:?}"))
}

fn market() -> Market {
    let dir = tempfile::tempdir().unwrap();
    let p = params(150_000, 7, OutputFormat::Csv);
    let totals = generate(&p, dir.path()).unwrap().totals;
    let impressions = rows(&dir.path().join("impressions.csv"))
        .iter()
        .map(|r| {
            (
                r[0].parse().unwrap(),
                r[1].parse().unwrap(),
                r[2].parse().unwrap(),
                ts(&r[3]),
            )
        })
        .collect();
    let clicks = rows(&dir.path().join("clicks.csv"))
        .iter()
        .map(|r| (r[0].parse().unwrap(), ts(&r[1]), r[2].parse().ok()))
        .collect();
    let listings = rows(&dir.path().join("listings.csv"))
        .iter()
        .map(|r| (r[0].parse().unwrap(), (r[2].parse().unwrap(), ts(&r[3]))))
        .collect();
    Market {
        impressions,
        clicks,
        listings,
        totals,
        start: p.start,
    }
}

#[test]
fn the_generated_marketplace_has_the_modelled_properties() {
    let m = market();
    let n = m.impressions.len() as f64;
    assert_eq!(m.impressions.len(), 150_000);

    // Ids unique and rows in time order.
    assert!(
        m.impressions
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].3 <= w[1].3)
    );
    assert!(m.clicks.windows(2).all(|w| w[0].1 <= w[1].1));

    // Heavy-tailed popularity: the top 1 % of listings take 30-60 %.
    let mut per_listing: HashMap<i64, u64> = HashMap::new();
    for i in &m.impressions {
        *per_listing.entry(i.2).or_default() += 1;
    }
    let mut counts: Vec<u64> = per_listing.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top = counts[..m.listings.len().div_ceil(100)].iter().sum::<u64>() as f64 / n;
    assert!((0.30..=0.60).contains(&top), "top 1 % share {top}");
    assert!((top - m.totals.top_1pct_listing_impression_share).abs() < 1e-6);

    // Listings created over time, never shown before they exist.
    let during =
        m.listings.values().filter(|l| l.1 >= m.start).count() as f64 / m.listings.len() as f64;
    assert!(
        (0.10..=0.30).contains(&during),
        "created during the period: {during}"
    );
    assert!(m.impressions.iter().all(|i| m.listings[&i.2].1 <= i.3));

    // Diurnal: the busy afternoon has clearly more traffic than the night.
    let mut by_hour = [0u64; 24];
    for i in &m.impressions {
        by_hour[(i.3.rem_euclid(MICROS_PER_DAY) / HOUR) as usize] += 1;
    }
    let (day, night): (u64, u64) = (by_hour[13..18].iter().sum(), by_hour[1..6].iter().sum());
    assert!(day as f64 > 3.0 * night as f64, "by hour {by_hour:?}");
    let days = m
        .impressions
        .iter()
        .map(|i| i.3.div_euclid(MICROS_PER_DAY))
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(days.len(), 30);

    // A few percent click; organic clicks have no user.
    let attributed = m.clicks.iter().filter(|c| c.2.is_some()).count() as f64;
    let organic = m.clicks.len() as f64 - attributed;
    assert!(
        (0.01..=0.08).contains(&(attributed / n)),
        "click rate {}",
        attributed / n
    );
    assert!(
        organic > 0.02 * attributed && organic < 0.5 * attributed,
        "organic {organic}"
    );

    // Click-through differs between cheap and expensive, new and old listings.
    let mut clicks_per_listing: HashMap<i64, u64> = HashMap::new();
    for c in m.clicks.iter().filter(|c| c.2.is_some()) {
        *clicks_per_listing.entry(c.0).or_default() += 1;
    }
    let ctr = |keep: &dyn Fn(&(f64, i64)) -> bool| {
        let (mut shown, mut clicked) = (0u64, 0u64);
        for (id, l) in &m.listings {
            if keep(l) {
                shown += per_listing.get(id).copied().unwrap_or(0);
                clicked += clicks_per_listing.get(id).copied().unwrap_or(0);
            }
        }
        clicked as f64 / shown as f64
    };
    let mut prices: Vec<f64> = m.listings.values().map(|l| l.0).collect();
    prices.sort_by(f64::total_cmp);
    let median = prices[prices.len() / 2];
    let (cheap, dear) = (ctr(&|l| l.0 < median), ctr(&|l| l.0 >= median));
    assert!(cheap > 1.2 * dear, "cheap {cheap} vs expensive {dear}");
    let (new, old) = (
        ctr(&|l| l.1 >= m.start),
        ctr(&|l| l.1 < m.start - 7 * MICROS_PER_DAY),
    );
    assert!(new > 1.15 * old, "new {new} vs old {old}");

    // Delays: attribute each click to the latest impression of the same user
    // and listing at or before it.
    let mut seen: HashMap<(i64, i64), Vec<i64>> = HashMap::new();
    for i in &m.impressions {
        seen.entry((i.1, i.2)).or_default().push(i.3);
    }
    let delays: Vec<i64> = m
        .clicks
        .iter()
        .filter_map(|c| {
            let times = seen.get(&(c.2?, c.0))?;
            let before = times.partition_point(|&t| t <= c.1);
            (before > 0).then(|| c.1 - times[before - 1])
        })
        .collect();
    assert!(delays.len() as f64 > 0.95 * attributed);
    let share = |f: &dyn Fn(i64) -> bool| {
        delays.iter().filter(|&&d| f(d)).count() as f64 / delays.len() as f64
    };
    let within_hour = share(&|d| d < HOUR);
    let late = share(&|d| d >= MICROS_PER_DAY);
    let same_second = share(&|d| d == 0);
    assert!(within_hour > 0.6, "within an hour {within_hour}");
    assert!((0.01..=0.08).contains(&late), "after 24 h {late}");
    assert!(same_second > 0.003, "same second {same_second}");

    // Ties: clicks that share a timestamp with an impression of the listing.
    let shown_at: std::collections::HashSet<(i64, i64)> =
        m.impressions.iter().map(|i| (i.2, i.3)).collect();
    assert!(
        m.clicks
            .iter()
            .filter(|c| shown_at.contains(&(c.0, c.1)))
            .count()
            > 10
    );
}

#[test]
fn build_on_generated_data_finds_the_label_rate_the_generator_expects() {
    let dir = tempfile::tempdir().unwrap();
    for format in [OutputFormat::Csv, OutputFormat::Parquet] {
        let data = dir.path().join(format!("{format:?}"));
        let generated = generate(&params(60_000, 3, format), &data).unwrap();
        let ext = if format == OutputFormat::Csv {
            "csv"
        } else {
            "parquet"
        };
        let t = &generated.totals;
        let build = leakless::Build::new(
            data.join(format!("impressions.{ext}")),
            data.join(format!("clicks.{ext}")),
            data.join(format!("listings.{ext}")),
            data.join("dataset"),
        )
        .with_watermark(parse_timestamp_micros(t.watermark.as_bytes()));
        let summary = crate::common::runtime().block_on(build.execute()).unwrap();
        assert_eq!(summary.rows_written, t.mature_impressions);
        assert_eq!(
            summary.immature_held_back,
            t.impressions - t.mature_impressions
        );
        let rate = summary.positive_labels["clicked"] as f64 / summary.rows_written as f64;
        assert!(
            (rate - t.label_rate_24h).abs() < 1e-5,
            "built {rate}, generator {}",
            t.label_rate_24h
        );
        // The label is listing-level, so it is at least the own-click rate.
        assert!(rate >= t.own_click_within_24h_rate);
    }
}

#[test]
fn listing_prices_hold_every_version_and_listings_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = leakless::synth::Params::new(20_000);
    params.format = leakless::synth::OutputFormat::Csv;
    let generated = leakless::synth::generate(&params, dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("listing_prices.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("listing_id,price,valid_from"));
    let mut versions: std::collections::BTreeMap<i64, Vec<(String, f64)>> = Default::default();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        versions
            .entry(f[0].parse().unwrap())
            .or_default()
            .push((f[2].to_owned(), f[1].parse().unwrap()));
    }
    assert_eq!(
        versions.values().map(Vec::len).sum::<usize>() as u64,
        generated.totals.price_versions
    );
    let changed = versions.values().filter(|v| v.len() > 1).count() as f64;
    let share = changed / versions.len() as f64;
    assert!(
        (0.25..0.45).contains(&share),
        "share of listings with a price change: {share}"
    );
    let listings = std::fs::read_to_string(dir.path().join("listings.csv")).unwrap();
    for line in listings.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let id: i64 = f[0].parse().unwrap();
        let v = &versions[&id];
        // The first version starts at creation; versions are in time order;
        // the snapshot shows the latest price.
        assert_eq!(v[0].0, f[3]);
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "{v:?}");
        assert_eq!(v.last().unwrap().1, f[2].parse::<f64>().unwrap());
    }
}
