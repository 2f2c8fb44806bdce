#!/usr/bin/env python3
"""The chaos run behind scripts/chaos.

Starts private Redis, PostgreSQL and NATS JetStream servers on free loopback ports, one
`tollgate serve` over them, a steady load of checks (`tollgate bench`, open loop) and an
admin writer that puts a new policy every 100 ms. Then, one at a time: Redis, PostgreSQL
and NATS are killed with SIGKILL (PostgreSQL's whole process group), kept down for
--outage seconds, and restarted on the same port and data directory.

Bounds (the run fails past any of them):
- every check is answered, none an error (on_store_error decides while Redis is away);
- Redis: /readyz is 200 again within 5 s of the restart;
- PostgreSQL: an admin write succeeds again within 10 s of the restart;
- NATS: the broker is connected again and the outbox empty within 20 s of the restart;
- nothing lost: every acknowledged policy is in the database, with a successful
  `policy.put` audit entry, and every audit entry of the run reached JetStream exactly once.

Every loop is bounded in time and count; every address is loopback.
"""

import argparse
import asyncio
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import nats  # nats-py, installed by scripts/python-tools
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy

REDIS_BOUND, POSTGRES_BOUND, NATS_BOUND = 5.0, 10.0, 20.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, probe, ceiling, every=0.05):
    """Seconds until probe() is true; raises after `ceiling` seconds."""
    started = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - started
        if time.monotonic() - started > ceiling:
            raise SystemExit(f"FAILED: {what} did not happen within {ceiling} s")
        time.sleep(every)


def http(method, url, key=None, body=None, timeout=5):
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return 0, str(e).encode()


class Service:
    """A server process that can be killed with SIGKILL and started again."""

    def __init__(self, name, command, log, user=None, ready=None):
        self.name, self.command, self.log, self.user, self.ready = name, command, log, user, ready
        self.process = None

    def start(self):
        out = open(self.log, "ab")
        self.process = subprocess.Popen(self.command, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                        start_new_session=True, user=self.user)
        wait_for(f"{self.name} to start", self.ready, 20)

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--pg-bin", required=True)
    ap.add_argument("--outage", type=float, default=3.0)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tollgate-chaos-")
    as_root = os.geteuid() == 0
    pg_user = "postgres" if as_root else None
    if as_root:
        shutil.chown(work, user="postgres")
    services = []
    try:
        run(args, work, pg_user, services)
    finally:
        for s in services:
            if s.process and s.process.poll() is None:
                try:
                    os.killpg(s.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run(args, work, pg_user, services):
    tg = args.tollgate
    redis_port, pg_port, nats_port = free_port(), free_port(), free_port()
    http_port, admin_port = free_port(), free_port()

    redis = Service("Redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], f"{work}/redis.log", ready=lambda: port_open(redis_port))
    pg_data = f"{work}/pg"
    subprocess.run([f"{args.pg_bin}/initdb", "-D", pg_data, "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=pg_user)
    postgres = Service("PostgreSQL", [f"{args.pg_bin}/postgres", "-D", pg_data, "-p", str(pg_port), "-k", work,
                                      "-c", "listen_addresses=127.0.0.1"], f"{work}/pg.log", user=pg_user,
                       ready=lambda: port_open(pg_port))
    broker = Service("NATS", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", f"{work}/nats"],
                     f"{work}/nats.log", ready=lambda: port_open(nats_port))
    for s in (redis, postgres, broker):
        services.append(s)
        s.start()

    policies = f"{work}/load.yaml"
    with open(policies, "w") as f:
        f.write("domain: load\ndescriptors:\n  - key: user\n"
                "    rate_limit: {unit: second, requests_per_unit: 100, on_store_error: allow}\n")
    database = f"postgres://postgres@127.0.0.1:{pg_port}/postgres"
    server = Service("tollgate", [tg, "serve", "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", "127.0.0.1:0",
                                  "--admin-addr", f"127.0.0.1:{admin_port}", "--data-dir", f"{work}/data",
                                  "--policies", policies, "--database", database,
                                  "--store", f"redis://127.0.0.1:{redis_port}", "--store-timeout", "50ms",
                                  "--events", f"nats://127.0.0.1:{nats_port}", "--log-format", "json"],
                     f"{work}/tollgate.log",
                     ready=lambda: http("GET", f"http://127.0.0.1:{http_port}/readyz")[0] == 200)
    services.append(server)
    server.start()
    admin = f"http://127.0.0.1:{admin_port}"
    made = subprocess.run([tg, "keys", "--database", database, "create", "--role", "admin", "--name", "chaos"],
                          check=True, capture_output=True, text=True)
    key = next(w for w in made.stdout.split() if w.startswith("tg_"))
    status, body = http("POST", f"{admin}/v1/admin/domains", key, {"name": "chaos"})
    assert status == 201, (status, body)

    # The load: checks at a fixed rate for the whole run (bounded by --duration).
    total = 40 + 3 * (args.outage + 10)
    load = subprocess.Popen([tg, "bench", "--protocol", "http", "--target", f"http://127.0.0.1:{http_port}",
                             "-D", "load", "-d", "user={key}", "--keys", "1000", "-c", "4", "--rate", "500",
                             "--duration", f"{int(total)}s", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    # The admin writer: a new policy every 100 ms, each answer kept with its time.
    answers, stop, slowest = [], threading.Event(), [0.0]

    def writer():
        for i in range(int(total * 20)):
            if stop.is_set():
                return
            sent = time.monotonic()
            status, _ = http("PUT", f"{admin}/v1/admin/domains/chaos/policies/p{i}", key,
                             {"descriptor": [{"key": f"k{i}"}], "rate_limit": {"unit": "minute", "requests_per_unit": 10}},
                             timeout=30)
            answers.append((i, status, time.monotonic()))
            slowest[0] = max(slowest[0], time.monotonic() - sent)
            time.sleep(0.1)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(5)
    recovery = {}

    # Redis: decisions fall back to on_store_error, then come from the store again.
    redis.kill()
    time.sleep(args.outage)
    restarted = time.monotonic()
    redis.start()
    recovery["Redis"] = wait_for("/readyz after Redis's restart",
                                 lambda: http("GET", f"http://127.0.0.1:{http_port}/readyz")[0] == 200, REDIS_BOUND)
    time.sleep(5)

    # PostgreSQL: admin writes fail (503) while it is away, then succeed again.
    postgres.kill()
    time.sleep(args.outage)
    restarted = time.monotonic()
    postgres.start()
    recovery["PostgreSQL"] = wait_for(
        "an admin write after PostgreSQL's restart",
        lambda: any(s // 100 == 2 and t > restarted for _, s, t in list(answers)), POSTGRES_BOUND)
    time.sleep(5)

    # NATS: the outbox keeps the rows, then relays them.
    broker.kill()
    time.sleep(args.outage)
    restarted = time.monotonic()
    broker.start()

    def relayed():
        status, body = http("GET", f"{admin}/v1/admin/overview", key)
        if status != 200:
            return False
        health = json.loads(body)["health"]
        return health.get("events_connected") is True and health.get("outbox_backlog") == 0

    recovery["NATS"] = wait_for("the broker connected and the outbox empty after NATS's restart", relayed,
                                NATS_BOUND, every=0.1)
    time.sleep(3)
    stop.set()
    thread.join(timeout=10)
    out, err = load.communicate(timeout=total + 60)
    bench = json.loads(out) if out.strip() else {"errors": -1, "allowed": 0, "denied": 0, "stderr": err[-500:]}

    problems = []
    if bench["errors"] != 0:
        problems.append(f"checks: {bench['errors']} errors {bench.get('stderr', '')}")

    # Nothing lost: acknowledged policies, their audit entries, the audit entries' events.
    acked = {i for i, s, _ in answers if s // 100 == 2}
    refused = [s for _, s, _ in answers if s // 100 != 2]
    names, cursor = set(), None
    for _ in range(1000):
        status, body = http("GET", f"{admin}/v1/admin/domains/chaos/policies?limit=500"
                            + (f"&cursor={cursor}" if cursor else ""), key)
        page = json.loads(body)
        names |= {p["name"] for p in page["items"]}
        cursor = page.get("next_cursor")
        if not cursor:
            break
    missing = sorted(i for i in acked if f"p{i}" not in names)
    if missing:
        problems.append(f"{len(missing)} acknowledged policies missing: {missing[:10]}")
    audit, cursor = [], None
    for _ in range(1000):
        status, body = http("GET", f"{admin}/v1/admin/audit?limit=500" + (f"&cursor={cursor}" if cursor else ""), key)
        page = json.loads(body)
        audit += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    audited = set()
    for e in audit:
        found = re.search(r"(?:^|[/:])p(\d+)$", e["target"])
        if e["action"] == "policy.put" and e["outcome"] == "ok" and found:
            audited.add(int(found.group(1)))
    unaudited = sorted(acked - audited)
    if unaudited:
        problems.append(f"{len(unaudited)} acknowledged changes without an audit entry: {unaudited[:10]}"
                        f" (targets look like {[e['target'] for e in audit[:3]]})")
    audit_ids = {e["id"] for e in audit}
    seen = asyncio.run(audit_events(nats_port, len(audit_ids)))
    lost = sorted(audit_ids - set(seen))
    twice = sorted(i for i, n in seen.items() if n > 1)
    if lost:
        problems.append(f"{len(lost)} audit entries never reached JetStream: {lost[:10]}")
    if twice:
        problems.append(f"{len(twice)} audit entries published more than once: {twice[:10]}")

    print("== chaos summary")
    print(f"checks: {bench['allowed'] + bench['denied']} answered ({bench['allowed']} allowed, {bench['denied']} denied), "
          f"{bench['errors']} errors, p99 {bench.get('latency_us', {}).get('p99')} us, "
          f"max {bench.get('latency_us', {}).get('max')} us")
    print(f"admin writes: {len(acked)} acknowledged, {len(refused)} refused (statuses {sorted(set(refused))}); "
          f"the slowest took {slowest[0]:.2f} s (one waiting out PostgreSQL's outage)")
    for name, bound in (("Redis", REDIS_BOUND), ("PostgreSQL", POSTGRES_BOUND), ("NATS", NATS_BOUND)):
        print(f"{name}: down {args.outage:.0f} s, recovered {recovery[name]:.2f} s after its restart (bound {bound:.0f} s)")
    print(f"audit entries: {len(audit_ids)}, on JetStream: {len(seen)} distinct, {len(twice)} twice; "
          f"policies acknowledged and in the database: {len(acked) - len(missing)} of {len(acked)}")
    if problems:
        print("FAILED: " + "; ".join(problems))
        sys.exit(1)
    print("chaos passed")


async def audit_events(port, expected):
    """How many times each audit entry id is on the TOLLGATE_CONTROL stream."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    seen = {}
    sub = await js.subscribe("tollgate.audit.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            msg = await sub.next_msg(timeout=2)
        except NatsTimeout:
            if len(seen) >= expected:
                break
            continue
        event = json.loads(msg.data)
        seen[event["data"]["id"]] = seen.get(event["data"]["id"], 0) + 1
    await nc.close()
    return seen


if __name__ == "__main__":
    main()
