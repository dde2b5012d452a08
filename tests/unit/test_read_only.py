"""Reading never writes: `results`, `export`, `leaderboard build`, `run --dry-run` and merge sources open the
database read-only (SQLite mode=ro, PostgreSQL read-only transactions), and an older schema is read through a
migrated temporary copy (SQLite) instead of being upgraded in place."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from evalq.cell import expand
from evalq.cli import app
from evalq.matrix import read_matrix
from evalq.store import Store
from evalq.store.db import StoreError

ROOT = Path(__file__).resolve().parents[2]
OLD_SCHEMA = Path(__file__).parent / "data" / "schema_m004.sql"  # as evalq wrote it before migration m005
runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cells() -> list:
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    return [c for c in expand(matrix, suites, lambda spec: "r", device="cpu") if c.variant in ("fp16", "int8")][:2]


def current_db(path: Path) -> Path:
    store = Store(str(path))
    for acc, c in zip((0.6, 0.58), cells()):
        store.record(c, {"status": "ok", "weights_bytes": 10**8, "metrics": {"t": {"acc,none": acc, "acc_stderr,none": 0.05}}},
                     {"t": [{"doc_id": 0, "acc": 1.0}, {"doc_id": 1, "acc": 0.0}]}, "log", 2.0)
    store.engine.dispose()  # the last connection closed: the WAL is folded into the file
    return path


def old_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMA.read_text())
    con.close()
    return path


def applied(path: Path) -> set[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {name for (name,) in con.execute("SELECT name FROM evalq_migrations")}
    finally:
        con.close()


@pytest.mark.parametrize("make", [current_db, old_db], ids=["current schema", "older schema (m004)"])
def test_reading_commands_leave_the_database_byte_identical(tmp_path, make):
    source = make(tmp_path / "source.db")
    before, migrations = sha256(source), applied(source)
    shown = runner.invoke(app, ["results", "--db", str(source), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert sorted(r["variant"] for r in json.loads(shown.output)) == ["fp16", "int8"]  # the older schema's cells too
    exported = runner.invoke(app, ["export", "--db", str(source), "--out", str(tmp_path / "export")])
    assert "stored before evalq kept lm-eval's own results" in exported.output, exported.output  # read, then refused
    built = runner.invoke(app, ["leaderboard", "build", "--db", str(source), "--out", str(tmp_path / "site")])
    assert built.exit_code == 0 and (tmp_path / "site" / "index.html").exists(), built.output
    merged = runner.invoke(app, ["merge", str(source), "--into", str(tmp_path / "into.db")])
    assert merged.exit_code == 0 and "2 cells added (2 sample sets)" in merged.output, merged.output
    assert sha256(source) == before
    assert applied(source) == migrations  # the older one is still older: upgraded only in the temporary copy
    assert len(Store(str(tmp_path / "into.db")).cells()) == 2


def test_a_read_only_store_cannot_write(tmp_path):
    source = current_db(tmp_path / "source.db")
    before = sha256(source)
    store = Store(str(source), read_only=True)
    with pytest.raises(Exception, match="readonly|read-only|query_only"):
        store.record(cells()[0], {"status": "error", "error": "overwritten"})
    assert store.status(cells()[0].key) == "ok" and sha256(source) == before


def test_the_older_schemas_copy_is_gone_with_its_reader(tmp_path):
    store = Store(str(old_db(tmp_path / "old.db")), read_only=True)
    copy = Path(store._copy.name)
    assert copy.is_dir() and len(store.cells()) == 2
    store.engine.dispose()
    store._copy.cleanup()
    assert not copy.exists()


def test_postgresql_is_read_in_read_only_transactions(pg_url):
    writer = Store(pg_url)
    writer.record(cells()[0], {"status": "ok", "metrics": {"t": {"acc,none": 0.6}}})
    reader = Store(pg_url, read_only=True)
    assert [r.status for r in reader.cells()] == ["ok"]
    with pytest.raises(Exception, match="read-only transaction"):
        reader.record(cells()[0], {"status": "error", "error": "overwritten"})
    assert writer.status(cells()[0].key) == "ok"


def test_an_older_postgresql_schema_is_refused_not_upgraded(pg_url):
    writer = Store(pg_url)
    with writer.engine.begin() as conn:
        conn.execute(text("DELETE FROM evalq_migrations WHERE name = 'm005_cell_heartbeat'"))
    with pytest.raises(StoreError, match="older schema .*m005_cell_heartbeat"):
        Store(pg_url, read_only=True)
    with writer.engine.connect() as conn:
        assert "m005_cell_heartbeat" not in {n for (n,) in conn.execute(text("SELECT name FROM evalq_migrations"))}
