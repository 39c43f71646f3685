"""The markdown report of bench/compare.sh's cpu and saturation modes.

Usage: report.py RAW OUT_MD KEY=VALUE...

RAW holds bench/lib/record.py's lines. Keys: mode (cpu or saturation),
date, command, machine, versions, pinned (the CPUs each broker's threads may
use), broker_core and gen_core (empty: not pinned), rabbit_erl_args,
rabbit_vm (RabbitMQ's schedulers, dirty CPU and dirty I/O schedulers
online), secs, reps, sat_p99_ms, sat_steps, sat_budget, sat_precision.

One table per scenario, a row per broker: medians over the repetitions with
the range (min–max) beside them, and ratios of the medians against
Switchyard.
"""
import json
import statistics
import sys
from collections import defaultdict

raw, out_md = sys.argv[1:3]
kv = dict(a.split("=", 1) for a in sys.argv[3:])
mode = kv["mode"]
ORDER = ["switchyard", "rabbitmq", "mosquitto"]
LABEL = {"switchyard": "Switchyard", "rabbitmq": "RabbitMQ", "mosquitto": "Mosquitto"}

runs = defaultdict(list)  # (name, broker) -> record.py lines, in run order
names = []
for line in open(raw):
    r = json.loads(line)
    runs[(r["name"], r["broker"])].append(r)
    if r["name"] not in names:
        names.append(r["name"])


def brokers(name):
    seen = [b for n, b in runs if n == name]
    return [b for b in ORDER if b in seen] + sorted(b for b in seen if b not in ORDER)


def spread(xs, fmt):
    """'median (min–max)' of the numbers in xs, or '–'."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    med = fmt(statistics.median(xs))
    return med if len(xs) == 1 else f"{med} ({fmt(min(xs))}–{fmt(max(xs))})"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


def share(x, of):
    """Seconds of CPU over seconds of wall time, as % of a core."""
    return 100 * x / of if of else None


us = lambda x: f"{x:,.0f}"
cpu = lambda x: f"{x:.2f}"
pct = lambda x: f"{x:.0f}%"
count = lambda x: f"{x:,.0f}"
res = lambda r, k: r["result"][k] if r["result"] else None


def header(f, title, method):
    f.write(f"# {title}, {kv['date']}\n\n")
    f.write(f"Command: `{kv['command']}`\n\n")
    f.write(f"Machine: {kv['machine']}; the load generator (switchyard-bench) runs on the same machine.\n\n")
    f.write(f"Brokers: {kv['versions']}.\n\n")
    if kv.get("broker_core"):
        bc, gc = kv["broker_core"], kv["gen_core"]
        f.write(
            f"Pinning: every broker on core {bc} (started under `taskset -c {bc}`; RabbitMQ's beam.smp "
            f"threads also re-pinned with `taskset -a -cp {bc}`), the generator on core {gc} "
            f"(`taskset -c {gc}`). CPUs the brokers' threads may run on: {kv['pinned']}. "
        )
        if "rabbitmq" in kv["pinned"]:
            sched = kv.get("rabbit_vm", "").split(",")
            online = (
                f" (schedulers online {sched[0]}, dirty CPU schedulers online {sched[1]}, "
                f"dirty I/O schedulers {sched[2]})"
                if len(sched) == 3
                else ""
            )
            f.write(
                f"RabbitMQ's Erlang VM: `RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=\"{kv['rabbit_erl_args']}\"`"
                f"{online}; scheduler busy-waiting is off (`+sbwt none`, RabbitMQ 3.10's default). "
            )
        f.write(
            "Mosquitto is single-threaded; Switchyard's tokio runtime sizes itself to the CPUs it may use "
            "(one worker thread, plus its store's writer thread).\n\n"
        )
    else:
        f.write("Pinning: none (PIN=0).\n\n")
    f.write(method + "\n\n")


def cpu_report(f):
    header(
        f,
        "Broker CPU per message at fixed offered rates",
        f"Method: each scenario publishes at a fixed total rate for {kv['secs']} s, {kv['reps']} repetitions, "
        "brokers alternating within each repetition, every broker idle before a run. **CPU µs/msg** is the "
        "broker process's utime + stime (`/proc/<pid>/stat`, all threads, "
        "10 ms ticks) from just before the generator starts to just after it exits (so connection set-up, "
        "the drain and the teardown are in it), divided by the messages consumed (a fanout consumes every "
        "message once per queue). p50 / p99 are the generator's publish-to-consume latencies. Cells are "
        "`median (min–max)`; × Switchyard is the broker's median divided by Switchyard's. **Other load on the broker core**: the core's busy "
        "time (`/proc/stat`) not spent by the broker, as % of the run: anything above a few % means "
        "something else (a build, another broker's aftermath) competed with the broker.",
    )
    for name in names:
        f.write(f"## {name}\n\n")
        f.write(
            "| broker | CPU µs/msg | × Switchyard | p50 µs | p99 µs | p99 × Switchyard | consumed | lost "
            "| other load on broker core | runs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
        )
        sy = runs.get((name, "switchyard"), [])
        sy_cpu = median(r["cpu_us_per_msg"] for r in sy)
        sy_p99 = median(res(r, "latency_p99_us") for r in sy)
        for b in brokers(name):
            rs = runs[(name, b)]
            ok = [r for r in rs if r["result"]]
            failed = [r["why"] for r in rs if not r["result"]]
            lost = sum(r["result"]["lost"] for r in ok)
            capped = " †" if any(r["drain_capped"] for r in ok) else ""
            f.write(
                f"| {LABEL.get(b, b)} | {spread([r['cpu_us_per_msg'] for r in ok], cpu)} "
                f"| {ratio(median(r['cpu_us_per_msg'] for r in ok), sy_cpu)} "
                f"| {spread([res(r, 'latency_p50_us') for r in ok], us)} "
                f"| {spread([res(r, 'latency_p99_us') for r in ok], us)} "
                f"| {ratio(median(res(r, 'latency_p99_us') for r in ok), sy_p99)} "
                f"| {spread([res(r, 'consumed') for r in ok], count)} | {lost:,}{capped} "
                f"| {spread([share(r['other_cpu_on_broker_core_s'], r['wall_s']) for r in ok], pct)} "
                f"| {len(ok)}" + (f" ({len(failed)} failed: {'; '.join(failed)})" if failed else "") + " |\n"
            )
        f.write("\n")
    if any(r["drain_capped"] for rs in runs.values() for r in rs):
        f.write(
            "† The generator stopped waiting for consumers 2 minutes after the producers stopped while "
            "messages still arrived: lost includes messages not delivered yet.\n\n"
        )


def searches(rs):
    """A broker's runs of one scenario split into one list per repetition."""
    by_rep = defaultdict(list)
    for r in rs:
        by_rep[r["rep"]].append(r)
    return [by_rep[k] for k in sorted(by_rep)]


def step_text(r):
    mark = "✓" if r["pass"] else f"✗ ({r['why']})"
    return f"{r['rate']:,} {mark}"


def saturation_report(f):
    header(
        f,
        "Saturation: the highest offered rate the consumers keep up with",
        f"Method: a search per scenario, broker and repetition ({kv['reps']} repetitions, brokers alternating). "
        f"Each step publishes at a fixed total rate for {kv['secs']} s; it **passes** when nothing is lost "
        "(every message consumed, the drain included), the generator really offered at least 95% of the rate "
        f"and the p99 publish-to-consume latency is under {kv['sat_p99_ms']} ms. The rate doubles from the "
        "scenario's start while steps pass (halves while they fail), then bisects between the highest passing "
        f"and the lowest failing rate until they are within {kv['sat_precision']}%; at most "
        f"{kv['sat_steps']} steps and {kv['sat_budget']} s a search, rates rounded to 100 msg/s. **Sustained** "
        "is the highest passing rate of a search (cells: `median (min–max)` over repetitions); **fails at** "
        "the lowest failing one (≥: a search ran out of steps or time before a step failed, so the rate is a "
        "floor); × Switchyard is the broker's median divided by Switchyard's. Core use is CPU seconds over the run's wall time (connection set-up and "
        "drain included) as % of one core: a generator near 100% at the failing rate means the generator, "
        "not the broker, was the limit.",
    )
    for name in names:
        f.write(f"## {name}\n\n")
        f.write(
            "| broker | sustained msg/s | × Switchyard | fails at msg/s | p99 µs at sustained "
            "| broker CPU µs/msg at sustained | broker core use at sustained | broker core use at failing "
            "| generator core use at failing | searches |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        )
        best = {}
        rows = []
        for b in brokers(name):
            passing, failing = [], []
            for search in searches(runs[(name, b)]):
                ok = [r for r in search if r["pass"]]
                bad = [r for r in search if not r["pass"] and (not ok or r["rate"] > max(x["rate"] for x in ok))]
                passing.append(max(ok, key=lambda r: r["rate"]) if ok else None)
                failing.append(min(bad, key=lambda r: r["rate"]) if bad else None)
            best[b] = median(r["rate"] if r else 0 for r in passing)
            rows.append((b, passing, failing))
        for b, passing, failing in rows:
            p = [r for r in passing if r]
            q = [r for r in failing if r]
            # A search that never failed found a floor, not the ceiling.
            floor = "≥ " if any(r is None for r in failing) else ""
            f.write(
                f"| {LABEL.get(b, b)} | {floor}{spread([r['rate'] if r else 0 for r in passing], count)} "
                f"| {ratio(best[b], best.get('switchyard'))} | {spread([r['rate'] for r in q], count)} "
                f"| {spread([res(r, 'latency_p99_us') for r in p], us)} "
                f"| {spread([r['cpu_us_per_msg'] for r in p], cpu)} "
                f"| {spread([share(r['broker_cpu_s'], r['wall_s']) for r in p], pct)} "
                f"| {spread([share(r['broker_cpu_s'], r['wall_s']) for r in q], pct)} "
                f"| {spread([share(r['gen_cpu_s'], r['wall_s']) for r in q], pct)} | {len(passing)} |\n"
            )
        f.write("\nSteps (offered msg/s in run order):\n\n")
        for b in brokers(name):
            for i, search in enumerate(searches(runs[(name, b)]), 1):
                f.write(f"- {LABEL.get(b, b)}, repetition {i}: {' · '.join(step_text(r) for r in search)}\n")
        f.write("\n")


with open(out_md, "w") as f:
    (cpu_report if mode == "cpu" else saturation_report)(f)
