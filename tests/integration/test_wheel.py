"""A normal install works, not only an editable one: the wheel `pip wheel .` builds holds
every package and data file of the tree (a hand-written package list once left out
evalq.serve, and every cell of a non-editable install would have failed), and installed
non-editable into a fresh virtual environment it imports every module and runs `evalq`.

The fresh environment sees the test environment's site-packages through a path entry
placed after its own, so the wheel's `evalq` is the one imported and its dependencies
need no second install (the editable install's finder is a .pth hook, which such an
entry does not run)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"harness": "evalq", "leaderboard": "evalq/leaderboard", "suites": "evalq/suites"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # --no-build-isolation: build with this environment's setuptools, offline
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(out), str(ROOT)], capture_output=True, text=True, cwd=build,
                         env={**os.environ, "TMPDIR": str(build)})
    assert res.returncode == 0, res.stderr[-3000:]
    (found,) = out.glob("evalq-*.whl")
    return found


def tracked(folder: str) -> list[str]:
    names = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [n for n in names.split() if "__pycache__" not in n]


def test_the_wheel_holds_every_package_and_data_file_of_the_tree(wheel):
    inside = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for folder, package in FOLDERS.items():
        for name in tracked(folder):
            path = package + name.removeprefix(folder)
            if path not in inside:
                missing.append(name)
    assert missing == []
    packages = sorted({Path(n).parent.as_posix().replace("/", ".") for n in inside if n.endswith("/__init__.py")})
    print("packages in the wheel:", ", ".join(packages))
    assert {"evalq", "evalq.serve", "evalq.store", "evalq.backends", "evalq.measure", "evalq.leaderboard",
            "evalq.suites"} <= set(packages)
    assert "evalq/suites/data/wikitext-2/test.txt" in inside and "evalq/py.typed" in inside
    meta = next(n for n in inside if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(meta).decode()


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "zz_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          "-q", str(wheel)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return env


def run_in(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run in the fresh environment. llama.cpp's converter and server are installed beside an
    environment (by `evalq gguf-converter` and `make install`): the test environment's are named."""
    from evalq.backends.gguf_converter import CONVERTER_ENV, converter_path
    from evalq.serve.sweep import llama_server_binary

    tools = {CONVERTER_ENV: str(converter_path()), "EVALQ_LLAMA_SERVER": llama_server_binary() or ""}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": "", **tools}, timeout=600)


def test_the_installed_wheel_imports_every_module(installed, wheel, tmp_path):
    modules = sorted(n.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
                     for n in zipfile.ZipFile(wheel).namelist()
                     if n.startswith("evalq/") and n.endswith(".py") and "/tasks/" not in n
                     and n != "evalq/__main__.py")  # that one runs the command
    code = ("import importlib, sys, evalq\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(evalq.__file__)")
    res = run_in(installed, installed / "bin" / "python", "-c", code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().startswith(str(installed)), res.stdout  # the wheel's copy, not the tree's
    print(f"imported {len(modules)} modules from {res.stdout.strip()}")


def test_the_installed_command_runs(installed, tmp_path):
    from evalq import __version__

    version = run_in(installed, installed / "bin" / "evalq", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"evalq {__version__}", version
    validate = run_in(installed, installed / "bin" / "evalq", "validate", ROOT / "examples" / "showcase.yaml", cwd=tmp_path)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "2 models × 7 variants = 14 cells" in validate.stdout
    print(version.stdout.strip(), "|", validate.stdout.strip().splitlines()[-1])
