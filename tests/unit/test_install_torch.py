"""scripts/install_torch.py picks the torch build the README promises: the installed one if
it satisfies the spec, a CPU build pip's indexes already offer, else PyTorch's CPU index,
else PyPI's default build with a message saying so. pip itself is replaced by a recorder
here (the real install runs in every `make install`)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.fixture
def script(monkeypatch):
    spec = importlib.util.spec_from_file_location("install_torch", ROOT / "scripts" / "install_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.calls = []
    module.failing_index = False

    def pip(*args, capture=False):
        module.calls.append(args)
        failed = module.failing_index and "--index-url" in args
        return subprocess.CompletedProcess(args, 1 if failed else 0, "", "")

    monkeypatch.setattr(module, "pip", pip)
    monkeypatch.setattr(module, "installed_satisfies", lambda spec: False)
    monkeypatch.setattr(sys, "platform", "linux")
    return module


def run(script, monkeypatch, offered, *argv):
    monkeypatch.setattr(script, "offered_version", lambda spec, extra: offered)
    monkeypatch.setattr(sys, "argv", ["install_torch.py", "torch==2.13.0", *argv])
    return script.main()


def test_a_cpu_build_pip_already_offers_is_taken(script, monkeypatch, capsys):
    assert run(script, monkeypatch, "2.13.0+cpu", "--index", CPU_INDEX, "-c", "constraints.txt") == 0
    assert script.calls == [("install", "-q", "-c", "constraints.txt", "torch==2.13.0")]
    assert "a CPU build" in capsys.readouterr().out


def test_pypi_offering_a_cuda_build_sends_the_install_to_the_cpu_index(script, monkeypatch):
    assert run(script, monkeypatch, "2.13.0", "--index", CPU_INDEX) == 0
    assert script.calls == [("install", "-q", "--index-url", CPU_INDEX, "torch==2.13.0")]


def test_an_unreachable_cpu_index_falls_back_to_the_default_build_and_says_so(script, monkeypatch, capsys):
    script.failing_index = True
    assert run(script, monkeypatch, "2.13.0", "--index", CPU_INDEX) == 0
    assert script.calls[-1] == ("install", "-q", "torch==2.13.0")
    err = capsys.readouterr().err
    assert "could not install torch==2.13.0 from " + CPU_INDEX in err and "CUDA build of several GB" in err


def test_an_empty_index_means_the_default_build_on_a_gpu_box(script, monkeypatch, capsys):
    assert run(script, monkeypatch, "2.13.0", "--index", "") == 0
    assert script.calls == [("install", "-q", "torch==2.13.0")]
    assert "CUDA build" in capsys.readouterr().err


def test_an_installed_torch_that_satisfies_the_spec_is_kept(script, monkeypatch):
    monkeypatch.setattr(script, "installed_satisfies", lambda spec: True)
    assert run(script, monkeypatch, "2.13.0", "--index", CPU_INDEX) == 0
    assert script.calls == []


def test_the_installed_torch_is_read_from_this_environment():
    spec = importlib.util.spec_from_file_location("install_torch_real", ROOT / "scripts" / "install_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from importlib.metadata import version

    release = version("torch").split("+")[0]
    assert module.installed_satisfies(f"torch=={release}")  # a local label (+cpu) satisfies the plain release
    assert not module.installed_satisfies("torch>=999")
