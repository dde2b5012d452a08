"""The torchao-<scheme> family: registered by name, planned by its own formulas, refused
where it cannot run, before any model loads."""
from __future__ import annotations

import pytest

from evalq.architecture import Shape
from evalq.backends.base import backend_names, get_backend, variant_rank, variant_style

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
           "num_key_value_heads": 3, "head_dim": 64, "num_hidden_layers": 30, "vocab_size": 49152,
           "tie_word_embeddings": True}


def test_the_family_is_registered_ranked_and_drawn_apart():
    names = [n for n in backend_names() if n.startswith("torchao-")]
    assert names == ["torchao-int8wo", "torchao-w8a8", "torchao-int4wo", "torchao-fp8wo", "torchao-fp8"]
    with pytest.raises(KeyError):
        get_backend("torchao-int3")
    order = sorted(["gguf-q8_0", "torchao-int4wo", "torchao-w8a8", "fp16", "gptq-4", "torchao-int8wo"], key=variant_rank)
    assert order == ["fp16", "gptq-4", "torchao-int8wo", "torchao-w8a8", "torchao-int4wo", "gguf-q8_0"]
    styles = {variant_style(n) for n in names} | {variant_style(v) for v in ("fp16", "int8", "nf4", "gptq-4")}
    assert len(styles) == len(names) + 4


def test_weights_formulas():
    shape = Shape.from_config(SMOLLM2)
    linears = shape.all_linears()
    int8 = get_backend("torchao-int8wo").weights_bytes(shape, {}, 4)
    assert int8 == sum(i * o + 5 * o for i, o in linears) + shape.unquantized_bytes(4)
    assert int8 == get_backend("torchao-w8a8").weights_bytes(shape, {}, 4) == 220_332_928  # measured on SmolLM2 (integration)
    fp8 = get_backend("torchao-fp8wo").weights_bytes(shape, {}, 4)
    assert fp8 == sum(i * o + 4 * o for i, o in linears) + shape.unquantized_bytes(4)
    assert fp8 == get_backend("torchao-fp8").weights_bytes(shape, {}, 4)
    int4 = get_backend("torchao-int4wo").weights_bytes(shape, {"group_size": 64}, 2)
    assert int4 == sum(i * o // 2 + 4 * o * (i // 64) for i, o in linears) + shape.unquantized_bytes(2)  # not measured: CUDA only


def test_int4_is_refused_on_a_cpu_and_checked_against_the_model():
    int4 = get_backend("torchao-int4wo")
    assert "need CUDA" in int4.unavailable_reason("cpu")
    assert get_backend("torchao-int8wo").unavailable_reason("cpu") is None
    assert int4.check_model(int4.Config(group_size=64), SMOLLM2) is None
    assert "group_size 128 does not divide hidden_size (q/k/v/gate/up_proj) = 576" in int4.check_model(int4.Config(group_size=128), SMOLLM2)
    assert get_backend("torchao-int8wo").check_model(int4.Config(group_size=128), SMOLLM2) is None  # no groups in int8


def test_fp8_w8a8_is_refused_on_a_cpu_and_on_gpus_before_ada(monkeypatch):
    fp8 = get_backend("torchao-fp8")
    reason = fp8.unavailable_reason("cpu")
    assert "compute capability 8.9" in reason and "torchao-fp8wo" in reason
    assert get_backend("torchao-fp8wo").unavailable_reason("cpu") is None
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # an A100
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    assert "NVIDIA A100-SXM4-80GB is 8.0" in fp8.unavailable_reason("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert fp8.unavailable_reason("cuda") is None


def test_a_cpu_worker_stores_the_gpu_only_schemes_unsupported_before_any_model_loads(tmp_path, monkeypatch):
    from pathlib import Path

    from evalq import model_sources
    from evalq.cell import expand
    from evalq.matrix import read_matrix
    from evalq.run.child import run_cell

    def no_model(*args, **kwargs):
        raise AssertionError("a model was materialized")

    monkeypatch.setattr(model_sources, "materialize", no_model)
    matrix, suites = read_matrix(Path(__file__).resolve().parents[2] / "examples" / "methods.yaml")
    cells = {c.variant: c for c in expand(matrix, suites, lambda spec: "0123abcd", device="cpu")}
    fp8 = run_cell(cells["torchao-fp8"].model_dump_json(), tmp_path)
    assert fp8.status == "unsupported" and "compute capability 8.9" in fp8.error, fp8.error
    int4 = run_cell(cells["torchao-int4wo"].model_dump_json(), tmp_path)
    assert int4.status == "unsupported" and "need CUDA" in int4.error, int4.error
