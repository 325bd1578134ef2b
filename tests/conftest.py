"""Shared fixtures of the kit's own tests: run the kit in-process against the reference server or a mutant."""
from __future__ import annotations

import copy
import os
import json
from pathlib import Path
from typing import Any

import pytest

import conformance
from conformance import ASGIThreadTransport, RunReport, Verdict, bundled_profile

ROOT = Path(__file__).resolve().parent.parent
MATRIX_DIR = ROOT / "build" / "kill-matrix"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def reference_profile(base_url: str = "http://reference.test", overrides: dict[str, Any] | None = None):
    prof = bundled_profile().with_base_url(base_url)
    if overrides:
        prof = conformance._profile.from_data(deep_merge(prof.data, overrides), "reference profile (test overrides)")
    return prof


def run_kit(app: Any, *, classes: list[str] | None = None, rules: list[str] | None = None,
            overrides: dict[str, Any] | None = None, report_dir: str | None = None, **kw: Any) -> RunReport:
    """Run the kit in-process (ASGI) against `app`."""
    transport = ASGIThreadTransport(app)
    try:
        return conformance.run(reference_profile(overrides=overrides), transport=transport, classes=classes,
                               rules=rules, report_dir=report_dir, **kw)
    finally:
        transport.close()


def run_kit_socket(app: Any, *, classes: list[str] | None = None, rules: list[str] | None = None,
                   overrides: dict[str, Any] | None = None, report_dir: str | None = None, **kw: Any) -> RunReport:
    """Run the kit over a real loopback socket against `app` served by uvicorn in a thread."""
    from reference_server import start_in_thread

    server = start_in_thread(app=app)
    try:
        return conformance.run(reference_profile(server.base_url, overrides), classes=classes, rules=rules,
                               report_dir=report_dir, **kw)
    finally:
        server.stop()


JOB_TERMINAL = ("completed", "failed", "cancelled")


def finish_job(client: Any, url: str, timeout: float, interval: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll a reference job until it is terminal (or `timeout` passes), then read every result page:
    (last job state, every result). The restart and fleet takeover tests judge both."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        job = client.get(url, params={"limit": 0}).json()
        if job["status"] in JOB_TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(interval)
    results: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(url, params={"cursor": cursor} if cursor else None).json()
        results.extend(page["results"])
        cursor = page.get("next_cursor")
        if not cursor:
            return job, results


def verdicts(report: RunReport) -> dict[str, Verdict]:
    return {r.id: r.verdict for r in report.rules}


@pytest.fixture
def reference_app(tmp_path):
    from reference_server import create_app

    return create_app(str(tmp_path / "ref.db"))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        MATRIX_DIR.mkdir(parents=True, exist_ok=True)
        for f in MATRIX_DIR.glob("*.json"):
            f.unlink()


def record_matrix_row(row: dict[str, Any]) -> None:
    MATRIX_DIR.mkdir(parents=True, exist_ok=True)
    (MATRIX_DIR / f"{row['mutant']}.json").write_text(json.dumps(row))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = [json.loads(f.read_text()) for f in sorted(MATRIX_DIR.glob("*.json"))] if MATRIX_DIR.exists() else []
    if not rows:
        return
    rows.sort(key=lambda r: (r["rule"] or "~", r["mutant"]))
    tr = terminalreporter
    tr.section("kill matrix (rule × mutant)")
    lines = ["| rule | mutant | verdict of its rule | other MUST FAILs | caught |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rule'] or '(legal variation)'} | {r['mutant']} | {r['verdict']} | "
                     f"{', '.join(r['other_fails']) or '-'} | {'yes' if r['caught'] else 'NO'} |")
    for line in lines:
        tr.write_line(line)
    caught = sum(1 for r in rows if r["caught"])
    tr.write_line(f"{caught} of {len(rows)} mutants/variations judged correctly")
    (ROOT / "build" / "kill-matrix.md").write_text("\n".join(lines) + "\n")


# -- PostgreSQL (issue 16): one throwaway cluster per test session (per xdist worker) ------------

def _no_postgres(reason: str) -> None:
    """Skip with the reason on a developer machine; under CI (CI=true) a missing PostgreSQL fails."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def postgres():
    """A running throwaway PostgreSQL cluster (``tests/_postgres.py``), removed after the session."""
    from _postgres import PostgresCluster, unavailable

    why = unavailable()
    if why:
        _no_postgres(why)
    cluster = PostgresCluster()
    try:
        cluster.start()
    except RuntimeError as exc:
        _no_postgres(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def db_for(request, tmp_path):
    """``db_for(backend)``: a fresh database of ``backend`` (a SQLite path or a PostgreSQL URL)."""
    def make(backend: str) -> str:
        if backend == "sqlite":
            return str(tmp_path / f"ref-{os.urandom(4).hex()}.db")
        return request.getfixturevalue("postgres").new_database()
    return make
