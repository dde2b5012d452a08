"""The results database: migrations, upserts, pragmas, refusal of bad paths and newer schemas."""
from __future__ import annotations

import json
import re
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


AMD = {"cpu": "AMD EPYC", "cpu_features": {"flags": ["avx", "avx2", "f16c", "fma"]}}
INTEL = {"cpu": "Intel Xeon Platinum 8480C", "cpu_features": {"flags": ["amx_bf16", "avx2", "avx512_bf16", "avx512f"]}}


def old_database(path: Path, rows: list[tuple[str, dict, dict]]) -> str:
    """A database as evalq wrote it before m004: cells without a hardware class."""
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE evalq_migrations (name VARCHAR(100) PRIMARY KEY, applied_at DATETIME NOT NULL)"))
        for fn in MIGRATIONS[:3]:
            fn(conn)
            conn.execute(text("INSERT INTO evalq_migrations VALUES (:n, '2026-12-01 00:00:00')"), {"n": fn.__name__})
        for key, cell, result in rows:
            conn.execute(text(
                "INSERT INTO cells (key, matrix, model, variant, status, revision, cell, attempts, started_at, metrics, result) "
                "VALUES (:key, :matrix, :model, :variant, 'ok', 'r', :cell, 1, '2026-12-01 00:00:00', :metrics, :result)"),
                {"key": key, "matrix": cell["matrix"], "model": cell["model"]["name"], "variant": cell["variant"],
                 "cell": json.dumps(cell), "metrics": json.dumps(result["metrics"]), "result": json.dumps(result)})
    engine.dispose()
    return str(path)


def test_an_old_database_gets_each_cells_hardware_and_two_machines_stay_apart(tmp_path):
    from evalq.env import hardware_of
    from evalq.leaderboard.render import build_from_db
    from evalq.results import current_rows, records_of

    matrix, suites = load_matrix(ROOT / "examples" / "demo.yaml")
    cells = {c.variant: c.model_dump(mode="json") for c in expand(matrix, suites, lambda spec: "r", device="cpu")[:2]}
    rows = []
    for machine, env, acc in (("amd", AMD, 0.60), ("intel", INTEL, 0.70)):
        for variant, cell in cells.items():
            cell = {k: v for k, v in cell.items() if k != "hardware"}
            result = {"status": "ok", "env": env, "metrics": {"t": {"acc,none": acc, "acc_stderr,none": 0.05}}}
            rows.append((f"{machine}-{variant}", cell, result))
    db = old_database(tmp_path / "old.db", rows)

    stored = Store(db).cells()  # opening it applies m004
    assert {r.key: r.cell["hardware"] for r in stored} == {
        "amd-fp16": "AMD EPYC · avx2", "amd-int8": "AMD EPYC · avx2",
        "intel-fp16": hardware_of(INTEL), "intel-int8": hardware_of(INTEL)}
    assert hardware_of(INTEL) == "Intel Xeon Platinum 8480C · avx2 avx512f avx512_bf16 amx_bf16"
    current = current_rows(stored)
    assert len(current) == 4  # the same (matrix, model, variant, suites) twice: both machines kept
    records = {r["key"]: r for r in records_of(current)}
    assert records["amd-int8"]["hardware"] == "AMD EPYC · avx2"
    assert records["amd-int8"]["paired"]["baseline_key"] == "amd-fp16"  # never the other machine's fp16
    assert records["intel-int8"]["paired"]["baseline_key"] == "intel-fp16"
    assert records["amd-int8"]["paired"]["group"] != records["intel-int8"]["paired"]["group"]

    site = build_from_db(db, tmp_path / "site", built_at="x").parent
    index = (site / "index.html").read_text()
    assert index.count("<h2>Group ") == 2  # ranked apart
    assert "on AMD EPYC · avx2</p>" in index and f"on {hardware_of(INTEL)}</p>" in index
    blocks = re.findall(r'<script type="application/json" class="rows"[^>]*>(.*?)</script>', index, re.S)
    shown = sorted((row["variant"], row["cells"][2][1]) for block in blocks for row in json.loads(block))
    assert shown == [("fp16", "AMD EPYC · avx2"), ("fp16", hardware_of(INTEL)),  # the hardware column of every row
                     ("int8", "AMD EPYC · avx2"), ("int8", hardware_of(INTEL))]
