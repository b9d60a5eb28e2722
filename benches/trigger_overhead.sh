#!/usr/bin/env bash
# POST /api/fx/quote through payedge with the fx.quote.created trigger on and off, in the same
# run: nginx (Debian) is the FX provider, wrk drives payedge, configurations alternate so machine
# noise hits both alike. Prints requests/s and payedge's CPU time per request for each run, the
# median of the per-round on/off ratios, and whether every quote answered yielded an event
# (published count = responses).
#
#     benches/trigger_overhead.sh            (needs nginx and wrk; builds payedge --release)
#
# ROUNDS, DURATION, CONNECTIONS and THREADS override the defaults below. PAYEDGE_BIN measures
# another build (an absolute path, or one relative to the repository root; nothing is built
# then): an A/B of two builds runs the script once for each, alternately.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}

[ -n "${PAYEDGE_BIN:-}" ] || cargo build --release --quiet
bin=${PAYEDGE_BIN:-target/release/payedge}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# shellcheck source=benches/lib.sh
. benches/lib.sh

upstream=$(free_port)
static_upstream "$work/nginx" "$upstream" 201 \
  '{"id":"fxq_01a2185da95e757083098cd5f63691f8","from":"USD","to":"GBP","amount":1000.10,"rate":"0.7892","converted_amount":"789.28","expires_at":"2026-11-26T15:00:00Z"}'
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

export BENCH_JWT_SECRET=benchmark-secret-that-is-long-enough-0123456789
write_config() { # $1 file, $2 trigger enabled (true/false)
  cat > "$1" <<YAML
server: { threads: 1, grace_period_seconds: 1, limits: { max_connections_per_client: 0 } }
tenancy: { strategy: header, tenants: [blue] }
auth:
  jwt: { algorithms: [HS256], secret_env: BENCH_JWT_SECRET }
  required_path_prefixes: [/api]
analytics: { request_logging: false }
notifications: { provider: in_memory, queue_capacity: 100000 }
triggers:
  - name: fx-quote-created
    enabled: $2
    event: fx.quote.created
    match: { method: POST, path: /api/fx/quote, status: [201] }
    fields: { quoteId: /id, fromCurrency: /from, toCurrency: /to, amount: /amount, rate: /rate }
    required: [quoteId, amount]
routes: [{ path_prefix: /api/fx, pool: fx }]
pools:
  fx:
    providers: [{ name: nginx, address: "127.0.0.1:$upstream" }]
YAML
}
write_config "$work/on.yaml" true
write_config "$work/off.yaml" false
token=$("$bin" token -c "$work/on.yaml" --tenant blue --ttl 3600)
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"from":"USD","to":"GBP","amount":"1000.10"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Tenant"] = "blue"
wrk.headers["Authorization"] = "Bearer $token"
LUA

run() { # $1 config name → prints "rps requests published"
  local proxy admin pid out
  proxy=$(free_port); admin=$(free_port)
  "$bin" run -c "$work/$1.yaml" --listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" > "$work/$1.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$admin/readyz" > /dev/null; do sleep 0.05; done
  local ticks_before ticks_after
  ticks_before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$proxy/api/fx/quote")
  sleep 1
  ticks_after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local rps requests non2xx published
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
  requests=$(awk '/requests in/ {print $1}' <<< "$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<< "$out")
  published=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^payedge_events_published_total\{type="fx.quote.created"\}/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local cpu_us
  cpu_us=$(awk -v t=$((ticks_after - ticks_before)) -v r="${requests:-1}" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
  echo "$rps ${requests:-0} ${published:-0} ${non2xx:-0} $cpu_us"
}

printf '%-6s %-4s %12s %10s %10s %8s %12s\n' round mode req/s responses events non-2xx "cpu µs/req"
on_rps=(); off_rps=(); on_cpu=(); off_cpu=(); every_quote=yes
for round in $(seq 1 "$ROUNDS"); do
  for mode in on off; do
    read -r rps requests published non2xx cpu < <(run "$mode")
    printf '%-6s %-4s %12s %10s %10s %8s %12s\n' "$round" "$mode" "$rps" "$requests" "$published" "$non2xx" "$cpu"
    if [ "$mode" = on ]; then
      on_rps+=("$rps"); on_cpu+=("$cpu")
      # wrk counts responses finished within its run; the requests still in flight when it stops
      # (at most one per connection) are answered and yield events too.
      awk -v p="$published" -v r="$requests" -v c="$CONNECTIONS" 'BEGIN { exit !(p >= r && p <= r + c) }' || every_quote=no
    else
      off_rps+=("$rps"); off_cpu+=("$cpu")
    fi
  done
done
# Each round's two runs are back to back, so their ratio is the least disturbed by the machine's
# drift; the figure is the median of those ratios.
ratios=()
for i in "${!on_rps[@]}"; do
  ratios+=("$(awk -v on="${on_rps[$i]}" -v off="${off_rps[$i]}" 'BEGIN { printf "%.4f", on/off }')")
done
ratio=$(median "${ratios[@]}")
awk -v on="$(median "${on_rps[@]}")" -v off="$(median "${off_rps[@]}")" -v r="$ratio" -v all="${ratios[*]}" \
  'BEGIN { printf "median req/s: trigger on %.0f, off %.0f; per-round on/off: %s; median %.3f (cost %.1f %%)\n", on, off, all, r, (1-r)*100 }'
echo "median payedge CPU per request: trigger on $(median "${on_cpu[@]}") µs, off $(median "${off_cpu[@]}") µs"
echo "every quote answered yielded one event: $every_quote"
