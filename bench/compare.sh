#!/usr/bin/env bash
# Run the same scenarios against Switchyard, RabbitMQ and Mosquitto in one
# run: AMQP 0-9-1, MQTT 3.1.1 and STOMP 1.2 message flows (alternating
# brokers, several repetitions), then idle MQTT connections per broker. Writes
# bench/results/<date>.md (medians; ratios against Switchyard where it ran),
# a PNG chart and the raw JSON lines.
#
# Usage: bench/compare.sh [REPS] [SECONDS]
#   CONNS=10000        idle MQTT connections per broker (conns scenario)
#   NAME=2026-11-25-x  result file name under bench/results (default: date)
#   CONNS_SUBSCRIBE=1  each idle connection also subscribes (QoS 1, a topic
#                      of its own) before it goes quiet
#   ONLY="amqp mqtt stomp conns"   protocols to run (default: all)
#   RESULTS=bench/results          where to write <date>.md/.png/.jsonl
#   SWITCHYARD="amqp mqtt stomp"  protocols Switchyard is measured on (e.g. "amqp mqtt")
# Installs rabbitmq-server and mosquitto from Debian if missing. Starts every
# broker on loopback and stops only the processes it started.
#
# Which brokers run a protocol's scenarios is one list per protocol
# (BROKERS[...]); an endpoint is PORT[<protocol>/<broker>]. Switchyard opens
# a listener on an ephemeral port for each protocol in $SWITCHYARD that its
# `serve` has a flag for, and its ready file gives PORT[<protocol>/switchyard];
# with mqtt in $SWITCHYARD it also runs the MQTT and idle-connection scenarios.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-10}
CONNS=${CONNS:-10000}
ONLY=${ONLY:-amqp mqtt stomp conns}
RESULTS=${RESULTS:-bench/results}
SWITCHYARD=${SWITCHYARD:-amqp mqtt stomp}
DATE=$(date -u +%Y-%m-%d)
WORK=$(mktemp -d /tmp/switchyard-compare.XXXXXX)
RAW=$WORK/raw.jsonl
PIDS=()
declare -A PORT PID BROKERS

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n "${RABBIT_STARTED:-}" ]]; then
    rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# Every idle connection is a file descriptor in the bench and in the broker
# (which inherits this limit). Raise the soft limit as far as allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-file limit $(ulimit -n); logs in $WORK" >&2

missing=()
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
command -v mosquitto >/dev/null || missing+=(mosquitto)
if ((${#missing[@]})); then
  # The packages' own services stay off: this script runs its own instances.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    POLICY_ADDED=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  if [[ -n "${POLICY_ADDED:-}" ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
cargo build --release -q -p switchyard-server -p switchyard-bench
BENCH=target/release/switchyard-bench

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

# wait_idle PID: wait (at most 3 min) until the process used less than a
# fifth of a core over half a second, so that one run's aftermath (a backlog
# being dropped, thousands of connections being torn down) is not measured
# as part of the next. Fails when the process is gone.
wait_idle() {
  local hz a b
  hz=$(getconf CLK_TCK)
  for _ in $(seq 360); do
    a=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null) || return 1
    sleep 0.5
    b=$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null) || return 1
    if (((b - a) * 10 < hz)); then return 0; fi
  done
  echo "pid $1 still busy after 3 min" >&2
}

# Switchyard with a fresh data dir, the listeners of $SWITCHYARD on ephemeral
# ports and its other listeners off.
mkdir -p "$WORK/sy"
SY_FLAGS=()
for proto in amqp mqtt stomp web-stomp web-mqtt; do
  if target/release/switchyard serve --help | grep -q -- "--$proto "; then
    if [[ " $SWITCHYARD " == *" $proto "* ]]; then SY_FLAGS+=("--$proto" 127.0.0.1:0)
    else SY_FLAGS+=("--$proto" none); fi
  fi
done
target/release/switchyard serve "${SY_FLAGS[@]}" --data-dir "$WORK/sy/data" \
  --ready-file "$WORK/sy/ready" >"$WORK/sy/log" 2>&1 &
PID[switchyard]=$!; PIDS+=("${PID[switchyard]}")
for _ in $(seq 100); do [[ -s "$WORK/sy/ready" ]] && break; sleep 0.1; done
while IFS='=' read -r proto addr; do
  if [[ $proto =~ ^[a-z]+$ ]]; then PORT[$proto/switchyard]=${addr##*:}; fi
done <"$WORK/sy/ready"

# Mosquitto on loopback port 1884 with its own config, no persistence.
mkdir -p "$WORK/mosquitto"
cat >"$WORK/mosquitto/mosquitto.conf" <<EOF
listener 1884 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest stderr
EOF
mosquitto -c "$WORK/mosquitto/mosquitto.conf" 2>"$WORK/mosquitto/log" &
PID[mosquitto]=$!; PIDS+=("${PID[mosquitto]}")
PORT[mqtt/mosquitto]=1884
wait_port 1884

# RabbitMQ on loopback with its own node name, data dir and config: AMQP on
# 5673, MQTT on 1885 (guest/guest, no anonymous clients), STOMP on 61614.
RABBIT_NODE=switchyard-compare@localhost
export RABBITMQ_NODENAME=$RABBIT_NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=5673 RABBITMQ_MNESIA_BASE=$WORK/rabbit/mnesia \
  RABBITMQ_LOG_BASE=$WORK/rabbit/log RABBITMQ_DIST_PORT=25673 \
  RABBITMQ_ENABLED_PLUGINS_FILE=$WORK/rabbit/enabled_plugins \
  RABBITMQ_CONFIG_FILE=$WORK/rabbit/rabbitmq.conf \
  RABBITMQ_CONF_ENV_FILE=$WORK/rabbit/rabbitmq-env.conf
export ERL_CRASH_DUMP=$WORK/rabbit/erl_crash.dump
mkdir -p "$WORK/rabbit/mnesia" "$WORK/rabbit/log"
echo '[rabbitmq_mqtt,rabbitmq_stomp].' >"$WORK/rabbit/enabled_plugins"
cat >"$WORK/rabbit/rabbitmq.conf" <<EOF
mqtt.listeners.tcp.default = 127.0.0.1:1885
mqtt.allow_anonymous = false
mqtt.default_user = guest
mqtt.default_pass = guest
mqtt.vhost = /
stomp.listeners.tcp.default = 127.0.0.1:61614
EOF
# Debian's wrapper starts the node through su, whose PAM session resets the
# open-file limit to 1024; the node's env file (sourced by the rabbitmq user
# just before starting Erlang) raises it again.
echo "ulimit -n $(ulimit -n)" >"$WORK/rabbit/rabbitmq-env.conf"
# Debian's rabbitmq-server drops to the rabbitmq user: let it use its dirs.
chmod 755 "$WORK"
if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$WORK/rabbit"; fi
rabbitmq-server >"$WORK/rabbit/stdout" 2>&1 &
PIDS+=($!); RABBIT_STARTED=1
# await_startup fails at once while the Erlang node is not up yet (with a
# rabbitmq.conf to translate, that takes a few seconds): retry, then once more
# loudly.
for _ in $(seq 30); do
  rabbitmqctl -n "$RABBIT_NODE" await_startup --timeout 120 >/dev/null 2>&1 && break
  sleep 2
done
rabbitmqctl -n "$RABBIT_NODE" await_startup --timeout 120 >/dev/null
PID[rabbitmq]=$(rabbitmqctl -n "$RABBIT_NODE" eval 'os:getpid().' | tr -d '"')
PORT[amqp/rabbitmq]=5673 PORT[mqtt/rabbitmq]=1885 PORT[stomp/rabbitmq]=61614
wait_port 1885; wait_port 61614

BROKERS[amqp]="rabbitmq"
BROKERS[mqtt]="mosquitto rabbitmq"
BROKERS[stomp]="rabbitmq"
BROKERS[conns]="mosquitto rabbitmq"
for proto in amqp mqtt stomp web-stomp web-mqtt; do
  if [[ -n "${PORT[$proto/switchyard]:-}" ]]; then BROKERS[$proto]="switchyard ${BROKERS[$proto]}"; fi
done
if [[ -n "${PORT[mqtt/switchyard]:-}" ]]; then BROKERS[conns]="switchyard ${BROKERS[conns]}"; fi
VERSIONS="Switchyard $(target/release/switchyard --version | awk '{print $2}')"
VERSIONS+=", RabbitMQ $(rabbitmqctl -n "$RABBIT_NODE" version)"
VERSIONS+=", Mosquitto $( (mosquitto -h || true) | sed -n 's/^mosquitto version //p')"

# protocol|name|flags
SCENARIOS=(
  "amqp|transient-1to1-16B|--size 16"
  "amqp|latency-1to1-16B-20k|--size 16 --rate 20000"
  "amqp|persistent-confirm-1to1-1KiB|--size 1024 --persistent --confirm 256"
  "amqp|transient-4to4-16B|--size 16 --producers 4 --consumers 4"
  "amqp|fanout-1to4-16B|--size 16 --fanout --consumers 4"
  "mqtt|mqtt-qos0-4to1-16B|--qos 0 --publishers 4 --subscribers 1 --size 16"
  "mqtt|mqtt-qos1-4to1-16B|--qos 1 --publishers 4 --subscribers 1 --size 16"
  "stomp|stomp-queue-1to1-16B|--destination queue --ack client-individual --prefetch 1000 --size 16 --persistent false"
  "stomp|stomp-queue-persistent-1to1-1KiB|--destination queue --ack client-individual --prefetch 1000 --size 1024 --persistent true"
  "stomp|stomp-topic-1to4-16B|--destination topic --consumers 4 --ack auto --size 16"
)

# run PROTOCOL BROKER FLAGS...: one bench run; its JSON line on stdout.
run() {
  local proto=$1 broker=$2; shift 2
  case $proto in
    amqp) timeout $((SECS + 180)) "$BENCH" amqp --broker "$broker" --duration "$SECS" \
      --uri "amqp://guest:guest@127.0.0.1:${PORT[amqp/$broker]}/%2f" "$@" ;;
    mqtt) timeout $((SECS + 180)) "$BENCH" mqtt --broker "$broker" --duration "$SECS" \
      --port "${PORT[mqtt/$broker]}" --username guest --password guest "$@" ;;
    stomp) timeout $((SECS + 180)) "$BENCH" stomp --broker "$broker" --duration "$SECS" \
      --port "${PORT[stomp/$broker]}" --login guest --passcode guest "$@" ;;
    conns) timeout 330 "$BENCH" conns --broker "$broker" --port "${PORT[mqtt/$broker]}" \
      --broker-pid "${PID[$broker]}" --username guest --password guest --timeout 300 "$@" ;;
  esac
}

# record PROTOCOL NAME REP BROKER FLAGS...: run and append to $RAW.
record() {
  local proto=$1 name=$2 rep=$3 broker=$4; shift 4
  local log="$WORK/logs/$rep-$name-$broker.err" line rc=0
  mkdir -p "$WORK/logs"
  echo "== rep $rep $name $broker" >&2
  if ! wait_idle "${PID[$broker]}"; then
    echo "   $broker (pid ${PID[$broker]}) is not running: skipped" >&2; return 0
  fi
  line=$(run "$proto" "$broker" "$@" 2>"$log" | tail -1) || rc=$?
  # Exit 3: the run finished but lost messages (or opened fewer
  # connections); that is a result, not a failure.
  if [[ ($rc -ne 0 && $rc -ne 3) || $line != \{* ]]; then
    echo "run failed (exit $rc): $(tail -3 "$log")" >&2; return 0
  fi
  if [[ $rc -eq 3 ]]; then echo "   incomplete: $(tail -2 "$log" | head -1)" >&2; fi
  # The bench stops waiting for consumers after 2 min even while messages
  # still arrive; then "lost" includes messages merely not delivered yet.
  local capped=false
  if grep -q 'drain gave up' "$log"; then capped=true; fi
  echo "{\"proto\":\"$proto\",\"name\":\"$name\",\"rep\":$rep,\"drain_capped\":$capped,\"result\":$line}" >>"$RAW"
}

# Idle connections first and once, while every broker is fresh: a backlog
# left by a message scenario would make the memory baseline meaningless.
if [[ " $ONLY " == *" conns "* ]]; then
  for broker in ${BROKERS[conns]}; do
    if [[ -n "${CONNS_SUBSCRIBE:-}" ]]; then
      record conns "mqtt-conns-subscribed-$CONNS" 1 "$broker" --connections "$CONNS" --subscribe
    else
      record conns "mqtt-conns-$CONNS" 1 "$broker" --connections "$CONNS"
    fi
  done
fi
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  for sc in "${SCENARIOS[@]}"; do
    IFS='|' read -r proto name flags <<<"$sc"
    [[ " $ONLY " == *" $proto "* ]] || continue
    for broker in ${BROKERS[$proto]}; do
      # shellcheck disable=SC2086
      record "$proto" "$name" "$rep" "$broker" $flags
    done
  done
done

dropped=$(grep -c 'Outgoing messages are being dropped' "$WORK/mosquitto/log" || true)
NOTES="Mosquitto logged 'Outgoing messages are being dropped' $dropped times (its per-client queue, max_queued_messages, defaults to 1000 QoS 1/2 messages)."
python3 -m venv "$WORK/venv" >/dev/null
"$WORK/venv/bin/pip" install -q matplotlib >/dev/null
MACHINE="$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load average $LOAD before the runs"
mkdir -p "$RESULTS"
# NAME=... names the result files (default: the date), so runs of one day
# do not overwrite each other.
NAME=${NAME:-$DATE}
"$WORK/venv/bin/python" bench/summarize.py "$RAW" "$RESULTS/$NAME.md" "$RESULTS/$NAME.png" \
  "$DATE" "$MACHINE" "$(env | grep -E '^(ONLY|SWITCHYARD|CONNS_SUBSCRIBE)=' | sort | tr '\n' ' ')bench/compare.sh $REPS $SECS (CONNS=$CONNS)" "$VERSIONS" "$NOTES"
cp "$RAW" "$RESULTS/$NAME.jsonl"
echo "wrote $RESULTS/$NAME.md" >&2
