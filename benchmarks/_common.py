"""What the benchmark scripts print alike: the machine they measured on (figures mean little without it)
and their table of figures."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("?" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def machine() -> str:
    return f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, {platform.system()}"


def load() -> str:
    """The load averages (1, 5, 15 min): the machine is shared, so say how busy it was."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_figures(rows: list[tuple[str, str]]) -> None:
    """The figures as a Markdown table, after a blank line: (what was measured, its value)."""
    width = max(len(a) for a, _ in rows)
    print()
    print(f"| {'figure':<{width}} | value: median (min-max, n) |")
    print(f"|{'-' * (width + 2)}|---|")
    for a, b in rows:
        print(f"| {a:<{width}} | {b} |")
