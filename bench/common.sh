# Shared by the benchmark scripts in this directory (sourced, not run).
# The caller sets WORK (a scratch directory), PIDS=(), CONNS, DURATION,
# SERVER_CPU, WRK_CPU and NAME (for messages), and sources this after them.

cleanup() {
  for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Tools present, ports free.
preflight() { # port...
  for tool in wrk nginx taskset curl; do
    command -v "$tool" >/dev/null || { echo "$NAME: $tool is missing (apt-get install wrk nginx-core util-linux curl)" >&2; exit 1; }
  done
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$NAME: 127.0.0.1:$port is in use" >&2; exit 1
    fi
  done
}

# An nginx configuration: one worker, no access log, in $WORK/NAME.
nginx_conf() { # name body
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1; proxy_temp_path $WORK/$1; fastcgi_temp_path $WORK/$1;
  uwsgi_temp_path $WORK/$1; scgi_temp_path $WORK/$1;
  keepalive_requests 100000000;
  $2
}
EOF
}
start() { # name command...
  local name=$1; shift
  setsid taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
}
wait_for() { # url
  for _ in $(seq 100); do
    curl -sfk "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$NAME: $1 never answered" >&2; cat "$WORK"/*.err >&2; exit 1
}
# CPU ticks (user+sys) of every process in a process group.
ticks() {
  local total=0 stat
  for stat in /proc/[0-9]*/stat; do
    read -r -a f <"$stat" 2>/dev/null || continue
    # Field 5 (index 4) is the process group; 14 and 15 user and sys time.
    # (Process names here have no spaces, so the fields do not shift.)
    [[ ${f[4]} == "$1" ]] && total=$((total + f[13] + f[14]))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# One measured run: prints "req/s cpu_us_per_req".
measure() { # pgid url extra-wrk-args...
  local pgid=$1 url=$2; shift 2
  taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d2s "$@" "$url" >/dev/null 2>&1 || true # warm-up
  local before after out requests rps
  before=$(ticks "$pgid")
  out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "$@" "$url")
  after=$(ticks "$pgid")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    echo "$NAME: errors during $url $*:" >&2; echo "$out" >&2
  fi
  awk -v r="$requests" -v rps="$rps" -v t=$((after - before)) -v hz="$HZ" \
    'BEGIN { printf "%.0f %.1f\n", rps, t / hz * 1e6 / r }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
