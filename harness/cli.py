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

app = typer.Typer(help="Measure big-quantized against small-full-precision LLMs: accuracy, speed, memory.",
                  no_args_is_help=True, add_completion=False)
err = Console(stderr=True, soft_wrap=True)  # no wrapping inside paths and messages
out = Console(soft_wrap=True)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Bad input ends with exit code 2 and one message; --debug shows the traceback."""
    from evalq.matrix import MatrixError
    from evalq.models import ModelError
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
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Check a matrix without running it: schema, variants and their options, suites and tasks, models."""
    from evalq import preflight
    from evalq.matrix import MatrixError, load_matrix

    with user_errors(debug):
        matrix, suites = load_matrix(matrix_file)
        checked = preflight.check(matrix, suites, resolve_models=False)
        for note in checked.notes:
            out.print(f"  note: {escape(note)}")
        if checked.problems:
            raise MatrixError(str(matrix_file), checked.problems)
        n_cells = len(matrix.models) * len(matrix.variants)
        out.print(f"[green]ok[/green] {escape(str(matrix_file))}: {escape(matrix.name)} — {len(matrix.models)} models × "
                  f"{len(matrix.variants)} variants = {n_cells} cells; suites: {escape(', '.join(s.name for s in suites))}")


@app.command()
def run(
    matrix_file: Path = typer.Option(..., "--matrix", "-m", help="matrix YAML"),
    db: str = typer.Option("evalq.db", "--db", help="SQLite path or any SQLAlchemy URL"),
    force: bool = typer.Option(False, "--force", help="re-run every cell, even those stored ok"),
    rerun_failed: bool = typer.Option(False, "--rerun-failed", help="re-run cells whose status is not ok"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="stream the workers' output"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Run every cell of the matrix not already stored ok; record each end in the database."""
    from evalq import preflight
    from evalq.cell import expand
    from evalq.matrix import MatrixError, load_matrix
    from evalq.models import resolve_revision
    from evalq.orchestrator import run_cells
    from evalq.store import Store

    with user_errors(debug):
        matrix, suites = load_matrix(matrix_file)
        checked = preflight.check(matrix, suites)
        if checked.problems:
            raise MatrixError(str(matrix_file), checked.problems)
        cells = expand(matrix, suites, resolve_revision)
        store = Store(db)  # opened only once the input is known good: nothing partial is written
    summary = run_cells(cells, store, force=force, rerun_failed=rerun_failed, echo=verbose, console=err)
    ran = ", ".join(f"{n} {s}" for s, n in sorted(summary.ran.items())) or "none"
    elsewhere = f", {summary.elsewhere} taken by another evalq run" if summary.elsewhere else ""
    err.print(f"{summary.total} cells: {summary.skipped} already stored{elsewhere}, ran {ran}. "
              f"Results: evalq results --db {escape(db)}")


@app.command()
def results(
    db: str = typer.Option("evalq.db", "--db", help="SQLite path or any SQLAlchemy URL"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, csv or json"),
    matrix: str | None = typer.Option(None, "--matrix", help="only this matrix (by name)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Print the stored cells."""
    from evalq.results import records_of, to_csv, to_json, to_table
    from evalq.store import Store
    from evalq.store.db import StoreError

    with user_errors(debug):
        if "://" not in db and not Path(db).exists():
            raise StoreError(f"database {db} does not exist (run `evalq run --matrix FILE --db {db}` first)")
        store = Store(db)
        records = records_of(store.cells(matrix), store.samples)
    if fmt is Format.json:
        sys.stdout.write(to_json(records) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(to_csv(records))
    else:
        Console(width=max(200, out.width)).print(to_table(records))


leaderboard_app = typer.Typer(help="The static leaderboard site.", no_args_is_help=True)
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
    db: str = typer.Option("evalq.db", "--db", help="SQLite path or any SQLAlchemy URL"),
    out_dir: Path = typer.Option(Path("site"), "--out", help="folder to write the site into"),
    budgets: str | None = typer.Option(None, "--budgets", help="memory budgets in GB, e.g. 8,16,24,48,80 (default: from the data)"),
    gpu_price: float | None = typer.Option(None, "--gpu-price", min=0, help="GPU price per hour, for cost per million tokens"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Render the database as a static site (no server, works from file://); print the path of index.html."""
    from evalq.leaderboard.render import build_from_db
    from evalq.store.db import StoreError

    with user_errors(debug):
        if "://" not in db and not Path(db).exists():
            raise StoreError(f"database {db} does not exist")
        index = build_from_db(db, out_dir, _budgets(budgets), gpu_price)
    print(index.resolve())


if __name__ == "__main__":
    app()
