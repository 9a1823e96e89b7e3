# Shared helpers for hack/*.sh (sourced).

# Tests and the demo create network namespaces and links: they need root. Fail, never skip.
ensure_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $0 must run as root (it creates network namespaces and links)" >&2
    exit 1
  fi
}

# Debian packages the tests and demos use: real CNI delegates, iproute2, ping, jq, curl, iperf3, and
# containerd + runc (tests/tests/e2e_containerd.rs starts its own private containerd; the system
# service is neither started nor enabled).
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
  command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)           # hack/demo-sriov.sh: throughput over the VFs
  local runtime=0
  command -v containerd >/dev/null 2>&1 || { need+=(containerd); runtime=1; }  # CRI tests
  command -v runc >/dev/null 2>&1 || need+=(runc)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "==> installing ${need[*]}"
    apt-get update -qq
    # Keep the package's postinst from starting the system containerd (exit 101 = action
    # forbidden, see invoke-rc.d(8)), unless the machine already has a policy of its own.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ "$runtime" = 1 ] && [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
    [ "$own_policy" = 0 ] || rm -f "$policy"
    [ "$rc" = 0 ] || return "$rc"
    if [ "$runtime" = 1 ] && [ -d /run/systemd/system ]; then
      systemctl disable --now containerd.service >/dev/null 2>&1 || true
    fi
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found (the Rust toolchain from rust-toolchain.toml is required)" >&2
    exit 1
  fi
}
