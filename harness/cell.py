"""A cell: one model in one variant with everything that decides its numbers.

Its key hashes the canonical JSON of that content (the model's resolved
revision and the versions of the libraries that change numbers included), so a
cell stored `ok` under its key never needs to run again.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from evalq.backends.base import BASELINE_VARIANT, get_backend  # noqa: F401 (BASELINE_VARIANT: cell's API)
from evalq.backends.hf import resolve_auto_dtypes
from evalq.cache import file_sha256
from evalq.env import COMMON_LIBRARIES, hardware_class, library_versions
from evalq.kv_cache import runtime_lacks
from evalq.resources import Resources
from evalq.threads import PHASES, resolve
from evalq.matrix import (EvalSettings, LongContextSettings, Matrix, ModelSpec, PerfSettings, QualitySettings,
                          ServeSettings, variant_options)
from evalq.suites import Suite

class Cell(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSpec
    revision: str
    variant: str
    options: dict[str, Any]  # the backend config with defaults filled in
    suites: list[Suite]
    perf: PerfSettings
    eval: EvalSettings
    device: str
    seed: int
    libraries: dict[str, str]
    # env.hardware_class: the same cell on another CPU or GPU class gives other numbers
    # (other kernels), so it is another cell; None only in cells stored before it was keyed
    hardware: str | None = None
    # Paired quality: the text slice, its content's hash, and the fp16 options
    # the model's baseline distributions are computed with.
    quality: QualitySettings | None = None
    quality_text_sha256: str | None = None
    baseline_options: dict[str, Any] | None = None
    # Quality at long context under each KV-cache type, and its text's hash.
    long_context: LongContextSettings | None = None
    long_context_text_sha256: str | None = None
    # Serving under load (which variants and models the matrix serves is not part of it).
    serve: ServeSettings | None = None
    serve_text_sha256: str | None = None
    # Not part of the key: they change how a cell is run, not its numbers.
    matrix: str = ""
    timeout_s: int | None = None
    # eval.until_decided: the fp16 cell's per-document headline scores (task → doc id → score),
    # handed over by the orchestrator so this cell can stop once its gates are decided
    baseline_scores: dict[str, dict[str, float]] | None = None
    # eval.until_decided.compare: per model this cell is compared with, that model's fp16 scores
    rival_scores: dict[str, dict[str, dict[str, float]]] | None = None

    @property
    def key(self) -> str:
        return self._hash()

    @property
    def rounds_key(self) -> str:
        """The key without eval.until_decided: the same documents in the same order score the
        same whatever the budget, step or gates, so a larger budget continues a smaller one's rounds."""
        return self._hash({"eval": {"until_decided"}})

    def _hash(self, also_exclude: dict[str, Any] | None = None) -> str:
        # exclude_none: a new optional field, left unset, does not change existing keys
        exclude = {"matrix": True, "timeout_s": True, "baseline_scores": True, "rival_scores": True, "suites": {"__all__": {"description"}}}
        content = self.model_dump_json(exclude=exclude | (also_exclude or {}), exclude_none=True)
        return hashlib.sha256(content.encode()).hexdigest()[:32]

    def threads(self, phase: str) -> int:
        """The CPU threads of one phase (threads.PHASES): timing with perf.threads on the
        CPU, everything else with eval.threads; None in the matrix means every core."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}: one of {', '.join(PHASES)}")
        if phase == "speed":
            return resolve(self.perf.threads if self.device == "cpu" else None)
        return resolve(self.eval.threads)

    def thread_plan(self) -> dict[str, int]:
        return {phase: self.threads(phase) for phase in PHASES}

    def resources(self, gpus: int = 1, max_memory_per_gpu: int | None = None) -> Resources:
        """What the cell may use here: its device, its threads by phase resolved on this machine,
        and the GPUs an executor gave it (a memory cap only where it shards over several)."""
        return Resources(self.device, self.thread_plan(), max(1, gpus), max_memory_per_gpu if gpus > 1 else None)

    @property
    def name(self) -> str:
        return f"{self.model.display_name} · {self.variant}"




def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def expand(matrix: Matrix, suites: list[Suite], resolve_revision: Callable[[ModelSpec], str], device: str | None = None,
           hardware: str | None = None) -> list[Cell]:
    """Every (model, variant) of the matrix, in matrix order, keyed for `hardware`
    (default: this machine's class for the device)."""
    device = device or resolve_device(matrix.device)
    hardware = hardware or hardware_class(device)
    cells = []
    text_sha = file_sha256(Path(matrix.quality.path)) if matrix.quality and matrix.quality.path else None
    long = matrix.long_context
    long_sha = file_sha256(Path(long.path)) if long and long.path else None
    serve_sha = file_sha256(Path(matrix.serve.path)) if matrix.serve and matrix.serve.path else None
    for model in matrix.models:
        revision = resolve_revision(model)
        baseline = None
        if matrix.quality or long:
            baseline = resolve_auto_dtypes(variant_options(matrix, model, BASELINE_VARIANT).model_dump(mode="json"), device)
        for variant in matrix.variants:
            backend = get_backend(variant)
            options = resolve_auto_dtypes(variant_options(matrix, model, variant).model_dump(mode="json"), device)
            cells.append(
                Cell(
                    model=model,
                    revision=revision,
                    variant=variant,
                    options=options,
                    suites=suites,
                    perf=matrix.perf,
                    eval=matrix.eval,
                    device=device,
                    seed=matrix.seed,
                    hardware=hardware,
                    libraries=library_versions(tuple(dict.fromkeys(COMMON_LIBRARIES + backend.libraries))),
                    quality=matrix.quality,
                    quality_text_sha256=text_sha,
                    baseline_options=baseline,
                    long_context=(kv := kv_types_for(long, backend)),
                    long_context_text_sha256=long_sha if kv else None,
                    serve=(served := serve_for(matrix.serve, model, variant)),
                    serve_text_sha256=serve_sha if served else None,
                    matrix=matrix.name,
                    timeout_s=matrix.timeout_s,
                )
            )
    return cells


def kv_types_for(long: LongContextSettings | None, backend: Any) -> LongContextSettings | None:
    """The long-context settings of one variant: the matrix's KV-cache types its runtime has (the
    cross of variants and types is of what each runtime offers); None when it has none of them."""
    if long is None:
        return None
    types = [t for t in long.kv_cache if runtime_lacks(backend.kv_runtime, t) is None]
    return long.model_copy(update={"kv_cache": types}) if types else None


def serve_for(serve: ServeSettings | None, model: ModelSpec, variant: str) -> ServeSettings | None:
    """The serving sweep of one cell, or None where the matrix serves not this model or variant."""
    if serve is None or (serve.variants and variant not in serve.variants) or (serve.models and model.display_name not in serve.models):
        return None
    return serve.model_copy(update={"variants": None, "models": None})


def key_difference(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """What differs between two cells' definitions, in words: why a key changed."""
    if not before or not after:
        return []
    out = []
    for name in sorted(set(before) | set(after)):
        if name in ("matrix", "timeout_s"):
            continue
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{name}.{k}: {a.get(k)!s:.60} → {b.get(k)!s:.60}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(f"{name} changed" if isinstance(a, (dict, list)) or isinstance(b, (dict, list)) else f"{name}: {a} → {b}")
    return out
