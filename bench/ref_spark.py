"""The point-in-time job written by hand with PySpark window functions (a
reference for the benchmark, not part of leakless).

usage: ref_spark.py IMPRESSIONS.csv CLICKS.csv LISTINGS.csv OUT WATERMARK

Impressions and clicks are unioned per listing and counted with range
frames over epoch microseconds: [-inf, t-1], [t-24h, t-1], [t, t+24h-1].
The session time zone is pinned to UTC and every duration is in
microseconds, never INTERVAL 1 DAY.
"""
import sys
from datetime import datetime

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

imp_path, clk_path, lst_path, out, watermark = sys.argv[1:6]
DAY = 86_400_000_000
wm = int(datetime.fromisoformat(watermark.replace("Z", "+00:00")).timestamp() * 1_000_000)

spark = (
    SparkSession.builder.master("local[2]")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.driver.memory", "4g")
    .config("spark.sql.shuffle.partitions", "8")
    .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    .config("spark.ui.enabled", "false")
    # The benchmark's common codec: zstd level 1 (row groups are sized in
    # bytes here: parquet.block.size, 128 MB).
    .config("spark.sql.parquet.compression.codec", "zstd")
    .config("spark.hadoop.parquet.compression.codec.zstd.level", "1")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")


def micros(name):
    return F.unix_micros(F.to_timestamp(F.col(name)))


imp = spark.read.csv(imp_path, header=True).select(
    F.col("impression_id").cast("long"), F.col("user_id").cast("long"),
    F.col("listing_id").cast("long"), micros("impression_ts").alias("t"), F.lit(0).alias("is_click"),
)
clk = spark.read.csv(clk_path, header=True).select(
    F.lit(None).cast("long").alias("impression_id"), F.lit(None).cast("long").alias("user_id"),
    F.col("listing_id").cast("long"), micros("click_ts").alias("t"), F.lit(1).alias("is_click"),
)
lst = spark.read.csv(lst_path, header=True).select(
    F.col("listing_id").cast("long"), "category", F.col("price").cast("double"), micros("created_ts").alias("created"),
)
w = Window.partitionBy("listing_id").orderBy("t")
events = imp.unionByName(clk).select(
    "*",
    F.coalesce(F.sum("is_click").over(w.rangeBetween(Window.unboundedPreceding, -1)), F.lit(0)).alias("prior"),
    F.coalesce(F.sum("is_click").over(w.rangeBetween(-DAY, -1)), F.lit(0)).alias("last24"),
    F.coalesce(F.sum("is_click").over(w.rangeBetween(0, DAY - 1)), F.lit(0)).alias("future"),
)
result = (
    events.where((F.col("is_click") == 0) & (F.col("t") + DAY <= wm))
    .join(F.broadcast(lst), "listing_id", "left")
    .select(
        "impression_id", "user_id", "listing_id",
        F.timestamp_micros("t").alias("impression_ts"),
        F.floor((F.col("t") - F.col("created")) / 1_000_000).cast("long").alias("listing_age_seconds"),
        "price", "category",
        F.col("prior").cast("long").alias("prior_listing_clicks"),
        F.col("last24").cast("long").alias("listing_clicks_24h"),
        (F.col("future") > 0).cast("tinyint").alias("clicked"),
        F.date_format(F.timestamp_micros("t"), "yyyy-MM-dd").alias("dt"),
    )
)
result.sortWithinPartitions("impression_ts", "impression_id").write.mode("overwrite").partitionBy("dt").parquet(out)
spark.stop()
