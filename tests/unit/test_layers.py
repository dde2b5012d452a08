"""evalq's modules import downward only, and no import cycle exists (function-level
imports included): each module sits in one layer of LAYERS and imports only
from its own layer or those below. docs/architecture.md's "Layers" diagram is this list."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"evalq": ROOT / "harness", "evalq.leaderboard": ROOT / "leaderboard", "evalq.suites": ROOT / "suites"}

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation: process lifeline, threads, CPU features, env, cache, the typed outcome, tables",
     ("evalq", "lifeline", "threads", "resources", "cpu", "env", "cache", "yamlpos", "gguf_header", "headlines", "sequential", "outcome",
      "architecture", "suites", "suites.offline", "store.migrations", "store.tables", "measure", "leaderboard", "serve")),
    ("variants: the backend boundary and its modules, the matrix, model sources, the planner",
     ("backends", "backends.base", "backends.hf", "backends.fp16", "backends.int8", "backends.nf4", "backends.gptq",
      "backends.gguf_converter", "backends.gguf", "backends.llamacpp", "backends.llamacpp_lm", "backends.torchao", "backends.hqq", "backends.awq", "kv_cache", "matrix", "model_sources", "planner")),
    ("cells and measurements",
     ("cell", "preflight", "measure.torch_model", "measure.scorer", "measure.accuracy", "measure.until_decided", "measure.memory", "measure.quality", "measure.speed",
      "measure.long_context", "measure.training", "serve.load", "serve.process", "serve.sweep", "serve.hf_server")),
    ("one cell run: its child process, the launcher, the store",
     ("run", "run.child", "run.launch", "store", "store.db", "store.merge")),
    ("a matrix run: executors, the orchestrator",
     ("executors", "orchestrator")),
    ("reading results: verdicts, pairing, records, drift, export",
     ("verdicts", "paired", "record", "results", "drift", "export")),
    ("the leaderboard", ("leaderboard.pages", "leaderboard.charts", "leaderboard.render")),
    ("the Python API and the nightly built on it", ("api", "nightly")),
    ("the CLI", ("cli", "__main__")),
]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            if "tasks" in f.relative_to(folder).parts:  # lm-eval task helpers, loaded by lm-eval
                continue
            parts = [p for p in f.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package] + parts)] = f
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, f in mods.items():
        base = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_of() -> dict[str, int]:
    return {("evalq" if m == "evalq" else f"evalq.{m}"): i for i, (_, members) in enumerate(LAYERS) for m in members}


def test_no_import_cycle_inside_evalq():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_layer():
    assert sorted(set(modules()) - set(layer_of())) == []
    assert sorted(set(layer_of()) - set(modules())) == []  # a module renamed or removed: update LAYERS


def test_modules_import_only_their_layer_or_below():
    layers = layer_of()
    upward = [f"{a} (layer {layers[a]}) imports {b} (layer {layers[b]})"
              for a, targets in import_graph().items() for b in targets if layers[b] > layers[a]]
    assert upward == []
