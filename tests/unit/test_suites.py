"""The shipped suites and the demo task data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalq.suites import TASKS_DIR, SuiteNotFound, load_suite, needs_lm_eval_index, shipped_suites

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_suites():
    assert shipped_suites() == ["core", "demo", "demo-pool", "open-llm-v1", "quick", "tiny"]
    pool, demo = load_suite("demo-pool"), load_suite("demo")
    assert [t.task for t in pool.tasks] == [t.task for t in demo.tasks] and all(t.samples is None for t in pool.tasks)
    assert not load_suite("demo").requires_hub and load_suite("quick").requires_hub


def test_unknown_suite():
    with pytest.raises(SuiteNotFound, match="did you mean 'demo'"):
        load_suite("demos")


def test_demo_mc_items_are_well_formed():
    docs = [json.loads(x) for x in (TASKS_DIR / "evalq_demo_mc" / "demo_mc.jsonl").read_text().splitlines()]
    assert len(docs) >= 100
    assert len({d["question"] for d in docs}) == len(docs)
    for d in docs:
        assert len(d["choices"]) == 4 and len(set(d["choices"])) == 4
        assert 0 <= d["answer"] < 4
    positions = [d["answer"] for d in docs]
    assert max(positions.count(i) for i in range(4)) < 0.4 * len(docs)  # the answer is not always in one place


def test_demo_mc_file_is_what_the_generator_writes(tmp_path):
    committed = (TASKS_DIR / "evalq_demo_mc" / "demo_mc.jsonl").read_text()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_demo_mc
    finally:
        sys.path.pop(0)
    regenerated = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in make_demo_mc.build())
    assert regenerated == committed


def test_demo_ppl_text_is_long_enough():
    docs = [json.loads(x) for x in (TASKS_DIR / "evalq_demo_ppl" / "demo_ppl.jsonl").read_text().splitlines()]
    assert sum(len(d["text"].split()) for d in docs) >= 2300  # ≈ 3,276 SmolLM2 tokens; checked exactly in integration


def test_cli_and_config_paths_import_no_torch():
    code = ("import sys; import evalq.cli, evalq.matrix, evalq.cell, evalq.store, evalq.results, evalq.orchestrator; "
            "from evalq.backends.base import get_backend; [get_backend(n) for n in ('fp16','int8','nf4','gptq-4')]; "
            "bad = [m for m in ('torch', 'transformers', 'bitsandbytes', 'gptqmodel', 'lm_eval') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_demo_suite_is_what_the_generator_writes(tmp_path):
    out = tmp_path / "demo.yaml"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_suite.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_text() == (ROOT / "suites" / "demo.yaml").read_text()
    demo = load_suite("demo")
    assert demo.data == "shipped" and [t.task for t in demo.tasks] == ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande"]
    assert all(len(set(t.samples[t.task])) == 40 for t in demo.tasks)


def test_headline_metrics_are_declared_as_the_leaderboards_report_them():
    declared = {(s, t.task): t.metric for s in ("core", "open-llm-v1") for t in load_suite(s).tasks}
    assert declared[("open-llm-v1", "arc_challenge")] == declared[("open-llm-v1", "hellaswag")] == "acc_norm"
    assert declared[("open-llm-v1", "gsm8k")] == "exact_match,strict-match"
    assert declared[("open-llm-v1", "winogrande")] == declared[("open-llm-v1", "mmlu")] == "acc"
    assert declared[("open-llm-v1", "truthfulqa_mc2")] == "acc"  # lm-eval's name for mc2
    core = {t.task: t.num_fewshot for t in load_suite("core").tasks}
    assert core == {"arc_easy": 0, "arc_challenge": 25, "hellaswag": 10, "piqa": 0, "winogrande": 5, "boolq": 0,
                    "mmlu": 5, "openbookqa": 0}


def test_only_suites_of_lm_eval_tasks_pay_for_its_task_index():
    assert not needs_lm_eval_index([load_suite("tiny")])
    assert needs_lm_eval_index([load_suite("tiny"), load_suite("demo")])  # shipped-data tasks include lm-eval's files
    assert needs_lm_eval_index([load_suite("quick")])


def test_lm_eval_calls_split_limits_from_fixed_subsets():
    from evalq.measure.accuracy import lm_eval_groups
    from evalq.suites import Suite, TaskSpec

    suite = Suite(name="s", tasks=[TaskSpec(task="a", samples={"a": [5, 1, 9]}), TaskSpec(task="b", limit=20),
                                   TaskSpec(task="c"), TaskSpec(task="d", num_fewshot=5, samples={"d1": [1], "d2": [2, 3]})])
    assert lm_eval_groups([suite], None) == [(0, None, ["c"], None), (0, None, ["a"], {"a": [5, 1, 9]}),
                                             (0, 20, ["b"], None), (5, None, ["d"], {"d1": [1], "d2": [2, 3]})]
    # a cap keeps the first ids of a subset and limits the rest
    assert lm_eval_groups([suite], 2) == [(0, None, ["a"], {"a": [5, 1]}), (0, 2, ["b", "c"], None),
                                          (5, None, ["d"], {"d1": [1], "d2": [2, 3]})]


def test_shipped_tasks_include_the_files_lm_evals_own_index_names():
    """The override YAMLs include lm-eval's definitions by path, without indexing
    lm-eval's tasks per cell: the paths must be the ones its index holds."""
    from lm_eval.tasks import TaskManager

    from evalq.suites import offline

    index = TaskManager().task_index
    for task in offline.TASKS:
        assert offline.lm_eval_yaml(task) == Path(index[task].yaml_path), task


def test_offline_deviations_and_licences():
    from evalq.suites import offline

    assert offline.deviations("hellaswag", 0) == [] and offline.NO_TRAIN in offline.deviations("hellaswag", 10)
    assert "test split is not shipped" in offline.deviations("arc_challenge", 25)[0]
    assert offline.deviations("mmlu", 5) == [] and offline.licenses("mmlu") == "MIT"
    assert offline.is_offline("mmlu") and not offline.is_offline("gsm8k")


def test_auto_cpu_dtype_by_flags():
    from evalq.cpu import auto_cpu_dtype

    assert auto_cpu_dtype(frozenset({"avx2", "fma", "avx512f"})) == "float32"  # AVX-512 without its bf16 extension
    assert auto_cpu_dtype(frozenset({"avx512f", "avx512_bf16"})) == "bfloat16"
    assert auto_cpu_dtype(frozenset({"amx_bf16"})) == auto_cpu_dtype(frozenset({"asimd", "bf16"})) == "bfloat16"
