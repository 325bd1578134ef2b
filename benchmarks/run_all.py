"""The benchmark suite of the reference server and the kit: prints one table of figures.

A script, not a test: ``python benchmarks/run_all.py [--runs N] [--only NAME ...] [--quick]``.
Every figure is the median of several runs, with the spread (min-max), measured side by side in
one run (the compared modes interleaved, so drift in the machine's load hits both). The server runs
with uvicorn in a subprocess on a free loopback port with a fresh database; the client is httpx.

Benchmarks (``--only``): ``single_vs_batch``, ``scaling``, ``idempotency``, ``async``, ``kit``, ``refused_body``.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from _common import cpu_model  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}
Row = tuple[str, str, str]  # (benchmark, figure, value)


# -- plumbing ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(**settings: Any) -> Iterator[tuple[str, int]]:
    """The reference server in a subprocess: yields (base URL, pid)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        code = ("import uvicorn; from reference_server import create_app; "
                "from reference_server.settings import Settings; "
                f"uvicorn.run(create_app({db!r}, settings=Settings(**{settings!r})), host='127.0.0.1', "
                f"port={port}, log_level='warning', access_log=False)")
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen([sys.executable, "-c", code], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(base + "/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the reference server did not start") from None
                    time.sleep(0.05)
            yield base, proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def items(n: int) -> list[dict[str, Any]]:
    prefix = uuid.uuid4().hex[:10]
    return [{"id": f"bench-{prefix}-{i}", "amount": 10 + i % 97 + 0.25, "currency": "USD",
             "note": "benchmark item"} for i in range(n)]


def spread(values: list[float], scale: float = 1.0, unit: str = "ms", digits: int = 1) -> str:
    v = [x * scale for x in values]
    return f"{statistics.median(v):,.{digits}f} {unit} ({min(v):,.{digits}f}-{max(v):,.{digits}f}, n={len(v)})"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def post_batch(client: httpx.Client, ops: list[dict[str, Any]], path: str = "/orders/batch",
               headers: dict[str, str] | None = None) -> float:
    body = orjson.dumps({"operations": ops})
    resp, dt = timed(lambda: client.post(path, content=body, headers=headers))
    if resp.status_code != 200 or orjson.loads(resp.content)["summary"]["succeeded"] != len(ops):
        raise SystemExit(f"batch of {len(ops)} failed: {resp.status_code} {resp.text[:300]}")
    return dt


def post_singles(client: httpx.Client, ops: list[dict[str, Any]]) -> float:
    bodies = [orjson.dumps(it) for it in ops]
    t0 = time.perf_counter()
    for body in bodies:
        resp = client.post("/orders", content=body)
        if resp.status_code != 201:
            raise SystemExit(f"single request failed: {resp.status_code} {resp.text[:300]}")
    return time.perf_counter() - t0


# -- benchmarks ------------------------------------------------------------------

def single_vs_batch(runs: int) -> list[Row]:
    """1,000 single POSTs vs one 1,000-item batch, interleaved (alternating which goes first)."""
    n = 1000
    singles: list[float] = []
    batches: list[float] = []
    with server() as (base, _), httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        post_batch(c, items(n))
        post_singles(c, items(50))  # warm-up
        for k in range(runs):
            order = (lambda: batches.append(post_batch(c, items(n))), lambda: singles.append(post_singles(c, items(n))))
            for step in (order if k % 2 == 0 else order[::-1]):
                step()
    b, s = statistics.median(batches), statistics.median(singles)
    return [("single vs batch", "one 1,000-item batch", spread(batches, 1000)),
            ("single vs batch", "1,000 single POSTs", spread(singles, 1000)),
            ("single vs batch", "batch items/s", f"{n / b:,.0f} ({n / max(batches):,.0f}-{n / min(batches):,.0f})"),
            ("single vs batch", "single items/s", f"{n / s:,.0f}"),
            ("single vs batch", "throughput ratio batch/single", f"{s / b:,.0f}x")]


def scaling(runs: int) -> list[Row]:
    """Cost per item of a sync batch at 10, 100, 1,000 and (limits raised) 10,000 items, interleaved."""
    sizes = [10, 100, 1000, 10000]
    times: dict[int, list[float]] = {n: [] for n in sizes}
    with server(max_items=10000, max_bytes=8 * 1048576) as (base, _), \
            httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        for n in sizes:
            post_batch(c, items(n))  # warm-up
        for k in range(runs):
            for n in (sizes if k % 2 == 0 else sizes[::-1]):
                times[n].append(post_batch(c, items(n)))
    rows: list[Row] = []
    for n in sizes:
        label = f"sync batch of {n:,}" + (" (limits raised)" if n > 1000 else "")
        rows.append(("batch scaling", f"{label}: per item", spread([t / n for t in times[n]], 1e6, "us", 2)))
    per = {n: statistics.median(times[n]) / n for n in sizes}
    rows.append(("batch scaling", "per-item cost 10,000 / 1,000", f"{per[10000] / per[1000]:.2f}x"))
    return rows


def idempotency(runs: int) -> list[Row]:
    """A 1,000-item batch plain, with a batch key, and with a batch key plus an item key on every item."""
    n = 1000
    modes = ["plain", "batch key", "batch key + item keys"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    with server() as (base, _), httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        def once(mode: str) -> float:
            ops = items(n)
            hdrs = None if mode == "plain" else {"Idempotency-Key": uuid.uuid4().hex}
            if mode.endswith("item keys"):
                ops = [dict(it, idempotency_key="k-" + it["id"]) for it in ops]
            return post_batch(c, ops, headers=hdrs)
        for m in modes:
            once(m)
        for k in range(runs):
            for m in (modes if k % 2 == 0 else modes[::-1]):
                times[m].append(once(m))
    return [("idempotency", f"1,000-item batch, {m}", spread(times[m], 1000)) for m in modes]


def async_jobs(runs: int) -> list[Row]:
    """A 10,000-item async job (time to 202, 202 to completed, items/s), interleaved with 1,000-item sync
    batches on the same server, so the per-item costs compare in one run."""
    n = 10000
    to_202: list[float] = []
    to_done: list[float] = []
    sync: list[float] = []
    with server() as (base, _), httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        probe = c.post("/imports/batch", content=orjson.dumps({"operations": items(1)}))
        if probe.status_code in (404, 405):
            return [("async job", "POST /imports/batch", f"not available on this server ({probe.status_code})")]
        post_batch(c, items(1000))
        for _ in range(runs):
            sync.append(post_batch(c, items(1000)))
            body = orjson.dumps({"operations": items(n)})
            t0 = time.perf_counter()
            resp = c.post("/imports/batch", content=body)
            t1 = time.perf_counter()
            if resp.status_code != 202:
                raise SystemExit(f"async job refused: {resp.status_code} {resp.text[:300]}")
            url = resp.json()["status_url"]
            while True:
                job = c.get(url, params={"limit": 1}).json()  # ask for little: only the status matters
                if job["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.005)
            t2 = time.perf_counter()
            if job["status"] != "completed" or job.get("succeeded") != n:
                raise SystemExit(f"async job ended {job['status']} with {job.get('succeeded')} of {n}")
            to_202.append(t1 - t0)
            to_done.append(t2 - t1)
    whole = [a + b for a, b in zip(to_202, to_done)]
    per_async = statistics.median(whole) / n
    per_sync = statistics.median(sync) / 1000
    return [("async job", "10,000 items: time to 202", spread(to_202, 1000)),
            ("async job", "10,000 items: 202 to completed (5 ms polls)", spread(to_done, 1000)),
            ("async job", "items/s after the 202",
             f"{n / statistics.median(to_done):,.0f} ({n / max(to_done):,.0f}-{n / min(to_done):,.0f})"),
            ("async job", "per item, POST to completed", spread([t / n for t in whole], 1e6, "us", 2)),
            ("async job", "per item, sync 1,000-item batch (same server, interleaved)",
             spread([t / 1000 for t in sync], 1e6, "us", 2)),
            ("async job", "per-item cost async 10,000 / sync 1,000", f"{per_async / per_sync:.2f}x")]


def kit(runs: int) -> list[Row]:
    """Wall time and peak memory of `batchspec run` against the embedded reference server (no URL)."""
    walls: list[float] = []
    rss: list[float] = []
    codes: list[int] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "conformance", "run", "--report-dir", tmp],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's
            walls.append(time.perf_counter() - t0)
            rss.append(usage.ru_maxrss / 1024)  # KiB on Linux
            codes.append(os.waitstatus_to_exitcode(status))
            proc.returncode = codes[-1]
    return [("batchspec run (embedded server)", "wall time", spread(walls, 1, "s", 1)),
            ("batchspec run (embedded server)", "peak RSS of the kit (server in-process)", spread(rss, 1, "MiB", 0)),
            ("batchspec run (embedded server)", "exit codes", ", ".join(map(str, codes)))]


def _proc_mem(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(val.split()[0]) / 1024  # MiB
    return out


def _send_chunked(base: str, total: int, chunk: int = 65536) -> tuple[int | None, int, float]:
    """Stream `total` bytes chunked (no Content-Length) until the server answers; (status, bytes sent, seconds)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (f"POST /orders/batch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer bench\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    piece = b'{"operations": [' + b" " * (chunk - 16)
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    t0 = time.perf_counter()
    sent = 0
    status = None
    try:
        sock.sendall(head)
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered before the body ended
            sock.sendall(frame)
            sent += len(piece)
        reply = sock.recv(65536)
        if reply.startswith(b"HTTP/1.1 "):
            status = int(reply[9:12])
    except OSError:
        try:
            reply = sock.recv(65536)
            status = int(reply[9:12]) if reply.startswith(b"HTTP/1.1 ") else None
        except OSError:
            pass
    finally:
        sock.close()
    return status, sent, time.perf_counter() - t0


def refused_body(runs: int) -> list[Row]:
    """The server's memory (VmHWM/VmRSS from /proc) while it refuses 5 MiB and 50 MiB chunked bodies."""
    rows: list[Row] = []
    with server() as (base, pid), httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:
        post_batch(c, items(1000))  # a normal 1,000-item batch first: the steady state
        before = _proc_mem(pid)
        rows.append(("refused chunked body", "server before (after one 1,000-item batch)",
                     f"VmHWM {before['VmHWM']:.1f} MiB, VmRSS {before['VmRSS']:.1f} MiB"))
        for size in (5, 50):
            answers = [_send_chunked(base, size * 1048576) for _ in range(runs)]
            after = _proc_mem(pid)
            statuses = sorted({str(a[0]) for a in answers})
            rows.append(("refused chunked body", f"{size} MiB chunked x{runs}: status; bytes written before the answer was seen (kernel buffers included)",
                         f"{'/'.join(statuses)}, {spread([a[1] for a in answers], 1 / 1048576, 'MiB', 2)}"))
            rows.append(("refused chunked body", f"{size} MiB chunked x{runs}: time to the answer",
                         spread([a[2] for a in answers], 1000)))
            rows.append(("refused chunked body", f"server after the {size} MiB refusals",
                         f"VmHWM {after['VmHWM']:.1f} MiB (+{after['VmHWM'] - before['VmHWM']:.1f}), "
                         f"VmRSS {after['VmRSS']:.1f} MiB"))
    return rows


BENCHMARKS: dict[str, Callable[[int], list[Row]]] = {
    "single_vs_batch": single_vs_batch, "scaling": scaling, "idempotency": idempotency,
    "async": async_jobs, "kit": kit, "refused_body": refused_body,
}
DEFAULT_RUNS = {"single_vs_batch": 5, "scaling": 15, "idempotency": 15, "async": 5, "kit": 3, "refused_body": 3}


def machine() -> str:
    return (f"{os.cpu_count()} cores (nproc), {cpu_model()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--runs", type=int, help="runs of every benchmark (default: per benchmark)")
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the script)")
    args = parser.parse_args()
    rows: list[Row] = []
    load_before = os.getloadavg()[0]
    for name in args.only or list(BENCHMARKS):
        runs = args.runs or (max(1, DEFAULT_RUNS[name] // 3) if args.quick else DEFAULT_RUNS[name])
        print(f"... {name} ({runs} runs)", file=sys.stderr, flush=True)
        rows.extend(BENCHMARKS[name](runs))
    print(f"machine: {machine()}")
    # Other work on the machine moves every figure: say how busy it was.
    print(f"load average (1 min): {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("figures: median (min-max, n=runs)\n")
    print("| benchmark | figure | value |\n|---|---|---|")
    for bench, fig, val in rows:
        print(f"| {bench} | {fig} | {val} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n(benchmark driver peak RSS {peak:.0f} MiB)")


if __name__ == "__main__":
    main()
