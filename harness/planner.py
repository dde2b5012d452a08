"""The memory planner: predicted memory of a cell from config.json alone, for
inference (per variant) and for training (full, LoRA, QLoRA, ZeRO stages).

Weights are counted the way the loaded model holds them (see
measure/memory.weights_footprint): every packed tensor, scale and constant of
bitsandbytes' and gptqmodel's layers, so the prediction for a Llama-family
model is exact, not an estimate. KV cache, activations and the framework's
own memory are estimates, with the overhead fitted on measured cells (docs/metrics.md).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from evalq.architecture import DTYPE_BYTES, PlanError, Shape, kv_cache_bytes  # noqa: F401 (DTYPE_BYTES: the planner's API)
from evalq.backends.base import get_backend
from evalq.outcome import Plan


def weights_bytes(shape: Shape, variant: str, options: dict[str, Any] | None = None, dtype_bytes: int = 2) -> int:
    """Bytes of the loaded model's weights in this variant, as weights_footprint counts them
    (each backend's own formula)."""
    try:
        backend = get_backend(variant)
    except KeyError:
        raise PlanError(f"no weights formula for variant {variant!r}") from None
    return backend.weights_bytes(shape, options or {}, dtype_bytes)


def overhead_bytes(device: str, variant: str, dtype_bytes: int = 2) -> int:
    """The framework's own memory while generating: each backend's fitted constant."""
    return get_backend(variant).overhead(device, dtype_bytes)


@dataclass
class InferencePlan:
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.overhead_bytes

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "peak_bytes": self.peak_bytes}


def plan_inference(shape: Shape, variant: str, options: dict[str, Any], device: str, sequence: int, batch: int,
                   dtype_bytes: int = 2) -> InferencePlan:
    backend = get_backend(variant)
    return InferencePlan(backend.weights_bytes(shape, options, dtype_bytes), kv_cache_bytes(shape, sequence, batch, dtype_bytes),
                         backend.activation_bytes(shape, sequence, batch, dtype_bytes), backend.overhead(device, dtype_bytes))


# --- training ----------------------------------------------------------------

Method = Literal["full", "lora", "qlora"]
Recompute = Literal["none", "selective", "full"]
LORA_TARGETS = 7  # q, k, v, o, gate, up, down
# Measured, not derived: a peft LoRA step on the CPU kept about 40·s·b·h bytes
# (16-bit units) per layer beyond the full fine-tuning activation count
# (SmolLM2, seq 256 and 512); docs/metrics.md's training table shows it.
LORA_EXTRA_SBH = 40


def activation_training_bytes(shape: Shape, sequence: int, batch: int, recompute: Recompute) -> int:
    """Korthikanti et al. 2022, 16-bit activations, no tensor parallelism:
    s·b·h·(34 + 5·a·s/h) per layer stored without recomputation, s·b·h·34 with
    selective recomputation (attention scores recomputed), 2·s·b·h per layer
    with full recomputation plus one layer's full activations while it is
    recomputed."""
    s, b, h, a, layers = sequence, batch, shape.hidden, shape.heads, shape.layers
    per_layer_full = s * b * h * (34 + 5 * a * s / h)
    if recompute == "none":
        return int(layers * per_layer_full)
    if recompute == "selective":
        return int(layers * s * b * h * 34)
    return int(layers * 2 * s * b * h + per_layer_full)


def lora_params(shape: Shape, rank: int) -> int:
    return shape.layers * sum(rank * (i + o) for i, o in shape.linears()[:LORA_TARGETS])


@dataclass
class TrainingPlan:
    """Bytes per GPU."""

    weights_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    output_bytes: int  # logits, their float32 log-softmax and its gradient (outside Korthikanti's count)
    gathered_bytes: int  # ZeRO-3/FSDP: the largest unit gathered in full at once
    offloaded_bytes: int  # optimizer states moved to CPU memory (not in the per-GPU total)
    gpus: int

    @property
    def per_gpu_bytes(self) -> int:
        return (self.weights_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes + self.output_bytes
                + self.gathered_bytes)

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "per_gpu_bytes": self.per_gpu_bytes}


def plan_training(shape: Shape, method: Method = "full", zero: int = 0, gpus: int = 1, sequence: int = 2048, batch: int = 1,
                  recompute: Recompute = "none", optimizer: Literal["adamw", "adamw8bit"] = "adamw",
                  offload_optimizer: bool = False, shard_group: int | None = None, lora_rank: int = 16,
                  precision: Literal["mixed", "fp32"] = "mixed") -> TrainingPlan:
    """Training memory per GPU. Mixed precision is the ZeRO paper's accounting:
    16-bit weights 2Ψ, 16-bit gradients 2Ψ, AdamW fp32 master + momentum +
    variance KΨ with K = 12 (6 for 8-bit Adam). fp32 (plain PyTorch, e.g. on a
    CPU): weights 4Ψ, gradients 4Ψ, momentum + variance 8Ψ, activations twice
    the 16-bit bytes. `shard_group` = hybrid sharding: states are sharded within
    groups of that many GPUs, replicated across."""
    if zero not in (0, 1, 2, 3):
        raise PlanError(f"zero must be 0, 1, 2 or 3, got {zero}")
    shard = shard_group or gpus
    if gpus < 1 or shard < 1 or gpus % shard:
        raise PlanError(f"shard group {shard} must divide the {gpus} GPUs")
    fp32 = precision == "fp32"
    k = (8 if fp32 else 12) if optimizer == "adamw" else (2 if fp32 else 6)
    w = 4 if fp32 else 2
    psi = shape.params
    if method == "full":
        weights, grads, states = w * psi, w * psi, k * psi
        largest_unit = 2 * max(sum(i * o for i, o in shape.linears()), shape.vocab * shape.hidden)
    else:
        trainable = lora_params(shape, lora_rank)
        base = "nf4" if method == "qlora" else "fp16"
        # adapters stay float32 (peft's default beside a 16-bit base): weights 4, gradients 4, Adam 8
        weights, grads, states = (weights_bytes(shape, base, {"double_quant": True}, w) + 4 * trainable, 4 * trainable,
                                  8 * trainable)
        one_layer = Shape(**{**asdict(shape), "layers": 1})
        largest_unit = weights_bytes(one_layer, base, {"double_quant": True}) - weights_bytes(Shape(**{**asdict(shape), "layers": 0}), base)
    weights, grads, states = shard_model_states(weights, grads, states, zero, shard)
    gathered = largest_unit if zero == 3 and shard > 1 else 0
    offloaded = 0
    if offload_optimizer:
        offloaded, states = states, 0
    acts = activation_training_bytes(shape, sequence, batch, recompute)
    if method != "full":
        acts += LORA_EXTRA_SBH * sequence * batch * shape.hidden * shape.layers
    acts *= 2 if fp32 else 1
    output = sequence * batch * shape.vocab * (w + 4 + 4)
    return TrainingPlan(weights, grads, states, acts, output, gathered, offloaded, gpus)


def shard_model_states(weights: int, grads: int, states: int, zero: int, shard: int) -> tuple[int, int, int]:
    """Per-GPU (weights, gradients, optimizer states) under ZeRO stage `zero`
    over `shard` GPUs: stage 1 shards the optimizer states, 2 the gradients too,
    3 (FSDP full sharding) the weights too."""
    states = math.ceil(states / shard) if zero >= 1 else states
    grads = math.ceil(grads / shard) if zero >= 2 else grads
    weights = math.ceil(weights / shard) if zero >= 3 else weights
    return weights, grads, states


def fewest_gpus(shape: Shape, gpu_bytes: int, limit: int = 1024, **kwargs: Any) -> int | None:
    """The fewest GPUs of `gpu_bytes` each on which this training fits (power-of-two counts)."""
    n = 1
    while n <= limit:
        if plan_training(shape, gpus=n, **kwargs).per_gpu_bytes <= gpu_bytes:
            return n
        n *= 2
    return None


def parse_bytes(text: str) -> int:
    """'80GB', '80 GiB', '24g', '1.5e10' → bytes (GB = 1e9, GiB = 2**30)."""
    t = text.strip().lower().replace(" ", "")
    units = {"gib": 2**30, "gb": 10**9, "g": 10**9, "mib": 2**20, "mb": 10**6, "m": 10**6, "tb": 10**12, "b": 1}
    for unit, factor in units.items():
        if t.endswith(unit):
            try:
                return int(float(t[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(float(t))
    except ValueError:
        raise PlanError(f"{text!r} is not a size like 80GB or 24GiB") from None


# --- cells and matrices ------------------------------------------------------

def cell_dtype_bytes(variant: str, options: dict[str, Any], device: str) -> int:
    """Bytes of the unquantized parts, as the backends choose them (backends/hf.baseline_dtype)."""
    from evalq.backends.hf import baseline_dtype

    return DTYPE_BYTES.get(baseline_dtype(options.get("dtype") or "auto", device), 2)


def plan_cell(variant: str, options: dict[str, Any], perf: Any, device: str, config: dict[str, Any]) -> Plan:
    """The prediction stored with a cell: weights exactly, and the peak while generating
    (prompt + new tokens at the largest batch of the perf settings)."""
    shape = Shape.from_config(config)
    sequence, batch = perf.prompt_tokens + perf.new_tokens, max(perf.batch_sizes)
    plan = plan_inference(shape, variant, options, device, sequence, batch, cell_dtype_bytes(variant, options, device))
    return Plan(predicted_weights_bytes=plan.weights_bytes, predicted_peak_bytes=plan.peak_bytes,
                kv_cache_bytes=plan.kv_cache_bytes, activation_bytes=plan.activation_bytes,
                overhead_bytes=plan.overhead_bytes, sequence=sequence, batch=batch, params=shape.params)


def gpus_needed(plan: Plan, gpu_bytes: int) -> int | None:
    """GPUs of `gpu_bytes` each for this cell, the model split across them
    (accelerate's device_map="auto"); each GPU pays the framework overhead."""
    usable = gpu_bytes - plan.overhead_bytes
    if usable <= 0:
        return None
    return max(1, math.ceil((plan.predicted_peak_bytes - plan.overhead_bytes) / usable))


def plan_matrix(matrix: Any, configs: dict[str, dict[str, Any]], gpu_bytes: int, gpus: int, device: str = "cuda",
                training: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per cell (inference) or per model (`training` given: plan_training's
    keyword arguments), from config.json alone. `configs`: model display name → config."""
    from evalq.matrix import variant_options

    rows = []
    for model in matrix.models:
        config = configs.get(model.display_name)
        if training is not None:
            row: dict[str, Any] = {"model": model.display_name, "variant": f"train-{training.get('method', 'full')}"}
            if config is None:
                rows.append({**row, "fits": None, "error": _no_config(model)})
                continue
            shape = Shape.from_config(config)
            plan = plan_training(shape, gpus=gpus, **training)
            row.update(plan.as_dict(), params=shape.params, predicted_weights_bytes=plan.weights_bytes,
                       predicted_peak_bytes=plan.per_gpu_bytes, fits=plan.per_gpu_bytes <= gpu_bytes,
                       fewest_gpus=fewest_gpus(shape, gpu_bytes, **training))
            rows.append(row)
            continue
        for variant in matrix.variants:
            row = {"model": model.display_name, "variant": variant}
            if config is None:
                rows.append({**row, "fits": None, "error": _no_config(model)})
                continue
            options = variant_options(matrix, model, variant).model_dump(mode="json")
            plan = plan_cell(variant, options, matrix.perf, device, config)
            needed = gpus_needed(plan, gpu_bytes)
            rows.append({**row, **plan.model_dump(exclude_unset=True), "gpus_needed": needed, "fits": needed is not None and needed <= gpus})
    return rows


def _no_config(model: Any) -> str:
    return (f"config.json of {model.display_name} is not available here (offline, or a gated hub model): "
            f"pass --config '{model.display_name}=PATH/config.json'")


def plan_table(rows: list[dict[str, Any]], gpu_bytes: int, gpus: int, training: bool) -> Any:
    from rich.markup import escape
    from rich.table import Table

    title = f"evalq plan: {gpus} × {gpu_bytes / 1e9:g} GB" + (" (training, per GPU)" if training else "")
    table = Table(title=title)
    cols = ["model", "variant", "params (B)", "weights GB", "peak GB", "fits"]
    cols += ["fewest GPUs" if training else "GPUs needed", "note"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "variant", "fits") else "right")
    for r in rows:
        if r.get("error"):
            table.add_row(escape(r["model"]), escape(r["variant"]), "–", "–", "–", "?", "–", escape(r["error"]))
            continue
        more = r.get("fewest_gpus") if training else r.get("gpus_needed")
        table.add_row(escape(r["model"]), escape(r["variant"]), f"{r['params'] / 1e9:.3g}",
                      f"{r['predicted_weights_bytes'] / 1e9:.2f}", f"{r['predicted_peak_bytes'] / 1e9:.2f}",
                      "yes" if r["fits"] else "no", "–" if more is None else str(more), "")
    return table
