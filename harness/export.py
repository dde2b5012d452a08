"""Stored cells written as `lm_eval --output_path DIR --log_samples` writes them.

lm-eval's own EvaluationTracker writes the files, from what simple_evaluate
returned in the worker (kept in the cell's result as `lm_eval`) and the
per-sample records kept beside it, so tools that read lm-eval's output read
evalq's. Each cell gets its own folder: `<model>__<variant>/results_<date>.json`
and `samples_<task>_<date>.jsonl`; the results' `config` names the model, its
revision and the variant's quantization settings.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from evalq.record import CellRecord


class NotExportable(ValueError):
    pass


def model_args(row: CellRecord) -> str:
    """lm-eval's model_args string for a cell: its folder name comes from `pretrained`."""
    spec = row.spec
    source = spec.get("hub") or spec.get("package") or spec.get("gguf") or spec.get("path") or row.model
    return f"pretrained={row.model}__{row.variant},source={source},revision={row.revision},dtype={row.dtype}"


def lm_eval_results(row: CellRecord) -> dict[str, Any]:
    raw = row.lm_eval
    if not raw:
        raise NotExportable(f"{row.model} · {row.variant}: stored before evalq kept lm-eval's own results "
                            f"(re-run the cell with --force to export it)")
    results = copy.deepcopy(raw)
    cell = row.cell
    results["config"] = {
        **(results.get("config") or {}),
        "model": "evalq",
        "model_args": model_args(row),
        "model_revision": row.revision,
        "model_dtype": row.dtype,
        "evalq": {"key": row.key, "matrix": row.matrix, "model": row.model, "variant": row.variant,
                  "options": cell.get("options"), "device": cell.get("device"),
                  "details": row.details or {}, "task_data": row.task_data},
    }
    return results


def export_lm_eval(rows: list[CellRecord], samples: Callable[[str, str], list[dict[str, Any]]], out: Path) -> list[Path]:
    """Write each `ok` row's results and samples under `out`; return the folders written."""
    from lm_eval.loggers import EvaluationTracker

    written = []
    for row in rows:
        if row.status != "ok":
            continue
        results = lm_eval_results(row)
        per_task = {task: samples(row.key, task) for task in sorted(results.get("n-samples") or {})}
        per_task = {task: s for task, s in per_task.items() if s}
        tracker = EvaluationTracker(output_path=str(out))
        tracker.general_config_tracker.log_experiment_args(
            model_source="evalq", model_args=model_args(row), system_instruction=None, chat_template=None,
            fewshot_as_multiturn=False)
        tracker.save_results_aggregated(results=results, samples=per_task)
        folder = out / tracker.general_config_tracker.model_name_sanitized
        # lm-eval's tracker logs a failed write as a warning and goes on: check it wrote
        if not (folder / f"results_{getattr(tracker, 'date_id', '')}.json").is_file():
            raise NotExportable(f"{row.model} · {row.variant}: lm-eval's tracker did not write {folder}")
        for task, records in per_task.items():
            tracker.save_results_samples(task_name=task, samples=records)
        written.append(folder)
    return written
