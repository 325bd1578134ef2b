"""What every benchmark script prints about the machine it measured on (figures mean little without it)."""
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
