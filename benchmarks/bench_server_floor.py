"""The reference server against its floor: a 1,000-item batch in process vs end to end over loopback.

A script, not a test: ``python benchmarks/bench_server_floor.py [--rounds N] [--items N] [--singles-rounds N]``.

In one run, interleaved round by round (so drift in the machine's load hits every side):

- **floor**: the server's own work for one batch, in this process, calling its internals directly:
  parse the body bytes (``parse_batch``), validate and decide every item and insert them in one
  transaction (``Service.batch_response`` inside ``Storage.transaction``), render the response
  bytes (orjson). No HTTP, no thread hop, no client.
- **end to end**: the same kind of batch (fresh ids, the same body size) POSTed with an httpx client
  (one keep-alive connection, body serialised beforehand) to a real server started the way users
  start it (``python -m reference_server``, uvicorn) in a subprocess on a loopback port with a fresh
  database; timed from the call to the last response byte read.
- **1,000 singles**: ``--items`` single ``POST /orders`` on the same keep-alive connection.

Prints median (min-max, n) of each, the ratio end-to-end / floor (goal <= 1.5x) and the throughput
ratio batch vs singles (goal >= 50x), with the machine and load average. Every response is checked
(every item ok), so a fast failure cannot pass for a fast success.
"""
from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reference_server import create_app  # noqa: E402  (benchmark script: the tree under test)
from reference_server.batch import parse_batch  # noqa: E402

from _common import load, machine, print_figures  # noqa: E402  (benchmarks/_common.py)

CLIENT = "bearer:bench"
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def batch_body(n: int) -> bytes:
    prefix = uuid.uuid4().hex[:12]
    return orjson.dumps({"operations": [
        {"id": f"b-{prefix}-{i:05d}", "amount": 10 + i % 97 + 0.25, "currency": "USD", "note": "benchmark item"}
        for i in range(n)]})


def single_bodies(n: int) -> list[bytes]:
    prefix = uuid.uuid4().hex[:12]
    return [orjson.dumps({"id": f"s-{prefix}-{i:05d}", "amount": 10 + i % 97 + 0.25, "currency": "USD",
                          "note": "benchmark item"}) for i in range(n)]


def check_batch(raw: bytes, n: int) -> None:
    doc = orjson.loads(raw)
    if doc.get("summary", {}).get("succeeded") != n:
        raise SystemExit(f"a batch did not apply every item: {doc.get('summary') or doc}")


class Floor:
    """The server's own work, in process: parse, validate + one transaction, render."""

    def __init__(self, db: str) -> None:
        self.app = create_app(db)
        self.service = self.app.state.service
        self.settings = self.app.state.settings

    def __call__(self, body: bytes) -> bytes:
        batch = parse_batch(body, self.settings)
        with self.service.storage.transaction() as conn:
            out = self.service.batch_response(conn, CLIENT, batch)
        return out.body


def start_server(db: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "reference_server", "--port", str(port), "--db", db], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/openapi.json", timeout=1)
            return proc, base
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the reference server did not start") from None
            time.sleep(0.05)


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1000


def spread(values: list[float], unit: str = "ms", digits: int = 2) -> str:
    return (f"{statistics.median(values):,.{digits}f} {unit} ({min(values):,.{digits}f}-{max(values):,.{digits}f}, "
            f"n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of floor + end-to-end batch")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--singles-rounds", type=int, default=3, help="rounds that also send --items singles")
    args = parser.parse_args()
    n = args.items
    print(f"machine: {machine()}; load average before: {load()}")
    floor_ms: list[float] = []
    e2e_ms: list[float] = []
    singles_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        floor = Floor(os.path.join(tmp, "floor.db"))
        proc, base = start_server(os.path.join(tmp, "server.db"))
        try:
            with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as client:
                # warm-up (not timed): both sides compile, open connections, fill statement caches
                check_batch(floor(batch_body(n)), n)
                check_batch(client.post("/orders/batch", content=batch_body(n)).content, n)
                for body in single_bodies(20):
                    client.post("/orders", content=body).raise_for_status()
                singles_every = max(1, args.rounds // max(1, args.singles_rounds))
                for r in range(args.rounds):
                    bodies = [batch_body(n), batch_body(n)]
                    gc.collect()
                    # alternate which side goes first
                    order = ("floor", "e2e") if r % 2 == 0 else ("e2e", "floor")
                    for side in order:
                        if side == "floor":
                            raw, ms = timed(floor, bodies[0])
                            floor_ms.append(ms)
                        else:
                            resp, ms = timed(lambda: client.post("/orders/batch", content=bodies[1]).content)
                            raw = resp
                            e2e_ms.append(ms)
                        check_batch(raw, n)
                    if r % singles_every == 0 and len(singles_ms) < args.singles_rounds:
                        sbodies = single_bodies(n)
                        t0 = time.perf_counter()
                        for body in sbodies:
                            resp = client.post("/orders", content=body)
                            if resp.status_code != 201:
                                raise SystemExit(f"a single POST answered {resp.status_code}: {resp.text[:200]}")
                        singles_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratios = [e / f for e, f in zip(e2e_ms, floor_ms)]
    fm, em = statistics.median(floor_ms), statistics.median(e2e_ms)
    rows = [
        (f"floor: {n}-item batch in process (parse, validate, 1 transaction, render)", spread(floor_ms)),
        (f"end to end: {n}-item batch over loopback (uvicorn, httpx keep-alive)", spread(e2e_ms)),
        ("ratio end to end / floor (medians; goal <= 1.5x)", f"{em / fm:.2f}x"),
        ("ratio per round (same round, side by side)", spread(ratios, "x")),
    ]
    if singles_ms:
        sm = statistics.median(singles_ms)
        rows += [
            (f"{n} single POSTs, one keep-alive connection", spread(singles_ms)),
            ("per single request", f"{sm / n:.3f} ms"),
            ("batch vs singles throughput (medians; goal >= 50x)", f"{sm / em:.0f}x"),
        ]
    rows.append(("items/s end to end (median batch)", f"{n / em * 1000:,.0f}"))
    print_figures(rows)


if __name__ == "__main__":
    main()
