"""Idempotent retry under load: many clients retrying the same keyed batches, some connections cut.

A script, not a test: ``python benchmarks/load_idempotent_retry.py [--workers 1|2] [--clients 16]
[--batches 200] [--items 20] [--cut 0.25] [--url URL]``.

It starts ``batchspec serve --workers N`` on a free loopback port with a fresh database (or uses
``--url``, which must be a loopback address). ``--batches`` batches of ``--items`` items are made,
each with its own ``Idempotency-Key`` and an item key on every item. Each of ``--clients`` threads
(one credential: the keys are shared, so the clients collide on purpose) sends every batch, in its
own shuffled order, until it gets the outcome: a 409 ``idempotency_key_in_use`` is retried after a
short pause, and a ``--cut`` share of the attempts have their connection cut mid-request (half the
body sent, or the whole request sent and the response never read), then retried.

At the end every item is read back: each must exist with ``version`` 1 (applied exactly once);
for every key there is at most one fresh (non-replayed) answer and every answer is the same bytes.
It prints its figures and exits 1 if exactly-once does not hold.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "Bearer load-idempotent-retry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, db: str, workers: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("batchspec", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "conformance"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--db", db,
                             "--workers", str(workers)], env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    stop_server(proc)
    raise SystemExit("the server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


class Batch:
    def __init__(self, run: str, n: int, items: int) -> None:
        self.key = f"load-{run}-batch-{n}"
        self.ids = [f"load-{run}-{n}-{i}" for i in range(items)]
        ops = [{"id": i, "amount": 1 + k % 50, "currency": "EUR", "idempotency_key": f"item-{i}"}
               for k, i in enumerate(self.ids)]
        self.body = orjson.dumps({"operations": ops})


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.bodies: dict[str, set[bytes]] = defaultdict(set)
        self.fresh: Counter[str] = Counter()
        self.latencies: list[float] = []

    def add(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n


def cut_request(host: str, port: int, batch: Batch, half: bool) -> None:
    """Send the batch on a raw socket and cut the connection: after half the body, or before the response."""
    body = batch.body[: len(batch.body) // 2] if half else batch.body
    head = (f"POST /orders/batch HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {TOKEN}\r\n"
            f"Content-Type: application/json\r\nIdempotency-Key: {batch.key}\r\n"
            f"Content-Length: {len(batch.body)}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + body)


def client_loop(base: str, batches: list[Batch], cut: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    order = list(batches)
    rng.shuffle(order)
    parts = urlsplit(base)
    headers = {"Authorization": TOKEN, "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for batch in order:
            while True:
                if rng.random() < cut:
                    half = rng.random() < 0.5
                    cut_request(parts.hostname or "127.0.0.1", parts.port or 80, batch, half)
                    tally.add("cut: half the body sent" if half else "cut: response never read")
                    continue  # the client saw no answer: it retries
                t0 = time.perf_counter()
                resp = http.post("/orders/batch", content=batch.body, headers={"Idempotency-Key": batch.key})
                elapsed = time.perf_counter() - t0
                if resp.status_code == 409:
                    tally.add("409 idempotency_key_in_use")
                    time.sleep(0.02)
                    continue
                with tally.lock:
                    tally.latencies.append(elapsed)
                    tally.bodies[batch.key].add(resp.content)
                    if resp.status_code != 200:
                        tally.counts[f"unexpected {resp.status_code}"] += 1
                    elif resp.headers.get("idempotent-replayed") == "true":
                        tally.counts["200 replayed"] += 1
                    else:
                        tally.counts["200 fresh"] += 1
                        tally.fresh[batch.key] += 1
                break


def read_back(base: str, batches: list[Batch], threads: int) -> Counter[str]:
    ids = [i for b in batches for i in b.ids]
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def read(chunk: list[str]) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": TOKEN}, timeout=30) as http:
            for item_id in chunk:
                r = http.get(f"/orders/{item_id}")
                state = f"version {r.json().get('version')}" if r.status_code == 200 else f"HTTP {r.status_code}"
                with lock:
                    seen[state] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, [ids[k::threads] for k in range(threads)]))
    return seen


def keyed_batch_rate(base: str, n: int = 1000, runs: int = 5) -> float:
    """Items/s of one 1,000-item batch carrying a batch key and an item key on every item (median)."""
    times = []
    with httpx.Client(base_url=base, headers={"Authorization": TOKEN + "-rate",
                                              "Content-Type": "application/json"}, timeout=60) as http:
        for r in range(runs + 1):
            b = Batch(uuid.uuid4().hex[:8], r, n)
            t0 = time.perf_counter()
            resp = http.post("/orders/batch", content=b.body, headers={"Idempotency-Key": b.key})
            if r:  # the first is a warm-up
                times.append(time.perf_counter() - t0)
            assert resp.status_code == 200 and resp.json()["summary"]["succeeded"] == n, resp.text[:300]
    times.sort()
    return n / times[len(times) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--items", type=int, default=20)
    p.add_argument("--cut", type=float, default=0.25, help="share of attempts whose connection is cut")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--url", default=None, help="an already running server on a loopback address")
    args = p.parse_args()
    run = uuid.uuid4().hex[:8]
    batches = [Batch(run, n, args.items) for n in range(args.batches)]
    tmp = tempfile.mkdtemp(prefix="batchspec-load-")
    proc = None
    if args.url:
        host = urlsplit(args.url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--url must be a loopback address")
        base = args.url.rstrip("/")
    else:
        port = free_port()
        proc = start_server(port, os.path.join(tmp, "load.db"), args.workers)
        base = f"http://127.0.0.1:{port}"
    try:
        tally = Tally()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(client_loop, base, batches, args.cut, args.seed * 1000 + c, tally)
                       for c in range(args.clients)]
            for f in futures:
                f.result()
        wall = time.perf_counter() - t0
        seen = read_back(base, batches, args.clients)
        rate = keyed_batch_rate(base)
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    total_items = args.batches * args.items
    answered = sum(v for k, v in tally.counts.items() if k.startswith("200") or k.startswith("unexpected"))
    attempts = sum(tally.counts.values())
    lat = sorted(tally.latencies)
    twice_fresh = [k for k, v in tally.fresh.items() if v > 1]
    differing = [k for k, v in tally.bodies.items() if len(v) > 1]
    exactly_once = (seen == Counter({"version 1": total_items}) and not twice_fresh and not differing
                    and not any(k.startswith("unexpected") for k in tally.counts))
    print(f"idempotent retry load: {args.clients} clients x {args.batches} batches x {args.items} items, "
          f"workers={args.workers if proc else '(external)'}, cut share {args.cut:.0%}, {os.cpu_count()} cores")
    print(f"wall time                 {wall:8.2f} s   ({attempts / wall:,.0f} attempts/s, "
          f"{answered / wall:,.0f} answered requests/s)")
    for what, n in sorted(tally.counts.items()):
        print(f"  {what:<28} {n:8,}")
    print(f"latency of answered       p50 {lat[len(lat) // 2] * 1000:.1f} ms, p95 {lat[int(len(lat) * .95)] * 1000:.1f} ms, "
          f"max {lat[-1] * 1000:.1f} ms")
    print(f"keys answered fresh twice {len(twice_fresh)}; keys with differing answers {len(differing)}")
    print(f"read back {total_items:,} items: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(seen.items())))
    print(f"keyed 1,000-item batch (batch key + item keys): {rate:,.0f} items/s")
    print(f"every item applied exactly once: {'yes' if exactly_once else 'NO'}")
    return 0 if exactly_once else 1


if __name__ == "__main__":
    sys.exit(main())
