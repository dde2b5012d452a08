"""What the leaderboard shows, computed from stored cells: rows, comparison
groups, deltas against fp16, the equal-cost verdicts and the Pareto frontier.

No I/O and no HTML here: render.py turns these into pages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

from evalq.backends.base import BASELINE_VARIANT, variant_details, variant_rank
from evalq.verdicts import Comparison, Difference, Judge, holm
from evalq.paired import group_signature
from evalq.headlines import headline, suite_average
from evalq.outcome import Plan, Quality
from evalq.record import CellRecord, PairedFigures

@dataclass
class TaskScore:
    metric: str
    value: float
    stderr: float | None


@dataclass
class Row:
    key: str
    model: str
    family: str
    params: float | None
    variant: str
    status: str
    error: str | None
    bits: int | None
    details: str
    weights_bytes: int | None
    peak_bytes: int | None  # whole cell
    serve_peak_bytes: int | None  # while generating: what "fits" means on the equal-cost page
    accuracy: float | None  # mean of the multiple-choice headline metrics
    accuracy_stderr: float | None
    tasks: dict[str, TaskScore]
    perplexity: float | None
    ttft_ms: float | None
    decode_tokens_per_s: float | None
    group: str  # rows are ranked only against rows of the same group (suites and hardware)
    trust_remote_code: bool
    baseline_note: str | None
    env: dict[str, Any] = field(default_factory=dict)
    delta_accuracy: float | None = None  # against the same model's fp16 row, points
    perplexity_ratio: float | None = None
    task_deltas: dict[str, float] = field(default_factory=dict)
    # paired quality against the same model's fp16 row (see evalq.paired, measure/quality.py)
    quality: Quality | None = None  # token-level: KLD, same top-1, Δp...
    paired: PairedFigures = field(default_factory=PairedFigures)  # headline figures: flips, McNemar p, choice KLD
    plan: Plan = field(default_factory=Plan)  # the memory planner's prediction
    flags: list[str] = field(default_factory=list)  # evidence of a quantization that did not happen or broke
    task_data: dict[str, Any] = field(default_factory=dict)  # shipped benchmark data: source, licence, deviations
    threads: dict[str, int] = field(default_factory=dict)  # CPU threads by phase
    baseline_key: str | None = None  # the row this one is compared against (paired.baselines)
    hardware: str = "–"  # the hardware class the cell is keyed for (env.hardware_class)
    matrix: str = ""
    date: str = "–"  # when the cell finished, UTC day
    source: "Source | None" = None  # where the weights came from
    subtasks: dict[str, list["Subtask"]] = field(default_factory=dict)  # an lm-eval group's members (MMLU's subjects)
    long_context: dict[str, Any] | None = None  # KV-cache types at long context (measure/long_context.py)
    serve: dict[str, Any] | None = None  # the request-rate sweep through a real server (serve/sweep.py)
    serve_settings: dict[str, Any] | None = None  # its rates, lengths and SLO

    @property
    def serve_step(self) -> dict[str, Any] | None:
        """The sweep's step at its highest rate within the SLO (p90 TTFT and TPOT, no error)."""
        best = (self.serve or {}).get("max_rate_within_slo")
        if best is None:
            return None
        want = None if best == "inf" else best
        return next((s for s in self.serve["steps"] if s["rate"] == want), None)

    @property
    def serve_slo_text(self) -> str:
        slo = (self.serve_settings or {}).get("slo") or {}
        return f"p90 TTFT ≤ {slo.get('ttft_ms', 0):g} ms, TPOT ≤ {slo.get('tpot_ms', 0):g} ms" if slo else "–"

    @property
    def threads_text(self) -> str:
        if self.threads:
            return ", ".join(f"{phase} {n}" for phase, n in self.threads.items())
        return str(self.env.get("torch_threads") or "–")  # a cell stored before threads were recorded by phase

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def fit_bytes(self) -> int | None:
        return self.serve_peak_bytes or self.peak_bytes

    @property
    def label(self) -> str:
        return f"{self.model} {self.variant}"

    @property
    def quantized(self) -> bool:
        return self.variant != BASELINE_VARIANT


@dataclass(frozen=True)
class Source:
    """A model's weights as a person finds them: a hub page at the revision measured, or a local path or package."""

    text: str
    url: str | None = None


@dataclass(frozen=True)
class Subtask:
    name: str
    value: float | None
    stderr: float | None
    depth: int  # 0: a direct member of the group


@dataclass(frozen=True)
class GroupInfo:
    """How a group of comparable rows is headed: its suites and hardware, then its tasks and settings."""

    title: str
    text: str


def describe_group(cell: dict[str, Any]) -> GroupInfo:
    parts = []
    for s in cell.get("suites", []):
        tasks = ", ".join(f"{t['task']} ({t['num_fewshot']}-shot{', limit ' + str(t['limit']) if t.get('limit') else ''})"
                          for t in s["tasks"])
        parts.append(f"{s['name']}: {tasks}")
    limit = (cell.get("eval") or {}).get("limit")
    title = " + ".join(s["name"] for s in cell.get("suites", [])) or "no suite"
    if cell.get("hardware"):
        title += f" on {cell['hardware']}"
    return GroupInfo(title, "; ".join(parts) + (f"; at most {limit} samples per task" if limit else ""))


def source_of(spec: dict[str, Any], revision: str | None) -> Source | None:
    if spec.get("hub"):  # the revision is the commit measured (model_sources.resolve_revision)
        rev = revision or spec.get("revision") or "main"
        return Source(f"{spec['hub']} @ {rev[:12]}", f"https://huggingface.co/{quote(spec['hub'])}/tree/{quote(rev, safe='')}")
    for kind, label in (("path", "local folder"), ("gguf", "local GGUF file"), ("package", "Python package")):
        if spec.get(kind):
            shown = revision and (revision if len(revision) <= 19 else revision[:19] + "…")
            return Source(f"{label} {spec[kind]}" + (f" ({shown})" if shown else ""))
    return None


def subtasks_of(rec: CellRecord) -> dict[str, list[Subtask]]:
    """The members of each lm-eval group the row shows (nested groups flattened, depth kept),
    each scored by its group's headline metric."""
    members = rec.group_subtasks
    out: dict[str, list[Subtask]] = {}

    def walk(group: str, metric: str, depth: int, into: list[Subtask]) -> None:
        for name in members.get(group) or []:
            h = headline(rec.metrics.get(name) or {}, metric)
            into.append(Subtask(name, h[1] if h else None, h[2] if h else None, depth))
            walk(name, metric, depth + 1, into)

    for task, score in rec.headline.items():
        if members.get(task):
            walk(task, score.metric, 0, out.setdefault(task, []))
    return out


def to_row(rec: CellRecord) -> Row:
    spec = rec.spec
    tasks = {t: TaskScore(s.metric, float(s.value), float(s.stderr) if s.stderr is not None else None)
             for t, s in rec.headline.items() if not s.perplexity}
    perplexity = next((s.value for s in rec.headline.values() if s.perplexity), None)
    accuracy, accuracy_se = suite_average({t: (s.metric, s.value, s.stderr) for t, s in rec.headline.items()}) or (None, None)
    paired = rec.paired
    return Row(
        key=rec.key, model=rec.model, family=spec.get("family") or rec.model.split("-")[0],
        params=spec.get("params"), variant=rec.variant, status=rec.status, error=rec.error,
        bits=(rec.details or {}).get("bits"), details=variant_details(rec.variant, rec.details or {}),
        weights_bytes=rec.weights_bytes, peak_bytes=rec.peak_memory_bytes, serve_peak_bytes=rec.serve_peak_bytes,
        accuracy=accuracy, accuracy_stderr=accuracy_se, tasks=tasks, perplexity=perplexity, ttft_ms=rec.ttft_ms,
        decode_tokens_per_s=rec.decode_tokens_per_s, group=paired.group if paired else group_signature(rec.cell),
        trust_remote_code=bool(spec.get("trust_remote_code")),
        baseline_note="baseline dequantized from a GGUF file" if spec.get("gguf") or spec.get("package") else None,
        env=rec.env, threads=rec.threads, baseline_key=paired.baseline_key if paired else None,
        quality=rec.quality, paired=rec.figures, flags=paired.flags if paired else [], plan=rec.plan or Plan(),
        task_data=rec.task_data or {}, hardware=rec.hardware or "–", matrix=rec.matrix or "",
        date=rec.finished_at.isoformat()[:10] if rec.finished_at else "–", source=source_of(spec, rec.revision),
        subtasks=subtasks_of(rec), long_context=rec.long_context, serve=rec.serve, serve_settings=rec.serve_settings,
    )


def add_deltas(rows: list[Row]) -> None:
    """Each row against its baseline row (paired.baselines: fp16 of the same matrix, model and suites)."""
    by_key = {r.key: r for r in rows}
    for r in rows:
        b = by_key.get(r.baseline_key) if r.baseline_key else None
        if b is None or not r.ok or r is b:
            continue
        if r.accuracy is not None and b.accuracy is not None:
            r.delta_accuracy = 100 * (r.accuracy - b.accuracy)
        if r.perplexity and b.perplexity:
            r.perplexity_ratio = r.perplexity / b.perplexity
        r.task_deltas = {t: 100 * (s.value - b.tasks[t].value) for t, s in r.tasks.items() if t in b.tasks}


def sort_rows(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.group, r.model, variant_rank(r.variant)))


@dataclass
class Verdict:
    """The larger model quantized (a) against the smaller model at full precision
    (b), from the comparison engine (evalq.verdicts): paired on the documents both
    scored, significant when its Holm-adjusted p over the page is below α."""

    a: Row
    b: Row
    comparison: Comparison
    p_adjusted: float | None = None  # set by adjust_for_multiplicity over every verdict a page shows
    claims: int = 1  # how many distinct comparisons that page makes

    @property
    def suite(self) -> Difference | None:
        return self.comparison.suite

    @property
    def significant(self) -> bool:
        return self.suite is not None and self.p_adjusted is not None and self.p_adjusted < self.comparison.alpha

    @property
    def winner(self) -> Row | None:
        if not self.significant:
            return None
        return self.a if self.suite.diff > 0 else self.b

    @property
    def difference(self) -> float | None:  # points, a − b
        return 100 * self.suite.diff if self.suite else None

    @property
    def interval(self) -> tuple[float, float] | None:  # points, 95 % (1 − α)
        return (100 * self.suite.lo, 100 * self.suite.hi) if self.suite else None

    @property
    def mde(self) -> float | None:  # points: what this many documents could detect with 80 % power
        return 100 * self.suite.mde if self.suite and self.suite.mde is not None else None


def adjust_for_multiplicity(verdicts: list[Verdict]) -> None:
    """Holm over the distinct comparisons a page shows (a pair shown at several budgets counts once)."""
    distinct: dict[tuple[str, str], list[Verdict]] = {}
    for v in verdicts:
        if v.suite is not None:
            distinct.setdefault((v.a.key, v.b.key), []).append(v)
    adjusted = holm([vs[0].suite.p for vs in distinct.values()])
    for vs, p in zip(distinct.values(), adjusted):
        for v in vs:
            v.p_adjusted, v.claims = p, len(distinct)


@dataclass
class Budget:
    limit: float  # in its axis's unit: GB, or $ per million tokens
    fitting: list[Row]
    best: Row | None
    verdicts: list[Verdict]
    best_in_slo: Row | None = None  # the most accurate that met its serving SLO at some rate of its sweep
    served: int = 0  # fitting rows measured under load


@dataclass(frozen=True)
class CostAxis:
    """What a budget limits: a row's cost in one unit (None: not measured, never fits)."""

    name: str
    unit: str
    of: Callable[[Row], "float | None"]


def memory_axis() -> CostAxis:
    return CostAxis("memory", "GB", lambda r: r.fit_bytes / 1e9 if r.fit_bytes else None)


def price_axis(gpu_price_per_hour: float) -> CostAxis:
    return CostAxis("cost", "$ per M tokens", lambda r: cost_per_million_tokens(r, gpu_price_per_hour))


@dataclass(frozen=True)
class LatencyTarget:
    """A serving target every row on the equal-cost page must meet: decode
    latency per token (TPOT, batch 1) and time to first token, in ms."""

    max_tpot_ms: float | None = None
    max_ttft_ms: float | None = None

    def __bool__(self) -> bool:
        return self.max_tpot_ms is not None or self.max_ttft_ms is not None

    def allows(self, r: Row) -> bool:
        if self.max_tpot_ms is not None and not (r.decode_tokens_per_s and 1000 / r.decode_tokens_per_s <= self.max_tpot_ms):
            return False
        return self.max_ttft_ms is None or (r.ttft_ms is not None and r.ttft_ms <= self.max_ttft_ms)

    def describe(self) -> str:
        parts = ([f"at most {self.max_tpot_ms:g} ms per token (decode, batch 1)"] if self.max_tpot_ms is not None else []) + \
                ([f"at most {self.max_ttft_ms:g} ms to the first token"] if self.max_ttft_ms is not None else [])
        return " and ".join(parts)


MAX_VERDICTS = 5  # per budget: the best quantized row of this many models, each against its full-precision rival


def equal_cost(rows: list[Row], budgets: list[float], judge: Judge, axis: CostAxis | None = None,
               latency: LatencyTarget = LatencyTarget()) -> list[Budget]:
    """For each budget on the axis (peak memory by default): the ok rows whose
    measured cost fits and that meet the latency target, the best by accuracy,
    and verdicts "larger model quantized vs smaller model at full precision":
    for the best quantized row of each of the top models, against the most
    accurate fp16 row of a smaller model that fits too. Linear in rows; each
    pair judged once. The verdicts' p-values are adjusted by the caller, over
    the whole page (adjust_for_multiplicity)."""
    axis = axis or memory_axis()
    judged: dict[tuple[str, str], Comparison] = {}
    costed = [(r, c) for r in rows if r.ok and r.accuracy is not None and latency.allows(r) and (c := axis.of(r)) is not None]
    out = []
    for limit in budgets:
        fitting = sorted((r for r, c in costed if c <= limit), key=lambda r: (-r.accuracy, axis.of(r), r.label))
        fp16 = [r for r in fitting if r.variant == BASELINE_VARIANT]  # already best first
        verdicts, seen_models = [], set()
        for a in (r for r in fitting if r.quantized):
            if a.model in seen_models:
                continue
            seen_models.add(a.model)
            b = next((r for r in fp16 if r.model != a.model and (r.params or 0) < (a.params or 0)), None)
            if b is not None:
                if (a.key, b.key) not in judged:
                    judged[(a.key, b.key)] = judge(a, b)
                verdicts.append(Verdict(a, b, judged[(a.key, b.key)]))
            if len(seen_models) == MAX_VERDICTS:
                break
        in_slo = next((r for r in fitting if r.serve_step is not None), None)
        out.append(Budget(limit, fitting, fitting[0] if fitting else None, verdicts, in_slo, sum(1 for r in fitting if r.serve)))
    return out


MEMORY_LADDER = sorted({0.5 * 2 ** i for i in range(12)} | {24, 48, 80})  # GB
PRICE_LADDER = sorted({m * 10.0 ** e for m in (1, 2, 5) for e in range(-3, 6)})  # $ per M tokens


def default_budgets(rows: list[Row], axis: CostAxis | None = None) -> list[float]:
    """Budgets at which the set of fitting rows changes, on a 1-2-4-8… GB ladder
    (1-2-5 for money)."""
    axis = axis or memory_axis()
    costs = sorted(c for r in rows if r.ok and (c := axis.of(r)) is not None)
    if not costs:
        return [8, 16, 24, 48, 80] if axis.name == "memory" else []
    budgets, last = [], None
    for limit in MEMORY_LADDER if axis.name == "memory" else PRICE_LADDER:
        fit = sum(c <= limit for c in costs)
        if fit and fit != last:
            budgets.append(limit)
            last = fit
        if fit == len(costs):
            break
    return budgets


def pareto(rows: list[Row], x: str) -> list[Row]:
    """Rows no other row beats on both accuracy (higher) and `x` (lower)."""
    pts = sorted((r for r in rows if r.ok and r.accuracy is not None and getattr_x(r, x)), key=lambda r: (getattr_x(r, x), -r.accuracy))
    front, best = [], -1.0
    for r in pts:
        if r.accuracy > best:
            front.append(r)
            best = r.accuracy
    return front


def getattr_x(r: Row, x: str) -> float | None:
    if x == "memory":
        return r.fit_bytes / 1e9 if r.fit_bytes else None
    if x == "latency":
        return 1000 / r.decode_tokens_per_s if r.decode_tokens_per_s else None
    raise ValueError(x)


def cost_per_million_tokens(r: Row, gpu_price_per_hour: float | None) -> float | None:
    if not gpu_price_per_hour or not r.decode_tokens_per_s:
        return None
    return gpu_price_per_hour / (r.decode_tokens_per_s * 3600) * 1e6
