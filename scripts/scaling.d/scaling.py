#!/usr/bin/env python3
"""The scaling runs behind scripts/bench-scaling.

Three series, each point a `tollgate bench` run (HTTP, closed loop) against release
`tollgate serve` processes on loopback, written as one JSON object per line:

- workers: one node, memory store, --workers 1 and 2;
- nodes: 1, 2 and 3 nodes (one worker each, one load generator per node) for memory
  (`local`: each node counts alone), one Redis (`global`, `leased`) and a Redis Cluster of
  three masters (`global`, node i loading a domain of its own, since a Cluster keeps one
  domain on one master); decisions/s summed, p99 the worst node's, CPU per decision of the
  Tollgate nodes and of Redis;
- keys: one node, memory store, 10k, 1M and 10M distinct keys drawn at random (p99 and
  decisions/s while the table grows), and the store's resident bytes per live counter
  for the same counts (tollgate-core's memory_per_key example).

Every address is loopback; every run is bounded by --seconds and by bench's request cap.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

POLICIES = """domain: {domain}
descriptors:
  - key: local_user
    rate_limit: {unit: second, requests_per_unit: 1000000000, consistency: local}
  - key: global_user
    rate_limit: {unit: second, requests_per_unit: 1000000000, consistency: global}
  - key: leased_user
    rate_limit: {unit: second, requests_per_unit: 1000000000, consistency: leased, lease: 1000}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port():
    """A free port whose cluster bus port (+10000) is free and valid too."""
    import random
    for _ in range(1000):
        port = random.randint(20000, 45000)
        ok = True
        for p in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port
    sys.exit("no free port pair for a Redis Cluster node")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(what, probe, ceiling=20):
    end = time.monotonic() + ceiling
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.05)
    sys.exit(f"{what} did not happen within {ceiling} s")


def healthy(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class Runner:
    def __init__(self, tg, seconds, work):
        self.tg, self.seconds, self.work, self.procs = tg, seconds, work, []
        # Three domains with the same policies: a Cluster keeps each domain's counters on one
        # master (its hash tag), so the Cluster series gives each node a domain of its own.
        os.makedirs(f"{work}/policies")
        for domain in ("scale", "scale1", "scale2"):
            with open(f"{work}/policies/{domain}.yaml", "w") as f:
                f.write(POLICIES.replace("{domain}", domain))

    def spawn(self, cmd, log):
        p = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self, procs):
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def redis(self, cluster=False):
        """Starts Redis (or a 3-master Cluster); returns (store URL, pids)."""
        ports = [free_cluster_port() for _ in range(3)] if cluster else [free_port()]
        procs = []
        for port in ports:
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", self.work]
            if cluster:
                cmd += ["--cluster-enabled", "yes", "--cluster-config-file", f"{self.work}/nodes-{port}.conf"]
            procs.append(self.spawn(cmd, f"{self.work}/redis-{port}.log"))
        for port in ports:
            wait_until(f"redis on {port}", lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                                                    capture_output=True).returncode == 0)
        if cluster:
            subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                            "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True)
            wait_until("cluster_state:ok", lambda: all(
                b"cluster_state:ok" in subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                                                      capture_output=True).stdout for p in ports))
            url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        else:
            url = f"redis://127.0.0.1:{ports[0]}"
        return url, procs

    def nodes(self, count, workers, store):
        procs, ports = [], []
        for _ in range(count):
            port = free_port()
            cmd = [self.tg, "serve", "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", "127.0.0.1:0",
                   "--admin-addr", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp(dir=self.work),
                   "--policies", f"{self.work}/policies", "--workers", str(workers), "--log-format", "json"]
            if store:
                cmd += ["--store", store]
            procs.append(self.spawn(cmd, f"{self.work}/tollgate-{port}.log"))
            ports.append(port)
        for port in ports:
            wait_until(f"tollgate on {port}", lambda: healthy(port))
        return procs, ports

    def load(self, targets, descriptor, keys, connections, extra_pids=(), domains=("scale",)):
        """One bench per node (`targets`: its port and pid) at once, node i on domain
        `domains[i % len]`; the totals over them."""
        base = ["--protocol", "http", "-d", descriptor, "--keys", str(keys), "-c", str(connections), "--json"]
        domain = lambda i: ["-D", domains[i % len(domains)]]
        warm = [subprocess.Popen([self.tg, "bench", "--target", f"http://127.0.0.1:{p}", *base, *domain(i),
                                  "--duration", "1s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for i, (p, _) in enumerate(targets)]
        for w in warm:
            w.wait(timeout=60)
        extra_before = [cpu_seconds(pid) for pid in extra_pids]
        benches = [subprocess.Popen([self.tg, "bench", "--target", f"http://127.0.0.1:{p}", *base, *domain(i),
                                     "--duration", f"{self.seconds}s", "--server-pid", str(pid)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for i, (p, pid) in enumerate(targets)]
        results = [json.loads(b.communicate(timeout=self.seconds + 60)[0]) for b in benches]
        extra_after = [cpu_seconds(pid) for pid in extra_pids]
        decided = sum(r["allowed"] + r["denied"] for r in results)
        node_cpu = sum((r["server_cpu_us_per_decision"] or 0) * (r["allowed"] + r["denied"]) for r in results)
        return {
            "decisions_per_second": sum(r["decisions_per_second"] for r in results),
            "p50_us": max(r["latency_us"]["p50"] for r in results),
            "p99_us": max(r["latency_us"]["p99"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "tollgate_cpu_us_per_decision": node_cpu / max(decided, 1),
            "redis_cpu_us_per_decision": (sum(extra_after) - sum(extra_before)) * 1e6 / max(decided, 1),
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--memory-per-key", required=True, help="the memory_per_key example's binary")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tollgate-scaling-")
    runner = Runner(args.tollgate, args.seconds, work)
    out = open(args.out, "w")

    def emit(row):
        row["machine_cores"] = os.cpu_count()
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps(row))

    try:
        for workers in (1, 2):
            procs, ports = runner.nodes(1, workers, None)
            r = runner.load(list(zip(ports, [p.pid for p in procs])), "local_user={key}", 10_000, 16)
            emit({"series": "workers", "workers": workers, **r})
            runner.stop(procs)

        for mode, descriptor, store_kind in (("memory local", "local_user={key}", None),
                                             ("redis global", "global_user={key}", "redis"),
                                             ("redis leased", "leased_user=hot{key}", "redis"),
                                             ("cluster global", "global_user={key}", "cluster")):
            for count in (1, 2, 3):
                url, redis_procs = (None, [])
                if store_kind:
                    url, redis_procs = runner.redis(cluster=store_kind == "cluster")
                procs, ports = runner.nodes(count, 1, url)
                # Leases pay on hot keys: 100 of them, shared by the nodes.
                keys = 100 if mode == "redis leased" else 10_000
                domains = ("scale", "scale1", "scale2") if store_kind == "cluster" else ("scale",)
                r = runner.load(list(zip(ports, [p.pid for p in procs])), descriptor, keys, 8,
                                extra_pids=[p.pid for p in redis_procs], domains=domains)
                emit({"series": "nodes", "mode": mode, "nodes": count, "domains": len(domains[:count]), **r})
                runner.stop(procs + redis_procs)

        for keys in (10_000, 1_000_000, 10_000_000):
            procs, ports = runner.nodes(1, 1, None)
            r = runner.load(list(zip(ports, [p.pid for p in procs])), "local_user={key}", keys, 16)
            rss_kib = int(next(l for l in open(f"/proc/{procs[0].pid}/status") if l.startswith("VmRSS")).split()[1])
            runner.stop(procs)
            mem = subprocess.run([args.memory_per_key, str(keys)], capture_output=True, text=True, check=True)
            per_key = float(re.search(r"per counter:\s+([0-9.]+) bytes", mem.stdout).group(1))
            emit({"series": "keys", "keys": keys, "requests": int(r["decisions_per_second"] * args.seconds),
                  "server_rss_kib_after": rss_kib, "store_bytes_per_key": per_key, **r})
    finally:
        runner.stop([p for p in runner.procs if p.poll() is None])


if __name__ == "__main__":
    main()
