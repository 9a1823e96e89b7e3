#!/usr/bin/env bash
# Benchmarks the release `plexus` binary against the same delegates exec'd directly, in one run.
# Prints a markdown table on stdout and writes every raw sample to target/bench/plexus-bench.json.
# Extra arguments go to plexus-bench (e.g. --samples 2 --networks 0,1 --pods 8 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ensure_root
ensure_packages

cargo build --release --locked --bins -q >&2
PLEXUS_BIN_PLEXUS="$PWD/target/release/plexus" exec target/release/plexus-bench "$@"
