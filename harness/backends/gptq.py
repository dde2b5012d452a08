"""gptq-4: GPTQ 4-bit through gptqmodel.

Either quantizes the model once (calibration fully described in the config)
and caches the checkpoint under a content key, or loads a pre-quantized
checkpoint. auto-gptq is not usable with transformers 5, and transformers'
own GPTQConfig route delegates to gptqmodel anyway (and was ~20x slower here).
"""
from __future__ import annotations

import hashlib
import math
import json
import os
import random
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.hf import DtypeName, baseline_dtype, group_size_misfit, linear_in_features, missing_module
from evalq.cache import build_once, cache_dir

VALID_GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)
GPTQ_KERNEL_BYTES = 32  # gptqmodel's CPU kernels keep an 8×int32 shift table per module


class Calibration(BackendConfig):
    path: str | None = Field(None, description="a local UTF-8 text file")
    dataset: Literal["wikitext2", "c4"] | None = Field(None, description="from the hub (needs access)")
    n_samples: int = Field(64, gt=0, description="calibration windows")
    seq_len: int = Field(512, gt=0, description="tokens per calibration window")
    seed: int = Field(0, description="seed of the windows' positions")
    skip_tokens: int = Field(0, ge=0, description="draw windows only after this many tokens, e.g. past the quality slice")

    @model_validator(mode="after")
    def _one_source(self) -> Calibration:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of path or dataset")
        if self.path is not None and not Path(self.path).is_file():
            raise ValueError(f"calibration file {self.path} does not exist")
        return self


class GPTQConfig(BackendConfig):
    bits: Literal[4] = Field(4, description="bits per weight (4)")
    group_size: int = Field(128, description="-1: one scale per output channel")
    desc_act: bool = Field(False, description="quantize columns in order of decreasing activation (act-order)")
    sym: bool = Field(True, description="symmetric quantization (no zero point)")
    damp: float = Field(0.01, gt=0, lt=1, description="dampening added to the Hessian's diagonal, as a fraction of its mean")
    calibration: Calibration | None = Field(None, description="the calibration text (needed unless checkpoint is given)")
    checkpoint: str | None = Field(None, description="a pre-quantized GPTQ checkpoint (hub id or folder); skips quantization")
    batch_size: int = Field(1, gt=0, description="calibration forward batch")
    dtype: DtypeName = Field("auto", description="dtype the quantized model computes in: the baseline's")

    @model_validator(mode="after")
    def _check(self) -> GPTQConfig:
        return check_calibrated(self)


def check_calibrated(cfg: Any) -> Any:
    """The checks gptqmodel's configs (GPTQ and AWQ) share: a group size its kernels take, and
    either calibration to quantize here or a pre-quantized checkpoint."""
    if cfg.group_size not in VALID_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {list(VALID_GROUP_SIZES)}, got {cfg.group_size}")
    if cfg.calibration is None and cfg.checkpoint is None:
        raise ValueError("give calibration (to quantize here) or checkpoint (pre-quantized)")
    return cfg


class GPTQBackend(BackendBase):
    name: ClassVar[str] = "gptq-4"
    Config: ClassVar[type[BackendConfig]] = GPTQConfig
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "gptqmodel")
    rank_key: ClassVar[tuple] = (0, 3)
    style: ClassVar[tuple[str, str]] = ("#9467bd", "diamond")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("group", "group_size"), ("desc_act", "desc_act"), ("kernel", "kernel"))
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 740_000_000, "cuda": 1_100_000_000}

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        group = options.get("group_size", 128)
        total = 0
        for i, o in shape.all_linears():
            groups = 1 if group == -1 else math.ceil(i / group)
            total += i * o // 2  # qweight: 8 4-bit values per int32
            total += groups * o // 2  # qzeros: 4-bit, packed
            total += groups * o * dtype_bytes  # scales: in the dtype the model computes in (float16 as saved)
            total += i * 4  # g_idx: int32, kept even without act-order
            total += GPTQ_KERNEL_BYTES
        return total + shape.unquantized_bytes(dtype_bytes)

    def unavailable_reason(self, device: str) -> str | None:
        return missing_module("gptqmodel", "pip install gptqmodel")

    def check_model(self, cfg: GPTQConfig, model_config: dict[str, Any]) -> str | None:
        """The group size must divide every in_features: the CPU kernel
        (TorchAtenLinear) and the GPU kernels fail at forward time otherwise."""
        if cfg.checkpoint:
            return None
        return group_size_problem(cfg.group_size, model_config)

    def load(self, files: ModelFiles, cfg: GPTQConfig, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        gptqmodel_env(resources.threads_for("prepare"))
        prepare_seconds, quantize_dtype = 0.0, None
        if cfg.checkpoint:
            path = cfg.checkpoint
        else:
            # on a CPU the cell's dtype; on CUDA gptqmodel's own choice, as before (no GPU here to measure another)
            quantize_dtype = baseline_dtype(cfg.dtype, device) if device == "cpu" else None
            target = cache_dir("gptq") / quantized_key(files, cfg, quantize_dtype)
            started = time.perf_counter()
            if build_once(target, _quantize_into, files.path, files.trust_remote_code, cfg.model_dump(), quantize_dtype,
                          isolated=True, threads=resources.threads_for("prepare")):
                prepare_seconds = time.perf_counter() - started
            path = str(target)

        from gptqmodel import GPTQModel
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
        from transformers import AutoTokenizer

        import torch

        wrapper = GPTQModel.load(path, device=device, dtype=getattr(torch, baseline_dtype(cfg.dtype, device)),
                                 trust_remote_code=files.trust_remote_code)
        model = wrapper.model.eval()
        tokenizer = AutoTokenizer.from_pretrained(files.path, trust_remote_code=files.trust_remote_code)
        dtype = str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")
        details = {
            "dtype": dtype,
            "bits": cfg.bits,
            "group_size": cfg.group_size,
            "desc_act": cfg.desc_act,
            "sym": cfg.sym,
            "damp": cfg.damp,
            "checkpoint": cfg.checkpoint or path,
            "calibration": cfg.calibration.model_dump() if cfg.calibration and not cfg.checkpoint else None,
            "quantize_dtype": quantize_dtype,
            "kernel": sorted({type(m).__name__ for m in model.modules() if isinstance(m, BaseQuantLinear)}),
        }
        return Loaded(model, tokenizer, dtype, details, prepare_seconds)

    def calibration_windows(self, cfg: GPTQConfig, tokenizer: Any) -> list[list[int]] | None:
        """The token windows this variant was calibrated on (None for a given checkpoint)."""
        if cfg.checkpoint or cfg.calibration is None:
            return None
        return [s["input_ids"] for s in calibration_samples(tokenizer, cfg.calibration)]


def group_size_problem(group_size: int, model_config: dict[str, Any]) -> str | None:
    """Why gptqmodel's kernels (GPTQ and AWQ alike) cannot take this group size for this
    model, or None: it must divide every linear layer's in_features."""
    misfit = None if group_size == -1 else group_size_misfit(group_size, model_config)
    if misfit is None:
        return None
    dims = list(linear_in_features(model_config).values())
    ok = [g for g in VALID_GROUP_SIZES if g > 0 and all(d % g == 0 for d in dims)]
    return f"{misfit}; valid here: {ok or [-1]} or -1"


def gptqmodel_env(threads: int) -> None:
    """gptqmodel's CPU pool, which it reads from the environment (GPTQ and AWQ alike)."""
    # On a 2-core machine gptqmodel's default pool asks for more workers than
    # its parent pool has ("Virtual pool 'model_loader:cpu' requests 2 workers").
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, threads)))


def quantized_key(files: ModelFiles, cfg: BackendConfig, quantize_dtype: str | None = None) -> str:
    """The cache key of a checkpoint quantized here (GPTQ or AWQ: each under its own cache folder).
    quantize_dtype: the dtype the calibration forwards ran in where evalq chose it (GPTQ), None
    where gptqmodel did (AWQ): the Hessians, so the rounding, and the stored tensors follow it."""
    calibration = cfg.calibration.model_dump() if cfg.calibration else None
    if calibration and calibration["path"]:
        # the text itself, not where it lies
        calibration["path"] = hashlib.sha256(Path(calibration["path"]).read_bytes()).hexdigest()
    payload = {
        "revision": files.revision,
        # the dtype it later computes in does not change the checkpoint; the one it is quantized in does
        "config": {**cfg.model_dump(exclude={"checkpoint", "batch_size", "dtype"}), "calibration": calibration},
        **({"quantize_dtype": quantize_dtype} if quantize_dtype else {}),
        "gptqmodel": version("gptqmodel"),
        "transformers": version("transformers"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def calibration_samples(tokenizer: Any, cal: Calibration) -> list[dict[str, list[int]]]:
    """n_samples windows of seq_len tokens drawn (seeded) from the calibration text."""
    if cal.path:
        path = Path(cal.path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {path} does not exist")
        text = path.read_text(encoding="utf-8")
    else:
        from datasets import load_dataset

        if cal.dataset == "wikitext2":
            rows = load_dataset("wikitext", "wikitext-2-raw-v1", split="train")["text"]
        else:
            rows = load_dataset("allenai/c4", data_files="en/c4-train.00000-of-01024.json.gz", split="train")["text"][:20000]
        text = "\n\n".join(rows)
    ids = tokenizer(text, add_special_tokens=False).input_ids[cal.skip_tokens :]
    if len(ids) < cal.seq_len + 1:
        raise ValueError(f"calibration text has {len(ids)} tokens after skip_tokens = {cal.skip_tokens}, "
                         f"fewer than seq_len = {cal.seq_len}")
    rng = random.Random(cal.seed)
    samples = []
    for _ in range(cal.n_samples):
        start = rng.randrange(0, len(ids) - cal.seq_len)
        window = ids[start : start + cal.seq_len]
        samples.append({"input_ids": window, "attention_mask": [1] * len(window)})
    return samples


def _quantize_into(out: Path, model_path: str, trust_remote_code: bool, cfg_dict: dict[str, Any],
                   dtype: str | None) -> None:
    """Quantize with gptqmodel's native API (runs in a spawned child process), the calibration
    forwards in `dtype` (None: gptqmodel's choice). Its own choice is bfloat16 on any CPU, which one
    without native bf16 emulates (SmolLM2 with the demo's calibration on an AVX2 EPYC: 474 s
    against 154 s in float32). gptqmodel's pool: the parent's gptqmodel_env, inherited."""
    # gptqmodel writes logs/ into the working directory: keep them with the checkpoint
    os.chdir(out)
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    cfg = GPTQConfig.model_validate(cfg_dict)
    torch.manual_seed(cfg.calibration.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    samples = calibration_samples(tokenizer, cfg.calibration)
    qcfg = QuantizeConfig(bits=cfg.bits, group_size=cfg.group_size, desc_act=cfg.desc_act, sym=cfg.sym, damp_percent=cfg.damp)
    dtype_arg = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = GPTQModel.load(model_path, qcfg, **dtype_arg, trust_remote_code=trust_remote_code)
    model.quantize(samples, batch_size=cfg.batch_size)
    model.save(str(out))
    (out / "evalq-calibration.json").write_text(json.dumps({"samples": len(samples), "config": cfg.model_dump(),
                                                            "quantize_dtype": dtype}, indent=1))
