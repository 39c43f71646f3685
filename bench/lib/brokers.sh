# Starting, watching and stopping the brokers bench scripts measure.
# Sourced (not run) by bench/compare.sh and bench/cpu_per_msg.sh.
#
# Every broker listens on 127.0.0.1 only, on a port nobody used when it
# started, with a fresh data directory under $WORK; stop_brokers stops only
# the processes start_* started (by PID; RabbitMQ through rabbitmqctl and its
# own node name and epmd port).
#
# Globals the caller provides: WORK (a fresh temp dir), PORT and PID
# (associative arrays: PORT[<protocol>/<broker>], PID[<broker>]), PIDS (an
# array); pin_cores sets PIN_BROKER and PIN_GEN.

# pin_cores BROKER_CORE GEN_CORE: the command prefixes that pin brokers and
# load generators to their core (`taskset -c N`), none for an empty core.
pin_cores() {
  BROKER_CORE=$1 PIN_BROKER=() PIN_GEN=()
  if [[ -n "$1" ]]; then PIN_BROKER=(taskset -c "$1"); fi
  if [[ -n "$2" ]]; then PIN_GEN=(taskset -c "$2"); fi
}

# cpu_ticks PID: user + system CPU of a process (all its threads, past and
# present), in clock ticks (getconf CLK_TCK a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# core_busy_ticks CORE: ticks core CORE spent not idle since boot (user,
# nice, system, irq, softirq, steal), whoever ran there.
core_busy_ticks() {
  awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# pinned_cpus PID: the CPUs the threads of PID may run on (one line each
# distinct list, e.g. `1`).
pinned_cpus() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^Cpus_allowed_list/ {print $2}' | sort -u | paste -sd' '
}

# free_ports N: N distinct TCP ports on 127.0.0.1 that nothing listens on
# (the kernel picks them from its ephemeral range), one a line.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
}

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
    a=$(cpu_ticks "$1" 2>/dev/null) || return 1
    sleep 0.5
    b=$(cpu_ticks "$1" 2>/dev/null) || return 1
    if (((b - a) * 10 < hz)); then return 0; fi
  done
  echo "pid $1 still busy after 3 min" >&2
}

# install_missing COMMAND=PACKAGE...: install from Debian the packages whose
# command is missing. Their own services stay off (a policy-rc.d is added
# for the install if there is none): the scripts run their own instances.
install_missing() {
  local missing=() pair added=""
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
  done
  ((${#missing[@]})) || return 0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    added=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  if [[ -n "$added" ]]; then rm -f /usr/sbin/policy-rc.d; fi
}

# start_switchyard BIN PROTOCOLS: Switchyard with a fresh data dir, a
# listener on an ephemeral port for each of PROTOCOLS that its `serve` has a
# flag for, its other listeners off. Sets PID[switchyard] and, from its ready
# file, PORT[<protocol>/switchyard].
start_switchyard() {
  local bin=$1 protocols=$2 flags=() proto addr
  mkdir -p "$WORK/sy"
  for proto in amqp mqtt stomp web-stomp web-mqtt; do
    if "$bin" serve --help | grep -q -- "--$proto "; then
      if [[ " $protocols " == *" $proto "* ]]; then flags+=("--$proto" 127.0.0.1:0)
      else flags+=("--$proto" none); fi
    fi
  done
  "${PIN_BROKER[@]}" "$bin" serve "${flags[@]}" --data-dir "$WORK/sy/data" \
    --ready-file "$WORK/sy/ready" >"$WORK/sy/log" 2>&1 &
  PID[switchyard]=$!; PIDS+=("${PID[switchyard]}")
  for _ in $(seq 100); do [[ -s "$WORK/sy/ready" ]] && break; sleep 0.1; done
  while IFS='=' read -r proto addr; do
    if [[ $proto =~ ^[a-z]+$ ]]; then PORT[$proto/switchyard]=${addr##*:}; fi
  done <"$WORK/sy/ready"
}

# start_mosquitto: Mosquitto with its own config, no persistence. Sets
# PID[mosquitto] and PORT[mqtt/mosquitto].
start_mosquitto() {
  local port
  port=$(free_ports 1)
  mkdir -p "$WORK/mosquitto"
  cat >"$WORK/mosquitto/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest stderr
EOF
  "${PIN_BROKER[@]}" mosquitto -c "$WORK/mosquitto/mosquitto.conf" 2>"$WORK/mosquitto/log" &
  PID[mosquitto]=$!; PIDS+=("${PID[mosquitto]}")
  PORT[mqtt/mosquitto]=$port
  wait_port "$port"
}

# start_rabbitmq [ERL_ARGS]: RabbitMQ with its own node name, epmd, data dir
# and config, the MQTT (guest/guest, no anonymous clients) and STOMP plugins
# on. ERL_ARGS go to the Erlang VM (RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS).
# Sets RABBIT_NODE, PID[rabbitmq] (beam.smp) and PORT[amqp|mqtt|stomp/rabbitmq].
start_rabbitmq() {
  local amqp mqtt stomp dist
  { read -r amqp; read -r mqtt; read -r stomp; read -r dist; read -r RABBIT_EPMD; } < <(free_ports 5)
  RABBIT_NODE=switchyard-bench-$$@localhost
  export RABBITMQ_NODENAME=$RABBIT_NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$amqp RABBITMQ_MNESIA_BASE=$WORK/rabbit/mnesia \
    RABBITMQ_LOG_BASE=$WORK/rabbit/log RABBITMQ_DIST_PORT=$dist \
    RABBITMQ_ENABLED_PLUGINS_FILE=$WORK/rabbit/enabled_plugins \
    RABBITMQ_CONFIG_FILE=$WORK/rabbit/rabbitmq.conf \
    RABBITMQ_CONF_ENV_FILE=$WORK/rabbit/rabbitmq-env.conf \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${1:-}" \
    ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$RABBIT_EPMD
  export ERL_CRASH_DUMP=$WORK/rabbit/erl_crash.dump
  mkdir -p "$WORK/rabbit/mnesia" "$WORK/rabbit/log"
  echo '[rabbitmq_mqtt,rabbitmq_stomp].' >"$WORK/rabbit/enabled_plugins"
  cat >"$WORK/rabbit/rabbitmq.conf" <<EOF
mqtt.listeners.tcp.default = 127.0.0.1:$mqtt
mqtt.allow_anonymous = false
mqtt.default_user = guest
mqtt.default_pass = guest
mqtt.vhost = /
stomp.listeners.tcp.default = 127.0.0.1:$stomp
EOF
  # Debian's wrapper starts the node through su, whose PAM session resets the
  # open-file limit to 1024; the node's env file (sourced by the rabbitmq user
  # just before starting Erlang) raises it again.
  echo "ulimit -n $(ulimit -n)" >"$WORK/rabbit/rabbitmq-env.conf"
  # Debian's rabbitmq-server drops to the rabbitmq user: let it use its dirs.
  chmod 755 "$WORK"
  if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$WORK/rabbit"; fi
  "${PIN_BROKER[@]}" rabbitmq-server >"$WORK/rabbit/stdout" 2>&1 &
  PIDS+=($!); RABBIT_STARTED=1
  # await_startup fails at once while the Erlang node is not up yet (with a
  # rabbitmq.conf to translate, that takes a few seconds): retry, then once
  # more loudly.
  for _ in $(seq 30); do
    rabbitmqctl -n "$RABBIT_NODE" await_startup --timeout 120 >/dev/null 2>&1 && break
    sleep 2
  done
  rabbitmqctl -n "$RABBIT_NODE" await_startup --timeout 120 >/dev/null
  PID[rabbitmq]=$(rabbit_eval 'os:getpid().' | tr -d '"')
  # Threads started before the shell's affinity was inherited (none expected)
  # follow it too.
  if [[ -n "$BROKER_CORE" ]]; then taskset -a -cp "$BROKER_CORE" "${PID[rabbitmq]}" >/dev/null; fi
  PORT[amqp/rabbitmq]=$amqp PORT[mqtt/rabbitmq]=$mqtt PORT[stomp/rabbitmq]=$stomp
  wait_port "$mqtt"; wait_port "$stomp"
}

rabbit_eval() { rabbitmqctl -n "$RABBIT_NODE" eval "$1"; }

# broker_versions: one line naming every started broker and its version.
broker_versions() {
  local v=()
  if [[ -n "${PID[switchyard]:-}" ]]; then
    v+=("Switchyard $("$SY_BIN" --version | awk '{print $2}') (git $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates protocols || echo '+uncommitted changes'), binary built $(date -u -r "$SY_SOURCE" '+%Y-%m-%d %H:%M UTC'))")
  fi
  if [[ -n "${PID[rabbitmq]:-}" ]]; then
    v+=("RabbitMQ $(rabbitmqctl -n "$RABBIT_NODE" version) (Erlang/OTP $(rabbit_eval 'erlang:system_info(otp_release).' | tr -d '"'))")
  fi
  if [[ -n "${PID[mosquitto]:-}" ]]; then
    v+=("Mosquitto $( (mosquitto -h || true) | sed -n 's/^mosquitto version //p')")
  fi
  local IFS=';'; echo "${v[*]}" | sed 's/;/, /g'
}

# stop_brokers: stop what start_* started, RabbitMQ first and politely.
stop_brokers() {
  if [[ -n "${RABBIT_STARTED:-}" ]]; then
    rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 || true
    # stop returns before the VM has exited: give it 30 s.
    for _ in $(seq 300); do
      [[ -n "${PID[rabbitmq]:-}" && -e /proc/${PID[rabbitmq]} ]] || break
      sleep 0.1
    done
    # The node started an epmd of its own on $RABBIT_EPMD; nothing else uses it.
    epmd -port "$RABBIT_EPMD" -kill >/dev/null 2>&1 || true
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
