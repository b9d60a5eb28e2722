#!/usr/bin/env bash
# Where a proxy's time goes under the proxy benchmark's load, as a flame graph:
#
#     benches/profile.sh [payedge|payedge-trig|bare] [OUT_DIR]      (default: payedge, benches/flame)
#
# Starts the static upstream of benches/run.sh and the target (payedge with its full chain and
# request log on, as measured; or bare Pingora, examples/bare_pingora.rs), drives it with wrk
# (-t1 -c32, GET /api/fx/rates) and samples it with perf (DWARF call graphs, SAMPLE_SECONDS seconds,
# default 6) while wrk runs. Writes OUT_DIR/<target>.svg (inferno's flame graph) and
# OUT_DIR/<target>.txt (the 40 hottest functions, self time).
#
# Needs perf, nginx, wrk, curl, python3 and inferno (cargo install inferno).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:-payedge}
OUT=${2:-benches/flame}
SECONDS_SAMPLED=${SAMPLE_SECONDS:-6}
WORKERS=${WORKERS:-1}
# shellcheck source=benches/lib.sh
. benches/lib.sh

for tool in perf nginx wrk curl inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "profile.sh needs $tool" >&2; exit 1; }
done
cargo build --release --quiet
cargo build --release --quiet --example bare_pingora

work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && cp "$work/perf.data" "$KEEP"
  rm -rf "$work"
}
trap cleanup EXIT

upstream=$(free_port); port=$(free_port)
static_upstream "$work/upstream" "$upstream" 200 \
  '{"id":"fxr_01a2185da95e7570","base":"USD","rates":{"GBP":"0.7892","EUR":"0.9214"}}'
nginx -c "$work/upstream/nginx.conf" -g 'daemon off;' &
pids+=($!)

bench_payedge_config "$work/payedge.yaml" "$upstream" "$WORKERS"
case $TARGET in
  payedge|payedge-trig)
    if [ "$TARGET" = payedge-trig ]; then bench_trigger_config "$work/payedge.yaml"; fi
    admin=$(free_port)
    target/release/payedge run -c "$work/payedge.yaml" --listen "127.0.0.1:$port" \
      --admin-listen "127.0.0.1:$admin" > "$work/payedge.log" 2>&1 &
    ;;
  bare)
    target/release/examples/bare_pingora "127.0.0.1:$port" "127.0.0.1:$upstream" "$WORKERS" \
      > /dev/null 2>&1 &
    ;;
  *) echo "usage: benches/profile.sh [payedge|payedge-trig|bare] [OUT_DIR]" >&2; exit 2 ;;
esac
pid=$!
pids+=("$pid")
token=$(target/release/payedge token -c "$work/payedge.yaml" --tenant blue --ttl 3600)
until curl -sf -o /dev/null -H "X-Tenant: blue" -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$port/api/fx/rates"; do sleep 0.05; done
cat > "$work/get.lua" <<LUA
wrk.headers["X-Tenant"] = "blue"
wrk.headers["Authorization"] = "Bearer $token"
LUA

wrk -t1 -c32 -d"$((SECONDS_SAMPLED + 4))s" -s "$work/get.lua" "http://127.0.0.1:$port/api/fx/rates" \
  > "$work/wrk.txt" &
wrk_pid=$!
sleep 2
perf record -q -F "${FREQUENCY:-499}" -g --call-graph dwarf,32768 -p "$pid" -o "$work/perf.data" \
  -- sleep "$SECONDS_SAMPLED" 2> /dev/null
wait "$wrk_pid"
mkdir -p "$OUT"
perf script -i "$work/perf.data" 2> /dev/null | inferno-collapse-perf > "$work/folded"
inferno-flamegraph --minwidth 0.5 --title "$TARGET under wrk -t1 -c32 (GET /api/fx/rates)" < "$work/folded" \
  > "$OUT/$TARGET.svg"
{
  echo "# $TARGET: $(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt") req/s while sampled; self time"
  perf report -i "$work/perf.data" --no-children --sort symbol --stdio -q -g none 2> /dev/null \
    | grep -E '^ +[0-9.]+%' | sed -E 's/[ -]+$//' | head -40 || true
} > "$OUT/$TARGET.txt"
echo "wrote $OUT/$TARGET.svg and $OUT/$TARGET.txt"
cat "$OUT/$TARGET.txt"
