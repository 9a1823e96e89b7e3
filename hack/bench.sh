#!/usr/bin/env bash
# Benchmarks Plexus in both modes against the same delegates exec'd directly, in one run: thin
# (`plexus`) and thick (`plexus-shim` forwarding to a running `plexusd`), the static release builds
# that ship.
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
# The plugin binaries measured are the ones plexus-install puts on nodes: statically linked
# (hack/build-static.sh). A static binary skips the dynamic loader's relocations, which cost the
# 9 MB `plexus` about 1 ms per exec; the bench driver, the fake API server and the test plugins
# stay ordinary release builds.
hack/build-static.sh --profile release >&2
static="$PWD/target/static/x86_64-unknown-linux-gnu/release"
export PLEXUS_BIN_PLEXUS="$static/plexus" PLEXUS_BIN_PLEXUS_SHIM="$static/plexus-shim" \
  PLEXUS_BIN_PLEXUSD="$static/plexusd"
exec target/release/plexus-bench "$@"
