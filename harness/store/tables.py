"""ORM models of the results database. The tables are created by migrations.py,
not by metadata.create_all: a test checks the two agree."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from evalq.outcome import CellOutcome
from evalq.store.migrations import Json


class Base(DeclarativeBase):
    pass


class CellRow(Base):
    """One cell: its identity, how it ended, and its headline measurements."""

    __tablename__ = "cells"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    matrix: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(300), index=True)
    variant: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), index=True)  # running ok oom timeout killed error unsupported skipped
    error: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[str] = mapped_column(String(200))
    cell: Mapped[dict] = mapped_column(Json)  # the full Cell, as run
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    dtype: Mapped[str | None] = mapped_column(String(20))
    weights_bytes: Mapped[int | None] = mapped_column(BigInteger)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    load_seconds: Mapped[float | None] = mapped_column(Float)
    prepare_seconds: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    decode_tokens_per_s: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict | None] = mapped_column(Json)  # task → metric → value
    result: Mapped[dict | None] = mapped_column(Json)  # everything the worker reported
    log_tail: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))  # host:pid of the orchestrator running it
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)  # the owner's last sign of life (m005)

    @property
    def outcome(self) -> CellOutcome:
        """`result` typed (the status column fills in for a row that has no result yet). Parsed
        once per stored value: results and the leaderboard ask several times per row."""
        cached = self.__dict__.get("_outcome")
        if cached is None or cached[0] is not self.result or cached[1] != self.status:
            cached = (self.result, self.status, CellOutcome.from_stored(self.result, self.status))
            self.__dict__["_outcome"] = cached
        return cached[2]


class SupersededResult(Base):
    """A result that came back on a claim another runner had taken over (m006): kept, never recorded over the cell."""

    __tablename__ = "superseded_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cell_key: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    taken_by: Mapped[str | None] = mapped_column(String(200))
    taken_attempt: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    result: Mapped[dict | None] = mapped_column(Json)
    recorded_at: Mapped[datetime] = mapped_column(DateTime)


class SampleRow(Base):
    """lm-eval's per-sample records of one task of one cell (zlib-compressed JSON)."""

    __tablename__ = "samples"

    cell_key: Mapped[str] = mapped_column(String(64), ForeignKey("cells.key", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class NightlyRun(Base):
    """One `evalq nightly`: when, how it ended, and its comparison with the night before."""

    __tablename__ = "nightly_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    matrix: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(20))  # running ok regression failed
    summary: Mapped[dict | None] = mapped_column(Json)


class NightlyCell(Base):
    """What one (model, variant) measured on one night (a copy: see migration m003)."""

    __tablename__ = "nightly_cells"

    run_id: Mapped[int] = mapped_column(Integer, ForeignKey("nightly_runs.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(300), primary_key=True)
    variant: Mapped[str] = mapped_column(String(50), primary_key=True)
    cell_key: Mapped[str] = mapped_column(String(64))
    reran: Mapped[bool] = mapped_column(Boolean)
    figures: Mapped[dict] = mapped_column(Json)
