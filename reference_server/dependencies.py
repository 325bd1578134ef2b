"""Dependency planning of a batch: a stable topological order, unknown ids and cycles.

Items may carry ``depends_on: [ids of items in the same batch]``. Items are processed dependencies
first and otherwise in request order. Nothing here can hang: Kahn's algorithm and an iterative
Tarjan SCC are both linear in items plus edges.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class DependencyPlan:
    order: list[int]
    """Indices of the items in processing order (every index exactly once)."""
    deps: list[list[int]]
    """Per item, the indices of its known dependencies (deduplicated, in ``depends_on`` order)."""
    unknown: dict[int, str] = field(default_factory=dict)
    """Item index -> the first id of its ``depends_on`` that names no item of the batch."""
    cycles: dict[int, list[str]] = field(default_factory=dict)
    """Item index -> the ids of the cycle it is part of."""


def dependencies_of(item: dict[str, object]) -> list[str]:
    """The string ids of an item's ``depends_on`` (empty when absent or malformed)."""
    raw = item.get("depends_on")
    if not isinstance(raw, list):
        return []
    return [d for d in raw if isinstance(d, str)]


def plan(ids: list[str], depends_on: list[list[str]]) -> DependencyPlan:
    """Plan the processing of items ``ids`` (unique) with their ``depends_on`` lists."""
    n = len(ids)
    if not any(depends_on):
        return DependencyPlan(order=list(range(n)), deps=[[] for _ in range(n)])
    index = {item_id: i for i, item_id in enumerate(ids)}
    deps: list[list[int]] = []
    unknown: dict[int, str] = {}
    for i, names in enumerate(depends_on):
        known: list[int] = []
        for name in names:
            j = index.get(name)
            if j is None:
                unknown.setdefault(i, name)
            elif j not in known:
                known.append(j)
        deps.append(known)

    # Kahn, with a heap on the request index so that the order is stable.
    indegree = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in range(n)]
    for i, d in enumerate(deps):
        for j in d:
            dependents[j].append(i)
    ready = [i for i in range(n) if indegree[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in dependents[i]:
            indegree[k] -= 1
            if indegree[k] == 0:
                heapq.heappush(ready, k)

    cycles: dict[int, list[str]] = {}
    if len(order) < n:
        emitted = set(order)
        rest = [i for i in range(n) if i not in emitted]
        for component in _strongly_connected(rest, deps):
            if len(component) > 1 or component[0] in deps[component[0]]:
                names = [ids[i] for i in sorted(component)]
                for i in component:
                    cycles[i] = names
        # Items in a cycle, and items downstream of one, come last, in request order.
        order.extend(rest)
    return DependencyPlan(order=order, deps=deps, unknown=unknown, cycles=cycles)


def _strongly_connected(nodes: list[int], edges: list[list[int]]) -> list[list[int]]:
    """Tarjan's SCC over ``nodes`` (edges leaving ``nodes`` ignored), iteratively."""
    allowed = set(nodes)
    counter = 0
    low: dict[int, int] = {}
    number: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    out: list[list[int]] = []
    for root in nodes:
        if root in number:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            v, pos = work.pop()
            if pos == 0:
                number[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            succ = [w for w in edges[v] if w in allowed]
            recurse = False
            while pos < len(succ):
                w = succ[pos]
                pos += 1
                if w not in number:
                    work.append((v, pos))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], number[w])
            if recurse:
                continue
            if low[v] == number[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out
