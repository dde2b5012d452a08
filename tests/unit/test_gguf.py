"""The gguf-<type> family without running llama.cpp: names, options, the planner's
GGUF sizes, the token-for-token check, the sanity flags and the converter install."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from evalq.backends.base import backend_names, get_backend
from evalq.backends.gguf import GGUF_TYPES, GGUFConfig, extra_buffer_types
from evalq.backends.gguf_converter import install_converter
from evalq.backends.base import variant_rank
from evalq.store.tables import CellRow
from evalq.matrix import MatrixError, read_matrix
from evalq.measure.quality import Baseline, QualityError, check_tokens, first_difference, tokens_sha
from evalq.paired import sanity_flags
from evalq.planner import Shape, weights_bytes

SMOLLM2 = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
           "num_key_value_heads": 3, "intermediate_size": 1536, "tie_word_embeddings": True, "max_position_embeddings": 8192}


def test_the_family_names_every_type_and_nothing_else():
    names = backend_names()
    assert {"gguf-q8_0", "gguf-q4_k_m", "gguf-bf16"} <= set(names)
    backend = get_backend("gguf-q4_k_m")
    assert (backend.name, backend.bits, backend.ftype_name, backend.ggml_type) == ("gguf-q4_k_m", 4, "Q4_K_M", "Q4_K")
    with pytest.raises(KeyError):
        get_backend("gguf-q9_9")


def test_every_type_is_one_llama_cpp_knows():
    """Each name maps to a LLAMA_FTYPE of gguf's table (and of llama_cpp, when installed)."""
    from gguf.constants import GGMLQuantizationType, LlamaFileType

    for name, (ftype, _, ggml) in GGUF_TYPES.items():
        assert hasattr(LlamaFileType, ftype if ftype == "ALL_F32" else "MOSTLY_" + ftype), name
        assert hasattr(GGMLQuantizationType, ggml), name
    llama_cpp = pytest.importorskip("llama_cpp")
    for ftype, _, _ in GGUF_TYPES.values():
        assert hasattr(llama_cpp, "LLAMA_FTYPE_" + (ftype if ftype == "ALL_F32" else "MOSTLY_" + ftype))


def write(tmp_path: Path, variants: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"name: t\nmodels:\n  - {{name: m, path: {tmp_path}}}\nvariants:\n{variants}\nsuites: [demo]\n")
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    return path


def test_a_misspelled_type_or_option_is_named_with_its_line(tmp_path):
    with pytest.raises(MatrixError) as err:
        read_matrix(write(tmp_path, "  gguf-q4_km: {}"))
    assert "unknown variant" in str(err.value) and "gguf-q4_k_m" in str(err.value)
    with pytest.raises(MatrixError) as err:
        read_matrix(write(tmp_path, "  gguf-q8_0: {n_gpu_layer: 10}"))
    assert "n_gpu_layer" in str(err.value) and "line 5" in str(err.value)
    with pytest.raises(MatrixError) as err:
        read_matrix(write(tmp_path, "  gguf-q8_0: {checkpoint: /nowhere/model.gguf}"))
    assert "does not exist" in str(err.value)


def test_checkpoint_must_be_a_gguf_file():
    with pytest.raises(ValueError, match="not a .gguf file"):
        GGUFConfig(checkpoint="owner/repo/model.safetensors")
    assert GGUFConfig(checkpoint="owner/repo/model-Q4_K_M.gguf").checkpoint.endswith(".gguf")


def test_llama_cpps_amx_kernels_stay_off_unless_asked_for():
    """They crashed every Q8_0/Q4_K_M decode on a Sapphire Rapids VM (llama.cpp#20824)."""
    amx, avx2 = frozenset({"avx512f", "amx_tile", "amx_int8"}), frozenset({"avx2", "fma"})
    assert extra_buffer_types(GGUFConfig(), avx2)  # no AMX: llama.cpp's repacked layouts as before
    assert not extra_buffer_types(GGUFConfig(), amx) and not extra_buffer_types(GGUFConfig(amx=False), amx)
    assert extra_buffer_types(GGUFConfig(amx=True), amx)
    # unset leaves the options (and so the keys of cells stored before the option) as they were
    assert "amx" not in GGUFConfig().model_dump(exclude_none=True)


def test_planner_gguf_sizes_for_smollm2_by_hand():
    """Q8_0: 34 bytes per 32 weights on every matrix; norms float32.
    Q4_K_M: SmolLM2's 576-wide rows do not fit Q4_K's 256-blocks, so those go
    to Q5_0 (22 B / 32), 1,536-wide down_proj rows stay Q4_K (144 B / 256), and
    v_proj/down_proj of the 'more bits' layers become Q6_K (210 B / 256), or
    Q8_0 where Q6_K does not fit; the tied embedding (output) Q6_K → Q8_0."""
    s = Shape.from_config(SMOLLM2)
    norms = 4 * (30 * 2 * 576 + 576)
    assert weights_bytes(s, "gguf-q8_0") == (106_168_320 + 49_152 * 576) // 32 * 34 + norms == 143_025_408
    more = [i for i in range(30) if i < 3 or i >= 26 or (i - 3) % 3 == 2]
    per_layer_q5 = (576 * 576 * 2 + 576 * 192 + 576 * 1536 * 2) // 32 * 22  # q, o, k, gate, up
    q4 = 1536 * 576 // 256 * 144
    v5, v8 = 576 * 192 // 32 * 22, 576 * 192 // 32 * 34
    down6 = 1536 * 576 // 256 * 210
    layers = sum(per_layer_q5 + (v8 + down6 if i in more else v5 + q4) for i in range(30))
    assert weights_bytes(s, "gguf-q4_k_m") == layers + 49_152 * 576 // 32 * 34 + norms == 103_668_480


def test_the_first_differing_token_is_named(tmp_path):
    ids = list(range(100, 140))
    np.save(tmp_path / "ids.npy", np.asarray(ids))
    baseline = Baseline(tmp_path, {"tokens_sha256": tokens_sha(ids), "n_tokens": 40}, np.zeros((1, 1)), np.zeros(1))
    check_tokens(baseline, ids)  # identical: no error
    other = ids[:17] + [7, 8] + ids[19:]
    with pytest.raises(QualityError, match=r"first difference at token 17 \(baseline id 117, here 7\); 2 of the first 40"):
        check_tokens(baseline, other)
    assert first_difference(ids, ids[:30]) == 30 and first_difference(ids, ids) is None


def row(variant, weights, **result):
    return CellRow(key=variant, variant=variant, status="ok", weights_bytes=weights, result=result)


def test_a_llama_cpp_build_computing_garbage_is_flagged_with_the_cpu_hint():
    base = row("fp16", 269)
    details = {"bits": 8, "quantized_modules": 211, "cpu_features": "CPU : AVX2 = 1 | AMX_INT8 = 1 |", "n_gpu_layers": 0}
    healthy = row("gguf-q8_0", 143, quality={"kld_mean": 0.004, "ppl_ratio": 1.003}, details=details)
    assert sanity_flags(healthy, base) == []
    # the AMX-path failure: perplexity 454 where ~23 is right
    broken = row("gguf-q8_0", 143, quality={"kld_mean": 2.9, "ppl_ratio": 454 / 23}, details=details)
    flags = sanity_flags(broken, base)
    assert len(flags) == 2 and all("Choosing llama.cpp's CPU backend" in f for f in flags)
    assert "perplexity 19.74× fp16's" in flags[0] and "KL divergence to fp16 2.9" in flags[1]


def test_a_16_bit_gguf_is_not_suspected_of_not_being_quantized():
    base = row("fp16", 269)
    details = {"bits": 16, "quantized_modules": 0}
    assert sanity_flags(row("gguf-bf16", 269, quality={"kld_mean": 0.0008, "ppl_ratio": 1.0}, details=details), base) == []
    assert sanity_flags(row("gguf-bf16", 269, quality={"kld_mean": 0.2, "ppl_ratio": 1.2}, details=details), base)


def test_gguf_variants_sort_after_the_transformers_ones_by_bits():
    order = sorted(["gguf-q4_k_m", "nf4", "gguf-q8_0", "fp16", "zeta", "gptq-4", "gguf-bf16", "int8"], key=variant_rank)
    assert order == ["fp16", "int8", "nf4", "gptq-4", "gguf-bf16", "gguf-q8_0", "gguf-q4_k_m", "zeta"]


def test_the_converter_is_taken_from_the_matching_source_distribution(tmp_path, monkeypatch):
    import evalq.backends.gguf_converter as gguf

    monkeypatch.setattr(gguf, "version", lambda dist: "9.9.9")
    monkeypatch.setattr(gguf, "converter_home", lambda v: tmp_path / "share" / f"llama.cpp-{v}")
    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in {"convert_hf_to_gguf.py": "print('convert')", "conversion/__init__.py": "",
                           "gguf-py/gguf/__init__.py": "", "src/llama.cpp": "// not needed"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-9.9.9/vendor/llama.cpp/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    home = install_converter(sdist, log=lambda text: None)
    assert home == tmp_path / "share" / "llama.cpp-9.9.9"
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) == [
        "conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]


def test_the_gguf_plan_counts_only_the_last_tokens_logits():
    """transformers' generate() holds logits and their float32 log-softmax for the
    prompt; llama.cpp computes float32 activations and one row of logits per sequence."""
    from evalq.architecture import activation_bytes
    from evalq.planner import plan_inference

    s = Shape.from_config(SMOLLM2)
    plan = plan_inference(s, "gguf-q8_0", {}, "cpu", sequence=80, batch=4)
    assert plan.activation_bytes == 2 * 320 * 1536 * 4 + 4 * 49152 * 4
    assert plan.activation_bytes < activation_bytes(s, 80, 4) / 10
    assert plan.weights_bytes == 143_025_408


def test_the_unquantized_intermediate_keeps_the_weights_precision(tmp_path):
    """The converter's own `auto` writes float16 for float32 weights; evalq asks for the
    weights' own dtype, read from the safetensors headers (the dtype holding most bytes)."""
    import torch
    from safetensors.torch import save_file

    from evalq.backends.gguf import source_outtype

    def folder(name: str, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
        d = tmp_path / name
        d.mkdir()
        if tensors:
            save_file(tensors, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(config or {}))
        return d

    f32 = folder("f32", {"w": torch.zeros(64, 64), "norm": torch.zeros(64, dtype=torch.bfloat16)})
    bf16 = folder("bf16", {"w": torch.zeros(64, 64, dtype=torch.bfloat16), "norm": torch.zeros(64)})
    f16 = folder("f16", {"w": torch.zeros(64, 64, dtype=torch.float16), "ids": torch.zeros(4096, dtype=torch.int64)})
    assert [source_outtype(d) for d in (f32, bf16, f16)] == ["f32", "bf16", "f16"]
    assert source_outtype(folder("bin", {}, {"torch_dtype": "bfloat16"})) == "bf16"  # no safetensors: config.json
