"""The checks that depend on the dtype, run in both CPU dtypes whatever this machine's `auto`
is (issue 31): the shared SmolLM2 run uses `auto` (float32 on an AVX2 CPU, bfloat16 where
bf16 is native), so a green run on one kind of machine once said nothing of the other.
Here a two-layer slice of SmolLM2 (its first layers, its own tokenizer and embeddings)
is loaded in float32 and in bfloat16 forced, and each variant's measured weights and
KV-cache bytes are checked against the planner's formulas in that dtype."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evalq.resources import Resources
from evalq.architecture import DTYPE_BYTES, Shape
from evalq.backends.base import ModelFiles, get_backend
from evalq.kv_cache import predicted_bytes
from evalq.measure.memory import weights_footprint
from evalq.measure.torch_model import measured

pytestmark = pytest.mark.integration

DTYPES = ("float32", "bfloat16")
LAYERS = 2
UNDER = {4: 3, 2: 2}  # hqq-4's KV cache is under 1/n of the cache in the model's dtype (as test_long_context)


@pytest.fixture(scope="module")
def smollm2_slice(tmp_path_factory) -> ModelFiles:
    """SmolLM2-135M cut to its first two layers: the same files, a config that reads fewer."""
    from evalq.matrix import ModelSpec
    from evalq.model_sources import materialize

    files = materialize(ModelSpec(package="smollm2-135m-instruct"))
    folder = tmp_path_factory.mktemp("smollm2-slice")
    for item in Path(files.path).iterdir():
        if item.name != "config.json":
            os.symlink(item, folder / item.name)
    config = json.loads((Path(files.path) / "config.json").read_text())
    config["num_hidden_layers"] = LAYERS
    (folder / "config.json").write_text(json.dumps(config))
    return ModelFiles(str(folder), files.revision + f"-first-{LAYERS}-layers")


def shape_of(files: ModelFiles) -> Shape:
    return Shape.from_config(json.loads((Path(files.path) / "config.json").read_text()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant,options", [("hqq-4", {"group_size": 64}), ("torchao-int8wo", {}), ("fp16", {})])
def test_weights_are_what_the_planner_says_in_either_dtype(smollm2_slice, variant, options, dtype):
    backend = get_backend(variant)
    loaded = backend.load(smollm2_slice, backend.Config(dtype=dtype, **options), Resources(), "")
    assert loaded.dtype == dtype
    shape = shape_of(smollm2_slice)
    assert shape.layers == LAYERS
    assert weights_footprint(loaded.model) == backend.weights_bytes(shape, options, DTYPE_BYTES[dtype]), (variant, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_quantized_kv_cache_is_what_the_planner_says_in_either_dtype(smollm2_slice, wikitext, dtype):
    fp16 = get_backend("fp16")
    loaded = fp16.load(smollm2_slice, fp16.Config(dtype=dtype), Resources(), "")
    window = loaded.tokenizer(wikitext.read_text()[:20_000]).input_ids[:256]
    first, chunk = 256 - 1 - 32, 16
    shape, sizes = shape_of(smollm2_slice), {}
    for kv_type in ("f16", "hqq-4"):
        _, sizes[kv_type] = measured(loaded.model).cached_logits(window, first, chunk, kv_type)
        assert sizes[kv_type] == predicted_bytes("transformers", kv_type, shape, first, chunk, 256, DTYPE_BYTES[dtype])
    assert sizes["f16"] == 2 * LAYERS * shape.kv_heads * shape.head_dim * 256 * DTYPE_BYTES[dtype]  # the dtype's cache
    assert sizes["hqq-4"] < sizes["f16"] / UNDER[DTYPE_BYTES[dtype]]
