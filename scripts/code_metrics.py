"""How hard evalq's code is to change, in four numbers anyone can rerun:
the longest functions, `dict[str, Any]` annotations, `EVALQ_*` names, and modules per layer
(the layers of tests/unit/test_layers.py).

    python scripts/code_metrics.py [--top 5]
"""
from __future__ import annotations

import argparse
import ast
import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("harness", "leaderboard")


def sources() -> list[Path]:
    return sorted(f for folder in FOLDERS for f in (ROOT / folder).rglob("*.py"))


def function_lengths() -> list[tuple[int, str]]:
    """(lines, path:line name) of every function and method, longest first."""
    out = []
    for f in sources():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{f.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    texts = {f: f.read_text() for f in sources()}
    lengths = function_lengths()
    print(f"functions in {', '.join(FOLDERS)}: {len(lengths)}; over 60 lines: {sum(n > 60 for n, _ in lengths)}")
    for n, where in lengths[: args.top]:
        print(f"  {n:4d}  {where}")
    print(f"dict[str, Any]: {sum(t.count('dict[str, Any]') for t in texts.values())}")
    names = sorted({m for t in texts.values() for m in re.findall(r"EVALQ_[A-Z0-9_]+", t)})
    print(f"EVALQ_* names: {len(names)}  {' '.join(names)}")
    layers = runpy.run_path(str(ROOT / "tests" / "unit" / "test_layers.py"))
    mods = layers["modules"]()
    print(f"modules: {len(mods)}")
    for i, (title, members) in enumerate(layers["LAYERS"]):
        print(f"  layer {i}: {len(members):3d}  {title.split(':')[0]}")


if __name__ == "__main__":
    main()
