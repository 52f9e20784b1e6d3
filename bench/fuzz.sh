#!/usr/bin/env bash
# Fuzzes the CSV reader, the Parquet reader and the spec parser with a
# million cases each, and prints per target the count, the rate, the slowest
# case and every crash or refusal without a place, with the seed that
# reproduces it (exit 1 if any).
#   bench/fuzz.sh                          # a million cases per target
#   bench/fuzz.sh --cases 10000 --seed 7
# The hidden `leakless fuzz` command exists only with the `fuzz` feature,
# which adds no dependency: the release build reuses the compiled
# dependencies and rebuilds only leakless and leakless-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/leakless-target}"
cargo build --release --workspace --features leakless-cli/fuzz --quiet
exec "$CARGO_TARGET_DIR/release/leakless" fuzz "$@"
