"""The plug-in boundary for quantization backends.

A backend module must not import torch or its quantization library at module
level: `evalq validate` and the unit tests read backend configs without them.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class BackendConfig(BaseModel):
    """Base of every backend's options: a misspelled option is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class ForeignModel(Protocol):
    """A loaded model that is not a torch module (llama.cpp's): it drives
    evalq's measurements itself, with their definitions (measure/*)."""

    device: str
    threads: int

    def set_threads(self, n: int) -> None: ...

    def lm_eval_lm(self, batch_size: int) -> Any: ...  # an lm_eval.api.model.LM

    def window_logits(self, window: list[int], first_scored: int) -> Any: ...  # as quality.window_logits

    def generate_timed(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[float]]: ...

    def weights_bytes(self) -> int: ...

    def module_types(self) -> dict[str, int]: ...

    def tensor_types(self) -> dict[str, int]: ...

    def quantized_modules(self) -> int: ...

    def release(self) -> None: ...  # free working buffers between phases


def is_foreign(model: Any) -> bool:
    """True for a model that drives the measurements itself (not a torch module)."""
    return isinstance(model, ForeignModel)


@dataclass
class Loaded:
    """A model loaded in one variant, ready to measure."""

    model: Any  # a transformers PreTrainedModel (for GPTQ, the HF model inside gptqmodel's wrapper), or a ForeignModel
    tokenizer: Any
    dtype: str  # the 16-bit (or 32-bit) dtype of the unquantized parts and activations
    details: dict[str, Any] = field(default_factory=dict)  # threshold, group size, compute dtype...
    prepare_seconds: float = 0.0  # one-off work before loading (quantization), 0 when cached


@dataclass(frozen=True)
class ModelFiles:
    """A model resolved to a local folder of plain HF weights."""

    path: str
    revision: str  # resolved commit or content hash
    trust_remote_code: bool = False


class Backend(Protocol):
    """One precision variant.

    `load` returns the model on `device` ("cpu" or "cuda"); `unavailable_reason`
    says why this variant cannot run here (None when it can), checked before any
    weights are read.
    """

    name: ClassVar[str]
    Config: ClassVar[type[BackendConfig]]
    libraries: ClassVar[tuple[str, ...]]  # distributions whose version changes the numbers

    def unavailable_reason(self, device: str) -> str | None: ...

    def check_model(self, cfg: BackendConfig, model_config: dict[str, Any]) -> str | None: ...

    def load(self, files: ModelFiles, cfg: BackendConfig, device: str, workdir: str) -> Loaded: ...


# Lazy registry: importing a backend only when a matrix names it keeps optional
# dependencies optional.
REGISTRY: dict[str, str] = {
    "fp16": "evalq.backends.fp16:FP16Backend",
    "int8": "evalq.backends.int8:Int8Backend",
    "nf4": "evalq.backends.nf4:NF4Backend",
    "gptq-4": "evalq.backends.gptq:GPTQBackend",
}


def _plugins() -> dict[str, str]:
    """Backends from installed packages (entry point group `evalq.backends`) and
    from $EVALQ_BACKENDS ("name=module:Class,name2=module:Class2")."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="evalq.backends")}
    for item in filter(None, (x.strip() for x in os.environ.get("EVALQ_BACKENDS", "").split(","))):
        name, _, target = item.partition("=")
        if not target or ":" not in target:
            raise ValueError(f"EVALQ_BACKENDS: {item!r} is not name=module:Class")
        found[name.strip()] = target.strip()
    return found


def _registry() -> dict[str, str]:
    return {**REGISTRY, **_plugins()}


# Families: one backend class for many variants, named PREFIX + type ("gguf-q4_k_m").
FAMILIES: dict[str, str] = {
    "gguf-": "evalq.backends.gguf:GGUFBackend",
}


def _family_members() -> dict[str, str]:
    from evalq.backends.gguf import variant_names

    return {name: FAMILIES["gguf-"] for name in variant_names()}


def backend_names() -> list[str]:
    return list({**REGISTRY, **_family_members(), **_plugins()})


def get_backend(name: str) -> Backend:
    registry = _registry()
    if name in registry:
        module_name, class_name = registry[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)()
    target = _family_members().get(name)
    if target is None:
        raise KeyError(name)
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(name)


