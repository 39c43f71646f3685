"""Summarise compare.sh's raw JSON lines: medians per scenario and broker,
ratios Switchyard/RabbitMQ, a markdown table and a bar chart."""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw, out_md, out_png, date, machine, command = sys.argv[1:7]
runs = defaultdict(list)
for line in open(raw):
    r = json.loads(line)
    runs[(r["name"], r["result"]["broker"])].append(r["result"])

names = sorted({n for n, _ in runs}, key=lambda n: list(dict.fromkeys(n for n, _ in runs)).index(n))
med = lambda rs, k: statistics.median(x[k] for x in rs) if rs else float("nan")
rows = []
for n in names:
    sy, rb = runs.get((n, "switchyard"), []), runs.get((n, "rabbitmq"), [])
    rows.append((n, sy, rb))

with open(out_md, "w") as f:
    f.write(f"# Switchyard vs RabbitMQ, {date}\n\n")
    f.write(f"Machine: {machine}; load generator on the same machine.\n\n")
    f.write(f"Command: `{command}` (medians of the repetitions; each run alternates brokers).\n\n")
    f.write("| scenario | broker | published/s | consumed/s | p50 µs | p99 µs | lost | dup | runs |\n")
    f.write("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    for n, sy, rb in rows:
        for b, rs in (("switchyard", sy), ("rabbitmq", rb)):
            if not rs:
                continue
            f.write(
                f"| {n} | {b} | {med(rs,'published_per_sec'):,.0f} | {med(rs,'consumed_per_sec'):,.0f} "
                f"| {med(rs,'latency_p50_us'):,.0f} | {med(rs,'latency_p99_us'):,.0f} "
                f"| {sum(x['lost'] for x in rs)} | {sum(x['duplicated'] for x in rs)} | {len(rs)} |\n"
            )
    f.write("\n| scenario | consumed/s ratio (Switchyard ÷ RabbitMQ) | p99 ratio |\n|---|---:|---:|\n")
    for n, sy, rb in rows:
        if sy and rb:
            f.write(
                f"| {n} | {med(sy,'consumed_per_sec')/max(med(rb,'consumed_per_sec'),1):.2f}× "
                f"| {med(sy,'latency_p99_us')/max(med(rb,'latency_p99_us'),1):.2f}× |\n"
            )

fig, ax = plt.subplots(figsize=(9, 4))
xs = range(len(rows))
ax.bar([x - 0.2 for x in xs], [med(sy, "consumed_per_sec") for _, sy, _ in rows], 0.4, label="Switchyard")
ax.bar([x + 0.2 for x in xs], [med(rb, "consumed_per_sec") for _, _, rb in rows], 0.4, label="RabbitMQ")
ax.set_xticks(list(xs), [n for n, _, _ in rows], rotation=15, fontsize=8)
ax.set_ylabel("consumed msg/s (median)")
ax.set_title(f"AMQP throughput, {date}")
ax.legend()
fig.tight_layout()
fig.savefig(out_png, dpi=110)
