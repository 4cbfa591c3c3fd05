#!/usr/bin/env python3
"""Fail on an import cycle between mmsearch modules, or on an import of the CLI.

Every import counts, also one inside a function: a lazy import hides a cycle from Python, not
from the design. The package layout (folder -> mmsearch.* name) is read from pyproject.toml.

    python scripts/check_imports.py [--root DIR]      exit 0: clean; 1: the problems, one per line
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import tomllib

ROOT_PACKAGE = "mmsearch"
CLI = "mmsearch.client.cli"


def modules(root: Path) -> dict[str, Path]:
    """mmsearch.* module name -> source file, from the package-dir mapping in pyproject.toml."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in mapping.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found.setdefault(name.removesuffix(".__init__"), path)
    return found


def imported(tree: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The mmsearch modules a module imports (a `from x import y` of a submodule y counts as x.y)."""
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in targets if name in known and name != module}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def problems(root: Path) -> list[str]:
    known = modules(root)
    graph = {name: imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
             for name, path in known.items()}
    found = [f"{known[name].relative_to(root)}: imports {CLI}; the CLI is a leaf, call the stage module instead"
             for name, targets in sorted(graph.items()) if CLI in targets]
    for component in cycles(graph):
        edges = [f"{name} -> {target}" for name in component for target in sorted(graph[name]) if target in component]
        found.append(f"import cycle between {', '.join(component)}: {'; '.join(edges)}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="the repository")
    args = parser.parse_args()
    found = problems(args.root.resolve())
    for line in found:
        print(line)
    if not found:
        print(f"imports: {len(modules(args.root.resolve()))} modules, no cycle, nothing imports the CLI")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
