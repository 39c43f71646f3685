"""One switchyard-bench run as a JSON line of bench/compare.sh's raw file.

Usage: record.py RAW BENCH_STDOUT BENCH_STDERR KEY=VALUE...

Keys (all strings from the shell): mode, proto, name, rep, broker, rate (the
offered total in msg/s, 0 for as fast as possible), step (saturation search
step, optional), exit (the generator's exit status), broker_ticks (broker
CPU ticks during the run), core_ticks (ticks the broker's core was busy,
whoever ran there), hz (ticks a second), gen_times (the shell's `times`
line for the generator: user and system CPU), wall_s, p99_limit_ms.

Appends {"mode", "proto", "name", "rep", "broker", "rate", "exit", "pass",
"why", "broker_cpu_s", "cpu_us_per_msg", "other_cpu_on_broker_core_s",
"gen_cpu_s", "wall_s", "drain_capped", "result": <the generator's JSON line
or null>} to RAW and prints `pass` or `fail: <why>` on stdout.

A run passes when the generator reported, lost nothing, offered at least 95%
of the rate asked for, every message was consumed and p99 latency stayed
under p99_limit_ms: the broker kept up.
"""
import json
import re
import sys

raw, out_path, err_path = sys.argv[1:4]
kv = dict(a.split("=", 1) for a in sys.argv[4:])


def seconds(times_line):
    """'0m1.250s 0m0.310s' (user, system) -> 1.56."""
    return sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", times_line))


result = None
with open(out_path) as f:
    for line in f:
        if line.startswith("{"):
            result = json.loads(line)
with open(err_path) as f:
    err = f.read()

hz = int(kv["hz"])
broker_s = int(kv["broker_ticks"]) / hz
rate = int(kv.get("rate", 0))
code = int(kv["exit"])
why = []
if result is None or code not in (0, 3):
    why.append("timed out" if code == 124 else f"exit {code}, no result")
else:
    if "published" not in result:  # the idle-connection scenario
        if result["failed"] or result["opened"] < result["connections"]:
            why.append(f"opened {result['opened']} of {result['connections']}")
    # (A fanout consumes every message once per queue: more than published.)
    elif result["lost"] or result["consumed"] < result["published"]:
        why.append(f"lost {result['lost']}")
    if rate and result["published_per_sec"] < 0.95 * rate:
        why.append(f"offered only {result['published_per_sec']:,.0f}/s")
    limit = float(kv.get("p99_limit_ms", 0))
    if limit and result["latency_p99_us"] >= limit * 1000:
        why.append(f"p99 {result['latency_p99_us'] / 1000:,.0f} ms")
consumed = result.get("consumed", 0) if result else 0
line = {
    "mode": kv["mode"],
    "proto": kv["proto"],
    "name": kv["name"],
    "rep": int(kv["rep"]),
    "broker": kv["broker"],
    "rate": rate,
    "exit": code,
    "pass": not why,
    "why": "; ".join(why),
    "broker_cpu_s": broker_s,
    "cpu_us_per_msg": broker_s * 1e6 / consumed if consumed else None,
    "other_cpu_on_broker_core_s": max(int(kv["core_ticks"]) / hz - broker_s, 0.0),
    "gen_cpu_s": seconds(kv.get("gen_times", "")),
    "wall_s": float(kv["wall_s"]),
    # The bench stops waiting for consumers after 2 min even while messages
    # still arrive; then "lost" includes messages merely not delivered yet.
    "drain_capped": "drain gave up" in err,
    "result": result,
}
if "step" in kv:
    line["step"] = int(kv["step"])
with open(raw, "a") as f:
    f.write(json.dumps(line) + "\n")

if consumed:
    figures = (
        f"{consumed} consumed, broker {line['cpu_us_per_msg']:.2f} µs/msg ({broker_s:.2f} s CPU), "
        f"p50 {result['latency_p50_us']:,.0f} µs p99 {result['latency_p99_us']:,.0f} µs"
    )
elif result and "opened" in result:
    figures = f"{result['opened']} connections opened, broker {broker_s:.2f} s CPU"
else:
    figures = f"nothing consumed, broker {broker_s:.2f} s CPU"
print(
    f"   {kv['broker']}: {figures}, "
    f"generator {line['gen_cpu_s']:.2f} s CPU in {line['wall_s']:.1f} s"
    + (f"; {line['why']}" if why else ""),
    file=sys.stderr,
)
print("pass" if not why else f"fail: {line['why']}")
