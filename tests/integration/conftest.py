"""Fixtures shared by the integration tests."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def fault_backends(monkeypatch, tmp_path):
    """Register the fault-injecting backends (fault_backend.py) for this test and
    the worker processes it starts, here or on a Ray cluster."""
    sys.path.insert(0, str(HERE))
    import fault_backend

    sys.path.remove(str(HERE))
    monkeypatch.setenv("EVALQ_BACKENDS", fault_backend.EVALQ_BACKENDS)
    monkeypatch.setenv("PYTHONPATH", f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("FAULT_PID_DIR", str(tmp_path))


@pytest.fixture(scope="session")
def smollm2_run(tmp_path_factory, wikitext) -> Path:
    """SmolLM2-135M in every variant, run once (smollm2_matrix.py): the folder
    with the matrix m64.yaml and its database e.db."""
    from typer.testing import CliRunner

    from evalq.cli import app
    from smollm2_matrix import write_smollm2_matrix

    folder = tmp_path_factory.mktemp("smollm2")
    res = CliRunner().invoke(app, ["run", "--matrix", str(write_smollm2_matrix(folder, wikitext)), "--db", str(folder / "e.db")])
    assert res.exit_code == 0, res.output
    return folder


@pytest.fixture(scope="session")
def smollm2_rows(smollm2_run) -> dict:
    """The shared SmolLM2 matrix's stored cells, by variant."""
    from evalq.store import Store

    return {r.variant: r for r in Store(str(smollm2_run / "e.db")).cells()}
