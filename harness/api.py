"""evalq as a library. The CLI parses and prints; `evalq run`, `evalq nightly`
and a notebook call these same functions:

    from evalq import api
    prepared = api.prepare("examples/demo.yaml")       # load, check, expand, plan what fits
    summary = api.run(prepared, "evalq.db")            # run what is not stored ok; outcomes by cell key
    frame = api.results_frame("evalq.db")              # a pandas DataFrame (pandas installed)
    api.build_leaderboard("evalq.db", "site")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evalq.cell import Cell, expand, key_difference
from evalq.matrix import Matrix, MatrixError
from evalq.orchestrator import RunSummary, run_cells, should_run
from evalq.outcome import FAILURES, CellOutcome, Plan, Status
from evalq.store import Store
from evalq.suites import Suite

DEFAULT_FAIL_ON = tuple(s.value for s in FAILURES)  # error, oom, timeout, killed


@dataclass
class Prepared:
    """A matrix ready to run: checked, expanded into cells, and the cells
    predicted not to fit (stored `skipped` instead of running into an OOM)."""

    file: str
    matrix: Matrix
    suites: list[Suite]
    cells: list[Cell]
    wont_fit: dict[str, CellOutcome] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gpu_memory: int | None = None  # bytes a GPU holds: --gpu-memory, else the GPU's own on CUDA
    # model → config.json (None: not here), read when first planned: a run with no memory
    # limit on the CPU never plans, so it reads no GGUF header and asks no hub for one
    configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def config(self, cell: Cell) -> dict[str, Any] | None:
        from evalq.model_sources import ModelError, read_config

        name = cell.model.display_name
        if name not in self.configs:
            try:
                self.configs[name] = read_config(cell.model)
            except ModelError:
                self.configs[name] = None  # the cell runs and the worker records what it needed
        return self.configs[name]

    def plan(self, cell: Cell) -> Plan | None:
        """The planner's prediction for a cell (None where its config or architecture is unknown)."""
        from evalq.planner import PlanError, plan_cell

        config = self.config(cell)
        if config is None:
            return None
        try:
            return plan_cell(cell.variant, cell.options, cell.perf, cell.device, config)
        except (PlanError, KeyError, TypeError):
            return None


def load_matrix(matrix_file: str | Path, resolve_models: bool = True,
                allow_unchecked: bool = False) -> tuple[Matrix, list[Suite], list[str]]:
    """The matrix and its suites, checked beyond the schema (variants on these models,
    tasks, models reachable); raises MatrixError with every problem. Returns notes too.
    `resolve_models` False: hub models are only looked up (see preflight.check)."""
    from evalq import preflight
    from evalq.matrix import read_matrix
    from evalq.yamlpos import load_with_lines, read_text

    matrix, suites = read_matrix(matrix_file)
    lines = load_with_lines(read_text(Path(matrix_file)))[1]
    checked = preflight.check(matrix, suites, resolve_models=resolve_models, lines=lines, allow_unchecked=allow_unchecked)
    if checked.problems:
        raise MatrixError(str(matrix_file), checked.problems)
    return matrix, suites, checked.notes


def prepare(matrix_file: str | Path, gpu_memory: str | None = None, until_decided: bool = False) -> Prepared:
    """Load and check the matrix, expand it into cells, and plan which will not fit
    in `gpu_memory` ("24GB"; on CUDA, default: the GPU's memory). `until_decided`:
    evaluate until decided with the default settings where the matrix sets none."""
    from evalq.matrix import UntilDecided
    from evalq.model_sources import resolve_revision
    from evalq.planner import PlanError, parse_bytes

    matrix, suites, notes = load_matrix(matrix_file)
    if until_decided and matrix.eval.until_decided is None:
        matrix = matrix.model_copy(update={"eval": matrix.eval.model_copy(update={"until_decided": UntilDecided()})})
    cells = expand(matrix, suites, resolve_revision)
    limit = None
    if gpu_memory is not None:
        try:
            limit = parse_bytes(gpu_memory)
        except PlanError as exc:
            raise MatrixError(str(matrix_file), [f"--gpu-memory: {exc}"]) from None
    elif cells and cells[0].device == "cuda":
        import torch

        limit = torch.cuda.get_device_properties(0).total_memory
    prepared = Prepared(str(matrix_file), matrix, suites, cells, notes=notes, gpu_memory=limit)
    if limit is not None:
        for cell in cells:
            plan = prepared.plan(cell)
            if plan and plan.predicted_peak_bytes > limit:
                prepared.wont_fit[cell.key] = CellOutcome(
                    status=Status.skipped, plan=plan,
                    error=f"predicted peak {plan.predicted_peak_bytes / 1e9:.2f} GB exceeds {limit / 1e9:.2f} GB "
                          f"(weights {plan.predicted_weights_bytes / 1e9:.2f} GB)")
    return prepared


def memory_plan(matrix_file: str | Path, gpu_bytes: int, gpus: int = 1, config_files: dict[str, str] | None = None,
                training: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`evalq plan`: each cell's predicted memory from config.json alone (no weights
    read) on `gpus` GPUs of `gpu_bytes`; `config_files`: model name → a local
    config.json for a model the hub cannot give; `training`: plan_training's arguments."""
    import json

    from evalq.matrix import read_matrix
    from evalq.model_sources import ModelError, read_config
    from evalq.planner import PlanError, plan_matrix

    matrix, _ = read_matrix(matrix_file)
    given = dict(config_files or {})
    try:
        configs = {}
        for m in matrix.models:
            path = given.pop(m.display_name, None)
            try:
                configs[m.display_name] = json.loads(Path(path).read_text()) if path else read_config(m)
            except ModelError:
                continue  # planned as "no config here"
        if given:
            raise PlanError(f"--config names no model of the matrix: {', '.join(given)}")
        return plan_matrix(matrix, configs, gpu_bytes, gpus, training=training)
    except (PlanError, OSError, ValueError) as exc:
        raise MatrixError(str(matrix_file), [str(exc)]) from None


def make_executor(prepared: Prepared, name: str = "local", address: str | None = None, verbose: bool = False,
                  log: Callable[[str], None] = print) -> Any:
    """Where the cells run: here one at a time, or as Ray tasks sized by the planner."""
    from evalq.executors import executor_for

    return executor_for(name, address, prepared.plan, echo=verbose, gpu_memory=prepared.gpu_memory, log=log)


def run(prepared: Prepared | str | Path, db: str | Store = "evalq.db", force: bool = False, rerun_failed: bool = False,
        executor: str = "local", address: str | None = None, verbose: bool = False, console: Any = None,
        log: Callable[[str], None] = print) -> RunSummary:
    """Run every cell not stored ok (all with `force`; failed ones too with
    `rerun_failed`) and record each end; `summary.outcomes` holds how each ended."""
    if not isinstance(prepared, Prepared):
        prepared = prepare(prepared)
    store = db if isinstance(db, Store) else Store(db)  # opened once the input is known good: nothing partial is written
    runner = make_executor(prepared, executor, address, verbose, log)
    return run_cells(prepared.cells, store, force=force, rerun_failed=rerun_failed, echo=verbose, console=console,
                     wont_fit=prepared.wont_fit, executor=runner)


def failures(summary: RunSummary, fail_on: tuple[str, ...] = DEFAULT_FAIL_ON) -> dict[str, CellOutcome]:
    """The cells this run ended in one of the `fail_on` statuses."""
    return {key: o for key, o in summary.outcomes.items() if o.status.value in fail_on}


@dataclass
class Pending:
    cell: Cell
    would_run: bool
    reason: str


def dry_run(prepared: Prepared, db: str, force: bool = False, rerun_failed: bool = False) -> list[Pending]:
    """What `run` would do with each cell, and why, without loading anything
    (the database is only read; a missing database means every cell is new)."""
    from evalq.store.db import StoreError

    stored: dict[str, Any] = {}
    if "://" in db or Path(db).exists():
        try:
            stored = {r.key: r for r in Store(db, read_only=True).cells(prepared.matrix.name)}
        except StoreError:
            stored = {}
    out = []
    for cell in prepared.cells:
        row = stored.get(cell.key)
        status = row.status if row else None
        would = should_run(status, force, rerun_failed)
        if cell.key in prepared.wont_fit and would:
            out.append(Pending(cell, False, f"skip: {prepared.wont_fit[cell.key].error}"))
            continue
        if row is None:
            older = [r for r in stored.values() if (r.model, r.variant) == (cell.model.display_name, cell.variant)]
            if older:
                newest = max(older, key=lambda r: r.started_at or r.finished_at or 0)
                why = key_difference(newest.cell, cell.model_dump(mode="json")) or ["the cell's definition changed"]
                reason = "changed key: " + "; ".join(why)
            else:
                reason = "new"
        elif status == Status.ok:
            reason = "stored ok" + (" (--force)" if force else "")
        elif status == Status.running:
            reason = "unfinished (running when its run stopped, or running now elsewhere)"
        else:
            reason = f"{status} last time" + ("" if would else " (--rerun-failed to run it again)")
        out.append(Pending(cell, would, reason))
    return out


def existing_store(db: str) -> Store:
    """The store of a database that must exist already (reading commands)."""
    from evalq.store.db import StoreError

    if "://" not in db and not Path(db).exists():
        raise StoreError(f"database {db} does not exist (run `evalq run --matrix FILE --db {db}` first)")
    return Store(db, read_only=True)


def merge(sources: list[str], into: str, progress: Callable[[str], None] = lambda text: None) -> Any:
    """Fold the source databases (each must exist) into `into` (created if missing): see store/merge.py.
    Returns the MergeReport: per source, cells added, identical, conflicting."""
    from evalq.store.merge import merge as merge_stores

    stores = [existing_store(source) for source in sources]  # every source checked before `into` is created
    return merge_stores(stores, Store(into), progress)


def stored_rows(db: str | Store, matrix: str | None = None, all_rows: bool = False) -> list[Any]:
    """Stored cells in display order: the newest of each model, variant and suites unless `all_rows`."""
    from evalq.results import current_rows, display_order

    store = db if isinstance(db, Store) else existing_store(db)
    rows = store.cells(matrix)
    return display_order(rows if all_rows else current_rows(rows))


def results(db: str | Store, matrix: str | None = None, all_rows: bool = False) -> list[Any]:
    """One CellRecord per stored cell, with headline scores and the paired verdicts
    against fp16 (`record.as_json()`: what `evalq results --format json` prints)."""
    from evalq.record import records_of

    store = db if isinstance(db, Store) else existing_store(db)
    return records_of(stored_rows(store, matrix, all_rows), store.sample_loader())


def results_frame(db: str | Store, matrix: str | None = None, all_rows: bool = False) -> Any:
    """The records flattened as `evalq results --format csv` writes them, as a pandas DataFrame."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("results_frame needs pandas (pip install pandas); api.results gives the same records") from None
    from evalq.results import flat_rows

    return pd.DataFrame(flat_rows(results(db, matrix, all_rows)))


def build_leaderboard(db: str, out_dir: str | Path = "site", budgets: list[float] | None = None,
                      gpu_price: float | None = None, alpha: float = 0.05, latency: Any = None) -> Path:
    """Render the database as the static site; returns the path of index.html."""
    from evalq.leaderboard.pages import LatencyTarget
    from evalq.leaderboard.render import build_from_db

    existing_store(db)
    return build_from_db(db, Path(out_dir), budgets, gpu_price, alpha=alpha, latency=latency or LatencyTarget())
