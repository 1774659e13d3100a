#!/usr/bin/env bash
# peers.sh — side-by-side benchmark of HTTP API gateways / proxies on loopback.
#
# Portcullis's copy of the team's peer benchmark, so that docs/benchmarks.md
# can be reproduced from a clone (`just bench` drives it). Changes from the
# reference: gateway variants in one run (GATEWAY_URLS' SCENARIO/VARIANT=URL),
# WORKERS for every server, and `--summarize` kept as it was.
#
# WHAT IT DOES
#   Starts an upstream (nginx, 127.0.0.1:18080, fixed body {"ok":true}) and a set of
#   peers, each its own process group on its own loopback port, checks that every
#   (peer, scenario) really does the scenario's work, then measures each with wrk and
#   prints one table. Everything it starts is stopped on exit (trap), even on error.
#   All traffic is to 127.0.0.1. Every wrk run is bounded (-d). Nothing outside /tmp
#   is written, apart from the Debian packages it installs when they are missing.
#
# SCENARIOS (the contract; every row is validated against it before it is measured,
# a row that fails validation is reported as FAIL and not measured)
#   S0 direct     wrk straight at the upstream: the ceiling.
#   S1 proxy      plain reverse proxy of GET <path> to the upstream, keep-alive to it.
#                 200, body {"ok":true}; exactly 1 upstream request per client request.
#   S2 header     S1 + a per-request step: read request header X-User and send the
#                 upstream the header  X-Gw-User: user=<X-User>.  The upstream echoes
#                 it back as response header X-Seen-User, which is checked.
#   S3 virtual    handler answers itself, no upstream request (0 checked), 200
#                 application/json body equal as JSON to
#                 {"virtual":true,"user":<X-User>,"path":<request path>}.
#   S4 aggregate  handler makes 3 concurrent GETs to the upstream (/a /b /c), parses
#                 them and answers {"a":{"ok":true},"b":{"ok":true},"c":{"ok":true}}
#                 (compared as JSON); exactly 3 upstream requests per client request.
#   wrk always sends "X-User: alice". The upstream's stub_status request counter is
#   read around every check and every measured run: column up/req shows the real
#   fan-out (1, 1, 0, 3) during the measurement.
#
# PEERS (name: port, scenarios, kind)
#   direct      18080  S0                 the upstream itself
#   nginx       18081  S1 S2 S3           proxy_pass + upstream keepalive; proxy_set_header with
#                                         $http_x_user; return with variables        (native)
#   nginx-lua   18082  S2 S3 S4           lua-nginx-module = OpenResty/Kong basis (script)
#                                         access_by_lua + ngx.req.set_header; content_by_lua
#                                         + cjson; ngx.location.capture_multi x3
#   nginx-njs   18083  S2 S3 S4           njs = JS handlers (cf. Tyk JS virtual endpoints)
#                                         js_set -> proxy_set_header; js_content + JSON;
#                                         async r.subrequest x3 + Promise.all
#   haproxy     18084  S1 S2 S3           native: set-header with %[req.hdr()], http-request return lf-string
#   haproxy-lua 18086  S2 S3              HAProxy Lua (5.3) action / service applet + cjson (script)
#   caddy       18085  S1 S2 S3           reverse_proxy; header_up; respond with placeholders (native)
#   kind "native" = configuration-only feature, a non-scripted reference point.
#   Every peer runs 1 worker: nginx worker_processes 1, haproxy nbthread 1,
#   caddy GOMAXPROCS=1, and all of them pinned to one CPU (see PINNING).
#
# PINNING (default; PIN=0 disables)
#   The machine this was written on has 2 CPUs. wrk runs with taskset on WRK_CPU (1)
#   and every server process (upstream + peer, or your gateway) on SERVER_CPU (0).
#   So in S1/S2/S4 the peer shares its core with the upstream; the ratio ×S0 is thus
#   "throughput of the whole server side vs the upstream alone", and gw µs/req
#   (user+sys CPU of the peer's processes / requests) isolates the peer's own cost.
#
# MEASUREMENT (per row)
#   1. quiet gate: sample /proc/stat for 2 s with everything idle; if other processes
#      use more than QUIET_MAX % of one core, wait (up to QUIET_WAIT s, then go on and
#      flag the row with '!').
#   2. warm-up wrk run of WARMUP, discarded.
#   3. wrk -t$THREADS -c$CONNS -d$DURATION --latency --timeout 2s -H 'X-User: alice'
#      with a done()-only Lua script (no per-request Lua cost in wrk) for exact
#      numbers. Around it: CPU ticks of each process group (/proc/*/stat), total
#      CPU (/proc/stat), wrk's own CPU (bash time), the upstream request counter.
#   errors = non-2xx/3xx responses + socket errors (connect/read/write/timeout).
#   bg% = CPU used during the run by user processes that are not ours (utime+stime, plus
#   cutime+cstime of reaped children), % of one core. Kernel threads are not counted.
#   With REPEAT=N the cases run round-robin N times (S0 twice per round, first and
#   last); the table shows medians and the spread (max-min)/median of req/s.
#
# READING THE TABLE (measured on a shared 2-vCPU machine)
#   gw_us/req is the steadiest number for comparing peers (run-to-run medians within
#   ~2-10%). req/s of server-bound rows (bound=srv) agree within ~3-7% between runs;
#   rows where wrk is also saturated (bound=both: S0 and native S3, ~100-120k req/s)
#   vary 10-20%, and xS0 inherits S0's noise. Use REPEAT>=3 and compare within one run.
#
# INCLUDING OUR GATEWAY (optional)
#   GATEWAY_URLS  whitespace- or comma-separated SCENARIO=URL pairs, e.g.
#                   GATEWAY_URLS="S1=http://127.0.0.1:19000/s1 S2=http://127.0.0.1:19000/s2
#                                 S3=http://127.0.0.1:19000/s3 S4=http://127.0.0.1:19000/s4"
#                 Only the scenarios listed are measured for it. URLs must be
#                 http://127.x.x.x, http://localhost or http://[::1].
#                 SCENARIO/VARIANT=URL measures another configuration of the same
#                 gateway process against SCENARIO's contract, as its own row
#                 (GATEWAY_NAME/VARIANT), e.g. S3/reuse=http://127.0.0.1:19000/r3.
#   GATEWAY_CMD   command that starts the gateway in the FOREGROUND (no daemonizing).
#                 Run as  setsid taskset -c $SERVER_CPU bash -c "$GATEWAY_CMD"  in its own
#                 process group (its CPU and RSS are that group's); at exit the group
#                 gets TERM, then KILL after 5 s. Its environment has:
#                   BENCH_UPSTREAM=http://127.0.0.1:18080  BENCH_UPSTREAM_HOST=127.0.0.1
#                   BENCH_UPSTREAM_PORT=18080  BENCH_WORKERS=1  BENCH_WORKDIR=<its own temp dir>
#                 stdout+stderr -> $RESULTS_DIR/logs/gateway.log.
#                 Without GATEWAY_CMD the URLs are measured as an already-running
#                 gateway: it is never stopped; its CPU/RSS are those of the process
#                 group listening on the first URL's port (found with ss -p); pin it
#                 yourself (taskset -c $SERVER_CPU ...) and give it one worker too.
#   GATEWAY_NAME  row label (default: gateway); GATEWAY_KIND label (default: plugin)
#   GATEWAY_READY_URL      polled until it answers any HTTP status (default: first URL)
#   GATEWAY_READY_TIMEOUT  seconds (default 60)
#   Example:
#     GATEWAY_CMD='./target/release/gw --listen 127.0.0.1:19000 --upstream $BENCH_UPSTREAM --workers 1' \
#     GATEWAY_URLS='S1=http://127.0.0.1:19000/s1 S2=http://127.0.0.1:19000/s2' \
#     bash bench/peers.sh
#
# OTHER SETTINGS (environment)
#   PEERS="nginx nginx-lua nginx-njs haproxy haproxy-lua caddy"   which peers (direct always runs)
#   WORKERS=1   worker processes/threads of every peer (nginx worker_processes, haproxy
#               nbthread, caddy GOMAXPROCS) and BENCH_WORKERS of the gateway
#   SCENARIOS="S0 S1 S2 S3 S4"   DURATION=10s WARMUP=2s THREADS=1 CONNS=32 REPEAT=3
#   (REPEAT=3: about 14 min on a quiet machine; REPEAT=1 for a quick look, ~5 min, +-10% noise)
#   PIN=1 WRK_CPU=1 SERVER_CPU=0   QUIET_MAX=20 QUIET_WAIT=600   INSTALL=1 (0: never apt-get)
#   BG_MAX=25 RETRIES=2   a run during which others used > BG_MAX % of a core is moved to
#                         discarded.tsv and repeated (at most RETRIES times, then kept, flagged)
#   PORT_BASE=18080 (upstream; peers at +1..+6)   RESULTS_DIR=/tmp/peers-bench/<timestamp>
#   KEEP_WORKDIR=0 (1: keep generated configs/logs in the temp work dir)
#   peers.sh --summarize FILE.tsv...   re-print the table from saved results (merges files).
#
# OUTPUT: the table on stdout; $RESULTS_DIR/results.tsv (one line per measured run),
#   table.txt, env.txt (versions, flags, load), logs/ (wrk outputs, server logs, configs).

set -Eeuo pipefail
export LC_ALL=C

# ------------------------------------------------------------------ settings
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-1}
CONNS=${CONNS:-32}
REPEAT=${REPEAT:-3}
PIN=${PIN:-1}
WRK_CPU=${WRK_CPU:-1}
SERVER_CPU=${SERVER_CPU:-0}
QUIET_MAX=${QUIET_MAX:-20}
QUIET_WAIT=${QUIET_WAIT:-600}
BG_MAX=${BG_MAX:-25}
RETRIES=${RETRIES:-2}
INSTALL=${INSTALL:-1}
PORT_BASE=${PORT_BASE:-18080}
PEERS=${PEERS:-"nginx nginx-lua nginx-njs haproxy haproxy-lua caddy"}
SCENARIOS=${SCENARIOS:-"S0 S1 S2 S3 S4"}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
GATEWAY_CMD=${GATEWAY_CMD:-}
GATEWAY_URLS=${GATEWAY_URLS:-}
GATEWAY_NAME=${GATEWAY_NAME:-gateway}
GATEWAY_KIND=${GATEWAY_KIND:-plugin}
GATEWAY_READY_URL=${GATEWAY_READY_URL:-}
GATEWAY_READY_TIMEOUT=${GATEWAY_READY_TIMEOUT:-60}
WORKERS=${WORKERS:-1}

UP_PORT=$PORT_BASE
declare -A PORT=( [direct]=$PORT_BASE [nginx]=$((PORT_BASE+1)) [nginx-lua]=$((PORT_BASE+2))
                  [nginx-njs]=$((PORT_BASE+3)) [haproxy]=$((PORT_BASE+4)) [caddy]=$((PORT_BASE+5))
                  [haproxy-lua]=$((PORT_BASE+6)) )
declare -A PEER_SCEN=( [direct]="S0" [nginx]="S1 S2 S3" [nginx-lua]="S2 S3 S4" [nginx-njs]="S2 S3 S4"
                       [haproxy]="S1 S2 S3" [haproxy-lua]="S2 S3" [caddy]="S1 S2 S3" )
NGX_MODDIR=/usr/lib/nginx/modules
HDR_USER="alice"
TSV_HEADER="rep	peer	scenario	kind	url	requests	duration_s	rps	p50_us	p90_us	p99_us	max_us	mean_us	err_status	err_connect	err_read	err_write	err_timeout	errors	up_requests	up_per_req	peer_cpu_s	up_cpu_s	wrk_cpu_s	elapsed_s	gw_us_per_req	srv_pct	wrk_pct	bg_pct	sirq_pct	steal_pct	load1	rss_kb	quiet_ok	quiet_waited_s	up_new_conns"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ summary
# summarize FILE... : median per (peer, scenario) over reps; spread = (max-min)/median of rps.
summarize() {
  awk -F'\t' -v bgmax="${BG_MAX:-25}" '
    function med(s,   n, a, i, j, t) { n = split(s, a, " "); if (n == 0) return "";
      for (i = 2; i <= n; i++) { t = a[i] + 0; j = i - 1; while (j >= 1 && a[j] + 0 > t) { a[j+1] = a[j]; j-- } a[j+1] = t }
      return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    function mn(s,  n,a,i,m){ n=split(s,a," "); m=a[1]+0; for(i=2;i<=n;i++) if(a[i]+0<m) m=a[i]+0; return m }
    function mx(s,  n,a,i,m){ n=split(s,a," "); m=a[1]+0; for(i=2;i<=n;i++) if(a[i]+0>m) m=a[i]+0; return m }
    FNR == 1 { next }
    {
      k = $2 SUBSEP $3
      if (!(k in seen)) { seen[k] = 1; order[++nk] = k; kind[k] = $4 }
      if ($6 == "FAIL") { fail[k] = 1; next }
      rps[k] = rps[k] " " $8; p50[k] = p50[k] " " $9; p99[k] = p99[k] " " $11
      err[k] += $19; upr[k] = upr[k] " " $21; gw[k] = gw[k] " " $26
      srv[k] = srv[k] " " $27; wrk[k] = wrk[k] " " $28; bg[k] = bg[k] " " $29
      rss[k] = rss[k] " " $33; uc[k] = uc[k] " " $36; n[k]++; if ($34 == 0 || $29 + 0 > bgmax) noisy[k] = 1
      if ($3 == "S0") s0 = s0 " " $8
    }
    END {
      base = med(s0)
      printf "%-22s %-4s %-6s %9s %6s %7s %7s %6s %6s %9s %6s %6s %8s %5s %5s %7s %3s\n", "peer", "scen", "kind", "req/s", "+-%", "p50ms", "p99ms", "errors", "xS0", "gw_us/req", "up/req", "upconn", "srv/wrk%", "bound", "bg%", "rss_MB", "n"
      for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, pk, SUBSEP)
        if (fail[k] && !n[k]) { printf "%-22s %-4s %-6s %9s\n", pk[1], pk[2], kind[k], "FAIL(validation)"; continue }
        r = med(rps[k]); sp = (n[k] > 1 && r > 0) ? sprintf("%.1f", (mx(rps[k]) - mn(rps[k])) / r * 100) : "-"
        g = med(gw[k]); gs = (g == "" || g == "-" || gw[k] ~ /-/) ? "-" : sprintf("%.1f", g)
        rs = (rss[k] ~ /-/) ? "-" : sprintf("%.1f", med(rss[k]) / 1024)
        sw = (srv[k] ~ /-/) ? sprintf("-/%.0f", med(wrk[k])) : sprintf("%.0f/%.0f", med(srv[k]), med(wrk[k]))
        sb = (srv[k] !~ /-/ && med(srv[k]) >= 90); wb = (med(wrk[k]) >= 90)
        bd = (sb && wb) ? "both" : (sb ? "srv" : (wb ? "wrk" : "-"))
        ucs = (uc[k] ~ /[0-9]/) ? sprintf("%d", med(uc[k])) : "-"
        printf "%-22s %-4s %-6s %9.0f %6s %7.3f %7.3f %6d %6s %9s %6.2f %6s %8s %5s %5.1f %7s %3d%s\n", pk[1], pk[2], kind[k], r, sp,
          med(p50[k]) / 1000, med(p99[k]) / 1000, err[k], (base > 0 ? sprintf("%.3f", r / base) : "-"), gs,
          med(upr[k]), ucs, sw, bd, mx(bg[k]), rs, n[k], (noisy[k] ? " !" : "")
      }
    }' "$@"
}

if [[ "${1:-}" == "--summarize" ]]; then shift; summarize "$@"; exit 0; fi
[[ $# -eq 0 ]] || die "unknown arguments: $* (see the header of this script)"

# ------------------------------------------------------------------ install
need_install() {
  local pkgs=()
  command -v nginx   >/dev/null || pkgs+=(nginx-core)
  [[ -f $NGX_MODDIR/ngx_http_lua_module.so ]] || pkgs+=(libnginx-mod-http-lua)
  [[ -f $NGX_MODDIR/ngx_http_js_module.so ]]  || pkgs+=(libnginx-mod-http-js)
  command -v haproxy >/dev/null || pkgs+=(haproxy)
  command -v caddy   >/dev/null || pkgs+=(caddy)
  command -v wrk     >/dev/null || pkgs+=(wrk)
  command -v curl    >/dev/null || pkgs+=(curl)
  command -v jq      >/dev/null || pkgs+=(jq)
  command -v taskset >/dev/null || pkgs+=(util-linux)
  command -v ss      >/dev/null || pkgs+=(iproute2)
  # cjson for LuaJIT (nginx-lua) and Lua 5.3 (haproxy-lua)
  [[ -f /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so || -n "$(ls /usr/lib/*/lua/5.1/cjson.so 2>/dev/null)" ]] || pkgs+=(lua-cjson)
  echo "${pkgs[@]:-}"
}
install_deps() {
  local missing; missing=$(need_install)
  [[ -z "$missing" ]] && return 0
  if [[ "$INSTALL" != 1 ]]; then log "missing (INSTALL=0, not installing): $missing"; return 0; fi
  log "installing: $missing"
  local apt=(apt-get -y -q -o DPkg::Lock::Timeout=600)
  [[ $(id -u) -eq 0 ]] || apt=(sudo "${apt[@]}")
  if ! compgen -G '/var/lib/apt/lists/*Packages*' >/dev/null; then "${apt[@]}" update >/dev/null; fi
  local p ok=()
  for p in $missing; do
    if [[ $p == nginx-core ]] && ! apt-cache show nginx-core >/dev/null 2>&1; then p=nginx; fi
    ok+=("$p")
  done
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${ok[@]}" >/tmp/peers-bench-apt.log 2>&1 \
    || log "WARNING: apt-get install failed (see /tmp/peers-bench-apt.log); unavailable peers are skipped"
}

# ------------------------------------------------------------------ process management
declare -A GROUP=()        # name -> pgid (== pid of the process we started)
STARTED=()                 # pgids, in start order
W=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i pg
  for (( i=${#STARTED[@]}-1; i>=0; i-- )); do
    pg=${STARTED[i]}
    kill -TERM -- "-$pg" 2>/dev/null || true
  done
  for pg in "${STARTED[@]}"; do
    for _ in $(seq 50); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.1; done
    if kill -0 -- "-$pg" 2>/dev/null; then log "group $pg still alive after 5 s: KILL"; kill -KILL -- "-$pg" 2>/dev/null || true; fi
    wait "$pg" 2>/dev/null || true
  done
  if [[ -n "$W" && -d "$W" ]]; then
    if [[ -n "${RESULTS_DIR:-}" && -d "$RESULTS_DIR/logs" ]]; then
      ( cd "$W" && find . -name '*.conf' -o -name '*.js' -o -name '*.lua' -o -name 'Caddyfile' -o -name '*.cfg' -o -name '*.log' ) 2>/dev/null |
        while read -r f; do mkdir -p "$RESULTS_DIR/logs/servers/$(dirname "$f")"; cp "$W/$f" "$RESULTS_DIR/logs/servers/$f" 2>/dev/null || true; done
    fi
    if [[ "$KEEP_WORKDIR" == 1 ]]; then log "work dir kept: $W"; else rm -rf "$W"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

pin() { if [[ "$PIN" == 1 ]]; then echo "taskset -c $1"; fi; }

# start_group NAME LOGFILE CMD... : own session/process group, pinned to SERVER_CPU
start_group() {
  local name=$1 logf=$2; shift 2
  # shellcheck disable=SC2046
  setsid $(pin "$SERVER_CPU") "$@" >"$logf" 2>&1 </dev/null &
  local pid=$!
  GROUP[$name]=$pid; STARTED+=("$pid")
  sleep 0.05
  local pg; pg=$(pgid_of "$pid" || echo "?")
  [[ "$pg" == "$pid" || "$pg" == "?" ]] || log "WARNING: $name pid $pid is in group $pg"
  log "started $name (pid/pgid $pid): $*"
}

port_in_use() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
# listener_pgid PORT -> process group of the process listening on that port (needs ss -p, i.e. root)
listener_pgid() {
  local pid; pid=$(ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [[ -n "$pid" ]] && pgid_of "$pid"
}

# wait_http URL TIMEOUT_S PGID : until it answers any HTTP status; fails if the group died
wait_http() {
  local url=$1 t=$2 pg=${3:-} end=$(( $(date +%s) + $2 ))
  while (( $(date +%s) < end )); do
    if [[ -n "$pg" ]] && ! kill -0 "$pg" 2>/dev/null; then return 1; fi
    curl -s -o /dev/null -m 1 "$url" && return 0
    sleep 0.1
  done
  return 1
}

# group_stats PGID... -> "pgid ticks rss_kb" per group (ticks = utime+stime of all its processes),
# plus "others ticks": utime+stime+cutime+cstime of every user-space process outside the process
# groups we started and outside this script's own group (which holds wrk, curl, awk). Counting
# cutime/cstime catches short-lived processes (a compiler's children) once their parent reaps them.
PAGE_KB=$(( $(getconf PAGESIZE) / 1024 ))
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
pgid_of() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, a, " "); print a[3] }' "/proc/$1/stat" 2>/dev/null; }
MY_PGID=$(pgid_of $$)
EXTRA_EXCL=""              # process groups we account for but did not start (an external gateway)
group_stats() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v want="$*" -v excl="${STARTED[*]:-} $MY_PGID $EXTRA_EXCL" -v pk="$PAGE_KB" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) { W[w[i]] = 1; T[w[i]] = 0; R[w[i]] = 0 }
            m = split(excl, x, " "); for (i = 1; i <= m; i++) X[x[i]] = 1; O = 0 }
    { s = $0; sub(/^.*\) /, "", s); split(s, a, " "); g = a[3]
      if (g in W) { T[g] += a[12] + a[13]; R[g] += a[22] * pk }
      else if (!(g in X) && int(a[7] / 2097152) % 2 == 0) O += a[12] + a[13] + a[14] + a[15] }
    END { for (i = 1; i <= n; i++) print w[i], T[w[i]], R[w[i]]; print "others", O }'
}
cpu_line() { head -1 /proc/stat; }   # cpu user nice system idle iowait irq softirq steal ...

# busy % (of one core) of the whole machine over $1 seconds
busy_pct() {
  local a b; a=$(cpu_line); sleep "$1"; b=$(cpu_line)
  awk -v a="$a" -v b="$b" -v n="$NCPU" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = 0; for (i = 2; i <= 9; i++) t += y[i] - x[i]; idle = (y[5] - x[5]) + (y[6] - x[6]);
    printf "%.1f", (t > 0 ? (t - idle) / t * n * 100 : 0) }'
}

# quiet_gate -> sets QUIET_OK (1/0), QUIET_WAITED (s)
quiet_gate() {
  local start; start=$(date +%s); QUIET_OK=0
  while :; do
    local b; b=$(busy_pct 2)
    if awk -v b="$b" -v m="$QUIET_MAX" 'BEGIN { exit !(b <= m) }'; then QUIET_OK=1; break; fi
    if (( $(date +%s) - start >= QUIET_WAIT )); then log "  machine still busy (${b}% of a core) after ${QUIET_WAIT}s; measuring anyway (row flagged !)"; break; fi
    log "  machine busy: ${b}% of a core used by others (load $(cut -d' ' -f1-3 /proc/loadavg)); waiting"
    sleep 8
  done
  QUIET_WAITED=$(( $(date +%s) - start ))
}

# upstream counters from stub_status: "accepted_connections requests" (each read counts itself as 1 request)
up_stats() { curl -s -m 2 "http://127.0.0.1:$UP_PORT/_status" | awk '/^ *[0-9]+ +[0-9]+ +[0-9]+/ { print $1, $3; exit }'; }
up_count() { up_stats | awk '{ print $2 }'; }

is_loopback_url() { [[ "$1" =~ ^http://(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\])(:[0-9]+)?(/.*)?$ ]]; }

# ------------------------------------------------------------------ server configs
nginx_common_main() {  # $1 = dir
  cat <<EOF
worker_processes $WORKERS;
daemon off;
master_process on;
pid $1/nginx.pid;
lock_file $1/nginx.lock;
error_log $1/error.log warn;
worker_rlimit_nofile 8192;
EOF
}
nginx_common_http() {  # $1 = dir
  cat <<EOF
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server_tokens off;
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
EOF
}
NGX_PROXY='proxy_http_version 1.1; proxy_set_header Connection "";'

write_upstream() {
  local d=$W/direct; mkdir -p "$d/tmp"
  { nginx_common_main "$d"
    cat <<EOF
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body; proxy_temp_path $d/tmp/proxy; fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi; scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server_tokens off;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        default_type application/json;
        location = /_status { stub_status; }
        location / {
            add_header X-Seen-User \$http_x_gw_user always;
            return 200 '{"ok":true}';
        }
    }
}
EOF
  } >"$d/nginx.conf"
}

write_nginx() {
  local d=$W/nginx; mkdir -p "$d/tmp"
  { nginx_common_main "$d"
    cat <<EOF
events { worker_connections 4096; }
http {
$(nginx_common_http "$d")
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=4096;
        location /s2 { proxy_pass http://up; $NGX_PROXY proxy_set_header X-Gw-User "user=\$http_x_user"; }
        location /s3 {
            default_type application/json;
            return 200 '{"virtual":true,"user":"\$http_x_user","path":"\$uri"}';
        }
        location / { proxy_pass http://up; $NGX_PROXY }
    }
}
EOF
  } >"$d/nginx.conf"
}

write_nginx_lua() {
  local d=$W/nginx-lua; mkdir -p "$d/tmp"
  { echo "load_module $NGX_MODDIR/ndk_http_module.so;"
    echo "load_module $NGX_MODDIR/ngx_http_lua_module.so;"
    nginx_common_main "$d"
    cat <<'EOF'
events { worker_connections 4096; }
http {
    init_by_lua_block { require "cjson" }
EOF
    nginx_common_http "$d"
    cat <<EOF
    server {
        listen 127.0.0.1:${PORT[nginx-lua]} backlog=4096;
        location /s2 {
            access_by_lua_block {
                local u = ngx.var.http_x_user or "anon"
                ngx.req.set_header("X-Gw-User", "user=" .. u)
            }
            proxy_pass http://up; $NGX_PROXY
        }
        location /s3 {
            default_type application/json;
            content_by_lua_block {
                local cjson = require "cjson"
                ngx.print(cjson.encode({ virtual = true, user = ngx.var.http_x_user or "anon", path = ngx.var.uri }))
            }
        }
        location /s4 {
            default_type application/json;
            content_by_lua_block {
                local cjson = require "cjson"
                local a, b, c = ngx.location.capture_multi{ { "/_up/a" }, { "/_up/b" }, { "/_up/c" } }
                if a.status ~= 200 or b.status ~= 200 or c.status ~= 200 then return ngx.exit(502) end
                ngx.print(cjson.encode({ a = cjson.decode(a.body), b = cjson.decode(b.body), c = cjson.decode(c.body) }))
            }
        }
        location /_up/ { internal; proxy_pass http://up/; $NGX_PROXY }
        location / { proxy_pass http://up; $NGX_PROXY }
    }
}
EOF
  } >"$d/nginx.conf"
}

write_nginx_njs() {
  local d=$W/nginx-njs; mkdir -p "$d/tmp"
  cat >"$d/gw.js" <<'EOF'
function user(r) {
    return 'user=' + (r.headersIn['X-User'] || 'anon');
}
function virtual(r) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(200, JSON.stringify({ virtual: true, user: r.headersIn['X-User'] || 'anon', path: r.uri }));
}
async function aggregate(r) {
    try {
        const rs = await Promise.all(['/_up/a', '/_up/b', '/_up/c'].map(u => r.subrequest(u)));
        for (var i = 0; i < rs.length; i++) { if (rs[i].status !== 200) { r.return(502); return; } }
        r.headersOut['Content-Type'] = 'application/json';
        r.return(200, JSON.stringify({ a: JSON.parse(rs[0].responseText), b: JSON.parse(rs[1].responseText),
                                       c: JSON.parse(rs[2].responseText) }));
    } catch (e) {
        r.return(500, String(e));
    }
}
export default { user, virtual, aggregate };
EOF
  { echo "load_module $NGX_MODDIR/ngx_http_js_module.so;"
    nginx_common_main "$d"
    cat <<EOF
events { worker_connections 4096; }
http {
$(nginx_common_http "$d")
    js_path "$d/";
    js_import gw from gw.js;
    js_set \$gw_user gw.user;
    server {
        listen 127.0.0.1:${PORT[nginx-njs]} backlog=4096;
        location /s2 { proxy_pass http://up; $NGX_PROXY proxy_set_header X-Gw-User \$gw_user; }
        location /s3 { js_content gw.virtual; }
        location /s4 { js_content gw.aggregate; }
        location /_up/ { internal; proxy_pass http://up/; $NGX_PROXY }
        location / { proxy_pass http://up; $NGX_PROXY }
    }
}
EOF
  } >"$d/nginx.conf"
}

haproxy_common() {
  cat <<EOF
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    option http-keep-alive
    http-reuse always
backend be
    server up 127.0.0.1:$UP_PORT
EOF
}

write_haproxy() {
  local d=$W/haproxy; mkdir -p "$d"
  cat >"$d/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 4096
$(haproxy_common)
frontend fe
    bind 127.0.0.1:${PORT[haproxy]}
    http-request return status 200 content-type application/json lf-string '{"virtual":true,"user":"%[req.hdr(x-user)]","path":"%[path]"}' if { path /s3 }
    http-request set-header X-Gw-User 'user=%[req.hdr(x-user)]' if { path /s2 }
    default_backend be
EOF
}

write_haproxy_lua() {
  local d=$W/haproxy-lua; mkdir -p "$d"
  cat >"$d/gw.lua" <<'EOF'
local cjson = require "cjson"
core.register_action("gw_user", { "http-req" }, function(txn)
    local u = txn.sf:req_hdr("x-user")
    if u == nil or u == "" then u = "anon" end
    txn.http:req_set_header("X-Gw-User", "user=" .. u)
end, 0)
core.register_service("virtual", "http", function(applet)
    local h = applet.headers["x-user"]
    local body = cjson.encode({ virtual = true, user = (h and h[0]) or "anon", path = applet.path })
    applet:set_status(200)
    applet:add_header("content-type", "application/json")
    applet:add_header("content-length", tostring(#body))
    applet:start_response()
    applet:send(body)
end)
EOF
  cat >"$d/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 4096
    lua-load $d/gw.lua
$(haproxy_common)
frontend fe
    bind 127.0.0.1:${PORT[haproxy-lua]}
    http-request use-service lua.virtual if { path /s3 }
    http-request lua.gw_user if { path /s2 }
    default_backend be
EOF
}

write_caddy() {
  local d=$W/caddy; mkdir -p "$d/home"
  cat >"$d/Caddyfile" <<EOF
{
    admin off
    auto_https off
    grace_period 1s
}
http://127.0.0.1:${PORT[caddy]} {
    bind 127.0.0.1
    @s3 path /s3
    @s2 path /s2
    handle @s3 {
        header Content-Type application/json
        respond \`\\{"virtual":true,"user":"{http.request.header.X-User}","path":"{http.request.uri.path}"\\}\` 200
    }
    handle @s2 {
        reverse_proxy 127.0.0.1:$UP_PORT {
            header_up X-Gw-User "user={http.request.header.X-User}"
            transport http {
                keepalive 60s
                keepalive_idle_conns 128
                keepalive_idle_conns_per_host 128
            }
        }
    }
    handle {
        reverse_proxy 127.0.0.1:$UP_PORT {
            transport http {
                keepalive 60s
                keepalive_idle_conns 128
                keepalive_idle_conns_per_host 128
            }
        }
    }
}
EOF
}

# start_peer NAME -> 0 if up
start_peer() {
  local p=$1 d=$W/$1 port=${PORT[$1]}
  if port_in_use "$port"; then log "SKIP $p: port $port already in use"; return 1; fi
  case $p in
    direct)
      command -v nginx >/dev/null || { log "SKIP: nginx missing"; return 1; }
      write_upstream
      nginx -t -q -p "$d/" -c "$d/nginx.conf" >"$W/direct.t.log" 2>&1 || { log "upstream config test failed:"; cat "$W/direct.t.log" >&2; return 1; }
      start_group direct "$RESULTS_DIR/logs/upstream.log" nginx -p "$d/" -c "$d/nginx.conf" ;;
    nginx|nginx-lua|nginx-njs)
      command -v nginx >/dev/null || { log "SKIP $p: nginx missing"; return 1; }
      [[ $p != nginx-lua || -f $NGX_MODDIR/ngx_http_lua_module.so ]] || { log "SKIP $p: lua module missing"; return 1; }
      [[ $p != nginx-njs || -f $NGX_MODDIR/ngx_http_js_module.so ]] || { log "SKIP $p: njs module missing"; return 1; }
      "write_${p//-/_}"
      nginx -t -q -p "$d/" -c "$d/nginx.conf" >"$W/$p.t.log" 2>&1 || { log "SKIP $p: config test failed:"; cat "$W/$p.t.log" >&2; return 1; }
      start_group "$p" "$RESULTS_DIR/logs/$p.log" nginx -p "$d/" -c "$d/nginx.conf" ;;
    haproxy|haproxy-lua)
      command -v haproxy >/dev/null || { log "SKIP $p: haproxy missing"; return 1; }
      "write_${p//-/_}"
      haproxy -c -q -f "$d/haproxy.cfg" >"$W/$p.t.log" 2>&1 || { log "SKIP $p: config test failed:"; cat "$W/$p.t.log" >&2; return 1; }
      start_group "$p" "$RESULTS_DIR/logs/$p.log" haproxy -db -f "$d/haproxy.cfg" ;;
    caddy)
      command -v caddy >/dev/null || { log "SKIP $p: caddy missing"; return 1; }
      write_caddy
      start_group caddy "$RESULTS_DIR/logs/caddy.log" env GOMAXPROCS="$WORKERS" HOME="$d/home" XDG_DATA_HOME="$d/home" \
        XDG_CONFIG_HOME="$d/home" caddy run --config "$d/Caddyfile" --adapter caddyfile ;;
    *) log "SKIP unknown peer $p"; return 1 ;;
  esac
  wait_http "http://127.0.0.1:$port/" 20 "${GROUP[$p]}" || { log "SKIP $p: did not come up (log: $RESULTS_DIR/logs/$p.log)"; return 1; }
}

# ------------------------------------------------------------------ validation
# check_case PEER SCEN URL -> 0 if the response and the upstream fan-out match the contract
check_case() {
  local peer=$1 sc=$2 url=$3 f=$W/check.${1//\//-}.$2 code before after delta want
  before=$(up_count)
  code=$(curl -s -m 5 -o "$f.body" -D "$f.hdr" -H "X-User: $HDR_USER" -w '%{http_code}' "$url" || echo 000)
  after=$(up_count)
  delta=$(( after - before - 1 ))
  [[ "$code" == 200 ]] || { log "  FAIL $peer $sc: HTTP $code"; return 1; }
  local path=${url#*://}; path=${path#*/}; path=/${path%%\?*}
  case $sc in
    S0|S1) want=1; jq -e '. == {"ok":true}' "$f.body" >/dev/null 2>&1 || { log "  FAIL $peer $sc: body $(head -c 200 "$f.body")"; return 1; } ;;
    S2)    want=1; jq -e '. == {"ok":true}' "$f.body" >/dev/null 2>&1 || { log "  FAIL $peer $sc: body $(head -c 200 "$f.body")"; return 1; }
           grep -qi "^x-seen-user: user=$HDR_USER"$'\r'"\?$" "$f.hdr" || { log "  FAIL $peer $sc: upstream did not see X-Gw-User: user=$HDR_USER"; return 1; } ;;
    S3)    want=0; jq -e --arg u "$HDR_USER" --arg p "$path" '. == {"virtual":true,"user":$u,"path":$p}' "$f.body" >/dev/null 2>&1 \
             || { log "  FAIL $peer $sc: body $(head -c 200 "$f.body")"; return 1; } ;;
    S4)    want=3; jq -e '. == {"a":{"ok":true},"b":{"ok":true},"c":{"ok":true}}' "$f.body" >/dev/null 2>&1 \
             || { log "  FAIL $peer $sc: body $(head -c 200 "$f.body")"; return 1; } ;;
  esac
  if (( delta != want )); then
    if [[ $peer == "$GATEWAY_NAME" || $peer == "$GATEWAY_NAME"/* ]] && (( delta > want )); then
      log "  WARNING $peer $sc: $delta upstream requests for one client request (expected $want)"
    else
      log "  FAIL $peer $sc: $delta upstream requests for one client request (expected $want)"; return 1
    fi
  fi
  return 0
}

# ------------------------------------------------------------------ measurement
WRK_FLAGS="-t$THREADS -c$CONNS -d$DURATION --latency --timeout 2s"
run_case() {  # REP PEER SCEN KIND URL
  local rep=$1 peer=$2 sc=$3 kind=$4 url=$5 tag="$1.${2//\//-}.$3"
  local pg=${GROUP[$peer]:-} upg=${GROUP[direct]}
  [[ $peer == direct ]] && pg=""
  log "rep $rep: $peer $sc ($url)"
  quiet_gate
  # warm-up (discarded)
  $(pin "$WRK_CPU") wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" --timeout 2s -H "X-User: $HDR_USER" "$url" >"$RESULTS_DIR/logs/wrk.$tag.warmup.txt" 2>&1 || true
  local load1; load1=$(cut -d' ' -f1 /proc/loadavg)
  local c0 s0 u0 t0 c1 s1 u1 t1 tf=$W/time.$tag
  c0=$(cpu_line); s0=$(group_stats $upg ${pg:-}); u0=$(up_stats); t0=$(date +%s.%N)
  local TIMEFORMAT='%3R %3U %3S'
  # shellcheck disable=SC2046,SC2086
  { time $(pin "$WRK_CPU") wrk $WRK_FLAGS -H "X-User: $HDR_USER" -s "$W/report.lua" "$url" \
        >"$RESULTS_DIR/logs/wrk.$tag.txt" 2>&1; } 2>"$tf" || true
  t1=$(date +%s.%N); u1=$(up_stats); s1=$(group_stats $upg ${pg:-}); c1=$(cpu_line)
  local res; res=$(grep '^RESULT ' "$RESULTS_DIR/logs/wrk.$tag.txt" || true)
  if [[ -z "$res" ]]; then
    log "  wrk produced no result: $(tail -3 "$RESULTS_DIR/logs/wrk.$tag.txt")"
    printf '%s\t%s\t%s\t%s\t%s\tFAIL\n' "$rep" "$peer" "$sc" "$kind" "$url" >>"$RESULTS_DIR/results.tsv"; return
  fi
  awk -v rep="$rep" -v peer="$peer" -v sc="$sc" -v kind="$kind" -v url="$url" -v res="$res" \
      -v c0="$c0" -v c1="$c1" -v s0="$s0" -v s1="$s1" -v upg="$upg" -v pg="${pg:-}" \
      -v u0="$u0" -v u1="$u1" -v t0="$t0" -v t1="$t1" -v tm="$(cat "$tf")" -v hz="$CLK_TCK" \
      -v load1="$load1" -v qok="$QUIET_OK" -v qw="$QUIET_WAITED" '
    function grp(s, g, what,   n, l, i, f) { n = split(s, l, "\n"); for (i = 1; i <= n; i++) { split(l[i], f, " "); if (f[1] == g) return f[what] } return 0 }
    BEGIN {
      n = split(res, kv, " "); for (i = 2; i <= n; i++) { split(kv[i], p, "="); R[p[1]] = p[2] }
      dur = R["duration_us"] / 1e6; rps = R["requests"] / dur
      errs = R["status"] + R["connect"] + R["read"] + R["write"] + R["timeout"]
      el = t1 - t0
      upc = (grp(s1, upg, 2) - grp(s0, upg, 2)) / hz
      if (pg != "") { pc = (grp(s1, pg, 2) - grp(s0, pg, 2)) / hz; rss = grp(s1, pg, 3) } else { pc = upc; rss = grp(s1, upg, 3) }
      split(tm, T, " "); wc = T[2] + T[3]
      split(c0, x, " "); split(c1, y, " ")
      sirq = ((y[7] - x[7]) + (y[8] - x[8])) / hz; steal = (y[9] - x[9]) / hz
      bg = (grp(s1, "others", 2) - grp(s0, "others", 2)) / hz; if (bg < 0) bg = 0
      split(u0, U0, " "); split(u1, U1, " ")
      upreq = U1[2] - U0[2] - 1; upconn = U1[1] - U0[1] - 1
      srv = (pg != "" ? pc + upc : upc)
      printf "%s\t%s\t%s\t%s\t%s\t%d\t%.3f\t%.1f\t%d\t%d\t%d\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%d\t%d\t%d\t%d\n",
        rep, peer, sc, kind, url, R["requests"], dur, rps, R["p50_us"], R["p90_us"], R["p99_us"], R["max_us"], R["mean_us"],
        R["status"], R["connect"], R["read"], R["write"], R["timeout"], errs, upreq, (R["requests"] > 0 ? upreq / R["requests"] : 0),
        pc, upc, wc, el, (R["requests"] > 0 ? pc / R["requests"] * 1e6 : 0), srv / el * 100, wc / el * 100, bg / el * 100,
        sirq / el * 100, steal / el * 100, load1, rss, qok, qw, upconn
    }' >>"$RESULTS_DIR/results.tsv"
  tail -1 "$RESULTS_DIR/results.tsv" | awk -F'\t' '{ printf "  %.0f req/s  p50 %.3f ms  p99 %.3f ms  errors %d  up/req %.2f (new upstream conns %d)  gw %.1f us/req  srv %.0f%% wrk %.0f%% bg %.1f%%  load %s\n", $8, $9/1000, $11/1000, $19, $21, $36, $26, $27, $28, $29, $32 }' >&2
}

# external gateway rows: no CPU accounting possible -> blank those columns
EXTERNAL_UNACCOUNTED=0
fix_external_rows() {
  [[ "$EXTERNAL_UNACCOUNTED" == 1 ]] || return 0
  awk -F'\t' -v OFS='\t' -v g="$GATEWAY_NAME" 'NR > 1 && ($2 == g || index($2, g "/") == 1) && $6 != "FAIL" { $22 = "-"; $26 = "-"; $27 = "-"; $29 = "-"; $33 = "-" } { print }' \
    "$RESULTS_DIR/results.tsv" >"$RESULTS_DIR/results.tsv.tmp" && mv "$RESULTS_DIR/results.tsv.tmp" "$RESULTS_DIR/results.tsv"
}

# ------------------------------------------------------------------ main
RESULTS_DIR=${RESULTS_DIR:-/tmp/peers-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS_DIR/logs"
install_deps
for c in nginx wrk curl jq ss awk; do command -v $c >/dev/null || die "required command missing: $c"; done
[[ "$PIN" != 1 ]] || command -v taskset >/dev/null || die "taskset missing (or run with PIN=0)"
(( NCPU >= 2 )) || { [[ "$PIN" != 1 ]] || { log "only $NCPU CPU: PIN=0"; PIN=0; }; }

W=$(mktemp -d /tmp/peers-bench.XXXXXX); chmod 0755 "$W"
cat >"$W/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
EOF

# environment record
{
  echo "date: $(date -Is)"; echo "host: $(uname -srm), $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "load at start: $(cat /proc/loadavg)"
  echo "wrk: $(wrk -v 2>&1 | head -1)  flags: $WRK_FLAGS -H 'X-User: $HDR_USER' (warm-up ${WARMUP} discarded) REPEAT=$REPEAT"
  echo "workers per server: $WORKERS; pinning: PIN=$PIN wrk->CPU $WRK_CPU, servers->CPU $SERVER_CPU; quiet gate <= ${QUIET_MAX}% of a core over 2 s"
  echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //') (deb $(dpkg-query -W -f '${Version}' nginx-core 2>/dev/null || dpkg-query -W -f '${Version}' nginx 2>/dev/null))"
  echo "lua-nginx-module: deb $(dpkg-query -W -f '${Version}' libnginx-mod-http-lua 2>/dev/null || echo n/a), luajit2 $(dpkg-query -W -f '${Version}' 'libluajit2-5.1-2' 2>/dev/null || dpkg-query -W -f '${Version}' 'libluajit-5.1-2' 2>/dev/null || echo '?'), lua-resty-core $(dpkg-query -W -f '${Version}' lua-resty-core 2>/dev/null || echo n/a), lua-cjson $(dpkg-query -W -f '${Version}' lua-cjson 2>/dev/null || echo n/a)"
  echo "njs: deb $(dpkg-query -W -f '${Version}' libnginx-mod-http-js 2>/dev/null || echo n/a)"
  echo "haproxy: $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}') ($(haproxy -vv 2>/dev/null | grep -o 'Built with Lua version : .*' | sed 's/Built with //'))"
  echo "caddy: $(caddy version 2>/dev/null | head -1)"
  [[ -z "$GATEWAY_URLS" ]] || echo "gateway: $GATEWAY_NAME cmd='${GATEWAY_CMD:-<external>}' urls='$GATEWAY_URLS'"
} >"$RESULTS_DIR/env.txt"
cat "$RESULTS_DIR/env.txt" >&2

awk -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN { exit !(l > 1.5) }' && log "NOTE: load average $(cut -d' ' -f1-3 /proc/loadavg) at start; the quiet gate will wait for other processes before each run"

# start servers; build the case list
CASES=()   # "peer|scen|kind|url"
want_scen() { [[ " $SCENARIOS " == *" $1 "* ]]; }
start_peer direct || die "upstream failed to start"
[[ -n "$(up_count)" ]] || die "upstream stub_status not readable"
want_scen S0 && CASES+=("direct|S0|-|http://127.0.0.1:$UP_PORT/s0")
for p in $PEERS; do
  [[ -n "${PEER_SCEN[$p]:-}" && $p != direct ]] || { log "unknown peer $p"; continue; }
  sel=""; for s in ${PEER_SCEN[$p]}; do want_scen "$s" && sel+=" $s"; done
  [[ -n "$sel" ]] || continue
  start_peer "$p" || continue
  for s in $sel; do
    k=native
    case $p in nginx-lua|nginx-njs|haproxy-lua) k=script ;; esac
    CASES+=("$p|$s|$k|http://127.0.0.1:${PORT[$p]}/${s,,}")
  done
done
if [[ -n "$GATEWAY_URLS" ]]; then
  gw_started=1
  first_url=""
  for pair in ${GATEWAY_URLS//,/ }; do
    s=${pair%%=*}; u=${pair#*=}
    [[ "$s" =~ ^S[1-4](/[A-Za-z0-9_.-]+)?$ ]] || die "GATEWAY_URLS: bad scenario '$s' (S1..S4, optionally /VARIANT)"
    is_loopback_url "$u" || die "GATEWAY_URLS: $u is not an http:// loopback URL"
    [[ -n "$first_url" ]] || first_url=$u
  done
  if [[ -n "$GATEWAY_CMD" ]]; then
    mkdir -p "$W/gateway"
    GW_PORTS=$(printf '%s\n' ${GATEWAY_URLS//,/ } | sed -E 's#.*://[^:/]+:([0-9]+).*#\1#;t;d' | sort -u)
    for gp in $GW_PORTS; do port_in_use "$gp" && die "gateway port $gp already in use before GATEWAY_CMD started"; done
    start_group "$GATEWAY_NAME" "$RESULTS_DIR/logs/gateway.log" env BENCH_UPSTREAM="http://127.0.0.1:$UP_PORT" \
      BENCH_UPSTREAM_HOST=127.0.0.1 BENCH_UPSTREAM_PORT="$UP_PORT" BENCH_WORKERS="$WORKERS" BENCH_WORKDIR="$W/gateway" \
      bash -c "$GATEWAY_CMD"
    wait_http "${GATEWAY_READY_URL:-$first_url}" "$GATEWAY_READY_TIMEOUT" "${GROUP[$GATEWAY_NAME]}" \
      || { kill -0 -- "-${GROUP[$GATEWAY_NAME]}" 2>/dev/null && why="did not answer within ${GATEWAY_READY_TIMEOUT}s" || why="exited"
           log "gateway $why: not measured (log: $RESULTS_DIR/logs/gateway.log)"; gw_started=0; }
  else
    wait_http "${GATEWAY_READY_URL:-$first_url}" 5 || { log "external gateway not answering at ${GATEWAY_READY_URL:-$first_url}"; gw_started=0; }
    gp=$(sed -E 's#.*://[^/]*:([0-9]+).*#\1#;t;s#.*#80#' <<<"$first_url")
    gpg=$(listener_pgid "$gp" || true)
    if [[ -n "$gpg" && "$gpg" != 0 && "$gpg" != "$MY_PGID" && " ${STARTED[*]} " != *" $gpg "* ]]; then
      GROUP[$GATEWAY_NAME]=$gpg; EXTRA_EXCL+=" $gpg"
      log "external gateway: accounting CPU/RSS of process group $gpg (listener of port $gp); it is not stopped at exit"
    else
      EXTERNAL_UNACCOUNTED=1
      log "external gateway: listener's process group not found; its CPU will show up as background (bg%), no gw_us/req"
    fi
  fi
  if (( gw_started )); then
    for pair in ${GATEWAY_URLS//,/ }; do
      s=${pair%%=*}; name=$GATEWAY_NAME
      if [[ $s == */* ]]; then name=$GATEWAY_NAME/${s#*/}; s=${s%%/*}; GROUP[$name]=${GROUP[$GATEWAY_NAME]:-}; fi
      want_scen "$s" && CASES+=("$name|$s|$GATEWAY_KIND|${pair#*=}")
    done
  fi
fi

# validate every case once; failed ones are recorded and not measured
echo "$TSV_HEADER" >"$RESULTS_DIR/results.tsv"
GOOD=()
for c in "${CASES[@]}"; do
  IFS='|' read -r p s k u <<<"$c"
  if check_case "$p" "$s" "$u"; then GOOD+=("$c"); log "  ok   $p $s"
  else printf '0\t%s\t%s\t%s\t%s\tFAIL\n' "$p" "$s" "$k" "$u" >>"$RESULTS_DIR/results.tsv"; fi
done
(( ${#GOOD[@]} )) || die "nothing to measure"
log "measuring ${#GOOD[@]} cases x $REPEAT rep(s), ~$(( ${#GOOD[@]} * REPEAT * (${DURATION//[!0-9]/} + ${WARMUP//[!0-9]/} + 5) / 60 + 1 )) min"

# S0 (the denominator of xS0, and the noisiest row: both wrk and the upstream saturate) is
# measured at the start and at the end of every rep.
ORDER=("${GOOD[@]}")
[[ "${GOOD[0]}" == direct\|S0\|* ]] && ORDER+=("${GOOD[0]}")
for (( rep=1; rep<=REPEAT; rep++ )); do
  for c in "${ORDER[@]}"; do
    IFS='|' read -r p s k u <<<"$c"
    # the peer must still be alive
    if [[ -n "${GROUP[$p]:-}" ]] && ! kill -0 -- "-${GROUP[$p]}" 2>/dev/null; then
      log "  $p died; recording FAIL"; printf '%s\t%s\t%s\t%s\t%s\tFAIL\n' "$rep" "$p" "$s" "$k" "$u" >>"$RESULTS_DIR/results.tsv"; continue
    fi
    tries=0
    while :; do
      run_case "$rep" "$p" "$s" "$k" "$u"
      bgv=$(tail -1 "$RESULTS_DIR/results.tsv" | cut -f29)
      [[ ($p == "$GATEWAY_NAME" || $p == "$GATEWAY_NAME"/*) && "$EXTERNAL_UNACCOUNTED" == 1 ]] && bgv=""   # its own CPU is in bg%
      if [[ -n "$bgv" ]] && awk -v b="$bgv" -v m="$BG_MAX" 'BEGIN { exit !(b > m) }' && (( tries < RETRIES )); then
        [[ -s "$RESULTS_DIR/discarded.tsv" ]] || echo "$TSV_HEADER" >"$RESULTS_DIR/discarded.tsv"
        tail -1 "$RESULTS_DIR/results.tsv" >>"$RESULTS_DIR/discarded.tsv"; sed -i '$d' "$RESULTS_DIR/results.tsv"
        tries=$(( tries + 1 )); log "  discarded: other processes used ${bgv}% of a core during the run; repeating ($tries/$RETRIES)"
        continue
      fi
      break
    done
  done
done
fix_external_rows
echo "load at end: $(cat /proc/loadavg)" >>"$RESULTS_DIR/env.txt"

{
  echo "# $(date -Is)  load start/end: $(sed -n 's/^load at start: //p' "$RESULTS_DIR/env.txt" | cut -d' ' -f1-3) / $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# wrk $WRK_FLAGS, warm-up $WARMUP, REPEAT=$REPEAT, PIN=$PIN (wrk CPU $WRK_CPU, servers CPU $SERVER_CPU)"
  summarize "$RESULTS_DIR/results.tsv"
  echo "# req/s, p50, p99, up/req, gw_us/req, srv/wrk%: medians over reps; +-%: (max-min)/median; errors: sum; bg%: max."
  echo "# upconn: new connections the upstream accepted during the measured run (S0: wrk's own; else ~0 = upstream keep-alive held)."
  echo "# gw_us/req: user+sys CPU of the peer's own processes per request (upstream excluded; kernel softirq excluded)."
  echo "# bound: which side was >= 90% busy (srv = peer+upstream core, wrk = client core); 'wrk' or 'both' means req/s is"
  echo "#   capped by the client and is a lower bound for the peer: compare gw_us/req instead."
  echo "# '!' = some run measured with others using > ${QUIET_MAX}% of a core before it or > ${BG_MAX}% during it (retries exhausted)."
  awk -F'\t' 'NR > 1 && $6 != "FAIL" { n++; l = $32 + 0; if (n == 1 || l < lo) lo = l; if (l > hi) hi = l; b = $29 + 0; if (b > bm) bm = b }
    END { if (n) printf "# load1 at the start of the measured runs: %.2f-%.2f (includes our own wrk+server, ~2 when busy); max bg%% %.1f\n", lo, hi, bm }' "$RESULTS_DIR/results.tsv"
  [[ ! -s "$RESULTS_DIR/discarded.tsv" ]] || echo "# runs discarded for background load (bg% > $BG_MAX) and repeated: $(( $(wc -l <"$RESULTS_DIR/discarded.tsv") - 1 ))"
} | tee "$RESULTS_DIR/table.txt"
log "results: $RESULTS_DIR"
