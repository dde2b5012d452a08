"""The text slice's windows under both conventions, and the summary figures."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from evalq.measure.quality import QualityError, ngram_overlap, plan_windows, summarize


def test_llama_cpp_convention_scores_the_second_half_of_windows_of_512():
    w = plan_windows(4096, "llama.cpp", None, None, 8192, bos=None)
    assert (w.context, w.stride, w.first_scored, len(w.starts)) == (512, 512, 256, 8)
    assert w.scored_per_window == 255 and w.n_scored == 2040  # as llama-perplexity: n_ctx - 1 - n_ctx/2


def test_gptq_convention_scores_every_token_of_windows_of_the_model_length():
    w = plan_windows(4096, "gptq", None, None, 2048, bos=None)
    assert (w.context, w.first_scored, w.starts) == (2048, 0, (0, 2048))
    assert w.n_scored == 2 * 2047  # the first token of a window predicts, it is not predicted


def test_overlapping_windows_score_only_the_new_tokens():
    w = plan_windows(1024, "gptq", 512, 128, 2048, bos=None)
    assert w.starts == (0, 128, 256, 384, 512) and w.scored_per_window == 128


@pytest.mark.parametrize("args,message", [
    ((100, "llama.cpp", None, None, 8192), "fewer than one window of 512"),
    ((4096, "gptq", None, None, None), "no max_position_embeddings"),
    ((4096, "gptq", 4096, None, 2048), "longer than the model's 2048 positions"),
    ((4096, "gptq", 512, 600, 2048), "stride 600 is larger"),
])
def test_windows_that_cannot_work_are_refused(args, message):
    with pytest.raises(QualityError, match=message):
        plan_windows(*args, bos=None)


def test_summary_of_identical_distributions():
    n = 1000
    logp = np.log(np.random.default_rng(0).uniform(0.01, 1, n))
    s = summarize(np.zeros(n), np.ones(n, dtype=bool), logp, logp)
    assert s["kld_mean"] == 0 and s["same_top1"] == 1 and s["ppl_ratio"] == 1 and s["dp_rms"] == 0
    assert s["ppl"] == pytest.approx(math.exp(-logp.mean()))


def test_summary_figures_and_the_sign_of_dp_skew():
    rng = np.random.default_rng(1)
    base = np.log(rng.uniform(0.2, 0.9, 5000))
    # most tokens move a little either way, a tail loses a lot: real degradation
    loss = np.where(rng.uniform(size=5000) < 0.05, 0.15, 0.0)
    quant = np.log(np.exp(base) - loss + rng.normal(0, 0.005, 5000).clip(-0.05, 0.05))
    kld = rng.exponential(0.01, 5000)
    same = rng.uniform(size=5000) < 0.9
    s = summarize(kld, same, base, quant)
    assert s["dp_skew"] < -2 and s["dp"]["p1"] < -0.1 and s["dp"]["p99"] < 0.05
    assert s["kld"]["p50"] == pytest.approx(np.median(kld)) and s["kld"]["max"] == kld.max()
    assert s["same_top1_stderr"] == pytest.approx(math.sqrt(s["same_top1"] * (1 - s["same_top1"]) / 5000))
    assert s["ppl_ratio"] > 1 and s["ln_ppl_ratio"] == pytest.approx(math.log(s["ppl_ratio"]))


def test_ngram_overlap_finds_windows_cut_from_the_evaluation_text():
    text = list(range(10_000))
    windows = [text[100:400], list(range(20_000, 20_300)), text[9_990:] + list(range(30_000, 30_290))]
    assert ngram_overlap(windows, text[:5000]) == pytest.approx(1 / 3)
    assert ngram_overlap(windows, text) == pytest.approx(1 / 3)  # 10 tokens in common is not a 32-token run


def test_the_noise_floor_runs_the_baselines_own_weights_in_the_other_dtype(tmp_path):
    """A real (tiny, random) Llama in bfloat16 as the baseline: the floor is the same
    weights in float32 against it, the model is handed back in its own dtype, and the
    floor's figures are those of a direct comparison in float32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from evalq.measure.quality import Baseline, Slice, against_baseline, floor_dtype, noise_floor, write_baseline

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    ids = np.random.default_rng(0).integers(0, 320, 256).tolist()
    sl = Slice(ids, plan_windows(len(ids), "llama.cpp", 64, None, 128, None))
    write_baseline(tmp_path, model, sl, "tiny")
    base = Baseline.open(tmp_path)
    assert against_baseline(model, sl, base)["kld_mean"] == 0  # the same arithmetic: no distance at all

    floor = noise_floor(model, sl, base, "cpu")
    assert floor["dtype"] == "float32" and floor["against"] == "bfloat16" and floor["n_tokens"] == sl.windows.n_scored
    assert next(model.parameters()).dtype == torch.bfloat16  # handed back as it came
    direct = against_baseline(model.float(), sl, base)
    assert 0 < floor["kld_mean"] == direct["kld_mean"] and floor["same_top1"] == direct["same_top1"]

    assert floor_dtype("float32", "cpu", native_bf16=True) == ("bfloat16", None)
    skipped, why = floor_dtype("float32", "cpu", native_bf16=False)
    assert skipped is None and "emulated" in why


def llama_perplexity_windows(tokens: list[int], bos: int | None, n_ctx: int) -> list[tuple[list[int], list[int]]]:
    """What llama.cpp's tools/perplexity scores (perplexity.cpp, perplexity()): the text
    tokenized with add_special (BOS first where the vocabulary adds one), cut into
    chunks of n_ctx whose first token is set to BOS, the second half of each scored."""
    first = n_ctx // 2
    out = []
    for i in range(len(tokens) // n_ctx):
        window = list(tokens[i * n_ctx : (i + 1) * n_ctx])
        if bos is not None:
            window[0] = bos
        out.append((window, window[first + 1 :]))
    return out


def test_gemma_windows_hold_the_tokens_llama_perplexity_scores(wikitext, tmp_path):
    """Gemma's tokenizer adds BOS: evalq's windows (its transformers tokenizer, read from
    the packaged GGUF as the fp16 cell reads it) against llama.cpp's own tokenizer and
    chunking on the same text, token for token."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    from evalq.matrix import QualitySettings
    from evalq.measure.quality import prepare_slice
    from evalq.model_sources import _gemma3

    gguf = _gemma3()
    text = tmp_path / "text.txt"
    text.write_text(wikitext.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cell = SimpleNamespace(quality=QualitySettings(path=str(text), tokens=2048, context=512))
    sl = prepare_slice(tokenizer, cell, {"max_position_embeddings": 32768})

    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    tokens = llm.tokenize(text.read_bytes(), add_bos=True, special=False)
    theirs = llama_perplexity_windows(tokens, llm.token_bos(), 512)
    ours = [(window, target.tolist()) for window, target in sl.batches()]
    assert sl.windows.bos == llm.token_bos() == 2 and tokens[0] == 2
    assert len(ours) == 4 and ours == theirs[:4]


def test_smollm2_adds_no_bos_and_its_windows_start_at_the_text(wikitext, tmp_path):
    from transformers import AutoTokenizer

    from evalq.matrix import QualitySettings
    from evalq.measure.quality import prepare_slice
    from evalq.model_sources import _smollm2

    gguf = _smollm2()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cell = SimpleNamespace(quality=QualitySettings(path=str(wikitext), tokens=1024, context=512))
    sl = prepare_slice(tokenizer, cell, {"max_position_embeddings": 8192})
    text_ids = tokenizer(wikitext.read_text(encoding="utf-8")[:20_000], add_special_tokens=False).input_ids
    assert sl.windows.bos is None and sl.ids == text_ids[:1024]
    assert [w for w, _ in sl.batches()][1] == text_ids[512:1024]


def test_a_variant_whose_bos_differs_from_the_baseline_is_refused(tmp_path):
    from evalq.measure.quality import Baseline, Slice, against_baseline

    w = plan_windows(1024, "llama.cpp", 512, None, 2048, bos=2)
    base = Baseline(tmp_path, {"windows": {"bos": None, "starts": [0, 512], "first_scored": 256},
                               "tokens_sha256": "x"}, np.zeros((1, 1)), np.zeros(1))
    with pytest.raises(QualityError, match=r"puts BOS \(id 2\) first, the baseline's adds no BOS"):
        against_baseline(object(), Slice([2] + [5] * 1023, w), base)


def test_a_baseline_is_keyed_by_the_machine_and_threads_that_computed_it():
    """Its logits are exact only for the kernels and thread count that made them: the fp16 cell
    against its own baseline must be KLD 0, and a reused one from elsewhere was not."""
    from pathlib import Path

    from evalq.cell import expand
    from evalq.matrix import read_matrix
    from evalq.measure.quality import baseline_key

    matrix, suites = read_matrix(Path(__file__).resolve().parents[2] / "examples" / "showcase.yaml")
    cell = next(c for c in expand(matrix, suites, lambda spec: "sha256:abc", device="cpu") if c.quality)
    files = SimpleNamespace(revision="sha256:abc")
    other_threads = cell.model_copy(update={"eval": cell.eval.model_copy(update={"threads": cell.threads("quality") + 1})})
    other_machine = cell.model_copy(update={"hardware": "AMD EPYC · avx2"})
    keys = [baseline_key(c, files) for c in (cell, other_threads, other_machine)]
    assert len(set(keys)) == 3
    assert baseline_key(cell.model_copy(), files) == keys[0]
