#!/usr/bin/env bash
# Randomized fault runs of the real plexus binary: each run kills plexus at a random step or
# moment of an ADD, or makes a delegate, the status write or the API fail, then sends
# containerd's two DELs and checks that nothing is left (links, leases, bridge ports, files in
# cniDir, delegate processes). Prints the counts per fault kind and every leak.
#
#   hack/soak.sh [RUNS] [plexus-soak options]     (RUNS defaults to 1000; --seed N replays a run)
#
# Root is required (network namespaces and links); what the runs need is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

ensure_root
ensure_packages
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

runs="${1:-1000}"
shift || true
echo "==> building binaries"
cargo build --workspace --bins --locked
echo "==> ${runs} fault runs"
exec nice -n 10 target/debug/plexus-soak --runs "$runs" "$@"
