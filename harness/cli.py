"""The `evalq` command: a thin layer over matrix → cells → orchestrator → store."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from evalq.outcome import FAILURES

app = typer.Typer(rich_markup_mode=None, help="Measure big-quantized against small-full-precision LLMs: accuracy, speed, memory.",
                  no_args_is_help=True)  # --install-completion / --show-completion for bash, zsh, fish
err = Console(stderr=True, soft_wrap=True)  # no wrapping inside paths and messages
out = Console(soft_wrap=True)


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _version(value: bool) -> None:
    if value:
        from evalq import __version__

        out.print(f"evalq {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit")) -> None:
    """Measure big-quantized against small-full-precision LLMs: accuracy, speed, memory."""


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Bad input ends with exit code 2 and one message; --debug shows the traceback."""
    from evalq.matrix import MatrixError
    from evalq.model_sources import ModelError
    from evalq.store.db import StoreError
    from evalq.suites import SuiteNotFound

    try:
        yield
    except (MatrixError, ModelError, StoreError, SuiteNotFound) as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command()
def validate(
    matrix_file: Path = typer.Argument(..., help="matrix YAML"),
    allow_unchecked: bool = typer.Option(False, "--allow-unchecked",
                                         help="accept hub models that could not be checked (offline, unreachable, gated)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Check a matrix without running it: schema, variants and their options, suites and tasks, models.
    Exit 0: ok; 2: a problem (each named by line and field), a hub model that does not exist, or one
    that could not be checked (unless --allow-unchecked)."""
    from evalq.api import load_matrix

    with user_errors(debug):
        matrix, suites, notes = load_matrix(matrix_file, resolve_models=False, allow_unchecked=allow_unchecked)
        for note in notes:
            out.print(f"  note: {escape(note)}")
        n_cells = len(matrix.models) * len(matrix.variants)
        out.print(f"[green]ok[/green] {escape(str(matrix_file))}: {escape(matrix.name)} — {len(matrix.models)} models × "
                  f"{len(matrix.variants)} variants = {n_cells} cells; suites: {escape(', '.join(s.name for s in suites))}")


def _fail_on(text: str) -> tuple[str, ...]:
    from evalq.outcome import Status

    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if names == ("none",):
        return ()
    known = [s.value for s in Status if s not in (Status.ok, Status.running)]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise typer.BadParameter(f"--fail-on takes statuses from {', '.join(known)} (comma-separated) or none, got {text!r}")
    return names


@app.command()
def run(
    matrix_file: Path = typer.Option(..., "--matrix", "-m", help="matrix YAML"),
    db: str = typer.Option("evalq.db", "--db", help="SQLite path, or a postgresql:// URL"),
    force: bool = typer.Option(False, "--force", help="re-run every cell, even those stored ok"),
    rerun_failed: bool = typer.Option(False, "--rerun-failed", help="re-run cells whose status is not ok"),
    gpu_memory: str | None = typer.Option(None, "--gpu-memory", help="skip cells the planner predicts above this (e.g. 24GB); "
                                          "default on CUDA: the GPU's memory"),
    executor: ExecutorName = typer.Option(ExecutorName.local, "--executor", help="local: one cell at a time here; "
                                          "ray: each cell a Ray task on a cluster (pip install 'evalq[ray]')"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (auto: the running cluster; "
                                       "default: start a local one)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list each cell that would run and why; load nothing, write nothing"),
    fail_on: str = typer.Option(",".join(s.value for s in FAILURES), "--fail-on",
                                help="exit 1 when a cell of this run ends in one of these statuses (comma-separated; "
                                     "also unsupported, skipped; none: always 0)"),
    until_decided: bool = typer.Option(False, "--until-decided", help="evaluate each quantized cell only until its recovery "
                                       "gates are decided (eval.until_decided's defaults where the matrix sets none)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="stream the workers' output"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Run every cell of the matrix not already stored ok; record each end in the database.
    Exit 0: every cell ran or was stored; 1: a cell of this run ended in a --fail-on status; 2: bad input."""
    from evalq import api
    from evalq.store.db import safe_url

    statuses = _fail_on(fail_on)
    with user_errors(debug):
        prepared = api.prepare(matrix_file, gpu_memory, until_decided)
        if dry_run:
            plan = api.dry_run(prepared, db, force, rerun_failed)
            for p in plan:
                out.print(f"{'run ' if p.would_run else 'keep'}  {escape(p.cell.name)}  [dim]{p.cell.key[:12]}[/dim]  {escape(p.reason)}")
            out.print(f"{sum(p.would_run for p in plan)} of {len(plan)} cells would run (dry run: nothing loaded or written)")
            return
        store = api.Store(db)
    summary = api.run(prepared, store, force=force, rerun_failed=rerun_failed, executor=executor.value, address=address,
                      verbose=verbose, console=err, log=lambda text: err.print(escape(text)))
    ran = ", ".join(f"{n} {s}" for s, n in sorted(summary.ran.items())) or "none"
    elsewhere = f", {summary.elsewhere} taken by another evalq run" if summary.elsewhere else ""
    if summary.superseded:  # this run was silent past the stale limit: another took those cells and recorded them
        elsewhere += (f", {len(summary.superseded)} taken over by another evalq run while this one was stopped "
                      f"(this run's results kept in superseded_results, not recorded)")
    err.print(f"{summary.total} cells: {summary.skipped} already stored{elsewhere}, ran {ran}. "
              f"Results: evalq results --db {escape(safe_url(db))}")
    failed = api.failures(summary, statuses)
    if failed:
        err.print(f"[red]{len(failed)} cell(s) ended in {', '.join(sorted({o.status.value for o in failed.values()}))}[/red] "
                  f"(--fail-on {','.join(statuses)})")
        raise typer.Exit(1)


def existing_store(db: str):
    from evalq.api import existing_store

    return existing_store(db)


@app.command()
def results(
    db: str = typer.Option("evalq.db", "--db", help="SQLite path, or a postgresql:// URL"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, csv or json"),
    matrix: str | None = typer.Option(None, "--matrix", help="only this matrix (by name)"),
    all_rows: bool = typer.Option(False, "--all", help="also cells superseded by a newer key (older revisions, libraries)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Print the stored cells (the newest of each model, variant and suites unless --all)."""
    from evalq.api import results as stored_results
    from evalq.results import equal_cost_lines, kv_table, serve_table, to_csv, to_json, to_table

    with user_errors(debug):
        records = stored_results(db, matrix, all_rows)
    if fmt is Format.json:
        sys.stdout.write(to_json(records) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(to_csv(records))
    else:
        for table in (to_table(records), kv_table(records), serve_table(records)):
            if table is not None:  # printed whole at its natural width, never wrapped inside a cell
                Console(width=max(out.width, Console(width=10_000).measure(table).maximum)).print(table)
        lines = equal_cost_lines(records)
        if lines:
            out.print("Equal-cost questions (eval.until_decided.compare, each answer wrong at most α/2 of the time):",
                      markup=False, highlight=False)
            for line in lines:
                out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def merge(
    sources: list[str] = typer.Argument(..., help="databases to fold in: SQLite files or SQLAlchemy URLs"),
    into: str = typer.Option(..., "--into", help="the database to fold them into (a path or URL; created if missing)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Fold results databases into one: cells matched by key, identical ones kept once, conflicts reported
    and never overwritten; per-sample records and nightly history come along.
    Exit 0: merged; 1: merged, but some cells conflicted (listed); 2: bad input."""
    from evalq import api
    from evalq.store.merge import describe

    with user_errors(debug):
        report = api.merge(sources, into, progress=lambda text: err.print(escape(text)))
    for line in describe(report):
        out.print(escape(line), soft_wrap=True)
    if report.conflicts:
        raise typer.Exit(1)


class ExportFormat(str, Enum):
    lm_eval = "lm-eval"


@app.command()
def export(
    db: str = typer.Option(..., "--db", help="SQLite file or SQLAlchemy URL"),
    out_dir: Path = typer.Option(..., "--out", help="folder to write into"),
    fmt: ExportFormat = typer.Option(ExportFormat.lm_eval, "--format", "-f", help="lm-eval: what `lm_eval --output_path --log_samples` writes"),
    matrix: str | None = typer.Option(None, "--matrix", help="only this matrix (by name)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Write each stored ok cell as lm-eval writes its output: results JSON and per-task samples JSONL."""
    from evalq.api import stored_rows
    from evalq.export import NotExportable, export_lm_eval
    from evalq.record import record_of
    from evalq.store.db import StoreError

    with user_errors(debug):
        store = existing_store(db)
        try:
            folders = export_lm_eval([record_of(r) for r in stored_rows(store, matrix)], store.samples, out_dir)
        except NotExportable as exc:
            raise StoreError(str(exc)) from None
    for folder in folders:
        out.print(escape(str(folder)))
    out.print(f"{len(folders)} cell(s) written in lm-eval's format under {escape(str(out_dir))}")


class Training(str, Enum):
    full = "full"
    lora = "lora"
    qlora = "qlora"


class Recompute(str, Enum):
    none = "none"
    selective = "selective"
    full = "full"


@app.command()
def plan(
    matrix_file: Path = typer.Option(..., "--matrix", "-m", help="matrix YAML"),
    gpu_memory: str = typer.Option("80GB", "--gpu-memory", help="memory of one GPU, e.g. 80GB, 24GiB"),
    gpus: int = typer.Option(1, "--gpus", min=1, help="GPUs available (a model may be split across them)"),
    config: list[str] = typer.Option([], "--config", help="NAME=PATH: a local config.json for a model the hub cannot give"),
    training: Training | None = typer.Option(None, "--training", help="plan fine-tuning instead of inference"),
    zero: int = typer.Option(0, "--zero", min=0, max=3, help="ZeRO stage (3 = FSDP full sharding)"),
    shard_group: int | None = typer.Option(None, "--shard-group", min=1, help="hybrid sharding: shard within groups of this many GPUs"),
    seq: int = typer.Option(2048, "--seq", min=1, help="training sequence length"),
    batch: int = typer.Option(1, "--batch", min=1, help="training micro-batch per GPU"),
    recompute: Recompute = typer.Option(Recompute.none, "--recompute", help="activation recomputation"),
    adam8bit: bool = typer.Option(False, "--adam8bit", help="8-bit Adam states (6 bytes/param instead of 12)"),
    offload: bool = typer.Option(False, "--offload-optimizer", help="optimizer states in CPU memory"),
    lora_rank: int = typer.Option(16, "--lora-rank", min=1),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Predict each cell's memory from config.json alone (no weights loaded) and whether it fits."""
    import json

    from evalq.api import memory_plan
    from evalq.matrix import MatrixError
    from evalq.planner import PlanError, parse_bytes

    with user_errors(debug):
        try:
            gpu_bytes = parse_bytes(gpu_memory)
            given = dict(_name_path(item) for item in config)
        except PlanError as exc:
            raise MatrixError(str(matrix_file), [str(exc)]) from None
        train = None
        if training is not None:
            train = {"method": training.value, "zero": zero, "sequence": seq, "batch": batch, "recompute": recompute.value,
                     "optimizer": "adamw8bit" if adam8bit else "adamw", "offload_optimizer": offload,
                     "shard_group": shard_group, "lora_rank": lora_rank}
        rows = memory_plan(matrix_file, gpu_bytes, gpus, given, train)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    from evalq.planner import plan_table

    Console(width=max(160, out.width)).print(plan_table(rows, gpu_bytes, gpus, training is not None))


def _name_path(item: str) -> tuple[str, str]:
    from evalq.planner import PlanError

    name, sep, path = item.rpartition("=")
    if not sep or not name or not path:
        raise PlanError(f"--config {item!r} is not NAME=PATH")
    if not Path(path).is_file():
        raise PlanError(f"--config {name}: {path} does not exist")
    return name, path


@app.command()
def nightly(
    matrix_file: Path = typer.Option(..., "--matrix", "-m", help="matrix YAML"),
    db: str = typer.Option("evalq.db", "--db", help="SQLite path, or a postgresql:// URL"),
    site: Path = typer.Option(Path("site"), "--site", help="leaderboard folder; report.md and report.json go here too"),
    full: bool = typer.Option(False, "--full", help="re-run every cell, not only those whose key changed or that failed"),
    alpha: float = typer.Option(0.01, "--alpha", min=1e-9, max=0.5, help="significance level of a change (two-sided)"),
    gpu_memory: str | None = typer.Option(None, "--gpu-memory", help="as for run: skip cells predicted above this"),
    executor: ExecutorName = typer.Option(ExecutorName.local, "--executor", help="local or ray, as for run"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address, as for run"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Unattended: run what changed, rebuild the leaderboard with its history, compare with the
    previous night. Exit 0: no regression (or another nightly holds the lock); 1: a regression
    or a failing cell (see report.md); 2: bad input."""
    from evalq.api import prepare
    from evalq.nightly import Busy, lock_path, nightly_lock, run_nightly

    with user_errors(debug):
        try:
            with nightly_lock(lock_path(db, site)):
                report = run_nightly(prepare(matrix_file, gpu_memory), db, site, full=full, alpha=alpha, console=err,
                                     log=lambda text: err.print(escape(text)), executor=executor.value, address=address)
        except Busy as exc:
            err.print(escape(str(exc)))
            raise typer.Exit(0) from None
    out.print(report.markdown(), markup=False, highlight=False)
    raise typer.Exit(report.exit_code)


@app.command("gguf-converter")
def gguf_converter(
    sdist: Path | None = typer.Option(None, "--sdist", exists=True, dir_okay=False,
                                      help="llama-cpp-python's .tar.gz (else pip downloads the installed version's)"),
) -> None:
    """Install llama.cpp's convert_hf_to_gguf.py for the gguf-<type> variants (not part of
    llama-cpp-python's wheel), matching the installed llama-cpp-python."""
    from importlib.metadata import PackageNotFoundError

    from evalq.backends.gguf_converter import install_converter

    try:
        install_converter(sdist, log=lambda text: err.print(escape(text)))
    except PackageNotFoundError:
        err.print("[red]error:[/red] " + escape("llama-cpp-python is not installed: pip install 'evalq[gguf]'"))
        raise typer.Exit(2) from None


leaderboard_app = typer.Typer(rich_markup_mode=None, help="The static leaderboard site.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")


def _budgets(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--budgets takes GB numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter(f"--budgets must be positive GB numbers, got {text!r}")
    return sorted(values)


@leaderboard_app.command("build")
def leaderboard_build(
    db: str = typer.Option("evalq.db", "--db", help="SQLite path, or a postgresql:// URL"),
    out_dir: Path = typer.Option(Path("site"), "--out", help="folder to write the site into"),
    budgets: str | None = typer.Option(None, "--budgets", help="memory budgets in GB, e.g. 8,16,24,48,80 (default: from the data)"),
    gpu_price: float | None = typer.Option(None, "--gpu-price", min=0, help="GPU price per hour, for cost per million tokens"),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-9, max=0.5, help="significance level of the verdicts (Holm-adjusted over each page)"),
    max_tpot_ms: float | None = typer.Option(None, "--max-tpot-ms", min=0, help="equal cost: only configurations decoding at most this many ms per token (batch 1)"),
    max_ttft_ms: float | None = typer.Option(None, "--max-ttft-ms", min=0, help="equal cost: only configurations with at most this time to first token (ms)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Render the database as a static site (no server, works from file://); print the path of index.html."""
    from evalq.api import build_leaderboard
    from evalq.leaderboard.pages import LatencyTarget

    with user_errors(debug):
        index = build_leaderboard(db, out_dir, _budgets(budgets), gpu_price, alpha=alpha, latency=LatencyTarget(max_tpot_ms, max_ttft_ms))
    print(index.resolve())


if __name__ == "__main__":
    app(prog_name="evalq")
