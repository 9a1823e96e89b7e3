#!/usr/bin/env bash
# Builds the binaries that plexus-install copies onto nodes, statically linked against glibc
# (`+crt-static`), so they run on any x86-64 Linux whatever its libc version (RHEL 8's 2.28, …).
#
# The flag is given per target and the target is explicit, so build scripts and proc-macros (built
# for the host) stay dynamic, as they must. A separate target dir keeps these artifacts from
# invalidating the ordinary build. Output: target/static/x86_64-unknown-linux-gnu/<profile>/.
#
# Limitation: glibc cannot load NSS modules in a static binary, so host-name lookups fail; the
# installer therefore writes the API server into the kubeconfig as an IP address (and refuses a
# name). See docs/install.md.
#
# Usage: hack/build-static.sh [--profile release|dev] (default release)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = "--profile" ]; then
  profile="$2"
fi
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"

echo "==> building static binaries (${profile}) into target/static/${target}/"
cargo build --locked --profile "$profile" --target "$target" --target-dir target/static \
  -p plexus --bin plexus -p plexus-shim --bin plexus-shim -p plexusd --bin plexusd \
  -p plexus-install --bin plexus-install -p plexus-sriov --bin sriov \
  -p plexus-sriovdp --bin plexus-sriovdp

dir="target/static/${target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"
for b in plexus plexus-shim plexusd plexus-install sriov plexus-sriovdp; do
  if ! file_out="$(file -b "$dir/$b" 2>/dev/null)"; then
    file_out="(file(1) not installed)"
  fi
  echo "    $dir/$b: $file_out"
done
