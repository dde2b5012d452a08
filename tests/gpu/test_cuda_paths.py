"""The CUDA paths: memory counters, CUDA-event timing, the variants on a GPU,
and one whole cell through the real worker. Skipped without CUDA.

A small randomly initialised Llama stands in for a pretrained model: what is
checked here (kernels, counters, dtypes, footprints) does not depend on the
weights' values, and a GPU machine may have no model to load offline.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from evalq.resources import Resources

pytestmark = pytest.mark.gpu

MB = 1024 * 1024


@pytest.fixture(scope="module")
def model_dir(tiny_model_factory) -> Path:
    return tiny_model_factory(vocab_size=4096, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                              num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048)


@pytest.fixture(scope="module")
def files(model_dir):
    from evalq.backends.base import ModelFiles

    return ModelFiles(str(model_dir), "local:test")


def test_cuda_peak_reads_a_known_allocation():
    import torch

    from evalq.measure.memory import PeakMemory

    peak = PeakMemory("cuda")
    with peak.phase("big"):
        block = torch.empty(800 * MB, dtype=torch.uint8, device="cuda")
        block.fill_(1)
        del block
    with peak.phase("small"):
        block = torch.empty(100 * MB, dtype=torch.uint8, device="cuda")
        del block
    out = peak.finish()
    big, small = out["by_phase"]["big"], out["by_phase"]["small"]
    assert abs(big["cuda_max_allocated_bytes"] - 800 * MB) < 0.1 * 800 * MB
    assert abs(small["cuda_max_allocated_bytes"] - 100 * MB) < 0.1 * 100 * MB  # reset between phases
    assert out["cuda_max_allocated_bytes"] == big["cuda_max_allocated_bytes"]
    if "nvml_process_peak_bytes" in big and big["nvml_process_peak_bytes"]:
        assert big["nvml_process_peak_bytes"] >= 800 * MB  # the driver sees at least what torch allocated


def test_fp16_is_float16_on_cuda(files):
    from evalq.backends.fp16 import FP16Backend, FP16Config

    loaded = FP16Backend().load(files, FP16Config(), Resources("cuda"), "")
    assert loaded.dtype == "float16"
    assert {p.device.type for p in loaded.model.parameters()} == {"cuda"}
    assert {str(p.dtype) for p in loaded.model.parameters()} == {"torch.float16"}


@pytest.mark.parametrize("variant,module_type", [("int8", "Linear8bitLt"), ("nf4", "Linear4bit")])
def test_bitsandbytes_variants_on_cuda(files, variant, module_type):
    import torch

    from evalq.backends.base import get_backend
    from evalq.measure.memory import module_types, parameter_dtypes, weights_footprint

    fp16 = get_backend("fp16").load(files, get_backend("fp16").Config(), Resources("cuda"), "")
    base_bytes = weights_footprint(fp16.model)
    del fp16
    backend = get_backend(variant)
    loaded = backend.load(files, backend.Config(), Resources("cuda"), "")
    assert module_types(loaded.model)[module_type] == 4 * 7
    assert "float32" not in parameter_dtypes(loaded.model)
    assert weights_footprint(loaded.model) < base_bytes
    ids = torch.tensor([[1, 5, 6, 7]], device="cuda")
    with torch.inference_mode():
        assert torch.isfinite(loaded.model(ids).logits).all()


@pytest.mark.parametrize("variant,options", [("torchao-int4wo", {"group_size": 128}), ("torchao-fp8", {}), ("hqq-4", {})])
def test_gpu_only_and_new_variants_on_cuda(files, model_dir, variant, options):
    """torchao's int4 and FP8 W8A8 (CPU: unsupported) and HQQ on a GPU: quantized, the planner's
    bytes to the byte, finite logits. FP8 is skipped below compute capability 8.9, as evalq refuses it."""
    import json

    import torch

    from evalq.architecture import Shape
    from evalq.backends.base import get_backend
    from evalq.measure.memory import quantized_modules, weights_footprint

    backend = get_backend(variant)
    reason = backend.unavailable_reason("cuda")
    if variant == "torchao-fp8" and reason:
        pytest.skip(reason)
    assert reason is None
    loaded = backend.load(files, backend.Config.model_validate(options), Resources("cuda"), "")
    shape = Shape.from_config(json.loads((model_dir / "config.json").read_text()))
    assert quantized_modules(loaded.model) == 4 * 7
    assert weights_footprint(loaded.model) == backend.weights_bytes(shape, options, 2)
    ids = torch.tensor([[1, 5, 6, 7]], device="cuda")
    with torch.inference_mode():
        assert torch.isfinite(loaded.model(ids).logits.float()).all()


def test_speed_on_cuda_uses_cuda_events(files):
    from evalq.backends.fp16 import FP16Backend, FP16Config
    from evalq.matrix import PerfSettings
    from evalq.measure.speed import measure_speed

    loaded = FP16Backend().load(files, FP16Config(), Resources("cuda"), "")
    perf = PerfSettings(prompt_tokens=64, new_tokens=16, batch_sizes=[1, 4], warmup=1, repeats=3)
    speed = measure_speed(loaded.model, loaded.tokenizer, perf, "cuda", threads=1)
    assert speed["timer"] == "cuda_event"
    assert 0 < speed["ttft_ms"] < 10_000
    for batch in ("1", "4"):
        b = speed["by_batch"][batch]
        assert b["decode_tokens_per_s"] > 0 and b["decode_ms_p90"] >= b["decode_ms_median"] > 0
    # four sequences per step cost less than four single steps
    assert speed["by_batch"]["4"]["decode_tokens_per_s"] > speed["by_batch"]["1"]["decode_tokens_per_s"]


def test_a_whole_cell_on_cuda(model_dir, tmp_path):
    from evalq.cell import expand
    from evalq.matrix import read_matrix
    from evalq.model_sources import resolve_revision
    from evalq.run.launch import run_child

    matrix_file = tmp_path / "m.yaml"
    matrix_file.write_text(f"""\
name: gpu
models:
  - name: tiny-llama
    path: {model_dir}
variants:
  fp16: {{}}
  nf4: {{}}
suites: [demo]
perf: {{prompt_tokens: 64, new_tokens: 16, batch_sizes: [1, 4], warmup: 1, repeats: 3}}
eval: {{limit: 20}}
timeout_s: 600
device: cuda
""")
    matrix, suites = read_matrix(matrix_file)
    for cell in expand(matrix, suites, resolve_revision):
        end = run_child(cell)
        assert end.status == "ok", end.outcome.error or end.log_tail[-3000:]
        out = end.outcome.stored()
        assert out["env"]["gpu"] and out["env"]["cuda"]
        mem = out["memory"]
        assert mem["cuda_max_allocated_bytes"] > out["weights_bytes"]
        assert set(mem["by_phase"]) == {"load", "accuracy", "speed"}
        assert out["speed"]["timer"] == "cuda_event" and out["speed"]["decode_tokens_per_s"] > 0
        assert out["metrics"]["evalq_demo_mc"]["acc"] >= 0
        print(cell.variant, {k: v for k, v in out.items() if k in ("dtype", "weights_bytes", "peak_memory_bytes", "load_seconds")},
              {k: mem.get(k) for k in ("cuda_max_allocated_bytes", "cuda_max_reserved_bytes", "nvml_process_peak_bytes")},
              "ttft_ms", round(out["speed"]["ttft_ms"], 2), "tok/s b1", round(out["speed"]["decode_tokens_per_s"], 1),
              "b4", round(out["speed"]["by_batch"]["4"]["decode_tokens_per_s"], 1), "env", out["env"].get("gpu"), out["env"].get("driver"))
