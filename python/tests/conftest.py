"""Shared fixtures: a generated marketplace, the repository, the CLI."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKETPLACE_SPEC = REPO / "examples" / "marketplace" / "leakless.toml"


@pytest.fixture(scope="session")
def market(tmp_path_factory):
    """A seeded marketplace of 20,000 impressions (CSV)."""
    import leakless

    out = tmp_path_factory.mktemp("market")
    leakless.generate(out, impressions=20_000, seed=11, days=10)
    return out


def market_sources(market):
    return {name: market / f"{name}.csv" for name in ("impressions", "clicks", "listings")}


def cli_commands():
    """The command lines to compare with: the `leakless` binary of the test
    build (LEAKLESS_BIN, set by test.sh), and `python -m leakless`."""
    commands = [[sys.executable, "-m", "leakless"]]
    binary = os.environ.get("LEAKLESS_BIN")
    if binary:
        assert Path(binary).exists(), f"LEAKLESS_BIN={binary} does not exist"
        commands.insert(0, [binary])
    return commands


def run_cli(command, *args, check=True):
    result = subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, cwd=REPO
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def dataset_bytes(out):
    """SHA-256 of every data file of a dataset (and its profile), by path."""
    out = Path(out)
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and (path.suffix == ".parquet" or path.name == "_profile.json"):
            files[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files
