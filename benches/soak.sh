#!/usr/bin/env bash
# Soak (issue 17): SOAK_SECONDS (default 600) of steady mixed load through `payedge demo` —
# GET /api/fx/rates, POST /api/fx/quote and POST /api/payments for two tenants (wrk, 4
# connections pacing themselves 10 ms between requests) while HUB_CLIENTS (default 1000) official
# SignalR clients hold hub connections and receive every quote and payment of their tenant.
# payedge's RSS, open descriptors, event queue depth and hub connections are sampled every second
# into benches/soak/soak.csv and plotted in benches/soak/soak.svg; the summary says whether the
# goals hold (RSS at the end within 5 % of its value after the first minute, descriptors flat,
# no error anywhere).
#
#   benches/soak.sh                      # 10 minutes
#   SOAK_SECONDS=60 HUB_CLIENTS=200 benches/soak.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

DURATION=${SOAK_SECONDS:-600}
HUB=${HUB_CLIENTS:-1000}
BIN=target/release/payedge
[ -x "$BIN" ] || cargo build --release --quiet
[ -d tests/signalr/node_modules ] || (cd tests/signalr && npm ci --no-audit --no-fund --silent)
OUT=benches/soak
mkdir -p "$OUT"
work=$(mktemp -d)
proxy=$(free_port) admin=$(free_port) tls=$(free_port)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

PAYEDGE_DEMO_DIR="$work/demo" "$BIN" demo --listen "127.0.0.1:$proxy" \
  --admin-listen "127.0.0.1:$admin" --tls-listen "127.0.0.1:$tls" > /dev/null 2> "$work/payedge.err" &
pid=$!
pids+=("$pid")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$admin/readyz" > /dev/null && break
  sleep 0.1
done

# 20 callers (a subject may hold 100 hub connections), alternating tenants.
grants=()
for s in $(seq 0 19); do
  tenant=$([ $((s % 2)) -eq 0 ] && echo blue || echo green)
  grants+=("$tenant=$("$BIN" token --tenant "$tenant" --subject "soak-$s" --ttl 86400)")
done
node benches/soak_hub.js "http://127.0.0.1:$admin/hubs/notifications" "$HUB" "${grants[@]}" \
  > "$work/hub.log" 2>&1 &
pids+=("$!")
for _ in $(seq 600); do [ -s "$work/hub.log" ] && break; sleep 0.1; done

blue=$("$BIN" token --tenant blue --subject soak-http --ttl 86400)
green=$("$BIN" token --tenant green --subject soak-http --ttl 86400)
cat > "$work/mix.lua" <<LUA
local tokens = { blue = "$blue", green = "$green" }
local n = 0
request = function()
  n = n + 1
  local tenant = (n % 2 == 0) and "blue" or "green"
  local h = { ["X-Tenant"] = tenant, ["Authorization"] = "Bearer " .. tokens[tenant],
              ["Content-Type"] = "application/json" }
  local k = n % 30
  if k == 0 then
    return wrk.format("POST", "/api/fx/quote", h, '{"from":"USD","to":"GBP","amount":"100.00"}')
  elseif k == 15 then
    return wrk.format("POST", "/api/payments", h, '{"amount":"25.00","currency":"EUR"}')
  end
  return wrk.format("GET", "/api/fx/rates", h)
end
delay = function() return 10 end
LUA

echo "seconds,rss_kib,fds,events_queue_depth,hub_connections" > "$OUT/soak.csv"
(
  for t in $(seq 1 "$DURATION"); do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    metrics=$(curl -fs "http://127.0.0.1:$admin/metrics" || true)
    depth=$(awk '/^payedge_events_queue_depth / {print $2}' <<< "$metrics")
    hub=$(awk '/^payedge_hub_connections\{/ {s += $2} END {print s + 0}' <<< "$metrics")
    echo "$t,$rss,$fds,${depth:-0},$hub" >> "$OUT/soak.csv"
    sleep 1
  done
) &
sampler=$!
pids+=("$sampler")
wrk -t1 -c4 -d "${DURATION}s" -s "$work/mix.lua" "http://127.0.0.1:$proxy/" > "$work/wrk.txt" 2>&1
wait "$sampler" || true
kill -TERM "${pids[1]}" 2>/dev/null || true
sleep 1

cp "$work/wrk.txt" "$work/hub.log" "$OUT/"
python3 benches/soak_report.py "$OUT/soak.csv" "$OUT/wrk.txt" "$OUT/hub.log" "$work/payedge.err" \
  "$OUT/soak.svg" "$HUB" | tee "$OUT/summary.txt"
