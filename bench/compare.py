"""Checks that a reference's dataset has exactly leakless's rows.

usage: compare.py LEAKLESS_DATASET OTHER_DATASET
Both are read with DuckDB (hive partitioning), timestamps as epoch
microseconds, sorted by impression_id, and compared column by column.
"""
import sys

import duckdb

COLUMNS = [
    "impression_id", "user_id", "listing_id", "epoch_us(impression_ts) AS impression_ts",
    "listing_age_seconds", "price", "category", "prior_listing_clicks", "listing_clicks_24h",
    "clicked::INTEGER AS clicked", "dt::VARCHAR AS dt",
]


def load(path):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM read_parquet('{path}/*/*.parquet', hive_partitioning = true) "
        "ORDER BY impression_id"
    ).fetchall()


a, b = load(sys.argv[1]), load(sys.argv[2])
if len(a) != len(b):
    sys.exit(f"row counts differ: {len(a)} vs {len(b)}")
names = [c.split(" AS ")[-1].split("::")[0] for c in COLUMNS]
for ra, rb in zip(a, b):
    if ra != rb:
        diff = {n: (x, y) for n, x, y in zip(names, ra, rb) if x != y}
        sys.exit(f"impression {ra[0]} differs: {diff}")
print(f"identical: {len(a)} rows")
