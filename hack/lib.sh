# Shared helpers for hack/*.sh (sourced).

# Tests and the demo create network namespaces and links: they need root. Fail, never skip.
ensure_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $0 must run as root (it creates network namespaces and links)" >&2
    exit 1
  fi
}

# Debian packages the tests and demo use: real CNI delegates, iproute2, ping, jq, curl.
ensure_packages() {
  local need=()
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
  command -v jq >/dev/null 2>&1 || need+=(jq)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  [ -x /usr/bin/time ] || need+=(time)
  command -v iptables-save >/dev/null 2>&1 || need+=(iptables)   # portmap delegate and its test
  command -v nsenter >/dev/null 2>&1 || need+=(util-linux)       # default-route changes in the pod netns
  if [ "${#need[@]}" -gt 0 ]; then
    echo "==> installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found (the Rust toolchain from rust-toolchain.toml is required)" >&2
    exit 1
  fi
}
