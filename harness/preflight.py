"""Everything that can be checked before a cell runs, checked before anything is written.

Used by `evalq validate` and by `evalq run` (which opens the database only
after these pass): models resolve, each variant suits each model's config
(GPTQ group size), suites' tasks exist, hub-only suites are not run offline.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from dataclasses import dataclass, field

from evalq.backends.base import BASELINE_VARIANT, get_backend
from evalq.matrix import Matrix, located, variant_options
from evalq.model_sources import ModelError, check_hub_model, read_config, resolve_revision
from evalq.suites import Suite, needs_lm_eval_index


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check(matrix: Matrix, suites: list[Suite], resolve_models: bool = True, lines: dict | None = None,
          allow_unchecked: bool = False) -> Preflight:
    """Every problem, and notes. `resolve_models` False (validate): hub models are looked up without
    resolving their revision, each said checked, could not be checked (a problem unless
    `allow_unchecked`) or does not exist; `lines` (key path → line) locates those problems."""
    out = Preflight()
    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1"
    unreachable = [s for s in suites if s.requires_hub and offline]
    for s in unreachable:
        out.problems.append(f"suites: {s.name!r} needs hub access, but HF_DATASETS_OFFLINE=1")
    out.problems += unknown_tasks([s for s in suites if s not in unreachable])
    out.problems += missing_shipped_data(suites)
    out.problems += serve_problems(matrix)
    for section in ("quality", "long_context", "serve"):
        text = getattr(matrix, section)
        if text and text.dataset and offline:
            out.problems.append(f"{section}: dataset {text.dataset!r} needs hub access, but HF_DATASETS_OFFLINE=1 "
                                f"(give a local text as {section}.path)")
        if text and section != "serve" and BASELINE_VARIANT not in matrix.variants:
            out.notes.append(f"{section}: {BASELINE_VARIANT} is not among the variants; each model's baseline is computed "
                             f"once with {BASELINE_VARIANT}'s defaults")
    for i, model in enumerate(matrix.models):
        where = f"models.{i} ({model.display_name})"
        if model.hub and not resolve_models:
            hub = check_hub_model(model.hub, model.revision)
            said = {"checked": "checked", "unchecked": "could not be checked", "missing": "does not exist"}[hub.state]
            message = f"{model.hub} {said}: {hub.detail}"
            if hub.state == "checked":
                out.notes.append(f"{where}: {message}")
            elif hub.state == "unchecked" and allow_unchecked:
                out.notes.append(f"{where}: {message} (--allow-unchecked: the run finds out)")
                continue
            else:
                hint = "" if hub.state == "missing" else " (--allow-unchecked to accept it unchecked)"
                out.problems.append(located(("models", i, "hub"), message + hint, lines or {}))
                continue
        try:
            if resolve_models:
                resolve_revision(model)
            config = read_config(model)
        except ModelError as exc:
            out.problems.append(f"{where}: {exc}")
            continue
        if config is None:
            out.notes.append(f"{where}: config.json not available here; variants are checked at run time, before weights load")
            continue
        problem = quality_window_problem(matrix, config)
        if problem:
            out.problems.append(f"{where}, quality: {problem}")
        problem = long_context_problem(matrix, config)
        if problem:
            out.problems.append(f"{where}, long_context: {problem}")
        for variant in matrix.variants:
            backend = get_backend(variant)
            message = backend.check_model(variant_options(matrix, model, variant), config)
            if message:
                out.problems.append(f"{where}, variants.{variant}: {message}")
    return out


def serve_problems(matrix: Matrix) -> list[str]:
    """What a serving sweep needs installed: llama-server for a served gguf-* variant, vLLM's
    command where the matrix asks for it, transformers' serving app otherwise."""
    import shutil

    s = matrix.serve
    if not s:
        return []
    served = [v for v in matrix.variants if not s.variants or v in s.variants]
    runtimes = {get_backend(v).kv_runtime for v in served}
    out = []
    if s.server == "vllm":
        if shutil.which("vllm") is None:
            out.append("serve.server: vllm, but no `vllm` command is installed (pip install vllm, on a GPU box)")
        return out
    if "llama.cpp" in runtimes:
        from evalq.serve.sweep import llama_server_binary

        binary = llama_server_binary()
        if binary is None or not Path(binary).is_file():
            out.append(f"serve: a gguf-* variant is served but llama.cpp's llama-server is not installed{f' ({binary} is not a file)' if binary else ''} "
                       "(`make llama-server` builds it from the bindings' llama.cpp source; or set EVALQ_LLAMA_SERVER)")
    if "transformers" in runtimes:
        from transformers.utils.import_utils import is_serve_available

        if not is_serve_available():
            out.append("serve: transformers' serving app needs fastapi, uvicorn and openai (pip install 'transformers[serving]')")
    return out


def quality_window_problem(matrix: Matrix, config: dict) -> str | None:
    """The quality windows against the model's length, from config.json alone."""
    if not matrix.quality:
        return None
    from evalq.measure.quality import QualityError, model_length, plan_windows

    q = matrix.quality
    try:
        plan_windows(q.tokens, q.convention, q.context, q.stride, model_length(config), bos=None)
    except QualityError as exc:
        return str(exc)
    return None


def long_context_problem(matrix: Matrix, config: dict) -> str | None:
    """The long-context window against the model's length, as the run will check it."""
    from evalq.measure.long_context import length_problem

    return length_problem(matrix.long_context, config) if matrix.long_context else None


def missing_shipped_data(suites: list[Suite]) -> list[str]:
    """A suite on shipped data whose files are not installed: named per task, with the install command."""
    from evalq.suites import offline

    problems = []
    for s in suites:
        for task in s.shipped_tasks():
            try:
                for leaf in offline.leaves(task):
                    offline.data_files(leaf)
            except offline.OfflineDataMissing as exc:
                problems.append(f"suite {s.name!r}, task {task!r}: data not installed: {exc}")
    return problems


def unknown_tasks(suites: list[Suite]) -> list[str]:
    """Tasks lm-eval does not know, with the closest names. Local tasks (shipped
    in suites/tasks) are checked by the suite loader; lm-eval's own index is
    read only when a suite names other tasks."""
    if not needs_lm_eval_index(suites):
        return []
    names = {t.task for s in suites for t in s.tasks if not s.local_task_folder(t.task)}
    from lm_eval.tasks import TaskManager

    include = sorted({str(d) for s in suites for d in s.task_dirs()})
    known = set(TaskManager(include_path=include).all_tasks)
    problems = []
    for s in suites:
        for t in s.tasks:
            if t.task in names and t.task not in known:
                close = difflib.get_close_matches(t.task, known, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"suite {s.name!r}: unknown lm-eval task {t.task!r}{hint}")
    return problems
