"""lm-eval's model interface over a llama.cpp model: log-likelihoods (multiple
choice, rolling perplexity) from the model's own logits, and greedy generation.

Not lm-eval's `gguf` model type: that one talks to a running llama.cpp server
over HTTP and reads the server's top-k `logprobs`, so a continuation token
outside the top k has no log-likelihood and `loglikelihood_rolling` is not
implemented; here every token's log-probability comes from the full row of logits.
Tokenization is the GGUF's own, prefixed as HFLM prefixes (BOS, else EOS).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm

from evalq.backends.base import ROW_CHUNK

DEFAULT_MAX_GEN_TOKS = 256


def target_logprobs(rows: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log P(target) of each row (log-softmax in float64) and whether it is the row's argmax."""
    logp, greedy = np.empty(len(rows)), np.empty(len(rows), dtype=bool)
    for lo in range(0, len(rows), ROW_CHUNK):
        r = rows[lo : lo + ROW_CHUNK].astype(np.float64)
        t = targets[lo : lo + ROW_CHUNK]
        top = r.max(axis=-1)
        lse = top + np.log(np.exp(r - top[:, None]).sum(axis=-1))
        picked = r[np.arange(len(r)), t]
        logp[lo : lo + len(r)] = picked - lse
        greedy[lo : lo + len(r)] = picked >= top
    return logp, greedy


class LlamaCppLM(TemplateLM):
    def __init__(self, model: Any, batch_size: int = 1, reuse_prefix: bool = True):
        super().__init__()
        self.model = model
        # the KV of the context the previous request shared is kept: each question's
        # context runs once for all its choices (off: every request from its first token)
        self.reuse_prefix = reuse_prefix
        self.tok = model.tokenizer
        self.batch_size = batch_size  # llama.cpp scores one sequence at a time; kept for the record

    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id

    @property
    def max_length(self) -> int:
        return self.model.n_ctx

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        # As HFLM: by default the tokenizer's own rule (Gemma's GGUF adds BOS, SmolLM2's
        # does not), unless the text already starts with BOS
        if add_special_tokens is None:
            bos = self.tok.decode([self.tok.bos_token_id], special=True) if self.tok.bos_token_id is not None else None
            add_special_tokens = not (bos and string.startswith(bos))
        return self.tok.encode(string, add_special_tokens=add_special_tokens)

    def tok_decode(self, tokens: list[int], **kwargs: Any) -> str:
        return self.tok.decode(tokens)

    def _score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """Sum of log P(continuation | context) and whether greedy decoding gives it."""
        tokens = (context + continuation)[-(self.max_length + 1) :]
        inputs, n = tokens[:-1], len(continuation)
        first = len(inputs) - n
        target = np.asarray(continuation)
        total, greedy = 0.0, True
        for pos, rows in self.model.forward(inputs, first, reuse_prefix=self.reuse_prefix):
            logp, top = target_logprobs(rows, target[pos - first : pos - first + len(rows)])
            total += float(logp.sum())
            greedy = greedy and bool(top.all())
        return total, greedy

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        # Sorted by context, so the choices of one question reuse its context's KV
        order = sorted(range(len(requests)), key=lambda i: (requests[i][1], requests[i][2]))
        out: list[Any] = [None] * len(requests)
        for i in tqdm(order, disable=disable_tqdm, desc="llama.cpp loglikelihood"):
            cache_key, context, continuation = requests[i]
            out[i] = self._score(context, continuation)
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, out[i])
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        results = []
        for req in tqdm(requests, disable=disable_tqdm, desc="llama.cpp loglikelihood_rolling"):
            (string,) = req.args
            windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1))
            total = sum(self._score(context, continuation)[0] for context, continuation in windows)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            results.append(total)
        return results

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        eos = self.tok.decode([self.eot_token_id], special=True) if self.eot_token_id is not None else None
        results = []
        for req in tqdm(requests, disable=disable_tqdm, desc="llama.cpp generate_until"):
            context, gen_kwargs = req.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), DEFAULT_MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = kwargs.pop("max_gen_toks")
            tokens = self.tok_encode(context)[-(self.max_length - max_gen) :]
            generated: list[int] = []
            text = ""
            for _ in range(max_gen):
                rows = np.concatenate([r for _, r in self.model.forward(tokens + generated, len(tokens) + len(generated) - 1)])
                nxt = int(rows[-1].argmax())  # greedy, as lm-eval's tasks ask (temperature 0)
                if nxt == self.eot_token_id:
                    break
                generated.append(nxt)
                text = self.tok_decode(generated)
                if any(s in text for s in until):
                    break
            for s in until:
                text = text.split(s)[0]
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            results.append(text)
        return results
