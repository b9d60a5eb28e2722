# Shared by the benchmark scripts (sourced, not run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# static_upstream DIR PORT STATUS BODY: writes DIR/nginx.conf for one nginx worker answering
# every request on PORT with STATUS and the JSON BODY, keep-alive, no access log.
static_upstream() {
  local dir=$1 port=$2 status=$3 body=$4
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      default_type application/json;
      return $status '$body';
    }
  }
}
NGINX
}

# bench_payedge_config FILE UPSTREAM_PORT THREADS: the payedge of the proxy comparisons (its full
# chain: tenant from X-Tenant, HS256 JWT, route, metrics, the JSON request log) in front of one
# static upstream, uncapped (the load generator is one address). Exports BENCH_JWT_SECRET.
bench_payedge_config() {
  local file=$1 upstream=$2 threads=$3
  export BENCH_JWT_SECRET=benchmark-secret-that-is-long-enough-0123456789
  cat > "$file" <<YAML
server: { threads: $threads, grace_period_seconds: 1, limits: { max_connections_per_client: 0 } }
tenancy: { strategy: header, tenants: [blue, green] }
auth:
  jwt: { algorithms: [HS256], secret_env: BENCH_JWT_SECRET }
  required_path_prefixes: [/api]
analytics: { enabled: true, request_logging: true }
routes: [{ path_prefix: /api/fx, pool: fx }]
pools:
  fx:
    providers: [{ name: fx-static, address: "127.0.0.1:$upstream" }]
YAML
}

# bench_trigger_config FILE: appends the trigger of the `payedge-trig` measurements to FILE (a
# config of bench_payedge_config): an `fx.rates.read` event of four fields for every answer to
# GET /api/fx/rates.
bench_trigger_config() {
  cat >> "$1" <<YAML
triggers:
  - name: fx-rates-read
    event: fx.rates.read
    match: { method: GET, path: /api/fx/rates, status: [200] }
    fields: { rateId: /id, base: /base, gbp: /rates/GBP, eur: /rates/EUR }
    required: [rateId]
YAML
}

# median N…: the median of the numbers given (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# spread N…: the largest of the numbers given over the smallest (how far one target's rounds
# disagree; 999 when the smallest is not positive, which no steady run has).
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.3f\n", (lo > 0 ? hi / lo : 999)}'; }
# Rounds of one configuration further apart than this (the fastest over the slowest) mean the
# machine's CPU was not steady during the run (a virtual machine's neighbours): the goals get no
# verdict from such a run, only its figures.
MAX_SPREAD=${MAX_SPREAD:-1.25}
# unsteady N…: true when the rounds given (one target's req/s) are further apart than MAX_SPREAD.
unsteady() { [ "$#" -gt 1 ] && awk -v s="$(spread "$@")" -v m="$MAX_SPREAD" 'BEGIN { exit !(s > m) }'; }
# verdict OK STEADY: what a goal's line says.
verdict() { if [ "$2" != 1 ]; then echo "no verdict: unsteady run"; elif [ "$1" = 1 ]; then echo met; else echo "NOT met"; fi; }

# payment_lua TOKEN [KEY_PREFIX]: a wrk script POSTing a payment for tenant blue with TOKEN; with
# KEY_PREFIX, each request carries a new Idempotency-Key (KEY_PREFIX-1, KEY_PREFIX-2, …).
payment_lua() {
  cat <<LUA
wrk.method = "POST"
wrk.body = '{"amount":"25.00","currency":"EUR"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Tenant"] = "blue"
wrk.headers["Authorization"] = "Bearer $1"
local counter = 0
request = function()
  if "${2:-}" ~= "" then
    counter = counter + 1
    wrk.headers["Idempotency-Key"] = "${2:-}-" .. counter
  end
  return wrk.format()
end
LUA
}
