#!/usr/bin/env python3
"""List the longest functions of the mmsearch package; fail if one is over the limit.

    python scripts/function_lengths.py [--root DIR] [--limit 50] [--top 5]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import tomllib


def functions(root: Path) -> list[tuple[int, str]]:
    """(lines, "file:line name") for every function and method in the package folders, longest first."""
    folders = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    where = f"{path.relative_to(root)}:{node.lineno} {node.name}"
                    found.append((node.end_lineno - node.lineno + 1, where))
    return sorted(found, key=lambda item: (-item[0], item[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="the repository")
    parser.add_argument("--limit", type=int, default=50, help="the most lines a function may have")
    parser.add_argument("--top", type=int, default=5, help="how many of the longest to list")
    args = parser.parse_args()
    found = functions(args.root.resolve())
    for lines, where in found[: args.top]:
        print(f"{lines:4d}  {where}")
    over = [(lines, where) for lines, where in found if lines > args.limit]
    for lines, where in over[args.top:]:
        print(f"{lines:4d}  {where}")
    if over:
        print(f"{len(over)} functions are over {args.limit} lines")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
