"""The memory planner: predicted memory of a cell from config.json alone, for
inference (per variant) and for training (full, LoRA, QLoRA, ZeRO stages).

Weights are counted the way the loaded model holds them (see
measure/memory.weights_footprint): every packed tensor, scale and constant of
bitsandbytes' and gptqmodel's layers, so the prediction for a Llama-family
model is exact, not an estimate. KV cache, activations and the framework's
own memory are estimates, with the overhead fitted on measured cells (README).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

# The framework's own memory, fitted on this project's CPU cells (README "Memory
# planner"): the worker's RSS beyond weights, KV cache and activations while
# generating — Python, torch, transformers and lm-eval imported, and the
# kernels' working copies (bitsandbytes' CPU int8 path, gptqmodel's CPU kernels
# most). Fitted with the free heap released before the phase (memory.py
# release_free_heap): per variant, the mean of five fits (two runs of the demo's
# perf settings on SmolLM2-135M and Gemma-3-270M, one of the integration test's).
# On CUDA: the context and allocator slack, not fitted here (no GPU).
# "gguf" (every gguf-<type>): the worker (torch imported) and llama.cpp's context
# beside the mapped weights; the mean of the demo's four GGUF cells (0.50-0.60 GB).
# fp16 and nf4 raised by 100 MB (2026-12-02): on a Sapphire Rapids VM (AMX) the
# integration test's bf16 cells kept ~200 MB more than on the AMD EPYC they were
# fitted on (fp16 1,030,615,040 B for 824,466,432 predicted, nf4 893 MB for 692),
# the only two outside ±25 %; the constants now sit inside the band on both machines.
OVERHEAD_BYTES = {
    "cpu": {"fp16": 630_000_000, "int8": 900_000_000, "nf4": 655_000_000, "gptq-4": 740_000_000, "gguf": 547_000_000},
    "cuda": {"fp16": 1_000_000_000, "int8": 1_200_000_000, "nf4": 1_100_000_000, "gptq-4": 1_100_000_000, "gguf": 1_000_000_000},
}
# bitsandbytes' CPU paths computing in float32 (a CPU without native bf16,
# evalq.cpu) keep more while generating than the bf16-fitted constants allow
# (SmolLM2-135M, 2026-12-02, AVX2-only CPU, in-sample): nf4 measured 1,415,503,872
# and 1,270,190,080 B where the bf16 constant predicted 758,529,208; int8 is erratic:
# 1,513,582,592, 1,497,079,808 and 1,871,937,536 B in three runs (two others inside
# ±25 % of 1,155,321,088) where the bf16 constant predicted 1,155,321,088.
CPU_FLOAT32_OVERHEAD_BYTES = {"nf4": 1_212_000_000, "int8": 1_345_000_000}
# llama.cpp quantizes a matrix whose rows are not a multiple of a k-quant's 256
# with another type (llama-quant.cpp); e.g. SmolLM2's 576-wide rows: Q4_K → Q5_0
K_QUANT_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "IQ4_XS": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
DEFAULT_OVERHEAD_BYTES = 1_500_000_000
NF4_BLOCK = 64  # bitsandbytes' 4-bit block
NESTED_BLOCK = 256  # double quantization: one float32 absmax per 256 8-bit absmax
NF4_CODE_BYTES = 16 * 4  # the NF4 code book, float32, per quantized tensor
NESTED_CODE_BYTES = 256 * 4  # the 8-bit dynamic map of the nested absmax, per tensor
GPTQ_KERNEL_BYTES = 32  # gptqmodel's CPU kernels keep an 8×int32 shift table per module
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


class PlanError(ValueError):
    """The config lacks what the planner needs."""


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer as config.json describes it."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    max_positions: int | None
    norms_per_layer: int  # hidden-sized norms per layer (2 for Llama, 4 for Gemma 2/3)
    qk_norm: bool  # per-head q/k norms (Gemma 3, Qwen 3)
    rotary_embeddings: int  # Gemma 3 keeps a local and a global one
    attention_bias: bool
    scaled_embedding: bool = False  # Gemma keeps √hidden as a 16-bit buffer

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Shape:
        cfg = config.get("text_config", config)
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
                   if not isinstance(cfg.get(k), int)]
        if missing:
            raise PlanError(f"config.json lacks {', '.join(missing)}")
        heads = cfg["num_attention_heads"]
        model_type = str(cfg.get("model_type", ""))
        gemma = model_type.startswith(("gemma2", "gemma3"))
        return cls(
            vocab=cfg["vocab_size"], hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate=cfg["intermediate_size"],
            tied=bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", True))),
            max_positions=cfg.get("max_position_embeddings"), norms_per_layer=4 if gemma else 2,
            qk_norm=model_type.startswith(("gemma3", "qwen3")), rotary_embeddings=2 if model_type.startswith("gemma3") else 1,
            attention_bias=bool(cfg.get("attention_bias", False)), scaled_embedding=model_type.startswith("gemma"),
        )

    def linears(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of one layer's projections."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linears())

    @property
    def norm_params(self) -> int:
        """Every layer's norms, the final norm and per-head q/k norms."""
        return self.layers * self.norms_per_layer * self.hidden + self.hidden + (self.layers * 2 * self.head_dim if self.qk_norm else 0)

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (untied), norms and biases: what stays in 16-bit."""
        n = self.vocab * self.hidden * (1 if self.tied else 2) + self.norm_params
        if self.attention_bias:
            n += self.layers * sum(out for _, out in self.linears()[:3])
        return n

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    @property
    def buffer_bytes(self) -> int:
        # rotary inv_freq and original_inv_freq, float32, per rotary embedding
        return self.rotary_embeddings * 2 * (self.head_dim // 2) * 4


def _nf4_tensor_bytes(numel: int, double_quant: bool) -> int:
    blocks = math.ceil(numel / NF4_BLOCK)
    if double_quant:
        absmax = blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + NESTED_CODE_BYTES + 4  # uint8 + nested float32 + map + offset
    else:
        absmax = 4 * blocks
    return numel // 2 + absmax + NF4_CODE_BYTES


def weights_bytes(shape: Shape, variant: str, options: dict[str, Any] | None = None, dtype_bytes: int = 2) -> int:
    """Bytes of the loaded model's weights in this variant, as weights_footprint counts them."""
    options = options or {}
    other = shape.other_params * dtype_bytes + shape.buffer_bytes + (dtype_bytes if shape.scaled_embedding else 0)
    linears = [io for _ in range(shape.layers) for io in shape.linears()]
    if variant == "fp16":
        return shape.linear_params * dtype_bytes + other
    if variant == "int8":  # int8 weights + one float32 scale per output row (SCB)
        return sum(i * o + 4 * o for i, o in linears) + other
    if variant == "nf4":
        return sum(_nf4_tensor_bytes(i * o, bool(options.get("double_quant", True))) for i, o in linears) + other
    if variant.startswith("gptq"):
        group = options.get("group_size", 128)
        total = 0
        for i, o in linears:
            groups = 1 if group == -1 else math.ceil(i / group)
            total += i * o // 2  # qweight: 8 4-bit values per int32
            total += groups * o // 2  # qzeros: 4-bit, packed
            total += groups * o * dtype_bytes  # scales: in the dtype the model computes in (float16 as saved)
            total += i * 4  # g_idx: int32, kept even without act-order
            total += GPTQ_KERNEL_BYTES
        return total + other
    if variant.startswith("gguf-"):
        return _gguf_bytes(shape, variant.removeprefix("gguf-"))
    raise PlanError(f"no weights formula for variant {variant!r}")


def _gguf_bytes(shape: Shape, gguf_type: str) -> int:
    """Every matrix in the type's main ggml type, with llama-quant.cpp's main
    exceptions: the output matrix (the embedding when tied) in Q6_K, and for
    Q4_K_M/Q5_K_M attn_v and ffn_down in Q6_K on its `use_more_bits` layers;
    llama.cpp's fallback where a row length does not fit the block; norms in
    float32. Other mixes' rules (Q3_K_*, IQ*) are not modelled."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    from evalq.backends.gguf import GGUF_TYPES

    if gguf_type not in GGUF_TYPES:
        raise PlanError(f"unknown GGUF type {gguf_type!r}")
    main = GGUF_TYPES[gguf_type][2]

    def matrix(kind: str, rows_len: int, rows: int) -> int:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
        if rows_len % block:
            kind = K_QUANT_FALLBACK.get(kind, "F16")
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
            if rows_len % block:
                block, size = 1, 2
        return rows_len * rows // block * size

    n = shape.layers
    more_bits = gguf_type in ("q4_k_m", "q5_k_m")
    total = 0
    for layer in range(n):
        use_more_bits = layer < n // 8 or layer >= 7 * n // 8 or (layer - n // 8) % 3 == 2
        for j, (i, o) in enumerate(shape.linears()):
            promoted = more_bits and use_more_bits and j in (2, 6)  # v_proj, down_proj
            total += matrix("Q6_K" if promoted else main, i, o)
    output_kind = main if main in ("Q8_0", "F16", "BF16", "F32", "Q6_K") else "Q6_K"
    total += matrix(output_kind, shape.hidden, shape.vocab)  # the output (the embedding when tied)
    if not shape.tied:
        total += matrix(main, shape.hidden, shape.vocab)
    return total + 4 * shape.norm_params


def kv_cache_bytes(shape: Shape, sequence: int, batch: int, dtype_bytes: int = 2) -> int:
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * sequence * batch * dtype_bytes


def activation_bytes(shape: Shape, sequence: int, batch: int, dtype_bytes: int = 2) -> int:
    """The largest transient of one forward pass over `sequence` tokens: the
    MLP's two intermediate tensors, the attention scores (an eager
    implementation materializes them) or the logits with their float32 log-softmax."""
    tokens = sequence * batch
    mlp = 2 * tokens * shape.intermediate * dtype_bytes
    scores = batch * shape.heads * sequence * sequence * 4
    logits = tokens * shape.vocab * (dtype_bytes + 4)
    return max(mlp, scores, logits)


def llama_cpp_activation_bytes(shape: Shape, sequence: int, batch: int) -> int:
    """llama.cpp computes in float32 and asks logits only of each sequence's last
    token: the larger of the MLP's intermediates and the attention scores, plus
    one float32 row of logits per sequence."""
    tokens = sequence * batch
    return max(2 * tokens * shape.intermediate * 4, batch * shape.heads * sequence * sequence * 4) + batch * shape.vocab * 4


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
    activations = (llama_cpp_activation_bytes(shape, sequence, batch) if variant.startswith("gguf-")
                   else activation_bytes(shape, sequence, batch, dtype_bytes))
    return InferencePlan(weights_bytes(shape, variant, options, dtype_bytes), kv_cache_bytes(shape, sequence, batch, dtype_bytes),
                         activations,
                         overhead_bytes(device, variant, dtype_bytes))


def overhead_bytes(device: str, variant: str, dtype_bytes: int = 2) -> int:
    if device == "cpu" and dtype_bytes == 4 and variant in CPU_FLOAT32_OVERHEAD_BYTES:
        return CPU_FLOAT32_OVERHEAD_BYTES[variant]
    table = OVERHEAD_BYTES.get(device, OVERHEAD_BYTES["cpu"])
    return table.get("gguf" if variant.startswith("gguf-") else variant, DEFAULT_OVERHEAD_BYTES)


# --- training ----------------------------------------------------------------

Method = Literal["full", "lora", "qlora"]
Recompute = Literal["none", "selective", "full"]
LORA_TARGETS = 7  # q, k, v, o, gate, up, down
# Measured, not derived: a peft LoRA step on the CPU kept about 40·s·b·h bytes
# (16-bit units) per layer beyond the full fine-tuning activation count
# (SmolLM2, seq 256 and 512); the README's training table shows it.
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


def plan_cell(variant: str, options: dict[str, Any], perf: Any, device: str, config: dict[str, Any]) -> dict[str, Any]:
    """The prediction stored with a cell: weights exactly, and the peak while generating
    (prompt + new tokens at the largest batch of the perf settings)."""
    shape = Shape.from_config(config)
    sequence, batch = perf.prompt_tokens + perf.new_tokens, max(perf.batch_sizes)
    plan = plan_inference(shape, variant, options, device, sequence, batch, cell_dtype_bytes(variant, options, device))
    return {"predicted_weights_bytes": plan.weights_bytes, "predicted_peak_bytes": plan.peak_bytes,
            "kv_cache_bytes": plan.kv_cache_bytes, "activation_bytes": plan.activation_bytes,
            "overhead_bytes": plan.overhead_bytes, "sequence": sequence, "batch": batch, "params": shape.params}


def gpus_needed(plan: dict[str, Any], gpu_bytes: int) -> int | None:
    """GPUs of `gpu_bytes` each for this cell, the model split across them
    (accelerate's device_map="auto"); each GPU pays the framework overhead."""
    usable = gpu_bytes - plan["overhead_bytes"]
    if usable <= 0:
        return None
    return max(1, math.ceil((plan["predicted_peak_bytes"] - plan["overhead_bytes"]) / usable))


def plan_matrix(matrix: Any, configs: dict[str, dict[str, Any]], gpu_bytes: int, gpus: int, device: str = "cuda",
                training: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per cell (inference) or per model (`training` given: plan_training's
    keyword arguments), from config.json alone. `configs`: model display name → config."""
    from evalq.matrix import merged_options
    from evalq.backends.base import get_backend

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
            options = get_backend(variant).Config.model_validate(merged_options(matrix, model, variant)).model_dump(mode="json")
            plan = plan_cell(variant, options, matrix.perf, device, config)
            needed = gpus_needed(plan, gpu_bytes)
            rows.append({**row, **plan, "gpus_needed": needed, "fits": needed is not None and needed <= gpus})
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
