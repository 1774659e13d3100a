#!/usr/bin/env bash
# registry.sh GATEWAY_BIN: S3 (a virtual endpoint answered by the bench
# plugin) with the plugin loaded from its file and from a local registry
# (docker-registry, pushed with `portcullis plugin push`), two gateways side
# by side in the same run. Only loading differs, so the two rows should be
# the same: this shows it.
#
# Everything runs on 127.0.0.1:18098-18100, each gateway with one worker
# pinned to SERVER_CPU, wrk on WRK_CPU. REPEAT rounds run round-robin; the
# table shows medians of requests/s and the gateway's CPU per request.
# Needs docker-registry (apt-get install docker-registry), wrk and curl.
set -euo pipefail

GATEWAY_BIN=${1:?usage: registry.sh GATEWAY_BIN}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
REPEAT=${REPEAT:-3}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
REGISTRY=18098 FILE_GW=18099 OCI_GW=18100
WORK=$(mktemp -d /tmp/portcullis-registry-bench.XXXXXX)
PIDS=()

NAME=registry.sh
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

preflight $REGISTRY $FILE_GW $OCI_GW
command -v docker-registry >/dev/null || { echo "$NAME: needs docker-registry" >&2; exit 1; }

BENCH=$(cd "$(dirname "$0")" && pwd)
cat >"$WORK/registry.yml" <<YAML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $WORK/registry } }
http: { addr: 127.0.0.1:$REGISTRY }
YAML
start registry docker-registry serve "$WORK/registry.yml"
wait_for "http://127.0.0.1:$REGISTRY/v2/"
"$GATEWAY_BIN" plugin push "$BENCH/plugins/bench.wasm" "oci://127.0.0.1:$REGISTRY/bench/bench:1" >/dev/null

for kind in file oci; do
  mkdir -p "$WORK/$kind/apis"
  printf 'apis: [apis/]\nplugin_cache: %s\n' "$WORK/cache" >"$WORK/$kind/gateway.yaml"
done
sed "s|\.\./plugins/bench.wasm|$BENCH/plugins/bench.wasm|" "$BENCH/apis/s3.yaml" >"$WORK/file/apis/s3.yaml"
sed "s|\.\./plugins/bench.wasm|oci://127.0.0.1:$REGISTRY/bench/bench:1|" "$BENCH/apis/s3.yaml" >"$WORK/oci/apis/s3.yaml"
start file "$GATEWAY_BIN" serve --config "$WORK/file/gateway.yaml" --listen "127.0.0.1:$FILE_GW" --workers 1
start oci "$GATEWAY_BIN" serve --config "$WORK/oci/gateway.yaml" --listen "127.0.0.1:$OCI_GW" --workers 1
wait_for "http://127.0.0.1:$FILE_GW/s3"
wait_for "http://127.0.0.1:$OCI_GW/s3"
FILE_PGID=${PIDS[1]} OCI_PGID=${PIDS[2]}

for round in $(seq "$REPEAT"); do
  echo "file $(measure "$FILE_PGID" "http://127.0.0.1:$FILE_GW/s3")" >>"$WORK/results"
  echo "oci $(measure "$OCI_PGID" "http://127.0.0.1:$OCI_GW/s3")" >>"$WORK/results"
  echo "$NAME: round $round of $REPEAT done" >&2
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf '%-28s %12s %14s\n' "S3, plugin loaded from" "req/s" "CPU us/req"
for kind in file oci; do
  rps=$(awk -v k=$kind '$1 == k {print $2}' "$WORK/results" | median)
  cpu=$(awk -v k=$kind '$1 == k {print $3}' "$WORK/results" | median)
  printf '%-28s %12s %14s\n' "$([[ $kind == file ]] && echo "a file" || echo "a registry (oci://)")" "$rps" "$cpu"
done
