"""The import graph of the three packages has no cycle, and the core imports neither shell.

A cycle, even one that only type checking follows, means two modules can only be understood
together; and the core (`backchannel`) stays sans-I/O only as long as it never reaches into the
relay or the CLI. Imports are read with `ast`, so those under `TYPE_CHECKING` and those inside
functions (the CLI's lazy imports) count as much as the ones at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "backchannel": ROOT / "backchannel",
    "backchannel_cli": ROOT / "client" / "backchannel_cli",
    "backchannel_relay": ROOT / "server" / "backchannel_relay",
}
SHELLS = ("backchannel_cli", "backchannel_relay")

KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()
"""Cycles known and not yet broken (none now), each as the set of its modules: none may grow,
no other may appear, and one broken is taken off this list (its test says so)."""


def modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The modules of the three packages that module `name` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports module a.b when there is one, else a name of a.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(name, path, known)) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def test_the_walk_sees_every_kind_of_import() -> None:
    """Top-level, `TYPE_CHECKING` and function-level imports all make edges."""
    edges = graph()
    assert "backchannel.arrival" in edges["backchannel_cli.service"]
    assert "backchannel_cli.service" in edges["backchannel_cli.agent_keeper"]
    assert "backchannel_cli.negotiation" in edges["backchannel_cli.mediator"]  # TYPE_CHECKING
    assert "backchannel_cli.service" in edges["backchannel_cli.cli"]  # imported lazily


def test_the_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [frozenset({"a", "b", "c"})]


def test_no_import_cycles() -> None:
    found = set(cycles(graph()))
    assert found <= KNOWN_CYCLES, sorted(sorted(cycle) for cycle in found - KNOWN_CYCLES)


def test_the_known_cycles_are_still_there() -> None:
    """So the list above says exactly what is left to untangle."""
    gone = KNOWN_CYCLES - set(cycles(graph()))
    assert not gone, sorted(sorted(cycle) for cycle in gone)


def test_the_participant_features_are_out_of_the_circle() -> None:
    """The feature modules are typed against `participant_api`, never the service."""
    edges = graph()
    for feature in ("exercising", "hints", "mediator", "negotiation", "offrecord"):
        assert "backchannel_cli.service" not in edges[f"backchannel_cli.{feature}"], feature


def test_the_core_imports_no_shell() -> None:
    reaching = {
        (name, target)
        for name, targets in graph().items()
        if name.partition(".")[0] == "backchannel"
        for target in targets
        if target.partition(".")[0] in SHELLS
    }
    assert not reaching
