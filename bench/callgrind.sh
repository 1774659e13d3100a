#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable whatever else
# the machine does. Runs BINARY (a `portcullis` build) under valgrind twice,
# serving N1 and N2 keep-alive requests from one curl, and prints
# (total(N2) - total(N1)) / (N2 - N1), so start-up and shutdown cancel out.
#
# SCENARIO is s1 (plain proxy, the default) or s3 (a virtual endpoint
# answered by a fresh instance of the bench plugin: PLUGIN=path/to/bench.wasm,
# default the example-plugins build). TARGET is the request path (default
# /s1/items/42 or /s3; try a spelling such as /s1/x/../items/%34%32 to count
# the canonicalisation's slow path).
#
#   bench/callgrind.sh target/release/portcullis [s1|s3] [N1 N2]
set -euo pipefail
binary=$(realpath "$1")
scenario=${2:-s1}
n1=${3:-200}
n2=${4:-1200}
here=$(dirname "$(realpath "$0")")
plugin=$(realpath "${PLUGIN:-$here/../example-plugins/target/wasm32-wasip2/release/bench.wasm}")
case $scenario in
  s1) target=${TARGET:-/s1/items/42} ;;
  s3) target=${TARGET:-/s3} ;;
  *) echo "unknown scenario $scenario (s1 or s3)" >&2; exit 2 ;;
esac
work=$(mktemp -d)
# KEEP=DIR keeps the callgrind outputs there, for callgrind_annotate.
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$work"/cg.* "$KEEP"/; rm -rf "$work"' EXIT

mkdir -p "$work/www/items" "$work/apis"
printf 'hello\n' > "$work/www/items/42"
# A keep-alive upstream (http.server's default speaks HTTP/1.0: a new
# connection per request would be counted too).
python3 - "$work/www" > "$work/upstream.log" 2>&1 <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.func.protocol_version = "HTTP/1.1"
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
PY
for _ in $(seq 100); do
  port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/upstream.log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
cat > "$work/gateway.yaml" <<EOF
listen: 127.0.0.1:0
apis: [apis/]
plugin_cache: false
session_store: $work/sessions.redb
# Under valgrind the pooling allocator cannot reserve its usual address
# space; one request at a time needs few slots.
plugin_limits: { pool_size: 2 }
EOF
# Only the scenario's API: S1 then loads no plugin at all.
if [ "$scenario" = s1 ]; then
  printf 'id: s1\nlisten_path: /s1/\nstrip_listen_path: true\nupstream: http://127.0.0.1:%s\n' "$port" > "$work/apis/s1.yaml"
else
  printf 'id: s3\nlisten_path: /s3\nupstream: http://127.0.0.1:%s\nendpoints:\n  - path: /\n    plugin: { path: %s, function: virtual }\n' "$port" "$plugin" > "$work/apis/s3.yaml"
fi

count() {
  local n=$1 out="$work/cg.$1"
  env -u RUST_BACKTRACE PORTCULLIS_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" serve --workers 1 --config "$work/gateway.yaml" \
    > "$work/stdout.$n" 2> "$work/stderr.$n" &
  local pid=$!
  for _ in $(seq 600); do
    grep -q '^listening on ' "$work/stdout.$n" 2>/dev/null && break
    sleep 0.1
  done
  local url
  url=$(sed -n 's/^listening on //p' "$work/stdout.$n")
  if [ -z "$url" ]; then
    cat "$work/stderr.$n" >&2
    exit 1
  fi
  # One connection, N requests; the bodies are not ours to count.
  curl -s --path-as-is $(for _ in $(seq "$n"); do printf '%s%s ' "$url" "$target"; done) > /dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  callgrind_annotate "$out" 2>/dev/null | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

a=$(count "$n1")
b=$(count "$n2")
echo "instructions per request: $(( (b - a) / (n2 - n1) )) ($target, $n1 and $n2 requests)"
