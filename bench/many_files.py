"""Many small input files: leakless against the hand-written Polars job on
the same logs cut into more and more files, as hourly logs from many
producers arrive.

usage: python3 bench/many_files.py [--impressions 1000000] [--files 1,100,1000,10000] [--runs 3]
                                  [--before OLD_BINARY] [--order time|random]

The marketplace of `leakless generate --impressions N` (CSV, time order),
its impressions and clicks each cut into F files of consecutive rows (the
listings stay one file; `--order random` cuts the shuffled copy that
`run.py --order random` uses, so every file holds rows from the whole
month); every tool reads the same folders (Polars through
a glob), gets the same `--watermark`, and the rows are compared
(compare.py). Per F: each tool's median wall time, its peak memory (the
process tree), and the time per input file beyond the one-file run.
Measurements go to bench/many_files.json, the table to bench/MANY_FILES.md.
"""
import argparse
import json
import subprocess
import time
from pathlib import Path

import run  # the virtualenv, the binary, timing and rounds of the main benchmark

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "many_files.json"


def cut(source, target, files):
    """`source` (a CSV file) as `files` files of consecutive rows in the
    folder `target`, made once."""
    if (target / "_done").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with open(source) as f:
        header, *rows = f.readlines()
    for i in range(files):
        lo, hi = len(rows) * i // files, len(rows) * (i + 1) // files
        (target / f"part-{i:06d}.csv").write_text(header + "".join(rows[lo:hi]))
    (target / "_done").write_text("")
    return target


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=1_000_000)
    ap.add_argument("--files", default="1,100,1000,10000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", help="another leakless binary (an earlier build) to run beside")
    ap.add_argument("--order", choices=["time", "random"], default="time")
    args = ap.parse_args()
    run.ensure_venv()
    leakless = run.leakless_binary()
    n = args.impressions
    data = run.data_folder(n)
    if not (data / "csv" / "_generator.json").exists():
        run.sh(leakless, "generate", "--out", data / "csv", "--impressions", n, "--format", "csv")
    wm = json.loads((data / "csv" / "_generator.json").read_text())["totals"]["watermark"]
    csv = data / "csv" if args.order == "time" else run.shuffled_copy(data / "csv", data / "csv-random")
    listings = csv / "listings.csv"
    out = HERE / "out" / f"many-{n}-{args.order}"
    rows = []
    for files in [int(f) for f in args.files.split(",")]:
        if files == 1:
            imp, clk = csv / "impressions.csv", csv / "clicks.csv"
            imp_glob, clk_glob = imp, clk
        else:
            suffix = "" if args.order == "time" else "-random"
            imp = cut(csv / "impressions.csv", data / f"impressions-{files}{suffix}", files)
            clk = cut(csv / "clicks.csv", data / f"clicks-{files}{suffix}", files)
            imp_glob, clk_glob = imp / "*.csv", clk / "*.csv"
        tools = {
            "leakless": [leakless, "build", "--impressions", imp, "--clicks", clk, "--listings", listings,
                         "--out", out / "leakless", "--watermark", wm, "--overwrite", "--quiet"],
            "Polars join_asof": [run.PY, HERE / "ref_polars.py", imp_glob, clk_glob, listings,
                                 out / "polars", wm],
        }
        if args.before:
            tools[f"leakless before ({args.before})"] = [Path(args.before), *tools["leakless"][1:]]
            tools[f"leakless before ({args.before})"][tools["leakless"].index("--out") + 1] = out / "before"
        results = run.in_rounds(tools, args.runs, lambda cmd: Path(cmd[-2]))
        check = subprocess.run([run.PY, HERE / "compare.py", out / "leakless", out / "polars"],
                                   capture_output=True, text=True)
        same = "identical" if check.returncode == 0 else f"DIFFERENT: {check.stdout.strip()}"
        for name, (wall, rss, every) in results.items():
            print(f"{files:>6} files {name:<20} {wall:7.2f} s {rss:8.0f} MB {same}", flush=True)
            rows.append({"files": files, "tool": name, "wall": wall, "walls": [w for w, _ in every],
                         "rss": rss, "rows": same})
    entry = {"impressions": n, "order": args.order, "date": time.strftime("%Y-%m-%d", time.gmtime()),
             "command": f"python3 bench/many_files.py --impressions {n} --files {args.files} --runs {args.runs}"
                        + (f" --before {args.before}" if args.before else "")
                        + (" --order random" if args.order == "random" else ""),
             "versions": run.reference_versions(), "rows": rows}
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "rows" in stored:  # the first layout: one entry, in time order
        stored = {"time": stored}
    stored[args.order] = entry
    RESULTS.write_text(json.dumps(stored, indent=1) + "\n")
    (HERE / "MANY_FILES.md").write_text(render_all(stored))
    print(render_all(stored))


def render_all(stored):
    parts = [render(stored[o]) for o in ("time", "random") if o in stored]
    head, *rest = parts
    return head + "".join("\n" + p.split("\n", 4)[4] for p in rest)


def render(e):
    one = {r["tool"]: r["wall"] for r in e["rows"] if r["files"] == 1}
    lines = ["# Many small input files", "",
             "Written by `bench/many_files.py` from `bench/many_files.json`.", "",
             f"### {'Rows in time order' if e.get('order', 'time') == 'time' else 'Rows in random order (the shuffled copy)'}", "",
             f"Date: {e['date']}. Command: `{e['command']}`. References: {run.versions_text(e['versions'])}. "
             f"The marketplace of `leakless generate --impressions {e['impressions']:,}` (CSV, time order), its "
             "impressions and clicks each cut into F files of consecutive rows, the listings one file; both "
             "tools read the same folders (Polars through a glob). Wall time is the median of the runs, the "
             "tools in turn; peak memory that of the process tree.", "",
             "| files per source | tool | wall (s), median | every run (s) | peak RSS (MB) | ms per file beyond one file | leakless / Polars | rows |",
             "|---:|---|---:|---|---:|---:|---:|---|"]
    if e.get("note"):
        lines[-2:-2] = [e["note"], ""]
    walls = {(r["files"], r["tool"]): r["wall"] for r in e["rows"]}
    for r in e["rows"]:
        extra = "-" if r["files"] == 1 or r["tool"] not in one else \
            f"{(r['wall'] - one[r['tool']]) * 1000 / (2 * r['files']):.3f}"
        ratio = walls.get((r["files"], "leakless"), 0) / walls.get((r["files"], "Polars join_asof"), 1)
        lines.append(f"| {r['files']:,} | {r['tool']} | {r['wall']:.2f} | "
                     f"{', '.join(f'{w:.2f}' for w in r['walls'])} | {r['rss']:.0f} | {extra} | "
                     f"{ratio:.2f}x | {r['rows']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
