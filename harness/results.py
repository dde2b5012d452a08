"""Stored cells as rows for people (table) and programs (csv, json), from their CellRecords."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from evalq.record import ONE_AT_A_TIME, CellRecord, PairedFigures
from evalq.store.tables import CellRow


def display_order(rows: list[CellRow]) -> list[CellRow]:
    """By model, then variants in their backends' order (fp16, int8, nf4, gptq-4, llama.cpp's types by bits)."""
    from evalq.backends.base import variant_rank

    return sorted(rows, key=lambda r: (r.model, variant_rank(r.variant)))


def _started(r: CellRow) -> datetime:
    return r.started_at or r.finished_at or datetime.min


def current_rows(rows: list[CellRow]) -> list[CellRow]:
    """The newest row of each (matrix, model, variant, suites, hardware): a cell whose key
    changed (a new revision, new library versions) supersedes the old row,
    which stays in the database for the nightly history. Order is kept."""
    from evalq.paired import group_signature

    newest: dict[tuple, CellRow] = {}
    for r in rows:
        slot = (r.matrix, r.model, r.variant, group_signature(r.cell or {}))
        if slot not in newest or _started(r) > _started(newest[slot]):
            newest[slot] = r
    keep = {id(r) for r in newest.values()}
    return [r for r in rows if id(r) in keep]


def to_json(records: list[CellRecord], indent: int | None = 2) -> str:
    return json.dumps([r.as_json() for r in records], indent=indent, default=str)


def _tasks(records: list[CellRecord]) -> list[str]:
    return list(dict.fromkeys(t for r in records for t in r.headline))


def _flat(rec: CellRecord, tasks: list[str]) -> dict[str, Any]:
    flat = {"model": rec.model, "variant": rec.variant, "hardware": rec.hardware, "status": rec.status, "dtype": rec.dtype,
            "weights_bytes": rec.weights_bytes, "peak_memory_bytes": rec.peak_memory_bytes, "load_seconds": rec.load_seconds,
            "ttft_ms": rec.ttft_ms, "decode_tokens_per_s": rec.decode_tokens_per_s, "error": rec.error}
    for task in tasks:
        h = rec.headline.get(task)
        flat[f"{task}:{h.metric}" if h else task] = h.value if h else None
        if h and h.stderr is not None:
            flat[f"{task}:{h.metric}_stderr"] = h.stderr
    flat["average"] = rec.average.value if rec.average else None
    flat["average_stderr"] = rec.average.stderr if rec.average else None
    flat["predicted_weights_bytes"] = rec.plan.predicted_weights_bytes if rec.plan else None
    flat["predicted_peak_bytes"] = rec.plan.predicted_peak_bytes if rec.plan else None
    flat.update(rec.figures.as_dict())
    sv = rec.serve or {}
    flat["serve_max_rate_within_slo"] = sv.get("max_rate_within_slo")  # "inf": every rate, all at once included
    flat["serve_goodput_at_max_rate"] = sv.get("goodput_at_max_rate")
    flat["serve_saturation_output_tokens_per_s"] = sv.get("saturation_output_tokens_per_s")
    return flat


def flat_rows(records: list[CellRecord]) -> list[dict[str, Any]]:
    """One flat dict per record: the CSV's rows (and api.results_frame's)."""
    tasks = _tasks(records)
    return [_flat(rec, tasks) for rec in records]


def to_csv(records: list[CellRecord]) -> str:
    flats = flat_rows(records)
    fields = list(dict.fromkeys(k for f in flats for k in f))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flats)
    return buf.getvalue()


def _mb(n: int | None) -> str:
    return f"{n / 1e6:,.0f}" if n else "–"


def _pm(value: float, stderr: float | None) -> str:
    return f"{value:.3f} ± {stderr:.3f}" if stderr is not None else f"{value:.3f}"


def _num(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _recovery(f: PairedFigures) -> str:
    """Recovery (quantized / fp16 accuracy) with its paired interval, as percentages."""
    if f.recovery is None:
        return "–"
    if f.recovery_lo is None:
        return f"{100 * f.recovery:.1f} %"
    return f"{100 * f.recovery:.1f} % ({100 * f.recovery_lo:.1f}–{100 * f.recovery_hi:.1f})"


def _gate(f: PairedFigures) -> str:
    return "–" if f.gate_99 is None or f.gate_99 == "not comparable" else f.gate_99


def equal_cost_lines(records: list[CellRecord]) -> list[str]:
    """The equal-cost questions the matrix asked (eval.until_decided.compare), a sentence per cell."""
    return [f"{r.model} {r.variant}: {sentence}" for r in records for sentence in r.equal_cost_sentences]


def to_table(records: list[CellRecord]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    tasks = _tasks(records)
    machines = list(dict.fromkeys(r.hardware or "–" for r in records))
    # one machine: named under the table; several: a column, so no row passes for another machine's
    table = Table(title="evalq results", show_lines=False,
                  caption=f"on {escape(machines[0])}" if len(machines) == 1 else None)
    many = len(machines) > 1
    for col in ("model", "variant") + (("hardware",) if many else ()) + ("status", "dtype", "weights MB", "peak MB"):
        table.add_column(col, justify="right" if "MB" in col else "left")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("average", justify="right")
    for col in ("text ppl ×", "KLD", "top-1 %", "flips c→w/w→c", "McNemar p", "recovery (CI)", "99 % gate"):
        table.add_column(col, justify="right")
    table.add_column("TTFT ms", justify="right")
    table.add_column("tok/s (b=1)", justify="right")
    table.add_column("flags")
    for r in records:
        status = f"{r.status}: {r.error[:60]}" if r.status != "ok" and r.error else r.status
        cells = [escape(r.model), escape(r.variant)] + ([escape(r.hardware or "–")] if many else []) + [escape(status),
                 r.dtype or "–", _mb(r.weights_bytes), _mb(r.peak_memory_bytes)]
        for task in tasks:
            h = r.headline.get(task)
            if h is None:
                cells.append("–")
            elif h.perplexity:
                cells.append(f"ppl {h.value:.2f}")
            else:
                cells.append(_pm(h.value, h.stderr))
        cells.append(_pm(r.average.value, r.average.stderr) if r.average else "–")
        f = r.figures
        kld = _num(f.kld_mean, ".4f") + (f" (floor {f.kld_floor:.4f})" if f.kld_floor is not None else "")
        cells += [_num(f.text_ppl_ratio, ".3f"), kld, _num(None if f.same_top1 is None else 100 * f.same_top1, ".1f"),
                  "–" if f.correct_to_wrong is None else f"{f.correct_to_wrong}/{f.wrong_to_correct}",
                  _num(f.mcnemar_p, ".3g"), _recovery(f), _gate(f)]
        cells.append(f"{r.ttft_ms:.0f}" if r.ttft_ms else "–")
        cells.append(f"{r.decode_tokens_per_s:.1f}" if r.decode_tokens_per_s else "–")
        cells.append(escape(f.flags or ""))
        table.add_row(*cells)
    return table


def kv_table(records: list[CellRecord]) -> Any | None:
    """The long-context table: KLD, same-top-1 and PPL ratio of each variant × KV-cache type
    against the fp16 weights with the unquantized cache, and the cache's bytes (None: not measured)."""
    from rich.markup import escape
    from rich.table import Table

    rows = [kv for r in records for kv in r.kv_rows()]
    if not rows:
        return None
    first = rows[0]
    table = Table(title=f"KV cache at long context ({first.context}-token windows, last {first.scored} scored, "
                        f"× {first.windows})")
    for col in ("model", "variant", "KV cache", "KLD", "top-1 %", "PPL ×", "KV bytes", "predicted", "s", "note"):
        table.add_column(col, justify="left" if col in ("model", "variant", "KV cache", "note") else "right")
    for row in rows:
        head = [escape(row.model), escape(row.variant), escape(row.kv_cache)]
        fig = row.figures
        if fig["status"] != "ok":
            table.add_row(*head, escape(fig["status"]), *[""] * 5, escape(fig.get("reason") or ""))
            continue
        kld = f"{fig['kld_mean']:.4f} ± {fig['kld_stderr']:.4f}" if fig.get("kld_stderr") is not None else f"{fig['kld_mean']:.4f}"
        table.add_row(*head, kld, f"{100 * fig['same_top1']:.1f}", f"{fig['ppl_ratio']:.3f}", f"{fig['kv_bytes']:,}",
                      _num(fig.get("kv_bytes_predicted"), ","), f"{fig['seconds']:.0f}", "")
    return table


def rate_label(rate: Any) -> str:
    if rate == ONE_AT_A_TIME:
        return rate
    return "inf" if rate in (None, "inf") else f"{rate:g}"


def serve_table(records: list[CellRecord]) -> Any | None:
    """The serving table: per rate, throughput, TTFT and TPOT percentiles, goodput within the SLO
    (None: no cell was served)."""
    from rich.markup import escape
    from rich.table import Table

    rows = [sv for r in records for sv in r.serve_rows()]
    failed = [r for r in records if (r.serve or {}).get("error")]
    if not rows and not failed:
        return None
    settings = next(r.serve_settings for r in records if r.serve) or {}
    slo = settings.get("slo", {}) if settings else {}
    table = Table(title=f"Serving under load ({settings.get('prompt_tokens')} prompt + {settings.get('output_tokens')} output "
                        f"tokens; SLO TTFT ≤ {slo.get('ttft_ms', 0):g} ms, TPOT ≤ {slo.get('tpot_ms', 0):g} ms; "
                        f"rate inf: all at once; {ONE_AT_A_TIME}: one request at a time, before the sweep)")
    for col in ("model", "variant", "server", "rate/s", "done", "req/s", "out tok/s", "TTFT p50/p90/p99 ms",
                "TPOT p50/p90/p99 ms", "goodput/s", "in SLO"):
        table.add_column(col, justify="left" if col in ("model", "variant", "server") else "right")
    for row in rows:
        step = row.step

        def trio(name: str) -> str:
            return "/".join(_num(step[f"{name}_p{q}"], ".0f") for q in (50, 90, 99))
        table.add_row(escape(row.model), escape(row.variant), escape(row.server), rate_label(step["rate"]),
                      f"{step['completed']}/{step['requests']}", _num(step["requests_per_s"], ".2f"),
                      _num(step["output_tokens_per_s"], ".1f"), trio("ttft_ms"), trio("tpot_ms"),
                      _num(step["goodput"], ".2f"), "yes" if step["within_slo"] else "no")
    for r in failed:  # the sweep's end, after the rates it measured
        sv = r.serve
        table.add_row(escape(r.model), escape(r.variant), escape(sv.get("server") or "–"), f"failed ({sv['status']})",
                      escape(sv["error"]), *[""] * 6)
    return table
