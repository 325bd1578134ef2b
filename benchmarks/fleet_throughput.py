"""1,000-item batches per second: 1 instance on SQLite vs 1, 2 and 4 instances on PostgreSQL, in one run.

    python benchmarks/fleet_throughput.py [--seconds 5] [--rounds 3] [--clients 8]

A script, not a test: it prints figures. A throwaway PostgreSQL cluster is started (Debian's
``postgresql`` package, tests/_postgres.py; fsync on, ``synchronous_commit=off``, the counterpart of
the SQLite backend's WAL with ``synchronous=NORMAL``: durable across a crash of the server process,
not of the machine). Every configuration runs as real ``python -m reference_server`` processes on
loopback ports with a fresh database, all started before the first measurement; the configurations
are then measured in interleaved rounds (so drift in the machine's load hits all of them) and each
figure is the median over the rounds. Clients are threads with their own bearer token (one API
client each), sending 1,000 fresh valid items per batch to the instances round-robin.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _postgres import PostgresCluster, unavailable  # noqa: E402
from _reference_process import start_server, stop_server  # noqa: E402

BATCH = 1000


def measure(bases: list[str], seconds: float, clients: int) -> tuple[float, int]:
    """(1,000-item batches per second, non-200 answers) with `clients` threads over `bases`."""
    done = [0] * clients
    bad = [0] * clients
    clock: dict[str, float] = {}

    def go() -> None:  # once every client is ready: the clock starts
        clock["t0"] = time.monotonic()
        clock["stop"] = clock["t0"] + seconds

    ready = threading.Barrier(clients, action=go)

    def client(n: int) -> None:
        tag = uuid.uuid4().hex[:10]
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer fleet-bench-{tag}"}
        conns = [httpx.Client(base_url=b, headers=headers, timeout=60) for b in bases]
        k = 0
        try:
            ready.wait()
            while time.monotonic() < clock["stop"]:
                body = orjson.dumps({"operations": [{"id": f"{tag}-{k}-{i}", "amount": 12.5, "currency": "EUR"}
                                                    for i in range(BATCH)]})
                r = conns[(n + k) % len(conns)].post("/orders/batch", content=body)
                k += 1
                if r.status_code == 200:
                    done[n] += 1
                else:
                    bad[n] += 1
        finally:
            for c in conns:
                c.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - clock["t0"]), sum(bad)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    why = unavailable()
    if why:
        print(f"fleet_throughput: {why}", file=sys.stderr)
        return 2
    cluster = PostgresCluster({"fsync": "on", "synchronous_commit": "off"}).start()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"batchspec-fleet-bench-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        configs: dict[str, list[str]] = {}

        def fleet(name: str, db: str, n: int) -> None:
            started = [start_server(db, timeout=30) for _ in range(n)]
            procs.extend(p for p, _ in started)
            configs[name] = [b for _, b in started]

        fleet("SQLite, 1 instance", str(tmp / "bench.db"), 1)
        for n in (1, 2, 4):
            fleet(f"PostgreSQL, {n} instance{'s' if n > 1 else ''}", cluster.new_database("bench"), n)
        for bases in configs.values():  # warm up every instance (imports, pools, prepared statements)
            measure(bases, 0.5, 2)
        figures: dict[str, list[float]] = {name: [] for name in configs}
        errors = dict.fromkeys(configs, 0)
        for _ in range(args.rounds):
            for name, bases in configs.items():
                rate, bad = measure(bases, args.seconds, args.clients)
                figures[name].append(rate)
                errors[name] += bad
    finally:
        for p in procs:
            stop_server(p)
        cluster.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    base_rate = statistics.median(figures["SQLite, 1 instance"])
    print(f"fleet_throughput: {BATCH:,}-item batches/s, {args.clients} clients, median of {args.rounds} rounds "
          f"of {args.seconds:g} s (interleaved)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (at the end)")
    print(f"{'configuration':<26} {'batches/s':>10} {'items/s':>10} {'range':>15} {'vs SQLite':>9} {'non-200':>8}")
    for name, rates in figures.items():
        med = statistics.median(rates)
        print(f"{name:<26} {med:>10.2f} {med * BATCH:>10.0f} {min(rates):>7.2f}-{max(rates):<7.2f} "
              f"{med / base_rate:>8.2f}x {errors[name]:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
