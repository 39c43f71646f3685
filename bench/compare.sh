#!/usr/bin/env bash
# Run the same AMQP scenarios against Switchyard and RabbitMQ in one run,
# alternating brokers, several repetitions, and write
# bench/results/<date>.md (medians and ratios) plus a PNG chart.
#
# Usage: bench/compare.sh [REPS] [SECONDS]
# Installs rabbitmq-server from Debian if missing. Starts both brokers on
# loopback and stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-10}
DATE=$(date -u +%Y-%m-%d)
WORK=$(mktemp -d /tmp/switchyard-compare.XXXXXX)
OUT=bench/results/$DATE.md
RAW=$WORK/raw.jsonl
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n "${RABBIT_STARTED:-}" ]]; then
    RABBITMQ_NODENAME=$RABBIT_NODE rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

if ! command -v rabbitmq-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
fi
cargo build --release -q -p switchyard-server -p switchyard-bench
BENCH=target/release/switchyard-bench

# Switchyard on an ephemeral port with a fresh data dir.
mkdir -p "$WORK/sy"
target/release/switchyard serve --amqp 127.0.0.1:0 --data-dir "$WORK/sy/data" \
  --ready-file "$WORK/sy/ready" >"$WORK/sy/log" 2>&1 &
SY_PID=$!; PIDS+=("$SY_PID")
for _ in $(seq 100); do [[ -s "$WORK/sy/ready" ]] && break; sleep 0.1; done
SY_PORT=$(sed -n 's/^amqp=.*://p' "$WORK/sy/ready")

# RabbitMQ on loopback port 5673 with its own node name and data dir.
RABBIT_NODE=switchyard-compare@localhost
RABBIT_PORT=5673
export RABBITMQ_NODENAME=$RABBIT_NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_MNESIA_BASE=$WORK/rabbit/mnesia \
  RABBITMQ_LOG_BASE=$WORK/rabbit/log RABBITMQ_DIST_PORT=25673 \
  RABBITMQ_ENABLED_PLUGINS_FILE=$WORK/rabbit/enabled_plugins
export ERL_CRASH_DUMP=$WORK/rabbit/erl_crash.dump
mkdir -p "$WORK/rabbit/mnesia" "$WORK/rabbit/log"; echo '[].' >"$WORK/rabbit/enabled_plugins"
# Debian's rabbitmq-server drops to the rabbitmq user: let it use its dirs.
chmod 755 "$WORK"
if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$WORK/rabbit"; fi
rabbitmq-server >"$WORK/rabbit/stdout" 2>&1 &
PIDS+=($!); RABBIT_STARTED=1
rabbitmqctl -n "$RABBIT_NODE" await_startup --timeout 120 >/dev/null

SCENARIOS=(
  "transient-1to1-16B|--size 16"
  "latency-1to1-16B-20k|--size 16 --rate 20000"
  "persistent-confirm-1to1-1KiB|--size 1024 --persistent --confirm 256"
  "transient-4to4-16B|--size 16 --producers 4 --consumers 4"
  "fanout-1to4-16B|--size 16 --fanout --consumers 4"
)
for rep in $(seq "$REPS"); do
  for sc in "${SCENARIOS[@]}"; do
    name=${sc%%|*}; flags=${sc#*|}
    for broker in switchyard rabbitmq; do
      port=$SY_PORT; [[ $broker == rabbitmq ]] && port=$RABBIT_PORT
      echo "== rep $rep $name $broker" >&2
      # shellcheck disable=SC2086
      line=$(timeout $((SECS + 60)) "$BENCH" amqp --uri "amqp://guest:guest@127.0.0.1:$port/%2f" \
        --broker "$broker" --duration "$SECS" $flags 2>"$WORK/last.err" | tail -1) || {
        echo "run failed: $(tail -3 "$WORK/last.err")" >&2; continue; }
      echo "{\"name\":\"$name\",\"rep\":$rep,\"result\":$line}" >>"$RAW"
    done
  done
done

python3 -m venv "$WORK/venv" >/dev/null
"$WORK/venv/bin/pip" install -q matplotlib >/dev/null
MACHINE="$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
"$WORK/venv/bin/python" bench/summarize.py "$RAW" "$OUT" "bench/results/$DATE.png" \
  "$DATE" "$MACHINE" "bench/compare.sh $REPS $SECS"
cp "$RAW" "bench/results/$DATE.jsonl"
echo "wrote $OUT" >&2
