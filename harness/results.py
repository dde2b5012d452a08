"""Stored cells as rows for people (table) and programs (csv, json)."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any, Callable

from evalq.verdicts import Judge
from evalq.headlines import PERPLEXITY_METRIC, Headline, row_headlines, suite_average, suite_tasks
from evalq.paired import Paired, pair_rows
from evalq.store.tables import CellRow


def as_record(row: CellRow, paired: Paired | None = None) -> dict[str, Any]:
    outcome = row.outcome
    speed = outcome.speed
    scores = row_headlines(row)
    # a suite average over some of its tasks would pass for the whole suite's
    average = suite_average(scores) if all(t in scores for t, _ in suite_tasks(row.cell or {})) else None
    return {
        "key": row.key,
        "matrix": row.matrix,
        "model": row.model,
        "variant": row.variant,
        "status": row.status,
        "error": row.error,
        "revision": row.revision,
        "hardware": (row.cell or {}).get("hardware"),  # the class the cell is keyed for: env.hardware_class
        "dtype": row.dtype,
        "weights_bytes": row.weights_bytes,
        "peak_memory_bytes": row.peak_memory_bytes,
        "load_seconds": row.load_seconds,
        "prepare_seconds": row.prepare_seconds,
        "ttft_ms": row.ttft_ms,
        "decode_tokens_per_s": row.decode_tokens_per_s,
        "speed_by_batch": speed.by_batch if speed else None,
        "speed_threads": speed.threads if speed else None,
        "metrics": row.metrics or {},
        "headline": {t: {"metric": h[0], "value": h[1], "stderr": h[2]} for t, h in scores.items()},
        "average": {"value": average[0], "stderr": average[1]} if average else None,  # the mean of the headline accuracies
        "n_samples": outcome.n_samples,
        "task_data": outcome.task_data,  # shipped data: source, licence, deviations
        "details": outcome.details if "details" in outcome.model_fields_set else None,
        "memory": _section(outcome.memory),
        "plan": _section(outcome.plan),  # the memory planner's prediction, from config.json alone
        "quality": _section(outcome.quality),  # token-level, against the fp16 baseline
        "long_context": outcome.long_context,  # KV-cache types at long context, against fp16 weights and cache
        "serve": outcome.serve,  # the request-rate sweep through a real server, per rate and concluded
        "serve_settings": (row.cell or {}).get("serve"),  # its rates, lengths, SLO
        "paired": paired.as_dict() if paired else None,  # answer flips, footprint ratio, sanity flags
        "attempts": row.attempts,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "wall_seconds": row.wall_seconds,
    }


def _section(section: Any) -> dict[str, Any] | None:
    """A typed section as the JSON output shows it: the keys the worker stored."""
    return section.model_dump(mode="json", exclude_unset=True) if section is not None else None


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


def records_of(rows: list[CellRow], samples: Callable[[str, str], list[dict[str, Any]]] | None = None,
               judge: Judge | None = None) -> list[dict[str, Any]]:
    """Each row as a record, with its comparison against its model's fp16 row
    (flips and the paired comparison need the per-sample records: `samples(key,
    task)`, e.g. Store.samples; `judge` sets α and may be shared with other pages)."""
    paired = pair_rows(rows, samples or (lambda key, task: []), judge)
    return [as_record(r, paired.get(r.key)) for r in rows]


def to_json(records: list[dict[str, Any]], indent: int | None = 2) -> str:
    return json.dumps(records, indent=indent, default=str)


def _tasks(records: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(t for r in records for t in r["headline"]))


def _headline(rec: dict[str, Any], task: str) -> Headline | None:
    h = rec["headline"].get(task)
    return (h["metric"], h["value"], h["stderr"]) if h else None


def paired_figures(rec: dict[str, Any]) -> dict[str, Any]:
    """The headline paired-quality figures of one record (None where not measured)."""
    q = rec.get("quality") or {}
    p = rec.get("paired") or {}
    total = p.get("total") or {}
    vs = p.get("vs_fp16") or {}
    suite = vs.get("suite") or {}
    gates = vs.get("gates") or {}
    seq = vs.get("sequential")
    if seq:  # until-decided: the confidence sequence's recovery interval, valid at the n it stopped at
        suite = suite | {"recovery_lo": seq["recovery_lo"], "recovery_hi": seq["recovery_hi"]}
    return {
        "text_ppl": q.get("ppl"), "text_ppl_ratio": q.get("ppl_ratio"), "kld_mean": q.get("kld_mean"),
        "kld_p99": (q.get("kld") or {}).get("p99"), "same_top1": q.get("same_top1"), "dp_rms": q.get("dp_rms"),
        "dp_skew": q.get("dp_skew"), "correct_to_wrong": total.get("correct_to_wrong"),
        "wrong_to_correct": total.get("wrong_to_correct"), "flip_rate": total.get("flip_rate"),
        "mcnemar_p": total.get("mcnemar_p"), "choice_kld": total.get("choice_kld"),
        # the floor: the fp16 weights in another dtype against the baseline (None where not measured)
        "kld_floor": (p.get("floor") or {}).get("kld_mean"), "same_top1_floor": (p.get("floor") or {}).get("same_top1"),
        # the comparison engine against fp16 (evalq.verdicts): suite difference, its interval, Holm p, recovery, gates
        "diff_vs_fp16": suite.get("diff"), "diff_lo": suite.get("lo"), "diff_hi": suite.get("hi"),
        "p_vs_fp16": suite.get("p"), "p_vs_fp16_holm": vs.get("p_adjusted"), "mde": suite.get("mde"),
        "recovery": suite.get("recovery"), "recovery_lo": suite.get("recovery_lo"), "recovery_hi": suite.get("recovery_hi"),
        "gate_99": gates.get("0.99"), "gate_99_9": gates.get("0.999"), "not_compared": vs.get("reason"),
        "documents_per_task": seq["n"] if seq else None, "stopped": seq.get("stop") if seq else None,
        "weights_ratio": p.get("weights_ratio"), "quantized_modules": (rec.get("details") or {}).get("quantized_modules"),
        "flags": "; ".join(p.get("flags") or []) or None,
    }


def _flat(rec: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    flat = {k: rec[k] for k in ("model", "variant", "hardware", "status", "dtype", "weights_bytes", "peak_memory_bytes",
                                "load_seconds", "ttft_ms", "decode_tokens_per_s", "error")}
    for task in tasks:
        h = _headline(rec, task)
        flat[f"{task}:{h[0]}" if h else task] = h[1] if h else None
        if h and h[2] is not None:
            flat[f"{task}:{h[0]}_stderr"] = h[2]
    flat["average"] = rec["average"]["value"] if rec["average"] else None
    flat["average_stderr"] = rec["average"]["stderr"] if rec["average"] else None
    plan = rec.get("plan") or {}
    flat["predicted_weights_bytes"] = plan.get("predicted_weights_bytes")
    flat["predicted_peak_bytes"] = plan.get("predicted_peak_bytes")
    flat.update(paired_figures(rec))
    sv = rec.get("serve") or {}
    flat["serve_max_rate_within_slo"] = sv.get("max_rate_within_slo")  # "inf": every rate, all at once included
    flat["serve_goodput_at_max_rate"] = sv.get("goodput_at_max_rate")
    flat["serve_saturation_output_tokens_per_s"] = sv.get("saturation_output_tokens_per_s")
    return flat


def flat_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat dict per record: the CSV's rows (and api.results_frame's)."""
    tasks = _tasks(records)
    return [_flat(rec, tasks) for rec in records]


def to_csv(records: list[dict[str, Any]]) -> str:
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


def _recovery(f: dict[str, Any]) -> str:
    """Recovery (quantized / fp16 accuracy) with its paired interval, as percentages."""
    if f["recovery"] is None:
        return "–"
    if f["recovery_lo"] is None:
        return f"{100 * f['recovery']:.1f} %"
    return f"{100 * f['recovery']:.1f} % ({100 * f['recovery_lo']:.1f}–{100 * f['recovery_hi']:.1f})"


def _gate(f: dict[str, Any]) -> str:
    gate = f["gate_99"]
    return "–" if gate is None or gate == "not comparable" else gate


def equal_cost_lines(records: list[dict[str, Any]]) -> list[str]:
    """The equal-cost questions the matrix asked (eval.until_decided.compare), a sentence per cell."""
    return [f"{r['model']} {r['variant']}: {answer['sentence']}" for r in records
            for answer in ((r.get("paired") or {}).get("equal_cost") or {}).values()]


def to_table(records: list[dict[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    tasks = _tasks(records)
    machines = list(dict.fromkeys(r.get("hardware") or "–" for r in records))
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
        status = f"{r['status']}: {r['error'][:60]}" if r["status"] != "ok" and r["error"] else r["status"]
        cells = [escape(r["model"]), escape(r["variant"])] + ([escape(r.get("hardware") or "–")] if many else []) + [escape(status),
                 r["dtype"] or "–", _mb(r["weights_bytes"]), _mb(r["peak_memory_bytes"])]
        for task in tasks:
            h = _headline(r, task)
            if h is None:
                cells.append("–")
            elif h[0] == PERPLEXITY_METRIC:
                cells.append(f"ppl {h[1]:.2f}")
            else:
                cells.append(_pm(h[1], h[2]))
        cells.append(_pm(r["average"]["value"], r["average"]["stderr"]) if r["average"] else "–")
        f = paired_figures(r)
        kld = _num(f["kld_mean"], ".4f") + (f" (floor {f['kld_floor']:.4f})" if f["kld_floor"] is not None else "")
        cells += [_num(f["text_ppl_ratio"], ".3f"), kld,
                  _num(None if f["same_top1"] is None else 100 * f["same_top1"], ".1f"),
                  "–" if f["correct_to_wrong"] is None else f"{f['correct_to_wrong']}/{f['wrong_to_correct']}",
                  _num(f["mcnemar_p"], ".3g"), _recovery(f), _gate(f)]
        cells.append(f"{r['ttft_ms']:.0f}" if r["ttft_ms"] else "–")
        cells.append(f"{r['decode_tokens_per_s']:.1f}" if r["decode_tokens_per_s"] else "–")
        cells.append(escape(f["flags"] or ""))
        table.add_row(*cells)
    return table


def kv_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (cell, KV-cache type) measured at long context."""
    rows = []
    for r in records:
        lc = r.get("long_context")
        if not lc:
            continue
        for kv_type, fig in lc["types"].items():
            rows.append({"model": r["model"], "variant": r["variant"], "kv_cache": kv_type, "runtime": lc["runtime"],
                         "context": lc["context"], "scored": lc["scored"], "windows": lc["windows"], **fig})
    return rows


def kv_table(records: list[dict[str, Any]]) -> Any | None:
    """The long-context table: KLD, same-top-1 and PPL ratio of each variant × KV-cache type
    against the fp16 weights with the unquantized cache, and the cache's bytes (None: not measured)."""
    from rich.markup import escape
    from rich.table import Table

    rows = kv_rows(records)
    if not rows:
        return None
    first = rows[0]
    table = Table(title=f"KV cache at long context ({first['context']}-token windows, last {first['scored']} scored, "
                        f"× {first['windows']})")
    for col in ("model", "variant", "KV cache", "KLD", "top-1 %", "PPL ×", "KV bytes", "predicted", "s", "note"):
        table.add_column(col, justify="left" if col in ("model", "variant", "KV cache", "note") else "right")
    for row in rows:
        head = [escape(row["model"]), escape(row["variant"]), escape(row["kv_cache"])]
        if row["status"] != "ok":
            table.add_row(*head, escape(row["status"]), *[""] * 5, escape(row.get("reason") or ""))
            continue
        kld = f"{row['kld_mean']:.4f} ± {row['kld_stderr']:.4f}" if row.get("kld_stderr") is not None else f"{row['kld_mean']:.4f}"
        table.add_row(*head, kld, f"{100 * row['same_top1']:.1f}", f"{row['ppl_ratio']:.3f}", f"{row['kv_bytes']:,}",
                      _num(row.get("kv_bytes_predicted"), ","), f"{row['seconds']:.0f}", "")
    return table


def serve_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (cell, request rate) of the serving sweeps."""
    rows = []
    for r in records:
        sv = r.get("serve")
        if not sv:
            continue
        for step in serve_steps(sv):
            rows.append({"model": r["model"], "variant": r["variant"], "server": sv["server"], **step})
    return rows


ONE_AT_A_TIME = "1 by 1"  # the single stream's row: requests sent one after another


def serve_steps(serve: dict[str, Any]) -> list[dict[str, Any]]:
    """A sweep's rows in order: the single stream (rate ONE_AT_A_TIME) where there was one, then each rate."""
    alone = [{**serve["single_stream"], "rate": ONE_AT_A_TIME}] if serve.get("single_stream") else []
    return alone + serve["steps"]


def rate_label(rate: Any) -> str:
    if rate == ONE_AT_A_TIME:
        return rate
    return "inf" if rate in (None, "inf") else f"{rate:g}"


def serve_table(records: list[dict[str, Any]]) -> Any | None:
    """The serving table: per rate, throughput, TTFT and TPOT percentiles, goodput within the SLO
    (None: no cell was served)."""
    from rich.markup import escape
    from rich.table import Table

    rows = serve_rows(records)
    failed = [r for r in records if (r.get("serve") or {}).get("error")]
    if not rows and not failed:
        return None
    settings = next(r["serve_settings"] for r in records if r.get("serve")) or {}
    slo = settings.get("slo", {}) if settings else {}
    table = Table(title=f"Serving under load ({settings.get('prompt_tokens')} prompt + {settings.get('output_tokens')} output "
                        f"tokens; SLO TTFT ≤ {slo.get('ttft_ms', 0):g} ms, TPOT ≤ {slo.get('tpot_ms', 0):g} ms; "
                        f"rate inf: all at once; {ONE_AT_A_TIME}: one request at a time, before the sweep)")
    for col in ("model", "variant", "server", "rate/s", "done", "req/s", "out tok/s", "TTFT p50/p90/p99 ms",
                "TPOT p50/p90/p99 ms", "goodput/s", "in SLO"):
        table.add_column(col, justify="left" if col in ("model", "variant", "server") else "right")
    for row in rows:
        def trio(name: str) -> str:
            return "/".join(_num(row[f"{name}_p{q}"], ".0f") for q in (50, 90, 99))
        table.add_row(escape(row["model"]), escape(row["variant"]), escape(row["server"]), rate_label(row["rate"]),
                      f"{row['completed']}/{row['requests']}", _num(row["requests_per_s"], ".2f"),
                      _num(row["output_tokens_per_s"], ".1f"), trio("ttft_ms"), trio("tpot_ms"),
                      _num(row["goodput"], ".2f"), "yes" if row["within_slo"] else "no")
    for r in failed:  # the sweep's end, after the rates it measured
        sv = r["serve"]
        table.add_row(escape(r["model"]), escape(r["variant"]), escape(sv.get("server") or "–"), f"failed ({sv['status']})",
                      escape(sv["error"]), *[""] * 6)
    return table
