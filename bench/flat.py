"""Cost per spine row as the events per window grow (issue 15).

usage: python3 bench/flat.py [--densities 10,100,1000,10000] [--spine 1000000] [--runs 3]

The same one-feature spec per op (count, sum, mean, min, max, first, last,
count_distinct, time_since_last over a sliding 1 h window) on data with 10,
100, 1,000 and 10,000 events per key per window. The events are as many at
every density (about 2.4 M over 25 hours: fewer keys when each is denser),
spread uniformly over each key's hours with a float value in quarters and
an int value of 1,000 distinct ones; the spine is `--spine` rows at random
keys and times, written in random order with random ids. Each op is run
`--runs` times per density, the densities in turn in each round; the probe
stage's CPU time (from `--json`) over the spine rows is reported, median of
the runs. `LEAKLESS_BIN=PATH` uses that binary instead of building one. Writes bench/FLAT.md and keeps the figures in bench/flat.json.
"""
import argparse
import json
import statistics
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
WINDOW_H = 1
HOURS = 25
EVENTS = 2_400_000
OPS = ["count", "sum", "mean", "min", "max", "first", "last", "count_distinct", "time_since_last"]


def spec(op, data):
    column = {"count": None, "time_since_last": None, "count_distinct": "c"}.get(op, "v")
    column_line = f'column = "{column}"\n' if column else ""
    return f"""version = 1
[sources.probes]
path = "{data}/probes.parquet"
time = "ts"
columns = {{ id = "int64", k = "int64", ts = "timestamp" }}

[sources.events]
path = "{data}/events.parquet"
time = "ts"
columns = {{ k = "int64", v = "float64", c = "int64", ts = "timestamp" }}

[spine]
source = "probes"
columns = ["id", "k"]

[features.f]
source = "events"
key = "k"
op = "{op}"
{column_line}window = "{WINDOW_H}h"
"""


def generate(py, folder, density, spine, seed):
    """Writes events.parquet and probes.parquet with numpy and pyarrow."""
    if (folder / "probes.parquet").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    code = f"""
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
rng = np.random.default_rng({seed})
H = 3_600_000_000
keys = max(1, round({EVENTS} / ({density} * {HOURS // WINDOW_H})))
per_key = {density} * {HOURS // WINDOW_H}
n = keys * per_key
start = 1_790_000_000_000_000
k = np.repeat(rng.permutation(keys) * 7919 + 13, per_key).astype(np.int64)
ts = start + rng.integers(0, {HOURS} * H, n)
order = rng.permutation(n)
v = rng.integers(0, 4000, n) / 4.0
c = rng.integers(0, 1000, n)
ev = pa.table({{"k": k[order], "v": v[order], "c": c[order].astype(np.int64),
               "ts": pa.array(ts[order], pa.timestamp("us", "UTC"))}})
pq.write_table(ev, "{folder}/events.parquet", row_group_size=1 << 20)
m = {spine}
pk = (rng.integers(0, keys, m) * 7919 + 13).astype(np.int64)
pt = start + H + rng.integers(0, ({HOURS} - 1) * H, m)
ids = rng.permutation(m).astype(np.int64) * 104729 % (1 << 40)
sp = pa.table({{"id": ids, "k": pk, "ts": pa.array(pt, pa.timestamp("us", "UTC"))}})
pq.write_table(sp, "{folder}/probes.parquet", row_group_size=1 << 20)
"""
    subprocess.run([str(py), "-c", code], check=True)


def main():
    import run  # the release build and the virtualenv of the main benchmark

    ap = argparse.ArgumentParser()
    ap.add_argument("--densities", default="10,100,1000,10000")
    ap.add_argument("--spine", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not run.PY.exists():
        run.sh("python3", "-m", "venv", run.VENV)
    run.sh(run.PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "numpy", "pyarrow")
    leakless = run.leakless_binary()
    densities = [int(d) for d in args.densities.split(",")]
    out = HERE / "out" / "flat"
    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for d in densities:
        folders[d] = HERE / "data" / f"flat-{d}-{args.spine}"
        generate(run.PY, folders[d], d, args.spine, seed=d)
    probe = {(op, d): [] for op in OPS for d in densities}
    build = {(op, d): [] for op in OPS for d in densities}
    events = {}
    wall = {(op, d): [] for op in OPS for d in densities}
    rows = {}
    for _ in range(args.runs):
        for op in OPS:
            for d in densities:
                spec_path = out / f"{op}-{d}.toml"
                spec_path.write_text(spec(op, folders[d]))
                seconds, _, stdout = run.timed([leakless, "build", "--spec", spec_path, "--out", out / f"{op}-{d}",
                                                "--overwrite", "--quiet", "--json"], stdout=subprocess.PIPE)
                summary = json.loads(stdout)
                probe[(op, d)].append(summary["timings"]["probe"])
                build[(op, d)].append(summary["timings"]["index_build"])
                events[d] = summary["rows_read"]["events"]
                wall[(op, d)].append(seconds)
                rows[d] = summary["rows_written"]
                print(f"{op:<16} {d:>6} events/window: probe {summary['timings']['probe']:.3f} s, wall {seconds:.2f} s",
                      flush=True)
    result = {"spine": args.spine, "runs": args.runs, "densities": densities, "rows": rows,
              "probe_ns_per_row": {op: {d: statistics.median(probe[(op, d)]) / rows[d] * 1e9 for d in densities}
                                   for op in OPS},
              "index_build_ns_per_event": {op: {d: statistics.median(build[(op, d)]) / events[d] * 1e9
                                                for d in densities} for op in OPS},
              "wall_s": {op: {d: statistics.median(wall[(op, d)]) for d in densities} for op in OPS}}
    (HERE / "flat.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Cost per spine row as the events per window grow", "",
             f"Command: `python3 bench/flat.py --densities {args.densities} --spine {args.spine} --runs {args.runs}`. "
             f"One feature per build over a sliding {WINDOW_H} h window; about {EVENTS:,} events at every density "
             f"(fewer keys when each is denser), {args.spine:,} spine rows in random order with random ids. "
             "Probe CPU (ns per spine row, the `probe` figure of `--json`, median of the runs), the index build "
             "(ns per event, `index_build`, median) and the build's wall time (s, median).", "",
             "| op | " + " | ".join(f"{d:,} events/window" for d in densities) + " | largest / smallest |",
             "|---|" + "---:|" * (len(densities) + 1)]
    for op in OPS:
        ns = result["probe_ns_per_row"][op]
        ib = result["index_build_ns_per_event"][op]
        cells = [f"{ns[d]:.0f} ns; {ib[d]:.0f} ns/event; {result['wall_s'][op][d]:.2f} s" for d in densities]
        lines.append(f"| `{op}` | " + " | ".join(cells) + f" | {ns[densities[-1]] / ns[densities[0]]:.2f} |")
    (HERE / "FLAT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
