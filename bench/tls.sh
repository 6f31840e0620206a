#!/usr/bin/env bash
# What TLS costs: Warren and RabbitMQ, each over plain AMQP and over amqps, driven by the same
# load generator (`warren perf throughput`, 16 B transient messages, auto-ack).
#
#   bash bench/tls.sh                  # RUNS=3 DURATION=10, prints a markdown table
#
# From the repository root:
#  1. cargo build --release -p warren-cli
#  2. makes a CA and a server certificate for 127.0.0.1/localhost with openssl, in a throwaway
#     directory
#  3. starts `target/release/warren serve` with a [tls] section: plain on 127.0.0.1:5690, amqps
#     on 127.0.0.1:5691 (stopped on exit)
#  4. starts a RabbitMQ node with ../shared/rabbitmq/start.sh, PORT=5692, and its listener for
#     TLS on 5693 with the same certificate (the config start.sh writes, plus RabbitMQ's
#     listeners.ssl and ssl_options lines); stopped on exit
#  5. runs each of the four RUNS times, alternating the order, and prints the medians and the
#     ratios (Warren / RabbitMQ, TLS / plain)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
START=${RABBITMQ_START:-../shared/rabbitmq/start.sh}
D=$(mktemp -d /tmp/warren-tls-bench.XXXXXX)
chmod 755 "$D"
WPID=""
cleanup() {
  [[ -n $WPID ]] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
  [[ -f $D/start-tls.sh ]] && PORT=5692 bash "$D/start-tls.sh" stop >/dev/null 2>&1
  rm -rf "$D"
}
trap cleanup EXIT

cargo build --release -p warren-cli >&2
BIN=target/release/warren

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$D/ca.key" -out "$D/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$D/server.key" -out "$D/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$D/ext"
openssl x509 -req -in "$D/server.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial \
  -days 2 -extfile "$D/ext" -out "$D/server.pem" 2>/dev/null
chmod 644 "$D"/*.pem "$D"/*.key

cat > "$D/warren.toml" <<TOML
bind = "127.0.0.1:5690"
amqps_bind = "127.0.0.1:5691"
http_bind = "off"
prometheus_bind = "off"
data_dir = "$D/data"
[tls]
cert_file = "$D/server.pem"
key_file = "$D/server.key"
TOML
$BIN serve --config "$D/warren.toml" > "$D/warren.log" 2>&1 &
WPID=$!

# start.sh, with RabbitMQ's TLS listener added to the config it writes.
sed "/^disk_free_limit.absolute = 50MB\$/a listeners.ssl.default = 127.0.0.1:5693\\
ssl_options.cacertfile = $D/ca.pem\\
ssl_options.certfile = $D/server.pem\\
ssl_options.keyfile = $D/server.key\\
ssl_options.verify = verify_none\\
ssl_options.fail_if_no_peer_cert = false" "$START" > "$D/start-tls.sh"
PORT=5692 bash "$D/start-tls.sh" >&2
sleep 2

export WARREN_CACERT=$D/ca.pem
run() { # run URL: received messages per second
  $BIN perf throughput --url "$1" --duration "$DURATION" --warmup 2 --json \
    | tail -1 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["received_per_sec"]))'
}
declare -A URL=(
  [warren]="amqp://guest:guest@127.0.0.1:5690/%2f"
  [warren-tls]="amqps://guest:guest@localhost:5691/%2f"
  [rabbitmq]="amqp://guest:guest@127.0.0.1:5692/%2f"
  [rabbitmq-tls]="amqps://guest:guest@localhost:5693/%2f"
)
ORDER=(warren warren-tls rabbitmq rabbitmq-tls)
: > "$D/results"
for i in $(seq 1 "$RUNS"); do
  if ((i % 2 == 0)); then ORDER=(rabbitmq-tls rabbitmq warren-tls warren); else ORDER=(warren warren-tls rabbitmq rabbitmq-tls); fi
  for k in "${ORDER[@]}"; do
    r=$(run "${URL[$k]}")
    echo "$k $r" | tee -a "$D/results" >&2
  done
done
python3 - "$D/results" <<'PY'
import statistics, sys
d = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    d.setdefault(k, []).append(float(v))
m = {k: statistics.median(v) for k, v in d.items()}
print("| broker | plain msg/s | TLS msg/s | TLS / plain |")
print("| --- | --- | --- | --- |")
for b in ("warren", "rabbitmq"):
    print(f"| {b} | {m[b]:,.0f} | {m[b+'-tls']:,.0f} | {m[b+'-tls']/m[b]:.2f} |")
print(f"| Warren / RabbitMQ | {m['warren']/m['rabbitmq']:.1f}x | {m['warren-tls']/m['rabbitmq-tls']:.1f}x | |")
PY
