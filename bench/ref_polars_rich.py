"""The rich spec (bench/rich.toml) written by hand with Polars (a reference
for the benchmark, not part of leakless).

usage: ref_polars_rich.py DATA_DIR OUT WATERMARK

Counts of events strictly before x come from per-key cumulative counts and
backward as-of joins with exact matches off; events are grouped by (key,
time) first so that ties cannot split. A window [t - w, t) is C(<t) -
C(<t - w); a label [t, t + w) is C(<t + w) - C(<t) > 0; time since the last
event is t minus the time the same join lands on. The as-of price is the
version with the greatest valid_from < t. A null key matches nothing.
"""
import sys
from datetime import datetime, timezone

import polars as pl

from ref_common import write_partitioned

data, out, watermark = sys.argv[1:4]
H = 3_600_000_000
DAY = 24 * H
wm = int(datetime.fromisoformat(watermark.replace("Z", "+00:00")).timestamp() * 1_000_000)


def micros(col):
    # Zone-less text is UTC: parse as naive and read the epoch directly.
    return pl.col(col).str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us").dt.epoch("us")


imp = pl.scan_csv(f"{data}/impressions.csv").select(
    "impression_id", "user_id", "listing_id", micros("impression_ts").alias("t")
).filter(pl.col("t") + DAY <= wm)
clicks = pl.scan_csv(f"{data}/clicks.csv").select("listing_id", "user_id", micros("click_ts").alias("c"))
listings = pl.scan_csv(f"{data}/listings.csv").select(
    "listing_id", "category", micros("created_ts").alias("created")
)
prices = (
    pl.scan_csv(f"{data}/listing_prices.csv")
    .select("listing_id", pl.col("price").cast(pl.Float64).alias("price_as_of"), micros("valid_from").alias("vf"))
    .sort("vf")
)


def cumulative(keys):
    """Per key and event time: the number of events up to that time."""
    return (
        clicks.drop_nulls(keys)
        .group_by(*keys, "c")
        .agg(pl.len().alias("n"))
        .sort(*keys, "c")
        .with_columns(pl.col("n").cum_sum().over(keys).alias("cum"))
        .select(*keys, "c", "cum")
        .sort("c")
    )


def before(frame, cum, keys, at, name, last=None):
    """C(< at) per key as `name` (0 when none); `last`: the time of the last event before."""
    joined = frame.sort(at).join_asof(
        cum.rename({"cum": name}), left_on=at, right_on="c", by=keys,
        strategy="backward", allow_exact_matches=False,
    )
    if last:
        joined = joined.rename({"c": last})
    else:
        joined = joined.drop("c")
    # A null key matches nothing: its count is 0 like an unknown key's.
    return joined.with_columns(pl.col(name).fill_null(0))


L, U, UL = ["listing_id"], ["user_id"], ["user_id", "listing_id"]
cl, cu, cul = cumulative(L), cumulative(U), cumulative(UL)
df = imp.with_columns(
    (pl.col("t") - H).alias("t_1h"), (pl.col("t") - DAY).alias("t_24h"), (pl.col("t") - 7 * DAY).alias("t_7d"),
    (pl.col("t") + DAY).alias("t_p24h"), (pl.col("t") + H).alias("t_p1h"),
)
df = before(df, cl, L, "t", "l_t", last="l_last")
df = before(df, cl, L, "t_1h", "l_1h")
df = before(df, cl, L, "t_24h", "l_24h")
df = before(df, cl, L, "t_7d", "l_7d")
df = before(df, cl, L, "t_p24h", "l_p24h")
df = before(df, cu, U, "t", "u_t", last="u_last")
df = before(df, cu, U, "t_24h", "u_24h")
df = before(df, cu, U, "t_7d", "u_7d")
df = before(df, cul, UL, "t", "ul_t")
df = before(df, cul, UL, "t_p1h", "ul_p1h")
df = df.sort("t").join_asof(prices, left_on="t", right_on="vf", by="listing_id",
                            strategy="backward", allow_exact_matches=False).drop("vf")
df = (
    df.join(listings, on="listing_id", how="left")
    .select(
        "impression_id",
        "user_id",
        "listing_id",
        pl.from_epoch("t", time_unit="us").dt.replace_time_zone("UTC").alias("impression_ts"),
        "price_as_of",
        "category",
        ((pl.col("t") - pl.col("created")) // 1_000_000).alias("listing_age_seconds"),
        (pl.col("l_t") - pl.col("l_1h")).alias("listing_clicks_1h"),
        (pl.col("l_t") - pl.col("l_24h")).alias("listing_clicks_24h"),
        (pl.col("l_t") - pl.col("l_7d")).alias("listing_clicks_7d"),
        ((pl.col("t") - pl.col("l_last")) // 1_000_000).alias("listing_seconds_since_click"),
        (pl.col("u_t") - pl.col("u_24h")).alias("user_clicks_24h"),
        (pl.col("u_t") - pl.col("u_7d")).alias("user_clicks_7d"),
        ((pl.col("t") - pl.col("u_last")) // 1_000_000).alias("user_seconds_since_click"),
        pl.col("ul_t").alias("user_listing_clicks"),
        (pl.col("l_p24h") > pl.col("l_t")).cast(pl.Int8).alias("clicked"),
        (pl.col("ul_p1h") > pl.col("ul_t")).cast(pl.Int8).alias("user_clicked_listing_1h"),
        pl.from_epoch("t", time_unit="us").dt.strftime("%Y-%m-%d").alias("dt"),
    )
    .sort("impression_ts", "impression_id")
    .collect()
)
write_partitioned(df, out)
