"""Checks marked `concurrent` run at the same time (issue 18) without changing what a run reports:
the same verdicts, reasons and notes on the same checks, in the same order, as one check at a time."""
from __future__ import annotations

import threading

import pytest

from conformance import Verdict
from conftest import run_kit

# Never beside other checks: their verdict needs the target otherwise idle (the overlap IDEM-03
# arranges itself, PERF-01's timing, SIZE-03's "promptly") or their traffic may disturb other checks
# on a fragile target (ROB-02's hostile corpus, ROB-03's replay of it, FLEET's instance deaths),
# or whether the target takes a request as a retry of the client's previous one (PART-04).
ALONE = {"IDEM-03", "PART-04", "ASYNC-05", "PERF-01", "ROB-03", "ASYNC-11", "FLEET-01", "FLEET-02", "FLEET-03", "FLEET-04",
         "FLEET-05"}
ALONE_CHECKS = {"test_over_max_bytes_refused_while_streaming",  # SIZE-03 over a socket (the in-process one may run beside)
                "test_hostile_inputs_rejected_cleanly"}  # ROB-02's hostile corpus
# ROB-02's lying Content-Length: beside the others only where the preflight saw that safe (test_stalled_body.py).
STALLED = {"test_body_shorter_than_its_length_is_not_awaited_for_ever"}


def _collected() -> list[pytest.Item]:
    """Every check of the suites, as the engine collects them (no target: collection only)."""
    import importlib.resources
    from pathlib import Path

    items: list[pytest.Item] = []

    class Grab:
        def pytest_collection_finish(self, session: pytest.Session) -> None:
            items.extend(session.items)

    suites = Path(str(importlib.resources.files("conformance").joinpath("suites")))
    ini = importlib.resources.files("conformance").joinpath("_pytest.ini")
    pytest.main([str(suites), "-c", str(ini), "--rootdir", str(suites), "--collect-only",
                 "--disable-plugin-autoload", "-p", "conformance.plugin", "-p", "no:cacheprovider",
                 "-p", "no:terminal", "-p", "no:xdist", "-p", "no:randomly"], plugins=[Grab()])
    return items


def test_checks_that_need_the_target_alone_are_never_marked_concurrent():
    from conformance._engine import is_concurrent
    from conformance.plugin import rule_of

    items = _collected()
    assert len(items) > 60
    marked = {rule_of(i) for i in items if is_concurrent(i)}
    assert not marked & ALONE, sorted(marked & ALONE)
    assert not {i.originalname for i in items if is_concurrent(i)} & ALONE_CHECKS
    from conformance._engine import holds_a_stalled_body

    assert {i.originalname for i in items if holds_a_stalled_body(i)} == STALLED
    # The waiting checks are the ones that gain: they are marked, and started first (ROB-01 the very first).
    from conformance._engine import expected_seconds

    ranked = sorted((i for i in items if is_concurrent(i)), key=lambda i: -expected_seconds(i))
    assert rule_of(ranked[0]) == "ROB-01"
    assert {"ROB-01", "ASYNC-14", "IDEM-09", "IDEM-08"} <= {rule_of(i) for i in ranked[:8]}


def _summary(report):
    return [(r.id, r.verdict, [(c.nodeid, c.verdict, tuple(c.observed)) for c in r.checks]) for r in report.rules]


def test_concurrent_run_reports_what_a_serial_run_reports(tmp_path):
    """Notes (`observed`) land on their own check when several checks run at once: IDEM-09 and
    ASYNC-12 each record one while other checks run beside them."""
    from reference_server import create_app

    rules = ["IDEM-09", "ASYNC-12", "ORD-02", "CORE-01", "CORE-02", "PART-01", "HTTP-04"]
    threads: set[str] = set()

    def progress(out, done, total):
        threads.add(threading.current_thread().name)

    serial = run_kit(create_app(str(tmp_path / "a.db")), rules=rules, concurrency=0)
    both = run_kit(create_app(str(tmp_path / "b.db")), rules=rules, progress=progress)
    assert _summary(both) == _summary(serial)
    assert any(name.startswith("batchspec-worker-") for name in threads), threads  # it did run concurrently
    notes = {c.nodeid: c.observed for r in both.rules for c in r.checks}
    assert sum(1 for n in notes.values() if n) == 2, notes  # IDEM-09's and ASYNC-12's, nowhere else
    for rule in ("IDEM-09", "ASYNC-12"):
        (check,) = [c for r in both.rules if r.id == rule for c in r.checks]
        assert check.verdict == Verdict.PASS and any("retention" in n for n in check.observed), check.observed


def test_maxfail_runs_every_check_alone(tmp_path):
    from _two_failures import run_two_failures

    threads: set[str] = set()
    report = run_two_failures(tmp_path, maxfail=1, progress=lambda o, d, t: threads.add(threading.current_thread().name))
    assert [r.id for r in report.rules if r.verdict == Verdict.FAIL] and threads == {threading.current_thread().name}


def test_scheduler_hands_out_in_order_and_one_check_of_a_group_at_a_time():
    from conformance._engine import Scheduler

    s = Scheduler([("a", "large jobs"), ("b", "large jobs"), ("c", None)])
    assert s.next() == "a"
    assert s.next() == "c"  # b waits: a of its group is in flight
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(s.next()))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and not got
    s.done("a")
    waiting.join(5)
    assert got == ["b"] and s.next() is None
    # A check a worker could not run goes back to the main session; stop() returns what was never handed out.
    s = Scheduler([("x", None), ("y", None)])
    assert s.next() == "x"
    s.miss("x")
    assert s.stop() == ["y"] and s.missed == ["x"] and s.next() is None


def test_a_worker_takes_only_the_checks_it_collected():
    from conformance._engine import Scheduler

    s = Scheduler([("rob::stalled", None), ("core::a", "g"), ("core::b", "g"), ("http::c", None)])
    generic = {"core::a", "core::b", "http::c"}.__contains__
    assert s.next(accept=generic) == "core::a"  # the stalled-body check is left for its own worker
    assert s.next(accept=generic) == "http::c"  # core::b waits for its group, http::c does not
    assert s.next(accept={"rob::stalled"}.__contains__) == "rob::stalled"
    assert s.next(accept={"rob::stalled"}.__contains__) is None  # nothing left that it can run: it ends
    s.done("core::a")
    assert s.next(accept=generic) == "core::b"
    # A check no worker could take stays queued, and stop() hands it to the main session.
    s = Scheduler([("only::main", None)])
    assert s.next(accept=lambda nodeid: False) is None
    assert s.stop() == ["only::main"]

