"""GGUF variants through real llama.cpp (llama-cpp-python) on SmolLM2-135M, beside
fp16, int8 and nf4 in one matrix, through the real `evalq run`: llama.cpp's own
converter and quantizer, the lm-eval adapter, speed, memory, and paired quality
against the fp16 baseline. Then two faults: a GGUF whose tokenizer is another
model's (must be an error), and a GGUF computing garbage (must be flagged)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.gguf_header import read_header
from evalq.paired import pair_rows
from evalq.planner import DTYPE_BYTES
from evalq.store import Store

from smollm2_matrix import GGUF_VARIANTS

pytestmark = pytest.mark.integration
pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is not installed")

runner = CliRunner()
VARIANTS = ("fp16", "int8", "nf4") + GGUF_VARIANTS

FAULTS = """\
name: it-gguf-faults
models:
  - name: SmolLM2-135M-Instruct
    package: smollm2-135m-instruct
variants:
  gguf-q8_0: {{checkpoint: {broken}}}
  gguf-q4_k_m: {{checkpoint: {other_tokenizer}}}
suites: [tiny]
quality: {{path: {wikitext}, tokens: 2048}}
perf: {{prompt_tokens: 32, new_tokens: 8, batch_sizes: [1], warmup: 0, repeats: 1, threads: 1}}
eval: {{batch_size: 8, limit: 10}}
timeout_s: 1500
"""


@pytest.fixture(scope="module")
def run_dir(smollm2_run):
    """The GGUF variants beside fp16, int8 and nf4 in one database (smollm2_matrix.py)."""
    return smollm2_run


@pytest.fixture(scope="module")
def store(run_dir):
    return Store(str(run_dir / "e.db"))


@pytest.fixture(scope="module")
def rows(store):
    return {r.variant: r for r in store.cells() if r.variant in VARIANTS}


def test_every_variant_ran_ok(rows):
    assert {v: r.status for v, r in rows.items()} == {v: "ok" for v in VARIANTS}, {v: r.error for v, r in rows.items()}


def test_the_files_hold_the_types_asked_for(rows):
    details = {v: rows[v].result["details"] for v in VARIANTS if v.startswith("gguf-")}
    assert {v: d["file_type"] for v, d in details.items()} == {"gguf-bf16": "BF16", "gguf-q8_0": "Q8_0", "gguf-q4_k_m": "Q4_K_M"}
    assert details["gguf-q8_0"]["module_types"] == {"gguf Q8_0": 211}  # 30 layers × 7 + the (tied) embedding
    assert details["gguf-q4_k_m"]["module_types"].get("gguf Q4_K", 0) > 0
    assert details["gguf-bf16"]["quantized_modules"] == 0 and details["gguf-q4_k_m"]["quantized_modules"] == 211
    assert all(d["n_gpu_layers"] == 0 and "AVX" in d["cpu_features"] for d in details.values())
    # SmolLM2's folder holds float32 weights: quantized from an F32 GGUF, never a float16 copy
    assert {v: d["intermediate"] for v, d in details.items()} == {v: "f32" for v in details}


def test_the_planner_predicts_the_gguf_weights_exactly(rows):
    for v in ("gguf-bf16", "gguf-q8_0", "gguf-q4_k_m"):
        assert rows[v].result["plan"]["predicted_weights_bytes"] == rows[v].weights_bytes, v
    # bf16 GGUF: the same weights as fp16's at 2 bytes each (fp16 runs float32 where the CPU lacks bf16), norms in float32
    fp16_at_2_bytes = rows["fp16"].weights_bytes * 2 / DTYPE_BYTES[rows["fp16"].dtype]
    assert rows["gguf-bf16"].weights_bytes == pytest.approx(fp16_at_2_bytes, rel=0.001)


def test_the_gguf_tokenizer_matched_the_baseline_token_for_token(rows):
    base = rows["fp16"].result["quality"]
    for v in ("gguf-bf16", "gguf-q8_0", "gguf-q4_k_m"):
        q = rows[v].result["quality"]
        assert (q["tokens_checked"], q["tokens_sha256"]) == (2048, base["tokens_sha256"]), v


def test_a_16_bit_gguf_computes_what_transformers_computes(rows):
    """The lossless conversion checks the whole llama.cpp path (tokenizer,
    logits alignment, rolling windows, the lm-eval adapter) against transformers."""
    q = rows["gguf-bf16"].result["quality"]
    assert q["kld_mean"] < 0.005 and q["same_top1"] > 0.97 and abs(q["ppl_ratio"] - 1) < 0.01, q
    ppl = {v: rows[v].metrics["evalq_demo_ppl"]["word_perplexity"] for v in ("fp16", "gguf-bf16")}
    assert ppl["gguf-bf16"] == pytest.approx(ppl["fp16"], rel=0.01), ppl


def test_per_answer_loglikelihoods_match_transformers(store, rows):
    def lls(variant):
        return {s["doc_id"]: [r[0] for r in s["filtered_resps"]] for s in store.samples(rows[variant].key, "evalq_demo_mc")}

    base = lls("fp16")
    flat = {v: np.array([x for k in base for x in lls(v)[k]]) for v in ("fp16", "gguf-bf16", "int8")}
    assert len(base) == 120 and len(flat["gguf-bf16"]) == len(flat["fp16"])
    # on a bf16 CPU transformers' values are bfloat16 sums (-4.625, -20.0): rounding alone is up to 0.06 nats at 8
    off = {v: np.median(np.abs(flat[v] - flat["fp16"])) for v in ("gguf-bf16", "int8")}
    assert off["gguf-bf16"] < 0.15 and off["gguf-bf16"] < off["int8"] / 3, off
    assert np.corrcoef(flat["fp16"], flat["gguf-bf16"])[0, 1] > 0.999


def test_kld_orders_as_the_bits_do(rows):
    """The issue's expectation: KLD(q8_0) < KLD(int8) and KLD(q4_k_m) < KLD(nf4)."""
    kld = {v: rows[v].result["quality"]["kld_mean"] for v in VARIANTS}
    assert kld["gguf-bf16"] < kld["gguf-q8_0"] < kld["int8"], kld
    assert kld["gguf-q8_0"] < kld["gguf-q4_k_m"] < kld["nf4"], kld


def test_speed_and_memory_follow_the_same_definitions(rows):
    for v in ("gguf-q8_0", "gguf-q4_k_m"):
        r = rows[v].result
        assert r["speed"]["threads"] == 1 and set(r["speed"]["by_batch"]) == {"1", "2"}
        for b in ("1", "2"):
            s = r["speed"]["by_batch"][b]
            assert len(s["ttft_ms_runs"]) == 2 and s["ttft_ms"] > 0 and s["decode_tokens_per_s"] > 0
        # both prompts are read in one pass before the first token of either
        assert r["speed"]["by_batch"]["2"]["ttft_ms"] > 1.3 * r["speed"]["by_batch"]["1"]["ttft_ms"]
        # the mapped weights are resident while generating
        assert r["memory"]["by_phase"]["speed"]["peak_rss_bytes"] > rows[v].weights_bytes


def test_no_sanity_flag_on_healthy_cells(store, rows):
    paired = pair_rows(list(rows.values()), store.samples)
    assert {v: paired[rows[v].key].flags for v in VARIANTS if v != "fp16"} == {v: [] for v in VARIANTS if v != "fp16"}


def test_the_leaderboard_shows_the_gguf_rows(run_dir):
    res = runner.invoke(app, ["leaderboard", "build", "--db", str(run_dir / "e.db"), "--out", str(run_dir / "site")])
    assert res.exit_code == 0, res.output
    page = (run_dir / "site" / "index.html").read_text()
    for v in ("gguf-q8_0", "gguf-q4_k_m", "gguf-bf16"):
        assert v in page
    assert "llama.cpp Q4_K_M" in page


def corrupt_ffn_down(source: Path, target: Path) -> int:
    """A Q8_0 GGUF computing garbage, as a broken CPU kernel would: the int8
    values of every ffn_down block randomized, scales kept."""
    shutil.copyfile(source, target)
    header = read_header(target)
    rng = np.random.default_rng(0)
    hit = 0
    with open(target, "r+b") as fh:
        for t in header.tensors:
            if t.name.endswith("ffn_down.weight") and t.type.name == "Q8_0":
                fh.seek(header.data_start + t.offset)
                blocks = np.frombuffer(fh.read(t.n_bytes), dtype=np.uint8).reshape(-1, 34).copy()
                blocks[:, 2:] = rng.integers(0, 256, size=(len(blocks), 32), dtype=np.uint8)
                fh.seek(header.data_start + t.offset)
                fh.write(blocks.tobytes())
                hit += 1
    return hit


def test_faults_a_foreign_tokenizer_is_an_error_and_a_broken_kernel_is_flagged(run_dir, rows, wikitext):
    from evalq.matrix import ModelSpec
    from evalq.model_sources import _gguf_file

    broken = run_dir / "broken-q8_0.gguf"
    assert corrupt_ffn_down(Path(rows["gguf-q8_0"].result["details"]["file"]), broken) == 30
    other = _gguf_file(ModelSpec(name="Gemma-3-270M", package="gemma3-270m"))  # Gemma's own tokenizer
    (run_dir / "faults.yaml").write_text(FAULTS.format(wikitext=wikitext, broken=broken, other_tokenizer=other))
    res = runner.invoke(app, ["run", "--matrix", str(run_dir / "faults.yaml"), "--db", str(run_dir / "faults.db")])
    assert res.exit_code != 0 or "error" in res.output
    got = {r.variant: r for r in Store(str(run_dir / "faults.db")).cells()}

    mismatch = got["gguf-q4_k_m"]
    assert mismatch.status == "error"
    # Gemma's tokenizer puts BOS first, SmolLM2's baseline has none: refused by name (a tokenizer that
    # differs only further on is named by its first differing token: tests/unit/test_gguf.py)
    assert "tokenizer puts BOS (id 2) first, the baseline's adds no BOS" in mismatch.error, mismatch.error

    bad = got["gguf-q8_0"]
    assert bad.status == "ok"
    flags = pair_rows([bad], lambda key, task: [])[bad.key].flags
    assert any("KL divergence to fp16" in f for f in flags) and any("perplexity" in f for f in flags), flags
    assert all("Choosing llama.cpp's CPU backend" in f for f in flags), flags


@pytest.mark.parametrize("package", ["smollm2-135m-instruct", "gemma3-270m"])
def test_the_lm_eval_adapter_encodes_as_hflm_does(package):
    """HFLM lets the tokenizer decide on BOS (Gemma's adds it, SmolLM2's does not);
    without it Gemma's GGUF answered 0.508 of the demo questions where fp16 had 0.742."""
    from transformers import AutoTokenizer

    from evalq.backends.llamacpp import LlamaCppModel
    from evalq.backends.llamacpp_lm import LlamaCppLM
    from evalq.matrix import ModelSpec
    from evalq.model_sources import _gguf_file, materialize

    spec = ModelSpec(package=package)
    hf = AutoTokenizer.from_pretrained(materialize(spec).path)
    lm = LlamaCppLM(LlamaCppModel(str(_gguf_file(spec))))
    for text in ("Question: What is the capital of France?\nAnswer:", " Paris", "plain text, no question"):
        assert lm.tok_encode(text) == hf.encode(text), (package, text)


def test_each_context_runs_once_for_all_its_choices():
    """llama.cpp's side of the shared-context scorer: the KV of the context the previous
    request shared is kept, so a question's context is decoded once for its choices
    (only its last token again, for the logits that score each choice), with the same
    log-likelihoods as decoding every request from its first token."""
    from evalq.backends.llamacpp import LlamaCppModel
    from evalq.backends.llamacpp_lm import LlamaCppLM
    from evalq.matrix import ModelSpec
    from evalq.model_sources import _gguf_file

    model = LlamaCppModel(str(_gguf_file(ModelSpec(package="smollm2-135m-instruct"))))
    shared = LlamaCppLM(model)
    context = shared.tok_encode("Question: Which gas do green plants take in from the air to make their food?\nAnswer:")
    choices = [shared.tok_encode(c, add_special_tokens=False) for c in (" carbon dioxide", " oxygen", " nitrogen gas", " helium")]
    requests = [(None, context, c) for c in choices]
    answers = {}
    for reuse in (False, True):
        model.release()
        before = model.decoded_tokens
        answers[reuse] = LlamaCppLM(model, reuse_prefix=reuse)._loglikelihood_tokens(requests, disable_tqdm=True)
        answers[f"tokens {reuse}"] = model.decoded_tokens - before
    each = [len(context) + len(c) - 1 for c in choices]  # the last token is only ever a target
    assert answers["tokens False"] == sum(each)
    assert answers["tokens True"] == len(context) - 1 + sum(len(c) for c in choices)  # the context once, its last token per choice
    for (a, greedy_a), (b, greedy_b) in zip(answers[False], answers[True]):
        assert abs(a - b) < 1e-3 and greedy_a == greedy_b
    # another question sharing only "Question:" starts from a cleared cache (MIN_REUSE)
    other = shared.tok_encode("Question: What do bees make from nectar?\nAnswer:")
    before = model.decoded_tokens
    shared._loglikelihood_tokens([(None, other, choices[0])], disable_tqdm=True)
    assert model.decoded_tokens - before == len(other) + len(choices[0]) - 1
