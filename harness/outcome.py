"""What a cell produced: one typed outcome, from the worker (or the process that
ran it) to the store and every reader of stored cells.

Stored as JSON in `cells.result`, exactly the keys the worker set; each section
keeps keys it does not name (`extra="allow"`), so an outcome stored by an older
or newer evalq reads back whole.
"""
from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict


class Status(str, Enum):
    """How a cell ended. `running` is the store's claim on a cell, never an end."""

    ok = "ok"
    error = "error"  # the worker raised, or exited without a result
    oom = "oom"  # out of memory, caught in the worker
    timeout = "timeout"  # exceeded the cell's wall-clock limit; its process group was killed
    killed = "killed"  # SIGKILL from outside (the kernel's OOM killer, a lost Ray node)
    unsupported = "unsupported"  # this variant cannot run this model here (missing library, bad config for the model)
    skipped = "skipped"  # predicted not to fit, or more than the Ray cluster has: never started
    running = "running"

    def __str__(self) -> str:
        return self.value


FAILURES = (Status.error, Status.oom, Status.timeout, Status.killed)


class Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class Speed(Section):
    ttft_ms: float | None = None  # at batch 1
    decode_tokens_per_s: float | None = None  # at batch 1
    threads: int | None = None
    by_batch: dict[str, dict[str, Any]] = {}


class Quality(Section):
    """Token-level figures against the model's fp16 baseline (measure/quality.py)."""

    ppl: float | None = None
    ppl_ratio: float | None = None
    kld_mean: float | None = None
    same_top1: float | None = None
    floor: dict[str, Any] | None = None  # the fp16 weights in another dtype against the baseline
    seconds: float | None = None


class Memory(Section):
    peak_memory_bytes: int | None = None
    by_phase: dict[str, dict[str, Any]] = {}


class Plan(Section):
    """The memory planner's prediction, from config.json alone."""

    predicted_weights_bytes: int | None = None
    predicted_peak_bytes: int | None = None  # while generating: prompt + new tokens at the largest batch
    kv_cache_bytes: int | None = None
    activation_bytes: int | None = None
    overhead_bytes: int | None = None
    sequence: int | None = None
    batch: int | None = None
    params: int | None = None
    error: str | None = None  # an architecture the planner does not know


class CellOutcome(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Status
    error: str | None = None
    # accuracy (lm-eval)
    metrics: dict[str, dict[str, Any]] | None = None
    n_samples: dict[str, Any] | None = None
    task_versions: dict[str, Any] | None = None
    task_data: dict[str, Any] | None = None  # shipped data: source, licence, deviations from lm-eval's hub data
    lm_eval: dict[str, Any] | None = None  # simple_evaluate's own result (evalq export --format lm-eval)
    accuracy_seconds: float | None = None
    # eval.until_decided: draw orders, documents evaluated, stopping reason, the sequence's verdict
    until_decided: dict[str, Any] | None = None
    threads: dict[str, int] | None = None  # CPU threads by phase (evalq.threads), as the cell resolved them
    # the other measurements
    quality: Quality | None = None
    long_context: dict[str, Any] | None = None  # KV-cache types at long context (measure/long_context.py)
    serve: dict[str, Any] | None = None  # the request-rate sweep through a real server (serve/sweep.py)
    speed: Speed | None = None
    memory: Memory | None = None
    memory_at_failure: dict[str, int] | None = None
    weights_bytes: int | None = None
    peak_memory_bytes: int | None = None
    load_seconds: float | None = None
    prepare_seconds: float | None = None
    # what was loaded, where, and what was predicted
    dtype: str | None = None
    details: dict[str, Any] = {}
    warnings: list[str] = []
    plan: Plan | None = None
    model_path: str | None = None
    env: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        return self.status is Status.ok

    def stored(self) -> dict[str, Any]:
        """The JSON stored in `cells.result`: the keys that were set, nothing added."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def from_stored(cls, result: dict[str, Any] | None, status: str | None = None) -> CellOutcome:
        data = dict(result or {})
        if status is not None:
            data.setdefault("status", status)
        return cls.model_validate(data)
