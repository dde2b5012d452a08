"""A decoder-only transformer as config.json describes it, and the sizes that
follow from its shape alone: the KV cache and the activations of one forward
pass. Backends (their weights formulas) and the planner build on it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
DEFAULT_OVERHEAD_BYTES = 1_500_000_000  # a variant whose backend has no fitted overhead


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

    def all_linears(self) -> list[tuple[int, int]]:
        """(in_features, out_features) of every layer's projections: what a method quantizes."""
        return [io for _ in range(self.layers) for io in self.linears()]

    def unquantized_bytes(self, dtype_bytes: int, buffer_dtype_bytes: int = 4) -> int:
        """What every weight-only method leaves in the model's dtype: embeddings, norms,
        biases, lm_head, buffers (Gemma keeps √hidden as a 16-bit buffer). The rotary
        buffers stay float32 unless a method casts them (`buffer_dtype_bytes`)."""
        return (self.other_params * dtype_bytes + self.rotary_buffer_values * buffer_dtype_bytes
                + (dtype_bytes if self.scaled_embedding else 0))

    @property
    def rotary_buffer_values(self) -> int:
        # rotary inv_freq and original_inv_freq, per rotary embedding
        return self.rotary_embeddings * 2 * (self.head_dim // 2)


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
