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
