#!/usr/bin/env bash
# TLS side by side on this machine: nginx terminating TLS vs payedge, same ECDSA P-256
# certificate, TLS 1.3 only, in front of the same static upstream (an nginx returning a fixed
# JSON body).
#
#     benches/tls.sh            (or: benches/run.sh tls)
#
# keep-alive  wrk over HTTPS, connections reused: requests per second through TLS.
# new-conn    wrk with `Connection: close`: every request on a new connection with a full
#             handshake (wrk does not resume sessions): handshakes (+ one request) per second.
# up-tls      payedge → the upstream over TLS (verified, with the upstream's own CA) instead of
#             plain HTTP, keep-alive on both sides; the upstream's accepted-connection count
#             (nginx stub_status) shows payedge reusing its TLS connections.
#
# payedge runs its full chain (tenant from the header, JWT, metrics, request log to a file);
# nginx proxies with upstream keep-alive and an access log to a file. ROUNDS rounds,
# interleaved; medians and the payedge/nginx ratios. Needs nginx, wrk, curl, openssl, python3.
# ROUNDS (3), DURATION (10s), CONNECTIONS (32), WORKERS (1: nginx worker processes and payedge
# proxy threads) override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WORKERS=${WORKERS:-1}

# shellcheck source=benches/lib.sh
. benches/lib.sh

cargo build --release --quiet
bin=target/release/payedge
work=$(mktemp -d)
upstream_pid=
trap '[ -n "$upstream_pid" ] && kill $upstream_pid 2>/dev/null; rm -rf "$work"' EXIT

# One CA; the front certificate (nginx and payedge serve the same one) and the upstream's.
cert() { # name, SAN
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/$1.key" \
    -out "$work/$1.csr" -subj "/CN=$1" 2>/dev/null
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$2") \
    -out "$work/$1.pem" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" \
  -out "$work/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
cert front "DNS:bench.smartpay.com"
cert upstream "DNS:upstream.bench"

upstream=$(free_port); upstream_tls=$(free_port); status=$(free_port)
nginx_front=$(free_port)
body='{"id":"fxr_01a2185da95e7570","base":"USD","rates":{"GBP":"0.7892","EUR":"0.9214"}}'
mkdir -p "$work/upstream" "$work/nginx"
cat > "$work/upstream/nginx.conf" <<NGINX
worker_processes 1;
pid $work/upstream/nginx.pid;
error_log $work/upstream/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$upstream backlog=4096;
    listen 127.0.0.1:$upstream_tls ssl backlog=4096;
    ssl_certificate $work/upstream.pem;
    ssl_certificate_key $work/upstream.key;
    ssl_protocols TLSv1.3;
    location / { default_type application/json; return 200 '$body'; }
  }
  server {
    listen 127.0.0.1:$status;
    location / { stub_status; }
  }
}
NGINX
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
    listen 127.0.0.1:$nginx_front ssl backlog=4096;
    ssl_certificate $work/front.pem;
    ssl_certificate_key $work/front.key;
    ssl_protocols TLSv1.3;
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
until curl -sf -o /dev/null "http://127.0.0.1:$upstream/"; do sleep 0.05; done

export BENCH_JWT_SECRET=benchmark-secret-that-is-long-enough-0123456789
payedge_config() { # provider address, provider tls (YAML flow or empty)
  cat <<YAML
server:
  threads: $WORKERS
  grace_period_seconds: 1
  limits: { max_connections_per_client: 0 }   # the load generator is one client address
  tls:
    listen: 127.0.0.1:0
    certificates: [{ cert_file: $work/front.pem, key_file: $work/front.key }]
tenancy: { strategy: header, tenants: [blue, green] }
auth:
  jwt: { algorithms: [HS256], secret_env: BENCH_JWT_SECRET }
  required_path_prefixes: [/api]
analytics: { enabled: true, request_logging: true }
routes: [{ path_prefix: /api/fx, pool: fx }]
pools:
  fx:
    timeouts: { idle_ms: 50000 }
    providers: [{ name: fx-static, address: "$1" $2 }]
YAML
}
payedge_config "127.0.0.1:$upstream" "" > "$work/plain-up.yaml"
payedge_config "127.0.0.1:$upstream_tls" \
  ", tls: { sni: upstream.bench, ca_file: $work/ca.pem }" > "$work/tls-up.yaml"
token=$("$bin" token -c "$work/plain-up.yaml" --tenant blue --ttl 3600)
for kind in keepalive close; do
  {
    echo 'wrk.headers["X-Tenant"] = "blue"'
    echo "wrk.headers[\"Authorization\"] = \"Bearer $token\""
    [ "$kind" = close ] && echo 'wrk.headers["Connection"] = "close"'
    cat <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("LATENCY %d %d\n", latency:percentile(50), latency:percentile(99)))
  io.write(string.format("ERRORS %d %d %d %d\n", summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status))
end
LUA
  } > "$work/$kind.lua"
done

accepted() { curl -s "http://127.0.0.1:$status/" | awk 'NR==3 {print $1}'; }

# port, script → "rps p50 p99"
measure() {
  local out rps p50 p99 errors
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$work/$2.lua" "https://127.0.0.1:$1/api/fx/rates")
  rps=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
  read -r p50 p99 < <(awk '/^LATENCY/ {print $2/1000, $3/1000}' <<< "$out")
  errors=$(awk '/^ERRORS/ {print $2 + $4 + $5}' <<< "$out")
  if [ "${errors:-0}" != 0 ] || grep -q "Non-2xx" <<< "$out"; then
    echo "errors or non-2xx answers on port $1 ($2): $out" >&2; exit 1
  fi
  echo "$rps $p50 $p99"
}

with_nginx() { # script
  nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  local master=$!
  until curl -sf -o /dev/null --cacert "$work/ca.pem" --resolve "bench.smartpay.com:$nginx_front:127.0.0.1" \
    "https://bench.smartpay.com:$nginx_front/"; do sleep 0.05; done
  measure "$nginx_front" "$1"
  kill "$master"; wait "$master" 2>/dev/null || true
  rm -f "$work/nginx/access.log"
}

with_payedge() { # config, script
  local port admin pid
  port=$(free_port); admin=$(free_port)
  "$bin" run -c "$work/$1.yaml" --tls-listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    > "$work/payedge.log" 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz"; do sleep 0.05; done
  local before after result
  before=$(accepted)
  result=$(measure "$port" "$2")
  after=$(accepted)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  grep -q '"target":"payedge::access"' "$work/payedge.log" || { echo "no request log" >&2; exit 1; }
  rm -f "$work/payedge.log"
  echo "$result $((after - before))"
}

echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
echo "wrk -t1 -c$CONNECTIONS -d$DURATION over TLS 1.3 (ECDSA P-256); nginx worker_processes $WORKERS, payedge threads $WORKERS"
echo
printf '%-6s %-22s %10s %8s %8s %16s\n' round target req/s "p50 ms" "p99 ms" "upstream conns"
declare -A rps p50 p99 conns
targets="nginx-keepalive payedge-keepalive nginx-new-conn payedge-new-conn payedge-up-tls"
for round in $(seq 1 "$ROUNDS"); do
  for target in $targets; do
    case $target in
      nginx-keepalive) r="$(with_nginx keepalive) -" ;;
      payedge-keepalive) r=$(with_payedge plain-up keepalive) ;;
      nginx-new-conn) r="$(with_nginx close) -" ;;
      payedge-new-conn) r=$(with_payedge plain-up close) ;;
      payedge-up-tls) r=$(with_payedge tls-up keepalive) ;;
    esac
    read -r a b c d <<< "$r"
    printf '%-6s %-22s %10s %8s %8s %16s\n' "$round" "$target" "$a" "$b" "$c" "$d"
    rps[$target]+="$a "; p50[$target]+="$b "; p99[$target]+="$c "; conns[$target]+="$d "
  done
done
echo
echo "medians over $ROUNDS rounds:"
printf '%-22s %10s %8s %8s\n' target req/s "p50 ms" "p99 ms"
declare -A m
for target in $targets; do
  # shellcheck disable=SC2086
  m[$target]=$(median ${rps[$target]})
  # shellcheck disable=SC2086
  printf '%-22s %10s %8s %8s\n' "$target" "${m[$target]}" "$(median ${p50[$target]})" "$(median ${p99[$target]})"
done
echo
awk -v pk="${m[payedge-keepalive]}" -v nk="${m[nginx-keepalive]}" -v pn="${m[payedge-new-conn]}" \
    -v nn="${m[nginx-new-conn]}" -v pt="${m[payedge-up-tls]}" \
  'BEGIN {
    printf "payedge/nginx keep-alive over TLS: %.3f   new connections (full handshakes): %.3f\n", pk / nk, pn / nn
    printf "payedge with a TLS upstream / plain upstream (keep-alive): %.3f\n", pt / pk
  }'
# shellcheck disable=SC2086
echo "upstream connections opened by payedge per up-tls run: ${conns[payedge-up-tls]}(for $CONNECTIONS client connections)"
