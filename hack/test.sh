#!/usr/bin/env bash
# Checks formatting and lints, then runs every test of the workspace: unit tests, and the
# end-to-end tests that exec the real `plexus` binary with real delegates in real network
# namespaces and through a private containerd (root required).
# Installs what it needs first, so it works on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

ensure_root
ensure_packages
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "==> format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> building binaries"
cargo build --workspace --bins --locked
# The binaries plexus-install copies onto nodes, statically linked (the chroot test runs them).
bash hack/build-static.sh

echo "==> running tests"
# Each Criterion benchmark runs once as a test, so the benches cannot rot.
cargo bench --locked -p plexus-netattach --bench hot_paths -- --test
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --profile ci "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
