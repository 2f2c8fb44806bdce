#!/usr/bin/env python3
"""The accuracy runs behind scripts/bench-accuracy.

Three Tollgate nodes share a Redis Cluster of three masters with a replica each. Every
connection to the Cluster passes a fault proxy (tollgate-testkit's `fault_proxies`
example): each Redis node announces its proxy's port, so clients and replicas reach it
through the proxy, which can cut one Tollgate process off while the others pass.

One domain holds three limits of `LIMIT` per minute on `KEYS` keys, one per consistency mode
(`local`, `global`, `leased`), all with `on_store_error: deny`, so that what the store loses
shows as over-admission and is not hidden by failing open. Each run lasts one calendar
minute (one fixed window per key) and loads all three modes at once: per node and mode one
`tollgate bench` in an open loop (a fixed rate, 1.4 times the limit in all), each
writing its own log of every decision (`--decision-log`). The failures:

- steady: nothing happens;
- failover: `CLUSTER FAILOVER` on the replica of the domain's master (a manual failover,
  which waits for the replica to catch up), later `kill -9` of the master that serves the
  domain then, so the Cluster promotes its replica after `cluster-node-timeout`;
- rolling: each Tollgate node in turn stopped (SIGTERM) and started again;
- partition: one Tollgate node cut off from every Redis node by the proxy, later healed.

Counted from the generators' logs alone, per mode: admitted / limit over the windows, the
worst window's overshoot (admitted - limit, for decisions whose send and answer both lie in
the window), the share of requests answered within the deadline, and the share not
answered at all. Every address is loopback; every run is bounded in time and count.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict

MODES = ("local", "global", "leased")
SCENARIOS = ("steady", "failover", "rolling", "partition")
NODES = 3
KEYS = 8
RATE = 400  # per node and mode, requests per second: 1 200/s per mode, 150/s per key
# Per minute and key: the offered 150/s reach it 40 s into the minute, so every failure
# below strikes while counters are still being written (what a failover can lose), and
# what was lost or over-admitted shows in the 17 s of demand after.
LIMIT = 6000
DEADLINE_MS = 100  # twice the store's 50 ms deadline
RUN_SECONDS = 57  # inside one calendar minute, started half a second after it begins
NODE_TIMEOUT_MS = 1000

POLICY = "domain: accuracy\ndescriptors:\n" + "".join(
    f"  - key: {mode}_key\n"
    f"    rate_limit: {{unit: minute, requests_per_unit: {LIMIT}, consistency: {mode}, on_store_error: deny}}\n"
    for mode in MODES)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port(taken):
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(1000):
        port = random.randint(20000, 45000)
        if port in taken or port + 10000 in taken:
            continue
        ok = True
        for p in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            taken.update((port, port + 10000))
            return port
    sys.exit("no free port pair for a Redis Cluster node")


def wait_until(what, probe, ceiling=30):
    end = time.monotonic() + ceiling
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.05)
    sys.exit(f"{what} did not happen within {ceiling} s")


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=10).stdout


def healthy(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class Cluster:
    """Six redis-server processes behind fault proxies, made a Cluster of 3 + 3."""

    def __init__(self, work, proxies_bin):
        taken = set()
        self.work = work
        self.ports = [free_cluster_port(taken) for _ in range(6)]
        self.proxies = subprocess.Popen([proxies_bin, *map(str, self.ports)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.proxy_of = {}
        for line in self.proxies.stdout:
            if line.strip() == "ready":
                break
            port, proxy = map(int, line.split())
            self.proxy_of[port] = proxy
        self.port_of = {v: k for k, v in self.proxy_of.items()}
        self.procs = {}
        for port in self.ports:
            self.start(port)
        for port in self.ports:
            wait_until(f"redis on {port}", lambda: cli(port, "ping").strip() == "PONG")
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        wait_until("cluster_state:ok everywhere", lambda: all(
            "cluster_state:ok" in cli(p, "cluster", "info") for p in self.ports))
        wait_until("every replica in sync", lambda: sum(
            "master_link_status:up" in cli(p, "info", "replication") for p in self.ports) == 3)

    def start(self, port):
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", self.work, "--cluster-enabled", "yes",
               "--cluster-config-file", f"{self.work}/nodes-{port}.conf",
               "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
               "--cluster-announce-ip", "127.0.0.1",
               "--cluster-announce-port", str(self.proxy_of[port]),
               "--cluster-announce-bus-port", str(port + 10000)]
        self.procs[port] = subprocess.Popen(cmd, stdout=open(f"{self.work}/redis-{port}.log", "ab"),
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def url(self):
        return "redis+cluster://" + ",".join(f"127.0.0.1:{self.proxy_of[p]}" for p in self.ports)

    def proxy(self, command):
        self.proxies.stdin.write(command + "\n")
        self.proxies.stdin.flush()
        answer = self.proxies.stdout.readline().strip()
        if answer != "ok":
            sys.exit(f"fault proxies: '{command}' -> {answer}")

    def topology(self, via):
        """{real port: (role, master's real port or None)} from CLUSTER NODES."""
        nodes, ids = {}, {}
        for line in cli(via, "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            announced = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            ids[fields[0]] = self.port_of.get(announced)
            nodes[fields[0]] = (fields[2], fields[3])
        out = {}
        for node_id, (flags, master) in nodes.items():
            role = "master" if "master" in flags and "fail" not in flags else (
                "replica" if "slave" in flags else "failed")
            out[ids[node_id]] = (role, ids.get(master))
        return out

    def domain_master(self):
        """The real port of the master holding the domain's counters (its hash tag)."""
        for port in self.alive():
            if "role:master" not in cli(port, "info", "replication"):
                continue
            found = cli(port, "--scan", "--pattern", "tollgate:{*").split()
            if found:
                slot = cli(port, "cluster", "keyslot", found[0]).strip()
                return port, slot
        sys.exit("no master holds the domain's counters")

    def alive(self):
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def replica_of(self, master):
        for port, (role, of) in self.topology(self.alive()[0]).items():
            if role == "replica" and of == master and port in self.alive():
                return port
        sys.exit(f"no live replica of {master}")

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(timeout=10)
        self.proxies.stdin.close()
        self.proxies.wait(timeout=10)


class Nodes:
    def __init__(self, tg, work, store):
        self.tg, self.work, self.store = tg, work, store
        self.ports = [free_port() for _ in range(NODES)]
        self.data = [tempfile.mkdtemp(dir=work) for _ in range(NODES)]
        self.procs = [None] * NODES
        for i in range(NODES):
            self.start(i)

    def start(self, i):
        cmd = [self.tg, "serve", "--http-addr", f"127.0.0.1:{self.ports[i]}", "--grpc-addr", "127.0.0.1:0",
               "--admin-addr", "127.0.0.1:0", "--data-dir", self.data[i], "--policies", f"{self.work}/policies",
               "--store", self.store, "--nodes", str(NODES), "--log-format", "json"]
        self.procs[i] = subprocess.Popen(cmd, stdout=open(f"{self.work}/tollgate-{i}.log", "ab"),
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(f"tollgate node {i}", lambda: healthy(self.ports[i]))

    def restart(self, i):
        self.procs[i].send_signal(signal.SIGTERM)
        self.procs[i].wait(timeout=30)
        self.start(i)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def run(args, scenario, work):
    os.makedirs(f"{work}/policies", exist_ok=True)
    with open(f"{work}/policies/accuracy.yaml", "w") as f:
        f.write(POLICY)
    cluster = Cluster(work, args.proxies)
    nodes = Nodes(args.tollgate, work, cluster.url())
    events = []
    try:
        # Start half a second into a calendar minute, so the run is one window per key.
        now = time.time()
        time.sleep(60 - now % 60 + 0.5)
        start = time.time()
        benches = []
        for mode in MODES:
            for i in range(NODES):
                cmd = [args.tollgate, "bench", "--protocol", "http", "--target", f"http://127.0.0.1:{nodes.ports[i]}",
                       "-D", "accuracy", "-d", f"{mode}_key=k{{key}}", "--keys", str(KEYS), "-c", "4",
                       "--rate", str(RATE), "--duration", f"{RUN_SECONDS}s", "--requests", str(RATE * RUN_SECONDS),
                       "--json", "--decision-log", f"{work}/{mode}-{i}.log"]
                benches.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))

        def at(second, what, action):
            delay = start + second - time.time()
            if delay > 0:
                time.sleep(delay)
            log(f"{scenario} +{time.time() - start:.1f}s: {what}")
            action()
            events.append({"at_s": round(time.time() - start, 2), "what": what})

        if scenario == "failover":
            time.sleep(3)
            master, slot = cluster.domain_master()
            replica = cluster.replica_of(master)
            at(10, f"CLUSTER FAILOVER on {replica} (replica of {master}, slot {slot})",
               lambda: cli(replica, "cluster", "failover"))
            wait_until("the manual failover", lambda: "role:master" in cli(replica, "info", "replication"))
            wait_until("the old master to replicate", lambda: "master_link_status:up" in cli(master, "info", "replication"))

            def kill():
                # How far its replica is behind, read just before: what the kill can lose.
                info = cli(replica, "info", "replication")
                offset = int(info.split("master_repl_offset:")[1].split()[0])
                acked = [int(part.split("=")[1]) for line in info.splitlines() if line.startswith("slave0:")
                         for part in line.split(",") if part.startswith("offset=")]
                cluster.procs[replica].send_signal(signal.SIGKILL)
                cluster.procs[replica].wait(timeout=10)
                events.append({"what": "replica bytes behind before the kill",
                               "bytes": offset - acked[0] if acked else None})
            at(25, f"kill -9 of {replica}, the domain's master", kill)
            wait_until("the old master promoted again", lambda: "role:master" in cli(master, "info", "replication"))
            events.append({"at_s": round(time.time() - start, 2), "what": f"{master} is master again"})
        elif scenario == "rolling":
            for i, second in enumerate((10, 20, 30)):
                at(second, f"restart of node {i}", lambda i=i: nodes.restart(i))
                events.append({"at_s": round(time.time() - start, 2), "what": f"node {i} healthy again"})
        elif scenario == "partition":
            at(12, f"node 2 (pid {nodes.procs[2].pid}) cut off from Redis",
               lambda: cluster.proxy(f"cut-off {nodes.procs[2].pid}"))
            at(28, "healed", lambda: cluster.proxy("heal"))
        for b in benches:
            b.communicate(timeout=RUN_SECONDS + 60)
    finally:
        nodes.stop()
        cluster.stop()
    rows = []
    for mode in MODES:
        rows.append({"scenario": scenario, "mode": mode, "limit": LIMIT, "keys": KEYS, "nodes": NODES,
                     "rate_per_second": RATE * NODES, "events": events,
                     **analyse([f"{work}/{mode}-{i}.log" for i in range(NODES)], start)})
    return rows


def analyse(paths, start):
    """Counts from the generators' logs: admitted per (key, minute) — certainly in that
    minute when sent and answered in it — overshoot, answers within the deadline."""
    certain = defaultdict(int)
    straddling = defaultdict(int)
    requests = answered = in_time = allowed = 0
    for path in paths:
        with open(path) as f:
            for line in f:
                sent, done, key, verdict = line.split()
                sent, done = int(sent), int(done)
                requests += 1
                if verdict == "error":
                    continue
                answered += 1
                if (done - sent) <= DEADLINE_MS * 1_000_000:
                    in_time += 1
                if verdict != "allowed":
                    continue
                allowed += 1
                w0, w1 = sent // 60_000_000_000, done // 60_000_000_000
                if w0 == w1:
                    certain[(key, w0)] += 1
                else:
                    straddling[(key, w0)] += 1
                    straddling[(key, w1)] += 1
    windows = sorted(set(certain) | set(straddling))
    overshoot = [certain[w] - LIMIT for w in windows]
    return {
        "requests": requests,
        "admitted": allowed,
        "windows": len(windows),
        "admitted_per_limit": allowed / (LIMIT * max(len(windows), 1)),
        "worst_window_overshoot": max(overshoot, default=0),
        "over_admitted_total": sum(max(o, 0) for o in overshoot),
        "straddling_admits": sum(straddling.values()) // 2,
        "answered_share": answered / max(requests, 1),
        "within_deadline_share": in_time / max(requests, 1),
    }


def table(rows):
    lines = ["| failure | mode | admitted / limit | worst window overshoot | answered within 100 ms | not answered |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | `{r['mode']}` | {r['admitted']} / {r['limit'] * r['windows']} "
                     f"= {r['admitted_per_limit']:.3f} | {r['worst_window_overshoot']:+d} | "
                     f"{100 * r['within_deadline_share']:.2f} % | {100 * (1 - r['answered_share']):.2f} % |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--proxies", required=True, help="tollgate-testkit's fault_proxies example")
    ap.add_argument("--out", required=True)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    ap.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(l) for l in open(args.out)]))
        return
    rows = []
    with open(args.out, "w") as out:
        for scenario in args.scenario or SCENARIOS:
            work = tempfile.mkdtemp(prefix=f"tollgate-accuracy-{scenario}-")
            for row in run(args, scenario, work):
                row["machine_cores"] = os.cpu_count()
                out.write(json.dumps(row) + "\n")
                out.flush()
                rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
