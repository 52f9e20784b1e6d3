"""The point-in-time job written by hand with Polars join_asof (a reference
for the benchmark, not part of leakless).

usage: ref_polars.py IMPRESSIONS.csv CLICKS.csv LISTINGS.csv OUT WATERMARK

Counts "clicks before x" come from per-listing cumulative click counts and
backward as-of joins with exact matches off (strictly before x): prior =
C(<t), last 24 h = C(<t) - C(<t-24h), label = C(<t+24h) - C(<t) > 0.
Clicks are grouped by (listing, second) first, so ties cannot split.
"""
import sys
from datetime import datetime, timezone

import polars as pl

from ref_common import write_partitioned

imp_path, clk_path, lst_path, out, watermark = sys.argv[1:6]
DAY = 86_400_000_000
wm = int(datetime.fromisoformat(watermark.replace("Z", "+00:00")).timestamp() * 1_000_000)


def micros(col):
    # Zone-less text is UTC: parse as naive and read the epoch directly.
    return pl.col(col).str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us").dt.epoch("us")


imp = pl.scan_csv(imp_path).select(
    "impression_id", "user_id", "listing_id", micros("impression_ts").alias("t")
).filter(pl.col("t") + DAY <= wm)
clk = (
    pl.scan_csv(clk_path)
    .select("listing_id", micros("click_ts").alias("c"))
    .group_by("listing_id", "c")
    .agg(pl.len().alias("n"))
    .sort("listing_id", "c")
    .with_columns(pl.col("n").cum_sum().over("listing_id").alias("cum"))
    .select("listing_id", "c", "cum")
    .sort("c")
)
lst = pl.scan_csv(lst_path).select(
    "listing_id", "category", pl.col("price").cast(pl.Float64), micros("created_ts").alias("created")
)

df = imp.with_columns(
    (pl.col("t") - DAY).alias("t_minus"), (pl.col("t") + DAY).alias("t_plus")
).sort("t")


def count_before(frame, key, name):
    return frame.sort(key).join_asof(
        clk.rename({"cum": name}),
        left_on=key,
        right_on="c",
        by="listing_id",
        strategy="backward",
        allow_exact_matches=False,
    ).drop("c").with_columns(pl.col(name).fill_null(0))


df = count_before(df, "t", "before_t")
df = count_before(df, "t_minus", "before_t_minus")
df = count_before(df, "t_plus", "before_t_plus")
df = (
    df.join(lst, on="listing_id", how="left")
    .select(
        "impression_id",
        "user_id",
        "listing_id",
        pl.from_epoch("t", time_unit="us").dt.replace_time_zone("UTC").alias("impression_ts"),
        ((pl.col("t") - pl.col("created")) // 1_000_000).alias("listing_age_seconds"),
        "price",
        "category",
        pl.col("before_t").alias("prior_listing_clicks"),
        (pl.col("before_t") - pl.col("before_t_minus")).alias("listing_clicks_24h"),
        (pl.col("before_t_plus") > pl.col("before_t")).cast(pl.Int8).alias("clicked"),
        pl.from_epoch("t", time_unit="us").dt.strftime("%Y-%m-%d").alias("dt"),
    )
    .sort("impression_ts", "impression_id")
    .collect()
)
write_partitioned(df, out)
