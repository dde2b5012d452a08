"""One stored cell as every reader sees it: `CellRecord`, built once from a stored row
(and its comparison against fp16) by `records_of`.

`evalq results` (table, CSV, JSON), the leaderboard, export and the nightly's drift read
these attributes; `as_json` is the JSON every output writes. The stored row's string-keyed
sections are read here and nowhere after.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cached_property
from typing import Any, Callable

from evalq.headlines import PERPLEXITY_METRIC, row_headlines, suite_average, suite_tasks
from evalq.outcome import Memory, Plan, Quality
from evalq.paired import Paired, pair_rows
from evalq.store.tables import CellRow
from evalq.verdicts import Judge

ONE_AT_A_TIME = "1 by 1"  # the single stream's row of a serving sweep: requests sent one after another


@dataclass(frozen=True)
class Score:
    """A task's headline (its metric, value and standard error), or the suite average (metric "average")."""

    metric: str
    value: float
    stderr: float | None

    @property
    def perplexity(self) -> bool:
        return self.metric == PERPLEXITY_METRIC


@dataclass(frozen=True)
class PairedFigures:
    """A cell's headline figures against its model's fp16 cell (None where not measured):
    token-level quality, answer flips, the comparison engine's difference, recovery and gates."""

    text_ppl: float | None = None
    text_ppl_ratio: float | None = None
    kld_mean: float | None = None
    kld_p99: float | None = None
    same_top1: float | None = None
    dp_rms: float | None = None
    dp_skew: float | None = None
    correct_to_wrong: int | None = None
    wrong_to_correct: int | None = None
    flip_rate: float | None = None
    mcnemar_p: float | None = None
    choice_kld: float | None = None
    kld_floor: float | None = None  # the fp16 weights in another dtype against the baseline
    same_top1_floor: float | None = None
    diff_vs_fp16: float | None = None
    diff_lo: float | None = None
    diff_hi: float | None = None
    p_vs_fp16: float | None = None
    p_vs_fp16_holm: float | None = None
    mde: float | None = None
    recovery: float | None = None
    recovery_lo: float | None = None
    recovery_hi: float | None = None
    gate_99: str | None = None
    gate_99_9: str | None = None
    not_compared: str | None = None
    documents_per_task: int | None = None  # until-decided: where the sequence stopped
    stopped: str | None = None
    weights_ratio: float | None = None
    quantized_modules: int | None = None
    flags: str | None = None


    def as_dict(self) -> dict[str, Any]:
        """The figures by name, in order (the CSV's columns); shallow, unlike dataclasses.asdict."""
        return {name: getattr(self, name) for name in FIGURE_NAMES}


FIGURE_NAMES = tuple(f.name for f in fields(PairedFigures))


@dataclass(frozen=True)
class KvRow:
    """One KV-cache type of a cell measured at long context."""

    model: str
    variant: str
    kv_cache: str
    runtime: str
    context: int
    scored: int
    windows: int
    figures: dict[str, Any]  # status, reason, kld_mean, kld_stderr, same_top1, ppl_ratio, kv_bytes…


@dataclass(frozen=True)
class ServeRow:
    """One request rate of a cell's serving sweep (ONE_AT_A_TIME: the single stream)."""

    model: str
    variant: str
    server: str
    step: dict[str, Any]  # rate, completed, requests, throughput, TTFT/TPOT percentiles, goodput, within_slo


@dataclass(frozen=True)
class CellRecord:
    key: str
    matrix: str | None
    model: str
    variant: str
    status: str
    error: str | None
    revision: str | None
    hardware: str | None  # the class the cell is keyed for: env.hardware_class
    dtype: str | None
    weights_bytes: int | None
    peak_memory_bytes: int | None
    load_seconds: float | None
    prepare_seconds: float | None
    ttft_ms: float | None
    decode_tokens_per_s: float | None
    speed_by_batch: dict[str, dict[str, Any]] | None
    speed_threads: int | None
    metrics: dict[str, dict[str, Any]]
    headline: dict[str, Score]
    average: Score | None  # the mean of the headline accuracies, over the whole suite only
    n_samples: dict[str, Any] | None
    task_data: dict[str, Any] | None  # shipped data: source, licence, deviations
    details: dict[str, Any] | None  # None: stored before the worker kept them
    memory: Memory | None
    plan: Plan | None  # the memory planner's prediction, from config.json alone
    quality: Quality | None  # token-level, against the fp16 baseline
    long_context: dict[str, Any] | None  # KV-cache types at long context, against fp16 weights and cache
    serve: dict[str, Any] | None  # the request-rate sweep through a real server, per rate and concluded
    serve_settings: dict[str, Any] | None  # its rates, lengths, SLO
    paired: Paired | None  # answer flips, footprint ratio, sanity flags, the comparison with fp16
    attempts: int | None
    finished_at: datetime | None
    wall_seconds: float | None
    # what the matrix asked for, and where it ran: not in the JSON (it carries the key)
    cell: dict[str, Any] = field(default_factory=dict)  # the whole stored cell (suites, eval settings, hardware)
    env: dict[str, Any] = field(default_factory=dict)  # libraries, CPU, GPU the cell ran with
    threads: dict[str, int] = field(default_factory=dict)  # CPU threads by phase
    lm_eval: dict[str, Any] | None = None  # simple_evaluate's own result, for `evalq export`

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def spec(self) -> dict[str, Any]:
        """The model as the matrix named it."""
        return self.cell.get("model") or {}

    @property
    def group_subtasks(self) -> dict[str, list[str]]:
        """An lm-eval group's members, as lm-eval reported them."""
        return (self.lm_eval or {}).get("group_subtasks") or {}

    @cached_property
    def figures(self) -> PairedFigures:
        return paired_figures(self)

    @property
    def serve_peak_bytes(self) -> int | None:
        """The peak while generating: what "fits" means on the equal-cost page."""
        return ((self.memory.by_phase if self.memory else {}).get("speed") or {}).get("peak_memory_bytes")

    @property
    def quantized_modules(self) -> int | None:
        return (self.details or {}).get("quantized_modules")

    @property
    def equal_cost_sentences(self) -> list[str]:
        """The equal-cost questions the matrix asked of this cell (eval.until_decided.compare), answered."""
        return [answer["sentence"] for answer in (self.paired.equal_cost if self.paired else {}).values()]

    def kv_rows(self) -> list[KvRow]:
        lc = self.long_context
        if not lc:
            return []
        return [KvRow(self.model, self.variant, kv_type, lc["runtime"], lc["context"], lc["scored"], lc["windows"], fig)
                for kv_type, fig in lc["types"].items()]

    def serve_rows(self) -> list[ServeRow]:
        sv = self.serve
        return [ServeRow(self.model, self.variant, sv["server"], step) for step in serve_steps(sv)] if sv else []

    def as_json(self) -> dict[str, Any]:
        """The record as `evalq results -f json`, the board's results.json and api.results give it."""
        return {
            "key": self.key, "matrix": self.matrix, "model": self.model, "variant": self.variant, "status": self.status,
            "error": self.error, "revision": self.revision, "hardware": self.hardware, "dtype": self.dtype,
            "weights_bytes": self.weights_bytes, "peak_memory_bytes": self.peak_memory_bytes,
            "load_seconds": self.load_seconds, "prepare_seconds": self.prepare_seconds, "ttft_ms": self.ttft_ms,
            "decode_tokens_per_s": self.decode_tokens_per_s, "speed_by_batch": self.speed_by_batch,
            "speed_threads": self.speed_threads, "metrics": self.metrics,
            "headline": {t: {"metric": s.metric, "value": s.value, "stderr": s.stderr} for t, s in self.headline.items()},
            "average": {"value": self.average.value, "stderr": self.average.stderr} if self.average else None,
            "n_samples": self.n_samples, "task_data": self.task_data, "details": self.details,
            "memory": _section(self.memory), "plan": _section(self.plan), "quality": _section(self.quality),
            "long_context": self.long_context, "serve": self.serve, "serve_settings": self.serve_settings,
            "paired": self.paired.as_dict() if self.paired else None, "attempts": self.attempts,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None, "wall_seconds": self.wall_seconds,
        }


def _section(section: Any) -> dict[str, Any] | None:
    """A typed section as the JSON shows it: the keys the worker stored."""
    return section.model_dump(mode="json", exclude_unset=True) if section is not None else None


def serve_steps(serve: dict[str, Any]) -> list[dict[str, Any]]:
    """A sweep's rows in order: the single stream (rate ONE_AT_A_TIME) where there was one, then each rate."""
    alone = [{**serve["single_stream"], "rate": ONE_AT_A_TIME}] if serve.get("single_stream") else []
    return alone + serve["steps"]


def record_of(row: CellRow, paired: Paired | None = None) -> CellRecord:
    outcome = row.outcome
    speed = outcome.speed
    cell = row.cell or {}
    scores = row_headlines(row)
    # a suite average over some of its tasks would pass for the whole suite's
    average = suite_average(scores) if all(t in scores for t, _ in suite_tasks(cell)) else None
    return CellRecord(
        key=row.key, matrix=row.matrix, model=row.model, variant=row.variant, status=row.status, error=row.error,
        revision=row.revision, hardware=cell.get("hardware"), dtype=row.dtype, weights_bytes=row.weights_bytes,
        peak_memory_bytes=row.peak_memory_bytes, load_seconds=row.load_seconds, prepare_seconds=row.prepare_seconds,
        ttft_ms=row.ttft_ms, decode_tokens_per_s=row.decode_tokens_per_s,
        speed_by_batch=speed.by_batch if speed else None, speed_threads=speed.threads if speed else None,
        metrics=row.metrics or {}, headline={t: Score(*h) for t, h in scores.items()},
        average=Score("average", *average) if average else None, n_samples=outcome.n_samples,
        task_data=outcome.task_data, details=outcome.details if "details" in outcome.model_fields_set else None,
        memory=outcome.memory, plan=outcome.plan, quality=outcome.quality, long_context=outcome.long_context,
        serve=outcome.serve, serve_settings=cell.get("serve"), paired=paired, attempts=row.attempts,
        finished_at=row.finished_at, wall_seconds=row.wall_seconds, cell=cell, env=outcome.env,
        threads=outcome.threads or {}, lm_eval=outcome.lm_eval)


def records_of(rows: list[CellRow], samples: Callable[[str, str], list[dict[str, Any]]] | None = None,
               judge: Judge | None = None) -> list[CellRecord]:
    """Each row as a record, with its comparison against its model's fp16 row
    (flips and the paired comparison need the per-sample records: `samples(key,
    task)`, e.g. Store.samples; `judge` sets α and may be shared with other pages)."""
    paired = pair_rows(rows, samples or (lambda key, task: []), judge)
    return [record_of(r, paired.get(r.key)) for r in rows]


def paired_figures(rec: CellRecord) -> PairedFigures:
    q = rec.quality or Quality()
    p = rec.paired
    total = (p.total if p else None) or {}
    comparison = p.comparison if p else None
    suite = comparison.suite if comparison else None
    seq = comparison.sequential if comparison else None
    recovery_lo, recovery_hi = (suite.recovery_lo, suite.recovery_hi) if suite else (None, None)
    if seq:  # until-decided: the confidence sequence's recovery interval, valid at the n it stopped at
        recovery_lo, recovery_hi = seq.recovery_lo, seq.recovery_hi
    floor = (p.floor if p else None) or {}
    return PairedFigures(
        text_ppl=q.ppl, text_ppl_ratio=q.ppl_ratio, kld_mean=q.kld_mean, kld_p99=(getattr(q, "kld", None) or {}).get("p99"),
        same_top1=q.same_top1, dp_rms=getattr(q, "dp_rms", None), dp_skew=getattr(q, "dp_skew", None),
        correct_to_wrong=total.get("correct_to_wrong"), wrong_to_correct=total.get("wrong_to_correct"),
        flip_rate=total.get("flip_rate"), mcnemar_p=total.get("mcnemar_p"), choice_kld=total.get("choice_kld"),
        kld_floor=floor.get("kld_mean"), same_top1_floor=floor.get("same_top1"),
        diff_vs_fp16=suite.diff if suite else None, diff_lo=suite.lo if suite else None, diff_hi=suite.hi if suite else None,
        p_vs_fp16=suite.p if suite else None, p_vs_fp16_holm=p.p_adjusted if comparison else None,
        mde=suite.mde if suite else None, recovery=suite.recovery if suite else None,
        recovery_lo=recovery_lo, recovery_hi=recovery_hi,
        gate_99=comparison.gate(0.99) if comparison else None, gate_99_9=comparison.gate(0.999) if comparison else None,
        not_compared=comparison.reason if comparison else None, documents_per_task=seq.n if seq else None,
        stopped=comparison.stop if seq else None, weights_ratio=p.weights_ratio if p else None,
        quantized_modules=rec.quantized_modules, flags="; ".join(p.flags if p else []) or None)
