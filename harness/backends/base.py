"""The plug-in boundary for quantization backends.

A backend module must not import torch or its quantization library at module
level: `evalq validate` and the unit tests read backend configs without them.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from evalq.resources import Resources

# Rows of vocabulary-wide float64 arrays turned at a time (262k vocabulary: 134 MB each):
# measure/quality's KL divergence and the llama.cpp scorer's log-softmax.
ROW_CHUNK = 64


class BackendConfig(BaseModel):
    """Base of every backend's options: a misspelled option is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class Measurable(Protocol):
    """What the measurements (measure/*) ask of a loaded model. llama.cpp's model
    implements it itself; a transformers model is wrapped in measure's TorchModel."""

    device: str
    threads: int

    def set_threads(self, n: int) -> None: ...

    def lm_eval_lm(self, batch_size: int, scorer: str | None = None) -> Any: ...  # an lm_eval.api.model.LM (scorer: eval.scorer)

    def window_logits(self, window: list[int], first_scored: int) -> Any: ...  # as quality.window_logits

    # as window_logits through a KV cache of that type, fed `chunk` tokens at a time; and the cache's bytes
    def cached_logits(self, window: list[int], first_scored: int, chunk: int, kv_type: str) -> tuple[Any, int]: ...

    def generate_timed(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[float]]: ...

    def weights_bytes(self) -> int: ...

    def module_types(self) -> dict[str, int]: ...

    def tensor_types(self) -> dict[str, int]: ...

    def quantized_modules(self) -> int: ...

    def release(self) -> None: ...  # free working buffers between phases


@dataclass
class Loaded:
    """A model loaded in one variant, ready to measure."""

    model: Any  # a transformers PreTrainedModel (for GPTQ, the HF model inside gptqmodel's wrapper), or a Measurable
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

    `load` returns the model on `resources.device` ("cpu" or "cuda"), quantizing with
    `resources.threads_for("prepare")` CPU threads (evalq.resources; a backend written to the
    older `load(files, cfg, device, workdir)` still works: see `load_variant`); `unavailable_reason`
    says why this variant cannot run here (None when it can), checked before any
    weights are read. Everything else evalq knows about a variant is asked of
    its backend too (defaults in `BackendBase`): the planner's bytes per weight
    and overhead, the leaderboard's order, detail fields and marker, the
    worker's calibration text.
    """

    name: ClassVar[str]
    Config: ClassVar[type[BackendConfig]]
    libraries: ClassVar[tuple[str, ...]]  # distributions whose version changes the numbers
    detail_fields: ClassVar[tuple[tuple[str, str], ...]]  # (label, details key) for the leaderboard
    style: ClassVar[tuple[str, str]]  # chart colour and marker (charts.SHAPES; "open-" first: outlined)
    kv_runtime: ClassVar[str]  # whose KV-cache types the variant takes: "transformers" or "llama.cpp"

    def unavailable_reason(self, device: str) -> str | None: ...

    def check_model(self, cfg: BackendConfig, model_config: dict[str, Any]) -> str | None: ...

    def load(self, files: ModelFiles, cfg: BackendConfig, resources: Resources, workdir: str) -> Loaded: ...

    def rank(self) -> tuple: ...

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int: ...

    def activation_bytes(self, shape: Any, sequence: int, batch: int, dtype_bytes: int) -> int: ...

    def overhead(self, device: str, dtype_bytes: int) -> int: ...

    def calibration_windows(self, cfg: BackendConfig, tokenizer: Any) -> list[list[int]] | None: ...


class BackendBase:
    """Defaults of the Backend protocol: a new variant subclasses this and
    overrides what differs (at least name, Config, load and weights_bytes)."""

    name: ClassVar[str]
    Config: ClassVar[type[BackendConfig]] = BackendConfig
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    style: ClassVar[tuple[str, str]] = ("#7f7f7f", "circle")
    # The framework's own memory beside weights, KV cache and activations while
    # generating, by device (planner; fitted values and how in docs/metrics.md "Memory
    # planner"); `cpu_float32` where a CPU without native bf16 keeps more.
    overhead_bytes: ClassVar[dict[str, int]] = {}
    cpu_float32_overhead_bytes: ClassVar[int | None] = None
    rank_key: ClassVar[tuple] = (2, 0)  # leaderboard order: lower first; ties by name
    kv_runtime: ClassVar[str] = "transformers"  # whose KV-cache types the variant takes (kv_cache.RUNTIMES)

    def unavailable_reason(self, device: str) -> str | None:
        return None

    def check_model(self, cfg: BackendConfig, model_config: dict[str, Any]) -> str | None:
        return None

    def rank(self) -> tuple:
        return (*self.rank_key, self.name)

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        from evalq.architecture import PlanError

        raise PlanError(f"no weights formula for variant {self.name!r}")

    def activation_bytes(self, shape: Any, sequence: int, batch: int, dtype_bytes: int) -> int:
        from evalq.architecture import activation_bytes

        return activation_bytes(shape, sequence, batch, dtype_bytes)

    def overhead(self, device: str, dtype_bytes: int) -> int:
        from evalq.architecture import DEFAULT_OVERHEAD_BYTES

        if device == "cpu" and dtype_bytes == 4 and self.cpu_float32_overhead_bytes:
            return self.cpu_float32_overhead_bytes
        return self.overhead_bytes.get(device, self.overhead_bytes.get("cpu", DEFAULT_OVERHEAD_BYTES))

    def calibration_windows(self, cfg: BackendConfig, tokenizer: Any) -> list[list[int]] | None:
        """Token windows the variant was calibrated on (None: no calibration)."""
        return None


@functools.lru_cache(maxsize=None)
def _takes_device(load: Any) -> bool:
    """A load method written to the protocol before Resources: (files, cfg, device, workdir)."""
    params = [p for p in inspect.signature(load).parameters.values() if p.name != "self"]
    return len(params) >= 3 and params[2].name == "device"


def load_variant(backend: Backend, files: ModelFiles, cfg: BackendConfig, resources: Resources, workdir: str) -> Loaded:
    """backend.load with the cell's Resources; a plug-in written to the older protocol gets
    the device name in their place (its quantizer then sizes its own thread pool)."""
    if _takes_device(type(backend).load):
        return backend.load(files, cfg, resources.device, workdir)
    return backend.load(files, cfg, resources, workdir)


# The variant every other is compared against (paired quality, recovery, deltas).
BASELINE_VARIANT = "fp16"

# Lazy registry: importing a backend only when a matrix names it keeps optional
# dependencies optional.
REGISTRY: dict[str, str] = {
    "fp16": "evalq.backends.fp16:FP16Backend",
    "int8": "evalq.backends.int8:Int8Backend",
    "nf4": "evalq.backends.nf4:NF4Backend",
    "gptq-4": "evalq.backends.gptq:GPTQBackend",
    "awq-4": "evalq.backends.awq:AWQBackend",
}


@functools.lru_cache(maxsize=1)
def _installed_plugins() -> dict[str, str]:
    # Once per process: scanning every installed distribution's entry points takes
    # ~10 ms, and the leaderboard asks for a variant's backend thousands of times.
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="evalq.backends")}


def _plugins() -> dict[str, str]:
    """Backends from installed packages (entry point group `evalq.backends`) and
    from $EVALQ_BACKENDS ("name=module:Class,name2=module:Class2")."""
    found = dict(_installed_plugins())
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
    "torchao-": "evalq.backends.torchao:TorchAoBackend",
    "hqq-": "evalq.backends.hqq:HQQBackend",
}


def _family_members() -> dict[str, str]:
    """Each family's class lists its members (`variant_names()`), imported here by
    name like every backend: base sits below the backends it registers."""
    out: dict[str, str] = {}
    for target in FAMILIES.values():
        module_name, class_name = target.split(":")
        for name in getattr(importlib.import_module(module_name), class_name).variant_names():
            out[name] = target
    return out


def backend_names() -> list[str]:
    return list({**REGISTRY, **_family_members(), **_plugins()})


def variant_rank(name: str) -> tuple:
    """Display order of a variant (its backend's `rank`); unknown names last, by name."""
    return _display(name, os.environ.get("EVALQ_BACKENDS", ""))[0]


def variant_style(name: str) -> tuple[str, str]:
    """Chart colour and marker of a variant (its backend's `style`); unknown names grey circles."""
    return _display(name, os.environ.get("EVALQ_BACKENDS", ""))[1]


@functools.lru_cache(maxsize=1024)
def _display(name: str, plugins: str) -> tuple[tuple, tuple[str, str], tuple[tuple[str, str], ...]]:
    """What the leaderboard asks of a variant's backend (rank, style, detail fields), once per
    name and plug-in setting: a site of 10,000 rows asks ~50,000 times."""
    try:
        backend = get_backend(name)
    except KeyError:
        return (9, 0, name), BackendBase.style, ()
    return backend.rank(), backend.style, backend.detail_fields


def variant_details(name: str, details: dict[str, Any]) -> str:
    """The leaderboard's details cell: the backend's detail fields that were recorded, else the dtype."""
    fields = _display(name, os.environ.get("EVALQ_BACKENDS", ""))[2]
    parts = []
    for label, key in fields:
        value = details.get(key)
        if value is not None and value != []:
            parts.append(f"{label} {', '.join(value) if isinstance(value, list) else value}")
    return ", ".join(parts) or str(details.get("dtype") or "")


@functools.lru_cache(maxsize=None)
def _with_defaults(cls: type) -> type:
    """A plug-in written to the protocol alone gets BackendBase's defaults for what it leaves out."""
    return cls if issubclass(cls, BackendBase) else type(cls.__name__, (cls, BackendBase), {"__module__": cls.__module__})


def get_backend(name: str) -> Backend:
    registry = _registry()
    if name in registry:
        module_name, class_name = registry[name].split(":")
        return _with_defaults(getattr(importlib.import_module(module_name), class_name))()
    target = _family_members().get(name)
    if target is None:
        raise KeyError(name)
    module_name, class_name = target.split(":")
    return _with_defaults(getattr(importlib.import_module(module_name), class_name))(name)


