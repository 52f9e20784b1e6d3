#!/usr/bin/env bash
# Fuzzes the CSV reader, the Parquet reader and the spec parser with a
# million cases each (LEAKLESS_FUZZ_CASES), from LEAKLESS_FUZZ_SEED, and
# prints per target the count, the rate, the slowest case and every crash
# or refusal without a place (with the seed that reproduces it).
#   bench/fuzz.sh                      # a million cases per target
#   LEAKLESS_FUZZ_CASES=10000 bench/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/leakless-target}"
# --workspace, not -p leakless: the same features as every other build, so
# nothing is rebuilt for the fuzzer alone.
exec cargo test --release --workspace --lib fuzz::tests::many -- --ignored --nocapture
