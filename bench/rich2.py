"""The second rich spec: leakless against a hand-written Polars job of the
same definitions, on data of bench/gen_rich2.py.

usage: python3 bench/rich2.py [--requests 10000000] [--runs 3] [--leakless PATH] [--format parquet|csv]
                              [--order random|time]

Creates bench/.venv (numpy, pyarrow, Polars, DuckDB) if missing, generates
the data once into bench/data/rich2-N-HASH (HASH: of gen_rich2.py, so that
the data is made again when the generator changes), runs
`leakless build --spec bench/rich2.toml` and bench/ref_polars_rich2.py
`--runs` times, in turn in each round (run.in_rounds: a slow spell of this
shared machine falls on both), checks that their rows are identical on
every column (compare.py --all-columns), stores the measurements in
bench/rich2.json (one entry per size) and writes bench/RICH2.md from it.
Without --leakless, leakless is built in release mode (run.leakless_binary).
The generator writes every table shuffled, with random ids; `--order time`
runs on a copy (bench/data/rich2-N-HASH-time) with each table's rows sorted
by its time column (a stable sort, the ids still random), as logs that
arrive in time order are.
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import run  # the virtualenv, timing and rounds of the main benchmark

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "rich2.json"
SOURCES = {"requests": "requests", "views": "views", "purchases": "purchases",
           "item_prices": "item_prices", "user_segments": "user_segments"}
LEAKLESS = "leakless --spec bench/rich2.toml"
POLARS = "Polars, the same definitions by hand (ref_polars_rich2.py)"


def ensure_venv():
    if not run.PY.exists():
        run.sh(sys.executable, "-m", "venv", run.VENV)
    run.sh(run.PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "numpy", "pyarrow", "polars", "duckdb")


def data_folder(n, fmt):
    key = hashlib.sha256((HERE / "gen_rich2.py").read_bytes()).hexdigest()[:10]
    return HERE / "data" / (f"rich2-{n}-{key}" if fmt == "parquet" else f"rich2-{n}-{fmt}-{key}")


def parquet_bytes(folder):
    """Every Parquet file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def source_path(data, name, fmt):
    """A table's file, or its folder when the generator split it into parts."""
    single = data / f"{name}.{fmt}"
    return single if single.exists() else data / name


TIME_COLUMNS = {"requests": "request_ts", "views": "view_ts", "purchases": "purchase_ts",
                "item_prices": "valid_from", "user_segments": "valid_from"}


def time_ordered_copy(data, fmt):
    """`data` with each table's rows sorted by its time column (stable),
    each folder of parts cut again into as many parts, made once."""
    target = data.with_name(data.name + "-time")
    if (target / "_generator.json").exists():
        return target
    code = r'''
import sys, pathlib, pyarrow as pa, pyarrow.parquet as pq, pyarrow.csv as pc, pyarrow.compute as c
src, dst, fmt, name, time = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
single = src / f"{name}.{fmt}"
files = [single] if single.exists() else sorted(p for p in (src / name).iterdir() if p.suffix == f".{fmt}")
read = pq.read_table if fmt == "parquet" else pc.read_csv
table = pa.concat_tables([read(f) for f in files])
table = table.take(c.sort_indices(table, sort_keys=[(time, "ascending")]))
for i, f in enumerate(files):
    out = dst / f.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    lo, hi = len(table) * i // len(files), len(table) * (i + 1) // len(files)
    part = table.slice(lo, hi - lo)
    if fmt == "parquet":
        pq.write_table(part, out)
    else:
        pc.write_csv(part, out)
'''
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name, time_column in TIME_COLUMNS.items():
        run.sh(run.PY, "-c", code, data, staging, fmt, name, time_column)
    shutil.copy(data / "_generator.json", staging / "_generator.json")
    staging.rename(target)
    return target


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model or platform.machine()}), {mem:.0f} GiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--leakless", help="a leakless binary (default: build it in release mode)")
    ap.add_argument("--order", choices=["random", "time"], default="random",
                    help="rows as generated (shuffled), or each table sorted by its time column")
    ap.add_argument("--shards", type=int,
                    help="also measure `leakless build --shards N` (bounded memory), in the same rounds")
    args = ap.parse_args()
    ensure_venv()
    leakless = Path(args.leakless) if args.leakless else run.leakless_binary()
    if not leakless.name.endswith("leakless"):
        # run.in_rounds tells leakless (which overwrites its own output) from
        # the references (whose output it removes) by this name.
        sys.exit(f"--leakless: the binary's name must end with `leakless`: {leakless}")
    n = args.requests
    data = data_folder(n, args.format)
    gen_seconds = None
    if not (data / "_generator.json").exists():
        started = time.perf_counter()
        run.sh(run.PY, HERE / "gen_rich2.py", data, "--requests", n, "--format", args.format)
        gen_seconds = time.perf_counter() - started
        print(f"generated {data} in {gen_seconds:.1f} s", flush=True)
    if args.order == "time":
        data = time_ordered_copy(data, args.format)
    gen = json.loads((data / "_generator.json").read_text())
    wm = gen["watermark"]
    out = HERE / "out" / f"rich2-{n}-{args.order}"
    out.mkdir(parents=True, exist_ok=True)
    sources = [a for name in SOURCES for a in ("--source", f"{name}={source_path(data, name, args.format)}")]
    tools = {
        LEAKLESS: [leakless, "build", "--spec", HERE / "rich2.toml", *sources, "--out", out / "leakless",
                   "--watermark", wm, "--overwrite", "--quiet"],
        POLARS: [run.PY, HERE / "ref_polars_rich2.py", data, out / "polars", wm],
    }
    sharded = f"leakless --spec bench/rich2.toml --shards {args.shards}" if args.shards else None
    if sharded:
        tools[sharded] = [leakless, "build", "--spec", HERE / "rich2.toml", *sources, "--out",
                          out / "leakless-shards", "--shards", str(args.shards), "--watermark", wm, "--overwrite",
                          "--quiet"]
    startup = run.startup_seconds(leakless, spark=False)
    results = run.in_rounds(tools, args.runs, lambda cmd: Path(cmd[-2]))
    for name, (wall, rss, _) in results.items():
        print(f"{n:>11,} {name:<60} {wall:7.2f} s {rss:8.0f} MB", flush=True)
    check = subprocess.run([run.PY, HERE / "compare.py", out / "leakless", out / "polars", "--all-columns"],
                           capture_output=True, text=True)
    rows = check.stdout.strip() if check.returncode == 0 else f"DIFFERENT: {check.stdout.strip()} {check.stderr.strip()}"
    print(rows, flush=True)
    # The sharded build must write the same bytes as the whole one.
    same_bytes = None
    if sharded:
        same_bytes = parquet_bytes(out / "leakless-shards") == parquet_bytes(out / "leakless")
        print(f"--shards {args.shards}: {'the same bytes' if same_bytes else 'OTHER BYTES'}", flush=True)
    summary = json.loads(subprocess.check_output([str(c) for c in tools[LEAKLESS] + ["--json"]],
                                                 stderr=subprocess.DEVNULL))
    version = subprocess.check_output([str(leakless), "--version"], text=True).strip()
    base = results[LEAKLESS][0]
    entry = {
        "n": n, "order": args.order, "format": args.format, "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": f"python3 bench/rich2.py --requests {n} --runs {args.runs}"
                   + (" --order time" if args.order == "time" else "")
                   + (f" --format {args.format}" if args.format != "parquet" else "")
                   + (f" --shards {args.shards}" if args.shards else "")
                   + (f" --leakless {args.leakless}" if args.leakless else ""),
        "machine": machine(), "leakless": version, "runs": args.runs, "data": str(data.relative_to(HERE.parent)),
        "rows_in": gen["rows"], "watermark": wm, "generate_seconds": gen_seconds,
        "startup": {"leakless": startup["leakless"], "polars": startup["polars"]},
        "tools": [{"tool": name, "wall": wall, "walls": [w for w, _ in every], "rss": rss,
                   "startup": startup["polars" if name == POLARS else "leakless"],
                   "output": run.du(Path(tools[name][tools[name].index("--out") + 1]) if name != POLARS
                                    else out / "polars"), "ratio": wall / base}
                  for name, (wall, rss, every) in results.items()],
        "leakless_over_polars": base / results[POLARS][0], "versions": run.reference_versions(),
        "rows": rows, "identical": check.returncode == 0,
        "sharded": {"tool": sharded, "over_polars": results[sharded][0] / results[POLARS][0],
                    "same_bytes": same_bytes} if sharded else None,
        "leakless_summary": {k: summary.get(k) for k in ("rows_written", "immature_held_back", "timings")},
    }
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stored[str(n) if args.order == "random" else f"{n}-time"] = entry
    RESULTS.write_text(json.dumps(stored, indent=1) + "\n")
    text = render(stored)
    (HERE / "RICH2.md").write_text(text)
    print(text)


def render(stored):
    lines = ["# The second rich spec: leakless against Polars", "",
             "Written by `bench/rich2.py` from `bench/rich2.json` (one section per size, the latest run of each).", "",
             "The spec, `bench/rich2.toml`: a search and ads marketplace with five sources (`requests`, the spine, "
             "which also serves features; `views`; `purchases`, 2 min late; versioned `item_prices`, 5 min late, "
             "and `user_segments`, 1 h late), int64 (`item_id`, `query_id`), string (`user`) and composite "
             "(`user` x `item_id`) keys; 25 features (lookup, time_since, count, count_distinct, sum, mean, min, "
             "max, first, last, time_since_last) over windows of 1 h, 6 h, 24 h, 7 d, 30 d and lifetime, with "
             "`where` filters on three; two labels, `purchased_24h` (exists, 24 h) and `item_views_1h_after_5m` "
             "(count, 1 h after a 5 min offset). The data, `bench/gen_rich2.py`: 30 days, random ids, rows "
             "shuffled, users, items and queries Zipf-like (a few hot keys), times mostly whole seconds (ties), "
             "3 % of the requests exactly on a window bound, nulls in values and keys, every float a multiple "
             "of 1/4; Parquet in (both tools read the same files), every tool gets the same `--watermark` (the "
             "end of the period). The reference, `bench/ref_polars_rich2.py`: per-key sorted frames, running "
             "sums and strict as-of joins (`C(<q) - C(<q - w)`), count_distinct by the previous-occurrence "
             "trick, `rolling_{min,max}_by` for windowed min and max; its rows are compared with leakless's on "
             "every column (`compare.py --all-columns`).", "",
             "Wall time is the median of the runs, the two tools taken in turn in each round, each run after an "
             "`os.sync()`; peak memory is that of the whole process tree (sampled every 20 ms, and at least "
             "`/usr/bin/time`'s largest process); start-up is the median wall time of an empty run "
             "(`leakless --version`; Python importing Polars and running a trivial query)."]
    for key in sorted(stored, key=lambda k: (stored[k]["n"], stored[k].get("order", "random") != "random")):
        e = stored[key]
        rows_in = ", ".join(f"{k} {v:,}" for k, v in e["rows_in"].items())
        order = {"random": "rows in random order", "time": "each table in time order"}[e.get("order", "random")]
        lines += ["", f"## {e['n']:,} requests, {order}", "",
                  f"Date: {e['date']}. Command: `{e['command']}` ({e['leakless']}). Machine: {e['machine']}. "
                  f"Input rows: {rows_in} ({e['format']}, `{e['data']}`). Watermark {e['watermark']}."
                  + (f" References: {run.versions_text(e['versions'])}." if e.get("versions") else ""), "",
                  "| tool | wall (s), median | every run (s) | start-up (s) | peak RSS, process tree (MB) "
                  "| output (MB) | wall / leakless's |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for r in e["tools"]:
            walls = ", ".join(f"{w:.2f}" for w in r["walls"])
            lines.append(f"| {r['tool']} | {r['wall']:.2f} | {walls} | {r['startup']:.2f} | {r['rss']:.0f} | "
                         f"{r['output']:.0f} | {r['ratio']:.2f} |")
        s = e["leakless_summary"]
        timings = ", ".join(f"{k} {v:.2f}" for k, v in (s.get("timings") or {}).items())
        lines += ["", f"leakless / Polars wall: **{e['leakless_over_polars']:.2f}x**. Rows: {e['rows']}. "
                  f"leakless wrote {s.get('rows_written'):,} rows, held back {s.get('immature_held_back'):,} "
                  f"immature; its `--json` stage timings (s, one more run): {timings}."]
        if e.get("sharded"):
            sh = e["sharded"]
            lines += ["", f"`{sh['tool']}` / Polars wall: **{sh['over_polars']:.2f}x**; its Parquet files "
                      f"{'are byte for byte those of the build without shards' if sh['same_bytes'] else 'DIFFER'}."]
        if e.get("generate_seconds"):
            lines.append(f"Generating the data (`bench/gen_rich2.py`, one core) took {e['generate_seconds']:.1f} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
