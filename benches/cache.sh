#!/usr/bin/env bash
# Cached GET /api/fx/rates: payedge's route cache against nginx's proxy_cache on the same route,
# in front of the same static upstream, and payedge without the cache, interleaved:
#
#     benches/cache.sh        (or benches/run.sh cache)
#
# nginx keys its cache by X-Tenant and the request URI (as payedge keys by tenant and
# path+query), keeps 200s for 30 s, with proxy_cache_lock (single flight) and an access log to a
# file; payedge runs its full chain (tenant, JWT, route, metrics, request log) with
# `cache: {ttl_seconds: 30}` on the route. One worker/thread each; wrk -t1 -c32. After each run
# the upstream's request count shows the cache answered (a handful of upstream requests per run).
# ROUNDS (3), DURATION (10s), CONNECTIONS (32) override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
# shellcheck source=benches/lib.sh
. benches/lib.sh

cargo build --release --quiet
bin=target/release/payedge
work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

upstream=$(free_port); nginx_port=$(free_port)
# The upstream logs its requests, so each run can say how many reached it.
static_upstream "$work/upstream" "$upstream" 200 \
  '{"id":"fxr_01a2185da95e7570","base":"USD","rates":{"GBP":"0.7892","EUR":"0.9214"}}'
sed -i "s|access_log off;|access_log $work/upstream/access.log;|" "$work/upstream/nginx.conf"
nginx -c "$work/upstream/nginx.conf" -g 'daemon off;' &
pids+=($!)

mkdir -p "$work/nginx/cache"
# nginx's workers drop root for an unprivileged user: the cache directory must be theirs to write.
chmod a+x "$work"
chmod -R a+rwx "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log $work/nginx/access.log;
  keepalive_requests 1000000;
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=rates:10m max_size=64m inactive=60s;
  upstream fx { server 127.0.0.1:$upstream; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port backlog=4096;
    location / {
      proxy_pass http://fx;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache rates;
      proxy_cache_key "\$http_x_tenant\$request_uri";
      proxy_cache_valid 200 30s;
      proxy_cache_lock on;
      add_header Cache-Status \$upstream_cache_status;
    }
  }
}
NGINX

bench_payedge_config "$work/payedge.yaml" "$upstream" 1
sed 's|routes: \[{ path_prefix: /api/fx, pool: fx }\]|routes: [{ path_prefix: /api/fx, pool: fx, cache: { ttl_seconds: 30 } }]|' \
  "$work/payedge.yaml" > "$work/payedge-cached.yaml"
grep -q 'cache: { ttl_seconds: 30 }' "$work/payedge-cached.yaml"
token=$("$bin" token -c "$work/payedge.yaml" --tenant blue --ttl 3600)
cat > "$work/get.lua" <<LUA
wrk.headers["X-Tenant"] = "blue"
wrk.headers["Authorization"] = "Bearer $token"
LUA

upstream_requests() { [ -f "$work/upstream/access.log" ] && wc -l < "$work/upstream/access.log" || echo 0; }

# $1 port → "req/s p99_ms upstream_requests"
measure() {
  local before out rps p99
  before=$(upstream_requests)
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/get.lua" "http://127.0.0.1:$1/api/fx/rates")
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/, "", v); v/=1000} else if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /s$/) {sub(/s/, "", v); v*=1000}; print v}' <<< "$out")
  if grep -q "Non-2xx" <<< "$out"; then echo "non-2xx answers on port $1" >&2; exit 1; fi
  echo "$rps $p99 $(( $(upstream_requests) - before ))"
}

run_nginx() {
  nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  local pid=$!
  until curl -sf -o /dev/null -H "X-Tenant: blue" "http://127.0.0.1:$nginx_port/api/fx/rates"; do sleep 0.05; done
  measure "$nginx_port"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ -n "${DEBUG:-}" ]; then tail -3 "$work/nginx/error.log" >&2; fi
}
# $1: config file
payedge_with() {
  local proxy admin pid
  proxy=$(free_port); admin=$(free_port)
  "$bin" run -c "$1" --listen "127.0.0.1:$proxy" --admin-listen "127.0.0.1:$admin" > /dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz"; do sleep 0.05; done
  measure "$proxy"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
}
run_payedge_cached() { payedge_with "$work/payedge-cached.yaml"; }
run_payedge_uncached() { payedge_with "$work/payedge.yaml"; }

echo "wrk -t1 -c$CONNECTIONS -d$DURATION, GET /api/fx/rates; one nginx worker, one payedge thread"
printf '%-6s %-17s %10s %8s %10s\n' round target req/s "p99 ms" "upstream"
declare -A rps p99
for round in $(seq 1 "$ROUNDS"); do
  for target in nginx payedge_cached payedge_uncached; do
    read -r a b c < <("run_$target")
    printf '%-6s %-17s %10s %8s %10s\n' "$round" "$target" "$a" "$b" "$c"
    rps[$target]+="$a "; p99[$target]+="$b "
  done
done
echo
echo "medians over $ROUNDS rounds:"
declare -A m
for target in nginx payedge_cached payedge_uncached; do
  # shellcheck disable=SC2086
  m[$target]=$(median ${rps[$target]})
  # shellcheck disable=SC2086
  printf '%-17s %10s req/s  p99 %s ms\n' "$target" "${m[$target]}" "$(median ${p99[$target]})"
done
awk -v p="${m[payedge_cached]}" -v n="${m[nginx]}" -v u="${m[payedge_uncached]}" 'BEGIN {
  printf "payedge cached / nginx proxy_cache: %.3f\n", p / n
  printf "payedge cached / payedge uncached: %.3f\n", p / u
}'
