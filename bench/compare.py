"""Checks that a reference's dataset has exactly leakless's rows.

usage: compare.py LEAKLESS_DATASET OTHER_DATASET [--all-columns]
Both are read with DuckDB (hive partitioning), timestamps as epoch
microseconds; every column of every row is compared (a multiset difference
both ways, so duplicates count), and the first differing row (by the first
column) is shown.
With --all-columns, every column of leakless's dataset is compared (int8
labels as integers), in its order.
"""
import sys

import duckdb

COLUMNS = [
    "impression_id", "user_id", "listing_id", "epoch_us(impression_ts) AS impression_ts",
    "listing_age_seconds", "price", "category", "prior_listing_clicks", "listing_clicks_24h",
    "clicked::INTEGER AS clicked", "dt::VARCHAR AS dt",
]
if "--all-columns" in sys.argv:
    probe = duckdb.connect()
    described = probe.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{sys.argv[1]}/*/*.parquet', hive_partitioning = true)"
    ).fetchall()
    COLUMNS = []
    for name, kind, *_ in described:
        if kind.startswith("TIMESTAMP"):
            COLUMNS.append(f"epoch_us({name}) AS {name}")
        elif name == "dt":
            COLUMNS.append("dt::VARCHAR AS dt")
        elif kind in ("TINYINT", "SMALLINT", "INTEGER"):
            COLUMNS.append(f"{name}::BIGINT AS {name}")
        else:
            COLUMNS.append(name)

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
for name, path in (("a", sys.argv[1]), ("b", sys.argv[2])):
    con.execute(
        f"CREATE TABLE {name} AS SELECT {', '.join(COLUMNS)} "
        f"FROM read_parquet('{path}/*/*.parquet', hive_partitioning = true)"
    )
na = con.execute("SELECT count(*) FROM a").fetchone()[0]
nb = con.execute("SELECT count(*) FROM b").fetchone()[0]
if na != nb:
    sys.exit(f"row counts differ: {na} vs {nb}")
# The first differing row by the first column (impression_id, request_id, ...).
first = COLUMNS[0].split(" AS ")[-1]
only_a = con.execute(f"SELECT * FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b) ORDER BY {first} LIMIT 1").fetchall()
only_b = con.execute(f"SELECT * FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a) ORDER BY {first} LIMIT 1").fetchall()
if only_a or only_b:
    sys.exit(f"rows differ: leakless has {only_a}, the other has {only_b}")
print(f"identical: {na} rows")
