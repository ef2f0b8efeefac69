"""The package's module-level import graph in figures: modules, arrows, floors, cycles.

    python -m benchmarks.import_graph            # this tree
    git archive f6917dd lakeexportd | tar -x -C /tmp/old && \\
        (cd /tmp/old && PYTHONPATH=. python -m benchmarks.import_graph)   # an older one

Counts every file of ``lakeexportd`` outside the sandbox (``__init__`` left out) and the
imports between them, those inside functions included (grimp reads them all). Floors are the
longest chain of imports; a cycle is a group of files that import each other. ``farm-studio
look`` gives the same picture folder by folder.
"""

from __future__ import annotations

import collections
import sys
from functools import cache

import grimp


def figures() -> str:
    graph = grimp.build_graph("lakeexportd", include_external_packages=False)
    files = {m for m in graph.modules
             if ".sandbox" not in m and not graph.find_children(m) and m != "lakeexportd"}
    arrows = {(a, b) for a in files for b in graph.find_modules_directly_imported_by(a)
              if b in files and b != a}
    following: dict[str, list[str]] = collections.defaultdict(list)
    for a, b in arrows:
        following[a].append(b)
    groups = _strongly_connected(sorted(files), following)
    group_of = {m: i for i, group in enumerate(groups) for m in group}
    above: dict[int, set[int]] = collections.defaultdict(set)
    for a, b in arrows:
        if group_of[a] != group_of[b]:
            above[group_of[a]].add(group_of[b])

    @cache
    def floor(i: int) -> int:
        return 1 + max((floor(j) for j in above[i]), default=0)

    cycles = [sorted(g) for g in groups if len(g) > 1]
    return (f"modules {len(files)}, arrows {len(arrows)}, "
            f"floors {max(floor(i) for i in range(len(groups)))}, cycles {len(cycles)} {cycles}")


def _strongly_connected(nodes: list[str], following: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of files that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in following[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in nodes:
        if node not in index:
            visit(node)
    return groups


if __name__ == "__main__":
    print(figures())
