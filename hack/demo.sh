#!/usr/bin/env bash
# The Plexus demo: the real `plexus` binary attaches eth0 (cluster network) plus a macvlan and a
# bridge network to two network-namespace "pods", writes their network-status annotations to a
# (fake) API server, pings pod to pod over both secondary networks, then DELs and shows that
# nothing is left. Everything it creates is prefixed "plxd" and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ensure_root
ensure_packages

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "building (release)"
cargo build --release --locked --bins -q
BIN="$PWD/target/release"

WORK=$(mktemp -d /tmp/plxdemo.XXXXXX)
API_PID=""
cleanup() {
  set +e
  [ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
  for ns in plxd-pod-a plxd-pod-b; do ip netns del "$ns" 2>/dev/null; done
  for l in plxdbr0 plxdbr1 plxdm0; do ip link del "$l" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say "host networking: bridge plxdbr0 (cluster), bridge plxdbr1 (bridge-data), veth plxdm0 (macvlan master)"
ip link add plxdbr0 type bridge && ip link set plxdbr0 up
ip link add plxdbr1 type bridge && ip link set plxdbr1 up
ip link add plxdm0 type veth peer name plxdm1 && ip link set plxdm0 up && ip link set plxdm1 up
mkdir -p "$WORK/net.d" "$WORK/ipam" "$WORK/cache" "$WORK/seed"

say "example NADs from deploy/examples/ (master and bridge names adapted to this machine)"
for f in macvlan bridge conflist; do
  sed -e 's/"master": "eth1"/"master": "plxdm0"/' \
      -e 's/"bridge": "br-data"/"bridge": "plxdbr1"/' \
      -e "s#\"type\": \"host-local\",#\"type\": \"host-local\", \"dataDir\": \"$WORK/ipam\",#" \
      -e "s#{\"type\": \"host-local\", \"ranges\"#{\"type\": \"host-local\", \"dataDir\": \"$WORK/ipam\", \"ranges\"#" \
      "deploy/examples/$f.yaml" > "$WORK/seed/$f.yaml"
  grep -E '^  name:' "$WORK/seed/$f.yaml"
done

say "starting the fake API server"
"$BIN/fake-apiserver" --listen 127.0.0.1:0 --port-file "$WORK/url" --kubeconfig-out "$WORK/kube" \
  --seed "$WORK/seed/macvlan.yaml" --seed "$WORK/seed/bridge.yaml" --seed "$WORK/seed/conflist.yaml" \
  --request-log "$WORK/requests.jsonl" 2>"$WORK/apiserver.log" &
API_PID=$!
for _ in $(seq 50); do [ -s "$WORK/url" ] && break; sleep 0.1; done
URL=$(cat "$WORK/url")
echo "API server at $URL"

cat > "$WORK/net.d/10-cluster.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge", "bridge": "plxdbr0",
 "ipam": {"type": "host-local", "dataDir": "$WORK/ipam", "ranges": [[{"subnet": "10.250.0.0/24"}]]}}]}
JSON
cat > "$WORK/00-plexus.conf" <<JSON
{"cniVersion": "1.0.0", "name": "plexus-network", "type": "plexus",
 "clusterNetwork": "$WORK/net.d/10-cluster.conflist", "kubeconfig": "$WORK/kube/kubeconfig",
 "confDir": "$WORK/net.d", "cniDir": "$WORK/cache", "binDir": "/usr/lib/cni", "logLevel": "info"}
JSON
echo "plexus config:"; jq . "$WORK/00-plexus.conf"

cni() { # cni COMMAND POD CONTAINER-ID POD-UID
  CNI_COMMAND=$1 CNI_CONTAINERID=$3 CNI_NETNS=/run/netns/plxd-$2 CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$2;K8S_POD_UID=$4;K8S_POD_INFRA_CONTAINER_ID=$3" \
    "$BIN/plexus" < "$WORK/00-plexus.conf"
}

for p in pod-a pod-b; do
  say "creating $p: netns plxd-$p, annotation 'macvlan-storage, bridge-tuned@data0'"
  ip netns add "plxd-$p"
  curl -sf -X POST "$URL/api/v1/namespaces/default/pods" -H 'Content-Type: application/json' -d "{
    \"apiVersion\": \"v1\", \"kind\": \"Pod\",
    \"metadata\": {\"name\": \"$p\", \"namespace\": \"default\",
      \"annotations\": {\"k8s.v1.cni.cncf.io/networks\": \"macvlan-storage, bridge-tuned@data0\"}},
    \"spec\": {\"nodeName\": \"demo-node\"}}" >/dev/null
  uid=$(curl -sf "$URL/api/v1/namespaces/default/pods/$p" | jq -r .metadata.uid)
  before=$(wc -l < "$WORK/requests.jsonl")
  say "CNI ADD $p (result on stdout)"
  cni ADD "$p" "ctr-$p" "$uid" | jq -c .
  echo "API requests made by this ADD:"
  tail -n +"$((before + 1))" "$WORK/requests.jsonl" | jq -r '"  \(.method) \(.path) -> \(.status)"'
  say "interfaces of $p"
  ip -n "plxd-$p" -br addr
  say "network-status annotation of $p"
  curl -sf "$URL/api/v1/namespaces/default/pods/$p" | jq -r '.metadata.annotations["k8s.v1.cni.cncf.io/network-status"]'
done

ip_of() { ip -n "plxd-$1" -j addr show dev "$2" | jq -r '.[0].addr_info[] | select(.family=="inet") | .local'; }
say "ping pod-a -> pod-b over macvlan (net1) and bridge (data0)"
ip netns exec plxd-pod-a ping -c 2 -W 2 "$(ip_of pod-b net1)"
ip netns exec plxd-pod-a ping -c 2 -W 2 "$(ip_of pod-b data0)"


for p in pod-a pod-b; do
  say "CNI DEL $p (no API request: DEL runs from the cache)"
  before=$(wc -l < "$WORK/requests.jsonl")
  cni DEL "$p" "ctr-$p" "" && echo "ok, API requests: $(( $(wc -l < "$WORK/requests.jsonl") - before ))"
  echo "interfaces left in $p:"; ip -n "plxd-$p" -br link
done
say "what is left"
echo "host-local leases: $(find "$WORK/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)"
echo "plexus cache entries: $(find "$WORK/cache" -name '*.json' | wc -l)"
say "demo done"
