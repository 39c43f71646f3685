#!/usr/bin/env bash
# Switchyard, RabbitMQ and Mosquitto measured in one run on the same
# scenarios (AMQP 0-9-1, MQTT 3.1.1, STOMP 1.2), brokers alternating within
# each repetition. Three modes:
#
#   MODE=cpu (default)  each scenario at a fixed offered rate: the broker's
#       CPU per consumed message (utime + stime of its process from
#       /proc/<pid>/stat around the generator run) and the generator's p50 /
#       p99 latency.
#   MODE=saturation     the highest offered rate at which consumers keep up
#       (nothing lost, the rate really offered, p99 under SAT_P99_MS): the
#       rate doubles from a scenario's start until a run fails, then
#       bisects; at most SAT_STEPS runs and SAT_BUDGET seconds per search.
#   MODE=throughput     the earlier open-loop runs (publishers flat out, no
#       pinning by default) and the idle-connection scenario; its report has
#       a PNG chart.
#
# In cpu and saturation modes every broker runs on core BROKER_CORE (1) and
# the generator on GEN_CORE (0), both through taskset; RabbitMQ's Erlang VM
# gets RABBIT_ERL_ARGS (one scheduler: "+S 1:1 +SDcpu 1:1").
#
# Usage: [MODE=cpu|saturation|throughput] bench/compare.sh [REPS] [SECONDS]
#   REPS (3)        repetitions; the report gives medians and min–max ranges
#   SECONDS         publishing time of a run (a saturation step: 5; else 10)
#   ONLY="..."      run only the scenarios whose protocol is one of these
#                   words or whose name contains one (amqp, mqtt, qos1,
#                   amqp-raw, stomp, conns, ...); default: all of the mode's
#   ONLY_BROKERS="switchyard rabbitmq mosquitto"  brokers to start and measure
#   SKIP="mqtt-*/rabbitmq"   <scenario>/<broker> globs not to run
#   SWITCHYARD="amqp mqtt stomp"  protocols Switchyard is measured on
#   PIN=0           no pinning (default in throughput mode only)
#   SAT_STEPS=12 SAT_BUDGET=300 SAT_PRECISION=10 SAT_P99_MS=50
#                   saturation search: runs, seconds, stop once the failing
#                   rate is within this many % of the passing one, p99 limit
#   CONNS=10000 CONNS_SUBSCRIBE=1   idle-connection scenario (throughput)
#   NAME=<date>-<mode>  result name under RESULTS (bench/results): writes
#                   NAME.md and the raw NAME.jsonl (and NAME.png)
#   BUILD=0         use target/release as it is instead of building
#
# Installs rabbitmq-server and mosquitto from Debian if missing. Starts only
# the brokers the chosen scenarios need, each on 127.0.0.1 on a port nobody
# used, with a fresh data dir under a temp dir, and stops only the processes
# it started. Every loop is bounded (repetitions, steps, time budgets,
# timeouts).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib/brokers.sh
source bench/lib/brokers.sh
SETTINGS=$(env | grep -E '^(MODE|ONLY|ONLY_BROKERS|SKIP|SWITCHYARD|PIN|BROKER_CORE|GEN_CORE|RABBIT_ERL_ARGS|SAT_[A-Z0-9]+|CONNS|CONNS_SUBSCRIBE|BUILD)=' |
  sort | sed -E "s/^([A-Z_0-9]+)=(.*)$/\1='\2'/" | tr '\n' ' ' || true)
COMMAND="${SETTINGS}bench/compare.sh $*"
MODE=${MODE:-cpu}
REPS=${1:-3}
case $MODE in
  cpu | throughput) SECS=${2:-10} ;;
  saturation) SECS=${2:-5} ;;
  *) echo "MODE is cpu, saturation or throughput, not $MODE" >&2; exit 2 ;;
esac
ONLY_BROKERS=${ONLY_BROKERS:-switchyard rabbitmq mosquitto}
SKIP=${SKIP:-}
SWITCHYARD=${SWITCHYARD:-amqp mqtt stomp}
CONNS=${CONNS:-10000}
SAT_STEPS=${SAT_STEPS:-12} SAT_BUDGET=${SAT_BUDGET:-300}
SAT_PRECISION=${SAT_PRECISION:-10} SAT_P99_MS=${SAT_P99_MS:-50}
if [[ $MODE == throughput ]]; then PIN=${PIN:-0}; else PIN=${PIN:-1}; fi
if [[ $PIN == 1 ]]; then
  pin_cores "${BROKER_CORE:-1}" "${GEN_CORE:-0}"
  RABBIT_ERL_ARGS=${RABBIT_ERL_ARGS-+S 1:1 +SDcpu 1:1}
else
  pin_cores "" ""
  RABBIT_ERL_ARGS=${RABBIT_ERL_ARGS-}
fi
RESULTS=${RESULTS:-bench/results}
DATE=$(date -u +%Y-%m-%d)
NAME=${NAME:-$DATE-$MODE}
WORK=$(mktemp -d /tmp/switchyard-compare.XXXXXX)
RAW=$WORK/raw.jsonl
HZ=$(getconf CLK_TCK)
PIDS=()
declare -A PORT PID BROKERS
# Logs stay in $WORK; binaries, data and the chart's venv go.
trap 'stop_brokers; rm -rf "$WORK/bin" "$WORK/sy/data" "$WORK/rabbit/mnesia" "$WORK/venv"' EXIT

# Which brokers speak a scenario's protocol (the generator subcommand).
BROKERS[amqp]="switchyard rabbitmq"
BROKERS[amqp-raw]="switchyard rabbitmq"
BROKERS[stomp]="switchyard rabbitmq"
BROKERS[mqtt]="switchyard mosquitto rabbitmq"
BROKERS[conns]="switchyard mosquitto rabbitmq"

# protocol|name|offered msg/s in total (0: as fast as possible; saturation:
# where the search starts)|generator flags
case $MODE in
  throughput) SCENARIOS=(
    "amqp|transient-1to1-16B|0|--size 16"
    "amqp|latency-1to1-16B-20k|20000|--size 16"
    "amqp|persistent-confirm-1to1-1KiB|0|--size 1024 --persistent --confirm 256"
    "amqp|transient-4to4-16B|0|--size 16 --producers 4 --consumers 4"
    "amqp|fanout-1to4-16B|0|--size 16 --fanout --consumers 4"
    "mqtt|mqtt-qos0-4to1-16B|0|--qos 0 --publishers 4 --subscribers 1 --size 16"
    "mqtt|mqtt-qos1-4to1-16B|0|--qos 1 --publishers 4 --subscribers 1 --size 16"
    "stomp|stomp-queue-1to1-16B|0|--destination queue --ack client-individual --prefetch 1000 --size 16 --persistent false"
    "stomp|stomp-queue-persistent-1to1-1KiB|0|--destination queue --ack client-individual --prefetch 1000 --size 1024 --persistent true"
    "stomp|stomp-topic-1to4-16B|0|--destination topic --consumers 4 --ack auto --size 16"
  ) ;;
  cpu) SCENARIOS=(
    "amqp|amqp-transient-1to1-16B-10k|10000|--size 16"
    "amqp|amqp-persistent-confirm-1to1-1KiB-5k|5000|--size 1024 --persistent --confirm 256"
    "amqp|amqp-fanout-1to4-16B-5k|5000|--size 16 --fanout --consumers 4"
    "amqp-raw|amqp-raw-transient-1to1-16B-10k|10000|--size 16"
    "stomp|stomp-queue-1to1-16B-5k|5000|--destination queue --ack client-individual --prefetch 1000 --size 16 --persistent false"
    "mqtt|mqtt-qos0-4to1-16B-20k|20000|--qos 0 --publishers 4 --subscribers 1 --size 16"
    "mqtt|mqtt-qos1-4to1-16B-4k|4000|--qos 1 --publishers 4 --subscribers 1 --size 16"
  ) ;;
  saturation) SCENARIOS=(
    "amqp-raw|amqp-raw-transient-1to1-16B|20000|--size 16 --send-buffer 65536"
    "mqtt|mqtt-qos0-4to1-16B|20000|--qos 0 --publishers 4 --subscribers 1 --size 16"
    "mqtt|mqtt-qos1-4to1-16B|4000|--qos 1 --publishers 4 --subscribers 1 --size 16"
  ) ;;
esac
if [[ $MODE == throughput ]]; then ONLY=${ONLY:-amqp mqtt stomp conns}; else ONLY=${ONLY:-all}; fi

# chosen PROTOCOL NAME: whether ONLY picks the scenario.
chosen() {
  local word
  for word in $ONLY; do
    if [[ $word == all || $word == "$1" || $2 == *"$word"* ]]; then return 0; fi
  done
  return 1
}

# measured NAME BROKER PROTOCOL: whether the broker runs the scenario (started, not
# skipped, listening on the scenario's protocol).
measured() {
  local glob
  for glob in $SKIP; do
    # shellcheck disable=SC2053
    if [[ "$1/$2" == $glob ]]; then return 1; fi
  done
  [[ -n "${PID[$2]:-}" && -n "${PORT[$(endpoint "$3")/$2]:-}" ]]
}

# endpoint PROTOCOL: the listener a generator subcommand talks to.
endpoint() {
  case $1 in amqp-raw) echo amqp ;; conns) echo mqtt ;; *) echo "$1" ;; esac
}

# Brokers the chosen scenarios need.
declare -A NEED
PICKABLE=("${SCENARIOS[@]}")
if [[ $MODE == throughput ]]; then PICKABLE+=("conns|conns|0|"); fi
for sc in "${PICKABLE[@]}"; do
  IFS='|' read -r proto name _ _ <<<"$sc"
  chosen "$proto" "$name" || continue
  for b in ${BROKERS[$proto]}; do
    if [[ " $ONLY_BROKERS " == *" $b "* ]]; then NEED[$b]=1; fi
  done
done
if ((${#NEED[@]} == 0)); then echo "ONLY=$ONLY picks no scenario of MODE=$MODE" >&2; exit 2; fi

# Every idle connection is a file descriptor in the bench and in the broker
# (which inherits this limit). Raise the soft limit as far as allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "MODE=$MODE, open-file limit $(ulimit -n); logs in $WORK" >&2
install_missing rabbitmq-server=rabbitmq-server mosquitto=mosquitto
if [[ ${BUILD:-1} != 0 ]]; then cargo build --release -q -p switchyard-server -p switchyard-bench; fi
# Copies, so that a rebuild during the run changes nothing in it.
mkdir -p "$WORK/bin"
SY_SOURCE=target/release/switchyard
cp target/release/switchyard target/release/switchyard-bench "$WORK/bin/"
SY_BIN=$WORK/bin/switchyard BENCH=$WORK/bin/switchyard-bench

if [[ -n "${NEED[switchyard]:-}" ]]; then start_switchyard "$SY_BIN" "$SWITCHYARD"; fi
if [[ -n "${NEED[mosquitto]:-}" ]]; then start_mosquitto; fi
if [[ -n "${NEED[rabbitmq]:-}" ]]; then start_rabbitmq "$RABBIT_ERL_ARGS"; fi
VERSIONS=$(broker_versions)
PINNED=""
for b in "${!PID[@]}"; do PINNED+="${PINNED:+, }$b: $(pinned_cpus "${PID[$b]}")"; done
echo "brokers: $VERSIONS; threads may run on CPUs $PINNED" >&2

# generator PROTOCOL BROKER FLAGS...: the generator's command line in GEN.
generator() {
  local proto=$1 broker=$2; shift 2
  local uri="amqp://guest:guest@127.0.0.1:${PORT[amqp/$broker]:-}/%2f"
  case $proto in
    amqp | amqp-raw) GEN=("$BENCH" "$proto" --uri "$uri") ;;
    mqtt) GEN=("$BENCH" mqtt --port "${PORT[mqtt/$broker]}" --username guest --password guest) ;;
    stomp) GEN=("$BENCH" stomp --port "${PORT[stomp/$broker]}" --login guest --passcode guest) ;;
    conns) GEN=("$BENCH" conns --port "${PORT[mqtt/$broker]}" --broker-pid "${PID[$broker]}"
      --username guest --password guest --timeout 300 "$@" --broker "$broker"); return ;;
  esac
  GEN+=(--broker "$broker" --duration "$SECS" "$@")
}

# per_producer RATE FLAGS...: a total rate split over the flags' producers.
per_producer() {
  local rate=$1 n=1; shift
  while (($#)); do
    if [[ $1 == --producers || $1 == --publishers ]]; then n=$2; fi
    shift
  done
  echo $((rate / n))
}

# measure NAME PROTOCOL REP BROKER RATE STEP FLAGS...: one generator run
# between two readings of the broker's CPU, once every broker is idle;
# appends it to $RAW (bench/lib/record.py) and prints `pass` or `fail: why`.
measure() {
  local name=$1 proto=$2 rep=$3 broker=$4 rate=$5 step=$6; shift 6
  local tag="$rep-$name-$broker${step:+-$step}" limit=$((SECS + 180)) b rc times
  local b0 b1 c0 c1 t0 t1
  mkdir -p "$WORK/logs"
  generator "$proto" "$broker" "$@"
  if ((rate)); then GEN+=(--rate "$(per_producer "$rate" "$@")"); fi
  if [[ $proto == conns ]]; then limit=330; fi
  # A saturation step that falls far behind is cut short: it failed anyway.
  if [[ $MODE == saturation ]]; then limit=$((SECS * 3 + 60)); fi
  for b in "${!PID[@]}"; do
    if ! wait_idle "${PID[$b]}"; then
      echo "   $b (pid ${PID[$b]}) is not running" >&2
      if [[ $b == "$broker" ]]; then return 1; fi
    fi
  done
  b0=$(cpu_ticks "${PID[$broker]}"); c0=$(core_busy_ticks "${BROKER_CORE:-}"); t0=$EPOCHREALTIME
  # `times` (not in a pipeline, whose subshell would have no children) gives
  # the shell's own CPU, then its waited-for children's: the generator's.
  { read -r rc; read -r _; read -r times; } < <(
    rc=0; "${PIN_GEN[@]}" timeout "$limit" "${GEN[@]}" >"$WORK/logs/$tag.out" 2>"$WORK/logs/$tag.err" || rc=$?
    echo "$rc"; times)
  b1=$(cpu_ticks "${PID[$broker]}") || return 1
  c1=$(core_busy_ticks "${BROKER_CORE:-}"); t1=$EPOCHREALTIME
  # Unpinned, the broker's core is not known: no other load is counted.
  if [[ -z "${BROKER_CORE:-}" ]]; then c0=$b0 c1=$b1; fi
  python3 bench/lib/record.py "$RAW" "$WORK/logs/$tag.out" "$WORK/logs/$tag.err" \
    mode="$MODE" proto="$proto" name="$name" rep="$rep" broker="$broker" rate="$rate" \
    ${step:+step=$step} exit="$rc" broker_ticks=$((b1 - b0)) core_ticks=$((c1 - c0)) hz="$HZ" \
    gen_times="$times" wall_s="$(awk "BEGIN {print $t1 - $t0}")" \
    p99_limit_ms="$([[ $MODE == saturation ]] && echo "$SAT_P99_MS" || echo 0)"
}

# saturate NAME PROTOCOL REP BROKER START FLAGS...: the saturation search.
# The rate doubles from START while runs pass (halves while they fail),
# then bisects between the highest passing and the lowest failing rate
# until they are within SAT_PRECISION %; rates are rounded to 100 msg/s.
saturate() {
  local name=$1 proto=$2 rep=$3 broker=$4 rate=$5; shift 5
  local lo=0 hi=0 step verdict begun=$SECONDS
  for step in $(seq "$SAT_STEPS"); do
    if ((SECONDS - begun >= SAT_BUDGET)); then
      echo "   search stopped: $SAT_BUDGET s spent" >&2; break
    fi
    echo "   step $step: $rate msg/s" >&2
    verdict=$(measure "$name" "$proto" "$rep" "$broker" "$rate" "$step" "$@") || return 0
    if [[ $verdict == pass ]]; then lo=$rate; else hi=$rate; fi
    if ((hi == 0)); then rate=$((lo * 2))
    elif ((lo == 0)); then rate=$((hi / 2))
    elif ((hi * 100 <= lo * (100 + SAT_PRECISION))); then break
    else rate=$(((lo + hi) / 2)); fi
    rate=$(((rate + 50) / 100 * 100))
    if ((rate < 100 || rate == lo || rate == hi)); then break; fi
  done
  echo "   $broker keeps up with $lo msg/s$( ((hi)) && echo ", not with $hi")" >&2
}

# Idle connections first and once, while every broker is fresh: a backlog
# left by a message scenario would make the memory baseline meaningless.
if [[ $MODE == throughput ]] && chosen conns conns; then
  for broker in ${BROKERS[conns]}; do
    measured conns "$broker" conns || continue
    echo "== conns $broker" >&2
    if [[ -n "${CONNS_SUBSCRIBE:-}" ]]; then
      measure "mqtt-conns-subscribed-$CONNS" conns 1 "$broker" 0 "" --connections "$CONNS" --subscribe >/dev/null || true
    else
      measure "mqtt-conns-$CONNS" conns 1 "$broker" 0 "" --connections "$CONNS" >/dev/null || true
    fi
  done
fi
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  for sc in "${SCENARIOS[@]}"; do
    IFS='|' read -r proto name rate flags <<<"$sc"
    chosen "$proto" "$name" || continue
    for broker in ${BROKERS[$proto]}; do
      measured "$name" "$broker" "$proto" || continue
      echo "== rep $rep $name $broker" >&2
      # shellcheck disable=SC2086
      if [[ $MODE == saturation ]]; then saturate "$name" "$proto" "$rep" "$broker" "$rate" $flags
      else measure "$name" "$proto" "$rep" "$broker" "$rate" "" $flags >/dev/null || true; fi
    done
  done
done

MACHINE="$(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | sort -u | paste -sd/)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load average $LOAD before the runs"
mkdir -p "$RESULTS"
if [[ $MODE == throughput ]]; then
  dropped=$(grep -c 'Outgoing messages are being dropped' "$WORK/mosquitto/log" 2>/dev/null || true)
  NOTES="Mosquitto logged 'Outgoing messages are being dropped' ${dropped:-0} times (its per-client queue, max_queued_messages, defaults to 1000 QoS 1/2 messages)."
  python3 -m venv "$WORK/venv" >/dev/null
  "$WORK/venv/bin/pip" install -q matplotlib >/dev/null
  "$WORK/venv/bin/python" bench/summarize.py "$RAW" "$RESULTS/$NAME.md" "$RESULTS/$NAME.png" \
    "$DATE" "$MACHINE" "$COMMAND (CONNS=$CONNS)" "$VERSIONS" "$NOTES"
else
  RABBIT_VM=""
  if [[ -n "${PID[rabbitmq]:-}" ]]; then
    RABBIT_VM=$(rabbit_eval '{erlang:system_info(schedulers_online), erlang:system_info(dirty_cpu_schedulers_online), erlang:system_info(dirty_io_schedulers)}.' | tr -d '{}')
  fi
  python3 bench/lib/report.py "$RAW" "$RESULTS/$NAME.md" mode="$MODE" date="$DATE" \
    command="$COMMAND" machine="$MACHINE" versions="$VERSIONS" pinned="$PINNED" \
    broker_core="${BROKER_CORE:-}" gen_core="$([[ $PIN == 1 ]] && echo "${GEN_CORE:-0}")" \
    rabbit_erl_args="$RABBIT_ERL_ARGS" rabbit_vm="$RABBIT_VM" secs="$SECS" reps="$REPS" \
    sat_p99_ms="$SAT_P99_MS" sat_steps="$SAT_STEPS" sat_budget="$SAT_BUDGET" sat_precision="$SAT_PRECISION"
fi
cp "$RAW" "$RESULTS/$NAME.jsonl"
echo "wrote $RESULTS/$NAME.md and $RESULTS/$NAME.jsonl" >&2
