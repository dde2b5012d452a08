"""One cell in its own process: `python -m evalq.run.child CELL.json OUT_DIR [PARENT_PID]`.

Loads the model once and runs the cell's phases on that object (`PHASES`: each a small
function returning its section of the outcome). Reads OUT_DIR/resources.json (what the
launcher gave the cell: evalq.resources), writes OUT_DIR/result.json (and samples.json.gz);
never touches the database. Phases are announced on stdout as `@@evalq phase=NAME` for
the orchestrator's progress.
"""
from __future__ import annotations

import gc
import gzip
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalq.cell import BASELINE_VARIANT, Cell
from evalq.lifeline import PHASE_PREFIX, die_with_parent
from evalq.outcome import CellOutcome, Plan, Status
from evalq.resources import Resources
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


def run_cell(cell_json: str, out_dir: Path, resources: Resources | None = None) -> CellOutcome:
    cell = Cell.model_validate_json(cell_json)
    resources = resources or cell.resources()
    try:
        return run_phases(cell, resources, out_dir)
    except BaseException as exc:  # noqa: BLE001 - every end of a cell is recorded
        traceback.print_exc()
        last = f"{exc.__class__.__name__}: {exc}".strip().splitlines()
        error = last[0] if last else exc.__class__.__name__
        if _oom_status(exc):
            return CellOutcome(status=Status.oom, error=error, memory_at_failure=_memory_in_use(cell.device))
        return CellOutcome(status=Status.unsupported if isinstance(exc, Unsupported) else Status.error, error=error)


class Unsupported(RuntimeError):
    """This variant cannot run this model here (missing library, invalid config for the model)."""


@dataclass
class Job:
    """What every phase may read: the cell, its backend and options, the model's files and
    config, the resources it was given, its folder, its memory peaks and its baselines."""

    cell: Cell
    resources: Resources
    out_dir: Path
    backend: Any = None
    cfg: Any = None
    files: Any = None
    model_config: dict[str, Any] = field(default_factory=dict)
    peak: Any = None  # measure.memory.PeakMemory
    baselines: Baselines | None = None
    loaded: Any = None  # backends.base.Loaded, from the load phase on
    # the sections the phases returned so far, by CellOutcome field (those never measured stored as null)
    outcome: dict[str, Any] = field(default_factory=lambda: {"quality": None, "long_context": None, "serve": None})

    def threads(self, name: str, model: Any = None) -> Any:
        from evalq.threads import using

        return using(self.resources.threads_for(name), model)


def check(job: Job) -> None:
    """Refuse early what cannot run here: a missing library, no GPU, another machine's key."""
    import torch

    from evalq.backends.base import get_backend
    from evalq.env import hardware_class

    cell = job.cell
    torch.manual_seed(cell.seed)
    job.backend = get_backend(cell.variant)
    job.cfg = job.backend.Config.model_validate(cell.options)
    reason = job.backend.unavailable_reason(cell.device)
    if reason:
        raise Unsupported(reason)
    if cell.device == "cuda" and not torch.cuda.is_available():
        raise Unsupported("device cuda requested but torch sees no CUDA GPU")
    here = hardware_class(cell.device)
    if cell.hardware and cell.hardware != here:  # e.g. a Ray node unlike the driver
        raise Unsupported(f"this cell is keyed for {cell.hardware}; this machine is {here}: "
                          f"its numbers would be stored as another machine's")


def prepare(job: Job) -> dict[str, Any]:
    """The model's files, a check of the variant against its config, the planner's prediction,
    and (for a quantized cell) the fp16 baselines, built before this cell's model is loaded."""
    from evalq.measure.memory import PeakMemory
    from evalq.model_sources import materialize

    cell = job.cell
    phase("prepare")
    job.files = materialize(cell.model)
    job.model_config = json.loads((Path(job.files.path) / "config.json").read_text())
    problem = job.backend.check_model(job.cfg, job.model_config)
    if problem:
        raise Unsupported(f"{cell.variant} on {cell.model.display_name}: {problem}")
    job.baselines = Baselines(cell, job.files, job.resources)
    job.baselines.build_elsewhere()
    job.peak = PeakMemory(cell.device)
    return {"plan": predict(cell, job.model_config)}


def load(job: Job) -> dict[str, Any]:
    from evalq.backends.base import load_variant
    from evalq.measure.memory import weights_footprint

    phase("load")
    with job.peak.phase("load"), job.threads("prepare"):
        started = time.perf_counter()
        loaded = job.loaded = load_variant(job.backend, job.files, job.cfg, job.resources, str(job.out_dir))
        seconds = time.perf_counter() - started - loaded.prepare_seconds
    warnings = []
    if job.cell.quality:
        from evalq.measure.quality import prepare_slice

        with job.threads("quality"):
            job.baselines.text_slice = prepare_slice(loaded.tokenizer, job.cell, job.model_config)
        warnings = calibration_warnings(job.backend, job.cfg, loaded.tokenizer, job.baselines.text_slice)
    return {"load_seconds": seconds, "weights_bytes": weights_footprint(loaded.model), "dtype": loaded.dtype,
            "prepare_seconds": loaded.prepare_seconds, "warnings": warnings}


def measure_accuracy(job: Job) -> dict[str, Any]:
    phase("accuracy")
    started = time.perf_counter()
    with job.peak.phase("accuracy"), job.threads("accuracy", job.loaded.model):
        acc = accuracy(job.cell, job.loaded.model, job.loaded.tokenizer)
    seconds = time.perf_counter() - started
    with gzip.open(job.out_dir / "samples.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(acc.pop("samples"), fh, default=str)
    return {**({"until_decided": acc["until_decided"]} if acc.get("until_decided") else {}), "accuracy_seconds": seconds,
            "metrics": acc["metrics"], "n_samples": acc["n_samples"], "task_versions": acc["task_versions"],
            "task_data": acc["data"], "lm_eval": acc["lm_eval"], "details": {"scorer": acc["scorer"]}}


def measure_speed(job: Job) -> dict[str, Any]:
    from evalq.measure.speed import measure_speed as timed

    phase("speed")
    release_buffers(job.loaded.model)
    with job.peak.phase("speed"):
        return {"speed": timed(job.loaded.model, job.loaded.tokenizer, job.cell.perf, job.cell.device,
                               job.resources.threads_for("speed"))}


def measure_quality(job: Job) -> dict[str, Any]:
    """Token-level quality against the fp16 baseline; after speed, so that writing the fp16
    cell's baseline and its float64 comparison never count in the speed phase's peak."""
    from evalq.measure.quality import against_baseline, noise_floor

    if job.baselines.text_slice is None:
        return {}
    model, text_slice = job.loaded.model, job.baselines.text_slice
    release_buffers(model)
    with job.peak.phase("quality"), job.threads("quality", model):
        baseline = job.baselines.text(model)
        phase("quality")
        started = time.perf_counter()
        quality = against_baseline(model, text_slice, baseline)
        if job.cell.variant == BASELINE_VARIANT:  # how close two faithful computations already are
            quality["floor"] = noise_floor(model, text_slice, baseline, job.cell.device)
    quality["seconds"] = time.perf_counter() - started
    return {"quality": quality}


def measure_long(job: Job) -> dict[str, Any]:
    if not job.cell.long_context:
        return {}
    release_buffers(job.loaded.model)
    with job.peak.phase("long_context"), job.threads("quality", job.loaded.model):
        return {"long_context": measure_long_context(job)}


def finish_memory(job: Job) -> dict[str, Any]:
    """The memory peaks of every phase before; the loaded model's modules, dtypes and quantized layers."""
    from evalq.measure.memory import module_types, parameter_dtypes, quantized_modules

    memory = job.peak.finish()
    model = job.loaded.model
    details = {**job.loaded.details, "module_types": module_types(model), "parameter_dtypes": parameter_dtypes(model),
               "quantized_modules": quantized_modules(model), **job.outcome["details"]}
    return {"memory": memory, "peak_memory_bytes": memory["peak_memory_bytes"], "details": details}


def measure_serving(job: Job) -> dict[str, Any]:
    """Last, with the model freed: the server loads its own copy."""
    if not job.cell.serve:
        return {}
    phase("serve")
    if hasattr(job.loaded.model, "close"):
        job.loaded.model.close()
    job.loaded = None
    gc.collect()
    return {"serve": measure_serve(job.cell, job.files, job.backend, job.outcome["details"], job.out_dir,
                                   job.resources, job.outcome["speed"])}


# In order. Each phase reads the Job (and the sections before it) and returns its sections of the outcome.
PHASES = (check, prepare, load, measure_accuracy, measure_speed, measure_quality, measure_long, finish_memory,
          measure_serving)


def run_phases(cell: Cell, resources: Resources, out_dir: Path) -> CellOutcome:
    from evalq.env import environment

    job = Job(cell, resources, out_dir)
    for step in PHASES:
        job.outcome.update(step(job) or {})
    return CellOutcome(status=Status.ok, error=None, threads=resources.threads, model_path=job.files.path,
                       env=environment(cell.device, resources.gpus), **job.outcome)


class Baselines:
    """The fp16 reference a cell's quality and long-context phases compare with, in one place.
    A quantized cell's are built in a child process before its model loads (their memory is
    not this cell's); the fp16 cell writes its own from its loaded model, when first asked."""

    def __init__(self, cell: Cell, files: Any, resources: Resources):
        self.cell, self.files, self.resources = cell, files, resources
        self.text_slice: Any = None  # the quality text, tokenized (load phase)
        self._text = self._long = None

    def build_elsewhere(self) -> None:
        cell = self.cell
        if cell.variant == BASELINE_VARIANT or not (cell.quality or cell.long_context):
            return
        phase("baseline")
        self._text = ensure_baseline_elsewhere(cell, self.files, self.resources) if cell.quality else None
        self._long = ensure_baseline_elsewhere(cell, self.files, self.resources, long_context=True) if cell.long_context else None

    def text(self, model: Any) -> Any:
        if self._text is None:
            phase("baseline")
            self._text = ensure_baseline_here(self.cell, self.files, model, self.text_slice)
        baseline, self._text = self._text, None  # read once: its mapping is released with the phase
        return baseline

    def long(self, model: Any, long_slice: Any) -> Any:
        if self._long is None:  # the fp16 cell: its own model is the baseline
            phase("baseline")
            self._long = ensure_baseline_here(self.cell, self.files, model, long_slice, long_context=True)
        baseline, self._long = self._long, None
        return baseline


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


def measure_serve(cell: Any, files: Any, backend: Any, details: dict[str, Any], out_dir: Path, resources: Resources,
                  speed: dict[str, Any]) -> dict[str, Any]:
    """The request-rate sweep through a real server (evalq.serve); the server's median TPOT
    one request at a time beside this cell's own batch-1 decode latency. A sweep that fails (the
    server does not start, dies, hangs; the load generator itself raises) is stored as the serve
    phase's end, with the steps measured before it and the message: the cell's other phases stand."""
    started = time.perf_counter()
    try:
        out = _serve_sweep(cell, files, backend, details, out_dir, resources, speed)
    except Exception as exc:  # noqa: BLE001 - the phase's end, never the cell's
        status = "timeout" if isinstance(exc, ServeTimeout) else "error"
        error = f"{exc.__class__.__name__}: {exc}".strip().splitlines()[0]
        print(f"@@evalq serve failed ({status}): {error}", flush=True)
        partial = getattr(exc, "partial", None) or {"server": None, "single_stream": None, "steps": []}
        out = {**partial, "status": status, "error": error}
    out["threads"] = resources.threads_for("speed")
    out["seconds"] = time.perf_counter() - started  # the whole phase: the server's start and load included
    return out


def _serve_sweep(cell: Any, files: Any, backend: Any, details: dict[str, Any], out_dir: Path, resources: Resources,
                 speed: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from evalq.measure.quality import read_text
    from evalq.serve.sweep import prompts_for, prompts_needed, server_for, sweep

    settings = cell.serve
    tokenizer = AutoTokenizer.from_pretrained(files.path, trust_remote_code=files.trust_remote_code)
    prompts = prompts_for(tokenizer, read_text(settings), settings, cell.seed, prompts_needed(settings))
    server = server_for(cell, backend, details, files, out_dir, resources)

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


def predict(cell: Any, model_config: dict[str, Any]) -> Plan:
    """The memory planner's prediction for this cell, stored beside what is measured."""
    from evalq.planner import PlanError, plan_cell

    try:
        return plan_cell(cell.variant, cell.options, cell.perf, cell.device, model_config)
    except (PlanError, KeyError, TypeError) as exc:  # an architecture the planner does not know
        return Plan(error=str(exc))


def measure_long_context(job: Job) -> dict[str, Any]:
    """Every KV-cache type of the matrix at long context, against the fp16 weights' unquantized cache."""
    from evalq.architecture import DTYPE_BYTES, PlanError, Shape
    from evalq.measure.long_context import measure_kv_types, prepare_long_slice

    loaded, settings = job.loaded, job.cell.long_context
    sl = prepare_long_slice(loaded.tokenizer, settings, job.model_config)
    baseline = job.baselines.long(loaded.model, sl)
    phase("long_context")
    try:
        shape = Shape.from_config(job.model_config)
    except PlanError:
        shape = None
    return measure_kv_types(loaded.model, job.backend.kv_runtime, sl, baseline, settings, shape,
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


def ensure_baseline_elsewhere(cell: Any, files: Any, resources: Resources, long_context: bool = False) -> Any:
    """The fp16 baseline of this cell's model, computed in a child process when
    not on disk yet (its memory is then not this cell's)."""
    from evalq.cache import build_once
    from evalq.measure.quality import Baseline

    target = _baseline_target(cell, files, long_context)
    build_once(target, _baseline_in_child, cell.model_dump_json(), resources.to_json(), long_context, isolated=True)
    return Baseline.open(target)


def _baseline_in_child(out: Path, cell_json: str, resources_json: str, long_context: bool = False) -> None:
    from evalq.backends.base import get_backend
    from evalq.measure.long_context import prepare_long_slice
    from evalq.measure.quality import prepare_slice
    from evalq.model_sources import materialize
    from evalq.threads import using as using_threads

    cell, resources = Cell.model_validate_json(cell_json), Resources.from_json(resources_json)
    backend = get_backend(BASELINE_VARIANT)
    files = materialize(cell.model)
    model_config = json.loads((Path(files.path) / "config.json").read_text())
    with using_threads(resources.threads_for("prepare")):
        loaded = backend.load(files, backend.Config.model_validate(cell.baseline_options or {}), resources, str(out))
    with using_threads(resources.threads_for("quality")):
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
    cell_path, out_dir = Path(argv[0]), Path(argv[1])
    die_with_parent(int(argv[2]) if len(argv) > 2 else None)
    given = out_dir / "resources.json"
    outcome = run_cell(cell_path.read_text(), out_dir, Resources.from_json(given.read_text()) if given.exists() else None)
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(outcome.stored(), default=str))
    os.replace(tmp, out_dir / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
