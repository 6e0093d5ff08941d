"""The package's folders stand on each other one way: no two folders of pvhpc/ import each other, directly or
round a longer loop. Read from the source (every import, at the top or inside a function), not from what a run
happens to load. The ground floor (pvhpc/jobs/) imports nothing of pvhpc above it, and the node side
(pvhpc/node/) nothing of pvhpc at all: its files run on compute nodes, outside pvhpc's environment."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pvhpc"
# What the ground floor may stand on: the error root and where pvhpc's files are, both of which import nothing.
GROUND_MAY_IMPORT = {"errors", "paths"}


def part_of(module: str) -> str | None:
    """pvhpc.sessions.job -> "sessions"; pvhpc.errors -> "errors"; None outside pvhpc."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pvhpc" and len(parts) > 1 else None


def imports() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> where, as "pvhpc/a/b.py:LINE imports pvhpc.c.d"."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        module = ".".join(relative.with_suffix("").parts)
        if path.name == "__init__.py":
            module = module.rsplit(".", 1)[0]
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        here = part_of(module) if "." in module else None
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # "from pvhpc import runtime" imports pvhpc.runtime; "from pvhpc.x import y" imports pvhpc.x
                targets = [f"{base}.{alias.name}" for alias in node.names] if base == "pvhpc" else [base]
            else:
                continue
            for target in targets:
                there = part_of(target)
                if here and there and there != here:
                    found[(here, there)].append(f"{relative}:{node.lineno} imports {target}")
    return found


def folders() -> set[str]:
    return {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each set of parts that reach each other (Tarjan's strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_no_two_folders_of_the_package_import_each_other():
    found = imports()
    inside = folders()
    edges: dict[str, set[str]] = defaultdict(set)
    for here, there in found:
        if here in inside and there in inside:
            edges[here].add(there)
    problems = []
    for loop in loops(edges):
        lines = [where for (here, there), wheres in sorted(found.items())
                 if here in loop and there in loop for where in wheres]
        problems.append(f"pvhpc/{{{', '.join(loop)}}}/ import each other:\n    " + "\n    ".join(lines))
    assert not problems, "\n".join(problems)


def test_the_ground_floor_stands_on_nothing_above_it():
    above = [where for (here, there), wheres in sorted(imports().items())
             if here == "jobs" and there not in GROUND_MAY_IMPORT for where in wheres]
    assert not above, "pvhpc/jobs/ imports from above it:\n    " + "\n    ".join(above)


def test_the_node_side_imports_nothing_of_pvhpc():
    found = [where for (here, there), wheres in sorted(imports().items()) if here == "node" for where in wheres]
    assert not found, "pvhpc/node/ runs on compute nodes without pvhpc, but:\n    " + "\n    ".join(found)


def test_the_reader_sees_a_loop_where_there_is_one():
    """The check itself: two parts that import each other, and a longer loop, are found."""
    assert loops({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert loops({"a": {"b"}, "b": {"c"}}) == []
