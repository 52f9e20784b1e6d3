#!/usr/bin/env bash
# Every test: the Rust workspace's (cluster and Delta Lake included), then
# the Python package's, with pytest against a wheel built here by maturin.
# The README's test command; .ci/run runs it after rustfmt and clippy.
#
# Python's tools (maturin, pytest, pyarrow, polars, scikit-learn,
# matplotlib, tqdm) go into a virtualenv under the target folder, from
# PyPI, once. The wheel is built with the test build's profile and
# features, so it reuses that build: seconds, not another DataFusion.
set -euo pipefail
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== Rust tests"
cargo test --workspace --locked --features leakless-cli/delta,leakless-cluster/delta

echo "== Python package (python/): wheel and pytest"
venv="$target/python-tests-venv"
requirements=python/tests/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
fi
wheels="$target/test-wheels"
rm -rf "$wheels"
"$venv/bin/maturin" build --quiet --locked --profile dev -m python/Cargo.toml --out "$wheels"
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/leakless-*.whl
LEAKLESS_BIN="$target/debug/leakless" LEAKLESS_CLUSTER_BIN="$target/debug/leakless-cluster" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
