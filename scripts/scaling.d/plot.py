#!/usr/bin/env python3
"""Draws docs/design/scaling/*.png from the JSON lines scripts/bench-scaling wrote.

Usage: plot.py RESULTS.jsonl OUT_DIR   (matplotlib; scripts/bench-scaling installs it)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out = sys.argv[2]
cores = rows[0].get("machine_cores", "?") if rows else "?"


def save(fig, name):
    fig.tight_layout()
    fig.savefig(f"{out}/{name}", dpi=110)
    plt.close(fig)


# Vertical: one node, 1 and 2 workers.
workers = [r for r in rows if r["series"] == "workers"]
fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
xs = [str(r["workers"]) for r in workers]
a.bar(xs, [r["decisions_per_second"] / 1000 for r in workers], color="#2b6cb0")
a.set(title="one node, memory store", xlabel="workers", ylabel="thousand decisions/s")
b.bar(xs, [r["tollgate_cpu_us_per_decision"] for r in workers], color="#b7791f")
b.set(title="server CPU per decision", xlabel="workers", ylabel="µs")
fig.suptitle(f"Workers on a {cores}-core machine shared with the load generator", fontsize=9)
save(fig, "workers.png")

# Horizontal: 1 to 3 nodes per mode.
nodes = [r for r in rows if r["series"] == "nodes"]
modes = sorted({r["mode"] for r in nodes}, key=lambda m: ["memory local", "redis global", "redis leased",
                                                          "cluster global"].index(m))
fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
for mode in modes:
    pts = sorted((r for r in nodes if r["mode"] == mode), key=lambda r: r["nodes"])
    n = [r["nodes"] for r in pts]
    a.plot(n, [r["decisions_per_second"] / 1000 for r in pts], marker="o", label=mode)
    b.plot(n, [r["p99_us"] / 1000 for r in pts], marker="o", label=mode)
    c.plot(n, [r["tollgate_cpu_us_per_decision"] + r["redis_cpu_us_per_decision"] for r in pts], marker="o",
           label=mode)
a.set(title="decisions/s, all nodes", xlabel="nodes", ylabel="thousand/s", xticks=[1, 2, 3], ylim=(0, None))
b.set(title="p99, worst node", xlabel="nodes", ylabel="ms", xticks=[1, 2, 3], ylim=(0, None))
c.set(title="CPU per decision (Tollgate + Redis)", xlabel="nodes", ylabel="µs", xticks=[1, 2, 3], ylim=(0, None))
a.legend(fontsize=8)
fig.suptitle(f"Nodes on one {cores}-core machine (one worker and one load generator per node)", fontsize=9)
save(fig, "nodes.png")

# Keys: p99 while the table grows, and bytes per counter.
keys = sorted((r for r in rows if r["series"] == "keys"), key=lambda r: r["keys"])
fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
k = [r["keys"] for r in keys]
a.plot(k, [r["p99_us"] for r in keys], marker="o", label="p99")
a.plot(k, [r["p50_us"] for r in keys], marker="o", label="p50")
a.set(xscale="log", title="latency while the table grows", xlabel="distinct keys drawn", ylabel="µs", ylim=(0, None))
a.legend(fontsize=8)
b.plot(k, [r["store_bytes_per_key"] for r in keys], marker="o", color="#2f855a")
b.set(xscale="log", title="store memory per live counter", xlabel="live counters", ylabel="bytes", ylim=(0, None))
save(fig, "keys.png")
print(f"drew workers.png, nodes.png and keys.png into {out}")
