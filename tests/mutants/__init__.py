"""Every mutant of the reference server, one module per rule class."""
from __future__ import annotations

import importlib
import pkgutil

from ._base import REGISTRY, Mutant, mutant, variation

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["REGISTRY", "Mutant", "mutant", "variation"]
