"""SmolLM2-135M in all four variants, for real on the CPU: real bitsandbytes,
real GPTQ quantization, real lm-eval, through the real `evalq run`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq.resources import Resources
from evalq.cli import app
from evalq.cpu import auto_cpu_dtype
from evalq.planner import DTYPE_BYTES
from evalq.store import Store

from smollm2_matrix import HF_VARIANTS, smollm2_variants, write_smollm2_matrix

AUTO = auto_cpu_dtype()  # what fp16's `auto` runs here: bfloat16 where native, else float32

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture(scope="session")
def run_dir(smollm2_run):
    return smollm2_run


def write_matrix(folder: Path, wikitext: Path, group_size: int = 64) -> Path:
    return write_smollm2_matrix(folder, wikitext, group_size)


@pytest.fixture(scope="session")
def rows(run_dir):
    return {r.variant: r for r in Store(str(run_dir / "e.db")).cells() if r.variant in HF_VARIANTS}


def test_every_variant_ran_ok(rows):
    assert {v: r.status for v, r in rows.items()} == {v: "ok" for v in ("fp16", "int8", "nf4", "gptq-4")}, \
        {v: r.error for v, r in rows.items()}


def test_each_variant_has_its_quantized_module_type(rows):
    types = {v: r.result["details"]["module_types"] for v, r in rows.items()}
    assert types["int8"].get("Linear8bitLt", 0) == 210  # 30 layers × 7 projections
    assert types["nf4"].get("Linear4bit", 0) == 210
    kernels = rows["gptq-4"].result["details"]["kernel"]  # subclasses of gptqmodel's BaseQuantLinear
    assert kernels and sum(types["gptq-4"].get(k, 0) for k in kernels) == 210
    assert "Linear8bitLt" not in types["fp16"] and "Linear4bit" not in types["fp16"]


def test_quantized_weights_weigh_less_than_fp16(rows):
    w = {v: r.weights_bytes for v, r in rows.items()}
    assert w["int8"] < w["fp16"] and w["nf4"] < w["int8"] and w["gptq-4"] < w["int8"], w


def test_unquantized_parts_are_in_the_baseline_dtype(rows):
    for variant in ("int8", "nf4", "gptq-4"):
        dtypes = rows[variant].result["details"]["parameter_dtypes"]
        # the unquantized parts in the baseline's dtype, none left in another float type
        assert {d for d in dtypes if d in ("float32", "bfloat16")} == {AUTO}, (variant, dtypes)
        assert rows[variant].dtype == AUTO
    assert rows["fp16"].result["details"]["parameter_dtypes"] == {AUTO: pytest.approx(134_515_008, rel=0.01)}


def test_variant_details_are_recorded(rows):
    assert rows["int8"].result["details"]["threshold"] == 6.0
    nf4 = rows["nf4"].result["details"]
    assert nf4["double_quant"] is True and nf4["compute_dtype"] == AUTO
    gptq = rows["gptq-4"].result["details"]
    assert (gptq["bits"], gptq["group_size"], gptq["desc_act"]) == (4, 64, False)
    assert (gptq["calibration"]["n_samples"], gptq["calibration"]["seq_len"]) == (16, 128)
    # quantized by evalq (in this run, or an earlier one with the same key)
    assert (Path(gptq["checkpoint"]) / "evalq-calibration.json").is_file()


def test_accuracy_perplexity_speed_and_memory_are_stored(rows):
    for variant, r in rows.items():
        mc, ppl = r.metrics["evalq_demo_mc"], r.metrics["evalq_demo_ppl"]
        assert 0.25 < mc["acc"] <= 1 and mc["acc_stderr"] > 0, variant
        assert r.result["n_samples"]["evalq_demo_mc"]["effective"] == 120
        assert 5 < ppl["word_perplexity"] < 500, variant
        assert r.ttft_ms > 0 and r.decode_tokens_per_s > 0
        assert set(r.result["speed"]["by_batch"]) == {"1", "2"} and r.result["speed"]["threads"] == 1
        assert r.peak_memory_bytes > r.weights_bytes
        assert r.result["env"]["libraries"]["lm_eval"]
    # quantization costs something: no quantized variant is exactly the baseline
    base = rows["fp16"].metrics["evalq_demo_ppl"]["word_perplexity"]
    assert all(rows[v].metrics["evalq_demo_ppl"]["word_perplexity"] != base for v in ("int8", "nf4", "gptq-4"))


def test_per_sample_records_are_stored(run_dir, rows):
    store = Store(str(run_dir / "e.db"))
    samples = store.samples(rows["nf4"].key, "evalq_demo_mc")
    assert len(samples) == 120 and {"doc_id", "doc_hash", "resps"} <= set(samples[0])


def test_rerunning_a_finished_matrix_loads_no_model(run_dir, rows, wikitext):
    attempts = {v: r.attempts for v, r in rows.items()}
    res = runner.invoke(app, ["run", "--matrix", str(write_matrix(run_dir, wikitext)), "--db", str(run_dir / "e.db")])
    assert res.exit_code == 0, res.output
    n = len(smollm2_variants())
    assert f"{n} cells: {n} already stored, ran none" in res.output
    assert {r.variant: r.attempts for r in Store(str(run_dir / "e.db")).cells() if r.variant in attempts} == attempts


def test_group_size_that_does_not_divide_is_refused_before_anything_runs(run_dir, wikitext):
    # read from the GGUF header: no weights loaded, no database written
    res = runner.invoke(app, ["run", "--matrix", str(write_matrix(run_dir, wikitext, group_size=128)), "--db", str(run_dir / "g.db")])
    assert res.exit_code == 2, res.output
    assert "group_size 128 does not divide hidden_size" in res.output and "[16, 32, 64]" in res.output
    assert not (run_dir / "g.db").exists()


def test_group_size_check_agrees_on_the_converted_config(rows):
    """The worker re-checks on the converted folder's config.json (the only
    config a hub model offline may have); it must agree with the GGUF header."""
    from evalq.backends.gptq import GPTQBackend, GPTQConfig

    cfg = GPTQConfig.model_validate({**rows["gptq-4"].cell["options"], "group_size": 128})
    config = json.loads((Path(rows["gptq-4"].result["model_path"]) / "config.json").read_text())
    assert "576" in GPTQBackend().check_model(cfg, config)


@pytest.fixture(scope="session")
def fp16_in_process(rows):
    from evalq.backends.fp16 import FP16Backend, FP16Config
    from evalq.matrix import ModelSpec
    from evalq.model_sources import materialize

    files = materialize(ModelSpec(name="SmolLM2-135M-Instruct", package="smollm2-135m-instruct"))
    return FP16Backend().load(files, FP16Config(), Resources(), "")


def test_stored_accuracy_equals_lm_eval_direct_on_the_same_object(rows, fp16_in_process):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evalq.measure.accuracy import evaluate, split_metrics
    from evalq.suites import TASKS_DIR, load_suite

    model, tok = fp16_in_process.model, fp16_in_process.tokenizer
    direct = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=8), tasks=["evalq_demo_mc"],
                             num_fewshot=0, task_manager=TaskManager(include_path=str(TASKS_DIR)), log_samples=False,
                             random_seed=1234, numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234,
                             bootstrap_iters=1000)
    direct_acc = split_metrics(direct["results"]["evalq_demo_mc"])
    suite = load_suite("tiny")
    through_hflm = evaluate(model, tok, [suite], batch_size=8, limit_cap=None, seed=1234, scorer="lm-eval")["metrics"]["evalq_demo_mc"]
    ours = evaluate(model, tok, [suite], batch_size=8, limit_cap=None, seed=1234)["metrics"]["evalq_demo_mc"]
    stored = rows["fp16"].metrics["evalq_demo_mc"]
    for metric in ("acc", "acc_stderr", "acc_norm"):
        assert through_hflm[metric] == direct_acc[metric], metric  # evalq's lm-eval path: lm-eval's numbers exactly
        assert ours[metric] == stored[metric], metric  # what the run stored: evalq's scorer on the same object
    # evalq's scorer sums in float32 over packed rows: in bfloat16 a near-tie may flip
    # (tests/integration/test_scorer_exact.py lists them per document); at most one or two of 120
    for metric in ("acc", "acc_norm"):
        assert abs(ours[metric] - direct_acc[metric]) <= 2 / 120 + 1e-9, (metric, ours[metric], direct_acc[metric])


def test_gptq_checkpoint_is_reused_from_the_cache(rows):
    from evalq.backends.gptq import GPTQBackend, GPTQConfig, quantized_key
    from evalq.cache import cache_dir
    from evalq.matrix import ModelSpec
    from evalq.model_sources import materialize

    files = materialize(ModelSpec(name="SmolLM2-135M-Instruct", package="smollm2-135m-instruct"))
    cfg = GPTQConfig.model_validate(rows["gptq-4"].cell["options"])
    assert (cache_dir("gptq") / quantized_key(files, cfg, AUTO)).is_dir()
    assert quantized_key(files, cfg, "bfloat16") != quantized_key(files, cfg, "float32")
    loaded = GPTQBackend().load(files, cfg, Resources(), "")
    assert loaded.prepare_seconds == 0.0


def test_gptq_quantizes_in_the_dtype_this_cpu_computes_natively(rows):
    """Not gptqmodel's own choice (bfloat16 on any CPU, emulated, ~3x slower, on one without
    native bf16): the cell's dtype, recorded, and the checkpoint's unquantized tensors in it."""
    from safetensors import safe_open

    details = rows["gptq-4"].outcome.details
    assert details["quantize_dtype"] == AUTO == details["dtype"]
    folder = Path(details["checkpoint"])
    assert json.loads((folder / "evalq-calibration.json").read_text())["quantize_dtype"] == AUTO
    (weights,) = folder.glob("*.safetensors")
    with safe_open(str(weights), "pt") as f:
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == {"float32": "F32", "bfloat16": "BF16"}[AUTO]


def test_demo_perplexity_text_has_at_least_3000_tokens(fp16_in_process):
    from evalq.suites import TASKS_DIR

    docs = [json.loads(x) for x in (TASKS_DIR / "evalq_demo_ppl" / "demo_ppl.jsonl").read_text().splitlines()]
    tok = fp16_in_process.tokenizer
    assert sum(len(tok(d["text"]).input_ids) for d in docs) >= 3000


def test_the_same_cell_run_again_gives_identical_accuracy(run_dir, rows, wikitext):
    """Seeds fixed, accuracy batch size fixed: a second run of the fp16 cell, in
    another database, stores exactly the same metrics under the same key."""
    text = write_matrix(run_dir, wikitext).read_text()
    only_fp16 = text[: text.index("  int8: {}")] + text[text.index("suites:"):]
    # llama.cpp's cache types would name no variant here (exit 2); fp16's cell only ever had transformers' ones
    only_fp16 = only_fp16.replace("kv_cache: [f16, hqq-4, q8_0, q4_0]", "kv_cache: [f16, hqq-4]")
    assert "kv_cache: [f16, hqq-4]" in only_fp16
    path = run_dir / "repro.yaml"
    path.write_text(only_fp16)
    res = runner.invoke(app, ["run", "--matrix", str(path), "--db", str(run_dir / "repro.db")])
    assert res.exit_code == 0, res.output
    (again,) = Store(str(run_dir / "repro.db")).cells()
    assert again.key == rows["fp16"].key
    assert again.metrics == rows["fp16"].metrics
    assert again.result["details"]["dtype"] == rows["fp16"].result["details"]["dtype"]
    # compared with itself, through the baseline the first run left on disk, in another process
    q = again.result["quality"]
    assert q["kld_mean"] == 0 and q["kld"]["max"] == 0 and q["same_top1"] == 1 and q["dp_rms"] == 0
    assert q["baseline"] == rows["fp16"].result["quality"]["baseline"]


# --- paired quality against fp16 ------------------------------------------------

def test_every_variant_is_compared_with_the_fp16_baseline_on_wikitext(rows):
    q = {v: r.result["quality"] for v, r in rows.items()}
    for v, figures in q.items():
        assert figures["n_tokens"] == 4 * 255 and figures["convention"] == "llama.cpp" and figures["context"] == 512
        assert figures["ppl_base"] == q["fp16"]["ppl"], v  # one baseline for all
        assert 5 < figures["ppl"] < 100, v
    assert q["fp16"]["kld_mean"] == 0 and q["fp16"]["same_top1"] == 1
    for v in ("int8", "nf4", "gptq-4"):
        assert q[v]["kld_mean"] > 0 and q[v]["kld_stderr"] > 0 and 0.5 < q[v]["same_top1"] < 1, v
        assert q[v]["kld"]["p50"] <= q[v]["kld"]["p99"] <= q[v]["kld"]["max"]
        assert rows[v].result["warnings"] == [], v  # calibration skips the quality slice
    # 8-bit moves the distributions far less than either 4-bit scheme
    assert q["int8"]["kld_mean"] * 3 < min(q["nf4"]["kld_mean"], q["gptq-4"]["kld_mean"])


def test_the_fp16_cell_measures_the_noise_floor_where_the_other_dtype_is_native(rows):
    from evalq.cpu import native_bf16

    floor = rows["fp16"].result["quality"]["floor"]
    assert floor["against"] == AUTO
    if AUTO == "float32" and not native_bf16():  # an AVX2-only CPU: bf16 would be emulated
        assert "emulated" in floor["skipped"]
        return
    assert floor["dtype"] == ("float32" if AUTO != "float32" else "bfloat16") and floor["n_tokens"] == 4 * 255
    # the arithmetic alone moves the distributions, far less than 8-bit weights do
    assert 0 < floor["kld_mean"] < rows["int8"].result["quality"]["kld_mean"] and floor["same_top1"] > 0.95


def test_baseline_is_stored_once_in_the_model_dtype_within_its_size_bound(rows):
    from evalq.cache import cache_dir

    (folder,) = {r.result["quality"]["baseline"] for r in rows.values()}
    path = cache_dir("baselines") / folder
    meta = json.loads((path / "meta.json").read_text())
    assert meta["dtype"] == AUTO and meta["vocab"] == 49152 and meta["n_scored"] == 1020
    size = sum(f.stat().st_size for f in path.iterdir())
    b = DTYPE_BYTES[AUTO]
    assert 1020 * 49152 * b < size <= 1020 * (49152 * b + 4) + 2048 * 4 + 4096  # docs/metrics.md's bound


def test_kld_equals_a_direct_float64_computation_on_the_same_logits(rows, fp16_in_process):
    """evalq's KLD (stored baseline vs live logits) against numpy/scipy in
    float64 on the very logits both sides produced."""
    import numpy as np
    import torch
    from scipy.special import log_softmax

    from evalq.backends.int8 import Int8Backend, Int8Config
    from evalq.cache import cache_dir
    from evalq.cell import Cell
    from evalq.measure.quality import Baseline, against_baseline, prepare_slice, window_logits

    cell = Cell.model_validate(rows["int8"].cell)
    files_path = rows["int8"].result["model_path"]
    model_config = json.loads((Path(files_path) / "config.json").read_text())
    baseline = Baseline.open(cache_dir("baselines") / rows["int8"].result["quality"]["baseline"])
    from evalq.matrix import ModelSpec
    from evalq.model_sources import materialize

    int8 = Int8Backend().load(materialize(ModelSpec(name="SmolLM2-135M-Instruct", package="smollm2-135m-instruct")),
                              Int8Config(), Resources(), "")
    sl = prepare_slice(int8.tokenizer, cell, model_config)
    ours = against_baseline(int8.model, sl, baseline)

    if AUTO == "bfloat16":  # the baseline as raw bfloat16 bits, decoded by hand: bf16 is the top half of a float32
        p_logits = (np.asarray(baseline.logits, dtype=np.uint32) << 16).view(np.float32).astype(np.float64)
    else:
        p_logits = np.asarray(baseline.logits, dtype=np.float64)
    q_logits = np.concatenate([window_logits(int8.model, w, sl.windows.first_scored).float().numpy()
                               for w, _ in sl.batches()]).astype(np.float64)
    p, q = log_softmax(p_logits, axis=-1), log_softmax(q_logits, axis=-1)
    direct = np.sum(np.exp(p) * (p - q), axis=-1)
    assert abs(ours["kld_mean"] - direct.mean()) < 1e-6
    assert abs(ours["kld"]["max"] - direct.max()) < 1e-6
    assert ours["same_top1"] == np.mean(p.argmax(-1) == q.argmax(-1))

    # the stored baseline is the fp16 model's own logits, nothing lost
    first = next(sl.batches())[0]
    live = window_logits(fp16_in_process.model, first, sl.windows.first_scored)
    stored = baseline.rows(0, sl.windows.scored_per_window)
    assert live.dtype == getattr(torch, AUTO) and torch.equal(live, stored)


def test_answer_flips_against_fp16_and_a_cell_against_itself(run_dir, rows):
    from evalq.paired import flips, mc_answers, pair_rows
    from evalq.store import Store

    store = Store(str(run_dir / "e.db"))
    paired = pair_rows(store.cells(), store.samples)
    fp16_answers = mc_answers(store.samples(rows["fp16"].key, "evalq_demo_mc"))
    itself = flips(fp16_answers, fp16_answers)
    assert itself.n == 120 and itself.flips == 0 and itself.choice_kld == 0 and itself.mcnemar_p == 1
    for v in ("int8", "nf4", "gptq-4"):
        t = paired[rows[v].key].tasks["evalq_demo_mc"]
        assert t["n"] == 120 and t["unpaired"] == 0 and "evalq_demo_ppl" not in paired[rows[v].key].tasks
        # flips explain the accuracy change exactly: Δcorrect = w→c − c→w
        delta = round(120 * (rows[v].metrics["evalq_demo_mc"]["acc"] - rows["fp16"].metrics["evalq_demo_mc"]["acc"]))
        assert t["wrong_to_correct"] - t["correct_to_wrong"] == delta, v
        assert 0 <= t["mcnemar_p"] <= 1 and t["choice_kld"] > 0
        assert paired[rows[v].key].flags == [], (v, paired[rows[v].key].flags)


def test_calibration_on_the_quality_text_is_warned_about(rows, tmp_path, wikitext):
    from evalq.backends.gptq import GPTQBackend, GPTQConfig
    from evalq.cell import Cell
    from evalq.measure.quality import prepare_slice
    from evalq.run.child import calibration_warnings
    from transformers import AutoTokenizer

    cell = Cell.model_validate(rows["gptq-4"].cell)
    tok = AutoTokenizer.from_pretrained(rows["gptq-4"].result["model_path"])
    model_config = json.loads((Path(rows["gptq-4"].result["model_path"]) / "config.json").read_text())
    sl = prepare_slice(tok, cell, model_config)
    options = rows["gptq-4"].cell["options"]
    excerpt = tmp_path / "wiki-start.txt"  # calibration drawn from the first ~5,000 tokens of the same text
    excerpt.write_text(wikitext.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    on_slice = GPTQConfig.model_validate({**options, "calibration": {**options["calibration"], "path": str(excerpt), "skip_tokens": 0}})
    (warning,) = calibration_warnings(GPTQBackend(), on_slice, tok, sl)
    assert "calibration overlaps the quality text" in warning
    assert calibration_warnings(GPTQBackend(), GPTQConfig.model_validate(options), tok, sl) == []


# --- the memory planner against what was measured -------------------------------

def test_planner_predicts_weights_exactly_and_the_serving_peak_within_its_band(rows):
    """Weights: exact (the planner counts every packed tensor, scale and code book).
    Peak while generating: within the ±25 % band docs/metrics.md states (CPU RSS)."""
    for v, r in rows.items():
        plan = r.result["plan"]
        assert plan["predicted_weights_bytes"] == r.weights_bytes, v
        measured = r.result["memory"]["by_phase"]["speed"]["peak_memory_bytes"]
        assert 0.75 <= measured / plan["predicted_peak_bytes"] <= 1.25, (v, measured, plan)
