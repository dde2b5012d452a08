"""Stored cells as rows for people (table) and programs (csv, json)."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from evalq.store.models import CellRow

# The metric shown for a task when only one fits: accuracy for multiple choice,
# word perplexity for rolling-loglikelihood tasks.
HEADLINE_METRICS = ("acc", "exact_match", "mc2", "word_perplexity")


def headline(task_metrics: dict[str, Any]) -> tuple[str, float, float | None] | None:
    for name in HEADLINE_METRICS:
        if isinstance(task_metrics.get(name), (int, float)):
            stderr = task_metrics.get(f"{name}_stderr")
            return name, task_metrics[name], stderr if isinstance(stderr, (int, float)) else None
    return None


def as_record(row: CellRow) -> dict[str, Any]:
    result = row.result or {}
    speed = result.get("speed") or {}
    return {
        "key": row.key,
        "matrix": row.matrix,
        "model": row.model,
        "variant": row.variant,
        "status": row.status,
        "error": row.error,
        "revision": row.revision,
        "dtype": row.dtype,
        "weights_bytes": row.weights_bytes,
        "peak_memory_bytes": row.peak_memory_bytes,
        "load_seconds": row.load_seconds,
        "prepare_seconds": row.prepare_seconds,
        "ttft_ms": row.ttft_ms,
        "decode_tokens_per_s": row.decode_tokens_per_s,
        "speed_by_batch": speed.get("by_batch"),
        "speed_threads": speed.get("threads"),
        "metrics": row.metrics or {},
        "n_samples": result.get("n_samples"),
        "details": result.get("details"),
        "memory": result.get("memory"),
        "attempts": row.attempts,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "wall_seconds": row.wall_seconds,
    }


def to_json(rows: list[CellRow], records: list[dict[str, Any]] | None = None, indent: int | None = 2) -> str:
    return json.dumps(records if records is not None else [as_record(r) for r in rows], indent=indent, default=str)


def _tasks(rows: list[CellRow]) -> list[str]:
    return sorted({t for r in rows for t in (r.metrics or {})})


def _flat(rec: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    flat = {k: rec[k] for k in ("model", "variant", "status", "dtype", "weights_bytes", "peak_memory_bytes",
                                "load_seconds", "ttft_ms", "decode_tokens_per_s", "error")}
    for task in tasks:
        h = headline(rec["metrics"].get(task, {}))
        flat[f"{task}:{h[0]}" if h else task] = h[1] if h else None
        if h and h[2] is not None:
            flat[f"{task}:{h[0]}_stderr"] = h[2]
    return flat


def to_csv(rows: list[CellRow], records: list[dict[str, Any]] | None = None) -> str:
    tasks = _tasks(rows)
    flats = [_flat(rec, tasks) for rec in (records if records is not None else [as_record(r) for r in rows])]
    fields = list(dict.fromkeys(k for f in flats for k in f))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flats)
    return buf.getvalue()


def _mb(n: int | None) -> str:
    return f"{n / 1e6:,.0f}" if n else "–"


def to_table(rows: list[CellRow]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    tasks = _tasks(rows)
    table = Table(title="evalq results", show_lines=False)
    for col in ("model", "variant", "status", "dtype", "weights MB", "peak MB"):
        table.add_column(col, justify="right" if "MB" in col else "left")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("TTFT ms", justify="right")
    table.add_column("tok/s (b=1)", justify="right")
    for r in rows:
        cells = [escape(r.model), escape(r.variant), escape(r.status if r.status == "ok" else f"{r.status}: {(r.error or '')[:60]}"),
                 r.dtype or "–", _mb(r.weights_bytes), _mb(r.peak_memory_bytes)]
        for task in tasks:
            h = headline((r.metrics or {}).get(task, {}))
            if h is None:
                cells.append("–")
            elif h[0] == "word_perplexity":
                cells.append(f"ppl {h[1]:.2f}")
            else:
                cells.append(f"{h[1]:.3f} ± {h[2]:.3f}" if h[2] is not None else f"{h[1]:.3f}")
        cells.append(f"{r.ttft_ms:.0f}" if r.ttft_ms else "–")
        cells.append(f"{r.decode_tokens_per_s:.1f}" if r.decode_tokens_per_s else "–")
        table.add_row(*cells)
    return table
