//! End-to-end cases with inline inputs and inline expected rows.
//!
//! Rows read `dt id user listing impression_ts | age price category | prior
//! 24h clicked`.

use crate::common::{Inputs, unindent};

const LISTINGS: &str = "
    listing_id,category,price,created_ts
    1,shoes,10.5,2026-09-30T00:00:00Z
";

/// Builds the inputs with 1 and 2 partitions and checks the rows and the
/// number of immature impressions held back.
fn check(
    impressions: &str,
    clicks: &str,
    listings: &str,
    watermark: Option<&str>,
    expected: &str,
    held_back: u64,
) {
    let inputs = Inputs::new(impressions, clicks, listings);
    for partitions in [1, 2] {
        let summary = inputs.run(watermark, partitions).unwrap();
        let rows = crate::common::read_rows(&inputs.out());
        assert_eq!(
            rows.join("\n") + "\n",
            unindent(expected),
            "with {partitions} partitions"
        );
        assert_eq!(summary.immature_held_back, held_back);
        assert_eq!(summary.rows_written as usize, rows.len());
    }
}

#[test]
fn classic_point_in_time() {
    // One click before the impression, one after: only the earlier one is a
    // feature, the later one is the label.
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        7,70,1,2026-10-01T12:00:00Z
        ",
        "
        listing_id,click_ts
        1,2026-10-01T11:00:00Z
        1,2026-10-01T13:00:00Z
        1,2026-10-05T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-01 7 70 1 2026-10-01T12:00:00.000000Z | 129600 10.5 shoes | 1 1 1
        ",
        0,
    );
}

#[test]
fn a_click_at_exactly_t_is_future_not_past() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T12:00:00Z
        ",
        "
        listing_id,click_ts
        1,2026-10-01T12:00:00Z
        1,2026-10-03T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-01 1 10 1 2026-10-01T12:00:00.000000Z | 129600 10.5 shoes | 0 0 1
        ",
        0,
    );
}

#[test]
fn a_click_at_exactly_t_minus_24h_is_inside_the_window() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-02T12:00:00Z
        ",
        "
        listing_id,click_ts
        1,2026-10-01T11:59:59.999999Z
        1,2026-10-01T12:00:00Z
        1,2026-10-04T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-02 1 10 1 2026-10-02T12:00:00.000000Z | 216000 10.5 shoes | 2 1 0
        ",
        0,
    );
}

#[test]
fn a_click_at_exactly_t_plus_24h_is_not_a_label() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T12:00:00Z
        2,11,1,2026-10-01T12:00:00.000001Z
        ",
        "
        listing_id,click_ts
        1,2026-10-02T12:00:00Z
        1,2026-10-08T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-01 1 10 1 2026-10-01T12:00:00.000000Z | 129600 10.5 shoes | 0 0 0
        dt=2026-10-01 2 11 1 2026-10-01T12:00:00.000001Z | 129600 10.5 shoes | 0 0 1
        ",
        0,
    );
}

#[test]
fn impressions_at_the_same_time_get_the_same_features_sorted_by_id() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        3,30,1,2026-10-01T12:00:00Z
        1,10,1,2026-10-01T12:00:00Z
        2,20,1,2026-10-01T12:00:00Z
        ",
        "
        listing_id,click_ts
        1,2026-10-01T12:00:00Z
        1,2026-10-01T12:00:00Z
        1,2026-10-01T10:00:00Z
        1,2026-10-01T10:00:00Z
        1,2026-10-04T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-01 1 10 1 2026-10-01T12:00:00.000000Z | 129600 10.5 shoes | 2 2 1
        dt=2026-10-01 2 20 1 2026-10-01T12:00:00.000000Z | 129600 10.5 shoes | 2 2 1
        dt=2026-10-01 3 30 1 2026-10-01T12:00:00.000000Z | 129600 10.5 shoes | 2 2 1
        ",
        0,
    );
}

#[test]
fn an_unknown_listing_has_null_metadata_but_its_clicks_count() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,99,2026-10-01T12:00:00Z
        ",
        "
        listing_id,click_ts
        99,2026-10-01T08:00:00Z
        99,2026-10-01T18:00:00Z
        1,2026-10-04T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-01 1 10 99 2026-10-01T12:00:00.000000Z | null null null | 1 1 1
        ",
        0,
    );
}

#[test]
fn offsets_move_impressions_across_midnight_utc() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T23:30:00-01:00
        2,20,1,2026-10-02T00:30:00+01:00
        3,30,1,2026-10-01 23:59:59.999999
        ",
        "
        listing_id,click_ts
        1,2026-10-02T00:15:00+00:00
        1,2026-10-05T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-01 2 20 1 2026-10-01T23:30:00.000000Z | 171000 10.5 shoes | 0 0 1
        dt=2026-10-01 3 30 1 2026-10-01T23:59:59.999999Z | 172799 10.5 shoes | 0 0 1
        dt=2026-10-02 1 10 1 2026-10-02T00:30:00.000000Z | 174600 10.5 shoes | 1 1 0
        ",
        0,
    );
}

#[test]
fn an_impression_exactly_at_the_watermark_boundary_is_mature() {
    // t + 24h == watermark: the window has closed. One microsecond later it
    // has not, and the impression is held back.
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T12:00:00Z
        2,20,1,2026-10-01T12:00:00.000001Z
        ",
        "
        listing_id,click_ts
        1,2026-10-01T13:00:00Z
        ",
        LISTINGS,
        Some("2026-10-02T12:00:00Z"),
        "
        dt=2026-10-01 1 10 1 2026-10-01T12:00:00.000000Z | 129600 10.5 shoes | 0 0 1
        ",
        1,
    );
}

#[test]
fn the_default_watermark_is_the_last_click() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,1,2026-10-01T00:00:00Z
        2,10,1,2026-10-01T00:00:01Z
        ",
        "
        listing_id,click_ts
        1,2026-10-02T00:00:00Z
        ",
        LISTINGS,
        None,
        "
        dt=2026-10-01 1 10 1 2026-10-01T00:00:00.000000Z | 86400 10.5 shoes | 0 0 0
        ",
        1,
    );
}

#[test]
fn listing_age_is_floored_for_listings_created_after_the_impression() {
    check(
        "
        impression_id,user_id,listing_id,impression_ts
        1,10,2,2026-10-01T00:00:00Z
        ",
        "
        listing_id,click_ts
        2,2026-10-03T00:00:00Z
        ",
        "
        listing_id,category,price,created_ts
        2,,,2026-10-01T00:00:00.5Z
        ",
        None,
        "
        dt=2026-10-01 1 10 2 2026-10-01T00:00:00.000000Z | -1 null null | 0 0 0
        ",
        0,
    );
}
