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
