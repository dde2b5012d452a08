"""evalq's multiple-choice scorer: lm-eval's HFLM with `_loglikelihood_tokens`
answered without the work lm-eval does and never reads.

lm-eval (HFLM) runs every (context, continuation) request as its own padded
sequence and takes a full-vocabulary `log_softmax` at every position, although
only the continuation's positions are read; the choices of one question each
recompute the shared context. Here, per batch of requests:

- consecutive requests whose contexts share their leading tokens form a group
  (the choices of one question; Winogrande's two contexts); the shared tokens,
  short of every context's last one, run once;
- each request runs only the rest of its context and its continuation (less
  its last token) after them. With SDPA or eager attention a group is one
  packed row, [shared | rest of request 1 | rest of request 2 | …], under a
  4-D mask that lets each request see the shared tokens and itself only, with
  position ids that restart after the shared tokens: no request is padded to
  its neighbours' length, and groups are batched by packed length. Otherwise
  (flash attention, attention kinds the mask cannot express) the shared
  tokens' KV cache is copied to each request, which then runs padded;
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

Request = tuple[tuple[str, str], list[int], list[int]]

MAX_BATCH_TOKENS = 8192  # padded tokens per forward (the cache path: the prefix pass and the choices' pass each)
# a forward pass's fixed cost, in padded tokens: where splitting a batch saves more padding
# than this, it is split (1 CPU thread, SmolLM2: 64 split too often, 128 and 256 ran alike)
FORWARD_COST = 128
# logits per pass of the output layer: 256 positions of Gemma-3's 262,144-token vocabulary
# (on 1 CPU thread faster than 64 or 512: fewer reads of the 335 MB head, less memory touched)
HEAD_ELEMENTS = 2**26
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
            # joining shortens the group's shared tokens to `shared`: worth it only where fewer
            # tokens run in all (shared × k > p × (k - 1)). HellaSwag's next question often
            # shares its activity label with this one, and joining would rerun every context.
            k = len(members)
            if shared >= min(MIN_SHARED, len(first) - 1, len(ctx) - 1) and shared > 0 and shared * k > p * (k - 1):
                groups[-1] = (shared, members + [i])
                continue
        groups.append((len(ctx) - 1, [i]))
    return groups


def is_argmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row, whether argmax (the first largest) is the target, as `logits.argmax(-1) ==
    targets[:, 0]`, at the cost of a max: only rows whose target holds the largest value
    look for an equal one before it."""
    top = logits.amax(dim=-1, keepdim=True)
    out = (logits.gather(1, targets) == top).squeeze(1)
    for r in out.nonzero().flatten().tolist():
        out[r] = not bool((logits[r, : targets[r, 0]] == top[r]).any())
    return out


def packed_lengths(groups: list[tuple[int, list[int]]], lengths: list[int]) -> list[int]:
    """Each group's packed row: its shared tokens once, then the rest of each member."""
    return [p + sum(lengths[i] - p for i in members) for p, members in groups]


def plan_packed(sizes: list[int], max_rows: int, max_tokens: int, forward_cost: int = FORWARD_COST) -> list[list[int]]:
    """Indices of packed rows per batch, longest first, at most `max_rows` rows and
    `max_tokens` padded tokens a batch (a longer row alone in its batch): the split of
    the sorted rows with the fewest padded tokens plus `forward_cost` a batch."""
    order = sorted(range(len(sizes)), key=lambda g: -sizes[g])
    best = [0] + [0] * len(order)  # best[j]: the cost of the first j rows
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        best[j] = -1
        for i in range(j - 1, max(-1, j - 1 - max_rows), -1):
            if i < j - 1 and (j - i) * sizes[order[i]] > max_tokens:
                break
            cost = best[i] + forward_cost + (j - i) * sizes[order[i]]
            if best[j] < 0 or cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], len(order)
    while j:
        batches.append(order[cut[j]:j])
        j = cut[j]
    return batches[::-1]


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
        self._kinds = self._mask_kinds()
        self.packed = self._kinds is not None

    def _mask_kinds(self) -> dict[str, int | None] | None:
        """Attention kind → sliding window (None: full) of the custom 4-D masks the
        decoder accepts as they are, or None where packing cannot be expressed:
        attention other than SDPA or eager, or a sliding window outside
        `layer_types` (such models take no per-kind masks)."""
        config = self.model.config
        if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
            return None
        kinds = set(getattr(config, "layer_types", None) or [])
        if not kinds:
            return None if getattr(config, "sliding_window", None) else {"": None}
        if not kinds <= {"full_attention", "sliding_attention"}:
            return None
        return {k: (config.sliding_window if k == "sliding_attention" else None) for k in kinds}

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
        if self.packed:
            batches = plan_packed(packed_lengths(groups, lengths), max_rows, self.max_batch_tokens)
        else:
            batches = plan_batches(groups, lengths, max_rows, self.max_batch_tokens)
        for batch in batches:
            members = [(k, i) for k, g in enumerate(batch) for i in groups[g][1]]
            prefixes = [seqs[groups[g][1][0]][0][: groups[g][0]] for g in batch]
            score = self._score_packed if self.packed else self._score_batch
            scored = score(prefixes, [(k, seqs[i]) for k, i in members])
            for (_, i), answer in zip(members, scored):
                answers[i] = answer
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
            pbar.update(len(members))
        pbar.close()
        return answers  # type: ignore[return-value]

    def _score_packed(self, prefixes: list[list[int]], rows: list[tuple[int, tuple[list[int], list[int]]]]) -> list[tuple[float, bool]]:
        """As _score_batch, one packed row per prefix (see module doc)."""
        device = self.device
        packed: list[list[int]] = [list(p) for p in prefixes]
        positions: list[list[int]] = [list(range(len(p))) for p in prefixes]
        segments: list[list[int]] = [[0] * len(p) for p in prefixes]  # 0: the shared tokens, j: the row's j-th request
        scored_at: list[tuple[int, int, int]] = []  # (packed row, first scored index, its count) per request
        for j, (k, (ctx, cont)) in enumerate(rows, start=1):
            suffix = (ctx + cont[:-1])[len(prefixes[k]):]
            start = len(packed[k])
            packed[k] += suffix
            positions[k] += range(len(prefixes[k]), len(prefixes[k]) + len(suffix))
            segments[k] += [j] * len(suffix)
            scored_at.append((k, start + len(suffix) - len(cont), len(cont)))
        T = max(len(x) for x in packed)
        ids = torch.zeros((len(packed), T), dtype=torch.long)
        pos = torch.zeros((len(packed), T), dtype=torch.long)
        seg = torch.full((len(packed), T), -1, dtype=torch.long)  # -1: padding
        for r, (x, ps, sg) in enumerate(zip(packed, positions, segments)):
            ids[r, : len(x)], pos[r, : len(x)], seg[r, : len(x)] = torch.tensor(x), torch.tensor(ps), torch.tensor(sg)
        q, kv = seg[:, :, None], seg[:, None, :]
        allowed = torch.ones(T, T, dtype=torch.bool).tril() & (kv >= 0) & ((kv == 0) | (kv == q))
        allowed |= torch.eye(T, dtype=torch.bool) & (q < 0)  # padding sees itself: no row is all masked
        masks = {}
        for kind, window in self._kinds.items():  # type: ignore[union-attr]
            m = allowed if window is None else allowed & (pos[:, :, None] - pos[:, None, :] < window)
            m = m[:, None].to(device)
            if self.model.config._attn_implementation == "eager":
                m = torch.zeros(m.shape, dtype=self.model.dtype, device=device).masked_fill(~m, torch.finfo(self.model.dtype).min)
            masks[kind] = m
        with torch.inference_mode():
            hidden = self._decoder(input_ids=ids.to(device), attention_mask=masks.get("", masks), position_ids=pos.to(device),
                                   use_cache=False).last_hidden_state
            where = torch.tensor([r * T + i for r, first, n in scored_at for i in range(first, first + n)], device=device)
            return self._continuations(hidden.reshape(-1, hidden.shape[-1])[where], [cont for _, (_, cont) in rows])

    def _continuations(self, hidden: torch.Tensor, conts: list[list[int]]) -> list[tuple[float, bool]]:
        """Log-likelihood and greediness of each continuation from the hidden states at its
        positions (all continuations' positions, one after another). The output layer runs
        on HEAD_ELEMENTS logits at a time: a full-vocabulary float32 copy of every position
        at once is gigabytes for Gemma's 262,144 tokens, and only its log-sum-exp is read."""
        targets = torch.tensor([t for cont in conts for t in cont], dtype=torch.long, device=hidden.device)
        chosen = torch.empty(len(targets), dtype=torch.float64)
        greedy = torch.empty(len(targets), dtype=torch.bool)
        step = max(1, HEAD_ELEMENTS // self._head.weight.shape[0])
        for lo in range(0, len(targets), step):
            logits = self._head(hidden[lo : lo + step])
            if self._softcap is not None:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            t = targets[lo : lo + step, None]
            chosen[lo : lo + step] = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype or torch.float32).gather(1, t).squeeze(1).cpu()
            greedy[lo : lo + step] = is_argmax(logits, t).cpu()
        out, lo = [], 0
        for cont in conts:
            hi = lo + len(cont)
            out.append((float(chosen[lo:hi].sum()), bool(greedy[lo:hi].all())))
            lo = hi
        return out

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
            return self._continuations(hidden[scored], [cont for _, (_, cont) in rows])  # row after row
