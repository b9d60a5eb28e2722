#!/usr/bin/env bash
# Side-by-side performance on this machine, one command:
#
#     benches/run.sh [proxy|latency|instructions|tls|trigger|idempotency|cache|hub|failover|all]
#                    (default: proxy)
#
# proxy     wrk against one static JSON upstream (an nginx returning a fixed body, keep-alive):
#           directly, through nginx as a reverse proxy (upstream keep-alive, access log to a file),
#           through HAProxy doing payedge's job (HS256 JWT verified, exp checked, its tenant
#           compared with X-Tenant, request id, routed by path prefix), through bare Pingora
#           (examples/bare_pingora.rs: one fixed peer, no filters; `bare` on Pingora's default
#           work-stealing runtime, `bare-ns` on per-thread runtimes), and through payedge with its
#           full chain (tenant from the header, JWT, metrics, request log to a file): `payedge` as
#           configured by default (per-thread runtimes), `payedge-steal` with
#           server.work_stealing: true, and `payedge-trig` with a trigger on every answer (an
#           fx.rates.read event of four fields per request, into the in-memory history). ROUNDS
#           rounds, the eight interleaved in each; one table of medians: req/s, p50, p99, p99.9,
#           the proxy's CPU seconds and peak RSS, and the ratios of issue 16's goals.
# latency   the same targets but nginx, each at the same fixed rate (RATE req/s, default 4000;
#           examples/paced_load.rs, open loop, corrected for coordinated omission): p50, p99 and
#           p99.9 at the *same load*, which is how goal 5 is stated. (Under `proxy`, wrk keeps 32
#           requests in flight, so each proxy runs at its own maximum and the slower one's p99 is
#           mostly its own queue.)
# instructions  instructions per request under valgrind's callgrind (instructions.sh): bare Pingora,
#           payedge, payedge with the trigger, POST with and without an Idempotency-Key; the same
#           count for the same binaries whatever the machine's noise.
# trigger   POST /api/fx/quote with the fx.quote.created trigger on vs off (trigger_overhead.sh).
# idempotency  POST /api/payments with a new Idempotency-Key per request (Redis store over TCP and
#           over its unix socket, in-memory store) vs without keys (idempotency_overhead.sh).
# cache     cached GET /api/fx/rates: payedge's route cache vs nginx proxy_cache (cache.sh).
# hub       the hub load run (benches/hub_load.rs) at 1,000 and 10,000 connections and at HUB_MAX.
# failover  the failover run (benches/failover.rs).
# tls       TLS side by side with nginx: keep-alive, new connections, TLS upstream (tls.sh).
#
# Needs nginx, haproxy, wrk, curl and python3 (Debian: apt-get install nginx haproxy wrk curl python3).
# ROUNDS (3), DURATION (10s), CONNECTIONS (32), THREADS (1: wrk threads), WORKERS (1: nginx
# worker processes and payedge proxy threads), HUB_MAX (20000) and TARGETS (the proxy targets to run, by
# name; the ratios needing one that did not run are left out) override the defaults.
# For an A/B of two payedge builds in one run: PAYEDGE_BIN (absolute path) is the build measured as
# `payedge` (nothing is built for it), PAYEDGE_ALT_BIN (absolute too) the one measured as `payedge-alt` (add it to
# TARGETS), same configuration; `latency` keeps TARGETS when it is set.
set -euo pipefail
LATENCY_TARGETS=${TARGETS:-direct nginx haproxy bare payedge}
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
HUB_MAX=${HUB_MAX:-20000}
TARGETS=${TARGETS:-direct nginx haproxy bare bare-ns payedge payedge-steal payedge-trig}
# Set by `latency`: the fixed request rate every target is measured at, instead of wrk's load.
PACED=${PACED:-}

# shellcheck source=benches/lib.sh
. benches/lib.sh

# CPU seconds (user + system) of a process and its children that are still running.
cpu_seconds() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}
# Peak resident memory (VmHWM) in MiB, summed over processes.
peak_rss_mib() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")))
  done
  awk -v k="$total" 'BEGIN { printf "%.1f", k / 1024 }'
}

proxy_bench() {
  [ -n "${PAYEDGE_BIN:-}" ] || cargo build --release --quiet
  cargo build --release --quiet --example bare_pingora
  [ -n "$PACED" ] && cargo build --release --quiet --example paced_load
  local bin=${PAYEDGE_BIN:-target/release/payedge} work
  work=$(mktemp -d)
  # The upstream outlives this function's scope, so the EXIT trap reads a global.
  upstream_pid=
  # shellcheck disable=SC2064
  trap "[ -n \"\$upstream_pid\" ] && kill \$upstream_pid 2>/dev/null; rm -rf '$work'" EXIT

  local upstream nginx_port
  upstream=$(free_port); nginx_port=$(free_port)
  static_upstream "$work/upstream" "$upstream" 200 \
    '{"id":"fxr_01a2185da95e7570","base":"USD","rates":{"GBP":"0.7892","EUR":"0.9214"}}'
  mkdir -p "$work/nginx"
  cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes $WORKERS;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log $work/nginx/access.log;
  keepalive_requests 1000000;
  upstream fx { server 127.0.0.1:$upstream; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port backlog=4096;
    location / {
      proxy_pass http://fx;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
  nginx -c "$work/upstream/nginx.conf" -g 'daemon off;' &
  upstream_pid=$!

  bench_payedge_config "$work/payedge.yaml" "$upstream" "$WORKERS"
  # `payedge`: as configured by default (per-thread runtimes); `payedge-steal`: work stealing on.
  sed 's/^server: { /server: { work_stealing: true, /' "$work/payedge.yaml" > "$work/payedge-steal.yaml"
  grep -q 'work_stealing: true' "$work/payedge-steal.yaml"
  cp "$work/payedge.yaml" "$work/payedge-trig.yaml"
  bench_trigger_config "$work/payedge-trig.yaml"
  local token
  token=$("$bin" token -c "$work/payedge.yaml" --tenant blue --ttl 3600)
  # The same request everywhere; nginx and the upstream ignore the headers.
  cat > "$work/get.lua" <<LUA
wrk.headers["X-Tenant"] = "blue"
wrk.headers["Authorization"] = "Bearer $token"
done = function(summary, latency, requests)
  io.write(string.format("LATENCY %d %d %d\n", latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
LUA

  # Drives the proxy on port $1 with this run's load (wrk, or PACED req/s open loop) →
  # "rps p50 p99 p999 non2xx socket_errors", latencies in ms.
  drive() {
    local port=$1
    if [ -n "$PACED" ]; then
      local rps p50 p99 p999 max non2xx errors
      read -r rps p50 p99 p999 max non2xx errors < <(target/release/examples/paced_load \
        "127.0.0.1:$port" /api/fx/rates "$PACED" "${DURATION%s}" "$CONNECTIONS" \
        "X-Tenant: blue" "Authorization: Bearer $token")
      echo "$rps $p50 $p99 $p999 $non2xx ${errors:-1}"
      return
    fi
    local out non2xx
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$work/get.lua" "http://127.0.0.1:$port/api/fx/rates")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<< "$out")
    echo "$(awk '/Requests\/sec/ {print $2}' <<< "$out") $(awk '/^LATENCY/ {print $2/1000, $3/1000, $4/1000}' <<< "$out") ${non2xx:-0} 0"
  }

  # $1 port, rest: pids of the proxy (empty for direct) → "rps p50 p99 p999 cpu rss non2xx"
  measure() {
    local port=$1; shift
    local cpu_before=0 cpu_after=0 rss=0 rps p50 p99 p999 non2xx errors
    [ $# -gt 0 ] && cpu_before=$(cpu_seconds "$@")
    read -r rps p50 p99 p999 non2xx errors < <(drive "$port")
    [ $# -gt 0 ] && cpu_after=$(cpu_seconds "$@")
    [ "$errors" = 0 ] || { echo "socket errors against port $port" >&2; exit 1; }
    [ $# -gt 0 ] && rss=$(peak_rss_mib "$@")
    echo "$rps $p50 $p99 $p999 $(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { printf "%.2f", b - a }') $rss $non2xx"
  }

  # HAProxy doing payedge's job: HS256 token verified, `exp` checked, its tenant compared with
  # X-Tenant, a request id added, routed by path prefix (no request log: HAProxy logs to syslog).
  local haproxy_port
  haproxy_port=$(free_port)
  cat > "$work/haproxy.cfg" <<HAPROXY
global
  nbthread $WORKERS
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend edge
  bind 127.0.0.1:$haproxy_port
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
  http-request set-var(txn.bearer) http_auth_bearer
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_header_query('\$.alg') -m str HS256 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify("HS256","$BENCH_JWT_SECRET") -m int 1 }
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.bearer),jwt_payload_query('\$.exp','int'),sub(txn.now) -m int lt 0 }
  http-request set-var(txn.tenant) var(txn.bearer),jwt_payload_query('\$.tenant')
  http-request deny deny_status 403 unless { req.hdr(x-tenant),strcmp(txn.tenant) eq 0 }
  http-request set-header X-Request-Id %[unique-id]
  use_backend fx if { path_beg /api/fx }
  default_backend none
backend fx
  http-reuse always
  server fx 127.0.0.1:$upstream
backend none
  http-request deny deny_status 404
HAPROXY
  haproxy -c -q -f "$work/haproxy.cfg"

  run_direct() { measure "$upstream"; }
  run_haproxy() {
    haproxy -f "$work/haproxy.cfg" &
    local pid=$!
    until curl -sf -o /dev/null -H "X-Tenant: blue" -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$haproxy_port/api/fx/rates"; do sleep 0.05; done
    # A token for another tenant must be refused, or the comparison is not fair.
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "X-Tenant: green" -H "Authorization: Bearer $token" \
      "http://127.0.0.1:$haproxy_port/api/fx/rates")" = 403 ] || { echo "haproxy lets tenants cross" >&2; exit 1; }
    measure "$haproxy_port" "$pid"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  }
  # $1: Pingora's runtime, steal (its default) or nosteal (per-thread runtimes, payedge's default)
  bare_pingora() {
    local port pid
    port=$(free_port)
    target/release/examples/bare_pingora "127.0.0.1:$port" "127.0.0.1:$upstream" "$WORKERS" "$1" > /dev/null 2>&1 &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$port/api/fx/rates"; do sleep 0.05; done
    measure "$port" "$pid"
    # SIGINT: Pingora's fast shutdown (SIGTERM waits out its 5-minute default grace period).
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  }
  run_bare() { bare_pingora steal; }
  run_bare-ns() { bare_pingora nosteal; }
  run_nginx() {
    nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
    local master=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$nginx_port/api/fx/rates"; do sleep 0.05; done
    local workers
    workers=$(pgrep -P "$master" | tr '\n' ' ')
    # shellcheck disable=SC2086
    measure "$nginx_port" "$master" $workers
    kill "$master"; wait "$master" 2>/dev/null || true
    rm -f "$work/nginx/access.log"
  }
  run_payedge() { payedge_with "$work/payedge.yaml"; }
  run_payedge-alt() { bin=$PAYEDGE_ALT_BIN payedge_with "$work/payedge.yaml"; }
  run_payedge-steal() { payedge_with "$work/payedge-steal.yaml"; }
  run_payedge-trig() { payedge_with "$work/payedge-trig.yaml" fx.rates.read; }
  payedge_with() {
    local proxy admin pid
    proxy=$(free_port); admin=$(free_port)
    "$bin" run -c "$1" --listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" > "$work/payedge.log" 2>&1 &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz"; do sleep 0.05; done
    # run_payedge runs in a command substitution: the reading leaves it through a file.
    awk '/^VmRSS:/ {printf "%.1f\n", $2 / 1024}' "/proc/$pid/status" >> "$work/idle_rss.$target"
    measure "$proxy" "$pid"
    # $2: an event type every answer must have produced (the trigger really ran).
    if [ -n "${2:-}" ] && ! curl -s "http://127.0.0.1:$admin/metrics" \
        | grep -q "^payedge_events_published_total{type=\"$2\"} [1-9]"; then
      echo "payedge published no $2 events" >&2; exit 1
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    if ! grep -q '"target":"payedge::access"' "$work/payedge.log"; then
      echo "payedge wrote no request log lines" >&2; exit 1
    fi
    rm -f "$work/payedge.log"
  }

  echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
  if [ -n "$PACED" ]; then
    echo "paced_load at $PACED req/s over $CONNECTIONS connections for $DURATION (first second not counted), GET /api/fx/rates; nginx worker_processes $WORKERS, payedge threads $WORKERS"
  else
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET /api/fx/rates; nginx worker_processes $WORKERS, payedge threads $WORKERS"
  fi
  echo
  printf '%-6s %-12s %10s %8s %8s %8s %8s %9s %7s\n' round target req/s "p50 ms" "p99 ms" "p99.9 ms" "cpu s" "peak MiB" non-2xx
  declare -A rps p50 p99 p999 cpu rss
  local round target
  for round in $(seq 1 "$ROUNDS"); do
    for target in $TARGETS; do
      local r
      r=$("run_$target")
      read -r a b c d e f g <<< "$r"
      printf '%-6s %-12s %10s %8s %8s %8s %8s %9s %7s\n' "$round" "$target" "$a" "$b" "$c" "$d" "$e" "$f" "$g"
      if [ "$g" != 0 ]; then echo "non-2xx answers from $target" >&2; exit 1; fi
      rps[$target]+="$a "; p50[$target]+="$b "; p99[$target]+="$c "; p999[$target]+="$d "
      cpu[$target]+="$e "; rss[$target]+="$f "
    done
  done
  echo
  echo "medians over $ROUNDS rounds:"
  printf '%-12s %10s %8s %8s %8s %8s %9s\n' target req/s "p50 ms" "p99 ms" "p99.9 ms" "cpu s" "peak MiB"
  declare -A m
  for target in $TARGETS; do
    local key
    for key in rps p50 p99 p999 cpu rss; do
      local -n series=$key
      # shellcheck disable=SC2086
      m[$target.$key]=$(median ${series[$target]})
    done
    printf '%-12s %10s %8s %8s %8s %8s %9s\n' "$target" "${m[$target.rps]}" "${m[$target.p50]}" "${m[$target.p99]}" "${m[$target.p999]}" "${m[$target.cpu]}" "${m[$target.rss]}"
  done
  # How steady the machine was: each target's fastest round over its slowest. (Not at a fixed
  # load, whose req/s is the rate asked for whatever the CPU did: the latency goal's verdict
  # stands on the p99s themselves.)
  local steady=1
  if [ -z "$PACED" ]; then
    for target in $TARGETS; do
      [ "$target" = direct ] && continue
      # shellcheck disable=SC2086
      if unsteady ${rps[$target]}; then
        steady=0
        echo
        echo "unsteady run: $target's rounds differ by $(spread ${rps[$target]})x (more than ${MAX_SPREAD}x): the machine's CPU varied, so the ratios below are not evidence and the goals get no verdict"
        break
      fi
    done
  fi
  echo
  if [ -n "$PACED" ]; then
    local t
    for t in haproxy bare payedge payedge-alt; do
      [[ " $TARGETS " == *" $t "* && " $TARGETS " == *" nginx "* ]] || continue
      awk -v t="$t" -v p99="${m[$t.p99]}" -v n99="${m[nginx.p99]}" -v p50="${m[$t.p50]}" -v n50="${m[nginx.p50]}" \
          -v pc="${m[$t.cpu]}" -v nc="${m[nginx.cpu]}" \
        'BEGIN { printf "%s - nginx at the same load: p50 %+.3f ms, p99 %+.3f ms; CPU per request %.2fx nginx\n", t, p50 - n50, p99 - n99, pc / nc }'
    done
    if [[ " $TARGETS " == *" payedge "* && " $TARGETS " == *" payedge-alt "* ]]; then
      awk -v pp="${m[payedge.p99]}" -v ap="${m[payedge-alt.p99]}" -v pc="${m[payedge.cpu]}" -v ac="${m[payedge-alt.cpu]}" \
        'BEGIN { printf "payedge-alt (PAYEDGE_ALT_BIN) - payedge at the same load: p99 %+.3f ms; CPU %.3fx\n", ap - pp, ac / pc }'
    fi
    [[ " $TARGETS " == *" payedge "* && " $TARGETS " == *" nginx "* ]] || return 0
    local ok
    ok=$(awk -v pp="${m[payedge.p99]}" -v np="${m[nginx.p99]}" 'BEGIN { print ((pp - np <= 0.5) ? 1 : 0) }')
    awk -v pp="${m[payedge.p99]}" -v np="${m[nginx.p99]}" -v r="$PACED" -v v="$(verdict "$ok" "$steady")" \
      'BEGIN { printf "p99 payedge - nginx at %s req/s %+.3f ms (goal <= 0.5 ms: %s)\n", r, pp - np, v }'
    return
  fi
  # Each ratio is printed when every target it needs ran (TARGETS may name a few).
  ran() { local t; for t in "$@"; do [[ " $TARGETS " == *" $t "* ]] || return 1; done; }
  local idle_rss=
  # shellcheck disable=SC2046
  [ -s "$work/idle_rss.payedge" ] && idle_rss=$(median $(cat "$work/idle_rss.payedge"))
  ran payedge nginx && awk -v pr="${m[payedge.rps]}" -v nr="${m[nginx.rps]}" -v pp="${m[payedge.p99]}" -v np="${m[nginx.p99]}" \
      -v pc="${m[payedge.cpu]}" -v nc="${m[nginx.cpu]}" -v pm="${m[payedge.rss]}" -v nm="${m[nginx.rss]}" -v idle="$idle_rss" \
    'BEGIN {
      printf "payedge/nginx: req/s %.3f, p99 %+.3f ms, CPU per request %.2f, peak RSS %.2f\n", pr / nr, pp - np, (pc / pr) / (nc / nr), pm / nm
      printf "payedge idle RSS (after start, median): %s MiB\n", idle
    }'
  # is A B: 1 when the awk condition A holds for the medians (pr, br, hr, pp, np, tr), else 0.
  is() {
    awk -v pr="${m[payedge.rps]:-0}" -v br="${m[bare.rps]:-0}" -v hr="${m[haproxy.rps]:-0}" -v pp="${m[payedge.p99]:-0}" \
      -v np="${m[nginx.p99]:-0}" -v tr="${m[payedge-trig.rps]:-0}" "BEGIN { print (($1) ? 1 : 0) }"
  }
  ran payedge nginx bare bare-ns haproxy payedge-steal && awk -v pr="${m[payedge.rps]}" -v br="${m[bare.rps]}" -v bn="${m[bare-ns.rps]}" -v hr="${m[haproxy.rps]}" -v ps="${m[payedge-steal.rps]}" \
      -v pp="${m[payedge.p99]}" -v np="${m[nginx.p99]}" -v v1="$(verdict "$(is 'pr / br >= 0.95')" "$steady")" \
      -v v2="$(verdict "$(is 'pr / hr >= 1.0')" "$steady")" -v v5="$(verdict "$(is 'pp - np <= 0.5')" "$steady")" \
    'BEGIN {
      printf "payedge/bare Pingora (its default runtime) req/s %.3f (goal >= 0.95: %s)\n", pr / br, v1
      printf "payedge (per-thread runtimes, its default) / bare Pingora on the same runtime req/s %.3f; payedge with work stealing / bare Pingora default %.3f; payedge / payedge with work stealing %.3f\n", pr / bn, ps / br, pr / ps
      printf "payedge/HAProxy with the JWT chain req/s %.3f (goal >= 1.0: %s)\n", pr / hr, v2
      printf "p99 payedge - nginx %+.3f ms (goal <= 0.5 ms: %s)\n", pp - np, v5
    }'
  ran payedge payedge-trig && awk -v pr="${m[payedge.rps]}" -v tr="${m[payedge-trig.rps]}" -v v="$(verdict "$(is '1 - tr / pr <= 0.05')" "$steady")" 'BEGIN {
      printf "payedge with a trigger on every answer / without req/s %.3f (cost %.1f %%, goal <= 5 %%: %s)\n", tr / pr, (1 - tr / pr) * 100, v
    }'
  ran payedge payedge-alt && awk -v pr="${m[payedge.rps]}" -v ar="${m[payedge-alt.rps]}" -v pc="${m[payedge.cpu]}" -v ac="${m[payedge-alt.cpu]}" 'BEGIN {
      printf "payedge-alt (PAYEDGE_ALT_BIN) / payedge req/s %.3f, CPU per request %.3f\n", ar / pr, (ac / ar) / (pc / pr)
    }'
  return 0
}

case "${1:-proxy}" in
  proxy) proxy_bench ;;
  latency) PACED=${RATE:-4000} TARGETS=$LATENCY_TARGETS proxy_bench ;;
  instructions) benches/instructions.sh ;;
  trigger) benches/trigger_overhead.sh ;;
  idempotency) benches/idempotency_overhead.sh ;;
  cache) benches/cache.sh ;;
  hub)
    for n in 1000 10000 "$HUB_MAX"; do
      echo "== $n connections"
      CONNECTIONS=$n TENANTS=100 RATE=1000 PEAK_RATE=20 SECONDS=10 PIN=1 \
        cargo bench --quiet --bench hub_load 2>&1 | sed -n '/^hub load/,$p'
    done
    ;;
  failover) cargo bench --quiet --bench failover ;;
  tls) benches/tls.sh ;;
  all)
    "$0" proxy; "$0" latency; "$0" instructions; "$0" tls; "$0" trigger; "$0" idempotency; "$0" cache
    "$0" hub; "$0" failover ;;
  *) echo "usage: $0 [proxy|latency|instructions|tls|trigger|idempotency|cache|hub|failover|all]" >&2; exit 2 ;;
esac
