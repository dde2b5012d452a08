"""SmolLM2-135M in every variant: one matrix, run once per test session (the
smollm2_run fixture). test_smollm2_variants (transformers' variants),
test_awq_variant, test_hqq_variant, test_torchao_variants, test_really_quantized, test_long_context and test_gguf_variants (llama.cpp's) read the same database: fp16, int8 and nf4 are
measured once for both."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HF_VARIANTS = ("fp16", "int8", "nf4", "gptq-4")
AWQ_VARIANTS = ("awq-4",)  # quantized with 2 windows of 64 tokens: AWQ's search takes ~5 s a layer on a CPU even so
GGUF_VARIANTS = ("gguf-bf16", "gguf-q8_0", "gguf-q4_k_m")
TORCHAO_VARIANTS = ("torchao-int8wo",)  # w8a8 takes ~200 s a cell on a CPU: test_torchao_variants loads it directly
HQQ_VARIANTS = ("hqq-4",)
# every cell at long context with each cache type its runtime has (transformers': f16, hqq-4; llama.cpp's: f16, q8_0, q4_0)
KV_TYPES = ("f16", "hqq-4", "q8_0", "q4_0")

SMOLLM2_MATRIX = """\
name: it-smollm2
models:
  - name: SmolLM2-135M-Instruct
    package: smollm2-135m-instruct
variants:
  fp16: {{}}
  int8: {{}}
  nf4: {{}}
  gptq-4:
    group_size: {group_size}
    calibration:
      path: {wikitext}
      n_samples: 16
      seq_len: 128
      skip_tokens: 4096
  awq-4:
    group_size: {group_size}
    calibration:
      path: {wikitext}
      n_samples: 2
      seq_len: 64
      skip_tokens: 4096
  torchao-int8wo: {{}}
  hqq-4: {{group_size: 64}}
{gguf}suites: [tiny]
quality: {{path: {wikitext}, tokens: 2048}}
long_context: {{path: {wikitext}, context: 512, scored: 64, chunk: 32, kv_cache: [{kv_cache}]}}
perf: {{prompt_tokens: 32, new_tokens: 8, batch_sizes: [1, 2], warmup: 1, repeats: 2, threads: 1}}
eval: {{batch_size: 8}}
timeout_s: 1500
"""


def smollm2_variants() -> tuple[str, ...]:
    """The GGUF variants only where the gguf extra (llama-cpp-python) is installed."""
    return HF_VARIANTS + AWQ_VARIANTS + TORCHAO_VARIANTS + HQQ_VARIANTS + (GGUF_VARIANTS if importlib.util.find_spec("llama_cpp") else ())


# EVALQ_TEST_DTYPE=float32|bfloat16 runs the transformers variants in that dtype instead of this
# machine's `auto`, to check the dtype-dependent tests for the other kind of CPU (awq-4 keeps its
# own: gptqmodel's AWQ packer takes only 16-bit dtypes)
FORCED_DTYPE_VARIANTS = ("fp16", "int8", "nf4", "gptq-4", "torchao-int8wo", "hqq-4")


def write_smollm2_matrix(folder: Path, wikitext: Path, group_size: int = 64) -> Path:
    gguf = "".join(f"  {v}: {{}}\n" for v in smollm2_variants() if v.startswith("gguf-"))
    path = folder / f"m{group_size}.yaml"
    text = SMOLLM2_MATRIX.format(group_size=group_size, wikitext=wikitext, gguf=gguf, kv_cache=", ".join(KV_TYPES))
    dtype = os.environ.get("EVALQ_TEST_DTYPE")
    if dtype:
        matrix = yaml.safe_load(text)
        for variant in FORCED_DTYPE_VARIANTS:
            matrix["variants"][variant] = {**(matrix["variants"][variant] or {}), "dtype": dtype}
        text = yaml.safe_dump(matrix, sort_keys=False)
    path.write_text(text)
    return path
