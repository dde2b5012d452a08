"""Schema migrations: an ordered list of small functions, each applied once and
recorded by name in `evalq_migrations`. Append; never edit an applied one."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Connection, text


def m001_cells_and_samples(conn: Connection) -> None:
    conn.execute(text("""
        CREATE TABLE cells (
            key VARCHAR(64) NOT NULL PRIMARY KEY,
            matrix VARCHAR(200) NOT NULL,
            model VARCHAR(300) NOT NULL,
            variant VARCHAR(50) NOT NULL,
            status VARCHAR(20) NOT NULL,
            error TEXT,
            revision VARCHAR(200) NOT NULL,
            cell JSON NOT NULL,
            attempts INTEGER NOT NULL,
            started_at DATETIME,
            finished_at DATETIME,
            wall_seconds FLOAT,
            dtype VARCHAR(20),
            weights_bytes INTEGER,
            peak_memory_bytes INTEGER,
            load_seconds FLOAT,
            prepare_seconds FLOAT,
            ttft_ms FLOAT,
            decode_tokens_per_s FLOAT,
            metrics JSON,
            result JSON,
            log_tail TEXT
        )"""))
    conn.execute(text("CREATE INDEX ix_cells_model ON cells (model)"))
    conn.execute(text("CREATE INDEX ix_cells_status ON cells (status)"))
    conn.execute(text("""
        CREATE TABLE samples (
            cell_key VARCHAR(64) NOT NULL REFERENCES cells (key) ON DELETE CASCADE,
            task VARCHAR(200) NOT NULL,
            n INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (cell_key, task)
        )"""))


def m002_cell_owner(conn: Connection) -> None:
    # host:pid of the orchestrator running the cell: a second `evalq run` on the
    # same database leaves a cell alone while its owner is alive.
    conn.execute(text("ALTER TABLE cells ADD COLUMN owner VARCHAR(200)"))


def m003_nightly_runs(conn: Connection) -> None:
    # One row per `evalq nightly`, and what each (model, variant) measured that
    # night: a cell re-run under the same key overwrites its row in `cells`, so
    # the history keeps its own copy of the figures it charts and compares.
    conn.execute(text("""
        CREATE TABLE nightly_runs (
            id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            matrix VARCHAR(200) NOT NULL,
            started_at DATETIME NOT NULL,
            finished_at DATETIME,
            status VARCHAR(20) NOT NULL,
            summary JSON
        )"""))
    conn.execute(text("""
        CREATE TABLE nightly_cells (
            run_id INTEGER NOT NULL REFERENCES nightly_runs (id) ON DELETE CASCADE,
            model VARCHAR(300) NOT NULL,
            variant VARCHAR(50) NOT NULL,
            cell_key VARCHAR(64) NOT NULL,
            reran INTEGER NOT NULL,
            figures JSON NOT NULL,
            PRIMARY KEY (run_id, model, variant)
        )"""))


def m004_cell_hardware(conn: Connection) -> None:
    # The hardware class became part of a cell (and its key): cells stored before
    # get the class their own recorded env names, so that rows of two machines stay
    # apart on the board. Their keys stay as they were: the first run after the
    # upgrade measures each cell again under its new key.
    from evalq.env import hardware_of

    rows = conn.execute(text("SELECT key, cell, result FROM cells")).all()
    for key, cell, result in rows:
        cell = json.loads(cell) if isinstance(cell, str) else dict(cell or {})
        result = json.loads(result) if isinstance(result, str) else (result or {})
        hardware = hardware_of((result or {}).get("env") or {})
        if cell.get("hardware") or hardware is None:
            continue
        cell["hardware"] = hardware
        conn.execute(text("UPDATE cells SET cell = :cell WHERE key = :key"), {"cell": json.dumps(cell), "key": key})


MIGRATIONS: list[Callable[[Connection], None]] = [m001_cells_and_samples, m002_cell_owner, m003_nightly_runs,
                                                  m004_cell_hardware]


def schema_version(conn: Connection) -> tuple[int, set[str]]:
    conn.execute(text("CREATE TABLE IF NOT EXISTS evalq_migrations (name VARCHAR(100) PRIMARY KEY, applied_at DATETIME NOT NULL)"))
    applied = {row[0] for row in conn.execute(text("SELECT name FROM evalq_migrations"))}
    return len(applied), applied


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations not yet applied; return their names."""
    _, applied = schema_version(conn)
    done = []
    for fn in MIGRATIONS:
        if fn.__name__ in applied:
            continue
        fn(conn)
        conn.execute(text("INSERT INTO evalq_migrations (name, applied_at) VALUES (:n, :t)"),
                     {"n": fn.__name__, "t": datetime.now(timezone.utc).replace(tzinfo=None)})
        done.append(fn.__name__)
    return done
