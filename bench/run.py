"""The leakless benchmark: leakless against hand-written DuckDB and Polars
jobs (and a DuckDB I/O floor) on the same generated data, in one run.

usage: python3 bench/run.py [--sizes 1000000,10000000] [--runs 3] [--order time|random]
                            [--spark-max 1000000] [--large 100000000,300000000]

Creates bench/.venv with DuckDB, Polars and pyarrow if missing, builds
leakless in release mode, generates 30 days of data per size with
`leakless generate`, runs every tool `--runs` times under /usr/bin/time
(PySpark only up to --spark-max impressions),
checks every reference's rows against leakless's, stores the measurements
in bench/results.json and writes bench/RESULTS.md from them (a section per
order and for scale, and the issue 8 targets computed from the data).
"""
import argparse
import hashlib
import random as random_module
import re
import json
import threading
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
    # A binary given in LEAKLESS_BIN (one built earlier, while cargo is busy
    # with something else) is used as it is.
    if os.environ.get("LEAKLESS_BIN"):
        return Path(os.environ["LEAKLESS_BIN"])
    # The target folder `.ci/run` uses, unless one is set: one build serves both.
    os.environ.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "leakless-target"))
    sh("cargo", "build", "--release", "--quiet", "-p", "leakless-cli", cwd=ROOT)
    meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT))
    return Path(meta["target_directory"]) / "release" / "leakless"


def reference_versions():
    """The versions of the references in the bench's virtualenv: the
    ratios move with them (Polars 2.1 is faster than the 1.x of earlier
    runs), so every section names them."""
    code = ("import importlib.metadata as m, json\n"
            "v = {}\n"
            "for p in ('polars', 'duckdb', 'pyarrow', 'pyspark'):\n"
            "    try: v[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(v))")
    return json.loads(subprocess.check_output([str(PY), "-c", code], text=True))


def versions_text(versions):
    names = {"polars": "Polars", "duckdb": "DuckDB", "pyarrow": "PyArrow", "pyspark": "PySpark"}
    return ", ".join(f"{names.get(k, k)} {v}" for k, v in (versions or {}).items())


def tree_rss_mb(root):
    """Resident MB summed over `root` and all its descendants, found through
    /proc/PID/task/TID/children (a few small reads per sample, so that the
    sampling does not take CPU from the tool it measures)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total / 2**20


def timed(cmd, stdout=subprocess.DEVNULL):
    """Wall seconds and peak resident MB of one run: the larger of the peak
    of the whole process tree (sampled every 20 ms: a JVM under a Python
    driver counts) and the largest single process's peak (`/usr/bin/time`)."""
    stats = HERE / "out" / ".time"
    # The previous run's output still on its way to disk would slow this
    # one (its writes and fsyncs queue behind it): every run starts clean.
    os.sync()
    started = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(stats)] + [str(c) for c in cmd], stdout=stdout)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    single = int(stats.read_text().split()[-1]) / 1024
    return wall, max(peak[0], single), out


def generator_key():
    """Names the data folders: the generator's source and leakless's version,
    so that data is made again whenever the generator changes."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "crates" / "leakless" / "src" / "synth").rglob("*.rs")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update((ROOT / "crates" / "leakless" / "Cargo.toml").read_bytes())
    return h.hexdigest()[:10]


def data_folder(n):
    return HERE / "data" / f"{n}-{generator_key()}"


def startup_seconds(leakless, spark):
    """The wall time of an empty run of each tool (median of 3): the
    interpreter or JVM start-up and imports, which every run pays."""
    empty = {
        "leakless": [leakless, "--version"],
        "duckdb": [PY, "-c", "import duckdb; duckdb.connect().execute('SELECT 1')"],
        "polars": [PY, "-c", "import polars as pl; pl.DataFrame({'a': [1]}).lazy().collect()"],
    }
    if spark:
        empty["spark"] = [PY, "-c", "from pyspark.sql import SparkSession; "
                          "s = SparkSession.builder.master('local[2]').config('spark.ui.enabled', 'false')"
                          ".getOrCreate(); s.range(1).count(); s.stop()"]
    return {k: statistics.median(timed(cmd)[0] for _ in range(3)) for k, cmd in empty.items()}


def tool_kind(name):
    """Which empty run a tool's row subtracts."""
    if name.startswith("leakless"):
        return "leakless"
    if name.startswith("Polars"):
        return "polars"
    if name.startswith("PySpark"):
        return "spark"
    return "duckdb"


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
    ap.add_argument("--large", help="sizes (e.g. 100000000,300000000) to run leakless alone at, once each, "
                    "against leakless at 10,000,000; replaces the scale section of RESULTS.md (two sizes: a "
                    "projection to 1 B)")
    args = ap.parse_args()
    ensure_venv()
    leakless = leakless_binary()
    if args.large:
        return scale(leakless, [int(s) for s in args.large.split(",")], args.runs)
    (HERE / "out").mkdir(exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    startup = startup_seconds(leakless, spark=min(sizes) <= args.spark_max)
    print("start-up (s): " + ", ".join(f"{k} {v:.2f}" for k, v in startup.items()), flush=True)
    rows = []
    rich_rows = []
    notes = []
    for n in sizes:
        data = data_folder(n)
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
            "floor: DuckDB read 3 CSVs, write every output column sorted": [PY, HERE / "ref_duckdb.py", *inputs["csv"], out / "floor", wm, "floor"],
            "Polars join_asof": [PY, HERE / "ref_polars.py", *inputs["csv"], out / "polars", wm],
            "DuckDB ASOF JOIN": [PY, HERE / "ref_duckdb.py", *inputs["csv"], out / "duckdb", wm],
        }
        if args.order == "random":
            del tools["leakless (Parquet in)"]
        if n <= args.spark_max:
            tools["PySpark window functions, local[2]"] = [PY, HERE / "ref_spark.py", *inputs["csv"], out / "spark", wm]
        def target(cmd):
            return Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else Path(cmd[-3] if cmd[-1] == "floor" else cmd[-2])
        results = in_rounds(tools, args.runs, target)
        for name, (wall, rss, _) in results.items():
            print(f"{n:>11,} {name:<60} {wall:7.2f} s {rss:8.0f} MB", flush=True)
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
            rows.append({"n": n, "tool": name, "wall": wall, "startup": startup[tool_kind(name)], "rss": rss,
                         "output": size, "ratio": wall / base, "rows": check})
        # The rich spec: 11 features over three keys, an as-of price, two labels.
        rich = {
            "leakless --spec bench/rich.toml": [leakless, "build", "--spec", HERE / "rich.toml",
                                                *[a for t in ("impressions", "clicks", "listings", "listing_prices")
                                                  for a in ("--source", f"{t}={csv_dir / (t + '.csv')}")],
                                                "--out", out / "rich-leakless", "--watermark", wm, "--overwrite", "--quiet"],
            "Polars, the rich spec by hand": [PY, HERE / "ref_polars_rich.py", csv_dir, out / "rich-polars", wm],
        }
        rich_results = {name: (wall, rss) for name, (wall, rss, _) in
                        in_rounds(rich, args.runs, target).items()}
        for name, (wall, rss) in rich_results.items():
            print(f"{n:>11,} {name:<60} {wall:7.2f} s {rss:8.0f} MB", flush=True)
        r = subprocess.run([PY, HERE / "compare.py", out / "rich-leakless", out / "rich-polars", "--all-columns"],
                           capture_output=True, text=True)
        rich_check = "identical" if r.returncode == 0 else "DIFFERENT"
        if r.returncode != 0:
            notes.append(f"{n:,} rich spec, Polars: {r.stdout.strip()} {r.stderr.strip()}")
        rich_base = rich_results["leakless --spec bench/rich.toml"][0]
        for name, (wall, rss) in rich_results.items():
            folder = "rich-leakless" if name.startswith("leakless") else "rich-polars"
            rich_rows.append({"n": n, "tool": name, "wall": wall, "startup": startup[tool_kind(name)], "rss": rss,
                              "output": du(out / folder), "ratio": wall / rich_base,
                              "rows": "-" if folder == "rich-leakless" else rich_check})
        timings = json.loads(subprocess.check_output([str(c) for c in tools["leakless (CSV in)"] + ["--json"]]))["timings"]
        notes.append(f"{n:,} leakless --timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))

    stored = load_results()
    stored[args.order] = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": f"python3 bench/run.py --sizes {args.sizes} --runs {args.runs}"
                   + (" --order random" if args.order == "random" else ""),
        "runs": args.runs, "startup": startup, "tools": rows, "rich": rich_rows, "notes": notes,
        "versions": reference_versions(),
    }
    save_results(stored)


RESULTS_JSON = HERE / "results.json"


def load_results():
    return json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}


def save_results(stored):
    """Keeps every section's measurements in bench/results.json and writes
    bench/RESULTS.md from them whole, the targets section included."""
    RESULTS_JSON.write_text(json.dumps(stored, indent=1) + "\n")
    text = render(stored)
    (HERE / "RESULTS.md").write_text(text)
    print(text)


def table(rows):
    lines = ["| impressions | tool | wall (s) | start-up (s) | wall - start-up (s) | peak RSS, process tree (MB) "
             "| output (MB) | ratio to leakless | rows vs leakless |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['tool']} | {r['wall']:.2f} | {r['startup']:.2f} | "
                     f"{r['wall'] - r['startup']:.2f} | {r['rss']:.0f} | {r['output']:.0f} | {r['ratio']:.2f} | "
                     f"{r['rows']} |")
    return lines


def render(stored):
    cores = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = ["# Benchmark results", "",
             "Written by `bench/run.py` from `bench/results.json` (each command replaces its own section); "
             "earlier results and notes written by hand are in `bench/HISTORY.md`; the cluster's in "
             "`bench/CLUSTER.md`.", "",
             f"Machine: {cores} cores, {mem:.0f} GiB. Data: `leakless generate --impressions N` (30 days, seed 42; "
             "the data folder is named by a hash of the generator's source, so it is made again when the "
             "generator changes), CSV in, Parquet partitioned by date out; every tool gets the same "
             "`--watermark` (the end of the period) and writes zstd level 1 with row groups of 1,048,576 rows "
             "(PySpark: 128 MB row groups, its unit is bytes). Wall time is the median of the runs, the tools "
             "taken in turn in each round (this machine is shared and its speed drifts by a quarter: a slow "
             "spell then falls on every tool), each run after an `os.sync()`; start-up is "
             "the median wall time of an empty run of the tool (`leakless --version`; Python importing DuckDB "
             "or Polars and running a trivial query; PySpark starting and stopping a local[2] session); peak "
             "memory is that of the whole process tree (sampled every 20 ms, and at least `/usr/bin/time`'s "
             "largest process), so PySpark's JVM counts. The floor reads the three CSVs and writes one row per "
             "impression with every output column (listing columns by a hash join, click columns as cheap "
             "arithmetic), sorted, partitioned by date."]
    titles = {"time": "## Rows in time order (as generated)",
              "random": "## Rows in random order (impressions, clicks, listings and listing_prices shuffled, seeded; impression ids random)"}
    for order in ("time", "random"):
        section = stored.get(order)
        if not section:
            continue
        versions = versions_text(section.get("versions"))
        lines += ["", titles[order], "", f"Date: {section['date']}. Command: `{section['command']}`."
                  + (f" References: {versions}." if versions else " Reference versions not recorded."), ""]
        lines += table(section["tools"])
        lines += ["", "The rich spec (`bench/rich.toml`: 11 features over listing, user and user x listing keys, "
                  "windows of 1 h, 24 h, 7 d and lifetime, an as-of price, two labels) against a hand-written "
                  "Polars job of the same definitions (`bench/ref_polars_rich.py`); every column compared.", ""]
        lines += table(section["rich"])
        if section["notes"]:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in section["notes"]]
    if stored.get("scale"):
        lines += ["", *stored["scale"]["lines"]]
    lines += ["", *targets(stored)]
    return "\n".join(lines) + "\n"


def targets(stored):
    """The six targets of issue 8, each from the stored measurements."""
    def find(order, tool, n=10_000_000, rich=False):
        for r in (stored.get(order) or {}).get("rich" if rich else "tools", []):
            if r["n"] == n and r["tool"] == tool:
                return r
        return None

    def verdict(ok):
        return "met" if ok else "not met"

    lines = ["## Against the targets (issue 8)", "",
             "Computed from the tables above by `bench/run.py`; a missing measurement is shown as such.", "",
             "| # | target | measured | verdict |", "|---|---|---|---|"]
    lk, pl, fl = "leakless (CSV in)", "Polars join_asof", "floor: DuckDB read 3 CSVs, write every output column sorted"
    r_l, r_p, r_f = find("random", lk), find("random", pl), find("random", fl)
    if r_l and r_p and r_f:
        a, b = r_l["wall"] / r_p["wall"], r_l["wall"] / r_f["wall"]
        lines.append(f"| 1 | marketplace, 10 M, random order: <= 0.5x Polars and <= 1.3x the floor | "
                     f"{r_l['wall']:.2f} s: {a:.2f}x Polars ({r_p['wall']:.2f} s), {b:.2f}x the floor "
                     f"({r_f['wall']:.2f} s) | {verdict(a <= 0.5 and b <= 1.3)} |")
    else:
        lines.append("| 1 | marketplace, 10 M, random order | not measured | - |")
    t_l, t_p = find("time", lk), find("time", pl)
    if t_l and t_p:
        a = t_l["wall"] / t_p["wall"]
        lines.append(f"| 2 | the same in time order: <= 0.4x Polars | {t_l['wall']:.2f} s: {a:.2f}x Polars "
                     f"({t_p['wall']:.2f} s) | {verdict(a <= 0.4)} |")
    else:
        lines.append("| 2 | time order | not measured | - |")
    rl = find("random", "leakless --spec bench/rich.toml", rich=True)
    rp = find("random", "Polars, the rich spec by hand", rich=True)
    if rl and rp:
        a = rl["wall"] / rp["wall"]
        lines.append(f"| 3 | rich spec, 10 M, random order: <= 0.5x its Polars job, rows identical | "
                     f"{rl['wall']:.2f} s: {a:.2f}x Polars ({rp['wall']:.2f} s), rows {rp['rows']} | "
                     f"{verdict(a <= 0.5 and rp['rows'] == 'identical')} |")
    else:
        lines.append("| 3 | rich spec, random order | not measured | - |")
    mem = [r for order in ("time", "random") for r in
           [find(order, lk), find(order, "leakless --spec bench/rich.toml", rich=True)] if r]
    scale = (stored.get("scale") or {}).get("rows", [])
    big = next((r for r in scale if r["n"] == 100_000_000), None)
    if mem:
        worst = max(r["rss"] for r in mem)
        big_text = f"; 100 M: {big['rss']:.0f} MB" if big else "; 100 M not measured"
        ok = worst <= 1024 and (big is None or big["rss"] < 4096)
        lines.append(f"| 4 | peak RSS <= 1 GiB at 10 M (both specs); 100 M (1 M listings, 10 M users) < 4 GiB | "
                     f"10 M: at most {worst:.0f} MB{big_text} | {verdict(ok and big is not None)} |")
    base = next((r for r in scale if r["n"] == 10_000_000), None)
    if big and base:
        ratio = big["wall"] / base["wall"]
        lines.append(f"| 5 | 100 M at most 11x the 10 M time; 1 B run or projected | {ratio:.2f}x "
                     f"({big['wall']:.1f} s against {base['wall']:.2f} s, medians); 1 B: see the scale section | "
                     f"{verdict(ratio <= 11)} |")
    else:
        lines.append("| 5 | scaling | not measured (`--large`) | - |")
    pq = find("time", "leakless (Parquet in)")
    if pq and t_l:
        a = pq["wall"] / t_l["wall"]
        lines.append(f"| 6 | Parquet input <= 0.8x the CSV time | {pq['wall']:.2f} s against {t_l['wall']:.2f} s: "
                     f"{a:.2f}x | {verdict(a <= 0.8)} |")
    return lines


def in_rounds(tools, runs, target):
    """Each tool run `runs` times, every tool once per round (so that a slow
    spell of this shared machine falls on all of them alike, and the ratios
    compare runs made side by side); per tool the median wall, the largest
    peak memory and every run. `target(cmd)` is the folder a reference
    writes, removed before each of its runs (leakless overwrites its own)."""
    measured = {name: [] for name in tools}
    for _ in range(runs):
        for name, cmd in tools.items():
            if not str(cmd[0]).endswith("leakless"):
                subprocess.run(["rm", "-rf", str(target(cmd))], check=True)
            measured[name].append(timed(cmd)[:2])
    return {name: (statistics.median(w for w, _ in m), max(r for _, r in m), m) for name, m in measured.items()}


def shuffled_copy(source, target):
    """The CSV files of `source` with their rows in a seeded random order, in
    `target` (made once per generated data set); impression ids are made
    random too (a bijection of the generated ids, which rise with time: the
    rows of one second then tie on the time and are ordered by ids in no
    relation to their position, as a real log's would be)."""
    stamp = (source / "_generator.json").read_text() + SHUFFLE_VERSION
    if (target / "_generator.json").exists() and (target / "_generator.json").read_text() == stamp:
        return target
    target.mkdir(parents=True, exist_ok=True)
    rng = random_module.Random(7)
    for name in ("impressions", "clicks", "listings", "listing_prices"):
        with open(source / f"{name}.csv") as f:
            header, *rows = f.readlines()
        if name == "impressions":
            assert header.startswith("impression_id,"), header
            rows = [random_id(int(r[:r.index(",")])) + r[r.index(","):] for r in rows]
        rng.shuffle(rows)
        with open(target / f"{name}.csv", "w") as f:
            f.write(header)
            f.writelines(rows)
    (target / "_generator.json").write_text(stamp)
    return target


# Changes whenever shuffled_copy writes other rows, so that old copies are
# made again.
SHUFFLE_VERSION = "\nshuffle 2: impression ids random\n"


def spill_budget_mb():
    """The spine's spill budget of the code measured (`order::SPILL_BYTES`)."""
    text = (ROOT / "crates" / "leakless" / "src" / "order.rs").read_text()
    shift = re.search(r"pub const SPILL_BYTES: usize = (\d+) << 20;", text)
    return int(shift.group(1)) if shift else "?"


def random_id(i):
    """A bijection of the ids below 2^40 that scatters consecutive ones:
    multiplication by an odd constant and a xor, modulo 2^40."""
    return str(((i * 0x9E3779B97F) ^ 0x5DEECE66D) % (1 << 40))


def scale(leakless, sizes, runs):
    """leakless alone at large sizes, against 10 M in the same run: each size
    `runs` times, the sizes taken in turn in every round (so that a slow spell
    of this shared machine falls on all of them), the median reported; with
    two sizes above 10 M, a linear projection to 1 B from the two largest."""
    sizes = [10_000_000] + sizes
    cmds, gens, measured = {}, {}, {n: [] for n in sizes}
    for n in sizes:
        data = data_folder(n) / "csv"
        if not (data / "_generator.json").exists():
            sh(leakless, "generate", "--out", data, "--impressions", n)
        gens[n] = json.loads((data / "_generator.json").read_text())
        out = HERE / "out" / f"scale-{n}"
        cmds[n] = [leakless, "build", "--impressions", data / "impressions.csv", "--clicks", data / "clicks.csv",
                   "--listings", data / "listings.csv", "--out", out, "--watermark",
                   gens[n]["totals"]["watermark"], "--overwrite", "--quiet", "--json"]
    for _ in range(runs):
        for n in sizes:
            data = data_folder(n) / "csv"
            # Read once before timing, so that every size runs from the page
            # cache (what a size after a larger one would otherwise not).
            for name in ("impressions", "clicks", "listings"):
                with open(data / f"{name}.csv", "rb") as f:
                    while f.read(1 << 24):
                        pass
            wall, rss, printed = timed(cmds[n], stdout=subprocess.PIPE)
            measured[n].append((wall, rss, json.loads(printed)["timings"]))
            print(f"{n:>13,} {wall:7.1f} s {rss:8.0f} MB", flush=True)
            subprocess.run(["rm", "-rf", str(HERE / "out" / f"scale-{n}")], check=True)
    rows = []
    for n in sizes:
        runs_n = sorted(measured[n], key=lambda m: m[0])
        wall, _, timings = runs_n[len(runs_n) // 2]
        data = data_folder(n) / "csv"
        rows.append({"n": n, "listings": gens[n]["params"]["listings"], "users": gens[n]["params"]["users"],
                     "input_mb": du(data / "impressions.csv"), "wall": wall,
                     "walls": [m[0] for m in measured[n]], "rss": max(m[1] for m in measured[n]),
                     "timings": timings})
    base = rows[0]["wall"]
    lines = ["## Scale: leakless alone", "",
             f"Command: `python3 bench/run.py --large {','.join(map(str, sizes[1:]))} --runs {runs}` (rows in time "
             f"order; wall time the median of {runs} runs, the sizes taken in turn in each round; inputs read once "
             "just before each run, so that every size runs from the page cache; the generator scales listings "
             "and users with impressions, 1 % and 10 %; stage timings of the median run).", "",
             "| impressions | listings | users | input CSV (MB) | wall (s) | every run (s) | peak RSS (MB) "
             "| time / time at 10 M | rows / s | stage timings (s) |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        t = r["timings"]
        stages = ", ".join(f"{k} {t[k]:.1f}" for k in ("spine", "sort", "probe", "encode", "compute"))
        walls = ", ".join(f"{w:.1f}" for w in r["walls"])
        lines.append(f"| {r['n']:,} | {r['listings']:,} | {r['users']:,} | {r['input_mb']:.0f} | {r['wall']:.1f} | "
                     f"{walls} | {r['rss']:.0f} | {r['wall'] / base:.2f} | {r['n'] / r['wall'] / 1e6:.2f} M | "
                     f"{stages} |")
    big = [r for r in rows if r["n"] > 10_000_000]
    if len(big) >= 2:
        lo, hi = big[-2], big[-1]
        slope = (hi["wall"] - lo["wall"]) / (hi["n"] - lo["n"])
        fixed = hi["wall"] - slope * hi["n"]
        one_b = fixed + slope * 1e9
        input_gb = hi["input_mb"] / hi["n"] * 1e9 / 1e3
        lines += ["", f"1 B impressions, projected (not run: its CSV would take about {input_gb:.0f} GB): "
                  f"wall = {fixed:.1f} s + {slope * 1e9:.1f} s per billion rows (the line through "
                  f"{lo['n']:,} and {hi['n']:,}), so about {one_b:.0f} s. Linear in the rows: reading and "
                  "parsing, bucketing and spilling the spine, sorting each day, encoding; the click index and the "
                  "rows of one day held per partition while it is sorted and written (a day is 1/30 of the rows). "
                  "Not linear: the probe's cost per row grows with the number of keys, which this generator scales "
                  "with the rows (cache misses on the per-key state and times): "
                  + ", ".join(f"{r['timings']['probe'] / r['n'] * 1e9:.0f} ns" for r in rows)
                  + " of probe CPU per row at " + ", ".join(f"{r['n']:,}" for r in rows)
                  + "; so the line underestimates 1 B if the keys grow with it. Flat: start-up and the spill "
                  f"budget ({spill_budget_mb()} MB of pending rows, and one spill of as much being written). Peak memory grew "
                  + ", ".join(f"{r['rss']:.0f}" for r in rows) + " MB."]
    stored = load_results()
    stored["scale"] = {"lines": lines, "rows": [{"n": r["n"], "wall": r["wall"], "rss": r["rss"]} for r in rows]}
    save_results(stored)


if __name__ == "__main__":
    main()
