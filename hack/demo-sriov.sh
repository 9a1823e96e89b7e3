#!/usr/bin/env bash
# The SR-IOV demo (no VFs needed): the real `plexus` binary, the fake API server holding the NAD of
# deploy/examples/sriov/ plus a second one on the same resource, and a fake kubelet serving the
# PodResources API with two VFs allocated to the pod. The `cni-recorder` plugin stands in for
# `sriov` and records what it was handed: each network gets its own VF (sorted, whatever order
# the kubelet answers in), device-info reaches network-status, and DEL hands the same VFs with the
# kubelet gone. Everything it creates is prefixed "plxs" and removed on exit.
#   BIN=target/debug hack/demo-sriov.sh   reuses a debug build instead of building release.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ensure_root
ensure_packages

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ -z "${BIN:-}" ]; then
  say "building (release)"
  cargo build --release --locked --bins -q
  BIN="$PWD/target/release"
fi
BIN=$(cd "$BIN" && pwd)

WORK=$(mktemp -d /tmp/plxsdemo.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  ip netns del plxs-pod 2>/dev/null
  ip link del plxsbr0 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

ip link add plxsbr0 type bridge && ip link set plxsbr0 up
mkdir -p "$WORK/net.d" "$WORK/ipam" "$WORK/cache" "$WORK/seed" "$WORK/bin" "$WORK/devinfo/dp"
# The recorder answers to the name "sriov", so the example NAD runs unchanged.
ln -s "$BIN/cni-recorder" "$WORK/bin/sriov"

say "the example NAD (deploy/examples/sriov/nad.yaml) and a second one on the same resource"
# (The recorder ignores the ipam section: it only records.)
sed -e "s#\"type\": \"sriov\",#\"type\": \"sriov\", \"recordFile\": \"$WORK/record.jsonl\",#" \
    deploy/examples/sriov/nad.yaml > "$WORK/seed/nad.yaml"
sed -e 's/sriov-net1/sriov-net2/g' -e 's/"vlan": 100,/"vlan": 200,/' "$WORK/seed/nad.yaml" > "$WORK/seed/nad2.yaml"
grep -E '^  name:|resourceName|vlan' "$WORK/seed/nad.yaml" "$WORK/seed/nad2.yaml"

say "starting the fake API server"
"$BIN/fake-apiserver" --listen 127.0.0.1:0 --port-file "$WORK/url" --kubeconfig-out "$WORK/kube" \
  --seed "$WORK/seed/nad.yaml" --seed "$WORK/seed/nad2.yaml" 2>"$WORK/apiserver.log" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/url" ] && break; sleep 0.1; done
URL=$(cat "$WORK/url")

say "starting the fake kubelet: VFs 0000:03:02.1 and 0000:03:02.0 allocated to default/sriov-pod"
SOCK="$WORK/kubelet/pod-resources/kubelet.sock"
"$BIN/fake-kubelet" --socket "$SOCK" \
  --allocate "default/sriov-pod=intel.com/intel_sriov_netdevice=0000:03:02.1,0000:03:02.0" 2>"$WORK/kubelet.log" &
KUBELET_PID=$!
PIDS+=($KUBELET_PID)
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
echo '{"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.0"}}' \
  > "$WORK/devinfo/dp/intel.com-intel_sriov_netdevice-0000:03:02.0-device.json"
echo "device plugin's device-info file for 0000:03:02.0 written"

cat > "$WORK/net.d/10-cluster.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge", "bridge": "plxsbr0",
 "ipam": {"type": "host-local", "dataDir": "$WORK/ipam", "ranges": [[{"subnet": "10.251.0.0/24"}]]}}]}
JSON
cat > "$WORK/00-plexus.conf" <<JSON
{"cniVersion": "1.0.0", "name": "plexus-network", "type": "plexus",
 "clusterNetwork": "$WORK/net.d/10-cluster.conflist", "kubeconfig": "$WORK/kube/kubeconfig",
 "confDir": "$WORK/net.d", "cniDir": "$WORK/cache", "binDir": "$WORK/bin", "logLevel": "info",
 "podResourcesSocket": "$SOCK", "deviceCheckpointFile": "$WORK/kubelet/checkpoint",
 "deviceInfoDir": "$WORK/devinfo", "events": false}
JSON

ip netns add plxs-pod
curl -sf -X POST "$URL/api/v1/namespaces/default/pods" -H 'Content-Type: application/json' -d '{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "sriov-pod", "namespace": "default",
    "annotations": {"k8s.v1.cni.cncf.io/networks": "sriov-net1, sriov-net2"}},
  "spec": {"nodeName": "demo-node"}}' >/dev/null
UID_=$(curl -sf "$URL/api/v1/namespaces/default/pods/sriov-pod" | jq -r .metadata.uid)
cni() {
  CNI_COMMAND=$1 CNI_CONTAINERID=ctr-sriov CNI_NETNS=/run/netns/plxs-pod CNI_IFNAME=eth0 CNI_PATH="$WORK/bin:/usr/lib/cni" \
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=sriov-pod;K8S_POD_UID=$UID_" \
    "$BIN/plexus" < "$WORK/00-plexus.conf"
}
handed() {
  jq -r '"  \(.command) \(.env.CNI_IFNAME) (\(.stdin.name), vlan \(.stdin.vlan)): deviceID=\(.stdin.deviceID) pciBusID=\(.stdin.pciBusID) runtimeConfig=\(.stdin.runtimeConfig | tostring)"' "$WORK/record.jsonl"
}

say "CNI ADD of default/sriov-pod (annotation 'sriov-net1, sriov-net2')"
cni ADD | jq -c .
say "what the 'sriov' delegates were handed"
handed
say "network-status (device-info of the VF the device plugin described)"
curl -sf "$URL/api/v1/namespaces/default/pods/sriov-pod" | jq -r '.metadata.annotations["k8s.v1.cni.cncf.io/network-status"]' | jq .
say "the cache entry records each attachment's device"
jq -c '.attachments[] | {network, ifname, device}' "$WORK/cache/ctr-sriov.json"

say "the kubelet goes away; CNI DEL hands each delegate the same VF from the cache"
kill "$KUBELET_PID"; wait "$KUBELET_PID" 2>/dev/null || true; rm -f "$SOCK"
: > "$WORK/record.jsonl"
cni DEL && echo "DEL ok"
handed
echo "device-info copies left: $(find "$WORK/devinfo/cni" -type f 2>/dev/null | wc -l)"
echo "plexus cache entries left: $(find "$WORK/cache" -name '*.json' | wc -l)"
say "demo done"
