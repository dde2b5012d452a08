"""gguf-<type>: a llama.cpp quantization (gguf-q8_0, gguf-q4_k_m, ...) run through llama-cpp-python.

The GGUF file is either given (`checkpoint`: a local .gguf, or owner/repo/file.gguf
on the hub) or made here from the model's weights with llama.cpp's own tools:
its convert_hf_to_gguf.py writes an unquantized GGUF in the weights' own
precision (F32 from float32 weights, BF16 from bfloat16: never through a float16
copy that would round them and overflow above 65,504; cached per model), then
llama_model_quantize writes the type asked for (cached under a content key,
like the GPTQ checkpoints). The converter is not part of llama-cpp-python's
wheel: `evalq gguf-converter` extracts the one matching the installed version
from its source distribution (backends.gguf_converter).
"""
from __future__ import annotations

import hashlib
import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.backends.gguf_converter import CONVERTER_ENV, convert_into, converter_path
from evalq.backends.hf import missing_module
from evalq.cache import build_once, cache_dir, file_sha256
from evalq.cpu import cpu_flags
from evalq.resources import Resources

PREFIX = "gguf-"
# type → (llama.cpp's LLAMA_FTYPE_MOSTLY_* name, nominal bits per weight, the ggml type most weights get)
GGUF_TYPES: dict[str, tuple[str, int, str]] = {
    "f32": ("ALL_F32", 32, "F32"),
    "f16": ("F16", 16, "F16"),
    "bf16": ("BF16", 16, "BF16"),
    "q8_0": ("Q8_0", 8, "Q8_0"),
    "q6_k": ("Q6_K", 6, "Q6_K"),
    "q5_k_m": ("Q5_K_M", 5, "Q5_K"),
    "q5_k_s": ("Q5_K_S", 5, "Q5_K"),
    "q5_1": ("Q5_1", 5, "Q5_1"),
    "q5_0": ("Q5_0", 5, "Q5_0"),
    "q4_k_m": ("Q4_K_M", 4, "Q4_K"),
    "q4_k_s": ("Q4_K_S", 4, "Q4_K"),
    "q4_1": ("Q4_1", 4, "Q4_1"),
    "q4_0": ("Q4_0", 4, "Q4_0"),
    "iq4_nl": ("IQ4_NL", 4, "IQ4_NL"),
    "iq4_xs": ("IQ4_XS", 4, "IQ4_XS"),
    "q3_k_l": ("Q3_K_L", 3, "Q3_K"),
    "q3_k_m": ("Q3_K_M", 3, "Q3_K"),
    "q3_k_s": ("Q3_K_S", 3, "Q3_K"),
    "q2_k": ("Q2_K", 2, "Q2_K"),
}
UNQUANTIZED = ("f32", "f16", "bf16")  # written by the converter itself
SHAPE_BY_BITS = {32: "star", 16: "hexagon", 8: "square", 6: "pentagon", 5: "triangle-down", 4: "triangle", 3: "diamond", 2: "circle"}
COLOURS = {"f32": "#0e8f9e", "f16": "#3a6fd8", "bf16": "#7b4fd6", "q8_0": "#8c564b", "q6_k": "#b8860b",
           "q5_k_m": "#2e8b57", "q5_k_s": "#6b8e23", "q5_1": "#20a09a", "q5_0": "#4682b4", "q4_k_m": "#e377c2",
           "q4_k_s": "#d35400", "q4_1": "#16a085", "q4_0": "#9b59b6", "iq4_nl": "#2980b9", "iq4_xs": "#a0522d",
           "q3_k_l": "#c71585", "q3_k_m": "#808000", "q3_k_s": "#5f9ea0", "q2_k": "#dc143c"}
# llama.cpp quantizes a matrix whose rows are not a multiple of a k-quant's 256
# with another type (llama-quant.cpp); e.g. SmolLM2's 576-wide rows: Q4_K → Q5_0
K_QUANT_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "IQ4_XS": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def variant_names() -> list[str]:
    return [PREFIX + t for t in GGUF_TYPES]


class GGUFConfig(BackendConfig):
    checkpoint: str | None = Field(None, description="a GGUF file of this type: a local path, or owner/repo/file.gguf on the hub")
    outtype: Literal["auto", "f16", "bf16", "f32"] = Field(
        "auto", description="the unquantized GGUF the converter writes before quantizing (auto: the weights' own dtype)")
    n_gpu_layers: int = Field(-1, ge=-1, description="layers offloaded on CUDA (-1: all); always 0 on the CPU")
    n_ctx: int | None = Field(None, gt=0, description="context of the evaluation pass (default: the model's training context, at most 8192)")
    n_ubatch: int = Field(512, gt=0, description="tokens per physical batch")
    # unset (None) and False mean the same, so cells keyed before this option keep their keys
    amx: bool | None = Field(None, description="use llama.cpp's AMX kernels on a CPU that has AMX (off by default: they crash on some, llama.cpp#20824)")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith(".gguf"):
            raise ValueError(f"checkpoint {value!r} is not a .gguf file")
        if Path(value).is_absolute() or value.startswith("."):
            if not Path(value).is_file():
                raise ValueError(f"GGUF file {value} does not exist")
        return value


class GGUFBackend(BackendBase):
    Config: ClassVar[type[BackendConfig]] = GGUFConfig
    libraries: ClassVar[tuple[str, ...]] = ("llama_cpp_python",)
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("llama.cpp", "file_type"), ("GPU layers", "n_gpu_layers"))
    # the worker (torch imported) and llama.cpp's context beside the mapped weights;
    # the mean of the demo's four GGUF cells (0.50-0.60 GB)
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 547_000_000, "cuda": 1_000_000_000}
    kv_runtime: ClassVar[str] = "llama.cpp"

    def __init__(self, name: str = "gguf-q4_k_m"):
        gguf_type = name.removeprefix(PREFIX)
        if not name.startswith(PREFIX) or gguf_type not in GGUF_TYPES:
            raise KeyError(name)
        self.name = name
        self.gguf_type = gguf_type
        self.ftype_name, self.bits, self.ggml_type = GGUF_TYPES[gguf_type]
        self.style = (COLOURS[gguf_type], "open-" + SHAPE_BY_BITS[GGUF_TYPES[gguf_type][1]])

    def rank(self) -> tuple:
        return (1, -self.bits, self.name)  # after the transformers variants, most bits first

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        return gguf_weights_bytes(shape, self.gguf_type)

    def activation_bytes(self, shape: Any, sequence: int, batch: int, dtype_bytes: int) -> int:
        from evalq.architecture import llama_cpp_activation_bytes

        return llama_cpp_activation_bytes(shape, sequence, batch)

    @staticmethod
    def variant_names() -> list[str]:
        return variant_names()

    def unavailable_reason(self, device: str) -> str | None:
        missing = missing_module("llama_cpp", "pip install 'evalq[gguf]', see docs/variants.md: it builds llama.cpp")
        if missing or device != "cuda":
            return missing
        import llama_cpp

        if not llama_cpp.llama_supports_gpu_offload():
            return ("this llama-cpp-python was built for the CPU only: reinstall it with "
                    "CMAKE_ARGS='-DGGML_CUDA=on' pip install --force-reinstall --no-cache-dir llama-cpp-python")
        return None

    def check_model(self, cfg: GGUFConfig, model_config: dict[str, Any]) -> str | None:
        if cfg.checkpoint:
            return None
        converter = converter_path()
        if converter is None or not converter.is_file():
            return (f"llama.cpp's converter is not installed ({converter}): run `evalq gguf-converter`, "
                    f"or set {CONVERTER_ENV} to convert_hf_to_gguf.py of a llama.cpp checkout, or give a checkpoint")
        return None

    def load(self, files: ModelFiles, cfg: GGUFConfig, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        from evalq.backends.llamacpp import LlamaCppModel

        started = time.perf_counter()
        built = False
        intermediate = None  # the unquantized GGUF quantized from, when made here
        if cfg.checkpoint:
            path = resolve_checkpoint(cfg.checkpoint)
            source = cfg.checkpoint
        else:
            converter = converter_path()
            assert converter is not None
            outtype = source_outtype(Path(files.path)) if cfg.outtype == "auto" else cfg.outtype
            wide = cache_dir("llamacpp") / wide_key(files, outtype, converter)
            built = build_once(wide, convert_into, files.path, outtype, str(converter))
            intermediate = json.loads((wide / "evalq-gguf.json").read_text())["outtype"]
            if self.gguf_type in UNQUANTIZED and self.gguf_type == intermediate:
                path = wide / "model.gguf"
            else:
                target = cache_dir("llamacpp") / quantized_key(wide.name, self.gguf_type)
                built = build_once(target, _quantize_into, str(wide / "model.gguf"), self.ftype_name,
                                   resources.threads_for("prepare")) or built
                path = target / "model.gguf"
            source = "converted here from the model's weights"
        n_gpu_layers = cfg.n_gpu_layers if device == "cuda" else 0
        extra_buffers = extra_buffer_types(cfg, cpu_flags())
        model = LlamaCppModel(str(path), n_gpu_layers=n_gpu_layers, n_ctx=cfg.n_ctx, n_ubatch=cfg.n_ubatch,
                              extra_buffer_types=extra_buffers, threads=resources.threads_for("prepare"))
        found = model.file_type
        if found and found != self.ftype_name:
            model.close()
            raise ValueError(f"{self.name}: {path} holds {found} weights, not {self.ftype_name}")
        details = {
            "dtype": model.compute_dtype,
            "bits": self.bits,
            "gguf_type": self.gguf_type,
            "file_type": found,
            "file": str(path),
            "file_bytes": path.stat().st_size,
            "source": source,
            "intermediate": intermediate,
            "n_gpu_layers": model.n_gpu_layers,
            "layers": model.n_layers,
            "n_ctx": model.n_ctx,
            "cpu_features": model.system_info,
            # False: llama.cpp's AMX and repacked-layout CPU buffers off (a CPU with AMX, amx not asked for)
            "extra_buffer_types": extra_buffers,
            "llama_cpp_python": version("llama_cpp_python"),
        }
        prepare = time.perf_counter() - started if built else 0.0
        return Loaded(model, model.tokenizer, model.compute_dtype, details, prepare)


def extra_buffer_types(cfg: GGUFConfig, flags: frozenset[str]) -> bool:
    """Whether llama.cpp may place weights in its extra CPU buffer types. On a CPU
    with AMX those include the AMX kernels, which crashed (SIGSEGV at the first
    llama_decode of a Q8_0 or Q4_K_M model) on an Intel Sapphire Rapids VM with
    llama-cpp-python 0.3.36, as in llama.cpp#20824; llama.cpp can only turn the
    extra types off together, so on such a CPU the repacked Q4 layouts go too,
    unless the matrix asks for `amx: true`. Elsewhere nothing changes."""
    return bool(cfg.amx) or "amx_int8" not in flags


def resolve_checkpoint(checkpoint: str) -> Path:
    path = Path(checkpoint)
    if path.is_file():
        return path
    repo, _, filename = checkpoint.rpartition("/")
    if repo.count("/") < 1:
        raise ValueError(f"GGUF checkpoint {checkpoint!r} is neither a file nor owner/repo/file.gguf")
    owner_repo = "/".join(repo.split("/")[:2])
    sub = "/".join(repo.split("/")[2:])
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(owner_repo, f"{sub}/{filename}" if sub else filename))


# safetensors' dtype names → the converter's --outtype that keeps them exact
SOURCE_OUTTYPES = {"F32": "f32", "BF16": "bf16", "F16": "f16", "F64": "f32"}


def source_outtype(model_dir: Path) -> str:
    """The converter's --outtype for these weights: the floating dtype holding most
    of their bytes (the safetensors headers; else config.json's dtype). Not the
    converter's own `auto`, which turns float32 weights into a float16 copy."""
    by_dtype: dict[str, int] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with f.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, t in header.items():
            if name != "__metadata__" and t["dtype"] in SOURCE_OUTTYPES:
                lo, hi = t["data_offsets"]
                by_dtype[t["dtype"]] = by_dtype.get(t["dtype"], 0) + hi - lo
    if by_dtype:
        return SOURCE_OUTTYPES[max(by_dtype, key=by_dtype.get)]
    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return {"bfloat16": "bf16", "float16": "f16"}.get(dtype, "f32")


def wide_key(files: ModelFiles, outtype: str, converter: Path) -> str:
    payload = {"revision": files.revision, "outtype": outtype, "converter": file_sha256(converter),
               "llama_cpp_python": version("llama_cpp_python")}
    return "wide-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def quantized_key(wide: str, gguf_type: str) -> str:
    payload = {"from": wide, "type": gguf_type, "llama_cpp_python": version("llama_cpp_python")}
    return f"{gguf_type}-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _quantize_into(out: Path, source: str, ftype_name: str, threads: int) -> None:
    """llama.cpp's own quantizer (llama_model_quantize), as llama-quantize runs it."""
    from evalq.backends.llamacpp import quantize

    quantize(source, str(out / "model.gguf"), ftype_name, threads)
    (out / "evalq-gguf.json").write_text(json.dumps({"from": source, "ftype": ftype_name}, indent=1))


def gguf_weights_bytes(shape: Any, gguf_type: str) -> int:
    """Every matrix in the type's main ggml type, with llama-quant.cpp's main
    exceptions: the output matrix (the embedding when tied) in Q6_K, and for
    Q4_K_M/Q5_K_M attn_v and ffn_down in Q6_K on its `use_more_bits` layers;
    llama.cpp's fallback where a row length does not fit the block; norms in
    float32. Other mixes' rules (Q3_K_*, IQ*) are not modelled."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

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
