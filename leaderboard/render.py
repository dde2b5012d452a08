"""Render the static leaderboard: a pure function of the stored rows.

Same rows (and the same build stamp) → byte-identical files. Everything
user-controlled goes through Jinja2's autoescape; the site needs no server and
no network (styles and the one script are bundled).
"""
from __future__ import annotations

import functools
import gc
import hashlib
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from evalq import __version__
from evalq.verdicts import ALPHA, Judge
from evalq.leaderboard import charts
from evalq.leaderboard.pages import (GroupInfo, LatencyTarget, Row, add_deltas, adjust_for_multiplicity, cost_per_million_tokens,
                                     default_budgets, describe_group, equal_cost, memory_axis, price_axis, sort_rows, to_row)
from evalq.backends.base import variant_rank
from evalq.record import ONE_AT_A_TIME, CellRecord, records_of, serve_steps
from evalq.results import current_rows, display_order, rate_label, to_csv, to_json

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class BuildInfo:
    built_at: str  # the only time in the site
    database: str
    budgets_gb: tuple[float, ...] | None = None
    gpu_price_per_hour: float | None = None
    alpha: float = ALPHA  # of every verdict on the site (evalq.verdicts)
    latency: LatencyTarget = LatencyTarget()  # what every row on the equal-cost page must meet


@functools.lru_cache(maxsize=None)
def slug(text: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"
    return f"{base[:60]}-{int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) % 10**8:08d}"


# The formatting of every number on the site: the templates' filters and the
# table's JSON rows both use these.
def _gb(n: int | None) -> str:
    return f"{n / 1e9:.2f}" if n else "–"


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return _fmt(None if v is None else 100 * v)


def _signed(v: float | None) -> str:
    return _fmt(v, "+.1f")


@dataclass(frozen=True)
class Cells:
    """What a table cell may need beyond its row: the row's model page, the GPU price's cost, α,
    and its serving sweep's three cells (worked out once for the three columns)."""

    row: Row
    page: str
    cost: float | None
    alpha: float

    @functools.cached_property
    def serve(self) -> list[list]:
        return serve_cells(self.row)


@dataclass(frozen=True)
class Column:
    id: str  # stable: the URL's state names columns by it
    label: str
    type: str  # "num" or "text": how the page sorts it
    default: bool  # shown until the reader picks columns
    # the row's cell, formatted here: [sort value, text, detail(, link)]; the page's script only places and sorts
    cell: Callable[[Row, Cells], list] = field(compare=False, repr=False)


# Shown by default: who and what, the suite average and its tasks, the footprint, speed and closeness to fp16.
DEFAULT_COLUMNS = {"model", "variant", "avg", "weights", "peak-gen", "decode", "kld", "recovery", "status"}


def _pct_cell(score: float | None, se: float | None) -> list:
    return [score, _pct(score), f"± {_pct(se)}" if se else ""]


def _task_cell(task: str) -> Callable[[Row, Cells], list]:
    def cell(r: Row, c: Cells) -> list:
        s = r.tasks.get(task)
        out = _pct_cell(s.value, s.stderr) if s else [None, "–", ""]
        if task in r.subtasks:  # an lm-eval group: its members one click away, on the model's page
            out[2] = f"{out[2]} · {len(r.subtasks[task])} subtasks".lstrip(" ·")
            out.append(f"{c.page}#subtasks-{slug(task)}")
        return out
    return cell


def _delta_cell(r: Row, c: Cells) -> list:
    lo, hi = r.paired.diff_lo, r.paired.diff_hi
    detail = (f"paired {_fmt(100 * (1 - c.alpha), 'g')} % CI {_signed(100 * lo)} to {_signed(100 * hi)}"
              if lo is not None and hi is not None else "")
    return [r.delta_accuracy, _signed(r.delta_accuracy), detail]


def _source_cell(r: Row, c: Cells) -> list:
    if not r.source:
        return [None, "–", ""]
    return [r.source.text, r.source.text, ""] + ([r.source.url] if r.source.url else [])


# Before the tasks' columns, then after them: (id, label, type, cell).
LEADING: list[tuple[str, str, str, Callable[[Row, Cells], list]]] = [
    ("model", "model", "text", lambda r, c: [r.model, r.model, "", c.page]),
    ("variant", "variant", "text", lambda r, c: [r.variant, r.variant, ""]),
    ("hardware", "hardware", "text", lambda r, c: [r.hardware, r.hardware, ""]),
    ("date", "date", "text", lambda r, c: [r.date, r.date, ""]),
    ("source", "weights from", "text", _source_cell),
    ("params", "params (B)", "num", lambda r, c: [r.params, _fmt(r.params / 1e9 if r.params else None, ".3g"), ""]),
    ("bits", "bits", "num", lambda r, c: [r.bits, str(r.bits or "–"), ""]),
    ("details", "details", "text", lambda r, c: [r.details, r.details, ""]),
    ("weights", "weights GB", "num", lambda r, c: [r.weights_bytes, _gb(r.weights_bytes), _predicted(r, "predicted_weights_bytes")]),
    ("peak-gen", "peak (gen.) GB", "num",
     lambda r, c: [r.serve_peak_bytes, _gb(r.serve_peak_bytes), _predicted(r, "predicted_peak_bytes")]),
    ("peak-cell", "peak (cell) GB", "num", lambda r, c: [r.peak_bytes, _gb(r.peak_bytes), ""]),
    ("avg", "avg acc %", "num", lambda r, c: _pct_cell(r.accuracy, r.accuracy_stderr)),
]
TRAILING: list[tuple[str, str, str, Callable[[Row, Cells], list]]] = [
    ("ppl", "ppl", "num", lambda r, c: [r.perplexity, _fmt(r.perplexity, ".2f"), ""]),
    ("delta", "Δ acc vs fp16", "num", _delta_cell),
    ("recovery", "recovery %", "num", lambda r, c: _recovery(r)),
    ("flips", "flips c→w / w→c", "num", lambda r, c: _flips(r)),
    ("mcnemar", "McNemar p", "num", lambda r, c: [r.paired.mcnemar_p, _fmt(r.paired.mcnemar_p, ".3g"), ""]),
    ("kld", "KLD", "num", lambda r, c: [r.paired.kld_mean, _fmt(r.paired.kld_mean, ".4f"), _kld_detail(r)]),
    ("top1", "same top-1 %", "num", lambda r, c: [r.paired.same_top1, _pct(r.paired.same_top1), ""]),
    ("ppl-ratio", "ppl ratio", "num", lambda r, c: [r.perplexity_ratio, _fmt(r.perplexity_ratio, ".3f"), ""]),
    ("ttft", "TTFT ms", "num", lambda r, c: [r.ttft_ms, _fmt(r.ttft_ms, ".0f"), ""]),
    ("decode", "decode tok/s", "num", lambda r, c: [r.decode_tokens_per_s, _fmt(r.decode_tokens_per_s, ".1f"), ""]),
    ("serve-rate", "req/s in SLO", "num", lambda r, c: c.serve[0]),
    ("serve-goodput", "goodput req/s", "num", lambda r, c: c.serve[1]),
    ("serve-saturation", "served tok/s (max)", "num", lambda r, c: c.serve[2]),
]
COST = ("cost", "$ / M tokens", "num", lambda r, c: [c.cost, _fmt(c.cost, ".2f"), ""])
STATUS = ("status", "status", "text", lambda r, c: [r.status, r.status, (r.error or "; ".join(r.flags))[:300]])


def table_columns(tasks: list[str], priced: bool) -> list[Column]:
    named = LEADING + [(f"task:{t}", t, "num", _task_cell(t)) for t in tasks] + TRAILING
    named += [COST] if priced else []
    named += [STATUS]
    return [Column(i, label, kind, i in DEFAULT_COLUMNS or i.startswith("task:"), cell) for i, label, kind, cell in named]


def table_row(r: Row, columns: list[Column], cost: float | None, alpha: float = ALPHA) -> dict[str, Any]:
    """One table row: each column's cell of it, every one formatted here."""
    context = Cells(r, f"models/{slug(r.model)}.html", cost, alpha)
    badges = (["remote code"] if r.trust_remote_code else []) + (["GGUF baseline"] if r.baseline_note else [])
    badges += ["suspect"] if r.flags else []
    return {"key": r.key, "badges": badges, "family": r.family, "variant": r.variant,
            "fit": r.fit_bytes / 1e9 if r.fit_bytes else None, "failed": not r.ok,
            "cells": [col.cell(r, context) for col in columns]}


def serve_cells(r: Row) -> list[list]:
    """The serving sweep in three columns: the highest request rate whose p90 met the SLO, the
    goodput there, and the most output tokens/s any rate achieved."""
    if not r.serve:
        return [[None, "–", ""]] * 3
    step, slo = r.serve_step, r.serve_slo_text
    rate = r.serve["max_rate_within_slo"]
    rate_cell = ([None, "none", f"no rate met {slo}"] if step is None else
                 [step["requests_per_s"], "all at once" if rate == "inf" else f"{rate:g}", f"{slo}; achieved {step['requests_per_s']:.2f} req/s"])
    good = [None, "–", ""] if step is None else [step["goodput"], _fmt(step["goodput"], ".2f"), f"requests/s meeting {slo}"]
    sat = r.serve.get("saturation_output_tokens_per_s")
    how = f"{r.serve.get('server') or 'the'} server, {r.serve.get('threads', '?')} threads"
    if r.serve.get("error"):  # the sweep ended early: its rates before the failure, and why
        how += f"; the sweep failed ({r.serve.get('status')}): {r.serve['error']}"
        sat_text = f"{_fmt(sat, '.1f')} (failed)" if sat is not None else f"failed ({r.serve.get('status')})"
        return [rate_cell, good, [sat, sat_text, how]]
    return [rate_cell, good, [sat, _fmt(sat, ".1f"), how]]


def serve_charts(model_rows: list[Row]) -> list[tuple[Markup, str]]:
    """A model's serving sweeps as two throughput–latency charts (a line per variant)."""
    served = [r for r in model_rows if r.ok and r.serve]
    if not served:
        return []
    slo = (served[0].serve_settings or {}).get("slo") or {}
    out = []
    for x, y, x_title, y_title, limit in (
            ("requests_per_s", "ttft_ms_p90", "achieved requests/s", "p90 TTFT (ms)", slo.get("ttft_ms")),
            ("output_tokens_per_s", "tpot_ms_p90", "achieved output tok/s", "p90 TPOT (ms)", slo.get("tpot_ms"))):
        series = {r.variant: [(s[x], s[y], rate_label(s["rate"])) for s in r.serve["steps"]] for r in served}
        out.append((charts.serve_curve(f"{y_title} vs {x_title.removeprefix('achieved ')}", series, x_title, y_title, limit), y))
    return out


def _cost_of(axis: Any, r: Row) -> str:
    """A row's cost on an equal-cost axis, with its unit."""
    if axis.name == "memory":
        return f"{_gb(r.fit_bytes)} GB"
    return f"${_fmt(axis.of(r), '.2f')} per M tokens"


def _predicted(r: Row, key: str) -> str:
    value = getattr(r.plan, key)
    return f"pred. {_gb(value)}" if value else ""


def _kld_detail(r: Row) -> str:
    parts = [f"p99 {_fmt(r.paired.kld_p99, '.3f')}"] if r.paired.kld_p99 is not None else []
    if r.paired.kld_floor is not None:
        parts.append(f"floor {_fmt(r.paired.kld_floor, '.4f')}")
    return " · ".join(parts)


def _recovery(r: Row) -> list:
    """Recovery against fp16 (the comparison engine's): the value, and its interval and 99 % gate as detail."""
    rec, lo, hi = r.paired.recovery, r.paired.recovery_lo, r.paired.recovery_hi
    if rec is None:
        return [None, "–", r.paired.not_compared or ""]
    detail = f"CI {_pct(lo)}–{_pct(hi)} · 99 % gate: {r.paired.gate_99}" if lo is not None else ""
    return [rec, _pct(rec), detail]


def _flips(r: Row) -> list:
    cw, wc = r.paired.correct_to_wrong, r.paired.wrong_to_correct
    if cw is None:
        return [None, "–", ""]
    rate = r.paired.flip_rate
    return [cw + wc, f"{cw} / {wc}", f"{_pct(rate)} % of answers changed" if rate is not None else ""]


def _env() -> Environment:
    env = Environment(loader=PackageLoader("evalq.leaderboard", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["gb"] = _gb
    env.filters["pct"] = _pct
    env.filters["num"] = _fmt
    env.filters["signed"] = _signed
    env.filters["slug"] = slug
    env.filters["rate_label"] = rate_label
    env.globals.update(serve_steps=serve_steps, ONE_AT_A_TIME=ONE_AT_A_TIME)
    return env


# The history page's titles for the figures a night keeps (drift.figures_of).
HISTORY_TITLES = {"text_ppl": "perplexity of the quality text", "kld_mean": "mean KLD to fp16",
                  "same_top1": "same top-1 as fp16", "weights_bytes": "weights (MB)",
                  "peak_memory_bytes": "peak memory (MB)", "ttft_ms@b1": "TTFT at batch 1 (ms)"}


def history_title(name: str) -> str:
    if name in HISTORY_TITLES:
        return HISTORY_TITLES[name]
    if name.startswith("decode_tokens_per_s@b"):
        return f"decode tokens/s at batch {name.rsplit('@b', 1)[1]}"
    task, _, metric = name.partition(":")
    return f"{task}: {metric}"


def history_charts(runs: list[Any], cells: list[Any]) -> dict[str, list[Any]]:
    """model → (chart, its points as table rows) per figure, a line per variant, over the nightly runs."""
    nights = [(r.id, r.started_at.strftime("%Y-%m-%d %H:%M")) for r in runs]
    known = {r.id for r in runs}
    flagged = {(r.id, name) for r in runs for name in (r.summary or {}).get("regressions", [])}
    data: dict[str, dict[str, dict[str, list]]] = {}
    for c in cells:
        if c.run_id not in known:
            continue
        for name, fig in (c.figures.get("metrics") or {}).items():
            if isinstance(fig.get("value"), (int, float)):
                value = fig["value"] / 1e6 if name.endswith("_bytes") else fig["value"]
                # accuracies carry their 95 % interval (the other figures' noise is not on the value's scale)
                half = charts.Z95 * fig["stderr"] if fig.get("test") == "accuracy" and fig.get("stderr") else None
                data.setdefault(c.model, {}).setdefault(name, {}).setdefault(c.variant, []).append(
                    (c.run_id, value, (c.run_id, f"{c.model} · {c.variant}") in flagged, half))
    dates = dict(nights)

    def points(series: dict[str, list]) -> list[tuple]:  # the chart as a table: variant, night, date, value, ± 95 %, flagged
        return sorted((variant, run, dates[run], value, half, flag) for variant, pts in series.items()
                      for run, value, flag, half in pts if run in dates)

    return {model: [(charts.history(f"{model}: {history_title(name)}", nights, series), points(series))
                    for name, series in sorted(metrics.items())]
            for model, metrics in sorted(data.items())}


def first_screen(views: dict[str, dict[Any, list[Any]]], by_group: dict[str, list[Row]]) -> dict[str, dict[str, Any]]:
    """What the board answers, before any table, per group: each memory budget's first
    equal-cost verdict, and each model's quantized rows with their 99 % gate."""
    out = {}
    for g, view in views.items():
        memory = next((bs for axis, bs in view.items() if axis.name == "memory"), [])
        models: dict[str, list[Row]] = {}
        for r in by_group[g]:
            if r.quantized:
                models.setdefault(r.model, []).append(r)
        out[g] = {"budgets": [b for b in memory if b.verdicts], "models": models}
    return out


def board_rows(records: list[CellRecord]) -> tuple[list[Row], dict[str, GroupInfo]]:
    """The board's rows, sorted, with their deltas against fp16; and each comparison group's heading."""
    rows, groups = [], {}
    for rec in records:
        row = to_row(rec)
        rows.append(row)
        if row.group not in groups:  # described once: thousands of rows share a group
            groups[row.group] = describe_group(rec.cell)
    rows = sort_rows(rows)
    add_deltas(rows)
    return rows, groups


def build(db_rows: list[Any], out: Path, info: BuildInfo, samples: Callable[[str, str], list] | None = None,
          history: tuple[list[Any], list[Any]] | None = None) -> Path:
    """Write the site into `out`; return the path of index.html. `samples(key,
    task)` gives a cell's per-sample records, for answer flips against fp16;
    `history`: the nightly runs and their cells, for the history page."""
    db_rows = current_rows(db_rows)
    # one judge for every comparison on the site: each cell's documents read once, one α
    judge = Judge(db_rows, samples, alpha=info.alpha)
    records = records_of(db_rows, samples, judge)  # once: the table rows and both downloads use them
    rows, groups = board_rows(records)
    budgets = list(info.budgets_gb) if info.budgets_gb else default_budgets(rows)  # memory, GB
    by_group = {g: [r for r in rows if r.group == g] for g in sorted(groups)}
    tasks = sorted({t for r in rows for t in r.tasks})
    families = sorted({r.family for r in rows})
    variants = sorted({r.variant for r in rows}, key=variant_rank)
    models = sorted({r.model for r in rows})
    runs = history[0] if history else []
    context = dict(info=info, rows=rows, groups=groups, version=__version__, matrices=sorted({r.matrix for r in rows if r.matrix}), by_group=by_group, tasks=tasks, families=families,
                   variants=variants, models=models, budgets=budgets, has_history=bool(runs),
                   cost=lambda r: cost_per_million_tokens(r, info.gpu_price_per_hour), cost_of=_cost_of)

    out.mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    env = _env()

    def write(name: str, template: str, **extra: Any) -> None:
        depth = name.count("/")
        html = env.get_template(template).render(**context, **extra, root="../" * depth, page=name)
        (out / name).write_text(html, encoding="utf-8")

    priced = bool(info.gpu_price_per_hour)
    # group → axis → budgets: by peak memory, and by money where a GPU price is given
    axes = [memory_axis()] + ([price_axis(info.gpu_price_per_hour)] if info.gpu_price_per_hour else [])
    views = {g: {axis: equal_cost(rs, budgets if axis.name == "memory" else default_budgets(rs, axis), judge, axis, info.latency)
                 for axis in axes} for g, rs in by_group.items()}
    adjust_for_multiplicity([v for view in views.values() for bs in view.values() for b in bs for v in b.verdicts])
    columns = table_columns(tasks, priced)
    write("index.html", "index.html", columns=columns, answers=first_screen(views, by_group),
          tables={g: [table_row(r, columns, cost_per_million_tokens(r, info.gpu_price_per_hour), info.alpha) for r in rs]
                  for g, rs in by_group.items()})
    write("equal-cost.html", "equal_cost.html", views=views, alpha=info.alpha, latency=info.latency)
    write("frontier.html", "frontier.html", charts_by_group={
        g: [(charts.scatter(rs, x, title, x_title), charts.points(rs, x)) for x, title, x_title in (
            ("memory", "Accuracy vs peak memory", "Peak memory while generating (GB)"),
            ("latency", "Accuracy vs decode latency", "Decode latency at batch 1 (ms/token)"))]
        for g, rs in by_group.items()})
    by_model: dict[str, list[Row]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    for model in models:
        write(f"models/{slug(model)}.html", "model.html", model=model, model_rows=by_model[model],
              serve_charts=serve_charts(by_model[model]))
    if runs:
        write("history.html", "history.html", runs=runs, history=history_charts(*history))
    (out / "results.csv").write_text(to_csv(records), encoding="utf-8")
    (out / "results.json").write_text(to_json(records, indent=None) + "\n", encoding="utf-8")
    shutil.copytree(STATIC, out / "static", dirs_exist_ok=True)
    return out / "index.html"


def build_from_db(db: str, out: Path, budgets_gb: list[float] | None = None, gpu_price_per_hour: float | None = None,
                  built_at: str | None = None, alpha: float = ALPHA, latency: LatencyTarget = LatencyTarget()) -> Path:
    from evalq.store import Store

    stamp = built_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from evalq.store.db import safe_url

    info = BuildInfo(stamp, safe_url(db), tuple(budgets_gb) if budgets_gb else None, gpu_price_per_hour, alpha, latency)
    # Rendering 10,000 rows allocates millions of small objects and no cycles worth
    # collecting: the cyclic GC's repeated passes over them cost ~20 % of the build.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        store = Store(db, read_only=True)
        runs = store.nightly_runs()
        history = (runs, store.nightly_cells([r.id for r in runs])) if runs else None
        return build(display_order(store.cells()), out, info, store.sample_loader(), history)
    finally:
        if gc_was_enabled:
            gc.enable()


__all__ = ["BuildInfo", "Row", "build", "build_from_db"]
