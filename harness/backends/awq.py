"""awq-4: AWQ 4-bit (activation-aware weight quantization) through gptqmodel's AWQ.

Like gptq-4 it either quantizes once, calibration fully described in the config, into a
checkpoint cached under a content key, or loads a pre-quantized AWQ checkpoint (the format
of most 4-bit models on the hub). AWQ searches, per layer, the per-channel scales that
protect the weights the calibration activations say matter, then rounds to 4 bits with a
zero point per group ("GEMM" layout). The checkpoint is packed by gptqmodel's portable
torch kernel, so one quantized on a CPU loads on a GPU and the other way round.

It is quantized in gptqmodel's own choice of dtype (bfloat16 on a CPU, emulated where bf16 is
not native), not in the cell's as gptq-4 is: asked for float32, its AWQ packer raises "AwqTorchLinear
only supports [torch.float16, torch.bfloat16]". It computes in the baseline's (`dtype: auto`):
on a CPU without native bf16 that is float32, through gptqmodel's TorchFusedAwqLinear.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.gptq import (Calibration, gptqmodel_env, calibration_samples, check_calibrated,
                                 group_size_problem, quantized_key)
from evalq.backends.hf import DtypeName, baseline_dtype, missing_module
from evalq.cache import build_once, cache_dir


class AWQConfig(BackendConfig):
    bits: Literal[4] = Field(4, description="bits per weight (4)")
    group_size: int = Field(128, description="-1: one scale per output channel")
    zero_point: bool = Field(True, description="AWQ's asymmetric rounding (a zero point per group); False: symmetric")
    calibration: Calibration | None = Field(None, description="the calibration text (needed unless checkpoint is given)")
    checkpoint: str | None = Field(None, description="a pre-quantized AWQ checkpoint (hub id or folder); skips quantization")
    batch_size: int = Field(1, gt=0, description="calibration forward batch")
    dtype: DtypeName = Field("auto", description="the dtype it computes in: the baseline's; the checkpoint is the same")

    @model_validator(mode="after")
    def _check(self) -> AWQConfig:
        return check_calibrated(self)


class AWQBackend(BackendBase):
    name: ClassVar[str] = "awq-4"
    Config: ClassVar[type[BackendConfig]] = AWQConfig
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "gptqmodel")
    rank_key: ClassVar[tuple] = (0, 3)  # beside gptq-4
    style: ClassVar[tuple[str, str]] = ("#ff9896", "square")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("group", "group_size"), ("zero point", "zero_point"), ("kernel", "kernel"))
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 740_000_000, "cuda": 1_100_000_000}  # gptq-4's, not fitted

    def unavailable_reason(self, device: str) -> str | None:
        return missing_module("gptqmodel", "pip install gptqmodel")

    def check_model(self, cfg: AWQConfig, model_config: dict[str, Any]) -> str | None:
        if cfg.checkpoint:
            return None
        model_type = str(model_config.get("text_config", model_config).get("model_type", ""))
        if model_type.startswith("gemma3"):
            # seen with gptqmodel 7.6 and transformers 5.24, hours into a demo: refused before loading
            return ("gptqmodel's AWQ search cannot run Gemma 3: it calls Gemma3RotaryEmbedding without its "
                    "layer_type argument (TypeError with gptqmodel 7.6, transformers 5.24); give a pre-quantized "
                    "AWQ checkpoint instead")
        return group_size_problem(cfg.group_size, model_config)

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        # GEMM layout: int32-packed 4-bit weights and zero points, a scale per group and output in the
        # compute dtype; no g_idx
        group = options.get("group_size", 128)
        total = 0
        for i, o in shape.all_linears():
            groups = 1 if group == -1 else math.ceil(i / group)
            total += i * o // 2 + groups * o // 2 + groups * o * dtype_bytes
        return total + shape.unquantized_bytes(dtype_bytes)

    def load(self, files: ModelFiles, cfg: AWQConfig, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        gptqmodel_env(resources.threads_for("prepare"))
        prepare_seconds = 0.0
        if cfg.checkpoint:
            path = cfg.checkpoint
        else:
            target = cache_dir("awq") / quantized_key(files, cfg)
            started = time.perf_counter()
            if build_once(target, _quantize_into, files.path, files.trust_remote_code, cfg.model_dump(), isolated=True,
                          threads=resources.threads_for("prepare")):
                prepare_seconds = time.perf_counter() - started
            path = str(target)

        import torch
        from gptqmodel import GPTQModel
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
        from transformers import AutoTokenizer

        dtype = baseline_dtype(cfg.dtype, device)
        wrapper = GPTQModel.load(path, device=device, dtype=getattr(torch, dtype), trust_remote_code=files.trust_remote_code)
        model = wrapper.model.eval()
        tokenizer = AutoTokenizer.from_pretrained(files.path, trust_remote_code=files.trust_remote_code)
        details = {
            "dtype": dtype,
            "bits": cfg.bits,
            "group_size": cfg.group_size,
            "zero_point": cfg.zero_point,
            "method": "awq",
            "checkpoint": cfg.checkpoint or path,
            "calibration": cfg.calibration.model_dump() if cfg.calibration and not cfg.checkpoint else None,
            "kernel": sorted({type(m).__name__ for m in model.modules() if isinstance(m, BaseQuantLinear)}),
        }
        return Loaded(model, tokenizer, dtype, details, prepare_seconds)

    def calibration_windows(self, cfg: AWQConfig, tokenizer: Any) -> list[list[int]] | None:
        if cfg.checkpoint or cfg.calibration is None:
            return None
        return [s["input_ids"] for s in calibration_samples(tokenizer, cfg.calibration)]


def _quantize_into(out: Path, model_path: str, trust_remote_code: bool, cfg_dict: dict[str, Any]) -> None:
    """Quantize with gptqmodel's AWQ (runs in a spawned child process; gptqmodel's pool: the parent's
    gptqmodel_env, inherited)."""
    os.chdir(out)  # gptqmodel writes logs/ into the working directory
    import torch
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from gptqmodel.quantization.config import FORMAT, METHOD
    from transformers import AutoTokenizer

    cfg = AWQConfig.model_validate(cfg_dict)
    torch.manual_seed(cfg.calibration.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    samples = calibration_samples(tokenizer, cfg.calibration)
    qcfg = QuantizeConfig(bits=cfg.bits, group_size=cfg.group_size, sym=not cfg.zero_point,
                          quant_method=METHOD.AWQ, format=FORMAT.GEMM)
    model = GPTQModel.load(model_path, qcfg, trust_remote_code=trust_remote_code)
    # the portable torch packer: AWQ_GEMM's would need CUDA, and both write the same GEMM layout
    model.quantize(samples, batch_size=cfg.batch_size, backend=BACKEND.AWQ_TORCH)
    model.save(str(out))
    (out / "evalq-calibration.json").write_text(json.dumps({"samples": len(samples), "config": cfg.model_dump()}, indent=1))
