#!/usr/bin/env bash
# Memory of the real vc-webhook process, fed through its watch caches (not a prepared
# inventory): vc-test-apiserver serves 50,000 Ready nodes and 10,000 VirtualClusters,
# vc-webhook lists and watches them, and once /readyz answers 200 the script prints the
# process's VmRSS and VmHWM and the cache gauges. Prints numbers; asserts nothing.
#
# Needs: a release build of vc-webhook, a build of vc-test-apiserver, kubectl, openssl,
# curl and python3.
#   cargo build --release -p vc-webhook --bin vc-webhook
#   cargo build -p vc-simulation --bin vc-test-apiserver
#   bash webhook/benches/process-rss.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

NODES=${NODES:-50000}
CLUSTERS=${CLUSTERS:-10000}
WEBHOOK=${WEBHOOK:-target/release/vc-webhook}
APISERVER=${APISERVER:-target/debug/vc-test-apiserver}
PORT=${PORT:-18443}
for tool in kubectl openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool is not on PATH"; exit 0; }
done
for binary in "$WEBHOOK" "$APISERVER"; do
  [ -x "$binary" ] || { echo "skipped: $binary is not built (see the header of this script)"; exit 0; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$APISERVER" --nodes "$NODES" --kubeconfig-out "$work/kubeconfig" >"$work/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do [ -s "$work/kubeconfig" ] && break; sleep 0.5; done
export KUBECONFIG="$work/kubeconfig"

python3 - "$CLUSTERS" >"$work/clusters.json" <<'EOF'
import json, sys
count = int(sys.argv[1])
items = [{
    "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
    "metadata": {"name": f"vc-{i}", "namespace": "default"},
    "spec": {"promoteResources": {"nodes": [f"node{2*i+1}", f"node{2*i+2}"],
                                  "resources": {"cpu": "2", "memory": "4Gi"}}},
} for i in range(count)]
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
EOF
kubectl create --validate=false -f "$work/clusters.json" >/dev/null

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$work/tls.key" -out "$work/tls.crt" -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null
started=$(date +%s.%N)
"$WEBHOOK" --listen "127.0.0.1:$PORT" --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" \
  --kubeconfig "$work/kubeconfig" --log-format json >"$work/webhook.log" 2>&1 &
webhook_pid=$!
pids+=("$webhook_pid")
for _ in $(seq 1 600); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/tls.crt" "https://127.0.0.1:$PORT/readyz" || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
[ "$code" = 200 ] || { echo "vc-webhook never became ready"; cat "$work/webhook.log"; exit 1; }
ready=$(date +%s.%N)

echo "vc-webhook ready after $(python3 -c "print(f'{$ready - $started:.1f}')") s with $NODES nodes and $CLUSTERS VirtualClusters"
grep -E 'VmRSS|VmHWM' "/proc/$webhook_pid/status"
curl -s --cacert "$work/tls.crt" "https://127.0.0.1:$PORT/metrics" | grep '^vc_webhook_cache_objects'
