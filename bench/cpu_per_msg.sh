#!/usr/bin/env bash
# Broker CPU per message at a fixed offered rate, for two Switchyard
# binaries side by side (e.g. before and after a change), alternating runs.
# The broker is pinned to core 1 and the load generator to core 0; the
# broker's CPU is read from /proc/<pid>/stat around each run, so the figure
# is what the broker spent, not the generator.
#
# Usage: bench/cpu_per_msg.sh LABEL_A BIN_A LABEL_B BIN_B [REPS] [SECONDS]
#   ONLY=transient   run only the scenarios whose name contains this
#   BUILD=0          use target/release/switchyard-bench as it is
# Prints one markdown row per run and a summary (median per scenario).
# Starts each broker itself on a fresh data directory and stops exactly the
# process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib/brokers.sh
source bench/lib/brokers.sh
LABEL_A=$1 BIN_A=$2 LABEL_B=$3 BIN_B=$4
REPS=${5:-3}
SECS=${6:-10}
BENCH=target/release/switchyard-bench
[[ ${BUILD:-1} == 0 ]] || cargo build --release -q -p switchyard-bench
HZ=$(getconf CLK_TCK)
PORT=56790
WORK=$(mktemp -d /tmp/switchyard-cpu.XXXXXX)
# Built-in defaults for both binaries (an older one may not know every key
# of config/switchyard.toml).
: >"$WORK/empty.toml"
BROKER_PID=""
trap '[[ -n "$BROKER_PID" ]] && kill "$BROKER_PID" 2>/dev/null || true' EXIT

# name | bench arguments
SCENARIOS=(
  "amqp transient 1→1 16 B @10k/s|amqp --rate 10000"
  "amqp persistent+confirms 1→1 1 KiB @5k/s|amqp --rate 5000 --persistent --confirm 256 --size 1024"
  "amqp fanout 1→4 16 B @5k/s|amqp --rate 5000 --fanout --consumers 4"
  "amqp-raw transient 1→1 16 B flat out|amqp-raw"
  "amqp-raw transient 1→1 16 B @100k/s|amqp-raw --rate 100000"
)

run_one() { # label bin scenario-args
  local label=$1 bin=$2 args=$3 dir
  dir=$(mktemp -d "$WORK/data.XXXX")
  taskset -c 1 "$bin" serve --config "$WORK/empty.toml" --data-dir "$dir" --amqp "127.0.0.1:$PORT" --mqtt none \
    --stomp none --web-stomp none --web-mqtt none >"$dir.log" 2>&1 &
  BROKER_PID=$!
  wait_port "$PORT"
  local before after out consumed
  before=$(cpu_ticks "$BROKER_PID")
  # shellcheck disable=SC2086
  out=$(taskset -c 0 "$BENCH" $args --duration "$SECS" --broker "$label" \
    --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" 2>/dev/null | tail -1)
  after=$(cpu_ticks "$BROKER_PID")
  kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
  consumed=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["consumed"])')
  python3 - "$label" "$before" "$after" "$consumed" "$HZ" "$out" <<'EOF'
import json, sys
label, before, after, consumed, hz, out = sys.argv[1:]
r = json.loads(out)
us = (int(after) - int(before)) / int(hz) * 1e6 / max(int(consumed), 1)
print(f"{label}\t{us:.2f}\t{r['latency_p50_us']:.0f}\t{r['latency_p99_us']:.0f}\t{r['consumed']}")
EOF
}

echo "| scenario | binary | broker µs CPU/msg | p50 µs | p99 µs | consumed |"
# (flat-out rows: consumed in the run is the throughput; latency there is
# queueing delay)
echo "|---|---|---:|---:|---:|---:|"
declare -A ALL
for s in "${SCENARIOS[@]}"; do
  name=${s%%|*} args=${s#*|}
  [[ -n "${ONLY:-}" && "$name" != *"$ONLY"* ]] && continue
  for _ in $(seq "$REPS"); do
    for pair in "$LABEL_A|$BIN_A" "$LABEL_B|$BIN_B"; do
      label=${pair%%|*} bin=${pair#*|}
      line=$(run_one "$label" "$bin" "$args")
      IFS=$'\t' read -r l us p50 p99 n <<<"$line"
      echo "| $name | $l | $us | $p50 | $p99 | $n |"
      ALL["$name|$l"]+="$us "
    done
  done
done
echo
echo "median broker µs CPU/msg:"
for key in "${!ALL[@]}"; do
  echo "$key: $(echo "${ALL[$key]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done | sort
