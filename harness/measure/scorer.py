"""evalq's multiple-choice scorer: lm-eval's HFLM with `_loglikelihood_tokens`
answered without the work lm-eval does and never reads.

lm-eval (HFLM) runs every (context, continuation) request as its own padded
sequence and takes a full-vocabulary `log_softmax` at every position, although
only the continuation's positions are read; the choices of one question each
recompute the shared context. Here, per batch of requests:

- consecutive requests whose contexts share their leading tokens form a group
  (the choices of one question; Winogrande's two contexts); the shared tokens,
  short of every context's last one, run once and their KV cache is copied to
  each request;
- each request runs only the rest of its context and its continuation (less
  its last token) on that cache;
- the output layer and the `log_softmax` run only at the continuation's
  positions (hidden states gathered before the head).

Tasks, documents, prompts, few-shot and metrics stay lm-eval's: only the model's
answers to loglikelihood requests are computed differently. The sums are taken
in float32 (or `softmax_dtype`): lm-eval's default takes them in the model's
dtype, and a bfloat16 sum near -200 is rounded to a whole nat. Against lm-eval
with `softmax_dtype=float32` the same weights give the same answers
(tests/integration/test_scorer_exact.py).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

MAX_BATCH_TOKENS = 8192  # padded tokens per forward: the prefix pass and the choices' pass each stay under it

Request = tuple[tuple[str, str], list[int], list[int]]


MIN_SHARED = 8  # consecutive requests whose contexts share at least this many leading tokens run them once


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_requests(seqs: list[tuple[list[int], list[int]]]) -> list[tuple[int, list[int]]]:
    """(shared prefix length, request indices) per group of consecutive requests
    (lm-eval lists a document's choices one after another) whose contexts share
    their leading tokens: the choices of one question (the same context), or
    Winogrande's two contexts that differ from the blank on. The prefix stops one
    token short of every member's context, whose last token predicts the first
    continuation token."""
    groups: list[tuple[int, list[int]]] = []
    for i, (ctx, _) in enumerate(seqs):
        if groups:
            p, members = groups[-1]
            first = seqs[members[0]][0]
            shared = min(p, shared_prefix(first, ctx), len(ctx) - 1)
            if shared >= min(MIN_SHARED, len(first) - 1, len(ctx) - 1) and shared > 0:
                groups[-1] = (shared, members + [i])
                continue
        groups.append((len(ctx) - 1, [i]))
    return groups


def plan_batches(groups: list[tuple[int, list[int]]], lengths: list[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices of `groups` per batch, longest first: each batch within `max_rows`
    requests and `max_tokens` padded tokens (a larger group alone in its batch).
    `lengths` is each request's context + continuation length."""
    def suffix(g: int) -> int:
        p, members = groups[g]
        return max(lengths[i] for i in members) - p

    order = sorted(range(len(groups)), key=lambda g: -(groups[g][0] + suffix(g)))
    batches: list[list[int]] = []
    current: list[int] = []
    rows = prefix = longest = 0
    for g in order:
        p, members = groups[g]
        new = (rows + len(members), max(prefix, p), max(longest, suffix(g)))
        if current and (new[0] > max_rows or new[0] * (new[1] + new[2]) > max_tokens):
            batches.append(current)
            current, new = [], (len(members), p, suffix(g))
        current.append(g)
        rows, prefix, longest = new
    if current:
        batches.append(current)
    return batches


class SharedContextLM(HFLM):
    """HFLM whose loglikelihood requests are scored with shared contexts (see module doc)."""

    def __init__(self, *args: Any, max_batch_tokens: int = MAX_BATCH_TOKENS, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_batch_tokens = max_batch_tokens
        decoder = self.model.get_decoder()
        self._decoder = decoder
        self._head = self.model.get_output_embeddings()
        self._softcap = getattr(self.model.config, "final_logit_softcapping", None)
        # transformers 5.24 renamed past_key_values to cache
        self._cache_arg = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if self.backend != "causal" or self._head is None:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        max_rows = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 0) or 64
        seqs: list[tuple[list[int], list[int]]] = []
        for _, ctx, cont in requests:
            assert ctx and cont and len(cont) <= self.max_length
            if len(ctx) + len(cont) > self.max_length + 1:  # lm-eval truncates from the left
                ctx = (ctx + cont)[-(self.max_length + 1):][: -len(cont)]
            seqs.append((ctx, cont))
        groups = group_requests(seqs)
        lengths = [len(c) + len(t) - 1 for c, t in seqs]
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Scoring loglikelihood requests")
        for batch in plan_batches(groups, lengths, max_rows, self.max_batch_tokens):
            members = [(k, i) for k, g in enumerate(batch) for i in groups[g][1]]
            prefixes = [seqs[groups[g][1][0]][0][: groups[g][0]] for g in batch]
            scored = self._score_batch(prefixes, [(k, seqs[i]) for k, i in members])
            for (_, i), answer in zip(members, scored):
                answers[i] = answer
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
            pbar.update(len(members))
        pbar.close()
        return answers  # type: ignore[return-value]

    def _score_batch(self, prefixes: list[list[int]], rows: list[tuple[int, tuple[list[int], list[int]]]]) -> list[tuple[float, bool]]:
        """Log-likelihood and greediness of each row's continuation; row = (its prefix's index, (context, continuation))."""
        device = self.device
        P = max(len(p) for p in prefixes)
        suffixes = [(ctx + cont[:-1])[len(prefixes[k]):] for k, (ctx, cont) in rows]
        L = max(len(x) for x in suffixes)
        with torch.inference_mode():
            cache, kwargs = None, {}
            index = torch.tensor([k for k, _ in rows], device=device)
            prefix_mask = torch.zeros((len(prefixes), P), dtype=torch.long, device=device)
            if P:
                from transformers import DynamicCache

                ids = torch.zeros((len(prefixes), P), dtype=torch.long, device=device)
                for k, p in enumerate(prefixes):
                    ids[k, : len(p)] = torch.tensor(p, dtype=torch.long)
                    prefix_mask[k, : len(p)] = 1
                cache = DynamicCache(config=self.model.config)
                kwargs = {self._cache_arg: cache}
                self._decoder(input_ids=ids, attention_mask=prefix_mask, use_cache=True, **kwargs)
                cache.batch_select_indices(index)  # each row gets its prefix's keys and values
            ids = torch.zeros((len(rows), L), dtype=torch.long, device=device)
            mask = torch.zeros((len(rows), L), dtype=torch.long, device=device)
            scored = torch.zeros((len(rows), L), dtype=torch.bool, device=device)
            for r, (suffix, (_, (_, cont))) in enumerate(zip(suffixes, rows)):
                ids[r, : len(suffix)] = torch.tensor(suffix, dtype=torch.long)
                mask[r, : len(suffix)] = 1
                scored[r, len(suffix) - len(cont) : len(suffix)] = True
            starts = torch.tensor([len(prefixes[k]) for k, _ in rows], device=device)
            position_ids = starts[:, None] + torch.arange(L, device=device)[None, :]
            hidden = self._decoder(input_ids=ids, attention_mask=torch.cat([prefix_mask[index], mask], dim=1),
                                   position_ids=position_ids, use_cache=cache is not None, **kwargs).last_hidden_state
            logits = self._head(hidden[scored])  # the continuations' positions, row after row
            if self._softcap is not None:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype or torch.float32)
            targets = torch.tensor([t for _, (_, cont) in rows for t in cont], dtype=torch.long, device=device)
            chosen = logprobs.gather(1, targets[:, None]).squeeze(1)
            greedy = logprobs.argmax(dim=-1) == targets
        out, lo = [], 0
        for _, (_, cont) in rows:
            hi = lo + len(cont)
            out.append((float(chosen[lo:hi].sum()), bool(greedy[lo:hi].all())))
            lo = hi
        return out
