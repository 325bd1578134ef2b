"""Soak the reference server: N concurrent clients for T seconds, a mix of good and bad traffic.

    python benchmarks/soak.py [--clients 32] [--seconds 60] [--url http://127.0.0.1:PORT]

Without --url it starts the reference server (a separate process, fresh database) on loopback.
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
    acked: dict[str, str] = field(default_factory=dict)  # item id -> token of its client
    cut: dict[str, str] = field(default_factory=dict)    # ids of bodies cut mid-request (never complete)

    def record(self, kind: str, status: int | None, note: str = "") -> None:
        with self.lock:
            self.requests += 1
            self.by_kind[kind] += 1
            if status is None:
                self.transport_errors[kind] += 1
            else:
                self.by_class[f"{status // 100}xx"] += 1
                if status >= 500 and len(self.server_errors) < 20:
                    self.server_errors.append(f"{kind}: {status} {note[:160]}")


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
        with tally.lock:
            for r in doc.get("results") or []:
                if isinstance(r, dict) and r.get("status") == "ok":
                    tally.acked[r["id"]] = token


def _raw(base: str, token: str, body: bytes, *, cut: bool) -> None:
    """Send a request over a raw socket, then close without reading: mid-body when `cut`."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        head = (f"POST /orders/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        s.sendall(head + (body[: len(body) // 2] if cut else body))


def client_loop(base: str, n: int, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed + n)
    token = f"soak-client-{n}"
    headers = {"Authorization": f"Bearer {token}"}
    kinds = ["valid"] * 4 + ["mixed"] * 2 + ["too_many", "too_big", "malformed", "retried", "cut", "unread_retry"]
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            try:
                if kind in ("valid", "mixed"):
                    items = [_item(rng, kind == "valid" or rng.random() < 0.6) for _ in range(rng.randint(1, 40))]
                    r = c.post("/orders/batch", json={"operations": items})
                    tally.record(kind, r.status_code, r.text)
                    _ack(tally, r, token)
                elif kind == "too_many":
                    r = c.post("/orders/batch", json={"operations": [_item(rng) for _ in range(1001)]})
                    tally.record(kind, r.status_code, r.text)
                    _ack(tally, r, token)
                elif kind == "too_big":
                    item = _item(rng)
                    item["note"] = "x" * 1_100_000
                    r = c.post("/orders/batch", json={"operations": [item]})
                    tally.record(kind, r.status_code, r.text)
                elif kind == "malformed":
                    r = c.post("/orders/batch", content=b'{"operations": [' + os.urandom(16),
                               headers={"Content-Type": "application/json"})
                    tally.record(kind, r.status_code, r.text)
                elif kind == "retried":
                    body = {"operations": [_item(rng) for _ in range(rng.randint(1, 20))]}
                    key = {"Idempotency-Key": uuid.uuid4().hex}
                    for _ in range(2):
                        r = c.post("/orders/batch", json=body, headers=key)
                        tally.record(kind, r.status_code, r.text)
                        _ack(tally, r, token)
                elif kind == "cut":
                    items = [_item(rng) for _ in range(rng.randint(2, 20))]
                    _raw(base, token, json.dumps({"operations": items}).encode(), cut=True)
                    tally.record(kind, None)
                    with tally.lock:
                        tally.cut.update({i["id"]: token for i in items})
                else:  # the answer is lost on the way back: close unread, then retry with the same key
                    body = {"operations": [_item(rng) for _ in range(rng.randint(1, 20))]}
                    key = uuid.uuid4().hex
                    raw = json.dumps(body).encode()
                    parts = urlsplit(base)
                    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
                        s.sendall((f"POST /orders/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: "
                                   f"application/json\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: {key}\r\n"
                                   f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw)
                    tally.record(kind, None)
                    r = c.post("/orders/batch", content=raw, headers={"Idempotency-Key": key,
                                                                       "Content-Type": "application/json"})
                    tally.record(kind, r.status_code, r.text)
                    _ack(tally, r, token)
            except (httpx.TransportError, OSError) as exc:
                tally.record(kind, None, type(exc).__name__)


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
    tmp = tempfile.TemporaryDirectory(prefix="batchspec-soak-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "reference_server", "--port", str(port),
                             "--db", os.path.join(tmp.name, "soak.db")])
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(base + "/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    return proc, base, tmp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--url", help="a loopback URL of a running reference server (default: start one)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    proc = tmp = None
    if args.url:
        if urlsplit(args.url).hostname not in LOOPBACK:
            print("soak: only loopback targets are allowed", file=sys.stderr)
            return 2
        base = args.url.rstrip("/")
    else:
        proc, base, tmp = _start_server()
    tally = Tally()
    try:
        deadline = time.monotonic() + args.seconds
        threads = [threading.Thread(target=client_loop, args=(base, n, deadline, tally, args.seed))
                   for n in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        readable, twice, lost = read_back(base, tally.acked)
        cut_applied, _, _ = read_back(base, tally.cut)
        alive = httpx.post(base + "/orders/batch", json={"operations": [_item(random.Random())]}).status_code
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if tmp is not None:
            tmp.cleanup()
    print(f"soak: {args.clients} clients for {elapsed:.1f} s against {base}")
    print(f"requests sent:            {tally.requests} ({tally.requests / elapsed:.0f}/s)")
    print(f"  by kind:                {dict(sorted(tally.by_kind.items()))}")
    print(f"responses by class:       {dict(sorted(tally.by_class.items()))}")
    print(f"no response read:         {dict(sorted(tally.transport_errors.items()))} (cut and unread requests by design)")
    print(f"5xx responses:            {sum(v for k, v in tally.by_class.items() if k == '5xx')}")
    for line in tally.server_errors:
        print(f"  {line}")
    print(f"items acknowledged ok:    {len(tally.acked)}")
    print(f"items applied (readable): {readable}")
    print(f"items applied twice:      {twice} (version > 1)")
    print(f"items lost:               {len(lost)} (ok result, not readable){': ' + ', '.join(lost[:5]) if lost else ''}")
    print(f"cut-body items applied:   {cut_applied} of {len(tally.cut)} (must be 0: the body never arrived whole)")
    print(f"normal batch afterwards:  {alive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
