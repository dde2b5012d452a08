"""A GGUF model run by llama.cpp (through llama-cpp-python's C API) that evalq's
measurements drive like a transformers model: see `base.Measurable`.

The C API rather than llama-cpp-python's `Llama` class: `Llama(logits_all=True)`
keeps an n_ctx × vocabulary float32 array for its whole life (400 MB for
SmolLM2 at 2,048 tokens), which would count in every phase's memory; here
logits are read per decode call, and each phase gets a context sized for it
(one sequence for scoring; `batch` sequences for timing), the previous one freed.
"""
from __future__ import annotations

import ctypes
import os
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from evalq.cpu import cpu_flags
from evalq.gguf_header import GGUFHeader, read_header
from evalq.threads import available

MAX_DEFAULT_CTX = 8192  # lm-eval's HFLM scores rolling windows of the model's length; capped for the KV cache
UNQUANTIZED_GGML = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}
_log_callback = None  # kept alive: llama.cpp calls it from C


def _lib():
    """llama_cpp with the backend started once and llama.cpp's per-tensor logging
    reduced to its errors."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:
        @llama_cpp.llama_log_callback
        def _errors_only(level, text, user_data):  # noqa: ANN001 - a C callback
            if level == 4:  # GGML_LOG_LEVEL_ERROR
                os.write(2, text)

        _log_callback = _errors_only
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def file_type_name(path: Path | str) -> str | None:
    """The file's llama.cpp type as llama-quantize names it (Q4_K_M, Q8_0, BF16...), from the header."""
    return file_type_of(read_header(Path(path)))


def file_type_of(header: GGUFHeader) -> str | None:
    from gguf.constants import LlamaFileType

    value = header.metadata.get("general.file_type")
    if value is None:
        return None
    try:
        return LlamaFileType(int(value)).name.removeprefix("MOSTLY_")
    except ValueError:
        return str(value)


def quantize(source: str, target: str, ftype_name: str, threads: int | None = None) -> None:
    """threads: None, every core this process may use."""
    L = _lib()
    params = L.llama_model_quantize_default_params()
    params.ftype = getattr(L, "LLAMA_FTYPE_" + ftype_name if ftype_name == "ALL_F32" else "LLAMA_FTYPE_MOSTLY_" + ftype_name)
    params.nthread = threads or available()
    rc = L.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {ftype_name} failed ({rc})")


class LlamaCppTokenizer:
    """The GGUF's own tokenizer behind the part of a transformers tokenizer's
    interface evalq uses. `add_special_tokens` adds BOS only when the GGUF says
    to (tokenizer.ggml.add_bos_token), as transformers follows tokenizer_config."""

    def __init__(self, model: LlamaCppModel):
        L = _lib()
        self._L, self._vocab = L, model.vocab
        bos, eos = L.llama_vocab_bos(model.vocab), L.llama_vocab_eos(model.vocab)
        self.bos_token_id = bos if bos >= 0 else None
        self.eos_token_id = eos if eos >= 0 else None
        self.pad_token_id = None
        self.add_bos = bool(L.llama_vocab_get_add_bos(model.vocab))

    def encode(self, text: str, add_special_tokens: bool = False, split_special_tokens: bool = False) -> list[int]:
        raw = text.encode("utf-8")
        n = len(raw) + 16
        # parse_special: "<|im_end|>" in a text becomes its token, as transformers does
        # unless split_special_tokens (then it is plain text, as llama-perplexity reads its file)
        parse_special = not split_special_tokens
        while True:
            buf = (self._L.llama_token * n)()
            got = self._L.llama_tokenize(self._vocab, raw, len(raw), buf, n, add_special_tokens and self.add_bos, parse_special)
            if got >= 0:
                return list(buf[:got])
            n = -got

    def __call__(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> SimpleNamespace:
        return SimpleNamespace(input_ids=self.encode(text, add_special_tokens, split_special_tokens))

    def decode(self, ids: list[int], special: bool = False) -> str:
        """The text of the ids; special tokens ("<bos>") rendered only when `special`."""
        out = bytearray()
        buf = ctypes.create_string_buffer(256)
        for t in ids:
            n = self._L.llama_token_to_piece(self._vocab, t, buf, len(buf), 0, special)
            out += buf.raw[: max(n, 0)]
        return out.decode("utf-8", errors="replace")


# A shared prefix shorter than this is decoded again from a cleared cache: it saves little (two
# documents' "Question:"), and each document then starts from the same cache layout, on which
# llama.cpp's arithmetic depends (Gemma-3's log-likelihoods moved by up to 2.9 nats otherwise).
MIN_REUSE = 8


class LlamaCppModel:
    """One GGUF model in memory (mmap'd, as llama.cpp serves it) and one context at a time."""

    def __init__(self, path: str, n_gpu_layers: int = 0, n_ctx: int | None = None, n_ubatch: int = 512,
                 extra_buffer_types: bool | None = None, threads: int | None = None):
        """extra_buffer_types: None lets llama.cpp use them except on a CPU with AMX, whose
        kernels crash at the first decode (see backends.gguf.extra_buffer_types). threads: until
        a phase sets its own (set_threads); None, every core this process may use."""
        L = _lib()
        if extra_buffer_types is None:
            extra_buffer_types = "amx_int8" not in cpu_flags()
        self._L = L
        self.path = Path(path)
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 2**31 - 1
        params.use_extra_bufts = extra_buffer_types  # AMX, repacked layouts (see backends.gguf.extra_buffer_types)
        self.model = L.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_layers = L.llama_model_n_layer(self.model)
        self.n_gpu_layers = min(params.n_gpu_layers, self.n_layers + 1) if n_gpu_layers != 0 else 0
        self.device = "cuda" if self.n_gpu_layers else "cpu"
        train = L.llama_model_n_ctx_train(self.model)
        self.n_ctx = n_ctx or min(train, MAX_DEFAULT_CTX)
        self.n_ubatch = n_ubatch
        self.system_info = L.llama_print_system_info().decode().strip()
        self.compute_dtype = "float32"  # ggml's activations; the KV cache is float16
        self.tokenizer = LlamaCppTokenizer(self)
        self.threads = threads or available()
        self._ctx = None
        self._ctx_shape: tuple[int, int, int, str | None] | None = None
        self._cached: list[int] = []  # tokens whose KV the context of sequence 0 holds
        self.decoded_tokens = 0  # tokens run through the model by forward(): what prefix reuse saves
        self._header = read_header(self.path)
        self.file_type = file_type_of(self._header)

    # --- contexts ------------------------------------------------------------

    def _context(self, n_ctx: int, n_seq: int, n_batch: int, kv_type: str | None = None):
        """A context (reused while its shape holds); with kv_type, a KV cache of that
        type for K and V, and flash attention, which llama.cpp needs for a quantized V."""
        shape = (n_ctx, n_seq, n_batch, kv_type)
        if self._ctx is not None and self._ctx_shape == shape:
            return self._ctx
        self.release()
        L = self._L
        params = L.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.n_batch = n_ctx, n_seq, n_batch
        params.n_ubatch = min(self.n_ubatch, n_batch)
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        if kv_type is not None:
            from gguf.constants import GGMLQuantizationType

            params.type_k = params.type_v = GGMLQuantizationType[kv_type.upper()].value
            params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        ctx = L.llama_init_from_model(self.model, params)
        if not ctx:
            cache = f" with a {kv_type} KV cache" if kv_type else ""
            raise MemoryError(f"llama.cpp could not create a context of {n_ctx} tokens × {n_seq} sequences{cache}")
        self._ctx, self._ctx_shape, self._cached = ctx, shape, []
        return ctx

    def release(self) -> None:
        """Free the current context (its KV cache and buffers)."""
        if self._ctx is not None:
            self._L.llama_free(self._ctx)
            self._ctx, self._ctx_shape, self._cached = None, None, []

    def close(self) -> None:
        self.release()
        if self.model:
            self._L.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:  # noqa: D105
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def set_threads(self, n: int) -> None:
        self.threads = n
        if self._ctx is not None:
            self._L.llama_set_n_threads(self._ctx, n, n)

    # --- scoring: logits of one sequence ---------------------------------------

    def forward(self, tokens: list[int], first_output: int, reuse_prefix: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """Run one sequence; yield (position, float32 logits rows) for positions
        first_output..len(tokens)-1, a physical batch at a time. With
        reuse_prefix, the KV of the tokens the previous call shared with this
        one is kept (lm-eval asks the same context with each answer choice)."""
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit the context of {self.n_ctx} (set n_ctx)")
        L = self._L
        ctx = self._context(self.n_ctx, 1, self.n_ubatch)
        mem = L.llama_get_memory(ctx)
        keep = 0
        if reuse_prefix:
            for a, b in zip(self._cached, tokens[:first_output]):
                if a != b:
                    break
                keep += 1
            if keep < MIN_REUSE:
                keep = 0
        if keep:
            L.llama_memory_seq_rm(mem, 0, keep, -1)
        else:
            L.llama_memory_clear(mem, True)
        self._cached = list(tokens[:keep])
        batch = L.llama_batch_init(self.n_ubatch, 0, 1)
        try:
            for lo in range(keep, len(tokens), self.n_ubatch):
                hi = min(lo + self.n_ubatch, len(tokens))
                rows = self._feed(ctx, batch, tokens, lo, hi, first_output)
                self._cached += tokens[lo:hi]
                if rows is not None:
                    yield hi - len(rows), rows
        finally:
            L.llama_batch_free(batch)

    def _feed(self, ctx: Any, batch: Any, tokens: list[int], lo: int, hi: int, first_output: int) -> np.ndarray | None:
        """Decode tokens[lo:hi] of sequence 0 at their positions; the logits rows of those at
        first_output or later (None: none asked)."""
        n_out = 0
        for i, pos in enumerate(range(lo, hi)):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tokens[pos], pos, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = pos >= first_output
            n_out += pos >= first_output
        batch.n_tokens = hi - lo
        self._decode(ctx, batch)
        self.decoded_tokens += hi - lo
        if not n_out:
            return None
        return np.ctypeslib.as_array(self._L.llama_get_logits(ctx), shape=(n_out, self.n_vocab)).copy()

    def _decode(self, ctx: Any, batch: Any) -> None:
        rc = self._L.llama_decode(ctx, batch)
        if rc != 0:
            self._cached = []
            raise RuntimeError(f"llama_decode failed ({rc})" + (": no KV cache slot (context full)" if rc == 1 else ""))

    def window_logits(self, window: list[int], first_scored: int) -> Any:
        """As measure.quality.window_logits: the rows predicting the scored tokens."""
        import torch

        rows = np.concatenate([r for _, r in self.forward(window, first_scored, reuse_prefix=False)])
        return torch.from_numpy(rows[:-1])

    def cached_logits(self, window: list[int], first_scored: int, chunk: int, kv_type: str) -> tuple[Any, int]:
        """As window_logits with a KV cache of `kv_type` (kv_cache.LLAMA_CPP_TYPES), the tokens
        before the scored ones fed a physical batch at a time, then the rest `chunk` at a time.
        Also returns the bytes llama.cpp writes for the sequence's state: the K and V rows in
        their type, and a few bytes of positions per cell."""
        import torch

        L = self._L
        ctx = self._context(-(-len(window) // 256) * 256, 1, self.n_ubatch, kv_type)
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        self._cached = []
        batch = L.llama_batch_init(self.n_ubatch, 0, 1)
        rows = []
        try:
            pieces = [(lo, min(lo + self.n_ubatch, first_scored)) for lo in range(0, first_scored, self.n_ubatch)]
            pieces += [(lo, min(lo + chunk, len(window))) for lo in range(first_scored, len(window), chunk)]
            for lo, hi in pieces:  # a piece is all before first_scored or all after it
                out = self._feed(ctx, batch, window, lo, hi, first_scored)
                if out is not None:
                    rows.append(out)
            size = int(L.llama_state_seq_get_size(ctx, 0))
        finally:
            L.llama_batch_free(batch)
            self.release()
        return torch.from_numpy(np.concatenate(rows)[:-1]), size

    # --- timing: greedy generation, `batch` sequences at once --------------------

    def generate_timed(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[float]]:
        """Greedy generation of new_tokens for every prompt, all sequences in one
        batch per step; returns (time to first token, per-step decode latencies),
        timestamps taken when each step's tokens are known on the host, as the
        transformers path does."""
        L = self._L
        b, n = len(prompts), len(prompts[0])
        per_seq = n + new_tokens
        ctx = self._context(-(-b * per_seq // 256) * 256, b, b * n)
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        self._cached = []
        batch = L.llama_batch_init(max(b * n, b), 0, b)
        try:
            k = 0
            last = []
            for s, prompt in enumerate(prompts):
                for pos, t in enumerate(prompt):
                    batch.token[k], batch.pos[k], batch.n_seq_id[k] = t, pos, 1
                    batch.seq_id[k][0] = s
                    batch.logits[k] = pos == n - 1
                    k += 1
                last.append(k - 1)
            batch.n_tokens = k
            started = time.perf_counter()
            self._decode(ctx, batch)
            nxt = [self._argmax(ctx, i) for i in last]
            marks = [time.perf_counter()]
            for step in range(1, new_tokens):
                for s in range(b):
                    batch.token[s], batch.pos[s], batch.n_seq_id[s] = nxt[s], n + step - 1, 1
                    batch.seq_id[s][0] = s
                    batch.logits[s] = True
                batch.n_tokens = b
                self._decode(ctx, batch)
                nxt = [self._argmax(ctx, s) for s in range(b)]
                marks.append(time.perf_counter())
        finally:
            L.llama_batch_free(batch)
        return marks[0] - started, [y - x for x, y in zip(marks, marks[1:])]

    def _argmax(self, ctx: Any, i: int) -> int:
        return int(np.argmax(np.ctypeslib.as_array(self._L.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,))))

    # --- what was loaded ---------------------------------------------------------

    def weights_bytes(self) -> int:
        return int(self._L.llama_model_size(self.model))

    def tensor_types(self) -> dict[str, int]:
        """Weights per ggml type (the GGUF's own record of what each tensor holds)."""
        counts: Counter[str] = Counter()
        for t in self._header.tensors:
            counts[t.type.name] += int(np.prod(t.shape))
        return dict(counts)

    def module_types(self) -> dict[str, int]:
        """Matrices per ggml type, e.g. {"gguf Q4_K": 151, "gguf Q6_K": 31}."""
        counts = Counter(f"gguf {t.type.name}" for t in self._header.tensors if len(t.shape) >= 2)
        return dict(sorted(counts.items()))

    def quantized_modules(self) -> int:
        return sum(1 for t in self._header.tensors if len(t.shape) >= 2 and t.type.name not in UNQUANTIZED_GGML)

    def lm_eval_lm(self, batch_size: int, scorer: str | None = None) -> Any:
        from evalq.backends.llamacpp_lm import LlamaCppLM

        return LlamaCppLM(self, batch_size)
