"""A new variant is one module plus its registration. A toy backend written into
a temporary folder (registered through EVALQ_BACKENDS, nothing in evalq edited)
is validated, planned with its own weights formula and overhead, run by the
real worker with its calibration text checked against the quality slice, and
rendered with its own order, details and marker."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq import api
from evalq.architecture import Shape
from evalq.cli import app
from evalq.store import Store

pytestmark = pytest.mark.integration

TOY = '''
from typing import Any, ClassVar

from evalq.backends.base import BackendBase, BackendConfig, Loaded
from evalq.backends.fp16 import FP16Backend, FP16Config


class ToyConfig(BackendConfig):
    scale: float = 1.0


class ToyBackend(BackendBase):
    """float32 weights, under another name: what matters is what evalq asks of it."""

    name: ClassVar[str] = "toy-32"
    Config: ClassVar[type[BackendConfig]] = ToyConfig
    rank_key: ClassVar[tuple] = (0, 5)
    style: ClassVar[tuple[str, str]] = ("#123456", "diamond")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("scale", "scale"),)
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 123_000_000}

    def load(self, files, cfg, resources, workdir):
        loaded = FP16Backend().load(files, FP16Config(dtype="float32"), resources, workdir)
        loaded.details.update(scale=cfg.scale, prepare_threads=resources.threads_for("prepare"))
        return loaded

    def weights_bytes(self, shape, options, dtype_bytes):
        return shape.linear_params * 4 + shape.unquantized_bytes(4)

    def calibration_windows(self, cfg, tokenizer):
        text = open(__file__.replace("toy_variant.py", "text.txt")).read()
        return [tokenizer(text)["input_ids"][:64]]


class OldToyBackend(BackendBase):
    """A plug-in written to the protocol before Resources: load(files, cfg, device, workdir)."""

    name: ClassVar[str] = "old-32"
    Config: ClassVar[type[BackendConfig]] = ToyConfig

    def load(self, files, cfg, device, workdir):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(files.path, dtype=torch.float32).to(device).eval()
        return Loaded(model, AutoTokenizer.from_pretrained(files.path), "float32", {"device_given": device})

    def weights_bytes(self, shape, options, dtype_bytes):
        return shape.linear_params * 4 + shape.unquantized_bytes(4)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch, tiny_model_factory) -> Path:
    from evalq.measure.speed import PROMPT_TEXT

    (tmp_path / "toy_variant.py").write_text(TOY)
    (tmp_path / "text.txt").write_text((PROMPT_TEXT + " ") * 8)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("EVALQ_BACKENDS", "toy-32=toy_variant:ToyBackend,old-32=toy_variant:OldToyBackend")
    model = tiny_model_factory()
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"""name: toy
models:
  - name: tiny
    path: {model}
variants:
  fp16: {{dtype: float32}}
  toy-32: {{scale: 2.5}}
  old-32: {{}}
suites: [tiny]
perf: {{prompt_tokens: 8, new_tokens: 2, batch_sizes: [1], warmup: 0, repeats: 1, threads: 1}}
eval: {{batch_size: 4, limit: 3, threads: 1}}
quality: {{path: {tmp_path / "text.txt"}, tokens: 256, context: 64}}
timeout_s: 300
""")
    return matrix


def test_a_toy_backend_is_planned_run_and_rendered_without_touching_evalq(toy, tmp_path):
    prepared = api.prepare(toy)
    cell = next(c for c in prepared.cells if c.variant == "toy-32")
    assert cell.options == {"scale": 2.5}

    [row] = [r for r in api.memory_plan(toy, 80 * 10**9) if r["variant"] == "toy-32"]
    shape = Shape.from_config(prepared.config(prepared.cells[0]))
    assert row["predicted_weights_bytes"] == shape.linear_params * 4 + shape.unquantized_bytes(4)
    assert row["overhead_bytes"] == 123_000_000

    db = str(tmp_path / "e.db")
    res = CliRunner().invoke(app, ["run", "--matrix", str(toy), "--db", db])
    assert res.exit_code == 0, res.output
    stored = {r.variant: r for r in Store(db).cells()}
    outcome = stored["toy-32"].outcome
    assert outcome.ok, stored["toy-32"].error
    assert outcome.weights_bytes == outcome.plan.predicted_weights_bytes  # its formula, to the byte
    assert outcome.details["scale"] == 2.5
    assert outcome.details["prepare_threads"] == 1  # eval.threads, handed to load in Resources
    assert any("calibration overlaps the quality text" in w for w in outcome.warnings)
    assert outcome.quality.kld_mean == pytest.approx(0, abs=1e-6)  # float32 against a float32 baseline

    old = stored["old-32"].outcome  # the older load signature, adapted (backends.base.load_variant)
    assert old.ok, stored["old-32"].error
    assert old.details["device_given"] == "cpu" and old.metrics == outcome.metrics

    index = api.build_leaderboard(db, tmp_path / "site")
    page = index.read_text()
    assert page.index(">fp16<") < page.index(">toy-32<")  # its rank: after fp16
    assert "scale 2.5" in page
    charts = "".join(p.read_text() for p in (tmp_path / "site").rglob("*.html"))
    assert 'fill="#123456"' in charts  # its marker colour on the charts
