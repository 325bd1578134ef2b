"""Foreign-envelope fixtures: small servers the kit knows only by their profiles (tests/test_foreign_envelopes.py).

Shared here: the strict JSON reading that shelf_kv and tally_rpc document (NaN and Infinity are not
JSON; nesting is bounded, checked without recursion so hostile input cannot overflow the stack).
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["loads_strict", "nests_deeper"]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str | bytes) -> Any:
    """json.loads refusing NaN, Infinity and -Infinity with a ValueError."""
    return json.loads(text, parse_constant=_no_constant)


def nests_deeper(node: Any, limit: int) -> bool:
    """Whether `node` nests deeper than `limit` (iteratively: no recursion on hostile input)."""
    stack = [(node, 1)]
    while stack:
        cur, d = stack.pop()
        if d > limit:
            return True
        if isinstance(cur, dict):
            stack.extend((v, d + 1) for v in cur.values())
        elif isinstance(cur, list):
            stack.extend((v, d + 1) for v in cur)
    return False
