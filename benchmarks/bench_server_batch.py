"""Throughput of the reference server: one 1,000-item batch vs 1,000 single POSTs, over loopback.

A script, not a test: ``python benchmarks/bench_server_batch.py [--runs N] [--items N]``.
It starts the server with uvicorn in a subprocess on a free loopback port (fresh temp database),
sends ``--runs`` batches of ``--items`` items with httpx (one warm-up first), then ``--items``
single POSTs ``--runs`` times, and prints median, spread, items/s and the batch/single ratio.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, db: str) -> subprocess.Popen[bytes]:
    code = ("import uvicorn; from reference_server import create_app; "
            f"uvicorn.run(create_app({db!r}), host='127.0.0.1', port={port}, log_level='warning', "
            "access_log=False)")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


def items(n: int) -> list[dict[str, object]]:
    prefix = uuid.uuid4().hex[:10]
    return [{"id": f"bench-{prefix}-{i}", "amount": 10 + i % 97 + 0.25, "currency": "USD",
             "note": "benchmark item"} for i in range(n)]


def fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med * 1000:9.1f} ms  (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    n = args.items
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(port, os.path.join(tmp, "bench.db"))
        try:
            base = f"http://127.0.0.1:{port}"
            headers = {"content-type": "application/json", "authorization": "Bearer bench"}
            with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
                # Warm-up.
                client.post("/orders/batch", content=orjson.dumps({"operations": items(n)}))
                batch_times: list[float] = []
                for _ in range(args.runs):
                    body = orjson.dumps({"operations": items(n)})
                    t0 = time.perf_counter()
                    resp = client.post("/orders/batch", content=body)
                    data = orjson.loads(resp.content)
                    batch_times.append(time.perf_counter() - t0)
                    assert resp.status_code == 200 and data["summary"]["succeeded"] == n, resp.text[:300]
                single_times: list[float] = []
                for _ in range(max(1, args.runs // 5)):
                    bodies = [orjson.dumps(it) for it in items(n)]
                    t0 = time.perf_counter()
                    for body in bodies:
                        resp = client.post("/orders", content=body)
                        assert resp.status_code == 201, resp.text[:300]
                    single_times.append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait(10)
    batch_med = statistics.median(batch_times)
    single_med = statistics.median(single_times)
    batch_rate = n / batch_med
    single_rate = n / single_med
    print(f"reference server, {n} items, loopback, {os.cpu_count()} cores")
    print(f"{'mode':<28} {'time per ' + str(n) + ' items':<44} {'items/s':>10}")
    print(f"{'batch (1 request)':<28} {fmt(batch_times):<44} {batch_rate:>10,.0f}   runs={len(batch_times)}")
    print(f"{'single (' + str(n) + ' requests)':<28} {fmt(single_times):<44} {single_rate:>10,.0f}   runs={len(single_times)}")
    print(f"batch/single throughput ratio: {batch_rate / single_rate:.1f}x")
    print(f"per-item time: batch {batch_med / n * 1e6:.1f} us, single {single_med / n * 1e6:.1f} us")
    print(f"goal >= 50,000 items/s in a batch: {'met' if batch_rate >= 50000 else 'NOT met'}")


if __name__ == "__main__":
    main()
