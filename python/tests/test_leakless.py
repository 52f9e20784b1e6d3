"""The Python package against the command line: same bytes, same errors."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import leakless

from conftest import (
    MARKETPLACE_SPEC,
    REPO,
    cli_commands,
    dataset_bytes,
    market_sources,
    run_cli,
)

WATERMARK = "2026-10-11T00:00:00Z"


def build_market(market, out, **kwargs):
    kwargs = {"watermark": WATERMARK, "partitions": 2, **kwargs}
    return leakless.build(MARKETPLACE_SPEC, out, sources=market_sources(market), **kwargs)


def test_marketplace_gives_the_cli_bytes(market, tmp_path):
    summary = build_market(market, tmp_path / "python")
    assert summary.rows_written > 15_000
    assert summary.rows_written + summary.immature_held_back == summary.rows_read["impressions"]
    expected = dataset_bytes(tmp_path / "python")
    assert any(name.endswith(".parquet") for name in expected)
    for i, command in enumerate(cli_commands()):
        out = tmp_path / f"cli-{i}"
        overrides = [f"--source={k}={v}" for k, v in market_sources(market).items()]
        result = run_cli(
            command, "build", "--spec", MARKETPLACE_SPEC, *overrides, "--out", out,
            "--watermark", WATERMARK, "--partitions", "2", "--json", "--quiet",
        )
        assert dataset_bytes(out) == expected, command
        printed = json.loads(result.stdout)
        ours = summary.to_dict()
        for key in ("seconds", "timings", "out"):
            printed.pop(key), ours.pop(key)
        assert printed == ours


def test_shards_give_the_bytes_of_a_whole_build(market, tmp_path):
    whole = build_market(market, tmp_path / "whole")
    sharded = build_market(market, tmp_path / "sharded", shards=5)
    assert dataset_bytes(tmp_path / "sharded") == dataset_bytes(tmp_path / "whole")
    assert sharded.rows_written == whole.rows_written
    # Every key group's work was split: its largest shard holds less than
    # the spine rows it probed.
    probed = sharded.rows_written + sharded.immature_held_back
    assert sharded.key_groups
    assert all(0 < g["spine_rows_max"] < probed for g in sharded.key_groups)
    with pytest.raises(leakless.LeaklessError, match="shards must be at least 1"):
        build_market(market, tmp_path / "none", shards=0)


def tomllib_loads(text):
    """A TOML text as a dict (tomllib, or tomli before Python 3.11)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(text)


def test_a_dict_spec_equals_its_toml(market, tmp_path):
    spec = tomllib_loads(MARKETPLACE_SPEC.read_text())
    for name, path in market_sources(market).items():
        spec["sources"][name]["path"] = str(path)
    from_dict = leakless.build(spec, tmp_path / "dict", watermark=WATERMARK, partitions=2)
    from_file = build_market(market, tmp_path / "file")
    assert dataset_bytes(tmp_path / "dict") == dataset_bytes(tmp_path / "file")
    assert from_dict.feature_set_hash == from_file.feature_set_hash
    assert leakless.explain(spec) == leakless.explain(MARKETPLACE_SPEC)
    # A dict keeps its order: the columns come in the order written.
    spec["features"] = dict(reversed(list(spec["features"].items())))
    columns = [c["name"] for c in leakless.explain(spec)["columns"]]
    assert columns.index("listing_clicks_24h") < columns.index("listing_age_seconds")


def test_spec_errors_carry_their_place(tmp_path):
    text = MARKETPLACE_SPEC.read_text().replace(
        'source = "clicks"\nkey = "listing_id"\nop = "count"\nwindow = "24h"',
        'source = "clicks"\nkey = "listing_id"\nop = "count"\nwindow = "24 hours"',
    )
    spec = tmp_path / "leakless.toml"
    spec.write_text(text)
    line = text.splitlines().index('window = "24 hours"') + 1
    with pytest.raises(leakless.SpecError) as caught:
        leakless.check(spec)
    (error,) = caught.value.errors
    assert (error["line"], error["context"]) == (line, "features.listing_clicks_24h")
    assert "`24 hours` is not a duration" in error["message"]
    cli = run_cli(cli_commands()[0], "check", "--spec", spec, check=False)
    assert cli.returncode == 2
    # The message is the command line's, place and hint included.
    assert f"error: {caught.value}" in cli.stderr
    assert f"{spec}:{line}:{error['column']}: features.listing_clicks_24h" in str(caught.value)

    # A dict's mistakes are placed by their keys; a None is refused by name.
    with pytest.raises(leakless.SpecError) as caught:
        leakless.explain({"version": 1, "sources": {}, "spine": {"source": "views"}})
    errors = caught.value.errors
    assert "spine" in [e["context"] for e in errors]
    assert [e["line"] for e in errors] == [None] * len(errors)
    with pytest.raises(leakless.SpecError, match=r"spine.where: is None"):
        leakless.explain({"version": 1, "spine": {"source": "views", "where": None}})
    # A key the spec does not know is placed by its table, in a file and in
    # a dict.
    unknown = text.replace('window = "24 hours"', 'windw = "24h"')
    spec.write_text(unknown)
    with pytest.raises(leakless.SpecError) as caught:
        leakless.check(spec)
    (error,) = caught.value.errors
    assert error["context"] == "features.listing_clicks_24h"
    assert "unknown field `windw`" in error["message"]
    with pytest.raises(leakless.SpecError) as caught:
        leakless.check(tomllib_loads(unknown))
    (error,) = caught.value.errors
    assert (error["line"], error["context"]) == (None, "features.listing_clicks_24h")


def test_input_errors_carry_file_line_column_and_value(market, tmp_path):
    bad = tmp_path / "impressions.csv"
    lines = (market / "impressions.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[2] = "12x"
    lines[3] = ",".join(fields)
    bad.write_text("\n".join(lines) + "\n")
    sources = {**market_sources(market), "impressions": bad}
    with pytest.raises(leakless.InputError) as caught:
        leakless.build(MARKETPLACE_SPEC, tmp_path / "out", sources=sources, watermark=WATERMARK)
    e = caught.value
    assert (e.path, e.line, e.row, e.column, e.value) == (str(bad), 4, None, "listing_id", "12x")
    assert "hint: fix or remove the row" in str(e)
    assert not (tmp_path / "out").exists()
    overrides = [f"--source={k}={v}" for k, v in sources.items()]
    cli = run_cli(
        cli_commands()[0], "build", "--spec", MARKETPLACE_SPEC, *overrides,
        "--out", tmp_path / "out", "--watermark", WATERMARK, check=False,
    )
    assert cli.returncode == 2
    assert str(e).splitlines()[0] in cli.stderr

    # A gate without quarantine is a mistake, not ignored.
    with pytest.raises(leakless.LeaklessError, match="max_bad_rows is the gate"):
        leakless.build(MARKETPLACE_SPEC, tmp_path / "out", sources=sources,
                       watermark=WATERMARK, max_bad_rows=0.5)

    # Quarantined instead: the build goes on and counts it.
    summary = leakless.build(
        MARKETPLACE_SPEC, tmp_path / "out", sources=sources, watermark=WATERMARK,
        bad_rows="quarantine",
    )
    assert summary.quarantined["impressions"]["rows"] == 1


def test_output_errors(market, tmp_path):
    build_market(market, tmp_path / "out")
    with pytest.raises(leakless.OutputError, match="already exists") as caught:
        build_market(market, tmp_path / "out")
    assert caught.value.path == str(tmp_path / "out")
    # The hint in the API's words.
    assert "hint: pass overwrite=True to replace it" in str(caught.value)
    assert build_market(market, tmp_path / "out", overwrite=True).rows_written > 0
    with pytest.raises(leakless.LeaklessError, match="not an RFC 3339 timestamp"):
        leakless.build(MARKETPLACE_SPEC, tmp_path / "x", watermark="yesterday")


def test_read_back_as_pyarrow_and_polars(market, tmp_path):
    summary = build_market(market, tmp_path / "out")
    table = leakless.read(tmp_path / "out")
    assert isinstance(table, pa.Table)
    assert table.num_rows == summary.rows_written
    columns = [c["name"] for c in leakless.explain(MARKETPLACE_SPEC)["columns"]]
    assert table.column_names == columns
    files = sorted((tmp_path / "out").rglob("*.parquet"))
    assert table.equals(pa.concat_tables(pq.read_table(f) for f in files))
    times = table.column("impression_ts").to_pylist()
    assert [t.date() for t in times] == sorted(t.date() for t in times)

    polars = pytest.importorskip("polars")
    frame = leakless.to_polars(tmp_path / "out")
    assert isinstance(frame, polars.DataFrame)
    assert frame.equals(polars.from_arrow(table))

    # A Delta table's latest version reads the same.
    build_market(market, tmp_path / "delta", format="delta")
    assert leakless.read(tmp_path / "delta").equals(table)

    with pytest.raises(leakless.LeaklessError, match="is not a leakless dataset"):
        leakless.read(market)


def test_a_dataset_without_rows_keeps_its_columns(market, tmp_path):
    # A watermark before every impression's label window closes.
    summary = build_market(market, tmp_path / "out", watermark="2026-10-01T00:00:00Z")
    assert summary.rows_written == 0
    table = leakless.read(tmp_path / "out")
    assert table.num_rows == 0
    assert table.column_names == [c["name"] for c in leakless.explain(MARKETPLACE_SPEC)["columns"]]
    assert table.schema.field("clicked").type == pa.int8()


@pytest.fixture
def sigint_raises():
    """Ctrl-C raising KeyboardInterrupt, as in a terminal or a notebook (a
    process started in the background by a shell ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def staging_left(out):
    out = Path(out)
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.leakless-"))


def test_ctrl_c_stops_a_build_with_nothing_published(tmp_path, sigint_raises):
    market = tmp_path / "market"
    leakless.generate(market, impressions=400_000, seed=5, days=10)
    out = tmp_path / "out"
    build_market(market, out)
    before = dataset_bytes(out)
    stages = []

    def interrupt(stage, rows):
        # Ctrl-C as the terminal sends it, once the build is under way.
        stages.append(stage)
        if len(stages) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        build_market(market, out, overwrite=True, watermark="2026-10-12T00:00:00Z",
                     progress=interrupt)
    assert "done" not in stages
    # The previous dataset as it was; no staging folder; the lock free.
    assert dataset_bytes(out) == before
    assert staging_left(out) == [".out.leakless-lock"]
    assert build_market(market, out, overwrite=True).rows_written > 0

    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        build_market(market, fresh, progress=lambda stage, rows: os.kill(os.getpid(), signal.SIGINT))
    assert not fresh.exists()
    assert staging_left(fresh) == [".fresh.leakless-lock"]


@pytest.mark.parametrize("format", ["parquet", "delta"])
def test_a_signal_while_writing_stops_the_build(tmp_path, format, sigint_raises):
    market = tmp_path / "market"
    leakless.generate(market, impressions=400_000, seed=5, days=10)
    out = tmp_path / "out"
    build_market(market, out, format=format)
    before = dataset_bytes(out)
    sent = []

    def interrupt_from_another_thread(stage, rows):
        # The signal comes while this thread waits in Rust: it is seen by
        # the wait's check of Python's signals, not in this callback.
        if stage == "writing" and not sent:
            sent.append(rows)
            threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()

    with pytest.raises(KeyboardInterrupt):
        build_market(market, out, format=format, overwrite=True,
                     watermark="2026-10-12T00:00:00Z", progress=interrupt_from_another_thread)
    assert sent
    assert dataset_bytes(out) == before
    assert staging_left(out) == [".out.leakless-lock"]
    assert build_market(market, out, format=format, overwrite=True).rows_written > 0


def hold_lock(path):
    """Another process holding a destination's lock for a second."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_signal_stops_a_build_waiting_for_the_lock(market, tmp_path, sigint_raises):
    out = tmp_path / "out"
    holder = hold_lock(tmp_path / ".out.leakless-lock")
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        build_market(market, out, wait=True, progress=False)
    # Stopped while the other run still held the lock: nothing written.
    assert holder.poll() is None
    assert holder.wait() == 0
    assert not out.exists()
    assert staging_left(out) == [".out.leakless-lock"]


def test_a_read_meanwhile_republished_is_refused(market, tmp_path):
    out = tmp_path / "out"
    build_market(market, out)
    stream = leakless._leakless.open_dataset(out)
    build_market(market, out, overwrite=True)
    with pytest.raises(Exception, match="was published again while it was read"):
        pa.RecordBatchReader.from_stream(stream).read_all()
    assert leakless.read(out).num_rows > 0


def test_arguments_in_python_words(market, tmp_path):
    # One glob alone is one glob, not its characters.
    folder = tmp_path / "impressions"
    folder.mkdir()
    (folder / "impressions.csv").write_bytes((market / "impressions.csv").read_bytes())
    (folder / "notes.json").write_text("{}")
    sources = {**market_sources(market), "impressions": folder}
    with pytest.raises(leakless.InputError, match="notes.json") as caught:
        leakless.check(MARKETPLACE_SPEC, sources=sources)
    assert "ignore=[GLOB]" in str(caught.value)
    report = leakless.check(MARKETPLACE_SPEC, sources=sources, ignore="*.json")
    assert report["sources"][0]["files"] == 1
    with pytest.raises(leakless.SpecError) as caught:
        leakless.check(MARKETPLACE_SPEC, sources={"clickz": market / "clicks.csv"})
    assert caught.value.errors[0]["context"] == "sources"


def test_exceptions_declare_every_place_attribute(tmp_path):
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(leakless.InputError) as caught:
        leakless.build(MARKETPLACE_SPEC, tmp_path / "out", watermark=WATERMARK,
                       sources={"clicks": tmp_path / "nowhere"})
    e = caught.value
    assert e.path.rstrip("/") == str(tmp_path / "nowhere")
    assert (e.line, e.row, e.column, e.value, e.reason) == (None,) * 5
    with pytest.raises(leakless.SpecError) as caught:
        leakless.explain({"version": 1, "spine": {"source": object()}})
    assert caught.value.path == "<dict>"
    assert caught.value.errors[0]["context"] == "spine.source"


def test_the_package_is_python_3_9():
    import ast

    package = Path(leakless.__file__).parent
    for path in [*package.glob("*.py"), *package.glob("*.pyi"), REPO / "examples" / "leakage_demo.py"]:
        ast.parse(path.read_text(), str(path), feature_version=(3, 9))


def test_progress_reaches_a_callback(market, tmp_path):
    seen = []
    build_market(market, tmp_path / "out", progress=lambda stage, rows: seen.append((stage, rows)))
    assert seen[-1][0] == "done"
    assert seen[-1][1] > 0


def test_check_explain_generate(market, tmp_path):
    report = leakless.check(MARKETPLACE_SPEC, sources=market_sources(market))
    assert [s["name"] for s in report["sources"]] == ["impressions", "clicks", "listings"]
    explained = leakless.explain(MARKETPLACE_SPEC)
    assert explained["feature_set_hash"] == report["feature_set_hash"]
    totals = leakless.generate(tmp_path / "again", impressions=20_000, seed=11, days=10)
    assert totals["impressions"] == 20_000
    for name in ("impressions.csv", "clicks.csv", "listings.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (market / name).read_bytes()


def test_python_m_leakless_runs_the_cli(tmp_path):
    result = run_cli([sys.executable, "-m", "leakless"], "--help")
    assert "Point-in-time correct training datasets" in result.stdout
    result = run_cli([sys.executable, "-m", "leakless"], "explain", "--spec", "nope.toml", check=False)
    assert result.returncode == 2
    assert "error: reading `nope.toml`" in result.stderr


HOLD_LOCK = """
import fcntl, sys, time
lock = open(sys.argv[1], "w")
fcntl.flock(lock, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(1.0)
"""


def test_the_gil_is_released_while_a_build_waits(market, tmp_path):
    out = tmp_path / "out"
    # Another process holds the destination's lock for a second: the
    # build (wait=True) waits in Rust all that time.
    holder = hold_lock(tmp_path / ".out.leakless-lock")
    ticks = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1

    thread = threading.Thread(target=count)
    thread.start()
    try:
        build_market(market, out, wait=True, progress=False)
    finally:
        stop.set()
        thread.join()
    assert holder.wait() == 0
    # A pure-Python loop ticks millions of times a second. With the GIL
    # held while the build waits it would not tick at all until the end:
    # progress is off, so the waiting thread runs no Python code.
    assert ticks[0] > 1_000_000


def test_a_cluster_build_from_python(market, tmp_path):
    binary = os.environ.get("LEAKLESS_CLUSTER_BIN")
    if not binary:
        pytest.skip("LEAKLESS_CLUSTER_BIN is not set (test.sh sets it)")
    import socket
    import time

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def wait_for(port, process):
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                assert process.poll() is None, f"{process.args} exited"
                assert time.time() < deadline, f"nothing listens on {port}"
                time.sleep(0.05)

    processes = []
    try:
        port = free_port()
        scheduler = subprocess.Popen(
            [binary, "scheduler", "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(scheduler)
        wait_for(port, scheduler)
        flight, grpc = free_port(), free_port()
        executor = subprocess.Popen(
            [binary, "executor", "--scheduler", f"127.0.0.1:{port}", "--bind",
             f"127.0.0.1:{flight}", "--grpc-port", str(grpc), "--work-dir",
             str(tmp_path / "work"), "--heartbeat", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(executor)
        wait_for(flight, executor)
        build_market(market, tmp_path / "cluster", scheduler=f"127.0.0.1:{port}")
    finally:
        for p in processes:
            p.kill()
            p.wait()
    build_market(market, tmp_path / "embedded")
    assert dataset_bytes(tmp_path / "cluster") == dataset_bytes(tmp_path / "embedded")


def test_the_leakage_demo_shows_the_gap(tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(REPO / "examples" / "leakage_demo.py"),
         "--impressions", "100000", "--seed", "7", "--json", "--png", str(tmp_path / "auc.png")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.splitlines()[-1])
    leaky = results["leaky"]
    # Leakage flatters the leaky model offline; served, it loses that.
    assert leaky["offline_auc"] > leaky["served_auc"] + 0.02
    assert results["leakless"]["served_auc"] > 0.8
    assert (tmp_path / "auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
