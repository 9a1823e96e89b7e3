#!/usr/bin/env bash
# The SR-IOV demo, the whole path on a machine without SR-IOV hardware:
#
#   fake sysfs (a PF with two VFs whose netdevs are real veth ends, their peers on a host bridge
#   standing in for the NIC's embedded switch)
#   → plexus-sriovdp discovers the VFs and registers intel.com/intel_sriov_netdevice with the
#     kubelet (the fake kubelet), with the config of deploy/sriovdp/configmap.yaml
#   → the fake kubelet admits two pods, each asking for one VF: GetPreferredAllocation + Allocate
#     (the plugin writes the device-info files)
#   → CNI ADD: plexus learns each pod's VF from the kubelet's PodResources API and hands it to the
#     real `sriov` plugin (NAD of deploy/examples/sriov/, vlan 100), which moves the VF into the
#     pod and renames it net1; the PF-side settings go to the simulated PF, which records them
#   → `ip a` in a pod, network-status with device-info, iperf3 between the two pods over the VFs
#   → CNI DEL: the VFs come back to the host under their names, the PF settings are restored.
#
# Everything it creates is prefixed "plxs" and removed on exit.
#   BIN=target/debug hack/demo-sriov.sh   reuses a debug build instead of building release.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ensure_root
ensure_packages

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# Who did what: each component's log lines, prefixed with its name.
trace() { sed -e "s/^/    [$1] /" "$2"; }

if [ -z "${BIN:-}" ]; then
  say "building (release)"
  cargo build --release --locked --bins -q
  BIN="$PWD/target/release"
fi
BIN=$(cd "$BIN" && pwd)

RESOURCE=intel.com/intel_sriov_netdevice
WORK=$(mktemp -d /tmp/plxsdemo.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  [ -s "$WORK/sysfs-root" ] && rm -rf "$(cat "$WORK/sysfs-root")"
  for n in a b; do ip netns del "plxs-pod-$n" 2>/dev/null; done
  for l in plxsvf0 plxsvf1 plxsbr0 plxsesw0; do ip link del "$l" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say "the node: a PF 'plxspf0' with two VFs; each VF netdev is a veth end whose peer sits on"
echo "    bridge plxsesw0 (the NIC's embedded switch)"
ip link add plxsbr0 type bridge && ip link set plxsbr0 up
ip link add plxsesw0 type bridge && ip link set plxsesw0 up
for i in 0 1; do
  ip link add "plxsvf$i" type veth peer name "plxsvp$i"
  ip link set "plxsvp$i" master plxsesw0 up
done
mkdir -p "$WORK"/{net.d,ipam,cache,seed,bin,devinfo,kubelet/device-plugins,sriov-state,pf}
"$BIN/fake-sysfs" --root-file "$WORK/sysfs-root" --simulated-pf "$WORK/pf" \
  --pf "0000:3b:00.0=plxspf0:kernel/iavf/plxsvf0,kernel/iavf/plxsvf1" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/sysfs-root" ] && break; sleep 0.1; done
SYSFS=$(cat "$WORK/sysfs-root")
for vf in "$SYSFS"/bus/pci/devices/0000:3b:00.0/virtfn*; do
  a=$(basename "$(readlink "$vf")")
  echo "    $(basename "$vf") = $a  vendor $(cat "$SYSFS/bus/pci/devices/$a/vendor") device $(cat "$SYSFS/bus/pci/devices/$a/device") driver $(basename "$(readlink "$SYSFS/bus/pci/devices/$a/driver")") netdev $(ls "$SYSFS/bus/pci/devices/$a/net")"
done
# The real sriov plugin, with its test hooks pointing at this fake node (plexus passes its
# environment on to its delegates).
ln -s "$BIN/sriov" "$WORK/bin/sriov"
export PLEXUS_SYSFS_ROOT="$SYSFS" PLEXUS_SRIOV_SIMULATED_PF="$WORK/pf" PLEXUS_SRIOV_STATE_DIR="$WORK/sriov-state"

say "starting the fake kubelet (device-plugin registration + PodResources); it will admit"
echo "    default/sriov-pod-a and default/sriov-pod-b, one $RESOURCE each"
PR_SOCK="$WORK/kubelet/pod-resources/kubelet.sock"
"$BIN/fake-kubelet" --socket "$PR_SOCK" --device-plugins "$WORK/kubelet/device-plugins" \
  --request "default/sriov-pod-a=$RESOURCE=1" --request "default/sriov-pod-b=$RESOURCE=1" \
  --ready-file "$WORK/admitted" 2>"$WORK/kubelet.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/kubelet/device-plugins/kubelet.sock" ] && break; sleep 0.1; done

say "starting plexus-sriovdp with the resource config of deploy/sriovdp/configmap.yaml"
awk '/config.json: \|/{on=1; next} on' deploy/sriovdp/configmap.yaml > "$WORK/pcidp.json"
jq -c '.resourceList[] | {resourceName, resourcePrefix, selectors}' "$WORK/pcidp.json" | sed 's/^/    /'
RUST_LOG=info "$BIN/plexus-sriovdp" --config "$WORK/pcidp.json" --sysfs-root "$SYSFS" \
  --device-plugin-dir "$WORK/kubelet/device-plugins" --pod-resources-socket "$PR_SOCK" \
  --device-info-dir "$WORK/devinfo" 2>"$WORK/sriovdp.log" &
SRIOVDP_PID=$!
PIDS+=($SRIOVDP_PID)
for _ in $(seq 100); do [ -e "$WORK/admitted" ] && break; sleep 0.1; done
[ -e "$WORK/admitted" ] || { cat "$WORK/kubelet.log" "$WORK/sriovdp.log"; exit 1; }
say "who did what so far"
# Timestamps and levels off: the order is the story.
sed -E 's/^[^ ]+ +[A-Z]+ //' "$WORK/sriovdp.log" > "$WORK/sriovdp.trace"
trace plexus-sriovdp "$WORK/sriovdp.trace"
trace fake-kubelet "$WORK/kubelet.log"
echo "    device-info files written by the plugin:"
ls "$WORK/devinfo/dp" | sed 's/^/      /'

say "the example NAD (deploy/examples/sriov/nad.yaml), host-local state in the demo's directory"
sed -e "s#\"type\": \"host-local\",#\"type\": \"host-local\", \"dataDir\": \"$WORK/ipam\",#" \
    deploy/examples/sriov/nad.yaml > "$WORK/seed/nad.yaml"
grep -E '^  name:|resourceName|"vlan"' "$WORK/seed/nad.yaml" | sed 's/^/    /'
"$BIN/fake-apiserver" --listen 127.0.0.1:0 --port-file "$WORK/url" --kubeconfig-out "$WORK/kube" \
  --seed "$WORK/seed/nad.yaml" 2>"$WORK/apiserver.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/url" ] && break; sleep 0.1; done
URL=$(cat "$WORK/url")

cat > "$WORK/net.d/10-cluster.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge", "bridge": "plxsbr0",
 "ipam": {"type": "host-local", "dataDir": "$WORK/ipam", "ranges": [[{"subnet": "10.251.0.0/24"}]]}}]}
JSON
cat > "$WORK/00-plexus.conf" <<JSON
{"cniVersion": "1.0.0", "name": "plexus-network", "type": "plexus",
 "clusterNetwork": "$WORK/net.d/10-cluster.conflist", "kubeconfig": "$WORK/kube/kubeconfig",
 "confDir": "$WORK/net.d", "cniDir": "$WORK/cache", "binDir": "$WORK/bin", "logLevel": "info",
 "podResourcesSocket": "$PR_SOCK", "deviceCheckpointFile": "$WORK/kubelet/device-plugins/kubelet_internal_checkpoint",
 "deviceInfoDir": "$WORK/devinfo", "events": false}
JSON

declare -A UID_
for n in a b; do
  ip netns add "plxs-pod-$n"
  curl -sf -X POST "$URL/api/v1/namespaces/default/pods" -H 'Content-Type: application/json' -d '{
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "sriov-pod-'$n'", "namespace": "default",
      "annotations": {"k8s.v1.cni.cncf.io/networks": "sriov-net1"}},
    "spec": {"nodeName": "demo-node"}}' >/dev/null
  UID_[$n]=$(curl -sf "$URL/api/v1/namespaces/default/pods/sriov-pod-$n" | jq -r .metadata.uid)
done
cni() {
  CNI_COMMAND=$1 CNI_CONTAINERID="ctr-$2" CNI_NETNS="/run/netns/plxs-pod-$2" CNI_IFNAME=eth0 \
  CNI_PATH="$WORK/bin:/usr/lib/cni" \
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=sriov-pod-$2;K8S_POD_UID=${UID_[$2]}" \
    "$BIN/plexus" < "$WORK/00-plexus.conf" 2>>"$WORK/plexus.log"
}

for n in a b; do
  say "CNI ADD of default/sriov-pod-$n (plexus → bridge for eth0, sriov for net1)"
  cni ADD "$n" | jq -c '{interfaces: [.interfaces[] | {name, sandbox}], ips: [.ips[].address]}' | sed 's/^/    /'
done
say "what plexus did (its log)"
trace plexus "$WORK/plexus.log"
say "what the sriov plugin did on the PF (the simulated PF's call log)"
trace simulated-PF "$WORK/pf/plxspf0.calls"
echo "    VF table now: $(jq -c '[.vfs[] | {vlan, spoofchk}]' "$WORK/pf/plxspf0.json")"

say "ip a in sriov-pod-a"
ip netns exec plxs-pod-a ip a | sed 's/^/    /'
say "network-status of sriov-pod-a (device-info from the device plugin)"
curl -sf "$URL/api/v1/namespaces/default/pods/sriov-pod-a" \
  | jq -r '.metadata.annotations["k8s.v1.cni.cncf.io/network-status"]' | jq . | sed 's/^/    /'

say "iperf3 from sriov-pod-a to sriov-pod-b over their VFs (net1)"
B_IP=$(ip -n plxs-pod-b -j addr show dev net1 | jq -r '.[0].addr_info[] | select(.family == "inet") | .local')
ip netns exec plxs-pod-b iperf3 -s -1 -B "$B_IP" >/dev/null 2>&1 &
IPERF_PID=$!
PIDS+=($IPERF_PID)
for _ in $(seq 50); do ip netns exec plxs-pod-b ss -ltn | grep -q ":5201" && break; sleep 0.1; done
ip netns exec plxs-pod-a iperf3 -c "$B_IP" -t 3 -f g | sed 's/^/    /'
wait "$IPERF_PID" 2>/dev/null || true

for n in a b; do
  say "CNI DEL of default/sriov-pod-$n"
  cni DEL "$n" && echo "    DEL ok"
done
say "the VFs are back on the host under their own names, the PF settings restored"
ip -br link show plxsvf0 | sed 's/^/    /'
ip -br link show plxsvf1 | sed 's/^/    /'
echo "    VF table now: $(jq -c '[.vfs[] | {vlan, spoofchk}]' "$WORK/pf/plxspf0.json")"
echo "    plexus cache entries left: $(find "$WORK/cache" -name '*.json' | wc -l)"
echo "    host-local leases left: $(find "$WORK/ipam" -type f -name '10.*' | wc -l)"
say "demo done"
