"""The clone alone runs the demo and the tests: no tracked file reads a folder beside the
repository, and every local path an example matrix names resolves inside the repository
(a text shipped with evalq, `evalq:…`, included). CI runs this on a clean clone."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from evalq.matrix import _text_path

ROOT = Path(__file__).resolve().parents[2]
SIBLING = "../" + "shared"  # spelled in two parts so that this file does not match itself
PATH_KEYS = {"path", "gguf"}


def tracked_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.fail("the tests run from a git clone (git ls-files failed)")
    return [ROOT / n.decode() for n in names if n]


def test_no_tracked_file_reads_a_folder_beside_the_clone():
    offenders = []
    for file in tracked_files():
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        offenders += [f"{file.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1) if SIBLING in line]
    assert offenders == []


def local_paths(node, key: str | None = None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from local_paths(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from local_paths(v, key)
    elif isinstance(node, str) and key in PATH_KEYS:
        yield node


@pytest.mark.parametrize("matrix", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_path_an_example_names_stays_in_the_clone(matrix):
    paths = list(local_paths(yaml.safe_load(matrix.read_text())))
    for value in paths:
        resolved = Path(_text_path(value, matrix.parent))
        assert resolved.is_relative_to(ROOT), (matrix.name, value, resolved)
    if matrix.name in ("demo.yaml", "showcase.yaml", "methods.yaml"):  # the offline ones: every file is there
        assert paths and all(Path(_text_path(v, matrix.parent)).is_file() for v in paths)


def test_the_shipped_text_comes_with_its_licence():
    from evalq.suites import DATA_DIR, shipped_text, shipped_texts

    assert "evalq:wikitext-2/test.txt" in shipped_texts()
    assert shipped_text("evalq:wikitext-2/test.txt").stat().st_size == 1_256_449
    for folder in {p.parent for p in DATA_DIR.rglob("*.txt")}:
        readme = (folder / "README.md").read_text()
        assert "Licence" in readme and "Source" in readme, folder
    with pytest.raises(ValueError, match="under evalq's data folder"):
        shipped_text("evalq:../../pyproject.toml")
