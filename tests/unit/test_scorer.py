"""The shared-context scorer's grouping and batching, and its answers against lm-eval's
HFLM on a tiny Llama in float32: shared contexts, Winogrande-style contexts that share
only their start, an empty prefix, truncation from the left, odd batch sizes."""
from __future__ import annotations

import random

import pytest
import torch

from evalq.measure.scorer import MIN_SHARED, group_requests, plan_batches


def test_choices_of_one_question_share_their_context_but_not_the_last_token():
    ctx = list(range(10, 30))
    seqs = [(ctx, [1, 2]), (ctx, [3]), (ctx, [4, 5, 6]), ([7, 8, 9], [1])]
    assert group_requests(seqs) == [(19, [0, 1, 2]), (2, [3])]


def test_contexts_sharing_their_start_are_one_group_unrelated_ones_are_not():
    start = list(range(100, 100 + MIN_SHARED))
    seqs = [(start + [1, 2], [9]), (start + [3, 4, 5], [9]), (list(range(200, 220)), [9])]
    assert group_requests(seqs) == [(MIN_SHARED, [0, 1]), (19, [2])]
    assert group_requests([([1, 2], [5]), ([1, 3], [5])]) == [(1, [0, 1])]  # all but the last token shared
    unrelated = [([5, 6, 7, 8, 9, 10], [1]), ([5, 11, 12, 13, 14, 15], [1])]  # one shared token is not worth a group
    assert group_requests(unrelated) == [(5, [0]), (5, [1])]


def test_batches_hold_their_row_and_token_caps_longest_first():
    groups = [(4, [0, 1]), (30, [2, 3, 4, 5]), (10, [6])]
    lengths = [6, 6, 35, 33, 34, 32, 12]
    batches = plan_batches(groups, lengths, max_rows=5, max_tokens=10_000)
    assert batches == [[1, 2], [0]]  # 4 + 1 rows, then 2 more would be 7
    assert plan_batches(groups, lengths, max_rows=64, max_tokens=40) == [[1], [2, 0]]  # 4 × 35 tokens alone; 3 × 12


@pytest.fixture(scope="module")
def tiny(tiny_model_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model_factory(max_position_embeddings=64)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def requests(seed: int = 0) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(9):  # multiple choice: one context, 2 to 4 continuations of 1 to 7 tokens
        ctx = [rng.randrange(3, 512) for _ in range(rng.randint(1, 20))]
        out += [(("c", "x"), ctx, [rng.randrange(3, 512) for _ in range(rng.randint(1, 7))]) for _ in range(rng.randint(2, 4))]
    for _ in range(3):  # Winogrande: two contexts differing after a shared start, one continuation
        start, cont = [rng.randrange(3, 512) for _ in range(12)], [rng.randrange(3, 512) for _ in range(5)]
        out += [(("c", "x"), start + [rng.randrange(3, 512) for _ in range(rng.randint(1, 4))], cont) for _ in range(2)]
    out.append((("c", "x"), [rng.randrange(3, 512) for _ in range(60)], [rng.randrange(3, 512) for _ in range(10)]))  # truncated
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_scorer_answers_what_lm_eval_answers(tiny, batch_size):
    from lm_eval.models.huggingface import HFLM

    from evalq.measure.torch_model import TorchModel

    model, tok = tiny
    reqs = requests()
    theirs = TorchModel(model, tok).lm_eval_lm(4, "lm-eval")
    ours = TorchModel(model, tok).lm_eval_lm(batch_size)
    assert type(theirs) is HFLM and type(ours).__name__ == "SharedContextLM"
    expected = theirs._loglikelihood_tokens(reqs, disable_tqdm=True)
    got = ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert len(got) == len(expected)
    for (a, greedy_a), (b, greedy_b) in zip(expected, got):
        assert b == pytest.approx(a, abs=1e-4) and greedy_a == greedy_b
