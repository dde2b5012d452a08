"""Test-wide environment: offline, and every cache in a project-local folder
(never the user's home: gptqmodel builds its C++ extension under ~/.cache)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EVALQ_TEST_CACHE", ROOT / ".evalq-cache"))
SHARED = ROOT.parent / "shared"

_ENV = {
    "EVALQ_CACHE": str(CACHE / "evalq"),
    "HF_HOME": str(CACHE / "hf"),
    "XDG_CACHE_HOME": str(CACHE / "xdg"),
    "HOME": str(CACHE / "home"),
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _k, _v in _ENV.items():
    os.environ[_k] = _v
for _k in ("EVALQ_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"):
    Path(os.environ[_k]).mkdir(parents=True, exist_ok=True)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture
def write(tmp_path):
    """Write a text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write
