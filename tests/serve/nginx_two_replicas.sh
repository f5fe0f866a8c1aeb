#!/bin/bash
# Two `evla serve` replicas behind Debian's nginx (WebSocket proxying,
# least_conn), all on loopback, driven through nginx by bench/serve_load.py.
#
#   tests/serve/nginx_two_replicas.sh [path/to/evla] [clients] [requests]
#
# Exits 77 (ctest: skipped) when nginx is not installed: apt-get install -y nginx
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EVLA=${1:-$ROOT/build/bin/evla}
CLIENTS=${2:-6}
REQUESTS=${3:-20}
MODEL=$ROOT/models/evla-tiny-random
PY=/usr/bin/python3

NGINX=$(command -v nginx || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ]; then
  echo "SKIP: nginx is not installed (apt-get install -y nginx)"
  exit 77
fi
[ -x "$EVLA" ] || { echo "no evla binary at $EVLA"; exit 1; }

TMP=$(mktemp -d /tmp/evla-nginx.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# Free loopback ports for the two replicas and the proxy.
read -r P1 P2 PN < <($PY -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

for i in 1 2; do
  port_var=P$i
  "$EVLA" serve --model "$MODEL" --port "${!port_var}" --workers 1 --threads 1 2> "$TMP/replica$i.log" &
  PIDS+=($!)
done

# Wait until both replicas answer their own health check: nginx marks a
# replica that refuses a connection as down for 10 s and sends every client
# to the other (slow starts under the sanitizers did that).
healthy() {
  $PY -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:$1/healthz', timeout=2).read() != b'OK\n')" 2>/dev/null
}
for port in "$P1" "$P2"; do
  for _ in $(seq 1 300); do
    healthy "$port" && break
    sleep 0.2
  done
done

mkdir -p "$TMP/nginx"
cat > "$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log $TMP/nginx/access.log;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;

  # WebSocket upgrade: pass Upgrade/Connection through (HTTP/1.1 to the backend).
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream evla_replicas {
    least_conn;                       # a new robot goes to the replica with fewer connections
    server 127.0.0.1:$P1;
    server 127.0.0.1:$P2;
  }
  server {
    listen 127.0.0.1:$PN;
    location / {
      proxy_pass http://evla_replicas;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 300s;        # robots may pause between chunks
      proxy_send_timeout 300s;
      proxy_buffering off;
    }
  }
}
EOF
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx.conf" &
PIDS+=($!)

# Wait until the proxy answers the replicas' health check.
for _ in $(seq 1 100); do
  healthy "$PN" && break
  sleep 0.2
done

echo "nginx on 127.0.0.1:$PN -> replicas on $P1, $P2"
$PY "$ROOT/bench/serve_load.py" --connect "127.0.0.1:$PN" --clients "$CLIENTS" --requests "$REQUESTS" \
    --warmup 2 --max-seconds 100

sleep 0.5  # let the replicas log the closed connections
# Both replicas must have served connections (least_conn spreads concurrent clients).
c1=$(grep -c "connection closed by the client" "$TMP/replica1.log" || true)
c2=$(grep -c "connection closed by the client" "$TMP/replica2.log" || true)
echo "connections served: replica 1: $c1, replica 2: $c2"
if [ "$c1" -lt 1 ] || [ "$c2" -lt 1 ]; then
  echo "FAIL: the load was not spread over both replicas"
  cat "$TMP"/replica*.log
  exit 1
fi
echo "PASS"
