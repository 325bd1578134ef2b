"""The seams of the kit (issue 12): one raw HTTP layer, one envelope table, suites on the public vocabulary."""
from __future__ import annotations

import datetime
import json
import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from conformance import Verdict, _profile
from conformance._client import Session, Target, tls_verify
from conformance._envelope import DEFAULTS
from conformance.checks import observed, observed_notes
from conftest import ROOT, reference_profile, run_kit, run_kit_socket, verdicts

SUITES = ROOT / "conformance" / "suites"


# -- SIZE-03 reads the profile's error mapping ---------------------------------------------------

def _fault_413(app: Any) -> Any:
    """A correct 413 whose code and message sit only at non-canonical pointers (/fault/kind, /fault/text)."""
    body = json.dumps({"fault": {"kind": "PayloadTooLarge", "text": "the body is over the 1 MiB limit"}}).encode()

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        state: dict[str, bool] = {}

        async def rewrite(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start" and msg["status"] == 413:
                state["413"] = True
                headers = [(k, v) for k, v in msg.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
                headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                return await send({**msg, "headers": headers})
            if msg["type"] == "http.response.body" and state.get("413"):
                if not msg.get("more_body"):
                    await send({"type": "http.response.body", "body": body})
                return
            await send(msg)

        await app(scope, receive, rewrite)
    return wrapped


MAPPED = {"envelope": {"batch_error_code": "/fault/kind", "batch_error_message": "/fault/text",
                       "codes": {"batch_too_large": "PayloadTooLarge"}}}


@pytest.mark.parametrize("runner", [run_kit, run_kit_socket], ids=["in-process", "socket"])
def test_size03_passes_a_413_at_mapped_pointers(tmp_path, runner):
    from reference_server import create_app

    app = _fault_413(create_app(str(tmp_path / "ref.db")))
    report = runner(app, rules=["SIZE-03"], overrides=MAPPED)
    rule = {r.id: r for r in report.rules}["SIZE-03"]
    assert rule.verdict == Verdict.PASS, rule.reason


def test_size03_fails_the_same_413_when_the_profile_does_not_map_it(tmp_path):
    """The mapping is what makes the body clear: unmapped, the check can fail on it."""
    from reference_server import create_app

    report = run_kit(_fault_413(create_app(str(tmp_path / "ref.db"))), rules=["SIZE-03"])
    rule = {r.id: r for r in report.rules}["SIZE-03"]
    assert rule.verdict == Verdict.FAIL and "no clear error" in rule.reason


# -- the raw layer: TLS setting and fixed query on every raw request ------------------------------

def test_tls_resolver_verify_false_wins_over_a_ca_bundle():
    assert tls_verify({"verify_tls": False, "ca_bundle": "/etc/ca.pem"}) is False
    assert tls_verify({"ca_bundle": "/etc/ca.pem"}) == "/etc/ca.pem"
    assert tls_verify({}) is True


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchspec-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


class _RecordingTLSServer:
    """A loopback TLS server that records each request line and answers 413 to everything."""

    def __init__(self, cert: str, key: str):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
                tls.settimeout(2)
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                tls.settimeout(0.3)  # read what body comes (closing on unread bytes would reset the answer)
                try:
                    while tls.recv(65536):
                        pass
                except (OSError, ssl.SSLError):
                    pass
                if buf:
                    self.lines.append(buf.split(b"\r\n", 1)[0].decode("latin-1"))
                    body = b'{"error": "batch_too_large", "message": "over the limit"}'
                    tls.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                tls.close()
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self.sock.close()


def _raw_target(port: int, verify: bool) -> Target:
    data = reference_profile(f"https://127.0.0.1:{port}/v1").data
    data["target"]["verify_tls"] = verify
    data["endpoints"]["batch"]["query"] = {"api-version": "2024-01", "tag": "a b"}
    return Target(Session(_profile.from_data(data, "raw test")), [])


def _every_raw_mode(target: Target) -> list[Any]:
    body = b'{"operations": []}'
    return [
        target.raw("batch", content=body, note="plain"),
        target.raw("batch", chunks=iter([body[:5], body[5:]]), framing="chunked", body_text="<streamed>"),
        target.raw("batch", content=body, declared_length=len(body) + 100, timeout=2),
        target.raw("batch", content=body, declared_length=len(body), send_bytes=len(body) // 2, half_close=True),
        target.raw("batch", json_body={"operations": []}, read_answer=False),
    ]


def test_verify_tls_false_and_endpoint_query_reach_every_raw_request(tmp_path):
    server = _RecordingTLSServer(*_self_signed(tmp_path))
    try:
        target = _raw_target(server.port, verify=False)
        outs = _every_raw_mode(target)
        assert [o.status for o in outs[:3]] == [413] * 3, [o.error for o in outs]
        # a cut body over TLS: the server's TLS layer may end the connection at the ragged end of input
        assert outs[3].status == 413 or outs[3].closed, outs[3]
        for _ in range(50):
            if len(server.lines) == 5:
                break
            threading.Event().wait(0.05)
        assert len(server.lines) == 5, server.lines
        assert all(line.split(" ")[1] == "/v1/orders/batch?api-version=2024-01&tag=a+b" for line in server.lines), server.lines
        # evidence is kept for every raw exchange, with the URL as sent
        assert len(target.evidence) == 5
        assert all("api-version=2024-01" in ex.url for ex in target.evidence)
    finally:
        server.close()


def test_the_stalled_body_question_goes_over_tls_with_the_endpoint_query(tmp_path):
    """The preflight's question (Target.answers_beside_a_stalled_body) takes the raw layer's road:
    verify_tls, the endpoint's fixed query, and both exchanges kept as evidence."""
    server = _RecordingTLSServer(*_self_signed(tmp_path))
    try:
        target = _raw_target(server.port, verify=False)
        # This server reads one connection at a time but gives up on a missing body after 0.3 s:
        # the GET is answered within the 1 s the kit gives it.
        assert target.answers_beside_a_stalled_body([{"id": "bs-tls-1", "amount": 1}]) is True
        for _ in range(50):
            if len(server.lines) == 2:
                break
            threading.Event().wait(0.05)
        assert server.lines == ["POST /v1/orders/batch?api-version=2024-01&tag=a+b HTTP/1.1", "GET /v1 HTTP/1.1"]
        held, probe = target.evidence
        assert held.status == 413 and probe.status == 413 and "bs-tls-1" in (held.request_body or "")
    finally:
        server.close()


def test_raw_requests_verify_tls_by_default(tmp_path):
    server = _RecordingTLSServer(*_self_signed(tmp_path))
    try:
        out = _raw_target(server.port, verify=True).raw("batch", content=b"{}")
        assert out.status is None and "CERTIFICATE_VERIFY_FAILED" in (out.error or "")
    finally:
        server.close()


def test_raw_checks_send_the_endpoint_query(tmp_path):
    """SIZE-03 streamed, ROB-02's raw cases and IDEM-08's dropped connection all carry endpoints.batch.query."""
    from reference_server import create_app

    report = run_kit_socket(create_app(str(tmp_path / "ref.db")), classes=["CORE", "SIZE", "ROB", "IDEM"],
                            rules=["SIZE-03", "ROB-02", "IDEM-08"],
                            overrides={"endpoints": {"batch": {"query": {"tenant": "t1"}}}})
    v = verdicts(report)
    assert v["SIZE-03"] == Verdict.PASS and v["ROB-02"] == Verdict.PASS and v["IDEM-08"] == Verdict.PASS, v
    raw = [ex for r in report.rules for c in r.checks for ex in c.evidence
           if ex.method == "POST" and "/batch" in ex.url and "cleanup" not in (ex.note or "")]
    assert len(raw) > 10
    assert all("tenant=t1" in ex.url for ex in raw), [ex.url for ex in raw if "tenant=t1" not in ex.url]


# -- suites speak only the public vocabulary ------------------------------------------------------

FORBIDDEN = [
    (r"^\s*(import|from)\s+(socket|ssl|select|socketserver|http\.server|h11|asyncio)\b", "socket use"),
    (r"\bsocket\.(socket|create_connection|create_server)\b", "socket use"),
    (r"^\s*from\s+conformance(\.\w+)*\s+import\s+_", "import of a private module"),
    (r"^\s*from\s+conformance\._\w+", "import of a private module"),
    (r"^\s*import\s+conformance\._", "import of a private module"),
    (r"^\s*from\s+conformance\.(?!checks\b)\w+\s+import", "import from a kit module other than conformance.checks"),
    (r"\.\_note\(|\.session\.|\bExchange\(|_retry_after_seconds", "a private member of the kit"),
    (r"envelope\.m\b|\.map\.m\b|_COUNT_NAMES|DEFAULT_BATCH_STATUS|DEFAULT_FAILED_VALUES", "a mapping read around the envelope"),
]


def test_suites_use_no_socket_and_no_private_module():
    found = []
    for path in sorted(SUITES.glob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern, what in FORBIDDEN:
                if re.search(pattern, line):
                    found.append(f"{path.name}:{n}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


# -- one table of canonical defaults, stated in the profile schema too ---------------------------

def test_profile_schema_states_the_canonical_defaults():
    schema = json.loads((ROOT / "schemas" / "profile.schema.json").read_text())
    env = schema["$defs"]["envelope"]["properties"]
    job = schema["properties"]["async"]["properties"]["job"]["properties"]
    for section, props in (("envelope", env), ("async.job", job)):
        for key, value in DEFAULTS[section].items():
            if key == "codes":
                continue  # no renamed codes by default: the spec's names
            if key == "summary":
                stated = {k: p.get("default") for k, p in props["summary"]["properties"].items() if "default" in p}
                assert stated == value, (section, key, stated)
                continue
            assert props[key].get("default") == value, (section, key, props[key].get("default"), value)


# -- observed(): what a check did not observe reaches its outcome ----------------------------------

def test_observed_notes_are_kept_per_check(monkeypatch):
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "conformance/suites/test_x.py::test_y[a] (call)")
    observed("the read endpoint was not declared")
    observed("the read endpoint was not declared")
    assert observed_notes("conformance/suites/test_x.py::test_y[a]") == ["the read endpoint was not declared"]
    assert observed_notes("conformance/suites/test_x.py::test_y[a]") == []


# -- check metadata: docs/checks.md and docs/coverage.md are generated and current ---------------

def test_generated_check_docs_are_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_checks", ROOT / "scripts" / "gen_checks.py")
    gen = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["gen_checks"] = gen  # dataclasses look their module up
    spec.loader.exec_module(gen)
    stale = [p.name for p, text in gen.generate().items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert not stale, f"{stale} are stale: run python scripts/gen_checks.py"
    checks = gen.collect_checks()
    assert len(checks) > 70 and all(c.requirement.startswith(c.rule) for c in checks), \
        [c.name for c in checks if not c.requirement.startswith(c.rule)]


def test_a_gzip_target_in_process_is_read_once(tmp_path):
    """A target that compresses its answers (Content-Encoding: gzip, a legal variation) is judged in
    process as over a socket: the in-process transport hands the client the bytes as sent, and the
    client decodes them once (it used to decode twice: every rule ERRORed on "incorrect header check")."""
    from starlette.middleware.gzip import GZipMiddleware

    from reference_server import create_app

    app = GZipMiddleware(create_app(str(tmp_path / "gz.db")), minimum_size=0)
    report = run_kit(app, classes=["CORE"])
    got = verdicts(report)
    assert report.preflight.get("ok"), report.preflight
    assert all(v in (Verdict.PASS, Verdict.SKIP) for v in got.values()), got
