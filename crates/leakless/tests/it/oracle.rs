//! The whole build (ingest, operator, listings join, maturity, sort, write)
//! against a brute-force oracle written from docs/semantics.md, on random
//! tables with many equal timestamps, with 1, 2 and 8 partitions.

use leakless::time::{MICROS_PER_DAY, format_rfc3339, utc_date};
use proptest::prelude::*;

use crate::common::{Inputs, oracle_clicks, read_rows};

const HOUR: i64 = 3_600_000_000;

#[derive(Debug, Clone)]
struct Listing {
    id: i64,
    category: Option<&'static str>,
    price: Option<f64>,
    created: i64,
}

/// Times on a 6-hour grid (24 h boundaries and ties are common), sometimes
/// nudged by a microsecond.
fn time() -> impl Strategy<Value = i64> {
    (
        0i64..24,
        prop_oneof![4 => Just(0i64), 1 => Just(1), 1 => Just(-1)],
    )
        .prop_map(|(k, nudge)| 1_790_000_000_000_000 + k * 6 * HOUR + nudge)
}

/// A timestamp as CSV text, in UTC or with a +01:00 offset.
fn timestamp_text(t: i64, offset: bool) -> String {
    if offset {
        let local = format_rfc3339(t + HOUR);
        format!("{}+01:00", local.trim_end_matches('Z'))
    } else {
        format_rfc3339(t)
    }
}

fn listing() -> impl Strategy<Value = Listing> {
    (
        0i64..6,
        prop_oneof![Just(None), Just(Some("shoes")), Just(Some("books, rare"))],
        prop_oneof![Just(None), Just(Some(1.5)), Just(Some(250.0))],
        time(),
    )
        .prop_map(|(id, category, price, created)| Listing {
            id,
            category,
            price,
            created,
        })
}

fn expected_rows(
    impressions: &[(i64, i64, i64)],
    clicks: &[(i64, i64)],
    listings: &[Listing],
    watermark: i64,
) -> (Vec<String>, u64) {
    let mut rows = Vec::new();
    let mut held_back = 0;
    for (id, &(user, l, t)) in impressions.iter().enumerate() {
        if t + MICROS_PER_DAY > watermark {
            held_back += 1;
            continue;
        }
        let (prior, last24, clicked) = oracle_clicks(clicks, l, t);
        let meta = listings.iter().find(|x| x.id == l);
        let text = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        let line = format!(
            "dt={} {id} {user} {l} {} | {} {} {} | {prior} {last24} {clicked}",
            utc_date(t),
            format_rfc3339(t),
            text(meta.map(|m| (t - m.created).div_euclid(1_000_000).to_string())),
            text(meta.and_then(|m| m.price).map(|p| p.to_string())),
            text(meta.and_then(|m| m.category).map(str::to_owned)),
        );
        rows.push(((t, id as i64, user, l), line));
    }
    rows.sort_by_key(|r| r.0);
    (rows.into_iter().map(|r| r.1).collect(), held_back)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn build_matches_the_oracle(
        impressions in prop::collection::vec((0i64..3, 0i64..7, time(), any::<bool>()), 0..30),
        clicks in prop::collection::vec((0i64..7, time(), any::<bool>()), 1..50),
        listings in prop::collection::vec(listing(), 0..6),
        watermark in prop::option::of(time()),
        files in 1usize..4,
    ) {
        let mut seen = std::collections::BTreeSet::new();
        let listings: Vec<Listing> = listings.into_iter().filter(|l| seen.insert(l.id)).collect();

        let inputs = Inputs::new("", "", "");
        // Impressions spread over several files: several input partitions.
        let dir = inputs.path("impressions");
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            let mut text = String::from("impression_id,user_id,listing_id,impression_ts\n");
            for (id, (user, l, t, offset)) in impressions.iter().enumerate().filter(|(i, _)| i % files == f) {
                text += &format!("{id},{user},{l},{}\n", timestamp_text(*t, *offset));
            }
            std::fs::write(dir.join(format!("part-{f}.csv")), text).unwrap();
        }
        let mut text = String::from("user_id,click_ts,listing_id\n");
        for (l, t, offset) in &clicks {
            text += &format!(",{},{l}\n", timestamp_text(*t, *offset));
        }
        std::fs::write(inputs.path("clicks.csv"), text).unwrap();
        let mut text = String::from("created_ts,price,listing_id,category\n");
        for l in &listings {
            let price = l.price.map(|p| p.to_string()).unwrap_or_default();
            let category = l.category.map(|c| format!("\"{c}\"")).unwrap_or_default();
            text += &format!("{},{price},{},{category}\n", timestamp_text(l.created, false), l.id);
        }
        std::fs::write(inputs.path("listings.csv"), text).unwrap();

        let click_pairs: Vec<(i64, i64)> = clicks.iter().map(|&(l, t, _)| (l, t)).collect();
        let plain: Vec<(i64, i64, i64)> = impressions.iter().map(|&(u, l, t, _)| (u, l, t)).collect();
        let resolved = watermark.unwrap_or_else(|| click_pairs.iter().map(|c| c.1).max().unwrap());
        let (expected, held_back) = expected_rows(&plain, &click_pairs, &listings, resolved);

        for partitions in [1, 2, 8] {
            let build = leakless::Build::new(&dir, inputs.path("clicks.csv"), inputs.path("listings.csv"), inputs.out())
                .with_watermark(watermark)
                .with_target_partitions(partitions)
                .with_overwrite(true);
            let summary = crate::common::runtime().block_on(build.execute()).unwrap();
            prop_assert_eq!(&read_rows(&inputs.out()), &expected, "with {} partitions", partitions);
            prop_assert_eq!(summary.immature_held_back, held_back);
            prop_assert_eq!(summary.watermarks["clicked"].clone(), format_rfc3339(resolved));
        }
    }
}
