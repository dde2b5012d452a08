"""Runs one cell in its own process: `python -m evalq.worker CELL.json OUT_DIR`.

Loads the model once and takes every measurement on that object. Writes
OUT_DIR/result.json (and samples.json.gz); never touches the database. Phases
are announced on stdout as `@@evalq phase=NAME` for the orchestrator's progress.
"""
from __future__ import annotations

import gc
import gzip
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from evalq.cell import BASELINE_VARIANT
from evalq.lifeline import PHASE_PREFIX, die_with_parent
from evalq.outcome import CellOutcome, Status
from evalq.serve.process import ServeTimeout


def phase(name: str) -> None:
    print(f"\n{PHASE_PREFIX}{name}", flush=True)


# torch's CPU allocator raises a plain RuntimeError when malloc fails
_OOM_MESSAGES = ("can't allocate memory", "CUDA out of memory", "out of memory")


def _oom_status(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if "torch" in sys.modules:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MESSAGES)


def _memory_in_use(device: str) -> dict[str, int]:
    from evalq.measure.memory import current_rss_bytes

    out = {"rss_bytes": current_rss_bytes()}
    if device == "cuda":
        import torch

        out["cuda_allocated_bytes"] = torch.cuda.memory_allocated()
        out["cuda_reserved_bytes"] = torch.cuda.memory_reserved()
    return out


def run_cell(cell_json: str, out_dir: Path) -> CellOutcome:
    from evalq.cell import Cell

    cell = Cell.model_validate_json(cell_json)
    try:
        return _measure(cell, out_dir)
    except BaseException as exc:  # noqa: BLE001 - every end of a cell is recorded
        traceback.print_exc()
        last = f"{exc.__class__.__name__}: {exc}".strip().splitlines()
        error = last[0] if last else exc.__class__.__name__
        if _oom_status(exc):
            return CellOutcome(status=Status.oom, error=error, memory_at_failure=_memory_in_use(cell.device))
        return CellOutcome(status=Status.unsupported if isinstance(exc, Unsupported) else Status.error, error=error)


class Unsupported(RuntimeError):
    """This variant cannot run this model here (missing library, invalid config for the model)."""


def _measure(cell: Any, out_dir: Path) -> CellOutcome:
    import torch

    from evalq.backends.base import get_backend
    from evalq.env import environment, hardware_class
    from evalq.measure.memory import PeakMemory, module_types, parameter_dtypes, quantized_modules, weights_footprint
    from evalq.measure.speed import measure_speed
    from evalq.threads import using as using_threads
    from evalq.model_sources import materialize

    torch.manual_seed(cell.seed)
    backend = get_backend(cell.variant)
    cfg = backend.Config.model_validate(cell.options)
    reason = backend.unavailable_reason(cell.device)
    if reason:
        raise Unsupported(reason)
    if cell.device == "cuda" and not torch.cuda.is_available():
        raise Unsupported("device cuda requested but torch sees no CUDA GPU")
    here = hardware_class(cell.device)
    if cell.hardware and cell.hardware != here:  # e.g. a Ray node unlike the driver
        raise Unsupported(f"this cell is keyed for {cell.hardware}; this machine is {here}: "
                          f"its numbers would be stored as another machine's")

    phase("prepare")
    files = materialize(cell.model)
    model_config = json.loads((Path(files.path) / "config.json").read_text())
    problem = backend.check_model(cfg, model_config)
    if problem:
        raise Unsupported(f"{cell.variant} on {cell.model.display_name}: {problem}")
    predicted = predict(cell, model_config)

    baseline = long_baseline = None
    if cell.variant != BASELINE_VARIANT and (cell.quality or cell.long_context):
        phase("baseline")
        baseline = ensure_baseline_elsewhere(cell, files) if cell.quality else None
        long_baseline = ensure_baseline_elsewhere(cell, files, long_context=True) if cell.long_context else None

    threads = cell.thread_plan()
    peak = PeakMemory(cell.device)
    phase("load")
    with peak.phase("load"), using_threads(threads["prepare"]):
        started = time.perf_counter()
        loaded = backend.load(files, cfg, cell.device, str(out_dir))
        load_seconds = time.perf_counter() - started - loaded.prepare_seconds
    model = loaded.model
    weights = weights_footprint(model)
    warnings: list[str] = []
    quality_slice = None
    if cell.quality:
        from evalq.measure.quality import prepare_slice

        with using_threads(threads["quality"]):
            quality_slice = prepare_slice(loaded.tokenizer, cell, model_config)
        warnings += calibration_warnings(backend, cfg, loaded.tokenizer, quality_slice)

    phase("accuracy")
    started = time.perf_counter()
    with peak.phase("accuracy"), using_threads(threads["accuracy"], model):
        acc = accuracy(cell, model, loaded.tokenizer)
    accuracy_seconds = time.perf_counter() - started
    with gzip.open(out_dir / "samples.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(acc.pop("samples"), fh, default=str)

    phase("speed")
    release_buffers(model)
    with peak.phase("speed"):
        speed = measure_speed(model, loaded.tokenizer, cell.perf, cell.device, threads["speed"])

    # last: writing the baseline (the fp16 cell, from the model it has loaded), its
    # float64 comparison and the mapped baseline must not count in the speed
    # phase's peak, the memory a server of this variant needs
    quality = None
    if quality_slice is not None:
        from evalq.measure.quality import against_baseline

        release_buffers(model)
        with peak.phase("quality"), using_threads(threads["quality"], model):
            if baseline is None:
                phase("baseline")
                baseline = ensure_baseline_here(cell, files, model, quality_slice)
            phase("quality")
            started = time.perf_counter()
            quality = against_baseline(model, quality_slice, baseline)
            if cell.variant == BASELINE_VARIANT:  # how close two faithful computations already are
                from evalq.measure.quality import noise_floor

                quality["floor"] = noise_floor(model, quality_slice, baseline, cell.device)
        quality["seconds"] = time.perf_counter() - started
        del baseline
    long_context = None
    if cell.long_context:
        release_buffers(model)
        with peak.phase("long_context"), using_threads(threads["quality"], model):
            long_context = measure_long_context(cell, files, backend, loaded, model_config, long_baseline)
        del long_baseline
    memory = peak.finish()
    details = {**loaded.details, "module_types": module_types(model), "parameter_dtypes": parameter_dtypes(model),
               "quantized_modules": quantized_modules(model), "scorer": acc["scorer"]}
    dtype, prepare_seconds, serve = loaded.dtype, loaded.prepare_seconds, None
    if cell.serve:  # last, with the model freed: the server loads its own copy
        phase("serve")
        if hasattr(model, "close"):
            model.close()
        model = loaded = None
        gc.collect()
        serve = measure_serve(cell, files, backend, details, out_dir, threads["speed"], speed)

    return CellOutcome(
        **({"until_decided": acc["until_decided"]} if acc.get("until_decided") else {}),
        status=Status.ok,
        error=None,
        dtype=dtype,
        details=details,
        quality=quality,
        long_context=long_context,
        serve=serve,
        warnings=warnings,
        plan=predicted,
        weights_bytes=weights,
        peak_memory_bytes=memory["peak_memory_bytes"],
        memory=memory,
        load_seconds=load_seconds,
        prepare_seconds=prepare_seconds,
        accuracy_seconds=accuracy_seconds,
        threads=threads,
        metrics=acc["metrics"],
        n_samples=acc["n_samples"],
        task_versions=acc["task_versions"],
        task_data=acc["data"],
        lm_eval=acc["lm_eval"],
        speed=speed,
        model_path=files.path,
        env=environment(cell.device),
    )


def accuracy(cell: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """lm-eval's tasks on the loaded model: every document of the suites, or
    (eval.until_decided) rounds of documents until the gates are decided."""
    from evalq.measure.accuracy import evaluate

    settings = cell.eval
    run = lambda suites, limit=settings.limit: evaluate(model, tokenizer, suites, settings.batch_size, limit,  # noqa: E731
                                                        cell.seed, settings.scorer)
    if settings.until_decided is None:
        return run(cell.suites)
    from evalq.cache import cache_dir
    from evalq.measure.until_decided import evaluate_until_decided, lm_eval_split_size

    baseline = cell.baseline_scores if cell.variant != BASELINE_VARIANT else None
    if cell.variant != BASELINE_VARIANT and baseline is None:
        print("until_decided: no fp16 scores to pair with (its cell is not stored ok): evaluating the whole budget", flush=True)
    margins = {q.against: q.margin for q in settings.until_decided.compare or [] if q.model == cell.model.display_name}
    rivals = {m: (margins[m], scores) for m, scores in (cell.rival_scores or {}).items() if m in margins}
    for missing in margins.keys() - rivals.keys():
        print(f"until_decided: no fp16 scores of {missing} (its cell is not stored ok): that question is not asked", flush=True)
    return evaluate_until_decided(lambda suites: run(suites, None), cell.suites, settings.until_decided, cell.seed,
                                  baseline, lm_eval_split_size(cell.suites), log=lambda line: print(line, flush=True),
                                  checkpoint=cache_dir("rounds") / f"{cell.rounds_key}.json.gz", rivals=rivals)


def measure_serve(cell: Any, files: Any, backend: Any, details: dict[str, Any], out_dir: Path, threads: int,
                  speed: dict[str, Any]) -> dict[str, Any]:
    """The request-rate sweep through a real server (evalq.serve); the server's median TPOT
    one request at a time beside this cell's own batch-1 decode latency. A sweep that fails (the
    server does not start, dies, hangs; the load generator itself raises) is stored as the serve
    phase's end, with the steps measured before it and the message: the cell's other phases stand."""
    started = time.perf_counter()
    try:
        out = _serve_sweep(cell, files, backend, details, out_dir, threads, speed)
    except Exception as exc:  # noqa: BLE001 - the phase's end, never the cell's
        status = "timeout" if isinstance(exc, ServeTimeout) else "error"
        error = f"{exc.__class__.__name__}: {exc}".strip().splitlines()[0]
        print(f"@@evalq serve failed ({status}): {error}", flush=True)
        partial = getattr(exc, "partial", None) or {"server": None, "single_stream": None, "steps": []}
        out = {**partial, "status": status, "error": error}
    out["threads"] = threads
    out["seconds"] = time.perf_counter() - started  # the whole phase: the server's start and load included
    return out


def _serve_sweep(cell: Any, files: Any, backend: Any, details: dict[str, Any], out_dir: Path, threads: int,
                 speed: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from evalq.measure.quality import read_text
    from evalq.serve.sweep import prompts_for, prompts_needed, server_for, sweep

    settings = cell.serve
    tokenizer = AutoTokenizer.from_pretrained(files.path, trust_remote_code=files.trust_remote_code)
    prompts = prompts_for(tokenizer, read_text(settings), settings, cell.seed, prompts_needed(settings))
    server = server_for(cell, backend, details, files, out_dir, threads)

    def progress(label: str, step: dict[str, Any]) -> None:
        failed = f" failed: {step['error_examples']}" if step["errors"] else ""
        print(f"@@evalq serve {label}: completed={step['completed']}/{step['requests']} "
              f"tok/s={step['output_tokens_per_s'] or 0:.1f} ttft_p90={step['ttft_ms_p90'] or 0:.0f}ms{failed}", flush=True)

    out = sweep(server, prompts, settings, cell.seed, out_dir / "server.log", on_step=progress)
    del out["records"]  # per request: the steps' figures are what is stored
    batch1 = (speed.get("by_batch") or {}).get("1", {}).get("decode_ms_median")
    alone = (out["single_stream"] or {}).get("tpot_ms_p50")
    out["batch1_decode_ms"] = batch1
    out["single_stream_tpot_ratio"] = alone / batch1 if alone and batch1 else None
    return out


def release_buffers(model: Any) -> None:
    """A llama.cpp model frees the context of the phase before: its KV cache and
    logits buffers must not count in the next phase's peak."""
    from evalq.measure.torch_model import measured

    measured(model).release()


def predict(cell: Any, model_config: dict[str, Any]) -> dict[str, Any] | None:
    """The memory planner's prediction for this cell, stored beside what is measured."""
    from evalq.planner import PlanError, plan_cell

    try:
        return plan_cell(cell.variant, cell.options, cell.perf, cell.device, model_config)
    except (PlanError, KeyError, TypeError) as exc:  # an architecture the planner does not know
        return {"error": str(exc)}


def measure_long_context(cell: Any, files: Any, backend: Any, loaded: Any, model_config: dict[str, Any],
                         baseline: Any) -> dict[str, Any]:
    """Every KV-cache type of the matrix at long context, against the fp16 weights' unquantized cache."""
    from evalq.architecture import DTYPE_BYTES, PlanError, Shape
    from evalq.measure.long_context import measure_kv_types, prepare_long_slice

    sl = prepare_long_slice(loaded.tokenizer, cell.long_context, model_config)
    if baseline is None:  # the fp16 cell: its own model is the baseline
        phase("baseline")
        baseline = ensure_baseline_here(cell, files, loaded.model, sl, long_context=True)
    phase("long_context")
    try:
        shape = Shape.from_config(model_config)
    except PlanError:
        shape = None
    return measure_kv_types(loaded.model, backend.kv_runtime, sl, baseline, cell.long_context, shape,
                            DTYPE_BYTES.get(loaded.dtype, 2))


def _baseline_target(cell: Any, files: Any, long_context: bool) -> Path:
    from evalq.cache import cache_dir
    from evalq.measure.quality import baseline_key

    return cache_dir("baselines") / baseline_key(cell, files, long_context)


def _baseline_writer(cell: Any, long_context: bool) -> Any:
    """write_baseline's arguments after (out, model, slice, name): the long-context one
    goes through the unquantized cache on the long-context schedule."""
    if not long_context:
        from evalq.measure.quality import write_baseline

        return write_baseline, ()
    from evalq.measure.long_context import write_long_baseline

    return write_long_baseline, (cell.long_context,)


def ensure_baseline_here(cell: Any, files: Any, model: Any, text_slice: Any, long_context: bool = False) -> Any:
    from evalq.cache import build_once
    from evalq.measure.quality import Baseline

    target = _baseline_target(cell, files, long_context)
    write, extra = _baseline_writer(cell, long_context)
    build_once(target, write, model, text_slice, cell.model.display_name, *extra)
    return Baseline.open(target)


def ensure_baseline_elsewhere(cell: Any, files: Any, long_context: bool = False) -> Any:
    """The fp16 baseline of this cell's model, computed in a child process when
    not on disk yet (its memory is then not this cell's)."""
    from evalq.cache import build_once
    from evalq.measure.quality import Baseline

    target = _baseline_target(cell, files, long_context)
    build_once(target, _baseline_in_child, cell.model_dump_json(), long_context, isolated=True)
    return Baseline.open(target)


def _baseline_in_child(out: Path, cell_json: str, long_context: bool = False) -> None:
    from evalq.backends.base import get_backend
    from evalq.cell import Cell
    from evalq.measure.long_context import prepare_long_slice
    from evalq.measure.quality import prepare_slice
    from evalq.model_sources import materialize
    from evalq.threads import using as using_threads

    cell = Cell.model_validate_json(cell_json)
    backend = get_backend(BASELINE_VARIANT)
    files = materialize(cell.model)
    model_config = json.loads((Path(files.path) / "config.json").read_text())
    with using_threads(cell.threads("prepare")):
        loaded = backend.load(files, backend.Config.model_validate(cell.baseline_options or {}), cell.device, str(out))
    with using_threads(cell.threads("quality")):
        if long_context:
            text_slice = prepare_long_slice(loaded.tokenizer, cell.long_context, model_config)
        else:
            text_slice = prepare_slice(loaded.tokenizer, cell, model_config)
        write, extra = _baseline_writer(cell, long_context)
        write(out, loaded.model, text_slice, cell.model.display_name, *extra)


def calibration_warnings(backend: Any, cfg: Any, tokenizer: Any, quality_slice: Any) -> list[str]:
    """A variant calibrated on the text it is evaluated on looks better than it is."""
    from evalq.measure.quality import ngram_overlap

    cal = backend.calibration_windows(cfg, tokenizer)
    if not cal:
        return []
    share = ngram_overlap(cal, quality_slice.ids)
    if share == 0:
        return []
    return [f"calibration overlaps the quality text: {share:.0%} of the {len(cal)} calibration windows share "
            f"a 32-token run with it (draw calibration from elsewhere, e.g. calibration.skip_tokens)"]


def main(argv: list[str]) -> int:
    die_with_parent(int(os.environ.get("EVALQ_PARENT_PID", "0")) or None)
    cell_path, out_dir = Path(argv[0]), Path(argv[1])
    outcome = run_cell(cell_path.read_text(), out_dir)
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(outcome.stored(), default=str))
    os.replace(tmp, out_dir / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
