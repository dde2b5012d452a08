"""The results database on SQLite and PostgreSQL alike: migrations, upserts, 64-bit byte counts, atomic
claims, pragmas, refusal of bad paths and newer schemas, passwords kept out of output."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from evalq.cell import expand
from evalq.matrix import read_matrix
from evalq.store import SchemaTooNew, Store
from evalq.store.db import StoreError, this_owner
from evalq.store.migrations import MIGRATIONS, migrate
from evalq.store.tables import Base

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from postgres_server import PG_PASSWORD  # noqa: E402


@pytest.fixture
def cell():
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    return expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[1]


OK = {"status": "ok", "dtype": "bfloat16", "weights_bytes": 123, "peak_memory_bytes": 456, "load_seconds": 1.5,
      "speed": {"ttft_ms": 12.0, "decode_tokens_per_s": 30.0}, "metrics": {"t": {"acc": 0.5, "acc_stderr": 0.05}}}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    """Every store test runs on a SQLite file and on a real PostgreSQL database
    (the postgres fixture, tests/conftest.py: its own server in a temporary folder)."""
    if request.param == "sqlite":
        return str(tmp_path / "e.db")
    return request.getfixturevalue("pg_url")


def test_migrations_are_idempotent(db):
    store = Store(db)
    with store.engine.begin() as conn:
        assert migrate(conn) == []  # already applied by Store()
        names = {r[0] for r in conn.execute(text("SELECT name FROM evalq_migrations"))}
    assert names == {fn.__name__ for fn in MIGRATIONS}
    assert Store(db).cells() == []  # a second open migrates nothing


def test_migrated_schema_matches_the_orm_models(db):
    store = Store(db)
    insp = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        migrated = {c["name"]: c["type"] for c in insp.get_columns(table.name)}
        assert set(migrated) == {c.name for c in table.columns}, table.name
    cells = {c["name"]: str(c["type"]) for c in insp.get_columns("cells")}
    if store.engine.dialect.name == "postgresql":  # 64-bit byte counts, binary JSON
        assert (cells["weights_bytes"], cells["peak_memory_bytes"], cells["result"]) == ("BIGINT", "BIGINT", "JSONB")


def test_record_is_an_upsert_and_replaces_samples(db, cell):
    store = Store(db)
    assert store.claim(cell, lambda status: True)
    assert store.status(cell.key) == "running"
    store.record(cell, OK, {"t": [{"doc_id": 1}, {"doc_id": 2}]}, "log", 3.0)
    assert store.claim(cell, lambda status: True)
    store.record(cell, OK, {"t": [{"doc_id": 9}]}, "log", 3.0)
    rows = store.cells()
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].attempts == 2
    assert rows[0].ttft_ms == 12.0 and rows[0].metrics["t"]["acc"] == 0.5
    assert store.samples(cell.key, "t") == [{"doc_id": 9}]
    assert rows[0].cell == cell.model_dump(mode="json") and rows[0].result["speed"] == OK["speed"]


def test_a_26_gb_byte_count_is_stored_and_read_back_exactly(db, cell):
    """A 13B model's fp16 weights: beyond 32 bits (a 32-bit INTEGER column overflows at 2.1 GB)."""
    store = Store(db)
    big = {**OK, "weights_bytes": 26_031_728_640, "peak_memory_bytes": 2**40 + 7}
    store.record(cell, big, None, "", 1.0)
    row = Store(db).cells()[0]
    assert (row.weights_bytes, row.peak_memory_bytes) == (26_031_728_640, 2**40 + 7)
    assert row.outcome.weights_bytes == 26_031_728_640


def test_failed_cell_keeps_its_error(db, cell):
    store = Store(db)
    store.record(cell, {"status": "oom", "error": "CUDA out of memory"}, None, "tail", 1.0)
    row = store.cells()[0]
    assert (row.status, row.error, row.weights_bytes) == ("oom", "CUDA out of memory", None)


def test_of_many_simultaneous_claims_exactly_one_wins(db, cell):
    """Eight claimants at once, each on its own connection, as eight runners would be:
    BEGIN IMMEDIATE on SQLite, FOR UPDATE (and the key's uniqueness) on PostgreSQL."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    Store(db)  # migrated once, before the race
    start = Barrier(8)

    def claim(i: int) -> bool:
        store = Store(db)
        start.wait()
        return store.claim(cell, lambda status: status is None, owner=f"{this_owner()}-{i}")

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(claim, range(8)))
    assert sum(c is not None for c in won) == 1, won
    assert Store(db).cells()[0].attempts == 1


def test_runners_opening_a_new_database_at_once_migrate_it_once(db):
    """Two runners started together: on PostgreSQL the migrations run under an advisory
    lock, on SQLite under BEGIN IMMEDIATE; neither fails on the other's tables."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    start = Barrier(4)

    def open_it(_: int) -> list[str]:
        start.wait()
        store = Store(db)
        with store.engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT name FROM evalq_migrations ORDER BY name"))]

    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(open_it, range(4)))
    assert seen == [sorted(fn.__name__ for fn in MIGRATIONS)] * 4


def test_newer_schema_is_refused(db):
    store = Store(db)
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO evalq_migrations VALUES ('m999_from_the_future', '2030-01-01')"))
    with pytest.raises(SchemaTooNew, match="m999_from_the_future"):
        Store(db)


def test_a_password_in_the_url_is_never_shown(pg_url, tmp_path):
    from typer.testing import CliRunner

    from evalq.cli import app
    from evalq.store.db import safe_url

    assert PG_PASSWORD in pg_url and PG_PASSWORD not in safe_url(pg_url) and "***" in safe_url(pg_url)
    wrong_port = pg_url.replace(pg_url.split("@")[1].split("/")[0], "127.0.0.1:9")
    with pytest.raises(StoreError) as caught:
        Store(wrong_port)
    assert PG_PASSWORD not in str(caught.value) and "cannot open database postgresql://evalq:***@" in str(caught.value)
    Store(pg_url)
    runner = CliRunner()
    for args in (["results", "--db", pg_url], ["results", "--db", wrong_port],
                 ["leaderboard", "build", "--db", pg_url, "--out", str(tmp_path / "site")]):
        result = runner.invoke(app, args)
        assert PG_PASSWORD not in result.output, args
    site = (tmp_path / "site" / "index.html").read_text()
    assert PG_PASSWORD not in site and "evalq:***@127.0.0.1" in site


def test_every_connection_uses_wal_and_a_busy_timeout(tmp_path):
    store = Store(str(tmp_path / "e.db"))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_database_in_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store(str(tmp_path / "nope" / "e.db"))


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
    from evalq.record import records_of
    from evalq.results import current_rows, to_csv, to_table

    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
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
    records = {r.key: r for r in records_of(current)}
    assert records["amd-int8"].hardware == "AMD EPYC · avx2"
    assert records["amd-int8"].paired.baseline_key == "amd-fp16"  # never the other machine's fp16
    assert records["intel-int8"].paired.baseline_key == "intel-fp16"
    assert records["amd-int8"].paired.group != records["intel-int8"].paired.group
    header, *lines = to_csv(list(records.values())).splitlines()
    assert header.split(",")[:3] == ["model", "variant", "hardware"] and sum("AMD EPYC · avx2" in x for x in lines) == 2
    both = to_table(list(records.values()))  # two machines: a column
    assert [c.header for c in both.columns][:3] == ["model", "variant", "hardware"] and both.caption is None
    one = to_table([records["amd-fp16"], records["amd-int8"]])  # one: named under the table
    assert "hardware" not in [c.header for c in one.columns] and one.caption == "on AMD EPYC · avx2"

    site = build_from_db(db, tmp_path / "site", built_at="x").parent
    index = (site / "index.html").read_text()
    assert index.count('<h2 id="g-') == 2  # ranked apart
    assert re.search(r'class="group-title">[^<]* on AMD EPYC · avx2 <a', index)  # the group's heading names its machine
    assert re.search(f'class="group-title">[^<]* on {re.escape(hardware_of(INTEL))} <a', index)
    blocks = re.findall(r'<script type="application/json" class="rows"[^>]*>(.*?)</script>', index, re.S)
    shown = sorted((row["variant"], row["cells"][2][1]) for block in blocks for row in json.loads(block))
    assert shown == [("fp16", "AMD EPYC · avx2"), ("fp16", hardware_of(INTEL)),  # the hardware column of every row
                     ("int8", "AMD EPYC · avx2"), ("int8", hardware_of(INTEL))]


def test_a_running_cell_of_another_machine_is_taken_over_once_its_heartbeat_is_stale(db, cell):
    """Another host's runner cannot be asked by pid: its heartbeat says whether it lives."""
    from datetime import datetime, timedelta

    from sqlalchemy import update

    from evalq.store.db import STALE_AFTER_S
    from evalq.store.tables import CellRow

    store = Store(db)
    assert store.claim(cell, lambda status: True, owner="gpu-node-7:4242")

    def beat(seconds_ago: float) -> None:
        with store.engine.begin() as conn:
            conn.execute(update(CellRow).values(heartbeat_at=datetime.utcnow() - timedelta(seconds=seconds_ago)))

    beat(STALE_AFTER_S / 2)
    assert not store.claim(cell, lambda status: True)  # alive over there: left alone
    beat(STALE_AFTER_S + 60)
    assert store.claim(cell, lambda status: True)  # silent too long: taken over
    assert store.cells()[0].owner == this_owner() and store.cells()[0].attempts == 2
    assert store.heartbeat() == 1  # this run's running cell marked alive


def test_a_runner_whose_claim_was_taken_over_records_nothing_over_the_runner_that_took_it(db, cell):
    """The claim is a fence: recording checks that the same owner still holds the same attempt."""
    from datetime import datetime, timedelta

    from sqlalchemy import update

    from evalq.store.db import STALE_AFTER_S, Superseded
    from evalq.store.tables import CellRow

    store = Store(db)
    frozen = store.claim(cell, lambda status: True, owner="gpu-node-7:4242")
    with store.engine.begin() as conn:  # it stopped beating: a paused VM, a stopped container
        conn.execute(update(CellRow).values(heartbeat_at=datetime.utcnow() - timedelta(seconds=STALE_AFTER_S + 60)))
    live = store.claim(cell, lambda status: True)
    assert (frozen.attempt, live.attempt) == (1, 2)
    with pytest.raises(Superseded, match=r"taken over by .* \(attempt 2\)") as said:
        store.record(cell, {**OK, "metrics": {"t": {"acc": 0.1}}}, {"t": [{"doc_id": 1}]}, "frozen", 9.0, claim=frozen)
    assert said.value.taken_by == this_owner()
    row = store.cells()[0]
    assert (row.status, row.owner, row.attempts) == ("running", this_owner(), 2)  # untouched: still the live run's
    assert store.samples(cell.key, "t") == []
    store.record(cell, OK, {"t": [{"doc_id": 2}]}, "live", 3.0, claim=live)
    row = store.cells()[0]
    assert (row.status, row.metrics, row.log_tail) == ("ok", OK["metrics"], "live")
    assert store.samples(cell.key, "t") == [{"doc_id": 2}]
    kept = store.superseded()
    assert [(k.cell_key, k.owner, k.attempt, k.taken_by, k.taken_attempt, k.status) for k in kept] == [
        (cell.key, "gpu-node-7:4242", 1, this_owner(), 2, "ok")]
    assert kept[0].result["metrics"] == {"t": {"acc": 0.1}}
