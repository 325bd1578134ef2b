"""Soak the reference server: N concurrent clients for T seconds, a mix of good and bad traffic.

    python benchmarks/soak.py [--clients 32] [--seconds 60] [--url http://127.0.0.1:PORT]
    python benchmarks/soak.py --instances 2 --kill [--clients 32] [--seconds 60]

Without --url it starts the reference server (a separate process, fresh database) on loopback.
With --instances N it starts a throwaway PostgreSQL cluster (tests/_postgres.py) and N instances on
one database; every request (and every retry, and every poll of a job) goes to a random instance;
with --kill the second instance is SIGKILLed in the middle of the run and restarted on the same port
after --down seconds. At the end every acknowledged item is read back on every instance, and 5xx
answers are counted apart for the killed instance.
Only loopback targets are accepted. Each client sends, at random: valid batches, mixed
valid/invalid batches, oversized batches (too many items, too many bytes), malformed JSON,
retried batches (same Idempotency-Key twice), requests cut mid-body, and requests whose
response is never read (connection closed) followed by a retry with the same key. At the end
every item that got an ok result is read back. Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    by_class: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    transport_errors: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    fivexx_by_instance: Counter = field(default_factory=Counter)
    reapplied: list[str] = field(default_factory=list)  # fresh ids answered already_exists: applied twice
    jobs: Counter = field(default_factory=Counter)
    acked: dict[str, str] = field(default_factory=dict)  # item id -> token of its client
    cut: dict[str, str] = field(default_factory=dict)    # ids of bodies cut mid-request (never complete)

    def record(self, kind: str, status: int | None, note: str = "", instance: int = 0) -> None:
        with self.lock:
            self.requests += 1
            self.by_kind[kind] += 1
            if status is None:
                self.transport_errors[kind] += 1
            else:
                self.by_class[f"{status // 100}xx"] += 1
                if status >= 500:
                    self.fivexx_by_instance[instance] += 1
                    if len(self.server_errors) < 20:
                        self.server_errors.append(f"instance {instance + 1}, {kind}: {status} {note[:160]}")


def _item(rng: random.Random, valid: bool = True) -> dict:
    item = {"id": f"soak-{uuid.uuid4().hex[:16]}", "amount": round(rng.uniform(1, 500), 2),
            "currency": rng.choice(["USD", "EUR", "GBP"])}
    if not valid:
        item[rng.choice(["amount", "currency"])] = rng.choice([-1, "XXX", None, {"x": 1}])
    return item


def _ack(tally: Tally, resp: httpx.Response, token: str) -> None:
    try:
        doc = resp.json()
    except ValueError:
        return
    if resp.status_code == 200 and isinstance(doc, dict):
        _ack_results(tally, doc.get("results") or [], token)


def _ack_results(tally: Tally, results: list, token: str) -> None:
    with tally.lock:
        for r in results:
            if isinstance(r, dict) and r.get("status") == "ok":
                tally.acked[r["id"]] = token
            elif isinstance(r, dict) and (r.get("error") or {}).get("code") == "already_exists":
                tally.reapplied.append(str(r.get("id")))  # every id is fresh: only a re-application gets this


def _raw(base: str, token: str, body: bytes, *, cut: bool) -> None:
    """Send a request over a raw socket, then close without reading: mid-body when `cut`."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        head = (f"POST /orders/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        s.sendall(head + (body[: len(body) // 2] if cut else body))


def _job(bases: list[str], clients: list[httpx.Client], rng: random.Random, tally: Tally, token: str) -> None:
    """An async job submitted to one instance, polled on random instances until it ends."""
    items = [_item(rng, rng.random() < 0.9) for _ in range(rng.randint(50, 400))]
    at = rng.randrange(len(bases))
    r = clients[at].post("/imports/batch", json={"operations": items})
    tally.record("job", r.status_code, r.text, at)
    if r.status_code != 202:
        return
    url = r.json()["status_url"]
    with tally.lock:
        tally.jobs["submitted"] += 1
    end = time.monotonic() + 90
    while time.monotonic() < end:
        at = rng.randrange(len(bases))
        try:
            r = clients[at].get(url)
        except (httpx.TransportError, OSError) as exc:
            tally.record("job", None, type(exc).__name__, at)
            time.sleep(0.1)
            continue
        tally.record("job", r.status_code, r.text, at)
        doc = r.json() if r.status_code == 200 else {}
        if doc.get("status") in ("completed", "failed", "cancelled"):
            results = list(doc.get("results") or [])
            cursor = doc.get("next_cursor")
            while cursor:
                page = clients[at].get(url, params={"cursor": cursor}).json()
                results.extend(page.get("results") or [])
                cursor = page.get("next_cursor")
            _ack_results(tally, results, token)
            with tally.lock:
                tally.jobs["completed" if len(results) == len(items) else "incomplete"] += 1
            return
        time.sleep(0.1)
    with tally.lock:
        tally.jobs["unfinished after 90 s"] += 1


def client_loop(bases: list[str] | str, n: int, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed + n)
    bases = [bases] if isinstance(bases, str) else bases
    token = f"soak-client-{n}"
    headers = {"Authorization": f"Bearer {token}"}
    kinds = ["valid"] * 4 + ["mixed"] * 2 + ["too_many", "too_big", "malformed", "retried", "cut", "unread_retry"]
    if len(bases) > 1:
        kinds.append("job")  # a fleet: jobs submitted to one instance, polled on any (taken over on a kill)
    clients = [httpx.Client(base_url=b, headers=headers, timeout=30) for b in bases]
    try:
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            at = rng.randrange(len(bases))
            base, c = bases[at], clients[at]
            try:
                if kind in ("valid", "mixed"):
                    items = [_item(rng, kind == "valid" or rng.random() < 0.6) for _ in range(rng.randint(1, 40))]
                    r = c.post("/orders/batch", json={"operations": items})
                    tally.record(kind, r.status_code, r.text, at)
                    _ack(tally, r, token)
                elif kind == "too_many":
                    r = c.post("/orders/batch", json={"operations": [_item(rng) for _ in range(1001)]})
                    tally.record(kind, r.status_code, r.text, at)
                    _ack(tally, r, token)
                elif kind == "too_big":
                    item = _item(rng)
                    item["note"] = "x" * 1_100_000
                    r = c.post("/orders/batch", json={"operations": [item]})
                    tally.record(kind, r.status_code, r.text, at)
                elif kind == "malformed":
                    r = c.post("/orders/batch", content=b'{"operations": [' + os.urandom(16),
                               headers={"Content-Type": "application/json"})
                    tally.record(kind, r.status_code, r.text, at)
                elif kind == "retried":
                    body = {"operations": [_item(rng) for _ in range(rng.randint(1, 20))]}
                    key = {"Idempotency-Key": uuid.uuid4().hex}
                    for _ in range(2):  # the retry may land on another instance
                        at = rng.randrange(len(bases))
                        c = clients[at]
                        r = c.post("/orders/batch", json=body, headers=key)
                        tally.record(kind, r.status_code, r.text, at)
                        _ack(tally, r, token)
                elif kind == "cut":
                    items = [_item(rng) for _ in range(rng.randint(2, 20))]
                    _raw(base, token, json.dumps({"operations": items}).encode(), cut=True)
                    tally.record(kind, None)
                    with tally.lock:
                        tally.cut.update({i["id"]: token for i in items})
                elif kind == "unread_retry":  # the answer is lost on the way back: close unread, then retry with the same key
                    body = {"operations": [_item(rng) for _ in range(rng.randint(1, 20))]}
                    key = uuid.uuid4().hex
                    raw = json.dumps(body).encode()
                    parts = urlsplit(base)
                    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
                        s.sendall((f"POST /orders/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: "
                                   f"application/json\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: {key}\r\n"
                                   f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw)
                    tally.record(kind, None)
                    at = rng.randrange(len(bases))
                    c = clients[at]
                    r = c.post("/orders/batch", content=raw, headers={"Idempotency-Key": key,
                                                                       "Content-Type": "application/json"})
                    tally.record(kind, r.status_code, r.text, at)
                    _ack(tally, r, token)
                if kind == "job":
                    _job(bases, clients, rng, tally, token)
            except (httpx.TransportError, OSError) as exc:
                tally.record(kind, None, type(exc).__name__, at)
    finally:
        for cl in clients:
            cl.close()


def read_back(base: str, ids: dict[str, str], workers: int = 16) -> tuple[int, int, list[str]]:
    """(readable, version > 1, lost ids) over every id in `ids`."""
    readable = twice = 0
    lost: list[str] = []
    lock = threading.Lock()
    todo = list(ids.items())

    def work() -> None:
        nonlocal readable, twice
        with httpx.Client(base_url=base, timeout=30) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    item_id, token = todo.pop()
                r = c.get("/orders/" + quote(item_id, safe=""), headers={"Authorization": f"Bearer {token}"})
                with lock:
                    if r.status_code == 200:
                        readable += 1
                        if (r.json().get("version") or 1) > 1:
                            twice += 1
                    else:
                        lost.append(item_id)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return readable, twice, lost


def _start_server() -> tuple[subprocess.Popen, str, tempfile.TemporaryDirectory]:
    """One instance on a fresh SQLite database in a temporary folder: (process, base URL, the folder)."""
    tmp = tempfile.TemporaryDirectory(prefix="batchspec-soak-")
    proc, base = _start_instance(os.path.join(tmp.name, "soak.db"))
    return proc, base, tmp


def _start_instance(db: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """One `python -m reference_server` on loopback (on `port`, or a free one): (process, base URL)."""
    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "reference_server", "--port", str(port), "--db", db],
                            stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            httpx.get(base + "/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    return proc, base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--url", help="a loopback URL of a running reference server (default: start one)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instances", type=int, default=1,
                    help="instances on one PostgreSQL database (a throwaway cluster); 1: one instance on SQLite")
    ap.add_argument("--kill", action="store_true", help="SIGKILL the second instance mid-run, then restart it")
    ap.add_argument("--down", type=float, default=2.0, help="seconds the killed instance stays down")
    args = ap.parse_args()
    procs: list[subprocess.Popen] = []
    tmp = cluster = None
    if args.url:
        if urlsplit(args.url).hostname not in LOOPBACK:
            print("soak: only loopback targets are allowed", file=sys.stderr)
            return 2
        bases = [args.url.rstrip("/")]
    elif args.instances > 1:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        from _postgres import PostgresCluster, unavailable
        why = unavailable()
        if why:
            print(f"soak: --instances needs PostgreSQL: {why}", file=sys.stderr)
            return 2
        cluster = PostgresCluster({"fsync": "on", "synchronous_commit": "off"}).start()
        db = cluster.new_database("soak")
        started = [_start_instance(db) for _ in range(args.instances)]
        procs = [p for p, _ in started]
        bases = [b for _, b in started]
    else:
        proc, base, tmp = _start_server()
        procs, bases = [proc], [base]
    if args.kill and len(bases) < 2:
        print("soak: --kill needs --instances 2 or more", file=sys.stderr)
        return 2
    tally = Tally()
    killed_at = restarted_at = None
    try:
        deadline = time.monotonic() + args.seconds
        threads = [threading.Thread(target=client_loop, args=(bases, n, deadline, tally, args.seed))
                   for n in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        if args.kill:
            time.sleep(max(0.0, args.seconds / 2 - (time.monotonic() - t0)))
            procs[1].send_signal(signal.SIGKILL)
            procs[1].wait(10)
            killed_at = time.monotonic() - t0
            time.sleep(args.down)
            procs[1], _ = _start_instance(db, int(urlsplit(bases[1]).port or 0))
            restarted_at = time.monotonic() - t0
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        reads = [read_back(b, tally.acked) for b in bases]
        cut_applied, _, _ = read_back(bases[0], tally.cut)
        alive = [httpx.post(b + "/orders/batch", json={"operations": [_item(random.Random())]}).status_code
                 for b in bases]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        if tmp is not None:
            tmp.cleanup()
        if cluster is not None:
            cluster.stop()
    where = f"{len(bases)} instances on PostgreSQL" if cluster is not None else bases[0]
    print(f"soak: {args.clients} clients for {elapsed:.1f} s against {where}")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (at the end)")
    if killed_at is not None:
        print(f"instance 2 SIGKILLed at {killed_at:.1f} s, restarted on its port at {restarted_at:.1f} s")
    print(f"requests sent:            {tally.requests} ({tally.requests / elapsed:.0f}/s)")
    print(f"  by kind:                {dict(sorted(tally.by_kind.items()))}")
    print(f"responses by class:       {dict(sorted(tally.by_class.items()))}")
    print(f"no response read:         {dict(sorted(tally.transport_errors.items()))} (cut and unread requests by design"
          + (", and every request to the killed instance while it was down)" if killed_at is not None else ")"))
    fivexx = sum(v for k, v in tally.by_class.items() if k == '5xx')
    print(f"5xx responses:            {fivexx}"
          + (f" ({tally.fivexx_by_instance.get(1, 0)} from the killed instance, "
             f"{fivexx - tally.fivexx_by_instance.get(1, 0)} from the others)" if killed_at is not None else ""))
    for line in tally.server_errors:
        print(f"  {line}")
    if tally.jobs:
        print(f"async jobs:               {dict(sorted(tally.jobs.items()))}")
    print(f"items acknowledged ok:    {len(tally.acked)}")
    for k, (readable, twice, lost) in enumerate(reads):
        label = f"instance {k + 1}" if len(bases) > 1 else "the server"
        print(f"read back on {label + ':':<12} {readable} readable, {len(lost)} lost (ok result, not readable), "
              f"{twice} applied twice (version > 1){': ' + ', '.join(lost[:5]) if lost else ''}")
    print(f"items applied twice:      {len(tally.reapplied)} re-applied (a fresh id answered already_exists)"
          f"{': ' + ', '.join(tally.reapplied[:5]) if tally.reapplied else ''}")
    print(f"cut-body items applied:   {cut_applied} of {len(tally.cut)} (must be 0: the body never arrived whole)")
    print(f"normal batch afterwards:  {alive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
