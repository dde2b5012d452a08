"""The shared-context scorer's grouping and batching, and its answers against lm-eval's
HFLM on a tiny Llama in float32: shared contexts, Winogrande-style contexts that share
only their start, an empty prefix, truncation from the left, odd batch sizes; packed
rows under SDPA and eager attention, the KV-cache path, and a tiny Gemma-3 whose
sliding window is shorter than its requests."""
from __future__ import annotations

import random

import pytest
import torch

from evalq.measure.scorer import MIN_SHARED, group_requests, is_argmax, plan_batches, plan_packed


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


def test_a_question_sharing_only_a_few_leading_tokens_with_the_last_starts_its_own_group():
    label = list(range(100, 100 + MIN_SHARED + 2))  # HellaSwag: the same activity label, another context
    first, second = label + list(range(200, 230)), label + list(range(300, 330))
    seqs = [(first, [1]), (first, [2]), (first, [3]), (first, [4]), (second, [1]), (second, [2])]
    assert group_requests(seqs) == [(39, [0, 1, 2, 3]), (39, [4, 5])]  # joining would rerun all six contexts


def test_packed_batches_hold_their_caps_and_split_where_padding_costs_more_than_a_pass():
    sizes = [100, 10, 12, 11, 95]
    assert plan_packed(sizes, max_rows=8, max_tokens=10_000, forward_cost=64) == [[0, 4], [2, 3, 1]]
    assert plan_packed(sizes, max_rows=8, max_tokens=10_000, forward_cost=1000) == [[0, 4, 2, 3, 1]]
    assert plan_packed(sizes, max_rows=2, max_tokens=10_000, forward_cost=1000) == [[0, 4], [2, 3], [1]]
    assert plan_packed(sizes, max_rows=8, max_tokens=150, forward_cost=1000) == [[0], [4], [2, 3, 1]]
    assert plan_packed([500], max_rows=8, max_tokens=100) == [[0]]  # too long for the cap: alone


def test_is_argmax_is_the_first_largest_as_argmax_says():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 1.0, 2.0, 5.0], [0.0, 1.0, 2.0, 3.0], [2.0, 2.0, 1.0, 1.0]]).to(torch.bfloat16)
    for target in range(4):
        targets = torch.full((4, 1), target)
        assert is_argmax(logits, targets).tolist() == (logits.argmax(-1) == target).tolist()


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


def same_answers(model, tok, batch_size: int, reqs: list, packed: bool = True) -> None:
    from lm_eval.models.huggingface import HFLM

    from evalq.measure.torch_model import TorchModel

    theirs = TorchModel(model, tok).lm_eval_lm(4, "lm-eval")
    ours = TorchModel(model, tok).lm_eval_lm(batch_size)
    assert type(theirs) is HFLM and type(ours).__name__ == "SharedContextLM"
    assert ours.packed  # SDPA and eager: packed rows unless the test asks for the cache
    ours.packed = packed
    expected = theirs._loglikelihood_tokens(reqs, disable_tqdm=True)
    got = ours._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert len(got) == len(expected)
    for (a, greedy_a), (b, greedy_b) in zip(expected, got):
        assert b == pytest.approx(a, abs=1e-4) and greedy_a == greedy_b


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("path", ["packed sdpa", "packed eager", "cache"])
def test_scorer_answers_what_lm_eval_answers(tiny, batch_size, path):
    model, tok = tiny
    model.set_attn_implementation("eager" if path == "packed eager" else "sdpa")
    try:
        same_answers(model, tok, batch_size, requests(), packed=path != "cache")
    finally:
        model.set_attn_implementation("sdpa")


def test_packed_rows_keep_a_sliding_window_shorter_than_the_requests(tiny):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, max_position_embeddings=64, sliding_window=5,
                              layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=30.0,
                              bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = Gemma3ForCausalLM(config).to(torch.float32).eval()
    same_answers(model, tiny[1], 3, requests(1))
