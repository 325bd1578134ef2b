"""The kit's speed: ``batchspec run`` on the embedded default, this tree vs a base commit, side by side.

A script, not a test: ``python benchmarks/bench_kit.py [--base 102bbd9] [--runs 3] [--rule ID ...]
[--current-arg=--embedded-server=process] [--base-arg=...]`` (arguments for one side only; the same
on both sides with ``--base HEAD`` measures uncommitted changes in one mode).

The base commit is checked out into a temporary git worktree (removed at the end) and run with this
interpreter and ``PYTHONPATH`` pointing at it, so both sides use the same installed libraries and
differ only in the kit's (and the embedded reference server's) code. Runs alternate which side goes
first, so drift in the machine's load hits both. Per run: wall time, the peak RSS of the run's
process tree two ways, the exit code and the verdict of every rule (report.json). Memory:
- the peak total: the sum of the proportional set size (PSS, /proc/PID/smaps_rollup) of every
  process of the run's tree, sampled every 0.1 s: what the run costs the machine whether it is one
  process or several (a library page shared with another process counts for its share), and the
  figure the goal (<= 200 MB) is judged on;
- the peak RSS of the largest single process (``os.wait4`` rusage: what GNU time's %M reports).
Prints medians (min-max, n), the ratio current/base per pair (goal <= 0.5x), both memory figures,
whether the verdicts are the same, and the checks that take the time on each side (median
``duration_s`` of each check in report.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import load, machine, print_figures  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parent.parent


def _tree(root: int) -> list[int]:
    """`root` and every process descended from it (from /proc's ppid fields)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            parent[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(child for child, ppid in parent.items() if ppid == pid)
    return out


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class PeakPss:
    """Samples the summed PSS of a process tree every `every` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every, self.peak_kib = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in _tree(self.pid)))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def run_kit(tree: Path, report_dir: Path, extra: list[str]) -> dict[str, Any]:
    """One ``batchspec run`` of the kit in ``tree``: wall s, peak RSS MiB, exit code, verdicts, check durations."""
    env = {**os.environ, "PYTHONPATH": str(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "conformance", "run", "-q", "--report-dir", str(report_dir), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(tree), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pss = PeakPss(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    pss_mib = pss.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    report_path = report_dir / "report.json"
    if not report_path.exists():
        raise SystemExit(f"no report from {tree} (exit {proc.returncode}): {err[-2000:]}")
    report = json.loads(report_path.read_text())
    verdicts = {r["id"]: r["verdict"] for r in report["rules"]}
    durations = {f"{r['id']} {c['name']}": float(c.get("duration_s") or 0.0)
                 for r in report["rules"] for c in r.get("checks", [])}
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "pss_mib": pss_mib, "exit": proc.returncode,
            "verdicts": verdicts,
            "durations": durations}


def spread(values: list[float], unit: str, digits: int = 1) -> str:
    return (f"{statistics.median(values):,.{digits}f} {unit} ({min(values):,.{digits}f}-{max(values):,.{digits}f}, "
            f"n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="102bbd9", help="the commit to compare with (default 102bbd9)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--rule", action="append", default=[], help="only these rules (passed to batchspec run)")
    parser.add_argument("--class", dest="classes", action="append", default=[], help="only these classes")
    parser.add_argument("--top", type=int, default=12, help="how many of the slowest checks to list")
    parser.add_argument("--current-arg", action="append", default=[], metavar="ARG",
                        help="passed to the current side's batchspec run only (repeatable), e.g. "
                             "--current-arg=--embedded-server=process")
    parser.add_argument("--base-arg", action="append", default=[], metavar="ARG",
                        help="passed to the base side's batchspec run only (repeatable): with --base HEAD and "
                             "the same option on both sides, an A/B of uncommitted changes in one mode")
    args = parser.parse_args()
    extra = [a for r in args.rule for a in ("--rule", r)] + [a for c in args.classes for a in ("--class", c)]
    base_sha = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    head_sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    print(f"machine: {machine()}; load average before: {load()}")
    print(f"base: {base_sha}; current: this tree ({head_sha}{' + uncommitted changes' if dirty else ''})"
          + (f", run with {' '.join(args.current_arg)}" if args.current_arg else "")
          + (f"; base run with {' '.join(args.base_arg)}" if args.base_arg else ""))
    results: dict[str, list[dict[str, Any]]] = {"base": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="batchspec-bench-kit-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_tree), base_sha], cwd=ROOT, check=True)
        try:
            trees = {"base": base_tree, "current": ROOT}
            run_kit(ROOT, Path(tmp) / "warm", extra)  # warm the OS caches (bytecode, libraries); not counted
            for i in range(args.runs):
                order = ("base", "current") if i % 2 == 0 else ("current", "base")
                for side in order:
                    out = run_kit(trees[side], Path(tmp) / f"{side}-{i}",
                                  extra + (args.current_arg if side == "current" else args.base_arg))
                    results[side].append(out)
                    print(f"  run {i + 1} {side:7s}: {out['wall']:6.2f} s, peak total PSS {out['pss_mib']:6.1f} MiB, "
                          f"largest process RSS {out['rss_mib']:6.1f} MiB, "
                          f"exit {out['exit']}, load {load()}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    print(f"load average after: {load()}")
    base, cur = results["base"], results["current"]
    ratios = [c["wall"] / b["wall"] for b, c in zip(base, cur)]
    rows = [
        (f"wall time, base {base_sha}", spread([r["wall"] for r in base], "s", 2)),
        ("wall time, current", spread([r["wall"] for r in cur], "s", 2)),
        ("ratio current / base (per pair; goal <= 0.5x)", spread(ratios, "x", 2)),
        (f"peak total PSS of the run's processes, base {base_sha}", spread([r["pss_mib"] for r in base], "MiB")),
        ("peak total PSS of the run's processes, current (goal <= 200 MB = 190.7 MiB)",
         spread([r["pss_mib"] for r in cur], "MiB")),
        (f"peak RSS of the largest process (GNU time %M), base {base_sha}",
         spread([r["rss_mib"] for r in base], "MiB")),
        ("peak RSS of the largest process, current", spread([r["rss_mib"] for r in cur], "MiB")),
        ("exit codes base / current", f"{sorted({r['exit'] for r in base})} / {sorted({r['exit'] for r in cur})}"),
    ]
    differ: list[str] = []
    only: set[str] = set()
    for b in base:
        for c in cur:
            only |= set(b["verdicts"]) ^ set(c["verdicts"])
            for rule in sorted(set(b["verdicts"]) & set(c["verdicts"])):
                if b["verdicts"][rule] != c["verdicts"][rule]:
                    differ.append(f"{rule}: {b['verdicts'][rule]} -> {c['verdicts'][rule]}")
    differ = sorted(set(differ))
    shared = len(set(base[0]["verdicts"]) & set(cur[0]["verdicts"]))
    rows.append((f"verdicts of the {shared} rules both sides know",
                 "the same in every run" if not differ else "DIFFER: " + "; ".join(differ)))
    if only:
        newer = sorted(r for r in only if any(r in c["verdicts"] for c in cur))
        rows.append(("rules on one side only (catalogue changes)",
                     ", ".join(f"{r} ({'/'.join(sorted({c['verdicts'].get(r, '-') for c in cur}))})" for r in newer)
                     + (f"; gone: {', '.join(sorted(only - set(newer)))}" if only - set(newer) else "")))
    print_figures(rows)
    names = sorted({n for r in base + cur for n in r["durations"]},
                   key=lambda n: -statistics.median([r["durations"].get(n, 0.0) for r in base]))
    print()
    print("| check (median duration_s in report.json) | base | current |")
    print("|---|---|---|")
    for n in names[:args.top]:
        bm = statistics.median([r["durations"].get(n, 0.0) for r in base])
        cm = statistics.median([r["durations"].get(n, 0.0) for r in cur])
        print(f"| {n} | {bm:.2f} s | {cm:.2f} s |")
    for side, rs in (("base", base), ("current", cur)):
        total = statistics.median([sum(r["durations"].values()) for r in rs])
        print(f"| (sum of every check, {side}) | {total:.2f} s | |" if side == "base" else
              f"| (sum of every check, {side}) | | {total:.2f} s |")


if __name__ == "__main__":
    main()
