"""The results database: migrations, upserts, pragmas, refusal of bad paths and newer schemas."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from evalq.cell import expand
from evalq.matrix import load_matrix
from evalq.store import SchemaTooNew, Store
from evalq.store.db import StoreError
from evalq.store.migrations import MIGRATIONS, migrate
from evalq.store.tables import Base

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cell():
    matrix, suites = load_matrix(ROOT / "examples" / "demo.yaml")
    return expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[1]


OK = {"status": "ok", "dtype": "bfloat16", "weights_bytes": 123, "peak_memory_bytes": 456, "load_seconds": 1.5,
      "speed": {"ttft_ms": 12.0, "decode_tokens_per_s": 30.0}, "metrics": {"t": {"acc": 0.5, "acc_stderr": 0.05}}}


def test_migrations_on_memory_are_idempotent():
    store = Store("sqlite:///:memory:")
    with store.engine.begin() as conn:
        assert migrate(conn) == []  # already applied by Store()
        names = {r[0] for r in conn.execute(text("SELECT name FROM evalq_migrations"))}
    assert names == {fn.__name__ for fn in MIGRATIONS}


def test_migrated_schema_matches_the_orm_models():
    store = Store("sqlite:///:memory:")
    insp = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        migrated = {c["name"] for c in insp.get_columns(table.name)}
        assert migrated == {c.name for c in table.columns}, table.name


def test_record_is_an_upsert_and_replaces_samples(tmp_path, cell):
    store = Store(str(tmp_path / "e.db"))
    assert store.claim(cell, lambda status: True)
    assert store.status(cell.key) == "running"
    store.record(cell, OK, {"t": [{"doc_id": 1}, {"doc_id": 2}]}, "log", 3.0)
    assert store.claim(cell, lambda status: True)
    store.record(cell, OK, {"t": [{"doc_id": 9}]}, "log", 3.0)
    rows = store.cells()
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].attempts == 2
    assert rows[0].ttft_ms == 12.0 and rows[0].metrics["t"]["acc"] == 0.5
    assert store.samples(cell.key, "t") == [{"doc_id": 9}]


def test_failed_cell_keeps_its_error(tmp_path, cell):
    store = Store(str(tmp_path / "e.db"))
    store.record(cell, {"status": "oom", "error": "CUDA out of memory"}, None, "tail", 1.0)
    row = store.cells()[0]
    assert (row.status, row.error, row.weights_bytes) == ("oom", "CUDA out of memory", None)


def test_every_connection_uses_wal_and_a_busy_timeout(tmp_path):
    store = Store(str(tmp_path / "e.db"))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_database_in_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(str(tmp_path / "nope" / "e.db"))


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "e.db"
    Store(str(path))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO evalq_migrations VALUES ('m999_from_the_future', '2030-01-01')")
    with pytest.raises(SchemaTooNew, match="m999_from_the_future"):
        Store(str(path))
