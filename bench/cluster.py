"""leakless on a loopback Ballista cluster against the embedded build, on
the same data in one run (issue 16).

usage: python3 bench/cluster.py [--impressions 10000000] [--runs 3] [--order random|time]
                                [--executors 1,2] [--partitions 8]
                                [--plan by-key|by-output-bucket] [--hot-keys auto|off]

Builds `leakless` and `leakless-cluster` in release mode (or takes
LEAKLESS_BIN and LEAKLESS_CLUSTER_BIN), uses the data of bench/run.py
(generated and shuffled the same way), and per round runs the embedded
build, then a build on a fresh cluster of 1 and of 2 executors (a scheduler
and N executor processes on 127.0.0.1, each executor one task at a time,
since this machine has 2 cores). Every cluster output is checked byte for
byte against the embedded build. Reports wall seconds (medians) and the
peak resident memory of every process (client, scheduler, each executor,
sampled every 20 ms) and their sum, the bytes the executors' shuffles
wrote (their work folders' size after the build), and, split by key, how
each key group's tasks shared the work (the build's `--json`:
`key_groups`, largest task against the mean); appends the figures to
bench/cluster.json and prints a Markdown table.
"""
import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import run as bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def binaries():
    if os.environ.get("LEAKLESS_BIN") and os.environ.get("LEAKLESS_CLUSTER_BIN"):
        return Path(os.environ["LEAKLESS_BIN"]), Path(os.environ["LEAKLESS_CLUSTER_BIN"])
    os.environ.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "leakless-target"))
    bench.sh("cargo", "build", "--release", "--quiet", "-p", "leakless-cli", "-p", "leakless-cluster", cwd=ROOT)
    meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT))
    release = Path(meta["target_directory"]) / "release"
    return release / "leakless", release / "leakless-cluster"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nothing listens on {port}")
            time.sleep(0.05)


def digests(folder):
    """SHA-256 of every data file, by relative path (the manifest apart)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "_manifest.json":
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def manifest_data(folder):
    m = json.loads((folder / "_manifest.json").read_text())
    m.pop("settings", None)
    m.pop("data", None)
    return m


class Sampler:
    """Peak resident MB of each named process tree, sampled every 20 ms,
    and the peak bytes in the given folders (the executors' shuffle
    files, which Ballista removes when a job ends), every 100 ms."""

    def __init__(self, folders=()):
        self.procs, self.peaks, self.done = {}, {}, False
        self.folders, self.folder_peak = list(folders), 0
        self.thread = threading.Thread(target=self.run)

    def add(self, name, proc):
        self.procs[name] = proc
        self.peaks.setdefault(name, 0.0)

    def run(self):
        tick = 0
        while not self.done:
            for name, proc in list(self.procs.items()):
                if proc.poll() is None:
                    self.peaks[name] = max(self.peaks[name], bench.tree_rss_mb(proc.pid))
            if tick % 5 == 0 and self.folders:
                self.folder_peak = max(self.folder_peak, sum(folder_bytes(f) for f in self.folders))
            tick += 1
            time.sleep(0.02)


def folder_bytes(folder):
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:  # removed while listed
            pass
    return total


def cluster_run(cluster_bin, executors, partitions, build_args, work):
    """One build on a fresh loopback cluster: wall seconds of the build,
    the peak MB of each process, the bytes in the executors' work folders
    (shuffle files) and the build's summary."""
    sampler = Sampler([work / f"executor-{i}" for i in range(executors)])
    procs = []
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        port = free_port()
        sched = subprocess.Popen([cluster_bin, "scheduler", "--bind", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler.log", "w"))
        procs.append(sched)
        sampler.add("scheduler", sched)
        wait_port(port, sched)
        for i in range(executors):
            flight, grpc = free_port(), free_port()
            ex = subprocess.Popen([cluster_bin, "executor", "--scheduler", f"127.0.0.1:{port}",
                                   "--bind", f"127.0.0.1:{flight}", "--grpc-port", str(grpc),
                                   "--work-dir", work / f"executor-{i}", "--concurrent-tasks", "1"],
                                  stdout=subprocess.DEVNULL, stderr=open(logs / f"executor-{i}.log", "w"))
            procs.append(ex)
            sampler.add(f"executor {i}", ex)
            # Executors pull their tasks: only the Flight port listens.
            wait_port(flight, ex)
        sampler.thread.start()
        os.sync()
        started = time.perf_counter()
        client = subprocess.Popen([cluster_bin, "build", "--scheduler", f"127.0.0.1:{port}",
                                   "--partitions", str(partitions), "--json", *build_args],
                                  stdout=subprocess.PIPE)
        sampler.add("client", client)
        out, _ = client.communicate()
        if client.returncode != 0:
            raise RuntimeError("the cluster build failed")
        wall = time.perf_counter() - started
        shuffled = max(sampler.folder_peak, sum(folder_bytes(work / f"executor-{i}") for i in range(executors)))
        return wall, dict(sampler.peaks), shuffled, json.loads(out)
    finally:
        sampler.done = True
        if sampler.thread.is_alive():
            sampler.thread.join()
        for p in procs:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--order", choices=["time", "random"], default="random")
    ap.add_argument("--executors", default="1,2")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--plan", choices=["by-key", "by-output-bucket"], default="by-key",
                    help="the cluster's plan (bench/CLUSTER.md's first figures: by-output-bucket)")
    ap.add_argument("--hot-keys", choices=["auto", "off"], default="auto")
    args = ap.parse_args()
    leakless, cluster_bin = binaries()
    n = args.impressions
    data = bench.data_folder(n)
    if not (data / "csv" / "_generator.json").exists():
        bench.sh(leakless, "generate", "--out", data / "csv", "--impressions", n, "--format", "csv")
    csv_dir = data / "csv"
    if args.order == "random":
        csv_dir = bench.shuffled_copy(data / "csv", data / "csv-random")
    wm = json.loads((data / "csv" / "_generator.json").read_text())["totals"]["watermark"]
    out = HERE / "out" / f"cluster-{n}"
    out.mkdir(parents=True, exist_ok=True)
    inputs = ["--impressions", csv_dir / "impressions.csv", "--clicks", csv_dir / "clicks.csv",
              "--listings", csv_dir / "listings.csv", "--watermark", wm, "--overwrite", "--quiet"]
    executors = [int(e) for e in args.executors.split(",")]
    walls = {"embedded": []}
    peaks = {"embedded": []}
    shuffles, summaries = {}, {}
    for e in executors:
        walls[e], peaks[e], shuffles[e], summaries[e] = [], [], [], []
    for _ in range(args.runs):
        wall, rss, _ = bench.timed([leakless, "build", *inputs, "--out", out / "embedded"])
        walls["embedded"].append(wall)
        peaks["embedded"].append({"leakless": rss})
        expected = (digests(out / "embedded"), manifest_data(out / "embedded"))
        for e in executors:
            target = out / f"cluster-{e}"
            plan = ["--by-output-bucket"] if args.plan == "by-output-bucket" else ["--hot-keys", args.hot_keys]
            wall, procs, shuffled, summary = cluster_run(
                cluster_bin, e, args.partitions, [*inputs, *plan, "--out", target], out / f"work-{e}")
            if (digests(target), manifest_data(target)) != expected:
                raise SystemExit(f"{e} executors: the output differs from the embedded build")
            walls[e].append(wall)
            peaks[e].append(procs)
            shuffles[e].append(shuffled)
            summaries[e].append(summary)
    base = statistics.median(walls["embedded"])
    rows = []
    for name in ["embedded", *executors]:
        wall = statistics.median(walls[name])
        per_process = {}
        for run in peaks[name]:
            for proc, mb in run.items():
                per_process[proc] = max(per_process.get(proc, 0.0), mb)
        total = max(sum(run.values()) for run in peaks[name])
        label = "embedded (`leakless build`)" if name == "embedded" else f"cluster, {name} executor(s), {args.partitions} tasks"
        row = {"setup": label, "wall": wall, "ratio": wall / base, "total_mb": total,
               "processes": per_process, "walls": walls[name]}
        shuffled = ""
        if name != "embedded":
            row["shuffled_bytes"] = statistics.median(shuffles[name])
            last = summaries[name][-1]
            row["hot_keys"] = last.get("hot_keys")
            row["hot_keys_seconds"] = last.get("timings", {}).get("hot_keys")
            row["key_groups"] = last.get("key_groups")
            shuffled = f"{row['shuffled_bytes'] / 1e6:.0f} MB shuffled"
        rows.append(row)
        detail = ", ".join(f"{p} {mb:.0f}" for p, mb in per_process.items())
        print(f"| {label} | {wall:.2f} | {wall / base:.2f}x | {total:.0f} | {detail} | {shuffled} |", flush=True)
        for g in row.get("key_groups") or []:
            print(f"|   ({', '.join(g['key'])}): {g['tasks']} tasks, spine rows max {g['spine_rows_max']} / mean "
                  f"{g['spine_rows_mean']:.0f}, events {g['events_max']} / {g['events_mean']:.0f}, seconds "
                  f"{g['seconds_max']:.2f} / {g['seconds_mean']:.2f}; {row['hot_keys']} hot keys", flush=True)
    record = {"n": n, "order": args.order, "partitions": args.partitions, "plan": args.plan,
              "hot_keys": args.hot_keys, "runs": args.runs,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    stored = json.loads((HERE / "cluster.json").read_text()) if (HERE / "cluster.json").exists() else []
    stored.append(record)
    (HERE / "cluster.json").write_text(json.dumps(stored, indent=1) + "\n")


if __name__ == "__main__":
    main()
