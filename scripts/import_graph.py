"""The package's import graph: every `import cljassist...` in every module (top level, inside
functions and under TYPE_CHECKING alike), the cycles in it, and a module map.

    python3 scripts/import_graph.py            # cycles (strongly connected components), then exit 1 if any
    python3 scripts/import_graph.py --map      # each module with its line count and what it imports
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "cljassist"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # the deepest known module the import names (a `from m import f` names m, not m.f)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith(PACKAGE):
                found.add(target)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    known = set(files)
    # importing a package runs its __init__; a package's own submodules are not a cycle with it
    return {name: {t for t in imports_of(path, name, known) if not name.startswith(t + ".")}
            for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--map", action="store_true", help="print the module map")
    args = parser.parse_args(argv)
    edges = graph(args.root)
    if args.map:
        for name in sorted(edges):
            path = args.root / (name.replace(".", "/") + ("/__init__.py" if (args.root / name.replace(".", "/")).is_dir() else ".py"))
            lines = len(path.read_text(encoding="utf-8").splitlines())
            short = sorted(t.removeprefix(PACKAGE + ".") for t in edges[name])
            print(f"{name.removeprefix(PACKAGE + '.') or PACKAGE:32} {lines:5}  -> {', '.join(short)}")
    found = cycles(edges)
    for component in found:
        print("cycle: " + " <-> ".join(m.removeprefix(PACKAGE + ".") for m in component))
    if not found:
        print("no import cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
