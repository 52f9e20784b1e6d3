"""What the hand-written references share (not part of leakless)."""
import os


def write_partitioned(df, out):
    """Writes a Polars frame with a `dt` column as OUT/dt=.../part-0.parquet,
    with the benchmark's common settings: zstd level 1, row groups of
    1,048,576 rows."""
    for (dt,), part in df.partition_by("dt", as_dict=True, maintain_order=True).items():
        folder = os.path.join(out, f"dt={dt}")
        os.makedirs(folder, exist_ok=True)
        part.drop("dt").write_parquet(os.path.join(folder, "part-0.parquet"), compression="zstd",
                                      compression_level=1, row_group_size=1 << 20)
