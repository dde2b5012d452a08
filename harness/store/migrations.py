"""Schema migrations: an ordered list of small functions, each applied once and
recorded by name in `evalq_migrations`. Append; never change what an applied one does.

Written in SQLAlchemy Core, not SQL text, so that one list serves SQLite and
PostgreSQL: each dialect gets its own types (BIGINT, BYTEA, JSONB and SERIAL on
PostgreSQL). Chosen over Alembic because the schema is four tables that only
ever grow, upgraded in place by whoever opens the database first, with no
branching history to manage and no second configuration file to ship. m001–m003
were SQLite DDL text until 2026-12-03; rewritten here, they create the very same
SQLite schema (BIGINT and BOOLEAN have SQLite's INTEGER and NUMERIC affinity,
and SQLite's integers are 64-bit whatever the declared type), so databases they
already ran on need nothing.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import (JSON, BigInteger, Boolean, Column, Connection, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, column, insert, select, table, update)
from sqlalchemy.dialects.postgresql import JSONB

# JSON as each dialect prefers: JSONB on PostgreSQL (binary, indexable), JSON text elsewhere
Json = JSON().with_variant(JSONB(), "postgresql")


def m001_cells_and_samples(conn: Connection) -> None:
    md = MetaData()
    cells = Table(
        "cells", md,
        Column("key", String(64), primary_key=True),
        Column("matrix", String(200), nullable=False),
        Column("model", String(300), nullable=False),
        Column("variant", String(50), nullable=False),
        Column("status", String(20), nullable=False),
        Column("error", Text),
        Column("revision", String(200), nullable=False),
        Column("cell", Json, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("started_at", DateTime),
        Column("finished_at", DateTime),
        Column("wall_seconds", Float),
        Column("dtype", String(20)),
        Column("weights_bytes", BigInteger),  # a 13B model's 26 GB does not fit 32 bits
        Column("peak_memory_bytes", BigInteger),
        Column("load_seconds", Float),
        Column("prepare_seconds", Float),
        Column("ttft_ms", Float),
        Column("decode_tokens_per_s", Float),
        Column("metrics", Json),
        Column("result", Json),
        Column("log_tail", Text),
    )
    Index("ix_cells_model", cells.c.model)
    Index("ix_cells_status", cells.c.status)
    Table(
        "samples", md,
        Column("cell_key", String(64), ForeignKey("cells.key", ondelete="CASCADE"), primary_key=True),
        Column("task", String(200), primary_key=True),
        Column("n", Integer, nullable=False),
        Column("data", LargeBinary, nullable=False),
    )
    md.create_all(conn)


def m002_cell_owner(conn: Connection) -> None:
    # host:pid of the orchestrator running the cell: a second `evalq run` on the
    # same database leaves a cell alone while its owner is alive.
    conn.exec_driver_sql("ALTER TABLE cells ADD COLUMN owner VARCHAR(200)")


def m003_nightly_runs(conn: Connection) -> None:
    # One row per `evalq nightly`, and what each (model, variant) measured that
    # night: a cell re-run under the same key overwrites its row in `cells`, so
    # the history keeps its own copy of the figures it charts and compares.
    md = MetaData()
    Table(
        "nightly_runs", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("matrix", String(200), nullable=False),
        Column("started_at", DateTime, nullable=False),
        Column("finished_at", DateTime),
        Column("status", String(20), nullable=False),
        Column("summary", Json),
        sqlite_autoincrement=True,  # ids never reused: history rows point at them
    )
    Table(
        "nightly_cells", md,
        Column("run_id", Integer, ForeignKey("nightly_runs.id", ondelete="CASCADE"), primary_key=True),
        Column("model", String(300), primary_key=True),
        Column("variant", String(50), primary_key=True),
        Column("cell_key", String(64), nullable=False),
        Column("reran", Boolean(create_constraint=False), nullable=False),
        Column("figures", Json, nullable=False),
    )
    md.create_all(conn)


def m004_cell_hardware(conn: Connection) -> None:
    # The hardware class became part of a cell (and its key): cells stored before
    # get the class their own recorded env names, so that rows of two machines stay
    # apart on the board. Their keys stay as they were: the first run after the
    # upgrade measures each cell again under its new key.
    from evalq.env import hardware_of

    cells = table("cells", column("key", String), column("cell", Json), column("result", Json))
    for key, cell, result in conn.execute(select(cells.c.key, cells.c.cell, cells.c.result)).all():
        hardware = hardware_of((result or {}).get("env") or {})
        if cell.get("hardware") or hardware is None:
            continue
        conn.execute(update(cells).where(cells.c.key == key).values(cell={**cell, "hardware": hardware}))


def m005_cell_heartbeat(conn: Connection) -> None:
    # When the owner of a running cell last said it was alive: a runner on another
    # machine cannot be asked by pid, so a cell whose heartbeat went stale is taken over.
    conn.exec_driver_sql(f"ALTER TABLE cells ADD COLUMN heartbeat_at {DateTime().compile(dialect=conn.dialect)}")


def m006_superseded_results(conn: Connection) -> None:
    # A runner whose claim on a cell was taken over (frozen past the stale limit, then resumed)
    # records nothing in `cells`: what it measured is kept here, beside the result that stands.
    md = MetaData()
    Table(
        "superseded_results", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("cell_key", String(64), nullable=False, index=True),
        Column("owner", String(200), nullable=False),  # the runner whose claim was taken over
        Column("attempt", Integer, nullable=False),  # its claim: the cell's attempt number when it claimed
        Column("taken_by", String(200)),  # who held the cell when this result came back
        Column("taken_attempt", Integer),
        Column("status", String(20), nullable=False),
        Column("result", Json),
        Column("recorded_at", DateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    md.create_all(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [m001_cells_and_samples, m002_cell_owner, m003_nightly_runs,
                                                  m004_cell_hardware, m005_cell_heartbeat, m006_superseded_results]

_applied = Table("evalq_migrations", MetaData(), Column("name", String(100), primary_key=True),
                 Column("applied_at", DateTime, nullable=False))


def schema_version(conn: Connection) -> tuple[int, set[str]]:
    _applied.create(conn, checkfirst=True)
    applied = {row[0] for row in conn.execute(select(_applied.c.name))}
    return len(applied), applied


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations not yet applied; return their names."""
    _, applied = schema_version(conn)
    done = []
    for fn in MIGRATIONS:
        if fn.__name__ in applied:
            continue
        fn(conn)
        conn.execute(insert(_applied).values(name=fn.__name__, applied_at=datetime.now(timezone.utc).replace(tzinfo=None)))
        done.append(fn.__name__)
    return done
