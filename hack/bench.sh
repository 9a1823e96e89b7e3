#!/usr/bin/env bash
# Benchmarks Plexus in both modes against the same delegates exec'd directly, in one run: thin
# (`plexus`) and thick (`plexus-shim` forwarding to a running `plexusd`), release builds.
# Prints markdown tables on stdout (latency and API requests per mode, throughput of 110 pods
# 8 at a time for thin, thick and the bare delegates, plexusd's memory curve) and writes every raw
# sample to target/bench/plexus-bench.json. Extra arguments go to plexus-bench (e.g. --samples 2
# --networks 0,1 --pods 8 --memory 110:100 --modes thick for a quick run).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ensure_root
ensure_packages

cargo build --release --locked --bins -q >&2
PLEXUS_BIN_PLEXUS="$PWD/target/release/plexus" exec target/release/plexus-bench "$@"
