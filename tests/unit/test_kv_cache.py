"""KV-cache types: the planner's bytes against transformers' real caches, llama.cpp's
row sizes, the names each runtime takes, and the long-context table."""
from __future__ import annotations

import pytest
import torch
from rich.console import Console
from transformers import DynamicCache, LlamaConfig, QuantizedCache

from evalq.architecture import PlanError, Shape
from evalq.kv_cache import (LLAMA_CPP_TYPES, TRANSFORMERS_TYPES, llama_cpp_bytes, quantized_split, runtime_lacks,
                            transformers_bytes, transformers_cache_bytes, unknown_types)
from evalq.record import record_of
from evalq.results import kv_table
from evalq.store.tables import CellRow

CONFIG = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, max_position_embeddings=4096)
SMOLLM2 = Shape.from_config({"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                             "num_attention_heads": 9, "num_key_value_heads": 3})


def fill(cache, layers: int, kv_heads: int, head_dim: int, prefill: int, chunk: int, total: int, dtype) -> None:
    """The long-context schedule on a real cache: the prefill in one update, then `chunk` at a time."""
    g = torch.Generator().manual_seed(0)
    pieces = [(0, prefill)] + [(lo, min(lo + chunk, total)) for lo in range(prefill, total, chunk)]
    for lo, hi in pieces:
        for layer in range(layers):
            k = torch.randn(1, kv_heads, hi - lo, head_dim, generator=g).to(dtype)
            cache.update(k, k.clone(), layer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("kv_type", list(TRANSFORMERS_TYPES))
@pytest.mark.parametrize("prefill,chunk,total", [(383, 32, 512), (100, 64, 300), (1000, 7, 1030)])
def test_transformers_bytes_equal_the_real_cache(kv_type, dtype, prefill, chunk, total):
    """The formula, byte for byte, against what transformers' own cache holds after the same schedule."""
    config = LlamaConfig(**CONFIG)
    spec = TRANSFORMERS_TYPES[kv_type]
    if spec is None:
        cache = DynamicCache(config=config)
    else:
        cache = QuantizedCache(spec[0], config, **({"nbits": spec[1]} if spec[1] else {}))
    fill(cache, 3, 2, 64, prefill, chunk, total, dtype)
    shape = Shape.from_config(CONFIG)
    dtype_bytes = torch.finfo(dtype).bits // 8
    assert transformers_cache_bytes(cache) == transformers_bytes(kv_type, shape, prefill, chunk, total, dtype_bytes)
    if spec is not None:  # really quantized: below the unquantized cache
        assert transformers_cache_bytes(cache) < transformers_bytes("f16", shape, prefill, chunk, total, dtype_bytes)


def test_quantized_split_follows_the_residual():
    # 129 tokens after the prefill: three chunks wait (96), the fourth makes 128 and all is quantized, 1 waits
    assert quantized_split(383, 32, 512) == (511, 1)
    assert quantized_split(100, 200, 300) == (300, 0)  # one chunk over the residual: quantized at once
    assert quantized_split(100, 10, 150) == (100, 50)  # never reaches 128


def test_llama_cpp_bytes_are_ggml_rows():
    # SmolLM2: 3 KV heads × 64 = 192 values a row; q8_0 blocks of 32 in 34 bytes, q4_0 in 18, f16 2 bytes a value
    assert llama_cpp_bytes("f16", SMOLLM2, 512) == 2 * 30 * 512 * 192 * 2
    assert llama_cpp_bytes("q8_0", SMOLLM2, 512) == 2 * 30 * 512 * 6 * 34
    assert llama_cpp_bytes("q4_0", SMOLLM2, 512) == 2 * 30 * 512 * 6 * 18
    odd = Shape.from_config({**CONFIG, "num_key_value_heads": 1, "head_dim": 48})
    with pytest.raises(PlanError, match="not a whole number of q8_0's blocks of 32"):
        llama_cpp_bytes("q8_0", odd, 16)


def test_names_per_runtime():
    assert runtime_lacks("llama.cpp", "q4_0") is None and runtime_lacks("transformers", "hqq-4") is None
    assert "transformers' KV cache has no type 'q4_0'" in runtime_lacks("transformers", "q4_0")
    assert "llama.cpp's KV cache has no type 'fp8'" in runtime_lacks("llama.cpp", "fp8")
    assert unknown_types(["f16", "q4_0", "hqq-4"], {"transformers", "llama.cpp"}) == []
    [(i, msg)] = unknown_types(["f16", "q4_0"], {"transformers"})
    assert i == 1 and "'q4_0'" in msg and "transformers: f16" in msg
    assert set(LLAMA_CPP_TYPES) & set(TRANSFORMERS_TYPES) == {"f16"}


def stored(variant, long_context):
    """A stored row with this long-context result, as a CellRecord."""
    result = {"status": "ok", "long_context": long_context}
    return record_of(CellRow(key=variant, matrix="x", model="m", variant=variant, status="ok", revision="r", cell={},
                             result=result))


def test_kv_table_shows_figures_and_reasons():
    record = stored("gguf-q8_0", {
        "runtime": "llama.cpp", "context": 512, "scored": 128, "windows": 1, "chunk": 32, "types": {
            "q4_0": {"status": "ok", "kld_mean": 0.0292, "kld_stderr": 0.0036, "same_top1": 0.953, "ppl_ratio": 1.029,
                     "kv_bytes": 3324648, "kv_bytes_predicted": 3317760, "seconds": 2.6},
            "hqq-4": {"status": "unsupported", "reason": "llama.cpp's KV cache has no type 'hqq-4'"}}})
    console = Console(width=300, record=True)
    console.print(kv_table([record, stored("fp16", None)]))
    text = console.export_text()
    assert "512-token windows, last 128 scored" in text
    assert "0.0292 ± 0.0036" in text and "95.3" in text and "3,324,648" in text and "3,317,760" in text
    assert "unsupported" in text and "no type 'hqq-4'" in text
    assert kv_table([stored("fp16", None)]) is None


def test_a_window_longer_than_the_model_is_refused_in_preflight_and_at_run_time_alike(tmp_path):
    from evalq.matrix import LongContextSettings
    from evalq.measure.long_context import length_problem, prepare_long_slice
    from evalq.measure.quality import QualityError

    (tmp_path / "t.txt").write_text("text")
    settings = LongContextSettings(path=str(tmp_path / "t.txt"), context=4096, scored=64)
    config = {"max_position_embeddings": 2048}
    assert length_problem(settings, config) == "context 4096 is longer than the model's 2048 positions"
    assert length_problem(settings, {"max_position_embeddings": 8192}) is None
    with pytest.raises(QualityError, match=r"^long_context\.context 4096 is longer than the model's 2048 positions$"):
        prepare_long_slice(None, settings, config)  # refused before the tokenizer is touched
