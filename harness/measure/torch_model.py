"""The one interface the measurements drive a loaded model through
(backends.base.Measurable). llama.cpp's model implements it itself; a
transformers model (the fp16, int8, nf4 and gptq-4 backends') gets TorchModel.
`measured()` is the only place that tells the two apart."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

from evalq.backends.base import Measurable


def measured(model: Any, tokenizer: Any = None) -> Measurable:
    """The model as the measurements see it."""
    return model if isinstance(model, Measurable) else TorchModel(model, tokenizer)


def _tensors_of_quant_state(qs: Any):
    """Tensors hidden in a bitsandbytes QuantState (absmax, code, nested state)."""
    if qs is None:
        return
    for value in vars(qs).values():
        if hasattr(value, "untyped_storage"):
            yield value
        elif type(value).__name__ == "QuantState":
            yield from _tensors_of_quant_state(value)


def _inner_tensors(t: Any) -> list[Any] | None:
    """The tensors a wrapper tensor subclass holds (torchao's Int8Tensor: qdata, scale,
    zero point), None for a plain tensor or parameter."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is None:
        return None
    names, _ = flatten(t)
    return [getattr(t, n) for n in names if getattr(t, n, None) is not None]


class TokenClock:
    """A generate() streamer that timestamps the prompt and every new token."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.marks: list[Any] = []

    def _mark(self) -> Any:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self.marks = [self._mark()]

    def put(self, value: Any) -> None:  # first call: the prompt; then one call per step
        self.marks.append(self._mark())

    def end(self) -> None:
        pass

    def seconds(self) -> list[float]:
        """Seconds from start() to each mark."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            first = self.marks[0]
            return [first.elapsed_time(m) / 1000.0 for m in self.marks]
        return [m - self.marks[0] for m in self.marks]


class TorchModel:
    """A transformers model (for GPTQ, the HF model inside gptqmodel's wrapper) and its tokenizer."""

    def __init__(self, module: Any, tokenizer: Any = None):
        self.module = module
        self.tokenizer = tokenizer

    @property
    def device(self) -> str:
        return next(self.module.parameters()).device.type

    @property
    def threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def set_threads(self, n: int) -> None:
        import torch

        torch.set_num_threads(n)

    def lm_eval_lm(self, batch_size: int, scorer: str | None = None) -> Any:
        """lm-eval's model interface: evalq's shared-context scorer, or lm-eval's own HFLM."""
        from lm_eval.models.huggingface import HFLM

        from evalq.measure.scorer import SharedContextLM

        cls = HFLM if scorer == "lm-eval" else SharedContextLM
        return cls(pretrained=self.module, tokenizer=self.tokenizer, batch_size=batch_size)

    def window_logits(self, window: list[int], first_scored: int) -> Any:
        """Logits of the scored positions of one window, in the model's own dtype."""
        import torch

        device = next(self.module.parameters()).device
        keep = len(window) - first_scored  # logits_to_keep counts from the end; the last row predicts nothing scored
        with torch.inference_mode():
            out = self.module(input_ids=torch.tensor([window], device=device), logits_to_keep=keep, use_cache=False)
        return out.logits[0, :-1].detach()

    def cached_logits(self, window: list[int], first_scored: int, chunk: int, kv_type: str) -> tuple[Any, int]:
        """As window_logits, but through a KV cache of `kv_type` (kv_cache.TRANSFORMERS_TYPES):
        the tokens before the scored ones in one pass, then the rest `chunk` at a time, so
        the scored tokens attend to what the cache kept. Also returns the cache's bytes."""
        import inspect

        import torch
        from transformers import DynamicCache, QuantizedCache

        from evalq.kv_cache import TRANSFORMERS_TYPES, transformers_cache_bytes

        spec = TRANSFORMERS_TYPES[kv_type]
        config = self.module.config
        if spec is None:
            cache = DynamicCache(config=config)
        else:
            backend, bits = spec
            cache = QuantizedCache(backend, config, **({"nbits": bits} if bits else {}))
        # transformers 5.24 renamed past_key_values to cache (the old name warns until 5.40)
        name = "cache" if "cache" in inspect.signature(self.module.forward).parameters else "past_key_values"
        ids = torch.tensor([window], device=next(self.module.parameters()).device)
        rows = []
        with torch.inference_mode():
            self.module(input_ids=ids[:, :first_scored], use_cache=True, logits_to_keep=1, **{name: cache})
            for lo in range(first_scored, len(window), chunk):
                rows.append(self.module(input_ids=ids[:, lo : lo + chunk], use_cache=True, **{name: cache}).logits[0])
        return torch.cat(rows)[:-1].detach(), transformers_cache_bytes(cache)

    def generate_timed(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[float]]:
        """One greedy generation; returns (time to first token, per-token decode latencies), seconds."""
        import torch

        tok = self.tokenizer
        pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        input_ids = torch.tensor(prompts, dtype=torch.long).to(self.module.device)
        cuda = input_ids.device.type == "cuda"
        clock = TokenClock(cuda)
        attention_mask = torch.ones_like(input_ids)
        if cuda:
            torch.cuda.synchronize()
        clock.start()
        with torch.inference_mode():
            self.module.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=False,
                num_beams=1,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=pad_token_id,
                streamer=clock,
            )
        t = clock.seconds()
        # t[1] is the prompt handed to the streamer, t[2] the first generated token.
        tokens = t[2:]
        if len(tokens) != new_tokens:
            raise RuntimeError(f"generate produced {len(tokens)} tokens, expected {new_tokens}")
        return tokens[0], [b - a for a, b in zip(tokens, tokens[1:])]

    def weights_bytes(self) -> int:
        seen: set[tuple[int, int]] = set()
        total = 0

        def add(t: Any) -> None:
            nonlocal total
            if t is None or not hasattr(t, "untyped_storage") or t.device.type == "meta":
                return
            inner = _inner_tensors(t)
            if inner is not None:  # a tensor subclass (torchao): its own bytes are its inner tensors'
                for x in inner:
                    add(x)
                return
            key = (t.data_ptr(), t.nbytes)
            if key not in seen:
                seen.add(key)
                total += t.nbytes

        for p in self.module.parameters():
            add(p)
            add(getattr(p, "SCB", None))
            for t in _tensors_of_quant_state(getattr(p, "quant_state", None)):
                add(t)
        for b in self.module.buffers():
            add(b)
        for m in self.module.modules():  # hqq's HQQLinear keeps its scale and zero point in a dict
            meta = getattr(m, "meta", None)
            if isinstance(meta, dict) and type(m).__module__.startswith("hqq."):
                for t in meta.values():
                    add(t)
        return total

    def module_types(self) -> dict[str, int]:
        counts = Counter(type(m).__name__ for m in self.module.modules() if "Linear" in type(m).__name__)
        return dict(sorted(counts.items()))

    def quantized_modules(self) -> int:
        """Linears of a quantization library: its own module class (bitsandbytes, GPTQ), or a
        plain nn.Linear holding a tensor subclass as its weight (torchao)."""
        plain = ("torch.", "transformers.")
        return sum(1 for m in self.module.modules() if "Linear" in type(m).__name__ and (
            not type(m).__module__.startswith(plain) or _inner_tensors(getattr(m, "weight", None)) is not None))

    def tensor_types(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for p in self.module.parameters():
            counts[str(p.dtype).removeprefix("torch.")] += p.numel()
        return dict(counts)

    def release(self) -> None:
        """Nothing held between phases beyond what torch frees itself."""
