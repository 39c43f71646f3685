"""Summarise compare.sh's raw JSON lines: medians per scenario and broker, a
markdown report (one table per protocol, ratios against Switchyard where it
ran, idle-connection memory) and a bar chart.

Usage: summarize.py RAW OUT_MD OUT_PNG DATE MACHINE COMMAND [VERSIONS] [NOTES]
"""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw, out_md, out_png, date, machine, command = sys.argv[1:7]
versions = sys.argv[7] if len(sys.argv) > 7 else ""
notes = sys.argv[8] if len(sys.argv) > 8 else ""

PROTOCOLS = {"amqp": "AMQP 0-9-1", "mqtt": "MQTT 3.1.1", "stomp": "STOMP 1.2"}
KNOWN = ["switchyard", "rabbitmq", "mosquitto"]
LABEL = {"switchyard": "Switchyard", "rabbitmq": "RabbitMQ", "mosquitto": "Mosquitto"}
COLOR = {"switchyard": "tab:blue", "rabbitmq": "tab:orange", "mosquitto": "tab:green"}

runs = defaultdict(list)  # (proto, name, broker) -> results
capped = set()  # (proto, name, broker) with a run whose drain hit the bench's limit
order = []  # (proto, name) in first-seen order
brokers_seen = []
for line in open(raw):
    r = json.loads(line)
    if not r.get("result"):  # the run failed: no figures
        continue
    proto = r.get("proto", "amqp")
    key = (proto, r["name"])
    broker = r["result"]["broker"]
    runs[(proto, r["name"], broker)].append(r["result"])
    if r.get("drain_capped"):
        capped.add((proto, r["name"], broker))
    if key not in order:
        order.append(key)
    if broker not in brokers_seen:
        brokers_seen.append(broker)
brokers = [b for b in KNOWN if b in brokers_seen] + sorted(b for b in brokers_seen if b not in KNOWN)
label = lambda b: LABEL.get(b, b)


def med(rs, k):
    xs = [x[k] for x in rs if x.get(k) is not None]
    return statistics.median(xs) if xs else float("nan")


def ran(proto, name):
    """Brokers with results for a scenario, in report order."""
    return [b for b in brokers if runs.get((proto, name, b))]


flows = [(p, n) for p, n in order if p != "conns"]
conns = [(p, n) for p, n in order if p == "conns"]
title = ", ".join(label(b) for b in brokers[:-1]) + (" and " if len(brokers) > 1 else "") + label(brokers[-1])

with open(out_md, "w") as f:
    f.write(f"# {title}, {date}\n\n")
    f.write(f"Machine: {machine}; load generator on the same machine.\n\n")
    if versions:
        f.write(f"Brokers: {versions}.\n\n")
    f.write(
        f"Command: `{command}` (medians of the repetitions; each repetition runs every "
        "scenario once per broker, alternating brokers; lost and dup add up all runs).\n\n"
    )
    for proto, title_p in PROTOCOLS.items():
        rows = [(p, n) for p, n in flows if p == proto]
        if not rows:
            continue
        f.write(f"## {title_p}\n\n")
        f.write("| scenario | broker | published/s | consumed/s | p50 µs | p99 µs | lost | dup | runs |\n")
        f.write("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
        for p, n in rows:
            for b in ran(p, n):
                rs = runs[(p, n, b)]
                mark = " †" if (p, n, b) in capped else ""
                f.write(
                    f"| {n} | {b} | {med(rs,'published_per_sec'):,.0f} | {med(rs,'consumed_per_sec'):,.0f} "
                    f"| {med(rs,'latency_p50_us'):,.0f} | {med(rs,'latency_p99_us'):,.0f} "
                    f"| {sum(x['lost'] for x in rs)}{mark} | {sum(x['duplicated'] for x in rs)} | {len(rs)} |\n"
                )
        f.write("\n")
    if capped:
        f.write(
            "† The bench stopped waiting for consumers 2 minutes after the producers stopped, while "
            "messages were still arriving: this count includes messages not delivered yet.\n\n"
        )
    ratios = [
        (p, n, b)
        for p, n in flows
        if "switchyard" in ran(p, n)
        for b in ran(p, n)
        if b != "switchyard"
    ]
    if ratios:
        f.write("## Switchyard against the others\n\n")
        f.write("| scenario | against | consumed/s ratio (Switchyard ÷ other) | p99 ratio |\n|---|---|---:|---:|\n")
        for p, n, b in ratios:
            sy, other = runs[(p, n, "switchyard")], runs[(p, n, b)]
            f.write(
                f"| {n} | {b} | {med(sy,'consumed_per_sec')/max(med(other,'consumed_per_sec'),1):.2f}× "
                f"| {med(sy,'latency_p99_us')/max(med(other,'latency_p99_us'),1):.2f}× |\n"
            )
        f.write("\n")
    if conns:
        f.write("## Idle MQTT connections\n\n")
        f.write(
            "Broker RSS (`VmRSS`) before the first connection and with all of them open "
            "(CONNACK received, keep-alive 600 s, 3 s to settle).\n\n"
        )
        f.write(
            "| scenario | broker | opened | failed | connects/s | RSS before MiB | RSS after MiB "
            "| bytes/connection | runs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        )
        mib = lambda v: f"{v / 1048576:,.1f}" if v == v else "?"
        for p, n in conns:
            for b in ran(p, n):
                rs = runs[(p, n, b)]
                f.write(
                    f"| {n} | {b} | {med(rs,'opened'):,.0f} | {med(rs,'failed'):,.0f} "
                    f"| {med(rs,'connects_per_sec'):,.0f} | {mib(med(rs,'rss_before_bytes'))} "
                    f"| {mib(med(rs,'rss_after_bytes'))} | {med(rs,'bytes_per_connection'):,.0f} | {len(rs)} |\n"
                )
        for p, n in conns:
            if "switchyard" in ran(p, n):
                for b in ran(p, n):
                    if b != "switchyard":
                        ratio = med(runs[(p, n, "switchyard")], "bytes_per_connection") / med(
                            runs[(p, n, b)], "bytes_per_connection"
                        )
                        f.write(f"\n{n}: Switchyard uses {ratio:.2f}× the memory per connection of {b}.\n")
        f.write("\n")
    if notes:
        f.write(f"Notes: {notes}\n")

panels = [(p, [n for q, n in flows if q == p]) for p in PROTOCOLS if any(q == p for q, _ in flows)]
if conns:
    panels.append(("conns", [n for _, n in conns]))
widths = [max(len(names), 1.5) for _, names in panels]
fig, axes = plt.subplots(
    1, len(panels), figsize=(3 + 1.6 * sum(widths), 4.5), gridspec_kw={"width_ratios": widths}, squeeze=False
)
for ax, (proto, names) in zip(axes[0], panels):
    metric = "bytes_per_connection" if proto == "conns" else "consumed_per_sec"
    present = [b for b in brokers if any(runs.get((proto, n, b)) for n in names)]
    width = 0.8 / max(len(present), 1)
    for i, b in enumerate(present):
        xs = [x + (i - (len(present) - 1) / 2) * width for x in range(len(names))]
        ys = [med(runs.get((proto, n, b), []), metric) for n in names]
        ax.bar(xs, [0 if y != y else y for y in ys], width, label=label(b), color=COLOR.get(b))
    ax.set_xticks(list(range(len(names))), names, rotation=20, ha="right", fontsize=7)
    if proto == "conns":
        ax.set_yscale("log")
        ax.set_title("idle MQTT connection", fontsize=10)
        ax.set_ylabel("broker RSS bytes per connection")
    else:
        ax.set_title(PROTOCOLS[proto], fontsize=10)
        ax.set_ylabel("consumed msg/s (median)")
    ax.legend(fontsize=7)
fig.suptitle(f"{title}, {date}")
fig.tight_layout()
fig.savefig(out_png, dpi=110)
