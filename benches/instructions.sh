#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: unlike requests per second, the same
# for the same binary and load whatever else this machine is doing, so a change of a few percent
# in a proxy's own work shows in one run. User-space instructions only (the kernel's work, about
# half of each request here, is not counted) of every thread of the proxy, over the requests of a
# wrk run after a warm-up:
#
#     benches/instructions.sh     (or benches/run.sh instructions; needs valgrind, nginx, wrk,
#                                  curl and redis-server; builds payedge and bare Pingora --release)
#
# Targets (TARGETS overrides): bare (examples/bare_pingora.rs) and payedge (its full chain and
# request log, as `benches/run.sh proxy` measures it) on GET /api/fx/rates; payedge-trig, the same
# with a trigger on every answer; payedge-post, POST /api/payments; payedge-keyed, the same with
# a new Idempotency-Key per request, kept in a private redis-server; payedge-keyed-mem, the same
# keys in payedge's in-memory store (payedge's own keyed work, without the Redis client). Prints each target's count
# and the ratios of issue 15's and 16's goals. DURATION (default 8) is the seconds counted.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
DURATION=${DURATION%s}
TARGETS=${TARGETS:-bare payedge payedge-trig payedge-post payedge-keyed payedge-keyed-mem}
for tool in valgrind callgrind_annotate callgrind_control nginx wrk curl redis-server redis-cli; do
  command -v "$tool" > /dev/null || { echo "instructions.sh needs $tool" >&2; exit 1; }
done
cargo build --release --quiet
cargo build --release --quiet --example bare_pingora
# shellcheck source=benches/lib.sh
. benches/lib.sh
work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  if [ -n "${KEEP:-}" ]; then cp -r "$work" "$KEEP"; fi
  rm -rf "$work"
}
trap cleanup EXIT

upstream=$(free_port)
static_upstream "$work/rates" "$upstream" 200 \
  '{"id":"fxr_01a2185da95e7570","base":"USD","rates":{"GBP":"0.7892","EUR":"0.9214"}}'
nginx -c "$work/rates/nginx.conf" -g 'daemon off;' &
pids+=($!)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no > /dev/null 2>&1 &
pids+=($!)
until redis-cli -p "$redis_port" ping > /dev/null 2>&1; do sleep 0.05; done

bench_payedge_config "$work/payedge.yaml" "$upstream" 1
cp "$work/payedge.yaml" "$work/payedge-trig.yaml"
bench_trigger_config "$work/payedge-trig.yaml"
# POST /api/payments, answered 201 by the same kind of upstream (idempotency_overhead.sh's).
payments=$(free_port)
static_upstream "$work/payments" "$payments" 201 \
  '{"id":"pay_01a2185da95e757083098cd5f63691f8","status":"succeeded","amount":"25.00","currency":"EUR","fee":"0.68"}'
nginx -c "$work/payments/nginx.conf" -g 'daemon off;' &
pids+=($!)
payments_config() { # $1 file, $2 the route's idempotency (YAML or empty), $3 the store (default Redis)
  local store=${3:-"{ store: redis, redis: { url: \"redis://127.0.0.1:$redis_port/\" } }"}
  cat > "$1" <<YAML
server: { threads: 1, grace_period_seconds: 1, limits: { max_connections_per_client: 0 } }
tenancy: { strategy: header, tenants: [blue, green] }
auth:
  jwt: { algorithms: [HS256], secret_env: BENCH_JWT_SECRET }
  required_path_prefixes: [/api]
analytics: { enabled: true, request_logging: true }
idempotency: $store
routes: [{ path_prefix: /api/payments, pool: cards $2 }]
pools:
  cards:
    providers: [{ name: cards, address: "127.0.0.1:$payments" }]
YAML
}
payments_config "$work/payedge-post.yaml" ""
payments_config "$work/payedge-keyed.yaml" ", idempotency: { required: true }"
payments_config "$work/payedge-keyed-mem.yaml" ", idempotency: { required: true }" "{ store: in_memory }"
token=$(target/release/payedge token -c "$work/payedge.yaml" --tenant blue --ttl 3600)

script() { # $1 target, $2 the run's key prefix → the wrk script
  case $1 in
    payedge-post) payment_lua "$token" ;;
    payedge-keyed|payedge-keyed-mem) payment_lua "$token" "$2" ;;
    *) cat <<LUA
wrk.headers["X-Tenant"] = "blue"
wrk.headers["Authorization"] = "Bearer $token"
LUA
    ;;
  esac
}

count() { # $1 target → instructions per request
  local target=$1 port admin pid path=/api/fx/rates out
  port=$(free_port); admin=$(free_port)
  out="$work/$target.callgrind"
  local valgrind=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out")
  case $target in
    bare)
      # Per-thread runtimes, payedge's default (run.sh's bare-ns).
      "${valgrind[@]}" target/release/examples/bare_pingora "127.0.0.1:$port" "127.0.0.1:$upstream" 1 nosteal \
        > "$work/$target.log" 2>&1 &
      ;;
    *)
      "${valgrind[@]}" target/release/payedge run -c "$work/$target.yaml" --listen "127.0.0.1:$port" \
        --admin-listen "127.0.0.1:$admin" > "$work/$target.log" 2>&1 &
      ;;
  esac
  pid=$!
  pids+=("$pid")
  case $target in payedge-post|payedge-keyed*) path=/api/payments ;; esac
  local started=$SECONDS
  until curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/" 2> /dev/null; do
    [ $((SECONDS - started)) -lt 60 ] || { echo "$target did not start" >&2; cat "$work/$target.log" >&2; exit 1; }
    sleep 0.2
  done
  # Every key new (a key seen before would be answered from the store: a replay).
  script "$target" "warm-up" > "$work/$target-warm-up.lua"
  wrk -t1 -c8 -d3s -s "$work/$target-warm-up.lua" "http://127.0.0.1:$port$path" > /dev/null
  script "$target" "counted" > "$work/$target.lua"
  callgrind_control -i on "$pid" > /dev/null 2>&1
  wrk -t1 -c8 -d"${DURATION}s" -s "$work/$target.lua" "http://127.0.0.1:$port$path" > "$work/$target.wrk"
  callgrind_control -i off "$pid" > /dev/null 2>&1
  callgrind_control -d "$pid" > /dev/null 2>&1
  # Counted and written: no graceful stop (bare Pingora would wait out its grace period).
  kill -9 "$pid"; wait "$pid" 2> /dev/null || true
  local requests instructions dumps
  requests=$(awk '/requests in/ {print $1}' "$work/$target.wrk")
  if grep -qE 'Non-2xx|Socket errors' "$work/$target.wrk"; then
    echo "$target: some requests failed or were not answered 2xx:" >&2; cat "$work/$target.wrk" >&2; exit 1
  fi
  dumps=("$out".*)
  [ "${#dumps[@]}" -eq 1 ] && [ -f "${dumps[0]}" ] || { echo "$target: no callgrind dump" >&2; exit 1; }
  instructions=$(callgrind_annotate "${dumps[0]}" 2> /dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  [ "${instructions:-0}" -gt 0 ] && [ "${requests:-0}" -gt 0 ] || { echo "$target: nothing counted" >&2; exit 1; }
  awk -v i="$instructions" -v r="$requests" 'BEGIN { printf "%.0f\n", i / r }' > "$work/$target.count"
}

declare -A per
printf '%-14s %14s\n' target instructions/request
for target in $TARGETS; do
  # In this shell, not a subshell: its proxy is in `pids` for the cleanup, and a failure stops the run.
  count "$target"
  per[$target]=$(cat "$work/$target.count")
  printf '%-14s %14s\n' "$target" "${per[$target]}"
done
ratio() { # $1 label, $2 numerator target, $3 denominator target
  if [ -n "${per[$2]:-}" ] && [ -n "${per[$3]:-}" ]; then
    awk -v a="${per[$2]}" -v b="${per[$3]}" -v l="$1" 'BEGIN { printf "%s %.3f (%+.1f %%)\n", l, a / b, (a / b - 1) * 100 }'
  fi
}
ratio "payedge / bare Pingora:" payedge bare
ratio "trigger on every answer / off:" payedge-trig payedge
ratio "POST with a new Idempotency-Key (Redis) / without:" payedge-keyed payedge-post
ratio "POST with a new Idempotency-Key (in memory) / without:" payedge-keyed-mem payedge-post
