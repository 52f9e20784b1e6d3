"""The leakless benchmark: leakless against hand-written DuckDB and Polars
jobs (and a DuckDB I/O floor) on the same generated data, in one run.

usage: python3 bench/run.py [--sizes 1000000,10000000] [--runs 3] [--spark-max 1000000]

Creates bench/.venv with DuckDB, Polars and pyarrow if missing, builds
leakless in release mode, generates 30 days of data per size with
`leakless generate`, runs every tool `--runs` times under /usr/bin/time
(PySpark only up to --spark-max impressions),
checks every reference's rows against leakless's, and writes
bench/RESULTS.md.
"""
import argparse
import random as random_module
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"
PY = VENV / "bin" / "python"


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, **kw)


def ensure_venv():
    if not PY.exists():
        sh(sys.executable, "-m", "venv", VENV)
    sh(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "duckdb", "polars", "pyarrow", "pyspark")


def leakless_binary():
    sh("cargo", "build", "--release", "--quiet", "-p", "leakless-cli", cwd=ROOT)
    meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT))
    return Path(meta["target_directory"]) / "release" / "leakless"


def timed(cmd):
    """Wall seconds and peak resident MB of one run."""
    stats = HERE / "out" / ".time"
    started = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(stats)] + [str(c) for c in cmd], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return wall, int(stats.read_text().split()[-1]) / 1024


def du(path):
    path = Path(path)
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--order", choices=["time", "random"], default="time",
                    help="rows as generated (time order, rising ids), or impressions, clicks, listings and "
                         "listing_prices shuffled into random order (CSV inputs only); random writes its own "
                         "section of RESULTS.md")
    ap.add_argument("--spark-max", type=int, default=1_000_000, help="largest size PySpark runs at")
    ap.add_argument("--large", help="sizes (e.g. 100000000) to run leakless alone at, once each, "
                    "against leakless at 10,000,000; replaces the scale section of RESULTS.md")
    args = ap.parse_args()
    ensure_venv()
    leakless = leakless_binary()
    if args.large:
        return scale(leakless, [int(s) for s in args.large.split(",")])
    (HERE / "out").mkdir(exist_ok=True)
    rows = []
    rich_rows = []
    notes = []
    for n in [int(s) for s in args.sizes.split(",")]:
        data = HERE / "data" / str(n)
        for fmt in ["csv", "parquet"]:
            if not (data / fmt / "_generator.json").exists():
                sh(leakless, "generate", "--out", data / fmt, "--impressions", n, "--format", fmt)
        gen = json.loads((data / "csv" / "_generator.json").read_text())
        wm = gen["totals"]["watermark"]
        csv_dir = data / "csv"
        if args.order == "random":
            csv_dir = shuffled_copy(data / "csv", data / "csv-random")
        inputs = {"csv": [csv_dir / f"{t}.csv" for t in ("impressions", "clicks", "listings")],
                  "parquet": [data / "parquet" / f"{t}.parquet" for t in ("impressions", "clicks", "listings")]}
        out = HERE / "out" / str(n)
        tools = {
            "leakless (CSV in)": [leakless, "build", "--impressions", inputs["csv"][0], "--clicks", inputs["csv"][1],
                                  "--listings", inputs["csv"][2], "--out", out / "leakless", "--watermark", wm,
                                  "--overwrite", "--quiet"],
            "leakless --spec marketplace (CSV in)": [leakless, "build", "--spec", ROOT / "examples" / "marketplace" / "leakless.toml",
                                                     *[a for t, p in zip(("impressions", "clicks", "listings"), inputs["csv"]) for a in ("--source", f"{t}={p}")],
                                                     "--out", out / "leakless-spec", "--watermark", wm, "--overwrite", "--quiet"],
            "leakless (Parquet in)": [leakless, "build", "--impressions", inputs["parquet"][0], "--clicks",
                                      inputs["parquet"][1], "--listings", inputs["parquet"][2], "--out",
                                      out / "leakless-parquet", "--watermark", wm, "--overwrite", "--quiet"],
            "floor: DuckDB read 3 CSVs, write impressions partitioned": [PY, HERE / "ref_duckdb.py", *inputs["csv"], out / "floor", wm, "floor"],
            "Polars join_asof": [PY, HERE / "ref_polars.py", *inputs["csv"], out / "polars", wm],
            "DuckDB ASOF JOIN": [PY, HERE / "ref_duckdb.py", *inputs["csv"], out / "duckdb", wm],
        }
        if args.order == "random":
            del tools["leakless (Parquet in)"]
        if n <= args.spark_max:
            tools["PySpark window functions, local[2]"] = [PY, HERE / "ref_spark.py", *inputs["csv"], out / "spark", wm]
        results = {}
        for name, cmd in tools.items():
            runs = []
            for _ in range(args.runs):
                target = Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else Path(cmd[-3] if cmd[-1] == "floor" else cmd[-2])
                if not str(cmd[0]).endswith("leakless"):
                    subprocess.run(["rm", "-rf", str(target)], check=True)
                runs.append(timed(cmd))
            results[name] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs)
            print(f"{n:>11,} {name:<60} {results[name][0]:7.2f} s {results[name][1]:8.0f} MB", flush=True)
        base = results["leakless (CSV in)"][0]
        for name, (wall, rss, _) in results.items():
            folder = {"leakless (CSV in)": "leakless", "leakless (Parquet in)": "leakless-parquet",
                      "leakless --spec marketplace (CSV in)": "leakless-spec",
                      "Polars join_asof": "polars", "DuckDB ASOF JOIN": "duckdb",
                      "PySpark window functions, local[2]": "spark"}.get(name)
            check = "-"
            if folder and folder != "leakless":
                r = subprocess.run([PY, HERE / "compare.py", out / "leakless", out / folder], capture_output=True, text=True)
                check = "identical" if r.returncode == 0 else "DIFFERENT"
                if r.returncode != 0:
                    notes.append(f"{n:,} {name}: {r.stdout.strip()} {r.stderr.strip()}")
            size = du(out / folder) if folder else du(out / "floor")
            rows.append((n, name, wall, rss, size, wall / base, check))
        # The rich spec: 11 features over three keys, an as-of price, two labels.
        rich = {
            "leakless --spec bench/rich.toml": [leakless, "build", "--spec", HERE / "rich.toml",
                                                *[a for t in ("impressions", "clicks", "listings", "listing_prices")
                                                  for a in ("--source", f"{t}={csv_dir / (t + '.csv')}")],
                                                "--out", out / "rich-leakless", "--watermark", wm, "--overwrite", "--quiet"],
            "Polars, the rich spec by hand": [PY, HERE / "ref_polars_rich.py", csv_dir, out / "rich-polars", wm],
        }
        rich_results = {}
        for name, cmd in rich.items():
            runs = []
            for _ in range(args.runs):
                if not str(cmd[0]).endswith("leakless"):
                    subprocess.run(["rm", "-rf", str(cmd[-2])], check=True)
                runs.append(timed(cmd))
            rich_results[name] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
            print(f"{n:>11,} {name:<60} {rich_results[name][0]:7.2f} s {rich_results[name][1]:8.0f} MB", flush=True)
        r = subprocess.run([PY, HERE / "compare.py", out / "rich-leakless", out / "rich-polars", "--all-columns"],
                           capture_output=True, text=True)
        rich_check = "identical" if r.returncode == 0 else "DIFFERENT"
        if r.returncode != 0:
            notes.append(f"{n:,} rich spec, Polars: {r.stdout.strip()} {r.stderr.strip()}")
        rich_base = rich_results["leakless --spec bench/rich.toml"][0]
        for name, (wall, rss) in rich_results.items():
            folder = "rich-leakless" if name.startswith("leakless") else "rich-polars"
            rich_rows.append((n, name, wall, rss, du(out / folder), wall / rich_base,
                              "-" if folder == "rich-leakless" else rich_check))
        timings = json.loads(subprocess.check_output([str(c) for c in tools["leakless (CSV in)"] + ["--json"]]))["timings"]
        notes.append(f"{n:,} leakless --timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))

    cores = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    random = args.order == "random"
    lines = [
        "## Rows in random order" if random else "# Benchmark results",
        "",
        f"Date: {time.strftime('%Y-%m-%d', time.gmtime())}. Machine: {cores} cores, {mem:.0f} GiB. "
        f"Command: `python3 bench/run.py --sizes {args.sizes} --runs {args.runs}"
        f"{' --order random' if random else ''}`."
        + (" The generated CSV files with the rows of impressions, clicks, listings and listing_prices shuffled "
           "(seeded), so that neither times nor ids arrive in order; Parquet input is not shuffled and left out."
           if random else ""),
        "",
        "Data: `leakless generate --impressions N` (30 days, seed 42), CSV in, Parquet partitioned by date out; "
        "every tool gets the same `--watermark` (the end of the period). Wall time is the median of the runs; "
        "peak memory is the largest maximum resident set size (`/usr/bin/time`). Ratio = tool time / leakless (CSV in) time.",
        "",
        "| impressions | tool | wall (s) | peak RSS (MB) | output (MB) | ratio to leakless | rows vs leakless |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for n, name, wall, rss, size, ratio, check in rows:
        lines.append(f"| {n:,} | {name} | {wall:.2f} | {rss:.0f} | {size:.0f} | {ratio:.2f} | {check} |")
    lines += ["", "The rich spec (`bench/rich.toml`: 11 features over listing, user and user x listing keys, "
              "windows of 1 h, 24 h, 7 d and lifetime, an as-of price, two labels) on the same files, "
              "against a hand-written Polars job of the same definitions (`bench/ref_polars_rich.py`). "
              "Ratio = tool time / leakless time.", "",
              "| impressions | tool | wall (s) | peak RSS (MB) | output (MB) | ratio to leakless | rows vs leakless |",
              "|---:|---|---:|---:|---:|---:|---|"]
    for n, name, wall, rss, size, ratio, check in rich_rows:
        lines.append(f"| {n:,} | {name} | {wall:.2f} | {rss:.0f} | {size:.0f} | {ratio:.2f} | {check} |")
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    results = HERE / "RESULTS.md"
    if random:
        # Its own section; the time-order tables and the notes stay.
        text = results.read_text() if results.exists() else "# Benchmark results\n"
        if "## Rows in random order" in text:
            head, _, rest = text.partition("## Rows in random order")
            tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        else:
            # Right after the time-order tables and their notes.
            cut = text.find("\n## ")
            head, tail = (text, "") if cut < 0 else (text[:cut], text[cut:])
        text = head.rstrip() + "\n\n" + "\n".join(lines) + "\n" + tail
        results.write_text(text)
    else:
        results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def shuffled_copy(source, target):
    """The CSV files of `source` with their rows in a seeded random order, in `target`
    (made once per generated data set)."""
    stamp = (source / "_generator.json").read_text()
    if (target / "_generator.json").exists() and (target / "_generator.json").read_text() == stamp:
        return target
    target.mkdir(parents=True, exist_ok=True)
    rng = random_module.Random(7)
    for name in ("impressions", "clicks", "listings", "listing_prices"):
        with open(source / f"{name}.csv") as f:
            header, *rows = f.readlines()
        rng.shuffle(rows)
        with open(target / f"{name}.csv", "w") as f:
            f.write(header)
            f.writelines(rows)
    (target / "_generator.json").write_text(stamp)
    return target


def scale(leakless, sizes):
    """leakless alone at large sizes, against 10 M in the same run."""
    lines = ["## Scale: leakless alone", "",
             f"Command: `python3 bench/run.py --large {','.join(map(str, sizes))}` (one run each; "
             "the data scales listings and users with impressions, 1 % and 10 %).", "",
             "| impressions | input CSV (MB) | wall (s) | peak RSS (MB) | time / time at 10 M | rows / s | stage timings (s) |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    base = None
    for n in [10_000_000] + sizes:
        data = HERE / "data" / str(n) / "csv"
        if not (data / "_generator.json").exists():
            sh(leakless, "generate", "--out", data, "--impressions", n)
        wm = json.loads((data / "_generator.json").read_text())["totals"]["watermark"]
        out = HERE / "out" / f"scale-{n}"
        cmd = [leakless, "build", "--impressions", data / "impressions.csv", "--clicks", data / "clicks.csv",
               "--listings", data / "listings.csv", "--out", out, "--watermark", wm, "--overwrite", "--quiet", "--json"]
        stats = HERE / "out" / ".time"
        started = time.perf_counter()
        summary = json.loads(subprocess.check_output(["/usr/bin/time", "-f", "%M", "-o", str(stats)] + [str(c) for c in cmd]))
        wall = time.perf_counter() - started
        rss = int(stats.read_text().split()[-1]) / 1024
        base = base or wall
        t = summary["timings"]
        stages = ", ".join(f"{k} {t[k]:.1f}" for k in ("compute", "probe", "write", "encode"))
        lines.append(f"| {n:,} | {du(data / 'impressions.csv'):.0f} | {wall:.1f} | {rss:.0f} | {wall / base:.1f} | "
                     f"{n / wall / 1e6:.2f} M | {stages} |")
        subprocess.run(["rm", "-rf", str(out)], check=True)
    results = HERE / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    text = text.split("## Scale: leakless alone")[0].rstrip() + "\n\n" + "\n".join(lines) + "\n"
    results.write_text(text)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
