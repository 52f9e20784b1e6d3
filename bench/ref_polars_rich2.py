"""The second rich spec (bench/rich2.toml) written by hand with Polars (a
reference for the benchmark, not part of leakless).

usage: ref_polars_rich2.py DATA_DIR OUT WATERMARK

DATA_DIR is what bench/gen_rich2.py writes (Parquet, or CSV with
--format csv). The semantics are docs/semantics.md's; every instant is an
int64 count of microseconds, and a spine row at `t` reads a source with
delay `d` at `q = t - d`.

- The spine is sorted by `t` once. Every time a row asks about (`q`,
  `q - w`, `t + offset`, ...) is `t` shifted by a constant, so the spine
  stays sorted for each, and every `join_asof` returns its rows in spine
  order: the features are columns side by side, never joined back.
- Each event source is sorted once per key, by (key, time, input order);
  the input order is a row index over the files in sorted path order.
  Users are coded as integers first (one mapping for every table), so that
  sorts and joins on them compare integers.
- Counts and sums over `[q - w, q)` are `C(<q) - C(<q - w)`: `C` is the
  per-key running sum at the last row of each (key, time) (ties cannot
  split), found by a strict backward `join_asof`. Every float is a multiple
  of 1/4 far below 2^51 (the generator's promise), so every running sum and
  difference is exact and equals leakless's exact sum; a mean is that sum
  over the count of non-null values. Labels `[t + o, t + o + w)` are
  `C(<t + o + w) - C(<t + o)`.
- `count_distinct` over `[q - w, q)`: with (key, value, time) deduplicated
  and `p` the previous time of the same key and value (none: -inf), an
  event is the earliest of its value in the window exactly when
  `e < q <= e + w` and `p < q - w`, i.e. for `q` in `(max(e, p + w), e + w]`.
  So the count is `A(<q) - D(<q - w)`, `A` counting the starts
  `max(e, p + w)` and `D` the deduplicated events: two as-of lookups.
- `last` over `[lo, hi)`: the last non-null value before `hi` (ties: input
  order), kept when its time is `>= lo`. `first`: the first non-null value
  at or after `lo` (forward join, exact matches in), kept when `< hi`.
- `min` and `max` over a window: `rolling_{min,max}_by(closed="left")`
  over the events and the spine's query times of each key in one frame
  (query rows carry a null value).
- Versioned dimensions: a strict backward `join_asof` on `valid_from` at
  `t - d`. A key with a null part matches nothing: such events are dropped
  before anything is summed, so a spine row with one finds nothing.
"""
import glob
import sys
from datetime import datetime

import polars as pl

from ref_common import write_partitioned

S = 1_000_000
MIN = 60 * S
H = 3600 * S
DAY = 24 * H
PURCHASE_DELAY, PRICE_DELAY, SEGMENT_DELAY = 2 * MIN, 5 * MIN, H
ONE = pl.lit(1, pl.Int64)

data, out, watermark = sys.argv[1:4]
wm = int(datetime.fromisoformat(watermark.replace("Z", "+00:00")).timestamp()) * S


def read(name, schema, time):
    """A table in input order (files in sorted path order, then rows), its
    time as int64 microseconds `e`, its input position as `ord`."""
    for ext in ("parquet", "csv"):
        paths = sorted(glob.glob(f"{data}/{name}.{ext}")) or sorted(glob.glob(f"{data}/{name}/**/*.{ext}",
                                                                               recursive=True))
        if paths:
            break
    if ext == "parquet":
        df = pl.concat([pl.read_parquet(p, columns=list(schema)) for p in paths])
        df = df.with_columns(pl.col(time).dt.epoch("us").alias("e"))
    else:
        types = {c: (pl.String if kind == "ts" else kind) for c, kind in schema.items()}
        df = pl.concat([pl.read_csv(p, schema_overrides=types, columns=list(schema)) for p in paths])
        df = df.with_columns(pl.col(time).str.to_datetime(time_unit="us", time_zone="UTC").dt.epoch("us").alias("e"))
    return df.drop(time).with_row_index("ord")


requests = read("requests", {"request_id": pl.Int64, "user": pl.String, "item_id": pl.Int64,
                             "query_id": pl.Int64, "request_ts": "ts"}, "request_ts")
views = read("views", {"user": pl.String, "item_id": pl.Int64, "dwell": pl.Float64, "view_ts": "ts"}, "view_ts")
purchases = read("purchases", {"user": pl.String, "item_id": pl.Int64, "amount": pl.Float64,
                               "quantity": pl.Int64, "purchase_ts": "ts"}, "purchase_ts")
prices = read("item_prices", {"item_id": pl.Int64, "price": pl.Float64, "valid_from": "ts"}, "valid_from")
segments = read("user_segments", {"user": pl.String, "segment": pl.String, "tier": pl.Int64,
                                  "valid_from": "ts"}, "valid_from")

users = pl.Enum(pl.concat([df["user"] for df in (requests, views, purchases, segments)]).drop_nulls().unique())
requests, views, purchases, segments = (df.with_columns(pl.col("user").cast(users).to_physical().alias("uid"))
                                        for df in (requests, views, purchases, segments))
U, I, Q, UI = ["uid"], ["item_id"], ["query_id"], ["uid", "item_id"]

# Mature rows only: t + offset + w <= watermark for both labels.
spine = (
    requests.rename({"e": "t"})
    .filter((pl.col("t") + DAY <= wm) & (pl.col("t") + 5 * MIN + H <= wm))
    .drop("ord")
    .sort("t")
)
t = pl.col("t")


def changes(cols, step=1):
    """True where a row differs from the previous one (`step` 1) or the next
    one (-1) on `cols`."""
    return pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(step)) for c in cols)


def by_key(events, key):
    """The events whose key has no null part, sorted by key, time, input order."""
    return events.drop_nulls(key).sort(*key, "e", "ord")


def before(frame, key, x, strategy="backward", exact=False):
    """For each spine row, `frame`'s row of the same key with the greatest
    time `x` < the row's `x` (forward with `exact`: the least time >= it).
    `frame` has the key, `x` sorted within each key, and value columns."""
    return spine.select(*key, "t", x.alias("x")).join_asof(
        frame, on="x", by=key, strategy=strategy, allow_exact_matches=exact, check_sortedness=False)


def running(frame, key, values, time="e"):
    """Per key and time `x`, the running sums of `values` (named
    expressions) over events up to and including that time; `frame` is
    sorted by key then `time`. A running sum restarting at each key is the
    global one minus its value before the key's first row (vectorised: a
    `cum_sum().over(key)` was several times slower here). `last_e` is `x`
    again, the time a backward join lands on."""
    df = frame.select(*key, pl.col(time).alias("x"), **values)
    start = changes(key)
    return (
        df.with_columns((pl.col(c).cum_sum() - pl.when(start).then(pl.col(c).cum_sum() - pl.col(c)).forward_fill())
                        for c in values)
        .filter(changes([*key, "x"], -1))  # the last row of each (key, time)
        .with_columns(pl.col("x").alias("last_e"))
    )


def totals(frame, key, values, xs):
    """`C(< x)` of every value for each time in `xs` (suffix -> expression),
    0 when none; `last_e` (the latest event time before x) per suffix."""
    cum = running(frame, key, values)
    cols = {}
    for suffix, x in xs.items():
        joined = before(cum, key, x)
        for c in values:
            cols[f"{c}{suffix}"] = joined[c].fill_null(0)
        cols[f"last_e{suffix}"] = joined["last_e"]
    return cols


def count_distinct(frame, key, value, w, q):
    """The distinct non-null `value`s with q - w <= e < q: `A(< q) - D(< q - w)`."""
    d = frame.select(*key, value, "e").drop_nulls(value).sort(*key, value, "e").filter(changes([*key, value, "e"]))
    d = d.with_columns(pl.max_horizontal("e", pl.when(~changes([*key, value])).then(pl.col("e").shift() + w)).alias("a"))
    a = before(running(d.sort(*key, "a"), key, {"n": ONE}, time="a"), key, q)["n"].fill_null(0)
    dd = before(running(d.sort(*key, "e"), key, {"n": ONE}), key, q - w)["n"].fill_null(0)
    return a - dd


def ordered_values(frame, key, value, which):
    """Per key and time, the first or last non-null `value` in input order
    (`frame` sorted by key, time, input order), as `x` and `vx` (the time) and `value`."""
    keep = changes([*key, "e"], 1 if which == "first" else -1)
    return frame.filter(pl.col(value).is_not_null()).filter(keep).select(
        *key, pl.col("e").alias("x"), pl.col("e").alias("vx"), value)


def last_in(frame, key, value, lo, hi):
    """The latest non-null value with lo <= e < hi (lo None: lifetime)."""
    j = before(ordered_values(frame, key, value, "last"), key, hi)
    return j[value] if lo is None else j.select(pl.when(pl.col("vx") >= lo).then(pl.col(value)))[value]


def first_in(frame, key, value, lo, hi):
    """The earliest non-null value with lo <= e < hi."""
    j = before(ordered_values(frame, key, value, "first"), key, lo, strategy="forward", exact=True)
    return j.select(pl.when(pl.col("vx") < hi).then(pl.col(value)))[value]


def rolling_extreme(frame, key, value, w, q, which):
    """min or max of the non-null `value` over [q - w, q): the events and
    the spine's query times in one frame sorted by key and time, rolled
    per key over [x - w, x)."""
    ev = frame.filter(pl.col(value).is_not_null()).select(*key, pl.col("e").alias("x"), value,
                                                           pl.lit(None, pl.UInt32).alias("row"))
    qs = spine.select(*key, q.alias("x"), pl.lit(None, ev.schema[value]).alias(value),
                      pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"))
    roll = pl.col(value).rolling_max_by if which == "max" else pl.col(value).rolling_min_by
    both = pl.concat([ev, qs]).sort(*key, "x")
    both = both.with_columns(roll("x", window_size=f"{w}i", closed="left").over(key).alias("m"))
    return both.filter(pl.col("row").is_not_null()).sort("row")["m"]


cols = {}

# Dimensions: the version with the greatest valid_from < t - d.
price = before(prices.select("item_id", pl.col("e").alias("x"), "price").sort("item_id", "x"), I, t - PRICE_DELAY)
cols["item_price"] = price["price"]
seg = before(segments.select("uid", pl.col("e").alias("x"), pl.col("e").alias("vf"), "segment", "tier")
             .sort("uid", "x"), U, t - SEGMENT_DELAY)
cols["user_segment"] = seg["segment"]
cols["user_tier"] = seg["tier"]
cols["user_segment_age_seconds"] = (spine["t"] - seg["vf"]) // S

# The spine's own source (every request, mature or not), delay 0.
cols["user_distinct_items_requested_24h"] = count_distinct(requests.drop_nulls(U), U, "item_id", DAY, t)
cols["query_distinct_users_6h"] = count_distinct(requests.drop_nulls(Q), Q, "uid", 6 * H, t)

# Views by item (and the label, which has no delay either).
v = by_key(views, I)
c = totals(v, I, {"n": ONE, "nl": (pl.col("dwell") >= 5).fill_null(False).cast(pl.Int64),
                  "sd": pl.col("dwell").fill_null(0.0), "nd": pl.col("dwell").is_not_null().cast(pl.Int64)},
           {"": t, "_1h": t - H, "_24h": t - DAY, "_7d": t - 7 * DAY, "_l0": t + 5 * MIN, "_l1": t + 5 * MIN + H})
cols["item_views_1h"] = c["n"] - c["n_1h"]
cols["item_long_views_24h"] = c["nl"] - c["nl_24h"]
nd7 = c["nd"] - c["nd_7d"]
cols["item_mean_dwell_7d"] = pl.select(pl.when(nd7 > 0).then((c["sd"] - c["sd_7d"]) / nd7)).to_series()
cols["item_max_dwell_6h"] = rolling_extreme(v, I, "dwell", 6 * H, t, "max")
cols["item_distinct_viewers_30d"] = count_distinct(v, I, "uid", 30 * DAY, t)
cols["item_views_1h_after_5m"] = c["n_l1"] - c["n_l0"]

# Views by user.
v = by_key(views, U)
c = totals(v, U, {"sd": pl.col("dwell").fill_null(0.0)}, {"": t, "_24h": t - DAY})
cols["user_dwell_sum_24h"] = c["sd"] - c["sd_24h"]
cols["user_first_dwell_7d"] = first_in(v, U, "dwell", t - 7 * DAY, t)

# Views by user x item.
v = by_key(views, UI)
c = totals(v, UI, {"n": ONE}, {"": t, "_30d": t - 30 * DAY})
cols["user_item_views_30d"] = c["n"] - c["n_30d"]
cols["user_item_last_dwell"] = last_in(v, UI, "dwell", None, t)
del v

# Purchases (2 min late) by item.
q = t - PURCHASE_DELAY
p = by_key(purchases, I)
c = totals(p, I, {"n": ONE, "rev": pl.when(pl.col("amount") > 20).then("amount").otherwise(0.0),
                  "qty": pl.col("quantity").fill_null(0)},
           {"": q, "_7d": q - 7 * DAY, "_30d": q - 30 * DAY})
cols["item_purchases_7d"] = c["n"] - c["n_7d"]
cols["item_revenue_30d"] = c["rev"] - c["rev_30d"]
cols["item_min_amount_7d"] = rolling_extreme(p, I, "amount", 7 * DAY, q, "min")
cols["item_units_sold"] = c["qty"]

# Purchases by user.
p = by_key(purchases, U)
c = totals(p, U, {"sa": pl.col("amount").fill_null(0.0), "na": pl.col("amount").is_not_null().cast(pl.Int64)},
           {"": q, "_30d": q - 30 * DAY})
cols["user_spend_30d"] = c["sa"] - c["sa_30d"]
cols["user_mean_amount"] = pl.select(pl.when(c["na"] > 0).then(c["sa"] / c["na"])).to_series()
cols["user_last_amount_30d"] = last_in(p, U, "amount", q - 30 * DAY, q)
cols["user_max_quantity_7d"] = rolling_extreme(p.filter(pl.col("amount") > 20), U, "quantity", 7 * DAY, q, "max")
cols["user_distinct_items_bought_30d"] = count_distinct(p, U, "item_id", 30 * DAY, q)
cols["user_seconds_since_purchase"] = (spine["t"] - c["last_e"]) // S

# Labels: [t + offset, t + offset + w), no delay (item_views_1h_after_5m is above).
c = totals(by_key(purchases, UI), UI, {"n": ONE}, {"_0": t, "_24h": t + DAY})
cols["purchased_24h"] = (c["n_24h"] > c["n_0"]).cast(pl.Int8)

ORDER = ["item_price", "user_segment", "user_tier", "user_segment_age_seconds",
         "user_distinct_items_requested_24h", "query_distinct_users_6h", "item_views_1h", "item_long_views_24h",
         "item_mean_dwell_7d", "item_max_dwell_6h", "item_distinct_viewers_30d", "user_dwell_sum_24h",
         "user_first_dwell_7d", "user_item_views_30d", "user_item_last_dwell", "item_purchases_7d",
         "item_revenue_30d", "item_min_amount_7d", "item_units_sold", "user_spend_30d", "user_mean_amount",
         "user_last_amount_30d", "user_max_quantity_7d", "user_distinct_items_bought_30d",
         "user_seconds_since_purchase", "purchased_24h", "item_views_1h_after_5m"]
SPINE = ["request_id", "user", "item_id", "query_id"]
df = (
    spine.select(*SPINE, pl.from_epoch("t", time_unit="us").dt.replace_time_zone("UTC").alias("request_ts"))
    .with_columns(cols[name].alias(name) for name in ORDER)
    .with_columns(pl.col("request_ts").dt.strftime("%Y-%m-%d").alias("dt"))
    .sort("request_ts", "request_id")  # leakless's order: request_id is unique here, so the rest never breaks a tie
)
write_partitioned(df, out)
