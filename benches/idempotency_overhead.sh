#!/usr/bin/env bash
# POST /api/payments through payedge with Idempotency-Key (every request a new key, so each takes
# a key in the store and records its response: the full cost) against the same route without
# keys, in the same run: nginx (Debian) is the card provider, redis-server (Debian) on a free port
# the shared store, wrk drives payedge; configurations alternate so machine noise hits all alike.
# Prints requests/s and payedge's CPU time per request for each run and the median of the
# per-round keyed/plain ratios, for the Redis store (over TCP on loopback, and over its unix
# socket: Redis on the same host) and the in-memory one.
#
#     benches/idempotency_overhead.sh   (needs nginx, redis-server and wrk; builds payedge --release)
#
# ROUNDS, DURATION, CONNECTIONS and THREADS override the defaults below; KEYED names the keyed
# configurations to run against plain (default "redis unix memory").
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}

cargo build --release --quiet
bin=target/release/payedge
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# shellcheck source=benches/lib.sh
. benches/lib.sh

upstream=$(free_port)
static_upstream "$work/nginx" "$upstream" 201 \
  '{"id":"pay_01a2185da95e757083098cd5f63691f8","status":"succeeded","amount":"25.00","currency":"EUR","fee":"0.68"}'
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --unixsocket "$work/redis.sock" --unixsocketperm 700 \
  --save '' --appendonly no --daemonize no \
  > "$work/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!
until redis-cli -p "$redis_port" ping > /dev/null 2>&1; do sleep 0.05; done

export BENCH_JWT_SECRET=benchmark-secret-that-is-long-enough-0123456789
write_config() { # $1 file, $2 route idempotency (YAML or empty), $3 store
  cat > "$1" <<YAML
server: { threads: 1, grace_period_seconds: 1, limits: { max_connections_per_client: 0 } }
tenancy: { strategy: header, tenants: [blue] }
auth:
  jwt: { algorithms: [HS256], secret_env: BENCH_JWT_SECRET }
  required_path_prefixes: [/api]
analytics: { request_logging: false }
notifications: { enabled: false }
idempotency: $3
routes:
  - path_prefix: /api/payments
    pool: cards
    $2
pools:
  cards:
    providers: [{ name: nginx, address: "127.0.0.1:$upstream" }]
YAML
}
write_config "$work/plain.yaml" "" "{ store: in_memory }"
write_config "$work/redis.yaml" "idempotency: { required: true }" \
  "{ store: redis, redis: { url: \"redis://127.0.0.1:$redis_port/\" } }"
write_config "$work/unix.yaml" "idempotency: { required: true }" \
  "{ store: redis, redis: { url: \"redis+unix://$work/redis.sock\" } }"
write_config "$work/memory.yaml" "idempotency: { required: true }" "{ store: in_memory }"
token=$("$bin" token -c "$work/plain.yaml" --tenant blue --ttl 3600)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The whole machine's busy time (user, nice, system, irq, softirq; not idle, I/O wait or time a
# hypervisor stole), in the same ticks.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
us_per() { # $1 ticks, $2 requests → CPU µs per request
  awk -v t="$1" -v r="${2:-1}" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }'
}

run() { # $1 config name, $2 round → prints "rps requests non2xx cpu_us redis_cpu_us keys_taken"
  local proxy admin pid out prefix="r$2-$1-$RANDOM"
  [ "$1" = plain ] && prefix=""
  payment_lua "$token" "$prefix" > "$work/post.lua"
  redis-cli -p "$redis_port" flushall > /dev/null
  proxy=$(free_port); admin=$(free_port)
  "$bin" run -c "$work/$1.yaml" --listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" > "$work/$1.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$admin/readyz" > /dev/null; do sleep 0.05; done
  local ticks_before ticks_after redis_before redis_after machine_before machine_after
  ticks_before=$(ticks "$pid"); redis_before=$(ticks "$redis_pid"); machine_before=$(machine_ticks)
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$proxy/api/payments")
  ticks_after=$(ticks "$pid"); redis_after=$(ticks "$redis_pid"); machine_after=$(machine_ticks)
  local rps requests non2xx firsts
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
  requests=$(awk '/requests in/ {print $1}' <<< "$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<< "$out")
  firsts=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^payedge_idempotency_requests_total\{result="first"/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$rps ${requests:-0} ${non2xx:-0} $(us_per $((ticks_after - ticks_before)) "$requests")" \
    "$(us_per $((redis_after - redis_before)) "$requests") ${firsts:-0}" \
    "$(us_per $((machine_after - machine_before)) "$requests")"
}

printf '%-6s %-7s %12s %10s %8s %12s %12s %12s %14s\n' round config req/s responses non-2xx "cpu µs/req" \
  "redis µs/req" "keys taken" "machine µs/req"
read -r -a keyed <<< "${KEYED:-redis unix memory}"
declare -A rps_of cpu_of redis_of machine_of ratios_of
for round in $(seq 1 "$ROUNDS"); do
  declare -A this_round=()
  for config in plain "${keyed[@]}"; do
    read -r rps requests non2xx cpu redis_cpu firsts machine_cpu < <(run "$config" "$round")
    printf '%-6s %-7s %12s %10s %8s %12s %12s %12s %14s\n' "$round" "$config" "$rps" "$requests" "$non2xx" "$cpu" \
      "$redis_cpu" "$firsts" "$machine_cpu"
    rps_of[$config]="${rps_of[$config]:-} $rps"; cpu_of[$config]="${cpu_of[$config]:-} $cpu"
    redis_of[$config]="${redis_of[$config]:-} $redis_cpu"; machine_of[$config]="${machine_of[$config]:-} $machine_cpu"
    this_round[$config]=$rps
  done
  for config in "${keyed[@]}"; do
    ratios_of[$config]="${ratios_of[$config]:-} $(awk -v k="${this_round[$config]}" -v p="${this_round[plain]}" 'BEGIN { printf "%.4f", k/p }')"
  done
done
for config in plain "${keyed[@]}"; do
  # shellcheck disable=SC2086
  echo "median $config: $(median ${rps_of[$config]}) req/s, $(median ${cpu_of[$config]}) µs CPU per request"
done
# How many commands Redis read per read(2) over the whole script (what batching saves it), and
# its own time per call of each command it ran.
{ redis-cli -p "$redis_port" info stats; redis-cli -p "$redis_port" info commandstats; } | tr -d '\r' | awk -F: '
  /^total_commands_processed/ { c = $2 } /^total_reads_processed/ { r = $2 }
  /^cmdstat_/ { split($2, f, ","); sub(/^cmdstat_/, "", $1); sub(/calls=/, "", f[1]); sub(/usec_per_call=/, "", f[3])
    if (f[1] + 0 > 1000) per = per sprintf(" %s %s µs (%d calls)", $1, f[3], f[1]) }
  END { if (r > 0) printf "redis: %d commands in %d reads (%.2f per read); per call:%s\n", c, r, c / r, per }'
# How steady the machine was (each configuration's fastest round over its slowest).
steady=1
for config in plain "${keyed[@]}"; do
  # shellcheck disable=SC2086
  if unsteady ${rps_of[$config]}; then
    steady=0
    echo "unsteady run: the $config rounds differ by $(spread ${rps_of[$config]})x (more than ${MAX_SPREAD}x): the goal gets no verdict"
  fi
done
declare -A label=([redis]="Redis store" [unix]="Redis store over a unix socket" [memory]="in-memory store")
for config in "${keyed[@]}"; do
  # shellcheck disable=SC2086
  r=$(median ${ratios_of[$config]})
  ok=$(awk -v r="$r" 'BEGIN { print ((1 - r <= 0.10) ? 1 : 0) }')
  awk -v r="$r" -v rs="${ratios_of[$config]# }" -v label="${label[$config]}" -v goal="$([ "$config" = redis ] && echo yes)" \
      -v v="$(verdict "$ok" "$steady")" 'BEGIN {
    printf "keyed/plain, %s: per round %s; median %.3f (overhead %.1f %%", label, rs, r, (1-r)*100
    if (goal == "yes") printf ", goal <= 10 %%: %s", v
    printf ")\n" }'
done
# The goal in CPU time: wrk, payedge, the provider and Redis share the machine, whose busy time
# per request (not counting what a hypervisor stole) each run measures. Keys may add a tenth of a
# plain request's; the Redis server's own CPU per keyed request is part of what they add. Each
# figure is paired within its round (a round's runs are back to back), then the median taken.
if [[ " ${keyed[*]} " == *" redis "* ]]; then
  read -r -a plain_m <<< "${machine_of[plain]}"
  read -r -a keyed_m <<< "${machine_of[redis]}"
  read -r -a redis_m <<< "${redis_of[redis]}"
  costs=() shares=() without=()
  for i in "${!plain_m[@]}"; do
    read -r c sh w < <(awk -v p="${plain_m[$i]}" -v k="${keyed_m[$i]}" -v r="${redis_m[$i]}" \
      'BEGIN { printf "%+.1f %.0f %+.1f\n", (k / p - 1) * 100, r / (p / 10) * 100, ((k - r) / p - 1) * 100 }')
    costs+=("$c"); shares+=("$sh"); without+=("$w")
  done
  echo "CPU budget (each round's runs paired, then the median):"
  echo "  the machine's CPU per keyed request (Redis store) / per plain one: ${costs[*]/%/ %}; median $(printf '%+.1f' "$(median "${costs[@]}")") % (goal <= +11.1 %)"
  echo "  the Redis server's own CPU per keyed request, as a share of a tenth of a plain request: ${shares[*]/%/ %}; median $(printf '%.0f' "$(median "${shares[@]}")") %"
  echo "  the keyed request without the Redis server's CPU (Redis on a host of its own): ${without[*]/%/ %}; median $(printf '%+.1f' "$(median "${without[@]}")") %"
fi
