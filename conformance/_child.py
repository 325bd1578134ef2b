"""A check in a process of its own: a second core for the one check that is pure CPU (issue 18).

Every check of a run shares one process and one interpreter lock with the others (and, in the CLI's
embedded run, with the reference server). ROB-01 is bound by its own CPU, not by waiting: drawing
schemathesis's cases. A check marked `@pytest.mark.concurrent(process=True)` runs, where the run
allows it, in a child process that the CLI forks at once (`Spare.start`), before any thread, server
or check has started, while the kit is still starting: the child warms up (imports schemathesis and
draws a few cases from a two-operation document, sending nothing) and waits on a pipe. The
concurrent phase then hands it the check (`Spare.run`); the child runs it in a worker session, as a
worker thread would, and sends back the check's outcome (verdict, evidence, figures), which the run
records as its own. The child sees the target only through HTTP, like every check.

Why fork and not a fresh interpreter: the child shares the pages of what the kit had imported by then
(pytest, httpx, the kit) until one side writes them. Measured on the embedded run, the peak total PSS
of the two processes was ~15 MiB lower than with `python -m` (docs/performance.md, round 7).

Used only by the CLI (the process is the kit's own): a library caller or a pytest plugin host never
gets a child process. Anything that goes wrong with the child (it could not start, died, sent
nothing readable) hands the check back: the main session runs it alone, as before, and the verdict
is the same either way; the report's notes say so.
"""
from __future__ import annotations

import gc
import os
import pickle
import struct
import sys
import threading
import time
from typing import Any

_LEN = struct.Struct(">Q")

# The rules whose check is marked `concurrent(process=True)`, and what a child calls to warm up for
# it while it waits ("module:function"; tests/test_child.py keeps this table and the markers in
# step). The CLI starts a child only when one of these rules will run.
IN_OWN_PROCESS: dict[str, list[str]] = {"ROB-01": ["conformance._fuzz:warm"]}


def _send(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(data)) + data)
    stream.flush()


def _receive(stream: Any) -> Any:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("the other side closed the pipe")
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("the other side closed the pipe mid-message")
    return pickle.loads(data)


class Spare:
    """One forked child, started early and given one check to run."""

    def __init__(self, pid: int, to_child: Any, from_child: Any):
        self.pid = pid
        self.returncode: int | None = None
        self._to, self._from = to_child, from_child
        self._lock = threading.Lock()
        self.used = False

    @classmethod
    def start(cls, warm: list[str] | None = None) -> "Spare | None":
        """Fork the child, which calls the `warm` functions and waits for its check; None where the
        platform cannot fork or the fork failed (the check then runs in the kit's process). The CLI
        calls it first, before it starts a thread, a server or a check: a fork copies only the
        calling thread, and the child uses nothing another thread could hold (it exits with
        os._exit, never through the parent's cleanup)."""
        if not hasattr(os, "fork"):
            return None
        try:
            r_job, w_job = os.pipe()
            r_reply, w_reply = os.pipe()
            # Everything allocated so far (the kit's imports) out of the collector's reach: a
            # collection in either process would otherwise write to every object's header and
            # copy the pages both share (measured: ~4 MiB less summed PSS, docs/performance.md).
            gc.freeze()
            pid = os.fork()
        except OSError:
            return None
        if pid == 0:  # the child: never returns into the CLI's code
            code = 1
            try:
                os.close(w_job)
                os.close(r_reply)
                code = _serve(r_job, w_reply, warm or [])
            except BaseException:  # noqa: BLE001 - an interrupt or a crash: the parent hands the check back
                pass
            finally:
                os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
        os.close(r_job)
        os.close(w_reply)
        return cls(pid, os.fdopen(w_job, "wb"), os.fdopen(r_reply, "rb"))

    def run(self, job: dict[str, Any], status: Any = None) -> list[Any] | str:
        """Hand the child one check and wait for its outcomes, or say why it could not run it (the
        caller then runs the check itself). `status(text)` gets the check's live ticks (_live)."""
        with self._lock:
            if self.used:
                return "the child process was already used"
            self.used = True
        try:
            _send(self._to, job)
            self._to.close()
            while True:
                reply = _receive(self._from)
                if not (isinstance(reply, dict) and "tick" in reply):
                    break
                if status is not None:  # the check's live status ("ROB-01 fuzzing ...: 40 cases sent")
                    status(str(reply["tick"]))
        except (OSError, EOFError, pickle.PickleError, ValueError, AttributeError, ImportError) as exc:
            self.close()
            return f"the child process ended without an answer ({type(exc).__name__}; exit {self.returncode})"
        finally:
            self._reap(5.0)
        if not isinstance(reply, dict) or not reply.get("outcomes"):
            return "the child process did not run the check"
        return list(reply["outcomes"])

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def _reap(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        if self.returncode is None:
            self.close()

    def close(self) -> None:
        """End the child (unused, or the run was interrupted): it never outlives the run."""
        if self.poll() is None:
            try:
                os.kill(self.pid, 9)
            except OSError:
                pass
            self._reap(5.0)
        for stream in (self._to, self._from):
            try:
                stream.close()
            except OSError:
                pass


def job_for(ctx: Any, item: Any) -> dict[str, Any]:
    """What the child needs to run `item` as this run would: the profile (its secrets go through the
    pipe, never to a file or an argument), the selection, the run's id (item ids stay unique: each
    check's ids carry its name) and the report directory (for bodies too large to inline)."""
    return {"profile": ctx.profile, "strict": ctx.strict, "classes": ctx.classes, "rules": ctx.rules,
            "run_id": ctx.run_id, "report_dir": ctx.report_dir, "evidence": ctx.evidence,
            "nodeid": item.nodeid, "file": str(item.path), "ticks": ctx.status is not None}


def _serve(job_fd: int, reply_fd: int, warm: list[str]) -> int:
    """The child's life: warm up, read one job, run its check in a worker session, send the outcome."""
    import importlib
    import signal

    try:  # never outlive the kit, even one killed with SIGKILL (Linux: PR_SET_PDEATHSIG)
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    # The CLI's stdout and stderr are the user's: nothing the child prints (a check, a library, C
    # code) may reach them. Its only output is the reply pipe.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    import pytest

    from . import _live, plugin  # noqa: F401 - imported now, while the parent starts, not after the job arrives
    from ._engine import RunContext, Scheduler, _WorkerInject, worker_args

    for spec in warm:
        module, _, func = spec.partition(":")
        try:
            found = importlib.import_module(module)
            if func:
                getattr(found, func)()
        except Exception:  # noqa: BLE001 - the check meets the same problem itself and says what it is
            pass
    with os.fdopen(job_fd, "rb") as jobs:
        try:
            job = _receive(jobs)
        except (EOFError, OSError):
            return 0  # not needed after all
    ctx = RunContext(profile=job["profile"], strict=job["strict"], classes=job["classes"], rules=job["rules"],
                     report_dir=job["report_dir"], evidence=job["evidence"], run_id=job["run_id"])
    scheduler = Scheduler([(job["nodeid"], None)])
    with os.fdopen(reply_fd, "wb") as reply:
        last = [0.0]

        def tick(text: str) -> None:  # the live status, to the parent's front end, 5 a second at most
            now = time.monotonic()
            if now - last[0] >= 0.2:
                last[0] = now
                _send(reply, {"tick": text})

        if job.get("ticks"):
            _live.install(tick)
        try:
            pytest.main(worker_args([job["file"]]), plugins=[_WorkerInject(ctx, scheduler)])
        finally:
            _live.install(None)
            ctx.close()
        for out in ctx.outcomes:
            out.figures["ran_in"] = "a child process of the kit (a core of its own)"
        _send(reply, {"outcomes": [] if scheduler.missed else ctx.outcomes})
    return 0
