"""A 10,000-item async job on the reference server: time to 202, time to completion, items/s.

A script, not a test: ``python benchmarks/bench_async_job.py [--runs N] [--items N]``.
It starts ``python -m reference_server`` in a subprocess on a free loopback port (fresh temp
database), submits ``--runs`` jobs of ``--items`` valid items (one warm-up job first), polls each
job's status (``limit=0``: counts only) every 2 ms until it is terminal, and prints the median and
spread of the time to the 202, the time from the 202 to completion, and items/s.
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
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "reference_server", "--port", str(port), "--db", db], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the reference server did not start")


def one_job(client: httpx.Client, n: int) -> tuple[float, float]:
    run = uuid.uuid4().hex[:8]
    body = orjson.dumps({"operations": [{"id": f"{run}-{k}", "amount": 10.5, "currency": "USD"}
                                        for k in range(n)]})
    t0 = time.perf_counter()
    resp = client.post("/imports/batch", content=body, headers={"Content-Type": "application/json"})
    t1 = time.perf_counter()
    if resp.status_code != 202:
        raise SystemExit(f"job not accepted: {resp.status_code} {resp.text[:300]}")
    url = resp.json()["status_url"]
    while True:
        job = client.get(url, params={"limit": 0}).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.002)
    t2 = time.perf_counter()
    if job["status"] != "completed" or job["succeeded"] != n:
        raise SystemExit(f"job ended badly: {job}")
    return t1 - t0, t2 - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--items", type=int, default=10000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="batchspec-bench-") as tmp:
        proc = start_server(port, os.path.join(tmp, "bench.db"))
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                one_job(client, args.items)  # warm-up
                runs = [one_job(client, args.items) for _ in range(args.runs)]
        finally:
            proc.terminate()
            proc.wait(10)
    accept = [a for a, _ in runs]
    done = [d for _, d in runs]
    rate = [args.items / d for d in done]
    print(f"async job of {args.items} items, {args.runs} runs (after one warm-up), reference server over loopback")
    print(f"  time to 202:               median {statistics.median(accept) * 1000:7.1f} ms  "
          f"(min {min(accept) * 1000:.1f}, max {max(accept) * 1000:.1f})")
    print(f"  202 to completion:         median {statistics.median(done) * 1000:7.1f} ms  "
          f"(min {min(done) * 1000:.1f}, max {max(done) * 1000:.1f})")
    print(f"  items/s (after the 202):   median {statistics.median(rate):9.0f}  "
          f"(min {min(rate):.0f}, max {max(rate):.0f})")


if __name__ == "__main__":
    main()
