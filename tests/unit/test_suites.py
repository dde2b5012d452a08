"""The shipped suites and the demo task data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalq.suites import TASKS_DIR, SuiteNotFound, load_suite, shipped_suites

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_suites():
    assert shipped_suites() == ["demo", "open-llm-v1", "quick"]
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
