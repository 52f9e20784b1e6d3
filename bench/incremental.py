"""What an incremental build costs against a full one: a day appended to
30 days of logs.

usage: python3 bench/incremental.py [--impressions 10000000] [--runs 3] [--order time|random]
                                    [--format parquet|delta]

Generates 31 days of the marketplace (`--impressions` per 30 days), writes
each day's impressions and clicks as a file of its own (`--order random`:
rows shuffled within each file, impression ids random, as bench/run.py's
random order), builds the first 30 days once (watermark the end of day
30), then appends day 31 (watermark a day later) and, in rounds, times
`leakless build --incremental` on a fresh hard-linked copy of the 30-day
dataset and a full `leakless build` of the 31 days. After each round the
two datasets are compared file by file (the manifest without its settings
and the inputs' modification times). `--format delta` (a binary built with
`--features delta`): the same as Delta tables, the 30-day table one version
and the incremental build one commit on its copy, against a full build into
a new table; the data files and profile compared. Writes
bench/incremental-ORDER.json (incremental-delta-ORDER.json) and
bench/INCREMENTAL.md (every order and format measured).
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
from pathlib import Path

import run as bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DAY_US = 86_400_000_000


def split_by_day(source, target, order):
    """`source`'s impressions and clicks as one CSV per UTC day in
    `target/impressions` and `target/clicks`; listings as one file."""
    stamp = (source / "_generator.json").read_text() + f"\nsplit by day, {order} order, 2\n"
    if (target / "_split.json").exists() and (target / "_split.json").read_text() == stamp:
        return
    shutil.rmtree(target, ignore_errors=True)
    rng = random.Random(7)
    for name, time in (("impressions", "impression_ts"), ("clicks", "click_ts")):
        (target / name).mkdir(parents=True)
        days = {}
        with open(source / f"{name}.csv") as f:
            header = f.readline()
            column = header.rstrip("\n").split(",").index(time)
            for line in f:
                days.setdefault(line.split(",")[column][:10], []).append(line)
        for day, rows in days.items():
            if order == "random":
                if name == "impressions":
                    rows = [bench.random_id(int(r[:r.index(",")])) + r[r.index(","):] for r in rows]
                rng.shuffle(rows)
            with open(target / name / f"{day}.csv", "w") as f:
                f.write(header)
                f.writelines(rows)
    shutil.copy(source / "listings.csv", target / "listings.csv")
    (target / "_split.json").write_text(stamp)


def link_inputs(days, target, last):
    """`target` with the day files of `days` up to `last` (hard links)."""
    shutil.rmtree(target, ignore_errors=True)
    for name in ("impressions", "clicks"):
        (target / name).mkdir(parents=True)
        for f in sorted((days / name).iterdir()):
            if f.stem <= last:
                os.link(f, target / name / f.name)
    os.link(days / "listings.csv", target / "listings.csv")


def delta_files(out):
    """A Delta table's latest version: its data files (named without the
    run) and its profile."""
    log = out / "_delta_log"
    latest = max(log.glob("*.json"))
    info = [json.loads(line)["commitInfo"] for line in latest.read_text().splitlines()
            if "commitInfo" in line]
    meta = out / info[0]["leakless"]["meta"]
    manifest = json.loads((meta / "_manifest.json").read_text())
    files = {"_profile.json": (meta / "_profile.json").read_bytes()}
    for partition in manifest["partitions"]:
        for f in partition["files"]:
            folder, name = f["path"].rsplit("/", 1) if "/" in f["path"] else ("", f["path"])
            files[f"{folder}/{name[:10]}.parquet"] = (out / f["path"]).read_bytes()
    return files


def dataset_files(out):
    """Every file of a dataset: the manifest without what names a run."""
    if (out / "_delta_log").exists():
        return delta_files(out)
    files = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name == "_manifest.json":
            manifest = json.loads(data)
            manifest.pop("settings")
            for inputs in manifest["inputs"].values():
                for f in inputs:
                    f.pop("modified_ns", None)
            data = json.dumps(manifest, sort_keys=True).encode()
        files[str(path.relative_to(out))] = data
    return files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--order", choices=["time", "random"], default="time")
    ap.add_argument("--format", choices=["parquet", "delta"], default="parquet")
    args = ap.parse_args()
    leakless = bench.leakless_binary()
    n31 = args.impressions * 31 // 30
    data = HERE / "data" / f"incremental-{args.impressions}-{bench.generator_key()}"
    generated = data / "generated"
    if not (generated / "_generator.json").exists():
        bench.sh(leakless, "generate", "--out", generated, "--impressions", n31, "--days", 31, "--format", "csv")
    days = data / f"days-{args.order}"
    split_by_day(generated, days, args.order)
    last = sorted(f.stem for f in (days / "impressions").iterdir())[-1]
    first_last = sorted(f.stem for f in (days / "impressions").iterdir())[-2]
    end = json.loads((generated / "_generator.json").read_text())["totals"]["watermark"]
    before_end = subprocess.run(
        ["python3", "-c", "import datetime as d,sys; t=d.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00'));"
         "print((t-d.timedelta(days=1)).strftime('%Y-%m-%dT%H:%M:%SZ'))", end],
        capture_output=True, text=True, check=True).stdout.strip()
    work = HERE / "out" / "incremental"
    inputs = work / "inputs"
    spec = ROOT / "examples" / "marketplace" / "leakless.toml"

    def build(out, watermark, *extra):
        return [leakless, "build", "--spec", spec,
                "--source", f"impressions={inputs / 'impressions'}", "--source", f"clicks={inputs / 'clicks'}",
                "--source", f"listings={inputs / 'listings.csv'}",
                "--watermark", watermark, "--out", out, "--format", args.format, "--quiet", "--json", *extra]

    # The 30-day dataset, built once.
    link_inputs(days, inputs, first_last)
    base = work / "base"
    shutil.rmtree(base, ignore_errors=True)
    bench.sh(*build(base, before_end, "--overwrite"), stdout=subprocess.DEVNULL)
    # Day 31 lands.
    link_inputs(days, inputs, last)
    measured = {"incremental": [], "full": []}
    identical = []
    for _ in range(args.runs):
        copy = work / "dataset"
        shutil.rmtree(copy, ignore_errors=True)
        subprocess.run(["cp", "-al", str(base), str(copy)], check=True)
        wall, peak, out = bench.timed(build(copy, end, "--incremental"), stdout=subprocess.PIPE)
        summary = json.loads(out)
        inc = summary["increment"]
        measured["incremental"].append({"wall": wall, "peak_mb": peak, "recomputed": len(inc["recompute"]),
                                        "carried": len(inc["carried"]), "full": inc["full"]})
        print(f"incremental: {wall:.2f} s, {peak:.0f} MB, {len(inc['recompute'])} partitions computed, "
              f"{len(inc['carried'])} carried", flush=True)
        full = work / "full"
        shutil.rmtree(full, ignore_errors=True)
        wall, peak, _ = bench.timed(build(full, end, "--overwrite"), stdout=subprocess.PIPE)
        measured["full"].append({"wall": wall, "peak_mb": peak})
        print(f"full: {wall:.2f} s, {peak:.0f} MB", flush=True)
        same = dataset_files(copy) == dataset_files(full)
        identical.append(same)
        print(f"byte-identical: {same}", flush=True)
        if not same:
            raise SystemExit("the incremental build differs from the full build")
    result = {"impressions_per_30_days": args.impressions, "impressions": n31, "order": args.order,
              "format": args.format, "runs": measured, "identical": identical}
    name = {"parquet": "incremental", "delta": "incremental-delta"}[args.format]
    (HERE / f"{name}-{args.order}.json").write_text(json.dumps(result, indent=1) + "\n")
    render()


def render():
    lines = ["# Incremental builds", "",
             "`python3 bench/incremental.py --impressions N --runs R --order ORDER [--format delta]`: 31 days of the marketplace "
             "(N impressions per 30 days) in one file per day and source; the first 30 days built once, then day 31 "
             "appended and the watermark moved a day: `leakless build --incremental` on a hard-linked copy of the "
             "30-day dataset against a full build of the 31 days, in rounds (2 cores; medians; peak memory of the "
             "process tree). Every round compares the two datasets file by file (the manifest without its settings; a Delta "
             "table's current data files, named without their run, and its profile). Delta Lake: the 30-day table is "
             "version 0, the incremental build one commit on its copy (the files of 29 days left as they are), the full "
             "build a new table; a binary built with `--features delta`."]
    for path in sorted(HERE.glob("incremental-*.json"), key=lambda p: ("delta" in p.name, p.name)):
        r = json.loads(path.read_text())
        inc, full = r["runs"]["incremental"], r["runs"]["full"]
        wi, wf = statistics.median(x["wall"] for x in inc), statistics.median(x["wall"] for x in full)
        fmt = {"parquet": "Parquet", "delta": "Delta Lake"}[r.get("format", "parquet")]
        lines += ["", f"## {fmt}, {r['order']} order, {r['impressions']:,} impressions over 31 days, {len(inc)} runs", "",
                  "| build | wall (s) | peak MB | partitions computed / carried |", "|---|---|---|---|",
                  f"| full | {wf:.2f} | {statistics.median(x['peak_mb'] for x in full):.0f} | 31 / 0 |",
                  f"| incremental | {wi:.2f} | {statistics.median(x['peak_mb'] for x in inc):.0f} | "
                  f"{inc[0]['recomputed']} / {inc[0]['carried']} |", "",
                  f"Incremental / full: **{wi / wf:.3f}** (target: at most 0.15). "
                  f"Byte-identical in every round: {all(r['identical'])}."]
    (HERE / "INCREMENTAL.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
