"""What a cell may use travels as an argument: the launcher hands the child its Resources,
the child hands them to backend.load, and a backend written to the older load signature
still gets the device name."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from evalq.backends.base import BackendBase, ModelFiles, load_variant
from evalq.cell import expand
from evalq.matrix import read_matrix
from evalq.resources import Resources
from evalq.run.launch import run_child
from evalq.threads import available

ROOT = Path(__file__).resolve().parents[2]


def test_threads_by_phase_with_every_core_where_unset():
    r = Resources("cpu", {"speed": 1, "accuracy": 3})
    assert (r.threads_for("speed"), r.threads_for("accuracy"), r.threads_for("prepare")) == (1, 3, available())
    with pytest.raises(ValueError, match="unknown phase"):
        r.threads_for("load")
    assert Resources.from_json(Resources("cuda", {"speed": 2}, 4, 10**10).to_json()) == Resources("cuda", {"speed": 2}, 4, 10**10)


class NewStyle(BackendBase):
    name = "new-style"

    def load(self, files, cfg, resources, workdir):
        return ("new", resources)


class OldStyle(BackendBase):
    """Written before Resources: load(files, cfg, device, workdir)."""

    name = "old-style"

    def load(self, files, cfg, device, workdir):
        return ("old", device)


def test_load_variant_hands_resources_to_a_backend_and_the_device_to_an_old_one():
    resources = Resources("cuda", {"prepare": 2}, gpus=2, max_memory_per_gpu=10**10)
    files = ModelFiles("/nowhere", "rev")
    assert load_variant(NewStyle(), files, None, resources, "") == ("new", resources)
    assert load_variant(OldStyle(), files, None, resources, "") == ("old", "cuda")


@pytest.fixture
def echo_child_on_path(monkeypatch):
    """tests/unit/echo_child.py importable by the child process."""
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def test_the_launcher_hands_the_child_its_resources_as_a_file_and_its_parent_as_an_argument(echo_child_on_path):
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    cell = expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[0]

    end = run_child(cell, child_module="echo_child")
    assert end.outcome.ok, end.log_tail
    details = end.outcome.details
    assert Resources(**details["resources"]) == Resources("cpu", cell.thread_plan())  # by default: the cell's own
    assert details["parent_pid"] == os.getpid() and details["evalq_env"] == []

    given = Resources("cuda", {"prepare": 1, "accuracy": 1, "speed": 1, "quality": 1}, gpus=2, max_memory_per_gpu=7 * 10**10)
    assert Resources(**run_child(cell, child_module="echo_child", resources=given).outcome.details["resources"]) == given
