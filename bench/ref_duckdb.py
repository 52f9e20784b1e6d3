"""The point-in-time job written by hand in DuckDB with ASOF JOIN (a
reference for the benchmark, not part of leakless).

usage: ref_duckdb.py IMPRESSIONS.csv CLICKS.csv LISTINGS.csv OUT WATERMARK [floor]

With `floor`, does the job's I/O and little else: reads the three inputs,
and writes one row per impression with every output column (the listing's
columns by a hash join, the three click columns as cheap per-row
arithmetic), sorted and partitioned by date.

Every write is zstd level 1 with row groups of 1,048,576 rows, as leakless's.
"""
import sys

import duckdb

imp, clk, lst, out, watermark = sys.argv[1:6]
floor = len(sys.argv) > 6 and sys.argv[6] == "floor"
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
try:
    con.execute("SET asof_loop_join_threshold = 0")
except duckdb.Error:
    pass
con.execute(f"""
CREATE TEMP VIEW imp AS SELECT impression_id, user_id, listing_id, epoch_us(impression_ts::TIMESTAMP) AS t
  FROM read_csv('{imp}', header = true);
CREATE TEMP VIEW clk AS SELECT listing_id, epoch_us(click_ts::TIMESTAMP) AS c FROM read_csv('{clk}', header = true);
CREATE TEMP VIEW lst AS SELECT listing_id, category, price::DOUBLE AS price, epoch_us(created_ts::TIMESTAMP) AS created
  FROM read_csv('{lst}', header = true);
""")
wm = con.execute(f"SELECT epoch_us(TIMESTAMP '{watermark.rstrip('Z')}')").fetchone()[0]
if floor:
    con.execute(f"""
    CREATE TEMP TABLE l AS SELECT * FROM lst;
    CREATE TEMP TABLE k AS SELECT * FROM clk;
    COPY (SELECT i.impression_id, i.user_id, i.listing_id, make_timestamp(i.t) AS impression_ts,
                 floor((i.t - l.created) / 1000000)::BIGINT AS listing_age_seconds, l.price, l.category,
                 i.user_id % 97 AS prior_listing_clicks, i.impression_id % 13 AS listing_clicks_24h,
                 (i.impression_id % 2)::TINYINT AS clicked,
                 strftime(make_timestamp(i.t), '%Y-%m-%d') AS dt
          FROM imp i LEFT JOIN l ON i.listing_id = l.listing_id
          ORDER BY i.t, i.impression_id)
      TO '{out}' (FORMAT parquet, PARTITION_BY (dt), OVERWRITE_OR_IGNORE, COMPRESSION zstd,
                  COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 1048576);
    """)
    sys.exit(0)
con.execute(f"""
CREATE TEMP TABLE cum AS
  SELECT listing_id, c, sum(n) OVER (PARTITION BY listing_id ORDER BY c) AS cum
  FROM (SELECT listing_id, c, count(*) AS n FROM clk GROUP BY ALL);
CREATE TEMP TABLE base AS SELECT * FROM imp WHERE t + 86400000000 <= {wm};
COPY (
  SELECT b.impression_id, b.user_id, b.listing_id, make_timestamp(b.t) AS impression_ts,
         floor((b.t - l.created) / 1000000)::BIGINT AS listing_age_seconds,
         l.price, l.category,
         coalesce(p.cum, 0) AS prior_listing_clicks,
         coalesce(p.cum, 0) - coalesce(m.cum, 0) AS listing_clicks_24h,
         (coalesce(f.cum, 0) > coalesce(p.cum, 0))::TINYINT AS clicked,
         strftime(make_timestamp(b.t), '%Y-%m-%d') AS dt
  FROM base b
  ASOF LEFT JOIN cum p ON b.listing_id = p.listing_id AND b.t > p.c
  ASOF LEFT JOIN cum m ON b.listing_id = m.listing_id AND b.t - 86400000000 > m.c
  ASOF LEFT JOIN cum f ON b.listing_id = f.listing_id AND b.t + 86400000000 > f.c
  LEFT JOIN lst l ON b.listing_id = l.listing_id
  ORDER BY b.t, b.impression_id
) TO '{out}' (FORMAT parquet, PARTITION_BY (dt), OVERWRITE_OR_IGNORE, COMPRESSION zstd,
             COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 1048576);
""")
