"""Install hints print their extras: rich reads `[ray]` as a markup tag and drops it
unless escaped, which turned `pip install 'evalq[ray]'` into `pip install 'evalq'`."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError

from typer.testing import CliRunner

import evalq.backends.gguf_converter as gguf
from evalq.cli import app

runner = CliRunner()


def test_run_help_names_the_ray_extra():
    res = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "pip install 'evalq[ray]'" in res.output


def test_converter_without_llama_cpp_names_the_gguf_extra(monkeypatch):
    def missing(sdist, log):
        raise PackageNotFoundError("llama-cpp-python")

    monkeypatch.setattr(gguf, "install_converter", missing)
    res = runner.invoke(app, ["gguf-converter"])
    assert res.exit_code == 2
    assert "pip install 'evalq[gguf]'" in res.output


def test_a_store_hint_keeps_its_extra_through_the_error_printer(monkeypatch):
    import evalq.store.db as db

    def no_driver(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")

    monkeypatch.setattr(db, "create_engine", no_driver)
    res = runner.invoke(app, ["results", "--db", "postgresql://nobody@127.0.0.1:1/none"])
    assert res.exit_code == 2
    assert "evalq[postgres]" in res.output, res.output
