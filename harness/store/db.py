"""The results database. Only the orchestrator writes it, one short transaction per cell."""
from __future__ import annotations

import json
import os
import socket
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import create_engine, delete, event, inspect, make_url, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from evalq.outcome import CellOutcome, Status
from evalq.store.migrations import MIGRATIONS, migrate, schema_version
from evalq.store.tables import CellRow, NightlyCell, NightlyRun, SampleRow, SupersededResult


class StoreError(RuntimeError):
    """The database cannot be opened or written (missing folder, read-only, newer schema)."""


class SchemaTooNew(StoreError):
    pass


@dataclass(frozen=True)
class Claim:
    """A runner's hold on a cell: its owner and the attempt number its claim set. Recording checks both
    (a fence): a runner whose claim was taken over records nothing over the runner that took it."""

    owner: str
    attempt: int


class Superseded(StoreError):
    """The cell was taken over by another runner while this one held it; this runner's result was kept
    in `superseded_results`, not recorded."""

    def __init__(self, key: str, claim: Claim, taken_by: str | None, taken_attempt: int | None):
        self.key, self.claim, self.taken_by, self.taken_attempt = key, claim, taken_by, taken_attempt
        super().__init__(f"taken over by {taken_by} (attempt {taken_attempt}) while this run ({claim.owner}, attempt "
                         f"{claim.attempt}) was silent past the stale limit: its result is kept in superseded_results, "
                         f"not recorded")


def database_url(db: str) -> str:
    """A path is a SQLite file; postgresql:// (and postgres://) mean psycopg 3, the driver evalq installs."""
    if "://" not in db:
        return f"sqlite:///{db}"
    scheme, rest = db.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else db


def safe_url(db: str) -> str:
    """The database as it may be shown: a URL's password masked (output, logs, reports, the site)."""
    if "://" not in db:
        return db
    try:
        return make_url(db).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can parse: show nothing after the scheme's user part
        scheme, _, rest = db.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else db


def _sqlite_pragmas(engine: Engine, read_only: bool = False) -> None:
    # The pysqlite recipe from SQLAlchemy's docs: let SQLAlchemy emit BEGIN, and
    # make it BEGIN IMMEDIATE so two writers queue on the busy timeout instead
    # of failing with "database is locked" when a read upgrades to a write.
    # A reader sets nothing that is stored in the file (journal_mode is).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        if read_only:
            cur.execute("PRAGMA query_only = ON")
        else:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _sqlite_read_only(path: str) -> Callable[[], Any]:
    """A connection factory that opens the file read-only (SQLite's mode=ro URI): nothing can write it."""
    import sqlite3
    from urllib.parse import quote

    uri = f"file:{quote(str(Path(path).expanduser().resolve()))}?mode=ro"
    return lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)


def this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# A running orchestrator marks its running cells alive every HEARTBEAT_S; one on
# another machine that has not done so for STALE_AFTER_S is taken for dead.
HEARTBEAT_S = float(os.environ.get("EVALQ_HEARTBEAT_S", "30"))
STALE_AFTER_S = float(os.environ.get("EVALQ_STALE_AFTER_S", "180"))


def owner_alive(owner: str, heartbeat_at: datetime | None = None) -> bool:
    """Is the orchestrator `host:pid` still running? On this host: its pid says.
    On another: its last heartbeat (a row claimed before heartbeats: its start),
    unknown meaning alive."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return heartbeat_at is None or (_now() - heartbeat_at).total_seconds() < STALE_AFTER_S
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    try:  # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


MIGRATION_LOCK = 0x65766171  # "evalq": the advisory lock key migrations hold on PostgreSQL


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Store:
    """The results database. `read_only`: opened so that nothing can change it (the reading commands
    and merge sources): a SQLite file in mode=ro, a PostgreSQL session in read-only transactions; a
    SQLite file of an older schema is read through a migrated temporary copy."""

    def __init__(self, db: str, read_only: bool = False):
        self.read_only = read_only
        url = database_url(db)
        local = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
        if local and local != ":memory:" and not local.startswith("file:"):  # file: is SQLite's URI form
            folder = Path(local).expanduser().resolve().parent
            if not folder.is_dir():
                raise StoreError(f"database folder {folder} does not exist")
        self.url = url
        self.shown = safe_url(db)
        self._copy: Any = None  # read_only on an older SQLite schema: the migrated temporary copy read instead
        ro_file = local if read_only and local and local != ":memory:" and not local.startswith("file:") else None
        try:
            if ro_file:
                self.engine = create_engine("sqlite://", creator=_sqlite_read_only(ro_file))
            else:
                self.engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        except ModuleNotFoundError as exc:
            hint = " (pip install 'evalq[postgres]')" if url.startswith("postgresql") else ""
            raise StoreError(f"cannot open database {self.shown}: its driver {exc.name} is not installed{hint}") from None
        except Exception as exc:  # noqa: BLE001 - a malformed URL, said plainly
            raise StoreError(f"cannot open database {self.shown}: {exc.__class__.__name__}") from None
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine, read_only)
        elif read_only and self.engine.dialect.name == "postgresql":
            @event.listens_for(self.engine, "connect")
            def _read_only_session(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.read_only = True  # psycopg: every transaction of this session is READ ONLY

        deadline = time.monotonic() + 30
        while True:
            try:
                if read_only:
                    self._check_schema(ro_file)
                else:
                    self._migrate(db)
                return
            except SchemaTooNew:
                raise
            except Exception as exc:  # noqa: BLE001 - OperationalError and friends, said plainly
                # SQLite can answer "locked" at once, without its busy handler, while another
                # process creates the database or switches it to WAL: wait as busy_timeout would
                if "database is locked" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                said = str(exc).splitlines()[0].replace(url, self.shown).replace(db, self.shown)
                raise StoreError(f"cannot open database {self.shown}: {exc.__class__.__name__}: {said}") from None

    def _migrate(self, db: str) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # two runners opening one database migrate one at a time
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            _, applied = schema_version(conn)
            unknown = applied - {fn.__name__ for fn in MIGRATIONS}
            if unknown:
                raise SchemaTooNew(
                    f"{self.shown} was written by a newer evalq (unknown migrations: {', '.join(sorted(unknown))}); upgrade evalq"
                )
            migrate(conn)
            # a database that opens but cannot be written would fail at the first cell: fail now
            conn.execute(text("DELETE FROM evalq_migrations WHERE name = '(write probe)'"))

    def _check_schema(self, ro_file: str | None) -> None:
        """A reader's migration: none. A newer schema is refused as when writing; an older one is
        read from a migrated copy (SQLite) or refused (PostgreSQL, which has no file to copy)."""
        with self.engine.connect() as conn:
            exists = inspect(conn).has_table("evalq_migrations")
            applied = {row[0] for row in conn.execute(text("SELECT name FROM evalq_migrations"))} if exists else set()
        unknown = applied - {fn.__name__ for fn in MIGRATIONS}
        if unknown:
            raise SchemaTooNew(
                f"{self.shown} was written by a newer evalq (unknown migrations: {', '.join(sorted(unknown))}); upgrade evalq")
        missing = [fn.__name__ for fn in MIGRATIONS if fn.__name__ not in applied]
        if not missing:
            return
        if ro_file is None:
            raise StoreError(f"{self.shown} has an older schema (without {', '.join(missing)}): it is read only once "
                             f"upgraded, which a writing command does (evalq run, or evalq merge into it)")
        import sqlite3
        import tempfile

        self._copy = tempfile.TemporaryDirectory(prefix="evalq-read-")
        copy = str(Path(self._copy.name) / "copy.db")
        source, target = _sqlite_read_only(ro_file)(), sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        self.engine.dispose()
        migrated = Store(copy)
        self.engine = migrated.engine

    def status(self, key: str) -> str | None:
        with Session(self.engine) as s:
            return s.scalar(select(CellRow.status).where(CellRow.key == key))

    def claim(self, cell: Any, wanted: Callable[[str | None], bool], owner: str | None = None) -> Claim | None:
        """Mark the cell running for `owner` if `wanted(status)` and no live
        orchestrator holds it; atomic, so two runs on one database never take the
        same cell: on SQLite the transaction is BEGIN IMMEDIATE (one writer at a
        time), on PostgreSQL the row is read FOR UPDATE (the second claimant waits
        for the first's commit, then sees it running), and of two claimants
        inserting a new row, the second's insert fails on the key: not taken.
        Returns the claim to record with, or None."""
        owner = owner or this_owner()
        try:
            return self._claim(cell, wanted, owner)
        except IntegrityError:
            return None

    def _claim(self, cell: Any, wanted: Callable[[str | None], bool], owner: str) -> Claim | None:
        with Session(self.engine) as s, s.begin():
            row = s.get(CellRow, cell.key, with_for_update=True)
            status = row.status if row else None
            if status == Status.running and row.owner and row.owner != owner and owner_alive(row.owner, row.heartbeat_at or row.started_at):
                return None
            if not wanted(status):
                return None
            if row is None:
                row = CellRow(key=cell.key, attempts=0)
                s.add(row)
            row.matrix = cell.matrix
            row.model = cell.model.display_name
            row.variant = cell.variant
            row.revision = cell.revision
            row.cell = cell.model_dump(mode="json")
            row.status = Status.running.value
            row.error = None
            row.attempts = (row.attempts or 0) + 1
            row.started_at = row.heartbeat_at = _now()
            row.finished_at = None
            row.owner = owner
            return Claim(owner, row.attempts)

    def heartbeat(self, owner: str | None = None) -> int:
        """Mark the cells `owner` is running alive; returns how many."""
        with Session(self.engine) as s, s.begin():
            done = s.execute(update(CellRow).where(CellRow.owner == (owner or this_owner()), CellRow.status == Status.running.value)
                             .values(heartbeat_at=_now()))
            return done.rowcount

    def record(self, cell: Any, outcome: CellOutcome | dict[str, Any], samples: dict[str, list] | None = None,
               log_tail: str = "", wall_seconds: float = 0.0, claim: Claim | None = None) -> None:
        """Store how a cell ended, its measurements and its per-sample records, in one transaction
        (`outcome` may be given as stored JSON). With the `claim` it ran under: only if that claim
        still holds the cell (same owner, same attempt), else the result goes to superseded_results
        and Superseded is raised."""
        if not isinstance(outcome, CellOutcome):
            outcome = CellOutcome.from_stored(outcome)
        superseded = None
        with Session(self.engine) as s, s.begin():
            row = s.get(CellRow, cell.key, with_for_update=claim is not None)
            if claim is not None and row is not None and (row.owner, row.attempts) != (claim.owner, claim.attempt):
                s.add(SupersededResult(cell_key=cell.key, owner=claim.owner, attempt=claim.attempt, taken_by=row.owner,
                                       taken_attempt=row.attempts, status=outcome.status.value, recorded_at=_now(),
                                       result=json.loads(json.dumps(outcome.stored(), default=str))))
                superseded = Superseded(cell.key, claim, row.owner, row.attempts)
            else:
                if row is None:
                    row = CellRow(key=cell.key, attempts=1, matrix=cell.matrix, model=cell.model.display_name,
                                  variant=cell.variant, revision=cell.revision, cell=cell.model_dump(mode="json"))
                    s.add(row)
                _fill(s, row, outcome, samples, log_tail, wall_seconds)
        if superseded is not None:
            raise superseded

    def superseded(self) -> list[SupersededResult]:
        """Results that came back on a claim another runner had taken over, oldest first."""
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(SupersededResult).order_by(SupersededResult.id)))

    def cells(self, matrix: str | None = None) -> list[CellRow]:
        """Stored cells by model and variant name (display order is the caller's: results.display_order)."""
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(CellRow)
            if matrix:
                query = query.where(CellRow.matrix == matrix)
            rows = list(s.scalars(query))
        return sorted(rows, key=lambda r: (r.model, r.variant))

    def sample_loader(self) -> Callable[[str, str], list[dict[str, Any]]]:
        """`samples` that asks the database only for records that exist: one query
        lists them, so pairing 10,000 cells without samples costs one query, not 20,000."""
        with Session(self.engine) as s:
            present = {(key, task) for key, task in s.execute(select(SampleRow.cell_key, SampleRow.task))}
        return lambda key, task: self.samples(key, task) if (key, task) in present else []

    def samples(self, key: str, task: str) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            row = s.get(SampleRow, (key, task))
            return json.loads(zlib.decompress(row.data)) if row else []

    # The nightly history (evalq.nightly): one run row, then a copy of each cell's figures.
    def start_nightly(self, matrix: str) -> int:
        with Session(self.engine) as s, s.begin():
            run = NightlyRun(matrix=matrix, started_at=_now(), status="running")
            s.add(run)
            s.flush()
            return run.id

    def finish_nightly(self, run_id: int, status: str, summary: dict[str, Any],
                       cells: list[tuple[str, str, str, bool, dict[str, Any]]]) -> None:
        """cells: (model, variant, cell key, re-run tonight, figures)."""
        with Session(self.engine) as s, s.begin():
            run = s.get(NightlyRun, run_id)
            run.status, run.summary, run.finished_at = status, json.loads(json.dumps(summary, default=str)), _now()
            for model, variant, key, reran, figures in cells:
                s.add(NightlyCell(run_id=run_id, model=model, variant=variant, cell_key=key, reran=reran, figures=figures))

    def nightly_runs(self, matrix: str | None = None) -> list[NightlyRun]:
        """Nightly runs that finished their comparison, oldest first."""
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(NightlyRun).where(NightlyRun.status.in_(("ok", "regression"))).order_by(NightlyRun.id)
            if matrix:
                query = query.where(NightlyRun.matrix == matrix)
            return list(s.scalars(query))

    def nightly_cells(self, run_ids: list[int] | None = None) -> list[NightlyCell]:
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(NightlyCell).order_by(NightlyCell.run_id, NightlyCell.model, NightlyCell.variant)
            if run_ids is not None:
                query = query.where(NightlyCell.run_id.in_(run_ids))
            return list(s.scalars(query))


def _fill(s: Session, row: CellRow, outcome: CellOutcome, samples: dict[str, list] | None, log_tail: str,
          wall_seconds: float) -> None:
    """Write how the cell ended into its row, and replace its per-sample records."""
    row.status = outcome.status.value
    row.error = outcome.error
    row.finished_at = _now()
    row.wall_seconds = wall_seconds
    row.log_tail = log_tail
    row.dtype = outcome.dtype
    row.weights_bytes = outcome.weights_bytes
    row.peak_memory_bytes = outcome.peak_memory_bytes
    row.load_seconds = outcome.load_seconds
    row.prepare_seconds = outcome.prepare_seconds
    row.ttft_ms = outcome.speed.ttft_ms if outcome.speed else None
    row.decode_tokens_per_s = outcome.speed.decode_tokens_per_s if outcome.speed else None
    row.metrics = outcome.metrics
    row.result = json.loads(json.dumps(outcome.stored(), default=str))
    s.execute(delete(SampleRow).where(SampleRow.cell_key == row.key))
    for task, records in (samples or {}).items():
        blob = zlib.compress(json.dumps(records, default=str).encode(), 6)
        s.add(SampleRow(cell_key=row.key, task=task, n=len(records), data=blob))
